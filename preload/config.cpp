// SPDX-License-Identifier: MIT
#include "preload/config.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstdlib>
#include <cstring>
#include <strings.h>

namespace sansock::preload {
namespace {

const char* env(const char* name) {
    const char* v = std::getenv(name);
    return v != nullptr && *v != '\0' ? v : nullptr;
}

bool parse_prefix(const std::string& text, address_prefix& out) {
    const size_t slash = text.find('/');
    const std::string address = text.substr(0, slash);
    if (inet_pton(AF_INET, address.c_str(), out.bytes) == 1) out.family = AF_INET;
    else if (inet_pton(AF_INET6, address.c_str(), out.bytes) == 1) out.family = AF_INET6;
    else return false;
    const unsigned most = out.family == AF_INET ? 32 : 128;
    out.bits = most;
    if (slash == std::string::npos) return true;
    const std::string bits = text.substr(slash + 1);
    char* end = nullptr;
    const unsigned long n = std::strtoul(bits.c_str(), &end, 10);
    if (bits.empty() || *end != '\0' || n > most) return false;
    out.bits = unsigned(n);
    return true;
}

bool matches(const address_prefix& p, const uint8_t* bytes) {
    const unsigned whole = p.bits / 8, rest = p.bits % 8;
    if (std::memcmp(p.bytes, bytes, whole) != 0) return false;
    if (rest == 0) return true;
    const uint8_t mask = uint8_t(0xff << (8 - rest));
    return (p.bytes[whole] & mask) == (bytes[whole] & mask);
}

} // namespace

config read_config() {
    config c;
    if (const char* on = env("SANSOCK_PRELOAD")) {
        if (!std::strcmp(on, "0") || !strcasecmp(on, "off")) c.enabled = false;
        else if (std::strcmp(on, "1") != 0 && strcasecmp(on, "on") != 0)
            c.problem = std::string("SANSOCK_PRELOAD is '") + on + "', not 1, on, 0 or off";
    }
    if (const char* v = env("SANSOCK_PRELOAD_VERBOSE")) c.verbose = std::strcmp(v, "0") != 0;
    if (const char* p = env("SANSOCK_PRELOAD_PROVIDER")) {
        if (!strcasecmp(p, "loopback")) c.loopback_provider = true;
        else if (strcasecmp(p, "verbs") != 0)
            c.problem = std::string("SANSOCK_PRELOAD_PROVIDER is '") + p + "', not verbs or loopback";
    }
    if (const char* list = env("SANSOCK_PRELOAD_PEERS")) {
        if (!strcasecmp(list, "all")) {
            c.all_peers = true;
        } else {
            std::string rest = list;
            while (!rest.empty()) {
                const size_t comma = rest.find(',');
                const std::string item = rest.substr(0, comma);
                address_prefix p;
                if (!parse_prefix(item, p)) {
                    c.problem = "SANSOCK_PRELOAD_PEERS: '" + item + "' is not an address or address/bits";
                    break;
                }
                c.peers.push_back(p);
                rest = comma == std::string::npos ? "" : rest.substr(comma + 1);
            }
        }
    }
    if (const char* t = env("SANSOCK_PRELOAD_CONNECT_MS")) {
        char* end = nullptr;
        const long ms = std::strtol(t, &end, 10);
        if (*end != '\0' || ms < 1 || ms > 600000)
            c.problem = std::string("SANSOCK_PRELOAD_CONNECT_MS is '") + t + "', not 1 to 600000";
        else c.connect_timeout_ms = int(ms);
    }
    if (const char* r = env("SANSOCK_PRELOAD_REPORT")) c.report_path = r;
    if (!c.problem.empty()) c.enabled = false;
    return c;
}

bool peer_allowed(const config& settings, const sockaddr* address, socklen_t length) {
    if (address == nullptr) return false;
    uint8_t bytes[16] = {};
    sa_family_t family = address->sa_family;
    if (family == AF_INET && length >= sizeof(sockaddr_in)) {
        std::memcpy(bytes, &reinterpret_cast<const sockaddr_in*>(address)->sin_addr, 4);
    } else if (family == AF_INET6 && length >= sizeof(sockaddr_in6)) {
        const in6_addr& a = reinterpret_cast<const sockaddr_in6*>(address)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(&a)) {
            family = AF_INET;
            std::memcpy(bytes, &a.s6_addr[12], 4);
        } else {
            std::memcpy(bytes, a.s6_addr, 16);
        }
    } else {
        return false;
    }
    const size_t size = family == AF_INET ? 4 : 16;
    static const uint8_t zeros[16] = {};
    if (std::memcmp(bytes, zeros, size) == 0) return true; // 0.0.0.0 or ::
    if (settings.all_peers) return true;
    if (settings.peers.empty()) {
        if (family == AF_INET) return bytes[0] != 127;
        static const uint8_t one[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
        return std::memcmp(bytes, one, 16) != 0;
    }
    for (const address_prefix& p : settings.peers)
        if (p.family == family && matches(p, bytes)) return true;
    return false;
}

} // namespace sansock::preload

// SPDX-License-Identifier: MIT
#include "lib/address.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace sansock::address {

socklen_t size_of(sa_family_t family) {
    if (family == AF_INET) return sizeof(sockaddr_in);
    if (family == AF_INET6) return sizeof(sockaddr_in6);
    return 0;
}

int validate(const sockaddr* address, socklen_t length) {
    if (address == nullptr || length < static_cast<socklen_t>(sizeof(sa_family_t))) return -EINVAL;
    const socklen_t needed = size_of(address->sa_family);
    if (needed == 0) return -EAFNOSUPPORT;
    if (length < needed) return -EINVAL;
    return 0;
}

bool is_v4_mapped(const sockaddr* address) {
    if (address == nullptr || address->sa_family != AF_INET6) return false;
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(address);
    return IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr);
}

int parse(const sockaddr* address, socklen_t length, socket_address* out) {
    if (int rc = validate(address, length)) return rc;
    *out = {};
    std::memcpy(out, address, size_of(address->sa_family));
    if (is_v4_mapped(&out->sa)) {
        const sockaddr_in6 v6 = out->v6;
        out->v4 = {};
        out->v4.sin_family = AF_INET;
        out->v4.sin_port = v6.sin6_port;
        std::memcpy(&out->v4.sin_addr, &v6.sin6_addr.s6_addr[12], 4);
    }
    return 0;
}

socket_address to_family(const socket_address& a, sa_family_t family) {
    if (family != AF_INET6 || a.sa.sa_family != AF_INET) return a;
    socket_address m{};
    m.v6.sin6_family = AF_INET6;
    m.v6.sin6_port = a.v4.sin_port;
    m.v6.sin6_addr.s6_addr[10] = 0xff;
    m.v6.sin6_addr.s6_addr[11] = 0xff;
    std::memcpy(&m.v6.sin6_addr.s6_addr[12], &a.v4.sin_addr, 4);
    return m;
}

bool is_any(const socket_address& a) {
    if (a.sa.sa_family == AF_INET) return a.v4.sin_addr.s_addr == htonl(INADDR_ANY);
    return a.sa.sa_family == AF_INET6 && IN6_IS_ADDR_UNSPECIFIED(&a.v6.sin6_addr);
}

uint16_t port(const socket_address& a) {
    return ntohs(a.sa.sa_family == AF_INET6 ? a.v6.sin6_port : a.v4.sin_port);
}

bool same_host(const socket_address& a, const socket_address& b) {
    if (a.sa.sa_family != b.sa.sa_family || port(a) != port(b)) return false;
    if (a.sa.sa_family == AF_INET) return a.v4.sin_addr.s_addr == b.v4.sin_addr.s_addr;
    return a.sa.sa_family == AF_INET6 && IN6_ARE_ADDR_EQUAL(&a.v6.sin6_addr, &b.v6.sin6_addr);
}

int copy_out(const socket_address& a, sockaddr* to, socklen_t* length) {
    if (to == nullptr || length == nullptr) return -EINVAL;
    const socklen_t size = std::max(size_of(a.sa.sa_family), socklen_t(sizeof(sockaddr_in)));
    std::memcpy(to, &a, std::min(*length, size));
    *length = size;
    return 0;
}

void format(const socket_address& a, char* out, size_t size) noexcept {
    char ip[INET6_ADDRSTRLEN];
    if (a.sa.sa_family == AF_INET && inet_ntop(AF_INET, &a.v4.sin_addr, ip, sizeof ip) != nullptr)
        std::snprintf(out, size, "%s:%u", ip, unsigned(ntohs(a.v4.sin_port)));
    else if (a.sa.sa_family == AF_INET6 && inet_ntop(AF_INET6, &a.v6.sin6_addr, ip, sizeof ip) != nullptr)
        std::snprintf(out, size, "[%s]:%u", ip, unsigned(ntohs(a.v6.sin6_port)));
    else
        std::snprintf(out, size, "?");
}

} // namespace sansock::address

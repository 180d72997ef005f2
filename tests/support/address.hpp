// SPDX-License-Identifier: MIT
// IPv4 and IPv6 socket addresses for the tests: one helper instead of a copy per suite.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace sansock::test {

// `dotted`:`port`; a malformed address is a bug in the test, so it stops the test at once.
inline sockaddr_in ipv4(const std::string& dotted, uint16_t port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    if (inet_pton(AF_INET, dotted.c_str(), &a.sin_addr) != 1) {
        std::fprintf(stderr, "test: '%s' is not an IPv4 address\n", dotted.c_str());
        std::abort();
    }
    return a;
}

// `text` ("::", "fd00::1", "::ffff:10.0.0.1"):`port`; malformed stops the test as above.
inline sockaddr_in6 ipv6(const std::string& text, uint16_t port) {
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(port);
    if (inet_pton(AF_INET6, text.c_str(), &a.sin6_addr) != 1) {
        std::fprintf(stderr, "test: '%s' is not an IPv6 address\n", text.c_str());
        std::abort();
    }
    return a;
}

// The address of a socket name as text, "" for a family other than AF_INET and AF_INET6.
inline std::string address_text(const sockaddr_storage& a) {
    char text[INET6_ADDRSTRLEN] = {};
    const void* raw = a.ss_family == AF_INET6 ? static_cast<const void*>(&reinterpret_cast<const sockaddr_in6&>(a).sin6_addr)
                                              : static_cast<const void*>(&reinterpret_cast<const sockaddr_in&>(a).sin_addr);
    if ((a.ss_family != AF_INET && a.ss_family != AF_INET6) || inet_ntop(a.ss_family, raw, text, sizeof text) == nullptr)
        return "";
    return text;
}

inline const sockaddr* as_sockaddr(const sockaddr_in& a) { return reinterpret_cast<const sockaddr*>(&a); }
inline const sockaddr* as_sockaddr(const sockaddr_in6& a) { return reinterpret_cast<const sockaddr*>(&a); }

} // namespace sansock::test

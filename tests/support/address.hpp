// SPDX-License-Identifier: MIT
// IPv4 socket addresses for the tests: one helper instead of a copy per suite.
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

inline const sockaddr* as_sockaddr(const sockaddr_in& a) { return reinterpret_cast<const sockaddr*>(&a); }

} // namespace sansock::test

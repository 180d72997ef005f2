// SPDX-License-Identifier: MIT
// Socket addresses as the switch and both providers take them: AF_INET and AF_INET6, checked
// once here. An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is an IPv4 address below the
// switch: parse() unmaps it, and to_family() maps an IPv4 name back for an AF_INET6 socket.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>

namespace sansock {

union socket_address {
    sockaddr sa;
    sockaddr_in v4;
    sockaddr_in6 v6;
};

namespace address {

// The size of a name of `family`: sizeof sockaddr_in or sockaddr_in6 (0 for any other).
socklen_t size_of(sa_family_t family);

// 0, -EINVAL (NULL, shorter than its family's sockaddr) or -EAFNOSUPPORT (neither AF_INET
// nor AF_INET6). AF_INET6 needs all of sockaddr_in6 (Linux also takes RFC 2133's 24 bytes).
int validate(const sockaddr* address, socklen_t length);

// validate(), then the address in `out` with an IPv4-mapped one made AF_INET.
int parse(const sockaddr* address, socklen_t length, socket_address* out);

bool is_v4_mapped(const sockaddr* address);

// An AF_INET address as ::ffff:a.b.c.d when `family` is AF_INET6; otherwise unchanged.
socket_address to_family(const socket_address& a, sa_family_t family);

// The wildcard of its family (0.0.0.0, ::).
bool is_any(const socket_address& a);
uint16_t port(const socket_address& a); // host order
// Same family, address and port (the IPv6 scope id is not compared).
bool same_host(const socket_address& a, const socket_address& b);

// As getsockname(2): cut to *length, which is set to the full size. -EINVAL for NULLs.
int copy_out(const socket_address& a, sockaddr* to, socklen_t* length);

// "10.0.0.1:7000", "[fd00::1]:7000", "?" for anything else; never allocates.
constexpr size_t format_size = 64;
void format(const socket_address& a, char* out, size_t size) noexcept;

} // namespace address
} // namespace sansock

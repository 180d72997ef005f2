// SPDX-License-Identifier: MIT
// The loopback fabric: creating and destroying it, and its addresses and ports (bind, the
// ephemeral ports, the listener a connect reaches).
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>

#include "provider/loopback/loopback_internal.hpp"

namespace sansock::loopback {

namespace detail {

void release_port(lsock* s) {
    if (!s->owns_port) return;
    auto& ports = s->owner->net->ports;
    auto [first, last] = ports.equal_range(address::port(s->local));
    for (auto it = first; it != last; ++it)
        if (it->second == s) {
            ports.erase(it);
            break;
        }
    s->owns_port = false;
}

namespace {

// Whether a socket bound to `bound` (with `v6only`) takes connections to `target`.
bool covers(const socket_address& bound, bool v6only, const socket_address& target) {
    const bool any = address::is_any(bound);
    if (bound.sa.sa_family == target.sa.sa_family) {
        if (any) return true;
        return bound.sa.sa_family == AF_INET ? bound.v4.sin_addr.s_addr == target.v4.sin_addr.s_addr
                                             : IN6_ARE_ADDR_EQUAL(&bound.v6.sin6_addr, &target.v6.sin6_addr);
    }
    return any && bound.sa.sa_family == AF_INET6 && !v6only; // :: dual-stack takes IPv4 too
}

// Whether two bindings of one port share an address.
bool overlap(const socket_address& a, bool a_v6only, const socket_address& b, bool b_v6only) {
    const bool a_any = address::is_any(a), b_any = address::is_any(b);
    if (!a_any) return covers(b, b_v6only, a);
    if (!b_any) return covers(a, a_v6only, b);
    if (a.sa.sa_family == b.sa.sa_family) return true;
    return a.sa.sa_family == AF_INET6 ? !a_v6only : !b_v6only;
}

} // namespace

bool address_free(const fabric& net, const socket_address& address, bool v6only) {
    auto [first, last] = net.ports.equal_range(address::port(address));
    for (auto it = first; it != last; ++it)
        if (overlap(it->second->local, it->second->v6only, address, v6only)) return false;
    return true;
}

void take_address(lsock* s, const socket_address& address) {
    s->owns_port = true;
    s->bound = true;
    s->local = address;
    s->owner->net->ports.emplace(address::port(address), s);
}

int parse_address(const sockaddr* address, socklen_t length, socket_address* out) {
    return address::parse(address, length, out);
}

int bind_ephemeral(lsock* s, const socket_address& address) {
    fabric* net = s->owner->net;
    for (uint32_t tries = 0; tries < 65536 - 1024; ++tries) {
        const uint16_t port = net->next_port;
        net->next_port = port == 65535 ? 1024 : uint16_t(port + 1);
        if (net->ports.count(port) != 0) continue;
        socket_address a = address;
        if (a.sa.sa_family == AF_INET6) a.v6.sin6_port = htons(port);
        else a.v4.sin_port = htons(port);
        take_address(s, a);
        return 0;
    }
    return -EADDRNOTAVAIL;
}

lsock* find_listener(const fabric& net, const socket_address& target) {
    // The socket bound to the target's port on an address set holding the target (at most one
    // exists: bindings of a port do not overlap); a listener with room in its backlog takes
    // the connection.
    lsock* listener = nullptr;
    auto [first, last] = net.ports.equal_range(address::port(target));
    for (auto it = first; it != last; ++it) {
        lsock* l = it->second;
        if (!covers(l->local, l->v6only, target)) continue;
        if (l->state == sock_state::listening && !l->owner->down && l->arrived.size() < size_t(l->backlog))
            listener = l;
        break;
    }
    return listener;
}

} // namespace detail

fabric* create_fabric() { return new (std::nothrow) fabric; }

int destroy_fabric(fabric* f) {
    if (f == nullptr) return 0;
    {
        std::lock_guard lock(f->mutex);
        if (!f->members.empty()) return -EBUSY;
    }
    delete f;
    return 0;
}

} // namespace sansock::loopback

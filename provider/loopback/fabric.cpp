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
    auto [first, last] = ports.equal_range(ntohs(s->local.sin_port));
    for (auto it = first; it != last; ++it)
        if (it->second == s) {
            ports.erase(it);
            break;
        }
    s->owns_port = false;
}

// Whether `address`:`port` may be bound: no socket holds the port on the same address, and
// INADDR_ANY on either side conflicts with every address.
bool address_free(const fabric& net, in_addr_t address, uint16_t port) {
    auto [first, last] = net.ports.equal_range(port);
    for (auto it = first; it != last; ++it) {
        const in_addr_t bound = it->second->local.sin_addr.s_addr;
        if (bound == address || bound == htonl(INADDR_ANY) || address == htonl(INADDR_ANY)) return false;
    }
    return true;
}

// Binds `s` to `address`:`port` (checked free).
void take_address(lsock* s, in_addr_t address, uint16_t port) {
    s->owns_port = true;
    s->bound = true;
    s->local = {};
    s->local.sin_family = AF_INET;
    s->local.sin_addr.s_addr = address;
    s->local.sin_port = htons(port);
    s->owner->net->ports.emplace(port, s);
}

// Parses an AF_INET address: 0, -EINVAL (null, short) or -EAFNOSUPPORT.
int parse_address(const sockaddr* address, socklen_t length, sockaddr_in* out) {
    if (address == nullptr || length < socklen_t(sizeof(sa_family_t))) return -EINVAL;
    if (address->sa_family != AF_INET) return -EAFNOSUPPORT;
    if (length < socklen_t(sizeof(sockaddr_in))) return -EINVAL;
    std::memcpy(out, address, sizeof *out);
    return 0;
}

// Gives `s` an ephemeral port no socket of the fabric holds on any address;
// -EADDRNOTAVAIL when none is left.
int bind_ephemeral(lsock* s, in_addr_t address) {
    fabric* net = s->owner->net;
    for (uint32_t tries = 0; tries < 65536 - 1024; ++tries) {
        const uint16_t port = net->next_port;
        net->next_port = port == 65535 ? 1024 : uint16_t(port + 1);
        if (net->ports.count(port) != 0) continue;
        take_address(s, address, port);
        return 0;
    }
    return -EADDRNOTAVAIL;
}

lsock* find_listener(const fabric& net, const sockaddr_in& target) {
    // The socket bound to the target's port on its address or on INADDR_ANY (at most one
    // exists); a listener with room in its backlog takes the connection.
    lsock* listener = nullptr;
    auto [first, last] = net.ports.equal_range(ntohs(target.sin_port));
    for (auto it = first; it != last; ++it) {
        lsock* l = it->second;
        const in_addr_t bound = l->local.sin_addr.s_addr;
        if (bound != htonl(INADDR_ANY) && bound != target.sin_addr.s_addr) continue;
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

// SPDX-License-Identifier: MIT
// The loopback provider's socket entries: socket, bind, listen, accept, connect, send, recv,
// names, options and close.
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>

#include "provider/loopback/loopback_internal.hpp"

namespace sansock::loopback::detail {

namespace {

int check_op(const operation* op, operation_kind kind) {
    if (op == nullptr || op->complete == nullptr || op->kind != kind) return -EINVAL;
    if ((kind == operation_kind::send || kind == operation_kind::recv) &&
        (op->buffer == nullptr || op->length == 0))
        return -EINVAL;
    return 0;
}

bool allocate_window(lsock* s) {
    if (s->owner->settings.messages) return true; // no window: the messages go region to region
    s->ring_capacity = window_bytes(s->owner->settings);
    s->ring.reset(new (std::nothrow) uint8_t[s->ring_capacity]);
    if (!s->ring) s->ring_capacity = 0;
    return s->ring != nullptr;
}

// Hands an arrived connection to an accept operation.
void give_to_accept(lsock* listener, lsock* arrival, operation* op) {
    arrival->accepted = true;
    arrival->listener = nullptr;
    op->accepted = arrival->handle;
    complete(listener, op, 0);
}

// Message mode's checks of send and recv (provider.hpp): the registered range, the size of a
// message, the receives a connection may have; the region is busy from here to the delivery.
int check_message(lsock* s, operation* op, operation_kind kind) {
    if (op == nullptr || op->complete == nullptr || op->kind != kind || op->length == 0 ||
        (op->flags & provider::op_wait_all) != 0)
        return -EINVAL;
    lregion* r = s->owner->regions.find(op->memory);
    if (r == nullptr) return -ENOENT;
    if (op->memory_offset > r->length || op->length > r->length - op->memory_offset) return -EINVAL;
    if (kind == operation_kind::send && op->length > s->owner->settings.slot_size) return -EMSGSIZE;
    if (s->state == sock_state::reset) return -ECONNRESET;
    // Receives may wait on a socket that is not connected yet (not a listener).
    const bool early_recv = kind == operation_kind::recv && s->state == sock_state::fresh;
    if (s->state != sock_state::connected && !early_recv) return -ENOTCONN;
    if (kind == operation_kind::recv) {
        uint32_t pending = 0;
        for (const operation* o = s->recvs.head; o != nullptr; o = o->provider_next) ++pending;
        if (pending >= s->owner->settings.recv_slots) return -ENOBUFS;
    }
    ++r->pending;
    return 0;
}

// Common checks of send and recv on a socket found under the lock: 0 or a negated errno.
int check_data(lsock* s, operation* op, operation_kind kind) {
    if (s->owner->down) return -ENETDOWN;
    if (s->owner->settings.messages) return check_message(s, op, kind);
    if (int rc = check_op(op, kind); rc < 0) return rc;
    if (s->state == sock_state::reset) return -ECONNRESET;
    if (s->state != sock_state::connected) return -ENOTCONN;
    return 0;
}

} // namespace

int lb_socket(provider::instance* self, socket_handle* out) {
    loop_instance* inst = as_loop(self);
    if (inst == nullptr || out == nullptr) return -EINVAL;
    *out = provider::invalid_socket;
    auto s = std::unique_ptr<lsock>(new (std::nothrow) lsock);
    if (!s) return -ENOMEM;
    s->owner = inst;
    std::lock_guard lock(inst->net->mutex);
    if (inst->down) return -ENETDOWN;
    if (!inst->events.reserve_for(inst->table.size() + 1u)) return -ENOMEM;
    const socket_handle h = inst->table.insert(s.get());
    if (h == provider::invalid_socket) return -EMFILE;
    s->handle = h;
    s.release();
    *out = h;
    return 0;
}

int lb_bind(provider::instance* self, socket_handle h, const sockaddr* address, socklen_t length) {
    return with_socket(self, h, [&](lsock* s) -> int {
        loop_instance* inst = s->owner;
        if (inst->down) return -ENETDOWN;
        socket_address a{};
        if (int rc = parse_address(address, length, &a); rc < 0) return rc;
        if (s->bound || s->state != sock_state::fresh) return -EINVAL;
        if (address::port(a) == 0) return bind_ephemeral(s, a);
        if (!address_free(*inst->net, a, s->v6only)) return -EADDRINUSE;
        take_address(s, a);
        return 0;
    });
}

int lb_listen(provider::instance* self, socket_handle h, int backlog) {
    return with_socket(self, h, [&](lsock* s) -> int {
        if (s->owner->down) return -ENETDOWN;
        if (s->state != sock_state::fresh || !s->recvs.empty()) return -EINVAL; // receives wait for a connection
        if (!s->bound) {
            socket_address any{};
            any.v4.sin_family = AF_INET;
            if (int rc = bind_ephemeral(s, any); rc < 0) return rc;
        }
        s->state = sock_state::listening;
        s->backlog = std::clamp(backlog, 1, 4096);
        return 0;
    });
}

int lb_accept(provider::instance* self, socket_handle h, operation* op) {
    return with_socket(self, h, [&](lsock* s) -> int {
        if (s->owner->down) return -ENETDOWN;
        if (int rc = check_op(op, operation_kind::accept); rc < 0) return rc;
        if (s->state != sock_state::listening) return -EINVAL;
        op->accepted = provider::invalid_socket;
        if (!s->arrived.empty() && s->accepts.empty()) {
            lsock* a = s->arrived.front();
            s->arrived.pop_front();
            give_to_accept(s, a, op);
        } else {
            s->accepts.push(op);
        }
        return 0;
    });
}

int lb_connect(provider::instance* self, socket_handle h, operation* op) {
    return with_socket(self, h, [&](lsock* s) -> int {
        loop_instance* inst = s->owner;
        if (inst->down) return -ENETDOWN;
        if (int rc = check_op(op, operation_kind::connect); rc < 0) return rc;
        socket_address target{};
        if (int rc = parse_address(reinterpret_cast<const sockaddr*>(&op->address), op->address_length, &target);
            rc < 0)
            return rc;
        if (s->state == sock_state::connected || s->state == sock_state::reset) return -EISCONN;
        if (s->state != sock_state::fresh) return -EINVAL;
        if (address::port(target) == 0) return -EINVAL;
        if (address::is_any(target)) { // as Linux: the wildcard means this host
            if (target.sa.sa_family == AF_INET) target.v4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            else target.v6.sin6_addr = in6addr_loopback;
        }
        if (s->bound && s->local.sa.sa_family != target.sa.sa_family &&
            !(s->local.sa.sa_family == AF_INET6 && address::is_any(s->local) && !s->v6only))
            return -EAFNOSUPPORT; // bound to one family, connecting to the other
        if (!s->bound) {
            // Every fabric address is this host's: the connection leaves from the target's.
            socket_address local = target;
            if (local.sa.sa_family == AF_INET) local.v4.sin_port = 0;
            else local.v6.sin6_port = 0;
            if (int rc = bind_ephemeral(s, local); rc < 0) return rc;
        } else if (address::is_any(s->local)) { // as Linux: the wildcard becomes the address used
            socket_address local = target;
            if (local.sa.sa_family == AF_INET) local.v4.sin_port = htons(address::port(s->local));
            else local.v6.sin6_port = htons(address::port(s->local));
            s->local = local;
        }
        lsock* listener = find_listener(*inst->net, target);
        // Both ends speak the same mode (verbs: the handshake versions must match).
        if (listener != nullptr && listener->owner->settings.messages != inst->settings.messages) listener = nullptr;
        if (listener == nullptr) {
            s->failure = -ECONNREFUSED;
            complete(s, op, -ECONNREFUSED);
            return 0;
        }
        auto arrival = std::unique_ptr<lsock>(new (std::nothrow) lsock);
        if (!arrival) return -ENOMEM;
        arrival->owner = listener->owner;
        arrival->accepted = false;
        if (!listener->owner->events.reserve_for(listener->owner->table.size() + 1u) ||
            !allocate_window(arrival.get()) || !allocate_window(s)) {
            drop_window(s);
            return -ENOMEM;
        }
        const socket_handle ah = listener->owner->table.insert(arrival.get());
        if (ah == provider::invalid_socket) { // the server is out of sockets: it refuses
            drop_window(s);
            s->failure = -ECONNREFUSED;
            complete(s, op, -ECONNREFUSED);
            return 0;
        }
        lsock* a = arrival.release();
        a->handle = ah;
        a->state = sock_state::connected;
        a->bound = true;
        a->local = target; // the address it was reached at (of either family on ::)
        a->remote = s->local;
        a->peer = s;
        s->state = sock_state::connected;
        s->failure = 0;
        s->remote = target;
        s->peer = a;
        if (!listener->accepts.empty()) {
            give_to_accept(listener, a, listener->accepts.pop());
        } else {
            a->listener = listener;
            listener->arrived.push_back(a);
        }
        complete(s, op, 0);
        return 0;
    });
}

int lb_send(provider::instance* self, socket_handle h, operation* op) {
    return with_socket(self, h, [&](lsock* s) -> int {
        if (int rc = check_data(s, op, operation_kind::send); rc < 0) return rc;
        op->provider_word = 0;
        s->sends.push(op);
        move_bytes(s);
        return 0;
    });
}

int lb_recv(provider::instance* self, socket_handle h, operation* op) {
    return with_socket(self, h, [&](lsock* s) -> int {
        if (int rc = check_data(s, op, operation_kind::recv); rc < 0) return rc;
        op->provider_word = 0;
        s->recvs.push(op);
        if (s->peer != nullptr) move_bytes(s->peer);
        return 0;
    });
}

int lb_getsockname(provider::instance* self, socket_handle h, sockaddr* address, socklen_t* length) {
    return with_socket(self, h, [&](lsock* s) -> int {
        socket_address a = s->local;
        if (a.sa.sa_family == AF_UNSPEC) a.v4.sin_family = AF_INET; // unbound: 0.0.0.0:0
        return address::copy_out(a, address, length);
    });
}

int lb_getpeername(provider::instance* self, socket_handle h, sockaddr* address, socklen_t* length) {
    return with_socket(self, h, [&](lsock* s) -> int {
        if (s->state != sock_state::connected) return -ENOTCONN;
        return address::copy_out(s->remote, address, length);
    });
}

int lb_getsockopt(provider::instance* self, socket_handle h, int level, int name, void* value, socklen_t* length) {
    return with_socket(self, h, [&](lsock* s) -> int {
        const provider::config& settings = s->owner->settings;
        if (value == nullptr || length == nullptr || *length < socklen_t(sizeof(int))) return -EINVAL;
        if (level != SOL_SOCKET) return -ENOPROTOOPT;
        int v = 0;
        switch (name) {
        case SO_TYPE: v = SOCK_STREAM; break;
        case SO_ERROR: v = -s->failure; break; // not cleared, as verbs (the switch keeps its own)
        case SO_RCVBUF: v = int(std::min<size_t>(window_bytes(settings), INT32_MAX)); break;
        case SO_SNDBUF: v = int(std::min<size_t>(size_t(settings.send_slots) * settings.slot_size, INT32_MAX)); break;
        case SO_ACCEPTCONN: v = s->state == sock_state::listening; break;
        default: return -ENOPROTOOPT;
        }
        std::memcpy(value, &v, sizeof v);
        *length = sizeof v;
        return 0;
    });
}

int lb_setsockopt(provider::instance* self, socket_handle h, int level, int name, const void* value, socklen_t length) {
    return with_socket(self, h, [&](lsock* s) -> int {
        if (value == nullptr) return -EINVAL;
        // Only IPV6_V6ONLY, before bind (as Linux); buffer sizes are per instance.
        if (level != IPPROTO_IPV6 || name != IPV6_V6ONLY) return -ENOPROTOOPT;
        if (length < socklen_t(sizeof(int))) return -EINVAL;
        if (s->bound || s->state != sock_state::fresh) return -EINVAL;
        int v = 0;
        std::memcpy(&v, value, sizeof v);
        s->v6only = v != 0;
        return 0;
    });
}

int lb_close(provider::instance* self, socket_handle h) {
    loop_instance* inst = as_loop(self);
    if (inst == nullptr) return -EINVAL;
    op_queue out;
    {
        std::unique_lock lock(inst->net->mutex);
        lsock* s = find(inst, h);
        if (s == nullptr) return -ENOTSOCK;
        close_locked(s, out, lock);
        for (operation* op = out.head; op != nullptr; op = op->provider_next) note_delivered(inst, op);
    }
    run_completions(out);
    return 0;
}

} // namespace sansock::loopback::detail

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

// Common checks of send and recv on a socket found under the lock: 0 or a negated errno.
int check_data(lsock* s, operation* op, operation_kind kind) {
    if (s->owner->down) return -ENETDOWN;
    if (int rc = check_op(op, kind); rc < 0) return rc;
    if (s->state == sock_state::reset) return -ECONNRESET;
    if (s->state != sock_state::connected) return -ENOTCONN;
    return 0;
}

int copy_name(const sockaddr_in& a, sockaddr* address, socklen_t* length) {
    if (address == nullptr || length == nullptr) return -EINVAL;
    // Like getsockname(2): truncate to the caller's room, report the full length.
    std::memcpy(address, &a, std::min<size_t>(*length, sizeof a));
    *length = sizeof a;
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
        sockaddr_in a{};
        if (int rc = parse_address(address, length, &a); rc < 0) return rc;
        if (s->bound || s->state != sock_state::fresh) return -EINVAL;
        const uint16_t port = ntohs(a.sin_port);
        if (port == 0) return bind_ephemeral(s, a.sin_addr.s_addr);
        if (!address_free(*inst->net, a.sin_addr.s_addr, port)) return -EADDRINUSE;
        take_address(s, a.sin_addr.s_addr, port);
        return 0;
    });
}

int lb_listen(provider::instance* self, socket_handle h, int backlog) {
    return with_socket(self, h, [&](lsock* s) -> int {
        if (s->owner->down) return -ENETDOWN;
        if (s->state != sock_state::fresh) return -EINVAL;
        if (!s->bound)
            if (int rc = bind_ephemeral(s, htonl(INADDR_ANY)); rc < 0) return rc;
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
        sockaddr_in target{};
        if (int rc = parse_address(reinterpret_cast<const sockaddr*>(&op->address), op->address_length, &target);
            rc < 0)
            return rc;
        if (s->state == sock_state::connected || s->state == sock_state::reset) return -EISCONN;
        if (s->state != sock_state::fresh) return -EINVAL;
        if (target.sin_port == 0) return -EINVAL;
        if (!s->bound) {
            const in_addr_t local = target.sin_addr.s_addr == htonl(INADDR_ANY) ? htonl(INADDR_LOOPBACK)
                                                                                  : target.sin_addr.s_addr;
            if (int rc = bind_ephemeral(s, local); rc < 0) return rc;
        }
        lsock* listener = find_listener(*inst->net, target);
        if (listener == nullptr) {
            s->failure = -ECONNREFUSED;
            complete(s, op, -ECONNREFUSED);
            return 0;
        }
        auto arrival = std::unique_ptr<lsock>(new (std::nothrow) lsock);
        if (!arrival) return -ENOMEM;
        arrival->owner = listener->owner;
        arrival->accepted = false;
        if (!allocate_window(arrival.get()) || !allocate_window(s)) {
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
        a->local = listener->local;
        a->local.sin_addr = target.sin_addr;
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
        sockaddr_in a = s->local;
        a.sin_family = AF_INET;
        return copy_name(a, address, length);
    });
}

int lb_getpeername(provider::instance* self, socket_handle h, sockaddr* address, socklen_t* length) {
    return with_socket(self, h, [&](lsock* s) -> int {
        if (s->state != sock_state::connected) return -ENOTCONN;
        return copy_name(s->remote, address, length);
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

int lb_setsockopt(provider::instance* self, socket_handle h, int, int, const void* value, socklen_t) {
    return with_socket(self, h, [&](lsock*) -> int {
        if (value == nullptr) return -EINVAL;
        return -ENOPROTOOPT; // nothing is settable on a loopback socket
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
    }
    run_completions(out);
    return 0;
}

} // namespace sansock::loopback::detail

// SPDX-License-Identifier: MIT
// The verbs provider's failure and teardown: hard close, flushes, device removal.
#include "provider/verbs/verbs_internal.hpp"

namespace sansock::verbs::detail {

static void fail_queue(verbs_instance& self, const vsocket& s, op_queue& queue, int code) {
    while (operation* op = queue.pop()) finish(self, s, op, code);
}

// Every operation still pending on `s`, taken out of the socket.
void take_pending(vsocket& s, std::vector<operation*>& out) {
    if (s.connect_op != nullptr) out.push_back(std::exchange(s.connect_op, nullptr));
    while (operation* op = s.accepts.pop()) out.push_back(op);
    while (operation* op = s.sends.pop()) out.push_back(op);
    s.send_offset = 0;
    for (auto& use : s.send_slot_uses)
        if (use.op != nullptr) out.push_back(std::exchange(use.op, nullptr));
    while (operation* op = s.recvs.pop()) out.push_back(op);
    s.received.clear();
}

static void signal(verbs_instance& self, vsocket& s, connection_event event, int status) {
    if (s.handle != invalid_socket) self.signals.push_back({s.handle, event, status});
}

// Stops the connection: the QP goes to error (every posted request flushes) and the peer is
// told through rdma_cm. Safe to call more than once.
void stop_connection(vsocket& s) {
    if (s.id && s.id->qp != nullptr) rdma_disconnect(s.id.get()); // QP to error, then DREQ
}

// The connection failed under the user (peer reset, device gone): pending operations fail with
// `code`, later calls too, and the user hears of it once.
void fail_connection(verbs_instance& self, vsocket& s, int code, connection_event event) {
    if (s.state == socket_state::closed || s.state == socket_state::failed) return;
    const bool was_connected = s.state == socket_state::connected;
    s.state = socket_state::failed;
    s.failure = code;
    std::vector<operation*> pending;
    take_pending(s, pending);
    for (operation* op : pending) finish(self, s, op, code);
    stop_connection(s);
    if (was_connected) signal(self, s, event, code);
}

void start_teardown(verbs_instance& self, vsocket& s) {
    s.state = socket_state::closed;
    // Nothing on the caller's path touches the device: every buffer posted to the QP is one of
    // our own registered slots, never the user's, so the pending operations can be cancelled
    // at once. The next progress (woken by close) moves the QP to error and sends the
    // disconnect request (rdma_disconnect); what arrives meanwhile is dropped with the socket.
    // (Moving the QP to error here cost 200+ us on rxe: its flush events woke progress.)
    if (s.id && s.id->qp != nullptr) s.disconnect_pending = true;
    s.teardown_deadline = std::chrono::steady_clock::now() + teardown_limit;
    self.closing.push_back(&s);
    rearm_completions(self, s);
}

// The device went away: every socket on it fails with -ENETDOWN (pending operations, later
// calls, one device_down up-call for connections), and everything the instance holds on the
// device is released now, not at close: the kernel cannot finish removing a device that has no
// way to disassociate (rxe among them) until every user context on it is closed.
void release_device(verbs_instance& self, ibv_context* context) {
    log(self, provider::log_level::error, "verbs: device %s was removed: its sockets fail with -ENETDOWN",
        context->device != nullptr ? ibv_get_device_name(context->device) : "?");
    std::vector<vsocket*> dead;
    for (auto& [s, owned] : self.sockets) {
        const bool on_device = (s->id && s->id->verbs == context) || (s->device && s->device->context == context);
        if (!on_device) continue;
        switch (s->state) {
        case socket_state::closed: dead.push_back(s); continue;
        case socket_state::connecting: fail_connect(self, *s, -ENETDOWN); break;
        case socket_state::listening:
            fail_queue(self, *s, s->accepts, -ENETDOWN);
            break;
        case socket_state::connected:
        case socket_state::accepting:
            if (s->listener == nullptr) fail_connection(self, *s, -ENETDOWN, connection_event::device_down);
            break;
        default: break;
        }
        std::vector<operation*> pending;
        take_pending(*s, pending);
        for (operation* op : pending) finish(self, *s, op, -ENETDOWN);
        s->state = socket_state::failed;
        s->failure = -ENETDOWN;
        s->qp.reset();
        s->cq.reset();
        s->mr.reset();
        s->buffer.reset();
        s->posted_sends = s->posted_recvs = 0;
        s->device = nullptr;
        s->id.reset();
    }
    for (vsocket* s : dead) {
        std::erase(self.closing, s);
        self.sockets.erase(s);
    }
    auto device = self.devices.find(context);
    if (device != self.devices.end()) {
        self.engine->unwatch(device->second->watch);
        self.devices.erase(device);
    }
}

// Destroys closed sockets whose posted requests have all flushed (or that ran out of time).
void reap_closed(verbs_instance& self) {
    const auto now = std::chrono::steady_clock::now();
    std::erase_if(self.closing, [&](vsocket* s) {
        if (s->disconnect_pending) {
            s->disconnect_pending = false;
            stop_connection(*s);
        }
        if (s->posted_sends + s->posted_recvs > 0 && now < s->teardown_deadline) return false;
        self.sockets.erase(s); // members destroy QP, CQ, MR, buffer, then the id
        return true;
    });
}

int verbs_close(provider::instance* p, socket_handle h) {
    verbs_instance* self = self_of(p);
    if (self == nullptr) return -EINVAL;
    std::vector<operation*> cancelled;
    std::vector<operation*> finished; // completed before close, not delivered yet
    {
        std::unique_lock lock(self->mutex);
        vsocket* s = self->table.remove(h);
        if (s == nullptr) return -ENOTSOCK;
        // Completions or up-calls of this socket taken by another thread are delivered before
        // close returns (not when close is called from inside one of them).
        self->delivered.wait(lock, [&] {
            auto claim = self->claims.find(h);
            return claim == self->claims.end() || claim->second.thread == std::this_thread::get_id();
        });
        std::erase_if(self->done, [&](const finished_op& f) {
            if (f.socket != h) return false;
            finished.push_back(f.op);
            return true;
        });
        s->handle = invalid_socket; // no up-call for it from now on
        take_pending(*s, cancelled);
        // Connections a listener held but nobody accepted are reset.
        for (vsocket* connection : s->ready) {
            connection->listener = nullptr;
            start_teardown(*self, *connection);
        }
        s->ready.clear();
        for (auto& [other, owned] : self->sockets)
            if (other->listener == s) {
                other->listener = nullptr;
                start_teardown(*self, *other);
            }
        start_teardown(*self, *s);
    }
    // Progress moves the QP to error and tells the peer, on its own thread while this one
    // completes what it cancelled.
    self->engine->wake();
    for (operation* op : finished) op->complete(*op);
    for (operation* op : cancelled) {
        op->result = -ECANCELED;
        op->complete(*op);
    }
    return 0;
}

} // namespace sansock::verbs::detail

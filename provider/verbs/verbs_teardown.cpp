// SPDX-License-Identifier: MIT
// The verbs provider's failure and teardown: hard close, flushes, device removal.
#include "provider/verbs/verbs_internal.hpp"

namespace sansock::verbs::detail {

static void fail_queue(verbs_instance& self, const vsocket& s, op_queue& queue, int code) {
    while (operation* op = queue.pop()) finish(self, s, op, code);
}

// Every operation still pending on `s`, taken out of the socket into `out` (linked through
// provider_next: a close or failure needs no memory).
void take_pending(vsocket& s, op_queue& out) {
    if (s.connect_op != nullptr) out.push(std::exchange(s.connect_op, nullptr));
    while (operation* op = s.accepts.pop()) out.push(op);
    while (operation* op = s.sends.pop()) out.push(op);
    s.send_offset = 0;
    for (auto& use : s.send_slot_uses)
        if (use.op != nullptr) out.push(std::exchange(use.op, nullptr));
    while (operation* op = s.recvs.pop()) out.push(op);
    s.received.clear();
    while (operation* op = s.sq_waiting.pop()) out.push(op); // not posted: nothing to wait for
    // Message mode: posted receives and the early ones; their slots keep naming the region
    // until the flush is reaped (release_message_slots).
    for (auto& use : s.recv_slot_uses)
        if (use.op != nullptr) out.push(std::exchange(use.op, nullptr));
    while (operation* op = s.arrived_early.pop()) out.push(op);
    s.message_recvs = 0;
}

// The user hears of the failure once, through the up-call kept in the socket.
static void signal(verbs_instance& self, vsocket& s, connection_event event, int status) {
    if (s.handle == invalid_socket || s.signal_pending) return;
    s.signal_pending = true;
    s.signal_event = event;
    s.signal_status = status;
    ++self.signals;
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
    op_queue pending;
    take_pending(s, pending);
    while (operation* op = pending.pop()) finish(self, s, op, code);
    stop_connection(s);
    if (was_connected) signal(self, s, event, code);
}

void start_teardown(verbs_instance& self, vsocket& s) {
    if (s.state == socket_state::closed) return;
    s.state = socket_state::closed;
    // Nothing on the caller's path touches the device: in stream mode every buffer posted to the
    // QP is one of our own registered slots, never the user's, and in message mode the regions
    // posted stay busy until their flushes are reaped, so the pending operations can be
    // cancelled at once. The next progress (woken by close) moves the QP to error and sends the
    // disconnect request (rdma_disconnect); what arrives meanwhile is dropped with the socket.
    // (Moving the QP to error here cost 200+ us on rxe: its flush events woke progress.)
    if (s.id && s.id->qp != nullptr) s.disconnect_pending = true;
    s.teardown_deadline = std::chrono::steady_clock::now() + teardown_limit;
    ++self.closing; // reap_closed finds it by its state: no list to grow
    rearm_completions(self, s);
}

// The device went away: every socket on it fails with -ENETDOWN (pending operations, later
// calls, one device_down up-call for connections), and everything the instance holds on the
// device is released now, not at close: the kernel cannot finish removing a device that has no
// way to disassociate (rxe among them) until every user context on it is closed.
void release_device(verbs_instance& self, ibv_context* context) {
    log(self, provider::log_level::error, "verbs: device %s was removed: its sockets fail with -ENETDOWN",
        context->device != nullptr ? ibv_get_device_name(context->device) : "?");
    for (auto& [s, owned] : self.sockets) {
        const bool on_device = (s->id && s->id->verbs == context) || (s->device && s->device->context == context);
        if (!on_device) continue;
        switch (s->state) {
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
        op_queue pending;
        take_pending(*s, pending);
        if (s->state != socket_state::closed) take_posted_rdma(*s, pending); // the QP goes now
        while (operation* op = pending.pop()) finish(self, *s, op, -ENETDOWN);
        // A closed one keeps its state: the next progress reaps it (nothing of it is left on
        // the device), not here, where a thread delivering its last completions may hold it.
        if (s->state != socket_state::closed) {
            s->state = socket_state::failed;
            s->failure = -ENETDOWN;
        }
        s->disconnect_pending = false;
        release_message_slots(self, *s); // the QP goes now: the device is done with their memory
        s->qp.reset();
        s->cq.reset();
        s->mr.reset();
        s->buffer.reset();
        s->posted_sends = s->posted_recvs = s->rdma_posted = 0;
        s->device = nullptr;
        s->id.reset();
    }
    release_region_mrs(self, context);
    auto device = self.devices.find(context);
    if (device != self.devices.end()) {
        self.engine->unwatch(device->second->watch);
        self.devices.erase(device);
    }
}

// Takes out of the instance the closed sockets whose posted requests have all flushed (or that
// ran out of time), unless a thread is still delivering their last completions (closed from
// inside one), and returns them linked through reaped_next, for destroy_reaped.
vsocket* reap_closed(verbs_instance& self) {
    vsocket* reaped = nullptr;
    if (self.closing == 0) return reaped;
    const auto now = std::chrono::steady_clock::now();
    for (auto it = self.sockets.begin(); it != self.sockets.end();) {
        vsocket* s = it->first;
        if (s->state != socket_state::closed) {
            ++it;
            continue;
        }
        if (s->disconnect_pending) {
            s->disconnect_pending = false;
            stop_connection(*s);
        }
        if ((s->posted_sends + s->posted_recvs + s->rdma_posted > 0 && now < s->teardown_deadline) || s->claims > 0) {
            ++it;
            continue;
        }
        --self.closing;
        release_message_slots(self, *s); // flushed, or the QP is destroyed next
        s->reaped_next = reaped;
        reaped = it->second.release();
        it = self.sockets.erase(it); // (erase never allocates)
    }
    return reaped;
}

// Destroys what reap_closed took out, without the instance's lock: the kernel may take its
// time over a QP (rxe waits about a second for packets that still name it when the peer host
// is gone: measured in the twohost death-keepalive test), and meanwhile every other call of
// the instance goes on. Called inside progress (progress_mutex held), so no device event is
// handled meanwhile; the caller of progress does wait (docs/provider-interface.md).
void destroy_reaped(verbs_instance& self, vsocket* reaped) {
    while (vsocket* s = reaped) {
        reaped = s->reaped_next;
        const auto started = std::chrono::steady_clock::now();
        delete s; // members destroy QP, CQ, MR, buffer, then the id
        const auto took = std::chrono::steady_clock::now() - started;
        if (took >= slow_destroy)
            log(self, provider::log_level::info, "verbs: destroying a closed connection took %lld ms",
                static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()));
    }
}

// Takes the completions of socket `h` out of `done` into `out`, keeping the others' order.
static void take_done_of(verbs_instance& self, socket_handle h, op_queue& out) {
    op_queue kept;
    while (operation* op = self.done.pop()) {
        if (op->provider_word == h) out.push(op);
        else kept.push(op);
    }
    self.done = kept;
}

// Needs no memory: the handle table's remove never allocates, what is cancelled or finished is
// linked through the operations, the teardown is found by its state. rdma-core is not called.
int verbs_close(provider::instance* p, socket_handle h) {
    verbs_instance* self = self_of(p);
    if (self == nullptr) return -EINVAL;
    op_queue cancelled;
    op_queue finished; // completed before close, not delivered yet
    {
        std::unique_lock lock(self->mutex);
        vsocket* s = self->table.remove(h);
        if (s == nullptr) return -ENOTSOCK;
        // Completions or up-calls of this socket taken by another thread are delivered before
        // close returns (not when close is called from inside one of them).
        const auto me = std::this_thread::get_id();
        self->delivered.wait(lock, [&] { return s->claims == 0 || s->claim_thread == me; });
        take_done_of(*self, h, finished);
        s->handle = invalid_socket; // no up-call for it from now on
        if (std::exchange(s->signal_pending, false)) --self->signals;
        take_pending(*s, cancelled);
        // Connections a listener held but nobody accepted are reset.
        while (vsocket* connection = s->ready.pop_front()) {
            connection->listener = nullptr;
            start_teardown(*self, *connection);
        }
        for (auto& [other, owned] : self->sockets)
            if (other->listener == s) {
                other->listener = nullptr;
                start_teardown(*self, *other);
            }
        start_teardown(*self, *s);
        // RDMA requests still posted may move the user's memory: they flush first.
        quiesce_rdma(*self, *s, lock);
        take_posted_rdma(*s, cancelled);
        for (operation* op = finished.front(); op != nullptr; op = op->provider_next) note_delivered(*self, op);
        for (operation* op = cancelled.front(); op != nullptr; op = op->provider_next) note_delivered(*self, op);
    }
    // Progress moves the QP to error and tells the peer, on its own thread while this one
    // completes what it cancelled.
    self->engine->wake();
    while (operation* op = finished.pop()) op->complete(*op);
    while (operation* op = cancelled.pop()) {
        op->result = -ECANCELED;
        op->complete(*op);
    }
    return 0;
}

} // namespace sansock::verbs::detail

// SPDX-License-Identifier: MIT
// The verbs provider's completion queues and progress: CQ polling, busy polling.
#include <arpa/inet.h>

#include <algorithm>
#include <optional>

#include "provider/verbs/verbs_internal.hpp"

namespace sansock::verbs::detail {

// Events on, so progress hears of the flushes that teardown waits for; what completed while
// they were off is taken now.
void rearm_completions(verbs_instance& self, vsocket& s) {
    s.busy_pollers = 0;
    s.left_unarmed = false;
    if (s.cq_armed || !s.cq) return;
    s.cq_armed = ibv_req_notify_cq(s.cq.get(), 0) == 0;
    drain_completions(self, s);
}

// A socket whose QP carries the user's traffic (connected, or about to be).
static bool receiving(const vsocket& s) {
    return s.state == socket_state::connected ||
           ((s.state == socket_state::connecting || s.state == socket_state::accepting) && s.qp);
}

static void handle_completion(verbs_instance& self, vsocket& s, const ibv_wc& wc) {
    if ((wc.wr_id & (recv_wr_flag | rdma_wr_flag)) == rdma_wr_flag) {
        on_rdma_completion(self, s, wc);
        return;
    }
    if (self.settings.messages) {
        on_message_completion(self, s, wc);
        return;
    }
    if (wc.wr_id & recv_wr_flag) {
        --s.posted_recvs;
        const uint32_t slot = static_cast<uint32_t>(wc.wr_id & ~recv_wr_flag);
        // The peer may send as soon as it is established, before our own ESTABLISHED event is
        // handled: a connection still connecting or accepting takes its data too.
        if (!receiving(s)) return; // flushes of a failed or closed socket
        if (wc.status != IBV_WC_SUCCESS) {
            fail_connection(self, s, -ECONNRESET, connection_event::peer_reset);
            return;
        }
        if (wc.wc_flags & IBV_WC_WITH_IMM) s.credits += ntohl(wc.imm_data);
        if (wc.byte_len == 0) {
            if (!repost_receive(self, s, slot)) return;
        } else if (!s.received.push_back({slot, 0, wc.byte_len})) {
            fail_connection(self, s, -ECONNRESET, connection_event::peer_reset); // more than its credits
            return;
        }
        deliver_received(self, s);
        return;
    }
    --s.posted_sends;
    const uint32_t slot = static_cast<uint32_t>(wc.wr_id);
    if (slot >= s.send_slots) return;
    s.free_send_slots.push_back(slot); // within the capacity reserved at build_connection
    operation* op = std::exchange(s.send_slot_uses[slot].op, nullptr);
    if (!receiving(s)) return;
    if (wc.status != IBV_WC_SUCCESS) {
        if (op != nullptr) finish(self, s, op, -ECONNRESET);
        fail_connection(self, s, -ECONNRESET, connection_event::peer_reset);
        return;
    }
    if (op != nullptr) finish(self, s, op, static_cast<int64_t>(op->length));
    pump_sends(self, s);
}

void drain_completions(verbs_instance& self, vsocket& s) {
    ibv_wc batch[32];
    int n;
    while (s.cq && (n = ibv_poll_cq(s.cq.get(), 32, batch)) > 0)
        for (int i = 0; i < n; ++i) handle_completion(self, s, batch[i]);
}

void on_device_completions(void* context, int, uint32_t) noexcept {
    auto* device = static_cast<device_resources*>(context);
    verbs_instance& self = *device->owner;
    std::lock_guard lock(self.mutex);
    ibv_cq* cq = nullptr;
    void* cq_context = nullptr;
    while (ibv_get_cq_event(device->channel.get(), &cq, &cq_context) == 0) {
        ibv_ack_cq_events(cq, 1);
        auto* s = static_cast<vsocket*>(cq_context);
        if (s->busy_pollers > 0) {
            s->cq_armed = false; // the poller re-arms it when it stops
            continue;
        }
        ibv_req_notify_cq(cq, 0);
        drain_completions(self, *s);
    }
}

// Sockets left unarmed whose poller did not come back: progress hears of them again.
static void rearm_abandoned(verbs_instance& self) {
    std::optional<std::chrono::steady_clock::time_point> now; // read only if needed: every progress runs this
    for (auto& [s, owned] : self.sockets) {
        if (!s->left_unarmed || s->busy_pollers != 0) continue;
        if (!now) now = std::chrono::steady_clock::now();
        if (*now - s->unarmed_since >= unarmed_limit) rearm_completions(self, *s);
    }
}

// Claims `s` for this thread's delivery; false when another thread is delivering for it.
static bool claim(vsocket& s) {
    const auto me = std::this_thread::get_id();
    if (s.claims > 0 && s.claim_thread != me) return false;
    s.claim_thread = me;
    ++s.claims;
    return true;
}

// Takes the completions to deliver (of socket `only`, or of all when 0) out of `done` into
// `out`, claiming their sockets for this thread; each one's provider_word becomes its claimed
// socket (0: none). Those of a socket another thread is delivering stay queued, for that
// thread or the next progress, and so do those of a socket being closed (its close delivers
// them). Nothing is allocated: the operations are relinked.
static void take_deliveries(verbs_instance& self, socket_handle only, op_queue& out) {
    op_queue kept;
    while (operation* op = self.done.pop()) {
        const socket_handle socket = op->provider_word;
        bool take = only == invalid_socket || socket == only;
        vsocket* s = nullptr;
        if (take && socket != invalid_socket) { // else not held by the user: nothing can close it
            s = self.table.find(socket);
            take = s != nullptr && claim(*s);
        }
        if (!take) {
            kept.push(op);
            continue;
        }
        op->provider_word = reinterpret_cast<uintptr_t>(s);
        note_delivered(self, op); // its region is no longer busy for it
        out.push(op);
    }
    self.done = kept;
}

static void release_claim(verbs_instance& self, vsocket* s) {
    if (s == nullptr) return;
    std::lock_guard lock(self.mutex);
    if (--s->claims == 0) self.delivered.notify_all();
}

// One pending up-call (of socket `only`, or of any when 0) taken out of its socket, which is
// claimed for this thread; null when there is none this thread may deliver.
static vsocket* take_signal(verbs_instance& self, socket_handle only) {
    if (self.signals == 0) return nullptr;
    auto takes = [&](vsocket* s) { return s != nullptr && s->signal_pending && claim(*s); };
    vsocket* found = nullptr;
    if (only != invalid_socket) {
        vsocket* s = self.table.find(only);
        if (takes(s)) found = s;
    } else {
        for (auto& [s, owned] : self.sockets)
            if (takes(s)) {
                found = s;
                break;
            }
    }
    if (found != nullptr) {
        found->signal_pending = false;
        --self.signals;
    }
    return found;
}

// Delivers what take_deliveries took, without the instance lock, then the up-calls, one at a
// time (an up-call is cleared from its socket at close, so none comes after). A completion is
// never dropped. Returns how many were delivered.
static int deliver(verbs_instance& self, op_queue& ops, socket_handle only) {
    int delivered = 0;
    while (operation* op = ops.pop()) {
        auto* s = reinterpret_cast<vsocket*>(op->provider_word);
        op->complete(*op); // may free the operation: nothing of it is read afterwards
        release_claim(self, s);
        ++delivered;
    }
    for (;;) {
        socket_handle handle;
        connection_event event;
        int status;
        vsocket* s;
        {
            std::lock_guard lock(self.mutex);
            s = take_signal(self, only);
            if (s == nullptr) break;
            handle = s->handle;
            event = s->signal_event;
            status = s->signal_status;
        }
        if (self.calls.on_connection_event != nullptr) self.calls.on_connection_event(self.calls.context, handle, event, status);
        release_claim(self, s);
        ++delivered;
    }
    return delivered;
}

int verbs_progress(provider::instance* p, int timeout_ms) {
    verbs_instance* self = self_of(p);
    if (self == nullptr) return -EINVAL;
    std::lock_guard progress_lock(self->progress_mutex);
    bool have_work, unarmed;
    {
        std::lock_guard lock(self->mutex);
        have_work = !self->done.empty() || self->signals > 0;
        unarmed = std::any_of(self->sockets.begin(), self->sockets.end(), [](const auto& e) { return e.first->left_unarmed; });
    }
    int wait_ms = have_work ? 0 : std::max(timeout_ms, 0);
    if (unarmed) wait_ms = std::min(wait_ms, int(unarmed_limit.count()));
    int rc = self->engine->run_once(std::chrono::milliseconds(wait_ms));
    if (rc < 0 && rc != -EINTR && rc != -ETIME) return rc;
    op_queue ops;
    vsocket* reaped;
    {
        std::lock_guard lock(self->mutex);
        reaped = reap_closed(*self);
        rearm_abandoned(*self);
        take_deliveries(*self, invalid_socket, ops);
    }
    const int delivered = deliver(*self, ops, invalid_socket);
    destroy_reaped(*self, reaped); // after the deliveries: they do not wait for the kernel
    return delivered;
}

// Busy-poll support: the caller's thread polls the socket's own completion queue and delivers
// what it finds, so a blocked call needs no hand-off from the progress thread.
int verbs_progress_socket(provider::instance* p, socket_handle h, uint32_t flags) {
    verbs_instance* self = self_of(p);
    if (self == nullptr) return -EINVAL;
    if ((flags & ~(poll_start | poll_stop | poll_stay_unarmed | poll_arm)) != 0 ||
        ((flags & poll_arm) && flags != poll_arm))
        return -EINVAL;
    if (flags == poll_arm) {
        std::lock_guard lock(self->mutex);
        vsocket* s = find(*self, h);
        if (s == nullptr) return -ENOTSOCK;
        if (s->busy_pollers == 0) rearm_completions(*self, *s);
        if (!self->done.empty() || self->signals > 0) self->engine->wake(); // progress delivers
        return 0;
    }
    op_queue ops;
    {
        std::lock_guard lock(self->mutex);
        vsocket* s = find(*self, h);
        if (s == nullptr) return -ENOTSOCK;
        if (flags & poll_start) ++s->busy_pollers;
        if (s->cq) drain_completions(*self, *s);
        if ((flags & poll_stop) && s->busy_pollers > 0 && --s->busy_pollers == 0) {
            if ((flags & poll_stay_unarmed) && !s->cq_armed) {
                s->left_unarmed = true;
                s->unarmed_since = std::chrono::steady_clock::now();
            } else {
                rearm_completions(*self, *s);
            }
        }
        take_deliveries(*self, h, ops);
    }
    return deliver(*self, ops, h);
}

int verbs_event_fd(provider::instance* p) {
    verbs_instance* self = self_of(p);
    return self == nullptr ? -EINVAL : self->engine->fd();
}

int verbs_wake(provider::instance* p) {
    verbs_instance* self = self_of(p);
    return self == nullptr ? -EINVAL : self->engine->wake();
}

} // namespace sansock::verbs::detail

// SPDX-License-Identifier: MIT
// The verbs provider's data path in stream mode: posting sends and receives, credit flow
// control (message mode: verbs_messages.cpp).
#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

#include "provider/verbs/verbs_call.hpp"
#include "provider/verbs/verbs_internal.hpp"

namespace sansock::verbs::detail {

int post_receive(vsocket& s, uint32_t slot) {
    ibv_sge sge{reinterpret_cast<uintptr_t>(s.recv_slot(slot)), s.slot_size, s.mr->lkey};
    ibv_recv_wr wr{};
    wr.wr_id = recv_wr_flag | slot;
    wr.sg_list = &sge;
    wr.num_sge = 1;
    ibv_recv_wr* bad = nullptr;
    int rc = checked(ibv_post_recv(s.qp.get(), &wr, &bad));
    if (rc == 0) ++s.posted_recvs;
    return rc;
}

// Posts a consumed receive slot again, a credit owed to the peer; false when the post failed
// and the connection with it.
bool repost_receive(verbs_instance& self, vsocket& s, uint32_t slot) {
    if (post_receive(s, slot) != 0) {
        fail_connection(self, s, -ECONNRESET, connection_event::peer_reset);
        return false;
    }
    ++s.owed;
    return true;
}

static int post_send_slot(vsocket& s, uint32_t slot, uint32_t length) {
    ibv_sge sge{reinterpret_cast<uintptr_t>(s.send_slot(slot)), length, s.mr->lkey};
    ibv_send_wr wr{};
    wr.wr_id = slot;
    wr.sg_list = length > 0 ? &sge : nullptr;
    wr.num_sge = length > 0 ? 1 : 0;
    wr.opcode = IBV_WR_SEND_WITH_IMM;
    wr.send_flags = IBV_SEND_SIGNALED;
    wr.imm_data = htonl(s.owed);
    ibv_send_wr* bad = nullptr;
    int rc = checked(ibv_post_send(s.qp.get(), &wr, &bad));
    if (rc == 0) {
        s.owed = 0;
        --s.credits;
        ++s.posted_sends;
    }
    return rc;
}

// Posts what flow control allows: data while two or more credits remain (the last one is kept
// for returning credits, so both ends can never be left without), else a bare credit return
// once half the receives are owed.
void pump_sends(verbs_instance& self, vsocket& s) {
    while (s.state == socket_state::connected && !s.free_send_slots.empty()) {
        const uint32_t slot = s.free_send_slots.back();
        if (!s.sends.empty() && s.credits >= 2) {
            operation* op = s.sends.front();
            const size_t chunk = std::min<size_t>(op->length - s.send_offset, s.fragment_size);
            std::memcpy(s.send_slot(slot), static_cast<const uint8_t*>(op->buffer) + s.send_offset, chunk);
            if (int rc = post_send_slot(s, slot, static_cast<uint32_t>(chunk))) {
                fail_connection(self, s, rc == -ENETDOWN ? rc : -ECONNRESET, connection_event::peer_reset);
                return;
            }
            s.free_send_slots.pop_back();
            s.send_offset += chunk;
            s.send_slot_uses[slot].op = nullptr;
            if (s.send_offset == op->length) {
                s.send_slot_uses[slot].op = s.sends.pop();
                s.send_offset = 0;
            }
            continue;
        }
        if (s.owed >= std::max(1u, s.recv_slots / 2) && s.credits >= 1) {
            if (int rc = post_send_slot(s, slot, 0)) {
                fail_connection(self, s, rc == -ENETDOWN ? rc : -ECONNRESET, connection_event::peer_reset);
                return;
            }
            s.free_send_slots.pop_back();
            s.send_slot_uses[slot].op = nullptr;
            continue;
        }
        return;
    }
}

// Moves received bytes into waiting receives; a slot emptied is posted again (a credit owed).
void deliver_received(verbs_instance& self, vsocket& s) {
    while (!s.recvs.empty() && !s.received.empty()) {
        operation* op = s.recvs.front();
        while (!s.received.empty() && op->provider_word < op->length) {
            received_fragment& fragment = s.received.front();
            const size_t n = std::min<size_t>(fragment.length, op->length - op->provider_word);
            std::memcpy(static_cast<uint8_t*>(op->buffer) + op->provider_word, s.recv_slot(fragment.slot) + fragment.offset, n);
            op->provider_word += n;
            fragment.offset += static_cast<uint32_t>(n);
            fragment.length -= static_cast<uint32_t>(n);
            if (fragment.length == 0) {
                const uint32_t slot = fragment.slot;
                s.received.pop_front();
                if (!repost_receive(self, s, slot)) return;
            }
        }
        if (op->provider_word == op->length || !(op->flags & op_wait_all)) {
            s.recvs.pop();
            finish(self, s, op, static_cast<int64_t>(op->provider_word));
        } else {
            break; // wait-all receive still short: wait for more data
        }
    }
    pump_sends(self, s);
}

int verbs_send(provider::instance* p, socket_handle h, operation* op) {
    verbs_instance* self = self_of(p);
    std::lock_guard lock(self->mutex);
    vsocket* s = find(*self, h);
    if (s == nullptr) return -ENOTSOCK;
    if (self->settings.messages) return message_send(*self, *s, op);
    if (int rc = validate_op(op, operation_kind::send)) return rc;
    if (s->state == socket_state::failed) return s->failure;
    if (s->state != socket_state::connected) return -ENOTCONN;
    s->sends.push(op);
    pump_sends(*self, *s);
    return 0;
}

int verbs_recv(provider::instance* p, socket_handle h, operation* op) {
    verbs_instance* self = self_of(p);
    std::lock_guard lock(self->mutex);
    vsocket* s = find(*self, h);
    if (s == nullptr) return -ENOTSOCK;
    if (self->settings.messages) return message_recv(*self, *s, op);
    if (int rc = validate_op(op, operation_kind::recv)) return rc;
    if (s->state == socket_state::failed) return s->failure;
    if (s->state != socket_state::connected) return -ENOTCONN;
    op->provider_word = 0;
    s->recvs.push(op);
    deliver_received(*self, *s);
    if (!self->done.empty()) self->engine->wake();
    return 0;
}

} // namespace sansock::verbs::detail

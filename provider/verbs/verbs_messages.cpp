// SPDX-License-Identifier: MIT
// The verbs provider's message mode (config::messages): a send is one SEND of the user's
// registered memory, a recv one posted receive of it. No buffer, credits or framing of our
// own: the user's flow control keeps a receive posted for every message (rnr_retry is 0).
//
// A posted request keeps its region busy (vregion::posted) until its completion is reaped,
// also after the close that cancelled its operation: close does not wait for the device, so
// deregister_memory says -EBUSY until the flush came or the QP was destroyed.
#include "provider/verbs/verbs_call.hpp"
#include "provider/verbs/verbs_internal.hpp"

namespace sansock::verbs::detail {

namespace {

// A receive's room in one work request: a message is at most the peer's slot_size (2^30), so
// a larger room is posted as 2^31 bytes.
constexpr uint64_t max_room = uint64_t(1) << 31;

// The checks of a send or recv at submission; its region in *out.
int check_message(verbs_instance& self, const operation* op, operation_kind kind, vregion** out) {
    if (op == nullptr || op->complete == nullptr || op->kind != kind || op->length == 0) return -EINVAL;
    if (op->flags & op_wait_all) return -EINVAL; // a message is taken whole or not at all
    if (kind == operation_kind::send && op->length > self.settings.slot_size) return -EMSGSIZE;
    vregion* r = self.regions.find(op->memory);
    if (r == nullptr) return -ENOENT;
    if (!inside(op->memory_offset, op->length, r->length)) return -EINVAL;
    *out = r;
    return 0;
}

void release_region(verbs_instance& self, provider::memory_handle memory) {
    if (memory == provider::invalid_memory) return;
    if (vregion* r = self.regions.find(memory); r != nullptr && r->posted > 0) --r->posted;
}

int post_message_recv(verbs_instance& self, vsocket& s, operation* op) {
    vregion* r = self.regions.find(op->memory); // live: busy while its op is
    const ibv_mr* mr = r != nullptr ? mr_on(*r, s.device) : nullptr;
    if (mr == nullptr) return -EINVAL;
    if (s.free_recv_slots.empty()) return -ENOBUFS; // not while message_recvs < recv_slots
    const uint32_t slot = s.free_recv_slots.back();
    const auto room = static_cast<uint32_t>(std::min<uint64_t>(op->length, max_room));
    ibv_sge sge{reinterpret_cast<uintptr_t>(r->address + op->memory_offset), room, mr->lkey};
    ibv_recv_wr wr{};
    wr.wr_id = recv_wr_flag | slot;
    wr.sg_list = &sge;
    wr.num_sge = 1;
    ibv_recv_wr* bad = nullptr;
    if (int rc = checked(ibv_post_recv(s.qp.get(), &wr, &bad))) return rc;
    s.free_recv_slots.pop_back();
    s.recv_slot_uses[slot] = {op, op->memory};
    ++r->posted;
    ++s.posted_recvs;
    return 0;
}

} // namespace

// The slot lists of a connection, at their full size (completions push slots back within them).
int build_message_slots(vsocket& s) {
    try {
        s.send_slot_uses.assign(s.send_slots, {});
        s.free_send_slots.clear();
        s.free_send_slots.reserve(s.send_slots);
        s.recv_slot_uses.assign(s.recv_slots, {});
        s.free_recv_slots.clear();
        s.free_recv_slots.reserve(s.recv_slots);
    } catch (const std::bad_alloc&) {
        return -ENOMEM;
    }
    for (uint32_t slot = s.recv_slots; slot-- > 0;) s.free_recv_slots.push_back(slot);
    return 0;
}

// The receives posted before the QP existed go onto it now, in their order, before rdma_connect.
int post_early_receives(verbs_instance& self, vsocket& s) {
    while (operation* op = s.recvs.front()) {
        if (int rc = post_message_recv(self, s, op)) return rc; // the connect fails, and they with it
        s.recvs.pop();
    }
    return 0;
}

// One SEND of the operation's bytes, inline when the QP takes that many (called by
// pump_send_queue when a send slot is free).
int post_message_send(verbs_instance& self, vsocket& s, operation* op) {
    vregion* r = self.regions.find(op->memory); // live: busy while its op is
    const ibv_mr* mr = r != nullptr ? mr_on(*r, s.device) : nullptr;
    if (mr == nullptr) return -EINVAL;
    const uint32_t slot = s.free_send_slots.back();
    ibv_sge sge{reinterpret_cast<uintptr_t>(r->address + op->memory_offset), static_cast<uint32_t>(op->length), mr->lkey};
    ibv_send_wr wr{};
    wr.wr_id = slot;
    wr.sg_list = &sge;
    wr.num_sge = 1;
    wr.opcode = IBV_WR_SEND;
    wr.send_flags = IBV_SEND_SIGNALED;
    if (op->length <= s.max_inline) wr.send_flags |= IBV_SEND_INLINE; // copied at the post: no DMA read
    ibv_send_wr* bad = nullptr;
    if (int rc = checked(ibv_post_send(s.qp.get(), &wr, &bad))) return rc;
    s.free_send_slots.pop_back();
    s.send_slot_uses[slot] = {op, op->memory};
    ++r->posted;
    ++s.posted_sends;
    return 0;
}

int message_send(verbs_instance& self, vsocket& s, operation* op) {
    vregion* r = nullptr;
    if (int rc = check_message(self, op, operation_kind::send, &r)) return rc;
    if (s.state == socket_state::failed) return s.failure;
    if (s.state != socket_state::connected) return -ENOTCONN;
    ++r->pending;
    s.sq_waiting.push(op); // behind RDMA requests submitted before it
    pump_send_queue(self, s);
    if (!self.done.empty()) self.engine->wake();
    return 0;
}

// Kept until the QP exists on a socket not connected yet (fresh, bound, resolving), posted at
// once otherwise.
int message_recv(verbs_instance& self, vsocket& s, operation* op) {
    vregion* r = nullptr;
    if (int rc = check_message(self, op, operation_kind::recv, &r)) return rc;
    switch (s.state) {
    case socket_state::fresh:
    case socket_state::bound:
    case socket_state::connecting:
    case socket_state::connected: break;
    case socket_state::failed: return s.failure;
    default: return -ENOTCONN;
    }
    if (s.message_recvs >= self.settings.recv_slots) return -ENOBUFS;
    ++r->pending;
    ++s.message_recvs;
    if (!s.qp) {
        s.recvs.push(op);
        return 0;
    }
    if (int rc = post_message_recv(self, s, op)) {
        --s.message_recvs;
        finish(self, s, op, rc == -ENETDOWN ? rc : -ECONNRESET);
        fail_connection(self, s, rc == -ENETDOWN ? rc : -ECONNRESET, connection_event::peer_reset);
        self.engine->wake();
    }
    return 0;
}

// A send or receive completed or flushed. Its region is released either way; its operation
// (unless a close or failure took it already) finishes with the result.
void on_message_completion(verbs_instance& self, vsocket& s, const ibv_wc& wc) {
    const bool recv = (wc.wr_id & recv_wr_flag) != 0;
    const auto slot = static_cast<uint32_t>(wc.wr_id & ~recv_wr_flag);
    std::vector<slot_use>& uses = recv ? s.recv_slot_uses : s.send_slot_uses;
    if (slot >= uses.size()) return;
    if (recv) --s.posted_recvs;
    else --s.posted_sends;
    const slot_use use = std::exchange(uses[slot], {});
    (recv ? s.free_recv_slots : s.free_send_slots).push_back(slot); // within the reserved capacity
    release_region(self, use.memory);
    operation* op = use.op;
    if (op == nullptr) return; // cancelled by close, or failed with the connection
    if (recv) --s.message_recvs;
    if (wc.status == IBV_WC_SUCCESS) {
        if (!recv) {
            finish(self, s, op, static_cast<int64_t>(op->length));
            pump_send_queue(self, s);
        } else if (s.state == socket_state::connecting) { // the peer was quicker than our ESTABLISHED
            op->result = wc.byte_len;
            s.arrived_early.push(op);
        } else {
            finish(self, s, op, wc.byte_len);
        }
        return;
    }
    // A receive that is not flushed fails only for a message longer than its room (its range and
    // key were checked): a local length error, which rxe reports as a local QP operation error
    // (seen in the SoftRoCE VM). Both QPs are in error now (the sender's got a NAK).
    const bool too_long = recv && (wc.status == IBV_WC_LOC_LEN_ERR || wc.status == IBV_WC_LOC_QP_OP_ERR ||
                                   wc.status == IBV_WC_REM_INV_REQ_ERR);
    log(self, provider::log_level::debug, "verbs: a message %s failed: %s; the connection is reset", recv ? "receive" : "send",
        ibv_wc_status_str(wc.status));
    finish(self, s, op, too_long ? -EMSGSIZE : -ECONNRESET);
    fail_connection(self, s, -ECONNRESET, connection_event::peer_reset);
}

// Receives that completed while we were still connecting, after the connect's own completion.
void deliver_early(verbs_instance& self, vsocket& s) {
    while (operation* op = s.arrived_early.pop()) finish(self, s, op, op->result);
}

// The QP is gone (or its flushes are in): its requests no longer keep their regions busy.
void release_message_slots(verbs_instance& self, vsocket& s) {
    for (std::vector<slot_use>* uses : {&s.send_slot_uses, &s.recv_slot_uses})
        for (slot_use& use : *uses) release_region(self, std::exchange(use.memory, provider::invalid_memory));
}

} // namespace sansock::verbs::detail

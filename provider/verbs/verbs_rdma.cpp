// SPDX-License-Identifier: MIT
// The verbs provider's memory registration and RDMA: user regions registered on every device
// of the instance (a key belongs to one PD), RDMA_WRITE and RDMA_READ posted from them, and the
// rules that keep the hard close's promise for memory the adapter may still be writing.
#include <algorithm>
#include <thread>

#include "provider/verbs/verbs_call.hpp"
#include "provider/verbs/verbs_internal.hpp"

namespace sansock::verbs::detail {

using provider::memory_handle;

namespace {

constexpr uint32_t known_access = provider::memory_remote_read | provider::memory_remote_write;

bool is_rdma(const operation* op) { return op->kind == provider::rdma_write || op->kind == provider::rdma_read; }

int post_rdma(vsocket& s, uint32_t slot, operation* op, const vregion& r, const ibv_mr* mr) {
    ibv_sge sge{reinterpret_cast<uintptr_t>(r.address + op->memory_offset), static_cast<uint32_t>(op->length), mr->lkey};
    ibv_send_wr wr{};
    wr.wr_id = rdma_wr_flag | slot;
    wr.sg_list = &sge;
    wr.num_sge = 1;
    wr.opcode = op->kind == provider::rdma_write ? IBV_WR_RDMA_WRITE : IBV_WR_RDMA_READ;
    wr.send_flags = IBV_SEND_SIGNALED;
    wr.wr.rdma.remote_addr = op->remote_address;
    wr.wr.rdma.rkey = op->remote_key;
    ibv_send_wr* bad = nullptr;
    return checked(ibv_post_send(s.qp.get(), &wr, &bad));
}

} // namespace

const ibv_mr* mr_on(const vregion& r, const device_resources* device) {
    for (const region_mr& m : r.mrs)
        if (m.device == device) return m.mr.get();
    return nullptr;
}

// (ibv_reg_mr): the function, not verbs.h's macro (see build_connection). Allocates, so it is
// never called on a close or completion path.
int register_on_device(verbs_instance& self, vregion& r, device_resources& device) noexcept {
    if (mr_on(r, &device) != nullptr) return 0;
    int flags = IBV_ACCESS_LOCAL_WRITE; // a read lands in it
    if (r.access & provider::memory_remote_read) flags |= IBV_ACCESS_REMOTE_READ;
    if (r.access & provider::memory_remote_write) flags |= IBV_ACCESS_REMOTE_WRITE;
    memory_region mr((ibv_reg_mr)(device.pd.get(), r.address, r.length, flags), {&self.destroy_logging});
    if (int rc = checked_pointer(mr.get())) return rc;
    try {
        r.mrs.push_back({&device, std::move(mr)});
    } catch (const std::bad_alloc&) {
        return -ENOMEM;
    }
    return 0;
}

// Posts waiting operations, in their order, while the SQ has room for the one in front: RDMA
// requests up to rdma_depth, message sends (message mode) up to send_slots.
void pump_send_queue(verbs_instance& self, vsocket& s) {
    while (s.state == socket_state::connected && !s.sq_waiting.empty()) {
        operation* op = s.sq_waiting.front();
        int rc;
        if (op->kind == operation_kind::send) {
            if (s.free_send_slots.empty()) return;
            rc = post_message_send(self, s, s.sq_waiting.pop());
        } else {
            if (s.rdma_posted >= rdma_depth) return;
            uint32_t slot = 0;
            while (s.rdma_slots[slot] != nullptr) ++slot; // one is free: rdma_posted < rdma_depth
            s.sq_waiting.pop();
            const vregion* r = self.regions.find(op->memory); // live: busy while its op is
            const ibv_mr* mr = r != nullptr ? mr_on(*r, s.device) : nullptr;
            rc = mr != nullptr ? post_rdma(s, slot, op, *r, mr) : -EINVAL;
            if (rc == 0) {
                s.rdma_slots[slot] = op;
                ++s.rdma_posted;
            }
        }
        if (rc != 0) {
            finish(self, s, op, rc == -ENETDOWN ? rc : -ECONNRESET);
            fail_connection(self, s, rc == -ENETDOWN ? rc : -ECONNRESET, connection_event::peer_reset);
            return;
        }
    }
}

// An RDMA request completed or flushed. Its operation finishes with its result, except on a
// closed socket, whose close cancels it (after quiesce_rdma) and takes it out of the slot.
void on_rdma_completion(verbs_instance& self, vsocket& s, const ibv_wc& wc) {
    const uint32_t slot = static_cast<uint32_t>(wc.wr_id & 0xffff);
    if (s.rdma_posted > 0) --s.rdma_posted;
    if (slot >= rdma_depth || !s.rdma_slots || s.state == socket_state::closed) return;
    operation* op = std::exchange(s.rdma_slots[slot], nullptr);
    if (op == nullptr) return;
    if (wc.status == IBV_WC_SUCCESS) {
        finish(self, s, op, static_cast<int64_t>(op->length));
        pump_send_queue(self, s);
        return;
    }
    if (s.state == socket_state::failed) { // a flush after the connection failed
        finish(self, s, op, s.failure);
        return;
    }
    // A refused remote access (bad key, outside the region, no such access) moved the QP to the
    // error state, and the peer's too: the connection is reset at both ends.
    finish(self, s, op, wc.status == IBV_WC_REM_ACCESS_ERR ? -EACCES : -ECONNRESET);
    fail_connection(self, s, -ECONNRESET, connection_event::peer_reset);
}

// The posted operations of `s`, out of their slots (the QP is gone or flushed).
void take_posted_rdma(vsocket& s, op_queue& out) {
    if (!s.rdma_slots) return;
    for (uint32_t slot = 0; slot < rdma_depth; ++slot)
        if (operation* op = std::exchange(s.rdma_slots[slot], nullptr)) out.push(op);
}

// Close with RDMA requests posted: they may still move the user's memory (a read lands in it),
// so before they complete -ECANCELED the QP goes to error here, on the caller's thread, and
// close waits until every one has flushed from the CQ. Only a close with RDMA in flight does
// this; nothing allocates. Past rdma_flush_limit it gives up and says so.
void quiesce_rdma(verbs_instance& self, vsocket& s, std::unique_lock<std::mutex>& lock) {
    if (s.rdma_posted == 0 || !s.qp) return;
    ibv_qp_attr attr{};
    attr.qp_state = IBV_QPS_ERR;
    ibv_modify_qp(s.qp.get(), &attr, IBV_QP_STATE);
    const auto deadline = std::chrono::steady_clock::now() + rdma_flush_limit;
    for (;;) {
        if (s.cq) drain_completions(self, s);
        if (s.rdma_posted == 0 || !s.qp) return;
        if (std::chrono::steady_clock::now() >= deadline) break;
        lock.unlock(); // progress may drain them meanwhile; the socket is not reaped while posted
        std::this_thread::sleep_for(std::chrono::microseconds(50));
        lock.lock();
    }
    log(self, provider::log_level::error, "verbs: %u RDMA requests did not flush within %lld ms of close",
        s.rdma_posted, static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(rdma_flush_limit).count()));
}

void note_delivered(verbs_instance& self, const operation* op) {
    const bool message = self.settings.messages && (op->kind == operation_kind::send || op->kind == operation_kind::recv);
    if (!is_rdma(op) && !message) return;
    if (vregion* r = self.regions.find(op->memory); r != nullptr && r->pending > 0) --r->pending;
}

// The device went away: its memory regions go before its PD.
void release_region_mrs(verbs_instance& self, ibv_context* context) {
    self.regions.for_each([&](uint64_t, vregion* r) {
        std::erase_if(r->mrs, [context](const region_mr& m) { return m.device->context == context; });
    });
}

void free_regions(verbs_instance& self) {
    for (;;) {
        vregion* next = nullptr;
        self.regions.for_each([&](uint64_t, vregion* r) {
            if (next == nullptr) next = r;
        });
        if (next == nullptr) return;
        self.regions.remove(next->handle);
        delete next; // its owners deregister the memory regions
    }
}

int verbs_register_memory(provider::instance* p, void* address, size_t length, uint32_t access, memory_handle* out) {
    verbs_instance* self = self_of(p);
    if (self == nullptr || out == nullptr || address == nullptr || length == 0 || (access & ~known_access) != 0)
        return -EINVAL;
    *out = provider::invalid_memory;
    std::unique_ptr<vregion> r(new (std::nothrow) vregion);
    if (!r) return -ENOMEM;
    r->address = static_cast<uint8_t*>(address);
    r->length = length;
    r->access = access;
    std::lock_guard lock(self->mutex);
    // On every device rdma_cm knows, so the region works whichever one a connection uses
    // (device_for registers the regions on a device it opens later).
    int count = 0;
    ibv_context** contexts = rdma_get_devices(&count);
    if (contexts == nullptr) return -ENETDOWN;
    int rc = 0;
    for (int i = 0; i < count && rc == 0; ++i) {
        device_resources* device = device_for(*self, contexts[i], &rc);
        if (device != nullptr) rc = register_on_device(*self, *r, *device);
    }
    rdma_free_devices(contexts);
    if (rc != 0) return rc;
    r->handle = self->regions.insert(r.get());
    if (r->handle == provider::invalid_memory) return -ENOMEM;
    *out = r.release()->handle;
    return 0;
}

// An operation the device may still carry out names the region (what -EBUSY and memory_idle
// report).
static bool region_busy(const vregion& r) { return r.pending > 0 || r.posted > 0; }

int verbs_deregister_memory(provider::instance* p, memory_handle memory) {
    verbs_instance* self = self_of(p);
    if (self == nullptr) return -EINVAL;
    std::lock_guard lock(self->mutex);
    vregion* r = self->regions.find(memory);
    if (r == nullptr) return -ENOENT;
    if (region_busy(*r)) return -EBUSY;
    self->regions.remove(memory);
    delete r; // ibv_dereg_mr: the keys are invalid from now on
    return 0;
}

int verbs_memory_idle(provider::instance* p, memory_handle memory) {
    verbs_instance* self = self_of(p);
    if (self == nullptr) return -EINVAL;
    std::lock_guard lock(self->mutex);
    const vregion* r = self->regions.find(memory);
    if (r == nullptr) return -ENOENT;
    return region_busy(*r) ? 0 : 1;
}

int verbs_describe_memory(provider::instance* p, memory_handle memory, socket_handle h, provider::remote_memory* out) {
    verbs_instance* self = self_of(p);
    if (self == nullptr || out == nullptr) return -EINVAL;
    std::lock_guard lock(self->mutex);
    const vregion* r = self->regions.find(memory);
    if (r == nullptr) return -ENOENT;
    vsocket* s = find(*self, h);
    if (s == nullptr) return -ENOTSOCK;
    if ((r->access & known_access) == 0) return -EINVAL;
    if (s->state == socket_state::failed) return s->failure;
    if (s->state != socket_state::connected || s->device == nullptr) return -ENOTCONN;
    const ibv_mr* mr = mr_on(*r, s->device);
    if (mr == nullptr) return -EINVAL;
    *out = {reinterpret_cast<uintptr_t>(r->address), r->length, mr->rkey};
    return 0;
}

int verbs_rdma(provider::instance* p, socket_handle h, operation* op) {
    verbs_instance* self = self_of(p);
    if (self == nullptr) return -EINVAL;
    std::lock_guard lock(self->mutex);
    vsocket* s = find(*self, h);
    if (s == nullptr) return -ENOTSOCK;
    // A request carries at most 2^31 bytes (the largest message of RC on rxe and most NICs).
    if (op == nullptr || op->complete == nullptr || !is_rdma(op) || op->length == 0 || op->length > (1u << 31))
        return -EINVAL;
    vregion* r = self->regions.find(op->memory);
    if (r == nullptr) return -ENOENT;
    if (!inside(op->memory_offset, op->length, r->length)) return -EINVAL;
    if (s->state == socket_state::failed) return s->failure;
    if (s->state != socket_state::connected || !s->rdma_slots) return -ENOTCONN;
    ++r->pending;
    s->sq_waiting.push(op);
    pump_send_queue(*self, *s);
    if (!self->done.empty()) self->engine->wake();
    return 0;
}

} // namespace sansock::verbs::detail

// SPDX-License-Identifier: MIT
// Loopback memory registration and RDMA: a write or read is a checked copy between the two
// ends' registrations, done at once under the fabric lock (queued only while frozen), so
// it stays deterministic. The peer's key, bounds and access are checked as an adapter would.
#include <cerrno>
#include <cstring>
#include <new>

#include "provider/loopback/loopback_internal.hpp"

namespace sansock::loopback::detail {

using provider::memory_handle;

namespace {

constexpr uint32_t known_access = provider::memory_remote_read | provider::memory_remote_write;

bool is_rdma(const operation* op) {
    return op->kind == provider::rdma_write || op->kind == provider::rdma_read;
}

// Whether [offset, offset + length) lies inside a region of `size` bytes (no overflow).
bool inside(uint64_t offset, uint64_t length, uint64_t size) { return offset <= size && length <= size - offset; }

// The peer's region for `op`, or nullptr when the peer's adapter would refuse it.
lregion* remote_region(lsock* peer, const operation* op) {
    auto found = peer->owner->keys.find(op->remote_key);
    if (found == peer->owner->keys.end()) return nullptr;
    lregion* r = found->second;
    const uint32_t needed =
        op->kind == provider::rdma_write ? provider::memory_remote_write : provider::memory_remote_read;
    if ((r->access & needed) == 0) return nullptr;
    const uint64_t base = reinterpret_cast<uintptr_t>(r->address);
    if (op->remote_address < base || !inside(op->remote_address - base, op->length, r->length)) return nullptr;
    return r;
}

} // namespace

void run_rdma(lsock* s) {
    lsock* peer = s->peer;
    if (peer == nullptr || s->frozen || peer->frozen) return;
    while (operation* op = s->rdmas.pop()) {
        lregion* local = s->owner->regions.find(op->memory); // busy while the op is: still live
        lregion* remote = remote_region(peer, op);
        if (local == nullptr || remote == nullptr) {
            complete(s, op, -EACCES);
            // A refused access breaks the connection at both ends, as it moves both QPs to error.
            s->peer = nullptr;
            peer->peer = nullptr;
            reset_socket(peer, connection_event::peer_reset, -ECONNRESET);
            reset_socket(s, connection_event::peer_reset, -ECONNRESET);
            return;
        }
        uint8_t* near = local->address + op->memory_offset;
        uint8_t* far = remote->address + (op->remote_address - reinterpret_cast<uintptr_t>(remote->address));
        if (op->kind == provider::rdma_write) std::memmove(far, near, op->length);
        else std::memmove(near, far, op->length);
        complete(s, op, int64_t(op->length));
    }
}

void note_delivered(loop_instance* inst, const operation* op) {
    const bool message = inst->settings.messages && (op->kind == operation_kind::send || op->kind == operation_kind::recv);
    if (!is_rdma(op) && !message) return;
    if (lregion* r = inst->regions.find(op->memory); r != nullptr && r->pending > 0) --r->pending;
}

void free_regions(loop_instance* inst) {
    for (;;) {
        lregion* next = nullptr;
        inst->regions.for_each([&](uint64_t, lregion* r) {
            if (next == nullptr) next = r;
        });
        if (next == nullptr) break;
        inst->keys.erase(next->key);
        inst->regions.remove(next->handle);
        delete next;
    }
}

int lb_register_memory(provider::instance* self, void* address, size_t length, uint32_t access, memory_handle* out) {
    loop_instance* inst = as_loop(self);
    if (inst == nullptr || out == nullptr || address == nullptr || length == 0 || (access & ~known_access) != 0)
        return -EINVAL;
    *out = provider::invalid_memory;
    auto r = std::unique_ptr<lregion>(new (std::nothrow) lregion);
    if (!r) return -ENOMEM;
    r->address = static_cast<uint8_t*>(address);
    r->length = length;
    r->access = access;
    std::lock_guard lock(inst->net->mutex);
    if (inst->down) return -ENETDOWN;
    r->key = inst->next_key;
    try {
        inst->keys.emplace(r->key, r.get());
    } catch (const std::bad_alloc&) {
        return -ENOMEM;
    }
    r->handle = inst->regions.insert(r.get());
    if (r->handle == provider::invalid_memory) {
        inst->keys.erase(r->key);
        return -ENOMEM;
    }
    ++inst->next_key;
    *out = r.release()->handle;
    return 0;
}

// An operation not yet completed names the region (what -EBUSY and memory_idle report).
static bool region_busy(const lregion& r) { return r.pending > 0; }

int lb_deregister_memory(provider::instance* self, memory_handle memory) {
    loop_instance* inst = as_loop(self);
    if (inst == nullptr) return -EINVAL;
    std::lock_guard lock(inst->net->mutex);
    lregion* r = inst->regions.find(memory);
    if (r == nullptr) return -ENOENT;
    if (region_busy(*r)) return -EBUSY;
    inst->keys.erase(r->key);
    inst->regions.remove(memory);
    delete r;
    return 0;
}

int lb_memory_idle(provider::instance* self, memory_handle memory) {
    loop_instance* inst = as_loop(self);
    if (inst == nullptr) return -EINVAL;
    std::lock_guard lock(inst->net->mutex);
    const lregion* r = inst->regions.find(memory);
    if (r == nullptr) return -ENOENT;
    return region_busy(*r) ? 0 : 1;
}

int lb_describe_memory(provider::instance* self, memory_handle memory, socket_handle h, provider::remote_memory* out) {
    loop_instance* inst = as_loop(self);
    if (inst == nullptr || out == nullptr) return -EINVAL;
    std::lock_guard lock(inst->net->mutex);
    lregion* r = inst->regions.find(memory);
    if (r == nullptr) return -ENOENT;
    lsock* s = find(inst, h);
    if (s == nullptr) return -ENOTSOCK;
    if ((r->access & known_access) == 0) return -EINVAL;
    if (s->state == sock_state::reset || s->state == sock_state::down) return s->failure;
    if (s->state != sock_state::connected) return -ENOTCONN;
    *out = {reinterpret_cast<uintptr_t>(r->address), r->length, r->key};
    return 0;
}

int lb_rdma(provider::instance* self, socket_handle h, operation* op) {
    return with_socket(self, h, [&](lsock* s) -> int {
        if (s->owner->down) return -ENETDOWN;
        if (op == nullptr || op->complete == nullptr || !is_rdma(op) || op->length == 0) return -EINVAL;
        lregion* local = s->owner->regions.find(op->memory);
        if (local == nullptr) return -ENOENT;
        if (!inside(op->memory_offset, op->length, local->length)) return -EINVAL;
        if (s->state == sock_state::reset) return -ECONNRESET;
        if (s->state != sock_state::connected) return -ENOTCONN;
        ++local->pending;
        s->rdmas.push(op);
        run_rdma(s);
        return 0;
    });
}

} // namespace sansock::loopback::detail

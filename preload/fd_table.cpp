// SPDX-License-Identifier: MIT
// Two levels: a fixed array of chunk pointers, each chunk made on the first socket in its
// range and never freed (a process that had a socket numbered there may have another). An
// entry is two words; a reader may see a head and value from different stores only while the
// descriptor is being opened or closed, where a program racing with itself gets what the
// kernel would give it too (the old socket or the new one).
#include "preload/fd_table.hpp"

#include <new>

namespace sansock::preload {
namespace detail {
std::atomic<slot*> chunks[max_tracked_fd / chunk_size];
} // namespace detail

namespace {

using detail::chunk_bits;
using detail::chunk_size;
using detail::chunks;
using detail::slot;

slot* slot_of(int fd, bool make) noexcept {
    if (fd < 0 || fd >= max_tracked_fd) return nullptr;
    std::atomic<slot*>& chunk = chunks[fd >> chunk_bits];
    slot* found = chunk.load(std::memory_order_acquire);
    if (found == nullptr && make) {
        slot* fresh = new (std::nothrow) slot[chunk_size];
        if (fresh == nullptr) return nullptr;
        if (chunk.compare_exchange_strong(found, fresh, std::memory_order_acq_rel)) found = fresh;
        else delete[] fresh; // another thread made it first
    }
    return found == nullptr ? nullptr : &found[fd & (chunk_size - 1)];
}

uint64_t head_of(const fd_entry& e) { return uint64_t(e.kind) | uint64_t(e.options) << 8; }

} // namespace

fd_entry lookup(int fd) noexcept {
    slot* s = slot_of(fd, false);
    if (s == nullptr) return {};
    const uint64_t head = s->head.load(std::memory_order_acquire);
    if (head == 0) return {};
    return {fd_kind(head & 0xff), uint8_t(head >> 8), s->value.load(std::memory_order_acquire)};
}

bool store(int fd, const fd_entry& entry) noexcept {
    slot* s = slot_of(fd, true);
    if (s == nullptr) return false;
    s->value.store(entry.value, std::memory_order_release);
    s->head.store(head_of(entry), std::memory_order_release);
    return true;
}

void clear(int fd) noexcept {
    if (slot* s = slot_of(fd, false)) s->head.store(0, std::memory_order_release);
}

void clear_if(int fd, const fd_entry& expected) noexcept {
    slot* s = slot_of(fd, false);
    if (s == nullptr) return;
    uint64_t head = head_of(expected);
    if (s->value.load(std::memory_order_acquire) == expected.value)
        s->head.compare_exchange_strong(head, 0, std::memory_order_acq_rel);
}

void add_options(int fd, uint8_t bits) noexcept {
    slot* s = slot_of(fd, false);
    if (s == nullptr) return;
    uint64_t head = s->head.load(std::memory_order_acquire);
    while (fd_kind(head & 0xff) == fd_kind::candidate &&
           !s->head.compare_exchange_weak(head, head | uint64_t(bits) << 8, std::memory_order_acq_rel)) {
    }
}

} // namespace sansock::preload

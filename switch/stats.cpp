// SPDX-License-Identifier: MIT
// Context counters (sansock_context_stats). The switch counts under the context's lock, where
// the events happen (docs/architecture.md, "Logging and counters"); registered_bytes is the
// provider's query_memory.
#include <cerrno>
#include <cstddef>
#include <cstring>

#include "switch/switch_internal.hpp"

using sansock::sw::context;

namespace {
// The struct of version 0.2, whose arrays had 7 reasons (before SANSOCK_RESET_KEEPALIVE_TIMEOUT):
// a caller whose size is at most its size is a program built against 0.2, and gets that layout.
constexpr int reasons_0_2 = 7;
struct stats_0_2 {
    uint32_t size;
    uint32_t reserved;
    uint64_t connections_opened, connections_accepted, closes_dontlinger, closes_abortive, closes_linger,
        graceful_completed, graceful_timed_out;
    uint64_t resets_sent[reasons_0_2];
    uint64_t resets_received[reasons_0_2];
    uint64_t bytes_sent, bytes_received, registered_bytes;
};
static_assert(sizeof(stats_0_2) == 200 && SANSOCK_RESET_REASONS > reasons_0_2);

stats_0_2 as_0_2(const struct sansock_context_stats& s) {
    stats_0_2 old{};
    std::memcpy(&old.connections_opened, &s.connections_opened, offsetof(stats_0_2, resets_sent) - offsetof(stats_0_2, connections_opened));
    std::memcpy(old.resets_sent, s.resets_sent, sizeof old.resets_sent);
    std::memcpy(old.resets_received, s.resets_received, sizeof old.resets_received);
    old.bytes_sent = s.bytes_sent;
    old.bytes_received = s.bytes_received;
    old.registered_bytes = s.registered_bytes;
    return old;
}

// The leading whole fields of `from` (after size and reserved) that fit in `size` bytes.
void copy_fields(void* out, const void* from, size_t from_size, size_t size) {
    constexpr size_t first = offsetof(struct sansock_context_stats, connections_opened);
    const size_t fits = first + (std::min(size, from_size) - first) / sizeof(uint64_t) * sizeof(uint64_t);
    std::memcpy(static_cast<unsigned char*>(out) + first, static_cast<const unsigned char*>(from) + first, fits - first);
}
} // namespace

extern "C" int sansock_context_stats(sansock_context* c, struct sansock_context_stats* out) {
    constexpr size_t first = offsetof(struct sansock_context_stats, connections_opened);
    if (c == nullptr || out == nullptr || out->size < first + sizeof out->connections_opened) return -EINVAL;
    auto& ctx = *reinterpret_cast<context*>(c);
    struct sansock_context_stats now;
    {
        std::lock_guard lock(ctx.mutex);
        now = ctx.stats;
    }
    // Outside the context lock: the provider takes its own.
    sansock::provider::memory_stats memory{};
    if (ctx.ops.query_memory(ctx.instance, &memory) == 0) now.registered_bytes = memory.registered_bytes;
    // Whole fields only: a caller's smaller (older) struct gets those that fit, a larger one
    // keeps what lies beyond ours. size and reserved stay as the caller set them. Up to the
    // size of 0.2's struct, the fields are laid out as 0.2 had them (docs/abi.md).
    if (out->size <= sizeof(stats_0_2)) {
        const stats_0_2 old = as_0_2(now);
        copy_fields(out, &old, sizeof old, out->size);
    } else {
        copy_fields(out, &now, sizeof now, out->size);
    }
    return 0;
}

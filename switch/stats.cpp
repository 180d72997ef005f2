// SPDX-License-Identifier: MIT
// Context counters (sansock_context_stats). The switch counts under the context's lock, where
// the events happen (docs/architecture.md, "Logging and counters"); registered_bytes is the
// provider's query_memory.
#include <cerrno>
#include <cstddef>
#include <cstring>

#include "switch/switch_internal.hpp"

using sansock::sw::context;

extern "C" int sansock_context_stats(sansock_context* c, struct sansock_context_stats* out) try {
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
    // keeps what lies beyond ours. size and reserved stay as the caller set them.
    const size_t fits = first + (std::min<size_t>(out->size, sizeof now) - first) / sizeof(uint64_t) * sizeof(uint64_t);
    std::memcpy(reinterpret_cast<unsigned char*>(out) + first, reinterpret_cast<const unsigned char*>(&now) + first,
                fits - first);
    return 0;
} catch (...) {
    return sansock::c_error();
}

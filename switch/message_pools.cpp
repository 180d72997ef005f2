// SPDX-License-Identifier: MIT
// Version 3's registered pools after their sessions: retired until the provider is done with
// them, then kept idle for the context's next connection or deregistered (docs/protocol.md 4.1).
#include <algorithm>
#include <cstdlib>

#include "switch/message_session.hpp"
#include "switch/switch_internal.hpp"

namespace sansock::sw {

void retire_pool(context& ctx, provider::memory_handle region, uint8_t* memory, size_t bytes) {
    if (ctx.retired_regions.size() < ctx.retired_regions.capacity()) {
        ctx.retired_regions.push_back({region, memory, bytes}); // within the room reserved with its session
        return;
    }
    // Not reached (room is made for every session); leaking beats freeing memory in use.
    log_message(ctx, SANSOCK_LOG_ERROR, "a connection's control buffers could not be kept for their release");
}

void release_pools(context& ctx, bool instance_gone) {
    if (ctx.retired_regions.empty() && ctx.idle_pools.empty()) return;
    const auto now = std::chrono::steady_clock::now();
    std::erase_if(ctx.retired_regions, [&](const context::retired_region& r) {
        if (instance_gone) {
            std::free(r.memory);
            return true;
        }
        // Kept registered for the next connection once no operation can touch it any more.
        if (ctx.idle_pools.size() < ctx.idle_pools.capacity()) {
            const int idle = ctx.ops.memory_idle(ctx.instance, r.region);
            if (idle == 0) return false;
            if (idle == 1) {
                ctx.idle_pools.push_back({r.region, r.memory, r.bytes, now});
                return true;
            }
        }
        if (ctx.ops.deregister_memory(ctx.instance, r.region) == -EBUSY) return false;
        std::free(r.memory);
        return true;
    });
    std::erase_if(ctx.idle_pools, [&](const context::idle_pool& p) {
        if (!instance_gone && now - p.since < idle_pool_keep) return false;
        if (!instance_gone && ctx.ops.deregister_memory(ctx.instance, p.region) == -EBUSY) return false; // (not seen: it was idle)
        std::free(p.memory);
        return true;
    });
}

bool take_idle_pool(context& ctx, size_t bytes, provider::memory_handle* region, uint8_t** memory) {
    for (auto it = ctx.idle_pools.end(); it != ctx.idle_pools.begin();) { // the most recent first
        --it;
        if (it->bytes != bytes) continue;
        *region = it->region;
        *memory = it->memory;
        ctx.idle_pools.erase(it);
        return true;
    }
    return false;
}

} // namespace sansock::sw

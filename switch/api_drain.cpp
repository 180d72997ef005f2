// SPDX-License-Identifier: MIT
// sansock_context_drain: wait for the context's background graceful closes to end, so that a
// program (the preload library at exit, for one) can leave without resetting data it already
// handed to close.
#include <chrono>

#include "switch/api_internal.hpp"

using namespace sansock;
using namespace sansock::sw;

namespace {

size_t background_closes(const context& ctx) {
    size_t running = 0;
    for (const auto& [raw, owned] : ctx.sockets)
        if (raw->closing && !raw->finished) ++running;
    return running;
}

} // namespace

extern "C" int sansock_context_drain(sansock_context* c, int timeout_ms) try {
    if (c == nullptr) return -EINVAL;
    auto* ctx = reinterpret_cast<context*>(c);
    if (in_callbacks_of(*ctx)) return -EBUSY; // the closes may wait for this very callback
    std::unique_lock lock(ctx->mutex);
    if (!ctx->manual_progress && ctx->progress_thread.get_id() == std::this_thread::get_id()) return -EBUSY;
    // Every background close ends by the graceful time-out at the latest, so -1 waits that
    // long (and a margin for the timer that notices it): closes begun before the call are over.
    const auto limit = timeout_ms < 0
                           ? std::chrono::milliseconds(ctx->attr.graceful_timeout_ms) + std::chrono::seconds(1)
                           : std::chrono::milliseconds(timeout_ms);
    const auto deadline = std::chrono::steady_clock::now() + limit;
    const bool drained = wait_until(*ctx, lock, [&] { return background_closes(*ctx) == 0; }, deadline);
    return drained ? 0 : -ETIMEDOUT;
} catch (...) {
    return sansock::c_error();
}

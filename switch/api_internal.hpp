// SPDX-License-Identifier: MIT
// What the public socket calls (switch/api*.cpp) share: waits, time-outs and the wake on exit.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>

#include "switch/switch_internal.hpp"

namespace sansock::sw::api {

// Callbacks a call queued (an async operation satisfied at once) run in progress, never on
// the caller's thread before the call returns: wake progress so they run soon. Declared after
// the call's lock, so it runs while the lock is still held.
struct wake_on_exit {
    context* ctx;
    std::unique_lock<std::mutex>& lock;
    ~wake_on_exit() {
        if (lock.owns_lock() && !ctx->callbacks.empty()) ctx->ops.wake(ctx->instance);
    }
};

// Keeps a socket alive while a blocking call waits on it with the lock released: another
// thread may close it meanwhile (the call then sees its handle gone).
struct keep_alive {
    stream_socket& s;
    std::unique_lock<std::mutex>& lock;
    bool held = true;
    keep_alive(stream_socket& socket, std::unique_lock<std::mutex>& l) : s(socket), lock(l) { ++s.waiters; }
    // Lets go with the lock held (the socket may be freed at once), so that the destructor
    // need not take the lock again.
    void release() {
        held = false;
        --s.waiters;
        maybe_free(s);
    }
    ~keep_alive() {
        if (!held) return;
        if (!lock.owns_lock()) lock.lock();
        release();
    }
};

// A deadline on the real clock for the caller's own waits (SO_RCVTIMEO, SO_SNDTIMEO): none
// for 0, now (do not wait) for a negative time-out.
inline std::optional<time_point> deadline_after(std::chrono::milliseconds timeout) {
    if (timeout.count() == 0) return std::nullopt;
    return std::chrono::steady_clock::now() + std::max(timeout, std::chrono::milliseconds(0));
}

// SO_RCVTIMEO / SO_SNDTIMEO set with a negative tv_sec: calls do not wait, as on Linux (which
// sets a time-out of 0 jiffies); read back as {0, 0}.
inline constexpr std::chrono::milliseconds no_wait{-1};

// A byte count the int64_t result of a callback (or ssize_t) can carry.
inline constexpr size_t max_count = static_cast<size_t>(INT64_MAX);

} // namespace sansock::sw::api

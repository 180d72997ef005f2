// SPDX-License-Identifier: MIT
// The event engine: one io_uring that watches file descriptors (rdma_cm event channels,
// completion channels, eventfds) and runs timers, for explicit progress without a busy loop.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>

namespace sansock {

class event_engine {
public:
    // Called from run_once on the thread running it, with no engine lock held.
    using fd_callback = void (*)(void* context, int fd, uint32_t revents) noexcept;
    using timer_callback = void (*)(void* context) noexcept;
    using watch_id = uint64_t;
    using timer_id = uint64_t;

    // 0 and the engine in `out`, or a negated errno (-ENOSYS / -EPERM when io_uring is not
    // available; -ENOMEM).
    static int create(std::unique_ptr<event_engine>& out, unsigned queue_depth = 256);
    ~event_engine();
    event_engine(const event_engine&) = delete;
    event_engine& operator=(const event_engine&) = delete;

    // A descriptor that polls readable when run_once has something to do (for a middleware
    // event loop that waits on it).
    int fd() const;

    // Calls `callback` each time `fd` is readable (POLLIN; errors and hang-ups are reported in
    // revents too) until unwatch. Level-triggered: the callback must drain the descriptor or
    // it is called again on the next run_once. Returns 0 and the id, or a negated errno.
    int watch(int fd, fd_callback callback, void* context, watch_id* out);
    // After unwatch returns, the callback is not called again for this id (also when called
    // from inside a callback). -ENOENT for an unknown id.
    int unwatch(watch_id id);

    // One-shot timer `delay` from now. Returns 0 and the id, or a negated errno.
    int add_timer(std::chrono::nanoseconds delay, timer_callback callback, void* context, timer_id* out);
    // After cancel_timer returns, the callback is not called. -ENOENT if unknown or already run.
    int cancel_timer(timer_id id);

    // Waits at most `timeout` (0: no wait) for events, runs the callbacks that are due, and
    // returns how many ran, or a negated errno. One thread at a time (others wait their turn).
    int run_once(std::chrono::milliseconds timeout);

    // Makes a run_once blocked in another thread return soon. Thread-safe, never blocks.
    int wake();

private:
    struct state;
    explicit event_engine(std::unique_ptr<state> s);
    std::unique_ptr<state> state_;
};

} // namespace sansock

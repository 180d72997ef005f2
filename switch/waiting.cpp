// SPDX-License-Identifier: MIT
// How a blocked call waits (docs/architecture.md, "Threads and progress"): it busy-polls its
// own connection, then leads progress in the provider itself when no other call does, else
// sleeps; with manual progress it drives progress.
#include <algorithm>
#include <chrono>

#include "switch/switch_internal.hpp"

namespace sansock::sw {

namespace {
// A busy poll reads the clock once per this many polls of its socket.
constexpr unsigned clock_every_polls = 8;

// The busy-poll phase of a wait: the caller's thread delivers the socket's completions itself.
// True if `ready()` became true; false when the poll time ran out, the deadline passed or the
// provider cannot poll the socket (the caller then sleeps as usual).
bool busy_poll(context& ctx, std::unique_lock<std::mutex>& lock, ready_fn ready,
               std::optional<time_point> deadline, clock_kind clock, stream_socket& s,
               std::chrono::microseconds poll_for) {
    const provider::socket_handle socket = s.ps;
    const auto poll_end = std::chrono::steady_clock::now() + poll_for;
    bool delivered = false;
    bool polling = false;
    bool became_ready = false;
    for (unsigned polls = 0;; ++polls) {
        if ((became_ready = ready())) break;
        // The clock every few polls only: where it is a system call (a clocksource without a
        // vDSO, such as a guest's HPET) reading it on every poll cost more than the poll.
        if (polls % clock_every_polls == 0) {
            const auto now = std::chrono::steady_clock::now();
            if (now >= poll_end) break;
            if (deadline && (clock == clock_kind::context ? ctx.now() : now) >= *deadline) break;
        }
        lock.unlock();
        const int rc = ctx.ops.progress_socket(ctx.instance, socket, polling ? 0 : provider::poll_start);
        lock.lock();
        if (rc < 0) break;
        polling = true;
        delivered |= rc > 0;
    }
    if (polling) {
        // The caller is likely to poll again soon: unless it is going to sleep, or someone
        // else needs progress to hear of this socket (another waiter, async operations,
        // queued data, a background close, its descriptor in someone's poll set), progress is
        // not woken for its completions.
        const bool quiet = became_ready && s.waiters <= 1 && s.async_recvs.empty() && s.send_queue.empty() &&
                           !s.closing && !s.shut_write && !s.fd.is_open();
        lock.unlock();
        const int rc = ctx.ops.progress_socket(ctx.instance, socket,
                                               provider::poll_stop | (quiet ? provider::poll_stay_unarmed : 0));
        lock.lock();
        delivered |= rc > 0;
        if (quiet && rc >= 0 && s.ps == socket) s.notifications_off = true;
    }
    const bool is_ready = ready();
    // What those completions queued (user callbacks, closes) is run by the progress thread.
    if (delivered && (!ctx.callbacks.empty() || !ctx.provider_closes.empty())) ctx.ops.wake(ctx.instance);
    return is_ready;
}

// Leads: waits in the provider itself (at most 20 ms at a time, so an injected clock and
// destroy are noticed) until `ready()`, the deadline or destroy, delivering completions on this
// thread; the progress thread is asked out of its wait first (it follows, follow_leader).
void lead(context& ctx, std::unique_lock<std::mutex>& lock, ready_fn ready, std::optional<time_point> deadline,
          clock_kind clock) {
    ctx.leading = true;
    ctx.leader = std::this_thread::get_id();
    ctx.ops.wake(ctx.instance);
    for (;;) {
        int slice_ms = 20;
        if (deadline && clock == clock_kind::real) {
            const auto left = std::chrono::ceil<std::chrono::milliseconds>(*deadline - std::chrono::steady_clock::now());
            slice_ms = static_cast<int>(std::clamp<int64_t>(left.count(), 0, 20));
        }
        lock.unlock();
        const int rc = ctx.ops.progress(ctx.instance, slice_ms);
        lock.lock();
        if (rc < 0 || ready() || ctx.stopping) break;
        const time_point now = clock == clock_kind::context ? ctx.now() : std::chrono::steady_clock::now();
        if (deadline && now >= *deadline) break;
    }
    ctx.leading = false;
    ctx.leader = {};
    ctx.changed.notify_all(); // the progress thread takes over again
}

bool sleep_until(context& ctx, std::unique_lock<std::mutex>& lock, ready_fn ready,
                 std::optional<time_point> deadline, clock_kind clock) {
    for (;;) {
        if (ready()) return true;
        const time_point now = clock == clock_kind::context ? ctx.now() : std::chrono::steady_clock::now();
        if (deadline && now >= *deadline) return false;
        if (ctx.manual_progress) {
            lock.unlock();
            progress_once(ctx, 10);
            lock.lock();
        } else if (!ctx.leading && !ctx.stopping) {
            lead(ctx, lock, ready, deadline, clock);
        } else {
            // Short slices: with an injected clock the deadline moves only when the test says.
            ctx.changed.wait_for(lock, std::chrono::milliseconds(20));
        }
    }
}

// How long a wait busy-polls: about twice as long as the socket's last wait took, so that a
// connection whose replies come quickly is served without a thread hand-off, within
// [50 us, attr.busy_poll_us]; a socket whose last wait was longer than that polls 50 us.
std::chrono::microseconds poll_time(const context& ctx, const stream_socket& s) {
    const uint32_t most = ctx.attr.busy_poll_us;
    const uint32_t least = std::min<uint32_t>(50, most);
    if (s.last_wait_us >= most) return std::chrono::microseconds(least);
    return std::chrono::microseconds(std::clamp<uint32_t>(2 * s.last_wait_us, least, most));
}

} // namespace

bool wait_until(context& ctx, std::unique_lock<std::mutex>& lock, ready_fn ready,
                std::optional<time_point> deadline, clock_kind clock, stream_socket* polled) {
    if (polled == nullptr || polled->ps == provider::invalid_socket || ctx.manual_progress || ctx.attr.busy_poll_us == 0)
        return sleep_until(ctx, lock, ready, deadline, clock);
    const auto started = std::chrono::steady_clock::now();
    bool is_ready = busy_poll(ctx, lock, ready, deadline, clock, *polled, poll_time(ctx, *polled));
    ++(is_ready ? ctx.stats.waits_polled : ctx.stats.waits_slept);
    if (!is_ready) is_ready = sleep_until(ctx, lock, ready, deadline, clock);
    if (is_ready) {
        const auto waited = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - started);
        polled->last_wait_us = static_cast<uint32_t>(std::min<int64_t>(waited.count(), UINT32_MAX));
    }
    return is_ready;
}

} // namespace sansock::sw

// SPDX-License-Identifier: MIT
// Contexts: provider instance, progress (own thread or the caller's), the handle registry.
#include <sys/eventfd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "lib/handle_table.hpp"
#include "provider/loopback/loopback.hpp"
#include "provider/verbs/verbs_provider.hpp"
#include "switch/switch_internal.hpp"

namespace sansock::sw {

namespace {

// Handles are process-wide so that socket calls need no context argument, as with BSD sockets.
struct registry {
    std::mutex mutex;
    handle_table<stream_socket> table{1u << 20};
};
registry& handles() {
    static registry r;
    return r;
}

// Loopback contexts created without a fabric of their own share this one, so that two
// contexts in a process reach each other as two hosts would.
loopback::fabric* shared_loopback_fabric() {
    static loopback::fabric* fabric = loopback::create_fabric();
    return fabric;
}

void progress_loop(context* ctx) {
    for (;;) {
        {
            std::lock_guard lock(ctx->mutex);
            if (ctx->stopping) return;
        }
        progress_once(*ctx, 100);
    }
}

} // namespace

sansock_socket_t register_socket(stream_socket* s) {
    std::lock_guard lock(handles().mutex);
    return handles().table.insert(s);
}

void unregister_socket(sansock_socket_t handle) {
    std::lock_guard lock(handles().mutex);
    handles().table.remove(handle);
}

stream_socket* lock_socket(sansock_socket_t handle, std::unique_lock<std::mutex>& lock) {
    context* ctx;
    {
        std::lock_guard guard(handles().mutex);
        stream_socket* s = handles().table.find(handle);
        if (s == nullptr) return nullptr;
        ctx = s->ctx;
    }
    lock = std::unique_lock(ctx->mutex);
    // Closed while we were waiting for the lock?
    std::lock_guard guard(handles().mutex);
    stream_socket* s = handles().table.find(handle);
    if (s == nullptr || s->ctx != ctx) {
        lock.unlock();
        return nullptr;
    }
    return s;
}

stream_socket* find_registered(sansock_socket_t handle) {
    std::lock_guard guard(handles().mutex);
    return handles().table.find(handle);
}

void log_reset(context& ctx, const stream_socket& s, const std::string& reason) {
    std::string line = "sansock: connection reset (socket " + std::to_string(s.handle) + "): " + reason;
    std::fprintf(stderr, "%s\n", line.c_str());
    ctx.log_lines.push_back(std::move(line));
}

void run_deferred(context& ctx) {
    std::vector<provider::socket_handle> closes;
    std::vector<ready_callback> callbacks;
    {
        std::lock_guard lock(ctx.mutex);
        closes.swap(ctx.provider_closes);
        callbacks.swap(ctx.callbacks);
    }
    // The provider completes what it cancels inside close; our completion routines take the
    // context lock, so close is called without it.
    for (provider::socket_handle ps : closes) ctx.ops.close(ctx.instance, ps);
    for (const ready_callback& c : callbacks) c.callback(c.user, c.result);
    if (!closes.empty()) {
        std::lock_guard lock(ctx.mutex);
        ctx.changed.notify_all();
    }
}

int progress_once(context& ctx, int timeout_ms) {
    int handled = ctx.ops.progress(ctx.instance, timeout_ms);
    {
        std::lock_guard lock(ctx.mutex);
        check_timers(ctx);
        handled = std::max(handled, 0) + static_cast<int>(ctx.callbacks.size());
    }
    run_deferred(ctx);
    return handled;
}

namespace {
// The busy-poll phase of a wait: the caller's thread delivers the socket's completions itself.
// True if `ready()` became true; false when the poll time ran out, the deadline passed or the
// provider cannot poll the socket (the caller then sleeps as usual).
bool busy_poll(context& ctx, std::unique_lock<std::mutex>& lock, const std::function<bool()>& ready,
               std::optional<time_point> deadline, clock_kind clock, stream_socket& s,
               std::chrono::microseconds poll_for) {
    const provider::socket_handle socket = s.ps;
    const auto poll_end = std::chrono::steady_clock::now() + poll_for;
    bool delivered = false;
    bool polling = false;
    bool became_ready = false;
    for (;;) {
        if ((became_ready = ready())) break;
        const auto now = std::chrono::steady_clock::now();
        if (now >= poll_end) break;
        if (deadline && (clock == clock_kind::context ? ctx.now() : now) >= *deadline) break;
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
        // queued data, a background close), progress is not woken for its completions.
        const bool quiet = became_ready && s.waiters <= 1 && s.async_recvs.empty() && s.send_queue.empty() &&
                           !s.closing && !s.shut_write;
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

bool sleep_until(context& ctx, std::unique_lock<std::mutex>& lock, const std::function<bool()>& ready,
                 std::optional<time_point> deadline, clock_kind clock) {
    for (;;) {
        if (ready()) return true;
        const time_point now = clock == clock_kind::context ? ctx.now() : std::chrono::steady_clock::now();
        if (deadline && now >= *deadline) return false;
        if (ctx.manual_progress) {
            lock.unlock();
            progress_once(ctx, 10);
            lock.lock();
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

bool wait_until(context& ctx, std::unique_lock<std::mutex>& lock, const std::function<bool()>& ready,
                std::optional<time_point> deadline, clock_kind clock, stream_socket* polled) {
    if (polled == nullptr || polled->ps == provider::invalid_socket || ctx.manual_progress || ctx.attr.busy_poll_us == 0)
        return sleep_until(ctx, lock, ready, deadline, clock);
    const auto started = std::chrono::steady_clock::now();
    const bool is_ready = busy_poll(ctx, lock, ready, deadline, clock, *polled, poll_time(ctx, *polled)) ||
                          sleep_until(ctx, lock, ready, deadline, clock);
    if (is_ready) {
        const auto waited = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - started);
        polled->last_wait_us = static_cast<uint32_t>(std::min<int64_t>(waited.count(), UINT32_MAX));
    }
    return is_ready;
}

int create_context(const sansock_context_attr* given, const context_hooks& hooks, sansock_context** out) {
    if (out == nullptr) return -EINVAL;
    sansock_context_attr attr;
    sansock_context_attr_init(&attr);
    if (given != nullptr) {
        if (given->size < sizeof(uint32_t) || given->size > sizeof attr) return -EINVAL;
        std::memcpy(&attr, given, given->size);
        attr.size = sizeof attr;
    }
    sansock_context_attr defaults;
    sansock_context_attr_init(&defaults);
    if (attr.graceful_timeout_ms == 0) attr.graceful_timeout_ms = defaults.graceful_timeout_ms;
    if (attr.slot_size == 0) attr.slot_size = defaults.slot_size;
    if (attr.send_slots == 0) attr.send_slots = defaults.send_slots;
    if (attr.recv_slots == 0) attr.recv_slots = defaults.recv_slots;
    if (attr.window_bytes == 0) attr.window_bytes = defaults.window_bytes;
    if (attr.busy_poll_us == 0) attr.busy_poll_us = defaults.busy_poll_us;
    if (attr.busy_poll_us == SANSOCK_NO_BUSY_POLL) attr.busy_poll_us = 0;
    else if (attr.busy_poll_us > 1000000) return -EINVAL;
    if (attr.provider > SANSOCK_PROVIDER_LOOPBACK || attr.progress_mode > SANSOCK_PROGRESS_MANUAL ||
        attr.window_bytes < session::min_window || attr.window_bytes > session::max_window)
        return -EINVAL;

    auto ctx = std::make_unique<context>();
    ctx->attr = attr;
    ctx->hooks = hooks;
    ctx->manual_progress = attr.progress_mode == SANSOCK_PROGRESS_MANUAL;
    const provider::ops* table = hooks.provider_ops;
    if (table == nullptr) table = attr.provider == SANSOCK_PROVIDER_LOOPBACK ? &loopback_ops : &verbs::verbs_ops;
    ctx->ops = provider::with_defaults(*table);
    provider::config config;
    config.slot_size = attr.slot_size;
    config.send_slots = attr.send_slots;
    config.recv_slots = attr.recv_slots;
    config.provider_specific = hooks.provider_specific;
    if (config.provider_specific == nullptr && attr.provider == SANSOCK_PROVIDER_LOOPBACK && hooks.provider_ops == nullptr)
        config.provider_specific = shared_loopback_fabric();
    provider::upcalls calls;
    calls.context = ctx.get();
    calls.on_connection_event = on_provider_event;
    if (int rc = ctx->ops.create(config, calls, &ctx->instance)) return rc;
    if (!ctx->manual_progress) ctx->progress_thread = std::thread(progress_loop, ctx.get());
    *out = reinterpret_cast<sansock_context*>(ctx.release());
    return 0;
}

provider::socket_handle provider_socket_of(sansock_socket_t handle) {
    std::unique_lock<std::mutex> lock;
    stream_socket* s = lock_socket(handle, lock);
    return s != nullptr ? s->ps : 0;
}

provider::instance* provider_instance_of(sansock_context* c) {
    return c != nullptr ? reinterpret_cast<context*>(c)->instance : nullptr;
}

} // namespace sansock::sw

namespace sansock {
int create_context(const sansock_context_attr* attr, const context_hooks& hooks, sansock_context** out) {
    return sw::create_context(attr, hooks, out);
}
provider::socket_handle provider_socket_of(sansock_socket_t s) { return sw::provider_socket_of(s); }
provider::instance* provider_instance_of(sansock_context* ctx) { return sw::provider_instance_of(ctx); }
} // namespace sansock

using sansock::sw::context;

extern "C" void sansock_context_attr_init(struct sansock_context_attr* attr) {
    if (attr == nullptr) return;
    *attr = {};
    attr->size = sizeof *attr;
    attr->provider = SANSOCK_PROVIDER_VERBS;
    attr->progress_mode = SANSOCK_PROGRESS_THREAD;
    attr->graceful_timeout_ms = 10000;
    attr->slot_size = 16 * 1024;
    attr->send_slots = 8;
    attr->recv_slots = 8;
    attr->window_bytes = 256 * 1024;
    attr->busy_poll_us = 1000;
}

extern "C" int sansock_context_create(const struct sansock_context_attr* attr, sansock_context** out) {
    return sansock::sw::create_context(attr, {}, out);
}

extern "C" int sansock_context_destroy(sansock_context* c) {
    if (c == nullptr) return -EINVAL;
    auto* ctx = reinterpret_cast<context*>(c);
    std::vector<sansock_socket_t> handles;
    {
        std::lock_guard lock(ctx->mutex);
        if (ctx->progress_thread.get_id() == std::this_thread::get_id()) return -EBUSY;
        ctx->stopping = true;
        for (auto& [s, owned] : ctx->sockets)
            if (s->handle != 0) handles.push_back(s->handle);
    }
    for (sansock_socket_t h : handles) sansock::sw::unregister_socket(h);
    if (ctx->progress_thread.joinable()) {
        ctx->ops.wake(ctx->instance);
        ctx->progress_thread.join();
    }
    {
        std::lock_guard lock(ctx->mutex);
        for (auto& [s, owned] : ctx->sockets) {
            s->handle = 0;
            sansock::sw::cancel_user_operations(*s, -ECANCELED);
        }
    }
    sansock::sw::run_deferred(*ctx);
    // Destroying the instance hard-closes every provider socket and completes what is pending;
    // closes queued by those completions are moot, the callbacks still run.
    ctx->ops.destroy(ctx->instance);
    std::vector<sansock::sw::ready_callback> callbacks;
    {
        std::lock_guard lock(ctx->mutex);
        ctx->provider_closes.clear();
        callbacks.swap(ctx->callbacks);
    }
    for (const auto& c : callbacks) c.callback(c.user, c.result);
    delete ctx;
    return 0;
}

extern "C" int sansock_context_fd(sansock_context* c) {
    if (c == nullptr) return -EINVAL;
    auto* ctx = reinterpret_cast<context*>(c);
    if (!ctx->manual_progress) return -EBADFD;
    return ctx->ops.event_fd(ctx->instance);
}

extern "C" int sansock_progress(sansock_context* c, int timeout_ms) {
    if (c == nullptr) return -EINVAL;
    auto* ctx = reinterpret_cast<context*>(c);
    if (!ctx->manual_progress) return -EBADFD;
    return sansock::sw::progress_once(*ctx, timeout_ms);
}

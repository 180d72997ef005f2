// SPDX-License-Identifier: MIT
// Contexts: provider instance, progress (own thread or the caller's), the handle registry,
// the layer slot (switch/context_layer.hpp).
#include <sys/eventfd.h>

#include <algorithm>
#include <cassert>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <type_traits>
#include <utility>

#include "lib/errors.hpp"
#include "lib/handle_table.hpp"
#include "provider/loopback/loopback.hpp"
#include "provider/verbs/verbs_provider.hpp"
#include "switch/switch_internal.hpp"

namespace sansock::sw {

namespace {

// The process-wide state (docs/architecture.md, "Process state"), and all of it. Handles are
// process-wide so that socket calls need no context argument, as with BSD sockets: the table
// lives from the first context to the last. Loopback contexts created without a fabric of
// their own share one, so that two contexts in a process reach each other as two hosts
// would: it lives from the first such context to the last. Both are constant-initialised and
// trivially destructible: nothing runs when the library is loaded or unloaded.
static_assert(std::is_trivially_destructible_v<std::mutex>);
struct process_state {
    handle_table<stream_socket>* handles = nullptr;
    uint32_t next_generation = 1;       // the next table's first generation (no handle reused)
    size_t contexts = 0;
    loopback::fabric* fabric = nullptr; // the shared loopback fabric
    size_t fabric_users = 0;
};
constinit std::mutex process_mutex;
constinit process_state process;

// A context is being created: the first one makes the handle table. False: out of memory.
bool context_arrives() {
    std::lock_guard lock(process_mutex);
    if (process.contexts == 0) {
        process.handles = new (std::nothrow) handle_table<stream_socket>(1u << 20, process.next_generation);
        if (process.handles == nullptr) return false;
    }
    ++process.contexts;
    return true;
}

// A context is gone (or was never made): the last one frees the handle table.
void context_leaves() {
    std::lock_guard lock(process_mutex);
    if (--process.contexts != 0) return;
    process.next_generation = process.handles->next_generation();
    delete process.handles;
    process.handles = nullptr;
}

loopback::fabric* acquire_shared_fabric() {
    std::lock_guard lock(process_mutex);
    if (process.fabric_users == 0) {
        process.fabric = loopback::create_fabric();
        if (process.fabric == nullptr) return nullptr;
    }
    ++process.fabric_users;
    return process.fabric;
}

// After the context's loopback instance is destroyed (it has left the fabric).
void release_shared_fabric() {
    std::lock_guard lock(process_mutex);
    if (--process.fabric_users != 0) return;
    [[maybe_unused]] const int rc = loopback::destroy_fabric(process.fabric);
    assert(rc == 0);
    process.fabric = nullptr;
}

// The socket behind `handle` (process_mutex held), or nullptr.
stream_socket* find_handle(sansock_socket_t handle) {
    return process.handles != nullptr ? process.handles->find(handle) : nullptr;
}

// Empties the context's layer slot for destroy: 0 (the layer, if any, has stopped and is
// freed; nothing attaches any more), or -EBUSY with nothing changed.
int stop_layer(context& ctx) {
    layer_slot& slot = ctx.layer;
    attached_layer* layer = nullptr;
    {
        std::lock_guard lock(slot.mutex);
        if (slot.uses != 0) return -EBUSY;
        layer = slot.layer;
        slot.layer = nullptr;
        slot.closed = true;
    }
    if (layer == nullptr) return 0;
    // Without the slot's mutex: the layer's threads may be attaching meanwhile (and fail).
    if (int rc = layer->stop(layer)) {
        std::lock_guard lock(slot.mutex);
        slot.layer = layer;
        slot.closed = false;
        return rc;
    }
    return 0;
}

// While a blocked call leads (sleep_until), the progress thread stays out of the provider and
// runs what the call's deliveries queue (closes, callbacks, the release of closed connections'
// pools) and the time-outs.
void follow_leader(context& ctx, std::unique_lock<std::mutex>& lock) {
    ctx.changed.wait_for(lock, std::chrono::milliseconds(10));
    if (ctx.stopping) return;
    release_pools(ctx, false);
    check_timers(ctx);
    lock.unlock();
    run_deferred(ctx);
    lock.lock();
}

void progress_loop(context* ctx) {
    for (;;) {
        try {
            {
                std::unique_lock lock(ctx->mutex);
                if (ctx->stopping) return;
                if (ctx->leading) {
                    follow_leader(*ctx, lock);
                    continue;
                }
            }
            progress_once(*ctx, 100);
        } catch (const std::bad_alloc&) {
            // What needed the memory is tried again in a while (a time-out that could not be
            // handled, say); the thread must not end.
            log_message(*ctx, SANSOCK_LOG_ERROR, "progress: out of memory, retrying");
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
    }
}

} // namespace

sansock_socket_t register_socket(stream_socket* s) {
    if (s->ctx->stopping) return 0; // destroy has taken every handle (its lock is held)
    std::lock_guard lock(process_mutex);
    return process.handles != nullptr ? process.handles->insert(s) : 0;
}

void unregister_socket(sansock_socket_t handle) {
    std::lock_guard lock(process_mutex);
    if (process.handles != nullptr) process.handles->remove(handle);
}

stream_socket* lock_socket(sansock_socket_t handle, socket_call& lock) {
    lock.leave(); // a previous lookup with the same call (sansock_poll tries several)
    context* ctx;
    {
        std::lock_guard guard(process_mutex);
        stream_socket* s = find_handle(handle);
        if (s == nullptr) return nullptr;
        ctx = s->ctx;
        // Counted while the handle is still registered: destroy, which unregisters every
        // handle before it waits for the count, cannot have freed the context yet.
        ctx->calls.fetch_add(1);
    }
    static_cast<std::unique_lock<std::mutex>&>(lock) = std::unique_lock(ctx->mutex);
    lock.ctx_ = ctx;
    // Closed while we were waiting for the lock?
    stream_socket* s = find_registered(handle);
    if (s == nullptr || s->ctx != ctx) {
        lock.leave();
        return nullptr;
    }
    return s;
}

stream_socket* lock_socket(sansock_socket_t handle, std::unique_lock<std::mutex>& lock) {
    socket_call call;
    stream_socket* s = lock_socket(handle, call);
    if (s == nullptr) return nullptr;
    // Uncounted with the lock held: destroy tests the count under it.
    if (std::exchange(call.ctx_, nullptr)->calls.fetch_sub(1) == 1 && s->ctx->stopping) s->ctx->changed.notify_all();
    lock = std::move(static_cast<std::unique_lock<std::mutex>&>(call));
    return s;
}

void socket_call::leave() {
    context* ctx = std::exchange(ctx_, nullptr);
    if (ctx == nullptr) return;
    if (!owns_lock()) lock();
    // Under the lock, which destroy holds to test the count: it cannot miss this.
    if (ctx->calls.fetch_sub(1) == 1 && ctx->stopping) ctx->changed.notify_all();
    unlock(); // the last touch of the context
}

void run_callbacks(context& ctx, std::span<const ready_callback> callbacks) {
    if (callbacks.empty()) return;
    // This thread joins the context's list for the while (a node on the stack: nothing is
    // allocated, and no thread-local storage, which ld.so would allocate and keep).
    struct listed {
        context& ctx;
        context::callback_run run{std::this_thread::get_id(), nullptr};
        explicit listed(context& c) : ctx(c) {
            std::lock_guard lock(ctx.mutex);
            run.next = ctx.callback_runs;
            ctx.callback_runs = &run;
        }
        ~listed() {
            std::lock_guard lock(ctx.mutex);
            for (context::callback_run** p = &ctx.callback_runs; *p != nullptr; p = &(*p)->next)
                if (*p == &run) {
                    *p = run.next;
                    break;
                }
        }
    } guard(ctx);
    for (const ready_callback& c : callbacks) c.callback(c.user, c.result);
}

bool in_callbacks_of(context& ctx) {
    const std::thread::id me = std::this_thread::get_id();
    std::lock_guard lock(ctx.mutex);
    for (const context::callback_run* r = ctx.callback_runs; r != nullptr; r = r->next)
        if (r->thread == me) return true;
    return false;
}

stream_socket* find_registered(sansock_socket_t handle) {
    std::lock_guard guard(process_mutex);
    return find_handle(handle);
}

void run_deferred(context& ctx) {
    // The hard closes one at a time, oldest first, so that provider_closes keeps its room for
    // every socket's close (hard_close never allocates). The provider completes what it
    // cancels inside close; our completion routines take the context lock, so close is called
    // without it.
    bool closed = false;
    for (;;) {
        provider::socket_handle ps;
        {
            std::lock_guard lock(ctx.mutex);
            if (ctx.provider_closes.empty()) break;
            ps = ctx.provider_closes.front();
            ctx.provider_closes.erase(ctx.provider_closes.begin());
        }
        ctx.ops.close(ctx.instance, ps);
        closed = true;
    }
    // The callbacks as one batch; the context gets a vector with the room of the one taken
    // (reserved for the async operations still pending). With no memory for that, they are
    // taken one at a time instead.
    std::vector<ready_callback> batch;
    bool one_by_one = false;
    {
        std::lock_guard lock(ctx.mutex);
        if (!ctx.callbacks.empty()) {
            try {
                std::vector<ready_callback> room;
                room.reserve(ctx.callbacks.capacity());
                batch.swap(ctx.callbacks);
                ctx.callbacks.swap(room);
            } catch (const std::bad_alloc&) {
                one_by_one = true;
            }
        }
    }
    run_callbacks(ctx, batch);
    while (one_by_one) {
        ready_callback next{};
        {
            std::lock_guard lock(ctx.mutex);
            if (ctx.callbacks.empty()) break;
            next = ctx.callbacks.front();
            ctx.callbacks.erase(ctx.callbacks.begin());
        }
        run_callbacks(ctx, std::span<const ready_callback>(&next, 1));
    }
    if (closed) {
        std::lock_guard lock(ctx.mutex);
        ctx.changed.notify_all();
    }
}

int progress_once(context& ctx, int timeout_ms) {
    int handled = ctx.ops.progress(ctx.instance, timeout_ms);
    {
        std::lock_guard lock(ctx.mutex);
        release_pools(ctx, false);
        try {
            check_timers(ctx);
        } catch (const std::bad_alloc&) {
            // A time-out that could not be handled without memory: again at the next progress.
        }
        handled = std::max(handled, 0) + static_cast<int>(ctx.callbacks.size());
    }
    run_deferred(ctx);
    return handled;
}

namespace {
// The session protocol of a new context (context_hooks::session_version): true in *messages
// for version 3. A SANSOCK_SESSION_PROTOCOL that is neither 2 nor 3 fails the create.
int resolve_session_version(const context_hooks& hooks, bool* messages) {
    int version = hooks.session_version;
    if (version == 0) {
        const char* value = std::getenv("SANSOCK_SESSION_PROTOCOL");
        version = value == nullptr || *value == '\0' ? 2 : std::atoi(value);
    }
    if (version != 2 && version != 3) return -EINVAL;
    *messages = version == 3;
    return 0;
}
} // namespace

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
    if (int rc = resolve_log_attributes(attr)) return rc;
    if (int rc = resolve_keepalive_attributes(attr)) return rc;

    auto ctx = std::make_unique<context>();
    if (!context_arrives()) return -ENOMEM;
    ctx->attr = attr;
    ctx->hooks = hooks;
    ctx->manual_progress = attr.progress_mode == SANSOCK_PROGRESS_MANUAL;
    const provider::ops* table = hooks.provider_ops;
    if (table == nullptr) table = attr.provider == SANSOCK_PROVIDER_LOOPBACK ? &loopback_ops : &verbs::verbs_ops;
    ctx->ops = provider::with_defaults(*table);
    try {
        ctx->idle_pools.reserve(idle_pool_limit);
    } catch (const std::bad_alloc&) {
        context_leaves();
        return -ENOMEM;
    }
    if (int rc = resolve_session_version(hooks, &ctx->messages)) {
        context_leaves();
        return rc;
    }
    provider::config config;
    config.slot_size = attr.slot_size;
    config.send_slots = attr.send_slots;
    config.recv_slots = attr.recv_slots;
    // The attributes' ranges are the same for both versions (include/sansock/sansock.h).
    if (int rc = provider::check_config(config)) {
        context_leaves();
        return rc;
    }
    config.messages = ctx->messages;
    if (ctx->messages) { // the provider holds what a connection's pool posts
        config.send_slots = send_buffers_for(attr.send_slots);
        config.recv_slots = recv_buffers_for(attr.recv_slots);
    }
    config.provider_specific = hooks.provider_specific;
    if (config.provider_specific == nullptr && attr.provider == SANSOCK_PROVIDER_LOOPBACK && hooks.provider_ops == nullptr) {
        config.provider_specific = acquire_shared_fabric();
        if (config.provider_specific == nullptr) {
            context_leaves();
            return -ENOMEM;
        }
        ctx->shared_fabric = true;
    }
    provider::upcalls calls;
    calls.context = ctx.get();
    calls.on_connection_event = on_provider_event;
    calls.log = provider_log;
    int created;
    try {
        created = ctx->ops.create(config, calls, &ctx->instance);
    } catch (...) {
        created = c_error(); // verbs allocates with new
    }
    if (int rc = created) {
        if (ctx->shared_fabric) release_shared_fabric();
        context_leaves();
        return rc;
    }
    if (!ctx->manual_progress) {
        try {
            ctx->progress_thread = std::thread(progress_loop, ctx.get());
        } catch (...) {
            const int rc = c_error(); // -EAGAIN: no thread; -ENOMEM
            ctx->ops.destroy(ctx->instance);
            if (ctx->shared_fabric) release_shared_fabric();
            context_leaves();
            return rc;
        }
    }
    *out = reinterpret_cast<sansock_context*>(ctx.release());
    return 0;
}

provider::socket_handle provider_socket_of(sansock_socket_t handle) {
    socket_call lock;
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

int attach_layer(sansock_context* c, layer_factory make, attached_layer** out) {
    if (c == nullptr || make == nullptr || out == nullptr) return -EINVAL;
    layer_slot& slot = reinterpret_cast<sw::context*>(c)->layer;
    std::lock_guard lock(slot.mutex);
    if (slot.closed) return -EINVAL;
    if (slot.layer == nullptr) {
        attached_layer* made = nullptr;
        if (int rc = make(c, &made)) return rc;
        slot.layer = made;
    }
    ++slot.uses;
    *out = slot.layer;
    return 0;
}

void release_layer(sansock_context* c) {
    layer_slot& slot = reinterpret_cast<sw::context*>(c)->layer;
    std::lock_guard lock(slot.mutex);
    --slot.uses;
}
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
    attr->keepalive = SANSOCK_KEEPALIVE_ON; // docs/semantics.md, "Keepalive": why on, why these
    attr->keepalive_idle_s = 30;
    attr->keepalive_interval_s = 10;
    attr->keepalive_count = 6;
}

extern "C" int sansock_context_create(const struct sansock_context_attr* attr, sansock_context** out) try {
    return sansock::sw::create_context(attr, {}, out);
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_context_destroy(sansock_context* c) try {
    if (c == nullptr) return -EINVAL;
    auto* ctx = reinterpret_cast<context*>(c);
    // From a callback of the context, on whichever thread runs it (the progress thread, a
    // thread in sansock_progress or in a blocking call driving manual progress, in close,
    // in destroy): what runs the callback uses the context when the callback returns.
    if (sansock::sw::in_callbacks_of(*ctx)) return -EBUSY;
    {
        std::lock_guard lock(ctx->mutex);
        if (ctx->progress_thread.get_id() == std::this_thread::get_id()) return -EBUSY;
    }
    // The layer above first (the service engine's threads use the sockets): -EBUSY while
    // objects of it are alive.
    if (int rc = sansock::sw::stop_layer(*ctx)) return rc;
    {
        // Every handle goes at once, under the lock: a call blocked on one of the sockets sees
        // its handle gone and returns (-ECANCELED; poll: POLLNVAL), a later call finds nothing
        // (-ENOTSOCK), and no handle is given out any more (register_socket).
        std::lock_guard lock(ctx->mutex);
        ctx->stopping = true;
        for (auto& [s, owned] : ctx->sockets) {
            sansock::sw::reset_on_destroy(*s); // logged with the handle still the user's
            if (s->handle != 0) {
                sansock::sw::unregister_socket(s->handle);
                s->handle = 0;
            }
        }
        ctx->changed.notify_all();
    }
    ctx->ops.wake(ctx->instance); // the progress thread, or a manual-progress waiter, returns soon
    if (ctx->progress_thread.joinable()) ctx->progress_thread.join();
    {
        // The calls that were inside leave (each ends by uncounting itself under the lock).
        std::unique_lock lock(ctx->mutex);
        ctx->changed.wait(lock, [&] { return ctx->calls.load() == 0; });
        for (auto& [s, owned] : ctx->sockets) sansock::sw::cancel_user_operations(*s, -ECANCELED);
    }
    sansock::sw::run_deferred(*ctx);
    // Destroying the instance hard-closes every provider socket and completes what is pending;
    // closes queued by those completions are moot, the callbacks still run.
    ctx->ops.destroy(ctx->instance);
    std::vector<sansock::sw::ready_callback> callbacks;
    {
        std::lock_guard lock(ctx->mutex);
        // The provider is gone, and every registration with it: the pools are only memory now.
        ctx->instance = nullptr;
        sansock::sw::release_pools(*ctx, true);
        ctx->provider_closes.clear();
        callbacks.swap(ctx->callbacks);
    }
    sansock::sw::run_callbacks(*ctx, callbacks);
    const bool shared_fabric = ctx->shared_fabric;
    delete ctx;
    if (shared_fabric) sansock::sw::release_shared_fabric();
    sansock::sw::context_leaves();
    return 0;
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_context_fd(sansock_context* c) try {
    if (c == nullptr) return -EINVAL;
    auto* ctx = reinterpret_cast<context*>(c);
    if (!ctx->manual_progress) return -EBADFD;
    return ctx->ops.event_fd(ctx->instance);
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_progress(sansock_context* c, int timeout_ms) try {
    if (c == nullptr) return -EINVAL;
    auto* ctx = reinterpret_cast<context*>(c);
    if (!ctx->manual_progress) return -EBADFD;
    return sansock::sw::progress_once(*ctx, timeout_ms);
} catch (...) {
    return sansock::c_error();
}

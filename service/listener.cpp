// SPDX-License-Identifier: MIT
// Listeners (docs/service.md, listener table) and the service engine the objects of a context
// share.
#include <arpa/inet.h>

#include <cstring>
#include <new>
#include <system_error>

#include "service/service_internal.hpp"

using namespace sansock::svc;

namespace sansock::svc {

// ---- the engine ------------------------------------------------------------------------------

namespace {

void job_loop(service_engine& e) {
    lock_t lock(e.mutex);
    while (!e.stopping) {
        // Fire the due timers, one at a time (a firing may arm or disarm others).
        const auto now = clock::now();
        timer* due = nullptr;
        std::optional<clock::time_point> next;
        for (timer* t = e.timers; t != nullptr; t = t->next) {
            if (t->when <= now) {
                due = t;
                break;
            }
            if (!next || t->when < *next) next = t->when;
        }
        if (due != nullptr) {
            disarm_timer(e, *due);
            due->fire(*due);
            e.changed.notify_all();
            continue;
        }
        if (e.jobs_head != nullptr) {
            task* t = e.jobs_head;
            e.jobs_head = t->next;
            if (e.jobs_head == nullptr) e.jobs_tail = nullptr;
            t->next = nullptr;
            t->queued = false;
            t->running = true;
            t->run(e, *t, lock);
            e.changed.notify_all();
            continue;
        }
        if (next)
            e.jobs_changed.wait_until(lock, *next);
        else
            e.jobs_changed.wait(lock);
    }
}

void callback_loop(service_engine& e) {
    lock_t lock(e.mutex);
    while (!e.stopping) {
        if (e.callbacks_head == nullptr) {
            e.callbacks_changed.wait(lock);
            continue;
        }
        task* t = e.callbacks_head;
        e.callbacks_head = t->next;
        if (e.callbacks_head == nullptr) e.callbacks_tail = nullptr;
        t->next = nullptr;
        t->queued = false;
        t->running = true;
        t->run(e, *t, lock);
        e.changed.notify_all();
    }
}

void enqueue(task*& head, task*& tail, task& t) {
    t.next = nullptr;
    if (tail != nullptr)
        tail->next = &t;
    else
        head = &t;
    tail = &t;
    t.queued = true;
}

// Runs an async completion's callback on the callback thread.
void deliver_completion(service_engine& e, task& t, lock_t& lock) {
    auto& c = *static_cast<completion*>(t.owner);
    const sansock_async_context async = c.async;
    const int result = c.result;
    c.active = false;
    t.running = false; // the owner may be freed from inside the callback
    e.changed.notify_all();
    lock.unlock();
    async.callback(result, async.state);
    lock.lock();
}

// Ends both threads (whatever they are doing has finished when this returns).
void join_threads(service_engine& e) {
    {
        std::lock_guard lock(e.mutex);
        e.stopping = true;
    }
    e.jobs_changed.notify_all();
    e.callbacks_changed.notify_all();
    if (e.job_thread.joinable()) e.job_thread.join();
    if (e.callback_thread.joinable()) e.callback_thread.join();
}

// The layer slot's stop (sansock_context_destroy, once no object of the context is left).
int stop_engine(sansock::attached_layer* layer) {
    auto* e = static_cast<service_engine*>(layer);
    const std::thread::id me = std::this_thread::get_id();
    if (me == e->job_thread.get_id() || me == e->callback_thread.get_id()) return -EBUSY; // cannot join itself
    join_threads(*e);
    delete e;
    return 0;
}

// The layer slot's factory: the context's engine with its two threads.
int make_engine(sansock_context* ctx, sansock::attached_layer** out) {
    auto* e = new (std::nothrow) service_engine;
    if (e == nullptr) return -ENOMEM;
    e->stop = stop_engine;
    e->ctx = ctx;
    int rc = 0;
    try {
        e->job_thread = std::thread(job_loop, std::ref(*e));
        e->callback_thread = std::thread(callback_loop, std::ref(*e));
    } catch (const std::system_error&) {
        rc = -EAGAIN;
    } catch (const std::bad_alloc&) {
        rc = -ENOMEM;
    }
    if (rc != 0) {
        join_threads(*e);
        delete e;
        return rc;
    }
    *out = e;
    return 0;
}

} // namespace

int engine_acquire(sansock_context* ctx, service_engine** out) {
    sansock::attached_layer* layer = nullptr;
    if (int rc = sansock::attach_layer(ctx, make_engine, &layer)) return rc;
    *out = static_cast<service_engine*>(layer);
    return 0;
}

void engine_release(sansock_context* ctx) { sansock::release_layer(ctx); }

void post_job(service_engine& e, task& t) {
    if (t.queued) return;
    enqueue(e.jobs_head, e.jobs_tail, t);
    e.jobs_changed.notify_all();
}

void post_callback(service_engine& e, task& t) {
    if (t.queued) return;
    enqueue(e.callbacks_head, e.callbacks_tail, t);
    e.callbacks_changed.notify_all();
}

void arm_timer(service_engine& e, timer& t, clock::time_point when) {
    if (t.armed) disarm_timer(e, t);
    t.when = when;
    t.armed = true;
    t.next = e.timers;
    e.timers = &t;
    e.jobs_changed.notify_all();
}

void disarm_timer(service_engine& e, timer& t) {
    if (!t.armed) return;
    for (timer** p = &e.timers; *p != nullptr; p = &(*p)->next)
        if (*p == &t) {
            *p = t.next;
            break;
        }
    t.next = nullptr;
    t.armed = false;
}

bool task_idle(const task& t) { return !t.queued && !t.running; }

void begin(completion& c, const sansock_async_context* async) {
    c.active = true;
    c.finished = false;
    c.result = 0;
    c.async = async != nullptr ? *async : sansock_async_context{};
    c.deliver.run = deliver_completion;
    c.deliver.owner = &c;
}

void finish(service_engine& e, completion& c, int result) {
    c.result = result;
    if (c.internal != nullptr) {
        c.active = false;
        c.internal(c, result);
    } else if (c.async.callback != nullptr) {
        post_callback(e, c.deliver);
    } else {
        c.finished = true;
    }
    e.changed.notify_all();
}

int wait_or_async(service_engine& e, completion& c, lock_t& lock) {
    if (c.internal != nullptr || c.async.callback != nullptr) return -EINPROGRESS;
    e.changed.wait(lock, [&] { return c.finished; });
    c.active = false;
    c.finished = false;
    return c.result;
}

int finish_at_once(completion& c, int result) {
    c.active = false;
    c.finished = false;
    return result;
}

bool has_progress_thread(sansock_context* ctx) { return sansock_context_fd(ctx) == -EBADFD; }

int take_address(const sockaddr* address, socklen_t length, sansock::socket_address* out) {
    if (int rc = sansock::address::validate(address, length)) return rc;
    *out = {};
    std::memcpy(out, address, sansock::address::size_of(address->sa_family));
    return 0;
}

int give_address(const sansock::socket_address& a, sockaddr* out, socklen_t* length) {
    const socklen_t size = sansock::address::size_of(a.sa.sa_family);
    if (*length < size) return -EINVAL;
    std::memcpy(out, &a, size);
    *length = size;
    return 0;
}

void close_socket(sansock_socket_t s, bool hard) {
    if (s == 0) return;
    if (hard) {
        linger l{1, 0};
        sansock_setsockopt(s, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    sansock_close(s);
}

// ---- listener internals ----------------------------------------------------------------------

namespace {

void on_switch_accept(void* user, int64_t result);

void post_switch_accept(sansock_listener& l) {
    if (l.switch_accept_pending || l.accepts_head == nullptr || l.sock == 0 || l.state != SANSOCK_LISTENER_OPEN) return;
    const int rc = sansock_accept_async(l.sock, on_switch_accept, &l);
    if (rc == 0) {
        l.switch_accept_pending = true;
        ++l.io_outstanding;
        return;
    }
    while (l.accepts_head != nullptr) { // the switch refused: every waiting accept fails with its code
        sansock_channel* c = l.accepts_head;
        listener_remove_accept(l, *c);
        channel_accept_failed(*c, rc);
    }
}

void fail_accepts(sansock_listener& l, int code) {
    while (l.accepts_head != nullptr) {
        sansock_channel* c = l.accepts_head;
        listener_remove_accept(l, *c);
        channel_accept_failed(*c, code);
    }
}

bool listener_quiet(const sansock_listener& l) {
    return l.io_outstanding == 0 && !l.cleanup_pending && task_idle(l.cleanup) && task_idle(l.close_done.deliver);
}

// CLOSING ends when nothing of the switch is in flight any more (or an abort cut it short).
// While a close call is itself closing the socket, that call finishes the close.
void check_closed(sansock_listener& l) {
    if (l.state != SANSOCK_LISTENER_CLOSING || l.close_in_call) return;
    if (l.io_outstanding != 0 || l.cleanup_pending || l.sock != 0) return;
    l.state = SANSOCK_LISTENER_CLOSED;
    finish(*l.engine, l.close_done, l.close_result);
}

void on_switch_accept(void* user, int64_t result) {
    auto& l = *static_cast<sansock_listener*>(user);
    sansock_socket_t reset = 0;
    {
        lock_t lock(l.engine->mutex);
        l.switch_accept_pending = false;
        if (result >= 0) {
            const auto s = static_cast<sansock_socket_t>(result);
            if (l.state == SANSOCK_LISTENER_OPEN && l.accepts_head != nullptr) {
                sansock_channel* c = l.accepts_head;
                listener_remove_accept(l, *c);
                channel_accepted(*c, s);
            } else {
                reset = s; // nobody waits for it any more: the client sees a reset
            }
        } else if (result != -ECANCELED && l.state == SANSOCK_LISTENER_OPEN && l.accepts_head != nullptr) {
            sansock_channel* c = l.accepts_head;
            listener_remove_accept(l, *c);
            channel_accept_failed(*c, static_cast<int>(result));
        }
        post_switch_accept(l);
        --l.io_outstanding;
        check_closed(l);
        l.engine->changed.notify_all();
    }
    close_socket(reset, true);
}

// Abort's deferred half, on the job thread: closes the listening socket.
void run_cleanup(service_engine&, task& t, lock_t& lock) {
    auto& l = *static_cast<sansock_listener*>(t.owner);
    const sansock_socket_t s = l.sock;
    l.sock = 0;
    lock.unlock();
    close_socket(s, true);
    lock.lock();
    l.cleanup_pending = false;
    t.running = false;
    check_closed(l);
}

} // namespace

void listener_remove_accept(sansock_listener& l, sansock_channel& c) {
    sansock_channel** p = &l.accepts_head;
    sansock_channel* previous = nullptr;
    while (*p != nullptr && *p != &c) {
        previous = *p;
        p = &(*p)->accept_next;
    }
    if (*p == nullptr) return;
    *p = c.accept_next;
    if (l.accepts_tail == &c) l.accepts_tail = previous;
    c.accept_next = nullptr;
}

int listener_accept_locked(sansock_listener& l, sansock_channel& c, const sansock_async_context* async) {
    switch (l.state) {
    case SANSOCK_LISTENER_OPEN: break;
    case SANSOCK_LISTENER_FAULTED: return -ENOTRECOVERABLE;
    case SANSOCK_LISTENER_CREATED:
    case SANSOCK_LISTENER_OPENING:
    case SANSOCK_LISTENER_CLOSING:
    case SANSOCK_LISTENER_CLOSED: return -EBADFD;
    }
    if (c.ctx != l.ctx) return -EINVAL;
    if (c.state != SANSOCK_CHANNEL_CREATED) return -EBADFD;
    c.state = SANSOCK_CHANNEL_ACCEPTING;
    c.accepting_on = &l;
    c.abort_requested = false;
    c.accept_next = nullptr;
    if (l.accepts_tail != nullptr)
        l.accepts_tail->accept_next = &c;
    else
        l.accepts_head = &c;
    l.accepts_tail = &c;
    begin(c.accept_done, async);
    post_switch_accept(l);
    return -EINPROGRESS; // the caller waits or returns (wait_or_async)
}

// Abort (lock held): nothing here allocates.
void listener_abort_locked(sansock_listener& l) {
    switch (l.state) {
    case SANSOCK_LISTENER_CREATED:
    case SANSOCK_LISTENER_FAULTED:
    case SANSOCK_LISTENER_CLOSED: break;
    case SANSOCK_LISTENER_OPENING: l.abort_requested = true; break;
    case SANSOCK_LISTENER_OPEN:
        l.state = SANSOCK_LISTENER_FAULTED;
        fail_accepts(l, -ECANCELED);
        if (l.sock != 0 && !l.cleanup_pending) {
            l.cleanup_pending = true;
            post_job(*l.engine, l.cleanup);
        }
        break;
    case SANSOCK_LISTENER_CLOSING:
        l.close_result = -ECANCELED;
        if (!l.close_in_call && l.close_done.active && !l.close_done.finished && !l.close_done.deliver.queued) {
            // The close ends now (CLOSED, -ECANCELED); what is still in flight is waited for by
            // reset and free.
            l.state = SANSOCK_LISTENER_CLOSED;
            finish(*l.engine, l.close_done, -ECANCELED);
        }
        break;
    }
    l.engine->changed.notify_all();
}

} // namespace sansock::svc

// ---- public calls ------------------------------------------------------------------------------

extern "C" int sansock_listener_create(sansock_context* ctx, const struct sansock_listener_attr* attr, sansock_listener** out) try {
    if (ctx == nullptr || out == nullptr) return -EINVAL;
    if (attr != nullptr && (attr->size < sizeof(sansock_listener_attr) || attr->backlog < 0)) return -EINVAL;
    if (!has_progress_thread(ctx)) return -EINVAL;
    service_engine* e = nullptr;
    if (int rc = engine_acquire(ctx, &e)) return rc;
    auto* l = new (std::nothrow) sansock_listener;
    if (l == nullptr) {
        engine_release(ctx);
        return -ENOMEM;
    }
    l->ctx = ctx;
    l->engine = e;
    if (attr != nullptr && attr->backlog > 0) l->backlog = attr->backlog;
    l->cleanup.run = run_cleanup;
    l->cleanup.owner = l;
    *out = l;
    return 0;
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_listener_open(sansock_listener* l, const struct sockaddr* address, socklen_t length,
                                     const struct sansock_async_context* async) try {
    if (l == nullptr || (async != nullptr && async->callback == nullptr)) return -EINVAL;
    sansock::socket_address at{};
    if (int rc = take_address(address, length, &at)) return rc;
    lock_t lock(l->engine->mutex);
    if (l->state != SANSOCK_LISTENER_CREATED) return -EBADFD;
    l->state = SANSOCK_LISTENER_OPENING;
    l->abort_requested = false;
    l->close_result = 0;
    l->engine->changed.notify_all();
    lock.unlock();

    sansock_socket_t s = 0;
    sansock::socket_address bound{};
    int rc = sansock_socket(l->ctx, &s);
    if (rc == 0) rc = sansock_bind(s, &at.sa, sansock::address::size_of(at.sa.sa_family));
    if (rc == 0) rc = sansock_listen(s, l->backlog);
    if (rc == 0) {
        socklen_t n = sizeof bound;
        rc = sansock_getsockname(s, &bound.sa, &n);
    }

    lock.lock();
    if (rc == 0 && l->abort_requested) rc = -ECANCELED;
    if (rc != 0) {
        l->state = SANSOCK_LISTENER_CREATED;
        l->abort_requested = false;
        l->engine->changed.notify_all();
        lock.unlock();
        close_socket(s, true);
        return rc;
    }
    l->sock = s;
    l->address = bound;
    l->address_known = true;
    l->state = SANSOCK_LISTENER_OPEN;
    l->engine->changed.notify_all();
    return 0;
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_listener_accept(sansock_listener* l, sansock_channel* channel, const struct sansock_async_context* async) try {
    if (l == nullptr || channel == nullptr || (async != nullptr && async->callback == nullptr)) return -EINVAL;
    lock_t lock(l->engine->mutex);
    const int rc = listener_accept_locked(*l, *channel, async);
    if (rc != -EINPROGRESS) return rc;
    return wait_or_async(*l->engine, channel->accept_done, lock);
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_listener_close(sansock_listener* l, const struct sansock_async_context* async) try {
    if (l == nullptr || (async != nullptr && async->callback == nullptr)) return -EINVAL;
    lock_t lock(l->engine->mutex);
    switch (l->state) {
    case SANSOCK_LISTENER_CREATED:
        l->state = SANSOCK_LISTENER_CLOSED;
        l->engine->changed.notify_all();
        return 0;
    case SANSOCK_LISTENER_CLOSED: return 0;
    case SANSOCK_LISTENER_OPENING:
    case SANSOCK_LISTENER_CLOSING: return -EBADFD;
    case SANSOCK_LISTENER_OPEN:
    case SANSOCK_LISTENER_FAULTED: break;
    }
    l->state = SANSOCK_LISTENER_CLOSING;
    l->close_result = 0;
    begin(l->close_done, async);
    fail_accepts(*l, -ECANCELED);
    // Closing the listening socket cancels the switch's accept and resets the connections that
    // arrived but were not accepted; the switch may call on_switch_accept inline.
    const sansock_socket_t s = l->sock;
    l->sock = 0;
    l->close_in_call = true;
    lock.unlock();
    close_socket(s, true);
    lock.lock();
    l->close_in_call = false;
    if ((l->io_outstanding == 0 && !l->cleanup_pending) || l->close_result == -ECANCELED) {
        l->state = SANSOCK_LISTENER_CLOSED;
        l->engine->changed.notify_all();
        return finish_at_once(l->close_done, l->close_result);
    }
    return wait_or_async(*l->engine, l->close_done, lock);
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_listener_abort(sansock_listener* l) try {
    if (l == nullptr) return -EINVAL;
    lock_t lock(l->engine->mutex);
    listener_abort_locked(*l);
    return 0;
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_listener_reset(sansock_listener* l) try {
    if (l == nullptr) return -EINVAL;
    lock_t lock(l->engine->mutex);
    switch (l->state) {
    case SANSOCK_LISTENER_CREATED: return 0;
    case SANSOCK_LISTENER_CLOSED:
        l->engine->changed.wait(lock, [&] { return l->io_outstanding == 0 && !l->cleanup_pending && task_idle(l->cleanup); });
        l->state = SANSOCK_LISTENER_CREATED;
        l->close_result = 0;
        l->engine->changed.notify_all();
        return 0;
    default: return -EBADFD;
    }
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_listener_free(sansock_listener* l) try {
    if (l == nullptr) return -EINVAL;
    sansock_context* ctx = l->ctx;
    {
        lock_t lock(l->engine->mutex);
        if (l->state != SANSOCK_LISTENER_CREATED && l->state != SANSOCK_LISTENER_CLOSED) return -EBADFD;
        l->engine->changed.wait(lock, [&] { return listener_quiet(*l); });
    }
    delete l;
    engine_release(ctx);
    return 0;
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_listener_get_state(sansock_listener* l) try {
    if (l == nullptr) return -EINVAL;
    lock_t lock(l->engine->mutex);
    return static_cast<int>(l->state);
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_listener_address(sansock_listener* l, struct sockaddr* address, socklen_t* length) try {
    if (l == nullptr || address == nullptr || length == nullptr) return -EINVAL;
    lock_t lock(l->engine->mutex);
    if (!l->address_known) return -EBADFD;
    return give_address(l->address, address, length);
} catch (...) {
    return sansock::c_error();
}

// SPDX-License-Identifier: MIT
// Channels (docs/service.md, channel table): connect or accept, framed messages, session
// shutdown, graceful close, abort.
#include <arpa/inet.h>

#include <cstring>
#include <new>
#include <system_error>

#include "service/service_internal.hpp"

using namespace sansock::svc;
using phase = sansock_channel::phase;

namespace sansock::svc {

namespace {

constexpr size_t header_bytes = 4;
constexpr size_t drain_bytes = 4096;

void advance_close(sansock_channel& c);

void on_drain(void* user, int64_t result) {
    auto& c = *static_cast<sansock_channel*>(user);
    lock_t lock(c.engine->mutex);
    --c.io_outstanding;
    c.drain_pending = false;
    if (result == 0)
        c.eos_received = true;
    else if (result < 0)
        c.io_failed = true;
    advance_close(c);
    c.engine->changed.notify_all();
}

void complete_close(sansock_channel& c) {
    disarm_timer(*c.engine, c.close_timer);
    c.state = SANSOCK_CHANNEL_CLOSED;
    c.close_phase = phase::none;
    if (c.close_notify) {
        c.close_notify = false;
        finish(*c.engine, c.close_done, c.close_result);
    }
    if (c.host != nullptr) host_channel_changed(*c.host);
    c.engine->changed.notify_all();
}

// The close's steps (lock held; nothing here blocks).
void advance_close(sansock_channel& c) {
    if (c.state != SANSOCK_CHANNEL_CLOSING) return;
    for (;;) {
        switch (c.close_phase) {
        case phase::none: return;
        case phase::wait_sends:
            if (c.sending > 0) return;
            if (c.kind == SANSOCK_CHANNEL_SESSION && !c.shut_down && !c.io_failed && c.sock != 0) {
                c.shut_down = true;
                if (sansock_shutdown(c.sock, SHUT_WR) < 0) c.io_failed = true; // end of session
            }
            c.close_phase = phase::wait_receives;
            continue;
        case phase::wait_receives:
            if (c.receiving > 0) return;
            c.close_phase = c.kind == SANSOCK_CHANNEL_SESSION ? phase::drain : phase::final_job;
            continue;
        case phase::drain: {
            if (c.drain_pending) return;
            if (c.eos_received || c.io_failed || c.sock == 0) {
                c.close_phase = phase::final_job;
                continue;
            }
            // Read (and drop) what the peer still sends until its end of session.
            const int rc = sansock_recv_async(c.sock, c.drain_buffer.data(), c.drain_buffer.size(), on_drain, &c);
            if (rc == 0) {
                c.drain_pending = true;
                ++c.io_outstanding;
                return;
            }
            c.io_failed = true;
            c.close_phase = phase::final_job;
            continue;
        }
        case phase::final_job:
            post_job(*c.engine, c.close_job);
            return;
        case phase::finishing:
            if (c.sending > 0 || c.receiving > 0 || c.io_outstanding > 0 || c.drain_pending) return;
            complete_close(c);
            return;
        }
    }
}

// Switch bug workaround: closing a switch socket while another thread is blocked in
// sansock_recv/sansock_send on it frees the socket under that thread (switch/api.cpp). So a
// reset first wakes such threads with a shutdown (their calls return; `cancelled` turns that
// into -ECANCELED) and closes the socket only once no user thread is inside the switch.
// Returns true while threads are still inside (lock held).
bool wake_blocked_io(sansock_channel& c) {
    if (c.sending == 0 && c.receiving == 0) return false;
    if (!c.io_woken && c.sock != 0) {
        c.io_woken = true;
        sansock_shutdown(c.sock, c.sending > 0 ? SHUT_RDWR : SHUT_RD);
    }
    return true;
}

// Timer or abort: the close stops waiting and resets the connection.
void force_hard(sansock_channel& c, int result) {
    c.close_result = result;
    c.close_hard = true;
    c.cancelled = true;
    switch (c.close_phase) {
    case phase::wait_sends:
    case phase::wait_receives:
    case phase::drain:
        c.close_phase = phase::final_job;
        advance_close(c);
        break;
    default: break;
    }
}

void on_close_timer(timer& t) {
    auto& c = *static_cast<sansock_channel*>(t.owner);
    if (c.state == SANSOCK_CHANNEL_CLOSING) force_hard(c, -ETIMEDOUT);
}

// The close's last step, on the job thread: closes the socket (gracefully after the session
// ended, hard on time-out or abort), then waits for pending I/O to come back.
void run_close_job(service_engine&, task& t, lock_t& lock) {
    auto& c = *static_cast<sansock_channel*>(t.owner);
    if (wake_blocked_io(c)) { // posted again (advance_close) when the last one has returned
        t.running = false;
        return;
    }
    const sansock_socket_t s = c.sock;
    const bool hard = c.close_hard || c.io_failed;
    c.sock = 0;
    c.close_phase = phase::finishing;
    lock.unlock();
    close_socket(s, hard);
    lock.lock();
    t.running = false;
    advance_close(c);
}

// Abort's deferred half, on the job thread: resets the connection.
void run_abort_job(service_engine&, task& t, lock_t& lock) {
    auto& c = *static_cast<sansock_channel*>(t.owner);
    if (wake_blocked_io(c)) { // posted again by after_io
        c.abort_waiting = true;
        t.running = false;
        return;
    }
    c.abort_waiting = false;
    const sansock_socket_t s = c.sock;
    c.sock = 0;
    lock.unlock();
    close_socket(s, true);
    lock.lock();
    t.running = false;
    advance_close(c);
}

// Hands an accepted channel to the host's on_channel, on the callback thread.
void run_deliver(service_engine&, task& t, lock_t& lock) {
    auto& c = *static_cast<sansock_channel*>(t.owner);
    sansock_service_host* h = c.host;
    const size_t endpoint = c.endpoint;
    sansock_channel_accepted_fn fn = h->on_channel;
    void* state = h->user_state;
    t.running = false;
    c.engine->changed.notify_all();
    lock.unlock();
    fn(h, endpoint, &c, state);
    lock.lock();
}

void fresh_session(sansock_channel& c) {
    c.abort_requested = false;
    c.shut_down = false;
    c.shutdown_waiting = false;
    c.eos_received = false;
    c.io_failed = false;
    c.cancelled = false;
    c.io_woken = false;
    c.abort_waiting = false;
    c.close_phase = phase::none;
    c.close_hard = false;
    c.close_result = 0;
}

// After a send or receive came back: the result the caller sees, and the fault it causes.
int io_result(sansock_channel& c, int rc) {
    if (rc >= 0) return rc;
    if (c.cancelled) return -ECANCELED;
    if (rc == -ENOTSOCK) rc = -ECANCELED; // the socket went away under us (abort's reset)
    c.io_failed = true;
    if (c.state == SANSOCK_CHANNEL_OPEN) c.state = SANSOCK_CHANNEL_FAULTED;
    return rc;
}

void after_io(sansock_channel& c) {
    if (c.abort_waiting && c.sending == 0 && c.receiving == 0) post_job(*c.engine, c.abort_job);
    if (c.shutdown_waiting && c.sending == 0) {
        c.shutdown_waiting = false;
        int rc = 0;
        if (c.state == SANSOCK_CHANNEL_OPEN && c.sock != 0) {
            rc = sansock_shutdown(c.sock, SHUT_WR);
            if (rc < 0) rc = io_result(c, rc);
        } else {
            rc = c.cancelled ? -ECANCELED : -ENOTRECOVERABLE;
        }
        finish(*c.engine, c.shutdown_done, rc);
    }
    advance_close(c);
    c.engine->changed.notify_all();
}

int send_all(sansock_socket_t s, const uint8_t* p, size_t n) {
    while (n > 0) {
        const ssize_t r = sansock_send(s, p, n, 0);
        if (r < 0) return static_cast<int>(r);
        if (r == 0) return -EIO;
        p += r;
        n -= static_cast<size_t>(r);
    }
    return 0;
}

// Reads exactly n bytes: n, fewer at end of stream, or an error.
ssize_t recv_all(sansock_socket_t s, uint8_t* p, size_t n) {
    size_t done = 0;
    while (done < n) {
        const ssize_t r = sansock_recv(s, p + done, n - done, MSG_WAITALL);
        if (r < 0) return r;
        if (r == 0) break;
        done += static_cast<size_t>(r);
    }
    return static_cast<ssize_t>(done);
}

bool channel_quiet(const sansock_channel& c) {
    return task_idle(c.open_done.deliver) && task_idle(c.accept_done.deliver) && task_idle(c.close_done.deliver) &&
           task_idle(c.shutdown_done.deliver) && task_idle(c.close_job) && task_idle(c.abort_job) &&
           task_idle(c.deliver) && c.io_outstanding == 0 && c.sending == 0 && c.receiving == 0 && !c.close_timer.armed;
}

// The end of an open (lock held): OPEN, or CREATED with the socket to close.
int complete_open(sansock_channel& c, int rc, sansock_socket_t* to_close) {
    if (rc == 0 && c.abort_requested) rc = -ECANCELED;
    if (rc != 0 && c.abort_requested) rc = -ECANCELED;
    if (rc == 0) {
        c.state = SANSOCK_CHANNEL_OPEN;
    } else {
        c.state = SANSOCK_CHANNEL_CREATED;
        *to_close = c.sock;
        c.sock = 0;
    }
    c.abort_requested = false;
    c.engine->changed.notify_all();
    return rc;
}

// Connects, watching for abort. Switch bug workaround: closing the socket from another thread
// while sansock_connect blocks on it frees the socket under that thread, so the connect is
// nonblocking and this thread polls it in slices of 50 ms, checking for abort in between; the
// socket is closed by this thread only.
int connect_abortable(sansock_channel& c, sansock_socket_t s, const sansock::socket_address& to) {
    int on = 1;
    int rc = sansock_setsockopt(s, SOL_SOCKET, SANSOCK_SO_NONBLOCK, &on, sizeof on);
    if (rc == 0) rc = sansock_connect(s, &to.sa, sansock::address::size_of(to.sa.sa_family));
    const auto deadline = clock::now() + std::chrono::seconds(60);
    while (rc == -EINPROGRESS) {
        {
            lock_t lock(c.engine->mutex);
            if (c.abort_requested) return -ECANCELED;
        }
        sansock_pollfd p{s, SANSOCK_POLLOUT, 0};
        const int n = sansock_poll(&p, 1, 50);
        if (n < 0) return n;
        if (n > 0 && (p.revents & (SANSOCK_POLLERR | SANSOCK_POLLHUP | SANSOCK_POLLNVAL)) != 0) {
            int error = 0;
            socklen_t length = sizeof error;
            rc = sansock_getsockopt(s, SOL_SOCKET, SO_ERROR, &error, &length);
            if (rc == 0) rc = error != 0 ? -error : -ECONNREFUSED;
        } else if (n > 0 && (p.revents & SANSOCK_POLLOUT) != 0) {
            rc = 0;
        } else if (clock::now() >= deadline) {
            rc = -ETIMEDOUT;
        }
    }
    int off = 0;
    if (rc == 0) rc = sansock_setsockopt(s, SOL_SOCKET, SANSOCK_SO_NONBLOCK, &off, sizeof off);
    return rc;
}

void run_open(sansock_channel* c, sansock_socket_t s, sansock::socket_address to) {
    const int rc = connect_abortable(*c, s, to);
    sansock_socket_t to_close = 0;
    {
        lock_t lock(c->engine->mutex);
        const int result = complete_open(*c, rc, &to_close);
        finish(*c->engine, c->open_done, result);
    }
    close_socket(to_close, true);
}

} // namespace

// ---- internals shared with the listener and the host ------------------------------------------

sansock_channel* channel_new(service_engine& e, sansock_context* ctx, sansock_channel_kind kind) {
    auto* c = new sansock_channel;
    c->ctx = ctx;
    c->engine = &e;
    c->kind = kind;
    c->drain_buffer.resize(drain_bytes);
    c->close_job.run = run_close_job;
    c->close_job.owner = c;
    c->abort_job.run = run_abort_job;
    c->abort_job.owner = c;
    c->deliver.run = run_deliver;
    c->deliver.owner = c;
    c->close_timer.fire = on_close_timer;
    c->close_timer.owner = c;
    return c;
}

void channel_delete(sansock_channel* c, lock_t& lock) {
    c->engine->changed.wait(lock, [&] { return channel_quiet(*c); });
    std::thread opener = std::move(c->opener);
    const sansock_socket_t s = c->sock;
    c->sock = 0;
    lock.unlock();
    if (opener.joinable()) opener.join();
    close_socket(s, true);
    delete c;
    lock.lock();
}

void channel_accepted(sansock_channel& c, sansock_socket_t s) {
    c.sock = s;
    c.accepting_on = nullptr;
    fresh_session(c);
    c.state = SANSOCK_CHANNEL_OPEN;
    finish(*c.engine, c.accept_done, 0);
}

void channel_accept_failed(sansock_channel& c, int result) {
    c.accepting_on = nullptr;
    c.state = SANSOCK_CHANNEL_CREATED;
    c.abort_requested = false;
    finish(*c.engine, c.accept_done, result);
}

void channel_start_close(sansock_channel& c, bool notify, std::optional<uint32_t> timeout_ms) {
    const bool faulted = c.state == SANSOCK_CHANNEL_FAULTED;
    c.state = SANSOCK_CHANNEL_CLOSING;
    c.close_notify = notify;
    c.close_result = 0;
    c.close_hard = faulted;
    c.close_phase = faulted ? phase::final_job : phase::wait_sends;
    if (timeout_ms && *timeout_ms != UINT32_MAX)
        arm_timer(*c.engine, c.close_timer, clock::now() + std::chrono::milliseconds(*timeout_ms));
    advance_close(c);
    c.engine->changed.notify_all();
}

void channel_force_hard(sansock_channel& c, int result) {
    if (c.state == SANSOCK_CHANNEL_CLOSING) force_hard(c, result);
}

// Abort (lock held): nothing here allocates.
void channel_abort_locked(sansock_channel& c) {
    switch (c.state) {
    case SANSOCK_CHANNEL_CREATED:
    case SANSOCK_CHANNEL_FAULTED:
    case SANSOCK_CHANNEL_CLOSED: break;
    case SANSOCK_CHANNEL_OPENING:
        c.abort_requested = true; // the connecting thread sees it within a poll slice
        break;
    case SANSOCK_CHANNEL_ACCEPTING:
        if (c.accepting_on != nullptr) listener_remove_accept(*c.accepting_on, c);
        channel_accept_failed(c, -ECANCELED);
        break;
    case SANSOCK_CHANNEL_OPEN:
        c.state = SANSOCK_CHANNEL_FAULTED;
        c.cancelled = true;
        if (c.shutdown_waiting) {
            c.shutdown_waiting = false;
            finish(*c.engine, c.shutdown_done, -ECANCELED);
        }
        post_job(*c.engine, c.abort_job);
        break;
    case SANSOCK_CHANNEL_CLOSING: force_hard(c, -ECANCELED); break;
    }
    c.engine->changed.notify_all();
}

} // namespace sansock::svc

// ---- public calls ------------------------------------------------------------------------------

extern "C" int sansock_channel_create(sansock_context* ctx, const struct sansock_channel_attr* attr, sansock_channel** out) try {
    if (ctx == nullptr || out == nullptr) return -EINVAL;
    if (attr != nullptr && (attr->size < sizeof(sansock_channel_attr) ||
                            (attr->kind != SANSOCK_CHANNEL_SESSION && attr->kind != SANSOCK_CHANNEL_NONSESSION)))
        return -EINVAL;
    if (!has_progress_thread(ctx)) return -EINVAL;
    service_engine* e = nullptr;
    if (int rc = engine_acquire(ctx, &e)) return rc;
    try {
        sansock_channel* c = channel_new(*e, ctx, attr != nullptr ? static_cast<sansock_channel_kind>(attr->kind) : SANSOCK_CHANNEL_SESSION);
        if (attr != nullptr && attr->close_timeout_ms != 0) c->close_timeout_ms = attr->close_timeout_ms;
        if (attr != nullptr && attr->max_message != 0) c->max_message = attr->max_message;
        *out = c;
        return 0;
    } catch (const std::bad_alloc&) {
        engine_release(ctx);
        return -ENOMEM;
    }
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_channel_open(sansock_channel* c, const struct sockaddr* address, socklen_t length,
                                    const struct sansock_async_context* async) try {
    if (c == nullptr || (async != nullptr && async->callback == nullptr)) return -EINVAL;
    sansock::socket_address to{};
    if (int rc = take_address(address, length, &to)) return rc;
    lock_t lock(c->engine->mutex);
    if (c->state != SANSOCK_CHANNEL_CREATED) return -EBADFD;
    if (c->opener.joinable()) { // the previous async open's thread has finished its work
        std::thread old = std::move(c->opener);
        lock.unlock();
        old.join();
        lock.lock();
        if (c->state != SANSOCK_CHANNEL_CREATED) return -EBADFD;
    }
    sansock_socket_t s = 0;
    if (int rc = sansock_socket(c->ctx, &s)) return rc;
    fresh_session(*c);
    c->sock = s;
    c->state = SANSOCK_CHANNEL_OPENING;
    c->engine->changed.notify_all();
    if (async != nullptr) {
        begin(c->open_done, async);
        try {
            c->opener = std::thread(run_open, c, s, to);
        } catch (...) { // std::system_error: no thread; std::bad_alloc: no memory for its state
            const int rc = sansock::c_error();
            sansock_socket_t to_close = 0;
            complete_open(*c, rc, &to_close);
            finish_at_once(c->open_done, 0);
            lock.unlock();
            close_socket(to_close, true);
            return rc;
        }
        return -EINPROGRESS;
    }
    lock.unlock();
    const int rc = connect_abortable(*c, s, to);
    lock.lock();
    sansock_socket_t to_close = 0;
    const int result = complete_open(*c, rc, &to_close);
    lock.unlock();
    close_socket(to_close, true);
    return result;
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_channel_send(sansock_channel* c, const void* message, size_t length) try {
    if (c == nullptr || (message == nullptr && length > 0)) return -EINVAL;
    lock_t lock(c->engine->mutex);
    switch (c->state) {
    case SANSOCK_CHANNEL_OPEN: break;
    case SANSOCK_CHANNEL_FAULTED: return -ENOTRECOVERABLE;
    default: return -EBADFD;
    }
    if (c->shut_down) return -EBADFD;
    if (c->sending > 0) return -EBUSY;
    if (length > c->max_message) return -EMSGSIZE;
    ++c->sending;
    const sansock_socket_t s = c->sock;
    lock.unlock();
    uint8_t header[header_bytes];
    const uint32_t be = htonl(static_cast<uint32_t>(length));
    std::memcpy(header, &be, sizeof be);
    int rc = send_all(s, header, sizeof header);
    if (rc == 0) rc = send_all(s, static_cast<const uint8_t*>(message), length);
    lock.lock();
    --c->sending;
    rc = io_result(*c, rc);
    after_io(*c);
    return rc;
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_channel_receive(sansock_channel* c, void* buffer, size_t capacity, size_t* size) try {
    if (c == nullptr || size == nullptr || (buffer == nullptr && capacity > 0)) return -EINVAL;
    lock_t lock(c->engine->mutex);
    switch (c->state) {
    case SANSOCK_CHANNEL_OPEN: break;
    case SANSOCK_CHANNEL_FAULTED: return -ENOTRECOVERABLE;
    default: return -EBADFD;
    }
    if (c->eos_received) return SANSOCK_S_END;
    if (c->receiving > 0) return -EBUSY;
    ++c->receiving;
    const sansock_socket_t s = c->sock;
    const uint32_t max_message = c->max_message;
    lock.unlock();

    int rc = 0;
    bool end = false;
    uint8_t header[header_bytes];
    ssize_t r = recv_all(s, header, sizeof header);
    size_t length = 0;
    if (r == 0) {
        end = true;
    } else if (r < 0) {
        rc = static_cast<int>(r);
    } else if (r < static_cast<ssize_t>(sizeof header)) {
        rc = -EPROTO;
    } else {
        uint32_t be;
        std::memcpy(&be, header, sizeof be);
        length = ntohl(be);
        if (length > max_message) rc = -EPROTO;
    }
    if (rc == 0 && !end) {
        const size_t take = std::min(length, capacity);
        r = recv_all(s, static_cast<uint8_t*>(buffer), take);
        if (r < 0)
            rc = static_cast<int>(r);
        else if (static_cast<size_t>(r) < take)
            rc = -EPROTO;
        size_t left = length - take;
        uint8_t scratch[1024];
        while (rc == 0 && left > 0) { // too long for the buffer: consume the rest
            r = recv_all(s, scratch, std::min(left, sizeof scratch));
            if (r < 0)
                rc = static_cast<int>(r);
            else if (r == 0)
                rc = -EPROTO;
            else
                left -= static_cast<size_t>(r);
        }
        if (rc == 0 && length > capacity) rc = -EMSGSIZE;
        *size = length;
    }
    lock.lock();
    --c->receiving;
    if (c->cancelled) {
        rc = -ECANCELED; // woken by an abort or a hard close
    } else if (end) {
        c->eos_received = true;
        rc = SANSOCK_S_END;
    } else if (rc == -EMSGSIZE) {
        // the channel stays usable
    } else {
        rc = io_result(*c, rc);
    }
    after_io(*c);
    return rc;
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_channel_shutdown(sansock_channel* c, const struct sansock_async_context* async) try {
    if (c == nullptr || (async != nullptr && async->callback == nullptr)) return -EINVAL;
    lock_t lock(c->engine->mutex);
    switch (c->state) {
    case SANSOCK_CHANNEL_OPEN: break;
    case SANSOCK_CHANNEL_FAULTED: return -ENOTRECOVERABLE;
    default: return -EBADFD;
    }
    if (c->kind != SANSOCK_CHANNEL_SESSION || c->shut_down) return -EBADFD;
    c->shut_down = true;
    if (c->sending == 0) {
        int rc = sansock_shutdown(c->sock, SHUT_WR);
        if (rc < 0) rc = io_result(*c, rc);
        c->engine->changed.notify_all();
        return rc;
    }
    c->shutdown_waiting = true;
    begin(c->shutdown_done, async);
    return wait_or_async(*c->engine, c->shutdown_done, lock);
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_channel_close(sansock_channel* c, const struct sansock_async_context* async) try {
    if (c == nullptr || (async != nullptr && async->callback == nullptr)) return -EINVAL;
    lock_t lock(c->engine->mutex);
    switch (c->state) {
    case SANSOCK_CHANNEL_CREATED:
        c->state = SANSOCK_CHANNEL_CLOSED;
        c->engine->changed.notify_all();
        return 0;
    case SANSOCK_CHANNEL_CLOSED: return 0;
    case SANSOCK_CHANNEL_OPENING:
    case SANSOCK_CHANNEL_ACCEPTING:
    case SANSOCK_CHANNEL_CLOSING: return -EBADFD;
    case SANSOCK_CHANNEL_OPEN:
    case SANSOCK_CHANNEL_FAULTED: break;
    }
    begin(c->close_done, async);
    channel_start_close(*c, true, c->close_timeout_ms);
    return wait_or_async(*c->engine, c->close_done, lock);
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_channel_abort(sansock_channel* c) try {
    if (c == nullptr) return -EINVAL;
    lock_t lock(c->engine->mutex);
    channel_abort_locked(*c);
    return 0;
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_channel_reset(sansock_channel* c) try {
    if (c == nullptr) return -EINVAL;
    lock_t lock(c->engine->mutex);
    switch (c->state) {
    case SANSOCK_CHANNEL_CREATED: return 0;
    case SANSOCK_CHANNEL_CLOSED:
        c->engine->changed.wait(lock, [&] {
            return task_idle(c->close_job) && task_idle(c->abort_job) && c->io_outstanding == 0 && c->sending == 0 &&
                   c->receiving == 0;
        });
        fresh_session(*c);
        c->state = SANSOCK_CHANNEL_CREATED;
        c->engine->changed.notify_all();
        return 0;
    default: return -EBADFD;
    }
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_channel_free(sansock_channel* c) try {
    if (c == nullptr) return -EINVAL;
    lock_t lock(c->engine->mutex);
    if (c->host != nullptr) return -EPERM;
    if (c->state != SANSOCK_CHANNEL_CREATED && c->state != SANSOCK_CHANNEL_CLOSED) return -EBADFD;
    sansock_context* ctx = c->ctx;
    channel_delete(c, lock);
    lock.unlock();
    engine_release(ctx); // the engine may be gone from here on
    return 0;
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_channel_get_state(sansock_channel* c) try {
    if (c == nullptr) return -EINVAL;
    lock_t lock(c->engine->mutex);
    return static_cast<int>(c->state);
} catch (...) {
    return sansock::c_error();
}

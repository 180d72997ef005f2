// SPDX-License-Identifier: MIT
// The public socket calls of include/sansock/sansock.h.
#include <netinet/in.h>
#include <sys/time.h>

#include <cstddef>
#include <cstdio>
#include <cstring>
#include <memory_resource>

#include "switch/switch_internal.hpp"

using namespace sansock;
using namespace sansock::sw;

namespace {

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
std::optional<time_point> deadline_after(std::chrono::milliseconds timeout) {
    if (timeout.count() == 0) return std::nullopt;
    return std::chrono::steady_clock::now() + std::max(timeout, std::chrono::milliseconds(0));
}

// SO_RCVTIMEO / SO_SNDTIMEO set with a negative tv_sec: calls do not wait, as on Linux (which
// sets a time-out of 0 jiffies); read back as {0, 0}.
constexpr std::chrono::milliseconds no_wait{-1};
// Longer time-outs saturate to this (about 68 years), as Linux saturates to its longest.
constexpr int64_t max_timeout_seconds = INT32_MAX;

// The flags send and recv take; anything else is -EOPNOTSUPP. No signal is ever raised, so
// MSG_NOSIGNAL changes nothing; MSG_MORE is a hint the switch needs not (data goes out as the
// peer's credit allows, never held back).
constexpr int send_flags = MSG_NOSIGNAL | MSG_DONTWAIT | MSG_MORE;
constexpr int recv_flags = MSG_PEEK | MSG_WAITALL | MSG_DONTWAIT;

// A byte count the int64_t result of a callback (or ssize_t) can carry.
constexpr size_t max_count = static_cast<size_t>(INT64_MAX);

// Room in the context's callback queue for one more async operation's callback (-ENOMEM,
// thrown, before the operation is queued): its completion or its cancellation by a failure,
// close or destroy never needs memory.
void reserve_callback(context& ctx) { ctx.callbacks.reserve(ctx.callbacks.size() + ctx.async_pending + 1); }

// Copies up to `length` received bytes without consuming them (MSG_PEEK).
size_t peek_received(const stream_socket& s, uint8_t* out, size_t length) {
    size_t copied = 0;
    for (const received_block& block : s.received) {
        if (copied == length) break;
        const size_t n = std::min(length - copied, block.bytes.size() - block.begin);
        std::memcpy(out + copied, block.bytes.data() + block.begin, n);
        copied += n;
    }
    return copied;
}

int validate_address(const sockaddr* address, socklen_t length) {
    if (address == nullptr || length < static_cast<socklen_t>(sizeof(sa_family_t))) return -EINVAL;
    if (address->sa_family != AF_INET) return -EAFNOSUPPORT;
    if (length < static_cast<socklen_t>(sizeof(sockaddr_in))) return -EINVAL;
    return 0;
}

// The callbacks a close cancels, run by close itself. Room for its_room of them on the
// caller's stack, so that a close needs no memory (a service object's socket has one or two
// operations pending); more take the heap (reserved first: -ENOMEM changes nothing).
constexpr size_t its_room = 16;
struct cancel_room {
    alignas(ready_callback) std::byte bytes[its_room * sizeof(ready_callback)];
    std::pmr::monotonic_buffer_resource memory{bytes, sizeof bytes, std::pmr::new_delete_resource()};
};
class cancel_list : private cancel_room, public std::pmr::vector<ready_callback> {
public:
    cancel_list() : std::pmr::vector<ready_callback>(&memory) { reserve(its_room); }
    cancel_list(const cancel_list&) = delete;
    cancel_list& operator=(const cancel_list&) = delete;
};

// The user lets go of the handle: later use gives -ENOTSOCK; async operations complete
// -ECANCELED (their data is not sent); unread data is dropped. Their callbacks go to
// `cancelled`, which close runs itself: in the context's queue the progress thread could take
// them and close would return before they ran.
void release_handle(stream_socket& s, cancel_list& cancelled) {
    // What needs memory first, so that -ENOMEM (thrown) changes nothing: room for the
    // callbacks (none beyond cancel_list's own unless a socket has more than its_room
    // operations pending) and a copy of a partly sent async buffer (a graceful close only).
    size_t operations = s.async_recvs.size() + s.async_accepts.size();
    std::vector<uint8_t> rest;
    for (const send_chunk& chunk : s.send_queue)
        if (chunk.op) {
            ++operations;
            if (chunk.offset > 0 && s.state == socket_state::connected &&
                !(s.linger_option.l_onoff != 0 && s.linger_option.l_linger == 0))
                rest.assign(chunk.external, chunk.external + chunk.length);
        }
    cancelled.reserve(cancelled.size() + operations);
    s.ctx->async_pending -= operations; // their callbacks are close's now
    unregister_socket(s.handle);
    s.handle = 0;
    for (auto& op : s.async_recvs) cancelled.push_back({op.callback, op.user, -ECANCELED});
    s.async_recvs.clear();
    for (auto& op : s.async_accepts) cancelled.push_back({op.callback, op.user, -ECANCELED});
    s.async_accepts.clear();
    std::erase_if(s.send_queue, [&](send_chunk& chunk) {
        if (!chunk.op || chunk.offset > 0) return false; // a started chunk goes out whole
        cancelled.push_back({chunk.op->callback, chunk.op->user, -ECANCELED});
        s.send_queued -= chunk.length;
        return true;
    });
    for (send_chunk& chunk : s.send_queue)
        if (chunk.op) { // partly sent: keep our own copy of the rest, the user's buffer is theirs again
            cancelled.push_back({chunk.op->callback, chunk.op->user, -ECANCELED});
            chunk.copy.swap(rest); // empty when the close is hard: the queue is dropped
            chunk.external = nullptr;
            chunk.op.reset();
        }
    s.received.clear();
    s.received_bytes = 0;
}

} // namespace

extern "C" int sansock_socket(sansock_context* c, sansock_socket_t* out) try {
    if (c == nullptr || out == nullptr) return -EINVAL;
    auto& ctx = *reinterpret_cast<context*>(c);
    std::lock_guard lock(ctx.mutex);
    // What can fail for memory comes first (-ENOMEM with nothing made), among it the room for
    // the socket's hard close, so that closing it never needs memory.
    auto owned = std::make_unique<stream_socket>();
    ctx.provider_closes.reserve(ctx.sockets.size() + 1);
    provider::socket_handle ps = 0;
    if (int rc = ctx.ops.socket(ctx.instance, &ps)) return rc;
    owned->ctx = &ctx;
    owned->ps = ps;
    owned->window_bytes = ctx.attr.window_bytes;
    owned->send_buffer_limit = ctx.attr.window_bytes;
    owned->handle = owned->named = register_socket(owned.get());
    if (owned->handle == 0) {
        ctx.ops.close(ctx.instance, ps);
        return -EMFILE;
    }
    stream_socket* made = owned.get();
    try {
        ctx.by_provider_socket[ps] = made;
        ctx.sockets.emplace(made, std::move(owned));
    } catch (...) {
        ctx.by_provider_socket.erase(ps);
        unregister_socket(made->handle);
        ctx.ops.close(ctx.instance, ps); // a fresh socket: nothing to cancel, so with the lock held
        throw;
    }
    *out = made->handle;
    return 0;
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_bind(sansock_socket_t h, const struct sockaddr* address, socklen_t length) try {
    socket_call lock;
    stream_socket* s = lock_socket(h, lock);
    if (s == nullptr) return -ENOTSOCK;
    if (int rc = validate_address(address, length)) return rc;
    if (s->state != socket_state::created) return -EINVAL;
    if (int rc = s->ctx->ops.bind(s->ctx->instance, s->ps, address, length)) return rc;
    s->state = socket_state::bound;
    return 0;
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_listen(sansock_socket_t h, int backlog) try {
    socket_call lock;
    stream_socket* s = lock_socket(h, lock);
    if (s == nullptr) return -ENOTSOCK;
    if (s->state == socket_state::created) return -EDESTADDRREQ;
    if (s->state == socket_state::listening) return 0;
    if (s->state != socket_state::bound) return -EINVAL;
    s->backlog = backlog > 0 ? std::min(backlog, 4096) : 128;
    if (int rc = s->ctx->ops.listen(s->ctx->instance, s->ps, s->backlog)) return rc;
    s->state = socket_state::listening;
    return post_accept(*s);
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_accept(sansock_socket_t h, sansock_socket_t* out, struct sockaddr* peer, socklen_t* length) try {
    if (out == nullptr || (peer != nullptr && length == nullptr)) return -EINVAL;
    socket_call lock;
    stream_socket* s = lock_socket(h, lock);
    if (s == nullptr) return -ENOTSOCK;
    // A listener that failed keeps its failure; a failed connection never listened.
    if (s->state == socket_state::failed) return s->backlog > 0 ? s->failure : -EINVAL;
    if (s->state != socket_state::listening) return -EINVAL;
    context& ctx = *s->ctx;
    keep_alive alive(*s, lock);
    auto ready = [&] { return !s->ready.empty() || s->handle != h || s->state != socket_state::listening; };
    if (s->nonblocking) {
        if (!ready()) return -EWOULDBLOCK;
    } else if (!wait_until(ctx, lock, ready, deadline_after(s->recv_timeout))) {
        return -EWOULDBLOCK;
    }
    if (s->handle != h) return -ECANCELED; // closed by another thread while we waited
    if (s->state != socket_state::listening) return s->state == socket_state::failed ? s->failure : -EINVAL;
    stream_socket* accepted = s->ready.front();
    s->ready.pop_front();
    accepted->listener = nullptr;
    accepted->handle = accepted->named = register_socket(accepted);
    post_accept(*s);
    if (accepted->handle == 0) {
        hard_close(*accepted);
        lock.unlock();
        run_deferred(ctx);
        return -EMFILE;
    }
    note_accepted(*accepted);
    if (peer != nullptr) { // as accept(2): truncated to *length, which says the full size
        std::memcpy(peer, &accepted->peer_address, std::min<size_t>(*length, sizeof accepted->peer_address));
        *length = sizeof accepted->peer_address;
    }
    *out = accepted->handle;
    return 0;
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_connect(sansock_socket_t h, const struct sockaddr* address, socklen_t length) try {
    socket_call lock;
    stream_socket* s = lock_socket(h, lock);
    if (s == nullptr) return -ENOTSOCK;
    if (int rc = validate_address(address, length)) return rc;
    switch (s->state) {
    case socket_state::created:
    case socket_state::bound: break;
    case socket_state::connecting: return -EALREADY;
    case socket_state::connected: return -EISCONN;
    case socket_state::failed: return s->failure;
    default: return -EINVAL;
    }
    if (int rc = start_connect(*s, address, length)) return rc;
    s->state = socket_state::connecting;
    if (s->nonblocking || s->send_timeout == no_wait) return -EINPROGRESS; // no_wait: as Linux

    context& ctx = *s->ctx;
    keep_alive alive(*s, lock);
    // The provider bounds resolution and connection; this bounds the whole call regardless.
    const auto limit = std::chrono::milliseconds(s->send_timeout.count() > 0 ? s->send_timeout.count() : 60000);
    if (!wait_until(ctx, lock, [&] { return s->state != socket_state::connecting || s->handle != h; },
                    std::chrono::steady_clock::now() + limit)) {
        fail_socket(*s, -ETIMEDOUT);
        hard_close(*s);
        lock.unlock();
        run_deferred(ctx);
        return -ETIMEDOUT;
    }
    if (s->handle != h) return -ECANCELED;
    if (s->state == socket_state::connected) return 0;
    s->pending_error = 0;
    return s->failure;
} catch (...) {
    return sansock::c_error();
}

extern "C" ssize_t sansock_send(sansock_socket_t h, const void* buffer, size_t length, int flags) try {
    socket_call lock;
    stream_socket* s = lock_socket(h, lock);
    if (s == nullptr) return -ENOTSOCK;
    if (buffer == nullptr && length > 0) return -EINVAL;
    if ((flags & ~send_flags) != 0) return -EOPNOTSUPP;
    const bool dont_wait = s->nonblocking || (flags & MSG_DONTWAIT) != 0;
    wake_on_exit deferred{s->ctx, lock};
    if (s->state == socket_state::failed) return s->failure;
    if (s->state != socket_state::connected) return -ENOTCONN;
    if (s->shut_write) return -EPIPE;
    if (length == 0) return 0;
    context& ctx = *s->ctx;
    keep_alive alive(*s, lock);
    auto room = [&] {
        return s->handle != h || s->state != socket_state::connected || s->shut_write ||
               s->send_queued < s->send_buffer_limit;
    };
    if (!room()) {
        if (dont_wait) return -EWOULDBLOCK;
        if (!wait_until(ctx, lock, room, deadline_after(s->send_timeout), clock_kind::real, s)) return -EWOULDBLOCK;
    }
    if (s->handle != h) return -ECANCELED; // closed by another thread while we waited
    if (s->state == socket_state::failed) return s->failure;
    if (s->shut_write) return -EPIPE;
    const size_t n = std::min(length, s->send_buffer_limit - s->send_queued);
    // Frames are filled straight from the caller's buffer; only what cannot go now is copied,
    // because the buffer is the caller's again when send returns.
    const auto* bytes = static_cast<const uint8_t*>(buffer);
    send_chunk chunk;
    chunk.external = bytes;
    chunk.length = n;
    s->send_queue.push_back(std::move(chunk));
    s->send_queued += n;
    pump_send(*s);
    if (!s->send_queue.empty() && s->send_queue.back().external == bytes && !s->send_queue.back().op) {
        send_chunk& rest = s->send_queue.back();
        rest.copy.assign(bytes + rest.offset, bytes + rest.length);
        rest.length -= rest.offset;
        rest.offset = 0;
        rest.external = nullptr;
    }
    if (!s->send_queue.empty()) arm_notifications(*s); // progress pumps the rest as credit comes
    return static_cast<ssize_t>(n);
} catch (...) {
    return sansock::c_error();
}

extern "C" ssize_t sansock_recv(sansock_socket_t h, void* buffer, size_t length, int flags) try {
    socket_call lock;
    stream_socket* s = lock_socket(h, lock);
    if (s == nullptr) return -ENOTSOCK;
    if (buffer == nullptr && length > 0) return -EINVAL;
    if ((flags & ~recv_flags) != 0) return -EOPNOTSUPP;
    length = std::min(length, max_count); // the result must stay a count (Linux clamps too)
    wake_on_exit deferred{s->ctx, lock};
    if (s->state == socket_state::failed) return s->failure;
    if (s->state != socket_state::connected) return -ENOTCONN;
    if (s->shut_read || length == 0) return 0;
    context& ctx = *s->ctx;
    keep_alive alive(*s, lock);
    const bool wait_all = (flags & MSG_WAITALL) != 0;
    const bool peek = (flags & MSG_PEEK) != 0;
    const bool dont_wait = s->nonblocking || (flags & MSG_DONTWAIT) != 0;
    auto* out = static_cast<uint8_t*>(buffer);
    // One SO_RCVTIMEO for the whole call, however many waits MSG_WAITALL takes (as Linux).
    const std::optional<time_point> deadline = deadline_after(s->recv_timeout);
    size_t copied = 0; // consumed; a peek consumes nothing and copies once, at the end
    for (;;) {
        const bool ended = s->session.fin_received || s->shut_read;
        if (peek) {
            // Waits until enough is there (length bytes with MSG_WAITALL, else one) or the
            // stream ends, then copies it and leaves it to be read.
            if (s->received_bytes >= (wait_all ? length : 1) || ended)
                return static_cast<ssize_t>(peek_received(*s, out, length));
        } else {
            copied += take_received(*s, out + copied, length - copied);
            if (copied == length || (copied > 0 && !wait_all) || ended) return static_cast<ssize_t>(copied);
        }
        // What was copied is returned first; an error comes at the next call (as POSIX).
        const auto partial_or = [&](ssize_t code) { return copied > 0 ? static_cast<ssize_t>(copied) : code; };
        if (dont_wait) return partial_or(-EWOULDBLOCK);
        const size_t had = s->received_bytes;
        auto readable = [&] {
            return s->handle != h || s->received_bytes > had || s->session.fin_received || s->shut_read ||
                   s->state != socket_state::connected;
        };
        if (!wait_until(ctx, lock, readable, deadline, clock_kind::real, s)) return partial_or(-EWOULDBLOCK);
        if (s->handle != h) return partial_or(-ECANCELED);
        if (s->state == socket_state::failed) return partial_or(s->failure);
    }
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_shutdown(sansock_socket_t h, int how) try {
    socket_call lock;
    stream_socket* s = lock_socket(h, lock);
    if (s == nullptr) return -ENOTSOCK;
    if (how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR) return -EINVAL;
    wake_on_exit deferred{s->ctx, lock};
    if (s->state == socket_state::failed) return s->failure;
    if (s->state != socket_state::connected) return -ENOTCONN;
    if (how == SHUT_RD || how == SHUT_RDWR) {
        if (!s->shut_read) {
            s->shut_read = true;
            s->consumed_uncredited += static_cast<uint32_t>(s->received_bytes); // dropped unread
            s->received.clear();
            s->received_bytes = 0;
            deliver_async(*s);
        }
    }
    if (how == SHUT_WR || how == SHUT_RDWR) {
        s->shut_write = true;
        arm_notifications(*s); // the peer's FIN_ACK and FIN come to progress
        pump_send(*s); // FIN follows the queued data
    }
    return 0;
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_setsockopt(sansock_socket_t h, int level, int name, const void* value, socklen_t length) try {
    socket_call lock;
    stream_socket* s = lock_socket(h, lock);
    if (s == nullptr) return -ENOTSOCK;
    if (value == nullptr) return -EINVAL;
    if (int rc = set_keepalive_option(*s, level, name, value, length); rc != not_a_keepalive_option) return rc;
    if (level != SOL_SOCKET) return -ENOPROTOOPT;
    auto as_int = [&](int& out) {
        if (length < static_cast<socklen_t>(sizeof(int))) return -EINVAL;
        std::memcpy(&out, value, sizeof out);
        return 0;
    };
    auto as_timeout = [&](std::chrono::milliseconds& out) {
        if (length < static_cast<socklen_t>(sizeof(timeval))) return -EINVAL;
        timeval tv;
        std::memcpy(&tv, value, sizeof tv);
        if (tv.tv_usec < 0 || tv.tv_usec >= 1000000) return -EDOM; // as Linux
        if (tv.tv_sec < 0) {
            out = no_wait;
            return 0;
        }
        const int64_t seconds = std::min<int64_t>(tv.tv_sec, max_timeout_seconds); // saturates
        out = std::chrono::milliseconds(seconds * 1000 + (tv.tv_usec + 999) / 1000);
        return 0;
    };
    int v = 0;
    switch (name) {
    case SO_LINGER: {
        if (length < static_cast<socklen_t>(sizeof(linger))) return -EINVAL;
        linger l;
        std::memcpy(&l, value, sizeof l);
        if (l.l_linger < 0) return -EINVAL;
        s->linger_option = {l.l_onoff != 0 ? 1 : 0, l.l_linger};
        return 0;
    }
    case SO_DONTLINGER:
        if (int rc = as_int(v)) return rc;
        s->linger_option.l_onoff = v != 0 ? 0 : 1;
        return 0;
    case SANSOCK_SO_NONBLOCK:
        if (int rc = as_int(v)) return rc;
        s->nonblocking = v != 0;
        return 0;
    case SO_SNDBUF:
        if (int rc = as_int(v)) return rc;
        if (v <= 0) return -EINVAL;
        s->send_buffer_limit = static_cast<size_t>(v);
        s->ctx->changed.notify_all();
        return 0;
    case SO_RCVBUF:
        if (int rc = as_int(v)) return rc;
        if (v < static_cast<int>(session::min_window) || v > static_cast<int>(session::max_window)) return -EINVAL;
        if (s->state == socket_state::connected || s->state == socket_state::failed) return -EISCONN;
        s->window_bytes = static_cast<uint32_t>(v);
        return 0;
    case SO_RCVTIMEO: return as_timeout(s->recv_timeout);
    case SO_SNDTIMEO: return as_timeout(s->send_timeout);
    default: return -ENOPROTOOPT;
    }
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_getsockopt(sansock_socket_t h, int level, int name, void* value, socklen_t* length) try {
    socket_call lock;
    stream_socket* s = lock_socket(h, lock);
    if (s == nullptr) return -ENOTSOCK;
    if (value == nullptr || length == nullptr) return -EINVAL;
    if (int rc = get_keepalive_option(*s, level, name, value, length); rc != not_a_keepalive_option) return rc;
    if (level != SOL_SOCKET) return -ENOPROTOOPT;
    auto put = [&](const void* data, socklen_t size) {
        if (*length < size) return -EINVAL;
        std::memcpy(value, data, size);
        *length = size;
        return 0;
    };
    int v = 0;
    switch (name) {
    case SO_LINGER: {
        linger l{s->linger_option.l_onoff, s->linger_option.l_linger};
        return put(&l, sizeof l);
    }
    case SO_DONTLINGER: v = s->linger_option.l_onoff == 0; return put(&v, sizeof v);
    case SANSOCK_SO_NONBLOCK: v = s->nonblocking; return put(&v, sizeof v);
    case SO_SNDBUF: v = static_cast<int>(s->send_buffer_limit); return put(&v, sizeof v);
    case SO_RCVBUF: v = static_cast<int>(s->window_bytes); return put(&v, sizeof v);
    case SO_TYPE: v = SOCK_STREAM; return put(&v, sizeof v);
    case SO_ERROR:
        v = -s->pending_error;
        s->pending_error = 0;
        return put(&v, sizeof v);
    case SO_RCVTIMEO:
    case SO_SNDTIMEO: {
        const auto ms = std::max<int64_t>((name == SO_RCVTIMEO ? s->recv_timeout : s->send_timeout).count(), 0);
        timeval tv{static_cast<time_t>(ms / 1000), static_cast<suseconds_t>((ms % 1000) * 1000)};
        return put(&tv, sizeof tv);
    }
    default: return -ENOPROTOOPT;
    }
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_getsockname(sansock_socket_t h, struct sockaddr* address, socklen_t* length) try {
    socket_call lock;
    stream_socket* s = lock_socket(h, lock);
    if (s == nullptr) return -ENOTSOCK;
    if (s->ps == 0) return s->failure != 0 ? s->failure : -ENOTCONN;
    return s->ctx->ops.getsockname(s->ctx->instance, s->ps, address, length);
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_getpeername(sansock_socket_t h, struct sockaddr* address, socklen_t* length) try {
    socket_call lock;
    stream_socket* s = lock_socket(h, lock);
    if (s == nullptr) return -ENOTSOCK;
    if (s->state != socket_state::connected || s->ps == 0) return s->failure != 0 ? s->failure : -ENOTCONN;
    return s->ctx->ops.getpeername(s->ctx->instance, s->ps, address, length);
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_close(sansock_socket_t h) try {
    socket_call lock;
    stream_socket* s = lock_socket(h, lock);
    if (s == nullptr) return -ENOTSOCK;
    context& ctx = *s->ctx;
    keep_alive alive(*s, lock); // a linger wait releases the lock; freed, if at all, on return
    cancel_list cancelled;
    int result = 0;
    const bool connected = s->state == socket_state::connected;
    const bool lingering = s->linger_option.l_onoff != 0;
    // Counted once the handle is released (every path that reaches the end of close).
    uint64_t& closes = !lingering                        ? ctx.stats.closes_dontlinger
                       : s->linger_option.l_linger == 0 ? ctx.stats.closes_abortive
                                                        : ctx.stats.closes_linger;
    const auto all_sent = [&] { return s->send_queued == 0 && s->unacknowledged == 0; };
    if (!connected) {
        release_handle(*s, cancelled); // created, bound, listening, connecting or failed: nothing graceful to do
        hard_close(*s);
        // SO_LINGER {1, n} promises the data arrived: a connection that failed with data unsent
        // or unacknowledged gives its failure (docs/semantics.md, section 2).
        if (lingering && s->linger_option.l_linger > 0 && s->data_lost) result = s->failure;
    } else if (lingering && s->linger_option.l_linger == 0) {
        release_handle(*s, cancelled); // LINGER 0: reset, unsent data lost
        report_reset(*s, true, SANSOCK_RESET_ABORTIVE_CLOSE, "SO_LINGER {1, 0}");
        s->send_queue.clear();
        s->send_queued = 0;
        hard_close(*s);
    } else {
        if (lingering) {
            if (s->nonblocking && !all_sent() && !s->shut_write) return -EWOULDBLOCK; // nothing starts
            if (!s->nonblocking) {
                const int seconds = s->linger_option.l_linger;
                const auto deadline = ctx.now() + std::chrono::seconds(seconds);
                const bool sent = wait_until(
                    ctx, lock, [&] { return all_sent() || s->state != socket_state::connected || s->handle != h; },
                    deadline, clock_kind::context, s);
                if (s->handle != h) return -ECANCELED; // closed by another thread meanwhile
                if (!sent) {
                    release_handle(*s, cancelled);
                    char detail[64];
                    std::snprintf(detail, sizeof detail, "data unacknowledged after %d s", seconds);
                    report_reset(*s, true, SANSOCK_RESET_LINGER_TIMEOUT, detail);
                    fail_socket(*s, -ETIMEDOUT);
                    hard_close(*s);
                    result = -ETIMEDOUT;
                } else if (s->state == socket_state::failed && s->data_lost) {
                    // Reset, device gone or peer dead while close waited: 0 would say that every
                    // byte was acknowledged. The handle is released all the same.
                    release_handle(*s, cancelled);
                    hard_close(*s);
                    result = s->failure;
                }
            }
        }
        if (result == 0) {
            release_handle(*s, cancelled);
            if (s->state != socket_state::connected) {
                hard_close(*s);
            } else {
                // Graceful, in the background: queued data, then FIN; done when the peer's FIN
                // has come too, hard after the graceful time-out.
                s->closing = true;
                s->shut_write = true;
                arm_notifications(*s); // the rest of the disconnect runs in progress
                s->graceful_deadline = ctx.now() + std::chrono::milliseconds(ctx.attr.graceful_timeout_ms);
                pump_send(*s);
                finish_graceful_if_done(*s);
            }
        }
    }
    ++closes;
    alive.release(); // may free the socket
    lock.unlock();
    run_deferred(ctx); // the provider close (its cancelled operations complete inside it)
    run_callbacks(ctx, cancelled); // before close returns
    return result;
} catch (...) {
    return sansock::c_error();
}

namespace {
short readiness(const stream_socket& s) {
    short events = 0;
    switch (s.state) {
    case socket_state::listening:
        if (!s.ready.empty()) events |= SANSOCK_POLLIN;
        break;
    case socket_state::connected:
        if (s.received_bytes > 0 || s.session.fin_received || s.shut_read) events |= SANSOCK_POLLIN;
        if (!s.shut_write && s.send_queued < s.send_buffer_limit) events |= SANSOCK_POLLOUT;
        if (s.session.fin_received && s.shut_write) events |= SANSOCK_POLLHUP;
        break;
    case socket_state::failed:
        events |= SANSOCK_POLLERR | SANSOCK_POLLHUP | SANSOCK_POLLIN;
        break;
    default: break;
    }
    if (s.pending_error != 0) events |= SANSOCK_POLLERR;
    return events;
}
} // namespace

extern "C" int sansock_poll(struct sansock_pollfd* fds, size_t count, int timeout_ms) try {
    if (fds == nullptr || count == 0) return -EINVAL;
    socket_call lock;
    stream_socket* first = nullptr;
    for (size_t i = 0; i < count && first == nullptr; ++i) first = lock_socket(fds[i].socket, lock);
    if (first == nullptr) {
        for (size_t i = 0; i < count; ++i) fds[i].revents = SANSOCK_POLLNVAL;
        return static_cast<int>(count);
    }
    context& ctx = *first->ctx;
    int ready_count = 0;
    auto scan = [&] {
        ready_count = 0;
        for (size_t i = 0; i < count; ++i) {
            stream_socket* s = find_registered(fds[i].socket);
            if (s != nullptr && s->ctx != &ctx) return false;
            const short mask = fds[i].events | SANSOCK_POLLERR | SANSOCK_POLLHUP | SANSOCK_POLLNVAL;
            fds[i].revents = s == nullptr ? SANSOCK_POLLNVAL : static_cast<short>(readiness(*s) & mask);
            if (fds[i].revents != 0) ++ready_count;
        }
        return ready_count > 0;
    };
    for (size_t i = 0; i < count; ++i) {
        stream_socket* s = find_registered(fds[i].socket);
        if (s != nullptr && s->ctx != &ctx) return -EINVAL;
    }
    for (size_t i = 0; i < count; ++i)
        if (stream_socket* s = find_registered(fds[i].socket)) arm_notifications(*s); // poll sleeps on progress
    std::optional<time_point> deadline;
    if (timeout_ms >= 0) deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    wait_until(ctx, lock, scan, deadline);
    return ready_count;
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_send_async(sansock_socket_t h, const void* buffer, size_t length, sansock_callback callback, void* user) try {
    socket_call lock;
    stream_socket* s = lock_socket(h, lock);
    if (s == nullptr) return -ENOTSOCK;
    if (buffer == nullptr || length == 0 || length > max_count || callback == nullptr) return -EINVAL;
    wake_on_exit deferred{s->ctx, lock};
    if (s->state == socket_state::failed) return s->failure;
    if (s->state != socket_state::connected) return -ENOTCONN;
    if (s->shut_write) return -EPIPE;
    reserve_callback(*s->ctx);
    send_chunk chunk;
    chunk.external = static_cast<const uint8_t*>(buffer);
    chunk.length = length;
    chunk.op = user_operation{user_operation::kind::send, nullptr, length, callback, user};
    s->send_queue.push_back(std::move(chunk));
    ++s->ctx->async_pending;
    s->send_queued += length;
    arm_notifications(*s);
    pump_send(*s);
    return 0;
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_recv_async(sansock_socket_t h, void* buffer, size_t length, sansock_callback callback, void* user) try {
    socket_call lock;
    stream_socket* s = lock_socket(h, lock);
    if (s == nullptr) return -ENOTSOCK;
    if (buffer == nullptr || length == 0 || length > max_count || callback == nullptr) return -EINVAL;
    wake_on_exit deferred{s->ctx, lock};
    if (s->state == socket_state::failed) return s->failure;
    if (s->state != socket_state::connected) return -ENOTCONN;
    reserve_callback(*s->ctx);
    s->async_recvs.push_back(
        user_operation{user_operation::kind::recv, static_cast<uint8_t*>(buffer), length, callback, user});
    ++s->ctx->async_pending;
    arm_notifications(*s);
    deliver_async(*s);
    return 0;
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_accept_async(sansock_socket_t h, sansock_callback callback, void* user) try {
    socket_call lock;
    stream_socket* s = lock_socket(h, lock);
    if (s == nullptr) return -ENOTSOCK;
    if (callback == nullptr) return -EINVAL;
    wake_on_exit deferred{s->ctx, lock};
    if (s->state == socket_state::failed) return s->backlog > 0 ? s->failure : -EINVAL; // as sansock_accept
    if (s->state != socket_state::listening) return -EINVAL;
    reserve_callback(*s->ctx);
    s->async_accepts.push_back(user_operation{user_operation::kind::accept, nullptr, 0, callback, user});
    ++s->ctx->async_pending;
    deliver_async(*s);
    return 0;
} catch (...) {
    return sansock::c_error();
}

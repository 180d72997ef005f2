// SPDX-License-Identifier: MIT
// The public data calls: send and recv, their flags, and their async forms.
#include <netinet/in.h>

#include <cstring>

#include "switch/api_internal.hpp"

using namespace sansock;
using namespace sansock::sw;
using namespace sansock::sw::api;

namespace {

// The flags send and recv take; anything else is -EOPNOTSUPP. No signal is ever raised, so
// MSG_NOSIGNAL changes nothing; MSG_MORE is a hint the switch needs not (data goes out as the
// peer's credit allows, never held back).
constexpr int send_flags = MSG_NOSIGNAL | MSG_DONTWAIT | MSG_MORE;
constexpr int recv_flags = MSG_PEEK | MSG_WAITALL | MSG_DONTWAIT;

// Room in the context's callback queue for one more async operation's callback (-ENOMEM,
// thrown, before the operation is queued): its completion or its cancellation by a failure,
// close or destroy never needs memory.
void reserve_callback(context& ctx) { ctx.callbacks.reserve(ctx.callbacks.size() + ctx.async_pending + 1); }

// What sansock_send_async and sansock_recv_async check before they queue: the handle's socket
// (locked into `lock`, set in `out`), the arguments, a connected socket (for a send, not shut for
// writing), then the room for the callback (reserve_callback). 0, or the call's error.
int async_data_call(sansock_socket_t h, socket_call& lock, const void* buffer, size_t length, sansock_callback callback,
                    bool sending, stream_socket*& out) {
    stream_socket* s = lock_socket(h, lock);
    if (s == nullptr) return -ENOTSOCK;
    if (buffer == nullptr || length == 0 || length > max_count || callback == nullptr) return -EINVAL;
    if (s->state == socket_state::failed) return s->failure;
    if (s->state != socket_state::connected) return -ENOTCONN;
    if (sending && s->shut_write) return -EPIPE;
    reserve_callback(*s->ctx);
    out = s;
    return 0;
}

// Copies up to `length` received bytes without consuming them (MSG_PEEK).
size_t peek_received(const stream_socket& s, uint8_t* out, size_t length) {
    if (s.ctx->messages) return peek_held(s, out, length);
    size_t copied = 0;
    for (const received_block& block : s.received) {
        if (copied == length) break;
        const size_t n = std::min(length - copied, block.bytes.size() - block.begin);
        std::memcpy(out + copied, block.bytes.data() + block.begin, n);
        copied += n;
    }
    return copied;
}

} // namespace

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

extern "C" int sansock_send_async(sansock_socket_t h, const void* buffer, size_t length, sansock_callback callback, void* user) try {
    socket_call lock;
    stream_socket* s = nullptr;
    if (const int rc = async_data_call(h, lock, buffer, length, callback, true, s)) return rc;
    wake_on_exit deferred{s->ctx, lock};
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
    stream_socket* s = nullptr;
    if (const int rc = async_data_call(h, lock, buffer, length, callback, false, s)) return rc;
    wake_on_exit deferred{s->ctx, lock};
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

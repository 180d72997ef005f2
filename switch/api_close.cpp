// SPDX-License-Identifier: MIT
// The public close and shutdown calls: graceful, lingering and abortive close.
#include <netinet/in.h>

#include <cstddef>
#include <cstdio>
#include <memory_resource>

#include "switch/api_internal.hpp"

using namespace sansock;
using namespace sansock::sw;
using namespace sansock::sw::api;

namespace {

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
    s.fd.close(); // with the handle (pollers of it wake with POLLHUP)
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
    drop_received(s);
}

} // namespace

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
            s->consumed_uncredited += static_cast<uint32_t>(s->received_bytes); // dropped unread (version 2)
            drop_received(*s); // version 3: its receive buffers go back to the peer
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

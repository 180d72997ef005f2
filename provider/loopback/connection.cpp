// SPDX-License-Identifier: MIT
// Loopback socket and connection state and the data path: completions, up-calls, the
// receive window, resets and the hard close.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>

#include "provider/loopback/loopback_internal.hpp"

namespace sansock::loopback::detail {

void signal(loop_instance* inst) {
    const uint64_t one = 1;
    // An eventfd write only fails when the counter would overflow, and then it is readable.
    [[maybe_unused]] ssize_t n = ::write(inst->event_fd, &one, sizeof one);
}

// A user-visible socket of `inst` (arrived-but-unaccepted ones are not), or nullptr.
lsock* find(loop_instance* inst, socket_handle s) {
    lsock* sock = inst->table.find(s);
    return sock != nullptr && sock->accepted ? sock : nullptr;
}

// Queues op's completion for progress (or holds it for delay_completions).
void complete(lsock* s, operation* op, int64_t result) {
    op->result = result;
    op->provider_word = s->handle;
    if (s->holding) {
        s->held.push(op);
        return;
    }
    s->owner->done.push(op);
    signal(s->owner);
}

// Never allocates: the room was made with the socket (event_queue).
void post_event(lsock* s, connection_event event, int status) noexcept {
    if (!s->owner->events.push({s->handle, event, status})) return;
    signal(s->owner);
}

void release_held(lsock* s) {
    s->holding = false;
    s->hold_countdown = 0;
    auto& list = s->owner->holding;
    list.erase(std::remove(list.begin(), list.end(), s), list.end());
    if (s->held.empty()) return;
    s->owner->done.splice(s->held);
    signal(s->owner);
}

static void ring_write(lsock* s, const uint8_t* data, size_t n) {
    size_t tail = (s->ring_head + s->ring_count) % s->ring_capacity;
    const size_t first = std::min(n, s->ring_capacity - tail);
    std::memcpy(s->ring.get() + tail, data, first);
    std::memcpy(s->ring.get(), data + first, n - first);
    s->ring_count += n;
}

static void ring_read(lsock* s, uint8_t* data, size_t n) {
    const size_t first = std::min(n, s->ring_capacity - s->ring_head);
    std::memcpy(data, s->ring.get() + s->ring_head, first);
    std::memcpy(data + first, s->ring.get(), n - first);
    s->ring_head = (s->ring_head + n) % s->ring_capacity;
    s->ring_count -= n;
}

// Message mode: each pending send of `from` is copied whole into the peer's oldest receive,
// region to region. What an adapter would refuse resets the connection at both ends: a message
// with no receive posted (verbs' rnr_retry 0), or one longer than the receive (that receive
// completes -EMSGSIZE).
static void move_messages(lsock* from, lsock* to) {
    while (!from->sends.empty()) {
        operation* recv = to->recvs.head;
        operation* send = from->sends.head;
        if (recv == nullptr || recv->length < send->length) {
            if (recv != nullptr) complete(to, to->recvs.pop(), -EMSGSIZE);
            from->peer = nullptr;
            to->peer = nullptr;
            reset_socket(to, connection_event::peer_reset, -ECONNRESET);
            reset_socket(from, connection_event::peer_reset, -ECONNRESET);
            return;
        }
        // Both regions are busy while their operations are pending: still registered.
        const lregion* source = from->owner->regions.find(send->memory);
        lregion* target = to->owner->regions.find(recv->memory);
        std::memcpy(target->address + recv->memory_offset, source->address + send->memory_offset, send->length);
        from->sends.pop();
        to->recvs.pop();
        complete(to, recv, int64_t(send->length));
        complete(from, send, int64_t(send->length));
    }
}

// Moves bytes from `from`'s pending sends into its peer's window and from there into the
// peer's pending receives, until neither can advance.
void move_bytes(lsock* from) {
    lsock* to = from->peer;
    if (to == nullptr || from->frozen || to->frozen) return;
    if (from->owner->settings.messages) {
        move_messages(from, to);
        return;
    }
    for (;;) {
        bool moved = false;
        while (!from->sends.empty() && to->ring_count < to->ring_capacity) {
            operation* op = from->sends.head;
            const size_t done = op->provider_word;
            const size_t n = std::min(op->length - done, to->ring_capacity - to->ring_count);
            ring_write(to, static_cast<const uint8_t*>(op->buffer) + done, n);
            op->provider_word += n;
            moved = true;
            if (op->provider_word == op->length) {
                from->sends.pop();
                complete(from, op, int64_t(op->length));
            }
        }
        while (!to->recvs.empty() && to->ring_count > 0) {
            operation* op = to->recvs.head;
            const size_t done = op->provider_word;
            const size_t n = std::min(op->length - done, to->ring_count);
            ring_read(to, static_cast<uint8_t*>(op->buffer) + done, n);
            op->provider_word += n;
            moved = true;
            if ((op->flags & provider::op_wait_all) == 0 || op->provider_word == op->length) {
                to->recvs.pop();
                complete(to, op, int64_t(op->provider_word));
            }
        }
        if (!moved) return;
    }
}

void complete_all(lsock* s, op_queue& q, int64_t result) {
    while (operation* op = q.pop()) complete(s, op, result);
}

void drop_window(lsock* s) {
    s->ring.reset();
    s->ring_capacity = s->ring_head = s->ring_count = 0;
}

// The connection is gone: pending I/O fails with `status`, later I/O with -ECONNRESET.
void reset_socket(lsock* s, connection_event event, int status) {
    s->state = sock_state::reset;
    s->failure = status;
    s->peer = nullptr;
    drop_window(s); // unread data is discarded, like a TCP RST
    complete_all(s, s->sends, status);
    complete_all(s, s->recvs, status);
    complete_all(s, s->rdmas, status);
    if (s->accepted) post_event(s, event, status);
}

void reset_peer(lsock* s) {
    if (s->peer == nullptr) return;
    lsock* peer = s->peer;
    s->peer = nullptr;
    peer->peer = nullptr;
    reset_socket(peer, connection_event::peer_reset, -ECONNRESET);
}

// Frees a socket that is in the handle table (arrived or user-visible) after detaching it.
void free_socket(lsock* s) {
    s->owner->events.drop(s->handle);
    s->owner->table.remove(s->handle);
    delete s;
}

// Cancels the arrivals a listener never accepted: their clients see a reset.
static void reset_arrivals(lsock* listener) {
    while (!listener->arrived.empty()) {
        lsock* a = listener->arrived.front();
        listener->arrived.pop_front();
        reset_peer(a);
        free_socket(a);
    }
}

// Blocks until progress on another thread is no longer delivering for `s`.
static void wait_not_delivering(loop_instance* inst, socket_handle s, std::unique_lock<std::mutex>& lock) {
    const auto me = std::this_thread::get_id();
    inst->delivered.wait(lock, [&] { return inst->delivering != s || inst->progress_thread == me; });
}

// The hard close under the fabric lock: everything for `s` goes to `out` (pending ops with
// -ECANCELED, queued completions unchanged), the peer is reset, the handle released.
void close_locked(lsock* s, op_queue& out, std::unique_lock<std::mutex>& lock) {
    loop_instance* inst = s->owner;
    const socket_handle h = s->handle;
    for (op_queue* q : {&s->sends, &s->recvs, &s->accepts, &s->rdmas}) {
        while (operation* op = q->pop()) {
            op->result = -ECANCELED;
            out.push(op);
        }
    }
    inst->done.extract(h, out);
    out.splice(s->held);
    if (s->holding) release_held(s);
    reset_peer(s);
    reset_arrivals(s);
    release_port(s);
    free_socket(s); // its queued up-calls go with it
    wait_not_delivering(inst, h, lock);
}

// Runs completion routines with no lock held. Returns how many ran.
int run_completions(op_queue& q) {
    int n = 0;
    while (operation* op = q.pop()) {
        op->complete(*op); // the op may be freed by its routine: nothing after this
        ++n;
    }
    return n;
}

} // namespace sansock::loopback::detail

// SPDX-License-Identifier: MIT
// A connection's data path on session protocol version 3 (docs/protocol.md, part 2): its
// registered control buffers, the messages sent from them as credits allow, the messages
// received into them, and the credits granted back as the user reads. Every function here runs
// with the context's mutex held, except on_message_done, which takes it.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include "switch/message_session.hpp"
#include "switch/stream_internal.hpp"

namespace sansock::sw {

namespace {

void on_message_done(provider::operation& op) noexcept;

// The peer broke the protocol: this connection alone is reset.
void protocol_violation(stream_socket& s, const char* reason) {
    report_reset(s, true, SANSOCK_RESET_PROTOCOL_ERROR, reason);
    fail_socket(s, -ECONNRESET);
    hard_close(s);
}

// The provider refused a request of a live connection: it is lost.
void request_refused(stream_socket& s, int rc) {
    report_reset(s, false, received_reason(rc));
    fail_socket(s, rc == -ENETDOWN ? rc : -ECONNRESET);
    hard_close(s);
}

// What a failed request means for the connection: the device went away, or it was reset
// (whatever the provider's own code, as -EMSGSIZE: a stream socket fails only so).
int lost_with(int64_t result) { return result == -ENETDOWN ? -ENETDOWN : -ECONNRESET; }

bool live(const stream_socket& s) {
    return s.ps != 0 && (s.state == socket_state::connected || s.state == socket_state::connecting);
}

// Posts receive buffer `slot`; a receive the peer has not been granted yet (owed).
bool post_receive(stream_socket& s, message_session& m, uint32_t slot) {
    message_op& op = m.ops[slot];
    op.kind = provider::operation_kind::recv;
    op.length = m.buffer_size;
    if (int rc = s.ctx->ops.recv(s.ctx->instance, s.ps, &op)) {
        on_reset(s, rc == -ENETDOWN ? rc : -ECONNRESET); // after both FINs, a graceful end
        return false;
    }
    ++s.requests_in_flight;
    ++m.owed;
    return true;
}

// A receive buffer that is free again goes back to the provider (not on a connection that
// is ending: nothing more is taken from it).
void repost(stream_socket& s, message_session& m, uint32_t slot) {
    if (live(s)) post_receive(s, m, slot);
}

// Whether a message of `type` may go now (docs/protocol.md 2.3): a send buffer (DATA leaves
// one for control messages), a credit (DATA: more than the control reserve), and never the
// last credit without credits to grant with it, so that the peer can always answer. The
// accepting side's HELLO goes first, into the receive its peer keeps for it.
bool can_send(const message_session& m, session::message_type type, bool accepting) {
    if (m.free_sends.empty()) return false;
    if (type == session::message_type::hello && accepting) return true;
    if (!m.hello_sent && type != session::message_type::hello) return false;
    const uint32_t credits = m.credit.credits;
    if (credits == 0 || (credits == 1 && m.owed == 0)) return false;
    if (type == session::message_type::data)
        return credits > msg::control_reserve && m.data_in_flight + 1 < m.send_buffers;
    return true;
}

// Sends a message of `type` from a free send buffer; DATA takes up to `payload` bytes of the
// send queue. False when the provider refused it (the connection is then lost).
bool post_message(stream_socket& s, message_session& m, session::message_type type, uint32_t value, size_t payload,
                  bool exempt) {
    const uint32_t slot = m.free_sends.back();
    m.free_sends.pop_back();
    uint8_t* out = m.buffer(slot);
    msg::header h;
    h.type = type;
    h.credits = static_cast<uint16_t>(std::min<uint32_t>(m.owed, UINT16_MAX));
    h.value = value;
    h.length = static_cast<uint32_t>(payload);
    size_t filled = 0;
    while (filled < payload) { // as many queued chunks as fit
        send_chunk& chunk = s.send_queue.front();
        const size_t take = std::min(payload - filled, chunk.length - chunk.offset);
        std::memcpy(out + msg::header_size + filled, chunk.data() + chunk.offset, take);
        filled += take;
        chunk.offset += take;
        if (chunk.offset == chunk.length) {
            if (chunk.op) queue_callback(s, chunk.op->callback, chunk.op->user, static_cast<int64_t>(chunk.length));
            s.send_queue.pop_front();
        }
    }
    msg::encode(h, out);
    m.owed -= h.credits;
    m.credit.peer_may_send += h.credits;
    if (!exempt) --m.credit.credits;
    message_op& op = m.ops[slot];
    op.kind = provider::operation_kind::send;
    op.length = msg::header_size + payload;
    op.data_bytes = static_cast<uint32_t>(payload);
    if (payload > 0) {
        s.send_queued -= payload;
        s.unacknowledged += payload;
        ++m.data_in_flight;
    }
    if (int rc = s.ctx->ops.send(s.ctx->instance, s.ps, &op)) {
        m.free_sends.push_back(slot);
        if (payload > 0) {
            s.unacknowledged -= payload;
            --m.data_in_flight;
            s.data_lost = true;
        }
        request_refused(s, rc);
        return false;
    }
    ++s.requests_in_flight;
    if (payload > 0) s.ctx->stats.bytes_sent += payload;
    return true;
}

// The control message of the first pending bit that may go now, sent; false when none could.
bool send_pending_control(stream_socket& s, message_session& m, bool accepting) {
    struct choice {
        uint32_t bit;
        session::message_type type;
        uint32_t value;
    };
    static constexpr choice order[] = {
        {pending_hello, session::message_type::hello, 0},
        {pending_fin_ack, session::message_type::fin_ack, 0},
        {pending_reply, session::message_type::keepalive, msg::keepalive_reply},
        {pending_probe, session::message_type::keepalive, msg::keepalive_probe},
    };
    for (const choice& c : order) {
        if ((m.pending & c.bit) == 0 || !can_send(m, c.type, accepting)) continue;
        const bool exempt = c.type == session::message_type::hello && accepting;
        const uint32_t value = c.type == session::message_type::hello ? m.buffer_size : c.value;
        m.pending &= ~c.bit;
        if (!post_message(s, m, c.type, value, 0, exempt)) return false;
        if (c.type == session::message_type::hello) m.hello_sent = true;
        return true;
    }
    return false;
}

void send_all(stream_socket& s, message_session& m) {
    const bool accepting = m.accepting;
    for (;;) {
        if (!live(s) || s.state != socket_state::connected) return;
        if (send_pending_control(s, m, accepting)) continue;
        if (!m.hello_sent || !s.session.hello_received) return;
        if (!s.send_queue.empty() && can_send(m, session::message_type::data, accepting)) {
            const size_t room = std::min(m.buffer_size, m.peer_buffer_size) - msg::header_size;
            if (!post_message(s, m, session::message_type::data, 0, std::min(s.send_queued, room), false)) return;
            continue;
        }
        if (s.shut_write && s.send_queue.empty() && !s.session.fin_sent && can_send(m, session::message_type::fin, accepting)) {
            if (!post_message(s, m, session::message_type::fin, 0, 0, false)) return;
            s.session.fin_sent = true;
            continue;
        }
        // Credits go back on their own once half the receives are owed, or at once when the
        // peer is down to its control reserve (it could not send DATA otherwise).
        const bool peer_low = m.credit.peer_may_send <= msg::control_reserve;
        if (m.owed > 0 && (m.owed >= std::max(1u, m.recv_buffers / 2) || peer_low) &&
            can_send(m, session::message_type::credit, accepting)) {
            if (!post_message(s, m, session::message_type::credit, 0, 0, false)) return;
            continue;
        }
        return;
    }
}

void take_message(stream_socket& s, message_session& m, uint32_t slot, size_t length) {
    const uint8_t* in = m.buffer(slot);
    const msg::header h = msg::decode(in);
    char problem[160];
    if (!msg::validate(h, length, s.session, m.credit, problem, sizeof problem)) {
        protocol_violation(s, problem);
        return;
    }
    --m.credit.peer_may_send;
    m.credit.credits += h.credits;
    switch (h.type) {
    case session::message_type::hello:
        s.session.hello_received = true;
        m.credit.peer_buffers = h.credits;
        m.peer_buffer_size = h.value;
        if (!m.accepting) m.pending |= pending_hello; // the connecting side answers
        repost(s, m, slot);
        break;
    case session::message_type::data:
        if (s.closing) {
            protocol_violation(s, "data arrived after the socket was closed");
            return;
        }
        s.ctx->stats.bytes_received += h.length;
        if (s.shut_read) { // discarded, but the buffer goes back
            repost(s, m, slot);
            break;
        }
        m.held[(m.held_head + m.held_count++) % m.recv_buffers] = {slot, uint32_t(msg::header_size),
                                                                   uint32_t(msg::header_size + h.length)};
        s.received_bytes += h.length;
        deliver_async(s);
        break;
    case session::message_type::credit: repost(s, m, slot); break;
    case session::message_type::fin:
        s.session.fin_received = true;
        // Everything before it is in our buffers: the FIN_ACK says so (2.5).
        m.pending |= pending_fin_ack;
        repost(s, m, slot);
        deliver_async(s);
        send_all(s, m); // the FIN_ACK goes before a closed socket's hard close below
        finish_graceful_if_done(s);
        break;
    case session::message_type::fin_ack:
        s.session.fin_ack_received = true;
        repost(s, m, slot);
        finish_graceful_if_done(s);
        break;
    case session::message_type::keepalive:
        if (h.value == msg::keepalive_probe) {
            m.pending |= pending_reply;
        } else {
            --s.session.probes_outstanding;
            ++s.probe_replies;
        }
        repost(s, m, slot);
        break;
    }
}

void on_message_done(provider::operation& done) noexcept {
    auto& op = static_cast<message_op&>(done);
    stream_socket& s = *op.owner;
    context& ctx = *s.ctx;
    std::lock_guard lock(ctx.mutex);
    --s.requests_in_flight;
    message_session& m = *s.messages;
    try {
        if (op.kind == provider::operation_kind::send) {
            m.free_sends.push_back(op.slot); // within its capacity
            if (op.data_bytes > 0) {
                --m.data_in_flight;
                s.unacknowledged -= op.data_bytes;
            }
            if (op.result < 0) {
                if (op.data_bytes > 0) s.data_lost = true;
                if (op.result != -ECANCELED) on_reset(s, lost_with(op.result));
            } else {
                finish_graceful_if_done(s);
                pump_messages(s);
            }
        } else if (op.result == -EMSGSIZE) {
            // The peer sent more than the buffer size its HELLO told it of (the provider has
            // reset the connection at both ends).
            if (s.state != socket_state::failed) protocol_violation(s, "a message longer than the receive buffers");
        } else if (op.result <= 0) {
            if (op.result != -ECANCELED) on_reset(s, lost_with(op.result));
        } else {
            s.heard_from = ctx.now(); // the peer lives (keepalive)
            s.probes_unanswered = 0;
            take_message(s, m, op.slot, static_cast<size_t>(op.result));
            pump_messages(s);
        }
    } catch (const std::bad_alloc&) {
        log_message(ctx, SANSOCK_LOG_ERROR, "out of memory in a completion: the connection it was for is lost");
        fail_socket(s, -ENOMEM);
        hard_close(s);
    }
    // A failed or closed connection whose requests have all completed needs its pool no more.
    if ((s.state == socket_state::failed || s.ps == 0) && s.requests_in_flight == 0) s.messages.reset();
    socket_changed(s);
    maybe_free(s);
}

} // namespace

int open_message_session(stream_socket& s, bool accepting) {
    context& ctx = *s.ctx;
    auto m = std::make_unique<message_session>();
    m->ctx = &ctx;
    m->accepting = accepting;
    m->buffer_size = ctx.attr.slot_size;
    m->send_buffers = send_buffers_for(ctx.attr.send_slots);
    m->recv_buffers = recv_buffers_for(ctx.attr.recv_slots);
    const uint32_t total = m->send_buffers + m->recv_buffers;
    m->memory_bytes = (size_t(total) * m->buffer_size + 4095) / 4096 * 4096;
    m->ops.reset(new (std::nothrow) message_op[total]);
    m->held.reset(new (std::nothrow) held_buffer[m->recv_buffers]);
    if (!m->ops || !m->held) return -ENOMEM;
    m->free_sends.reserve(m->send_buffers);
    // Room for its retirement: every live pool and every retired one may be retired at once.
    ctx.retired_regions.reserve(ctx.message_sessions + ctx.retired_regions.size() + 1);
    // A pool a closed connection left registered, else a new one.
    if (!take_idle_pool(ctx, m->memory_bytes, &m->region, &m->memory)) {
        m->memory = static_cast<uint8_t*>(std::aligned_alloc(4096, m->memory_bytes));
        if (m->memory == nullptr) return -ENOMEM;
        if (int rc = ctx.ops.register_memory(ctx.instance, m->memory, m->memory_bytes, provider::memory_local, &m->region))
            return rc;
    }
    ++ctx.message_sessions;
    for (uint32_t slot = 0; slot < total; ++slot) {
        message_op& op = m->ops[slot];
        op.owner = &s;
        op.slot = slot;
        op.complete = on_message_done;
        op.memory = m->region;
        op.memory_offset = uint64_t(slot) * m->buffer_size;
    }
    for (uint32_t slot = m->send_buffers; slot-- > 0;) m->free_sends.push_back(slot);
    // The connecting side keeps one receive for the accepting side's HELLO, which comes with no
    // credit; the rest, and that one once reposted, its own HELLO grants.
    m->credit.peer_may_send = accepting ? 0 : 1;
    message_session& session = *m;
    s.messages = std::move(m);
    for (uint32_t slot = session.send_buffers; slot < total; ++slot) {
        message_op& op = session.ops[slot];
        op.kind = provider::operation_kind::recv;
        op.length = session.buffer_size;
        if (int rc = ctx.ops.recv(ctx.instance, s.ps, &op)) return rc; // those posted are cancelled at close
        ++s.requests_in_flight;
        ++session.owed;
    }
    if (!accepting) session.owed -= 1;
    return 0;
}

void start_message_session(stream_socket& s) {
    if (s.messages->accepting) s.messages->pending |= pending_hello;
    pump_messages(s);
}

void pump_messages(stream_socket& s) {
    if (s.messages) send_all(s, *s.messages);
    socket_changed(s);
}

int queue_control_message(stream_socket& s, session::message_type type, uint32_t value) {
    if (s.ps == 0 || !s.messages) return -ENOTCONN;
    message_session& m = *s.messages;
    // Only the keepalive timer asks from outside; every other message is the data path's own.
    if (type != session::message_type::keepalive) return -EINVAL;
    m.pending |= value == msg::keepalive_probe ? pending_probe : pending_reply;
    pump_messages(s);
    return 0;
}

size_t take_held(stream_socket& s, uint8_t* out, size_t length) {
    if (!s.messages) return 0; // released with its connection
    message_session& m = *s.messages;
    size_t copied = 0;
    while (copied < length && m.held_count > 0) {
        held_buffer& front = m.held_front();
        const size_t n = std::min<size_t>(length - copied, front.end - front.begin);
        std::memcpy(out + copied, m.buffer(front.slot) + front.begin, n);
        copied += n;
        front.begin += static_cast<uint32_t>(n);
        if (front.begin == front.end) {
            const uint32_t slot = front.slot;
            m.held_head = (m.held_head + 1) % m.recv_buffers;
            --m.held_count;
            repost(s, m, slot);
        }
    }
    s.received_bytes -= copied;
    pump_messages(s); // credits back, if owed enough
    return copied;
}

size_t peek_held(const stream_socket& s, uint8_t* out, size_t length) {
    if (!s.messages) return 0;
    const message_session& m = *s.messages;
    size_t copied = 0;
    for (uint32_t i = 0; i < m.held_count && copied < length; ++i) {
        const held_buffer& block = m.held[(m.held_head + i) % m.recv_buffers];
        const size_t n = std::min<size_t>(length - copied, block.end - block.begin);
        std::memcpy(out + copied, m.buffer(block.slot) + block.begin, n);
        copied += n;
    }
    return copied;
}

void drop_held(stream_socket& s) {
    s.received_bytes = 0;
    if (!s.messages) return;
    message_session& m = *s.messages;
    while (m.held_count > 0) {
        const uint32_t slot = m.held_front().slot;
        m.held_head = (m.held_head + 1) % m.recv_buffers;
        --m.held_count;
        if (s.state != socket_state::failed) repost(s, m, slot);
    }
}

// The pool is kept for the next connection or deregistered by the next progress
// (release_pools), not here: this runs on the closing call's path, and ibv_dereg_mr
// of a pool cost about 2 ms there on rxe (a hard close took 2.3 ms against 0.28 ms on version
// 2). A cancelled receive may also still be on the device (memory_idle 0, deregister_memory
// -EBUSY) until its flush is reaped.
message_session::~message_session() {
    if (region != provider::invalid_memory && ctx->instance != nullptr) {
        retire_pool(*ctx, region, memory, memory_bytes);
        memory = nullptr;
    }
    if (region != provider::invalid_memory) --ctx->message_sessions;
    std::free(memory);
}

} // namespace sansock::sw

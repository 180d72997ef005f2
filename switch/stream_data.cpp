// SPDX-License-Identifier: MIT
// A stream socket's data path: DATA frames sent as the peer's credit allows, received frames
// parsed into the receive buffers, taken by the user (credit returned), async deliveries.
// Every function here runs with the context's mutex held.
#include <cstring>
#include <new>

#include "switch/stream_internal.hpp"

namespace sansock::sw {

namespace {

// The peer broke the protocol: this connection alone is reset.
void protocol_violation(stream_socket& s, const char* reason) {
    report_reset(s, true, SANSOCK_RESET_PROTOCOL_ERROR, reason);
    fail_socket(s, -ECONNRESET);
    hard_close(s);
}

void return_credit(stream_socket& s) {
    // Return the window in quarters, so the sender never stalls on a full window.
    if (s.consumed_uncredited == 0 || s.consumed_uncredited < s.session.our_window / 4) return;
    if (s.state != socket_state::connected || s.ps == 0) return;
    if (send_control(s, session::message_type::credit, s.consumed_uncredited) == 0) {
        s.session.window_left += s.consumed_uncredited;
        s.consumed_uncredited = 0;
    }
}

// What a connection holds for received data is bounded by its window plus a constant
// (receive_memory_slack, docs/protocol.md 2.2), whatever the sizes of the peer's frames: a
// full frame that arrives alone in the staging buffer is kept in it without a copy (the
// buffer is 32 bytes larger than such a frame at most), and everything else is copied into
// compact blocks, each filled to the end before the next is begun. A full frame is kept in
// place only when no compact block is still being filled, so that every compact block but
// the last is full. With one spare of each, the buffers hold at most: the staging buffer, a
// spare staging buffer, a spare compact block, the consumed part of the first block (at most
// a staging buffer), the unfilled part of the last (less than a compact block), 32 bytes per
// full frame kept (at most 1,025 in the largest window), and the window itself.
constexpr size_t staging_size = session::header_size + session::max_data_payload;
constexpr size_t full_frame = session::max_data_payload - session::header_size; // what a switch sends
constexpr size_t compact_block_size = 16 * 1024;
static_assert(3 * staging_size + 2 * compact_block_size +
                  (staging_size - full_frame) * (session::max_window / full_frame + 1) <=
              receive_memory_slack);

std::vector<uint8_t> take_spare_staging(stream_socket& s) {
    if (s.spare_staging.capacity() == 0) return std::vector<uint8_t>(staging_size);
    std::vector<uint8_t> spare = std::move(s.spare_staging);
    s.spare_staging = {};
    spare.resize(staging_size);
    return spare;
}

// The last received block is a compact one with room left.
bool compact_block_open(const stream_socket& s) {
    return !s.received.empty() && s.received.back().compact && s.received.back().bytes.size() < compact_block_size;
}

// Copies received payload to the end of the compact blocks.
void append_received(stream_socket& s, const uint8_t* payload, size_t length) {
    while (length > 0) {
        if (!compact_block_open(s)) {
            received_block block;
            block.compact = true;
            if (s.spare_compact.capacity() != 0) {
                block.bytes = std::move(s.spare_compact);
                s.spare_compact = {};
                block.bytes.clear();
            } else {
                block.bytes.reserve(compact_block_size);
            }
            s.received.push_back(std::move(block));
        }
        std::vector<uint8_t>& tail = s.received.back().bytes;
        const size_t n = std::min(length, compact_block_size - tail.size());
        tail.insert(tail.end(), payload, payload + n);
        payload += n;
        length -= n;
    }
}

} // namespace

void reset_staging(stream_socket& s) {
    s.staging.assign(staging_size, 0);
    s.staged = 0;
}

void parse_frames(stream_socket& s) {
    size_t pos = 0;
    while (s.staged - pos >= session::header_size) {
        const session::header h = session::decode(s.staging.data() + pos);
        char problem[128];
        if (!session::validate(h, s.session, problem, sizeof problem)) {
            protocol_violation(s, problem);
            return;
        }
        const size_t total = session::header_size + h.length;
        if (s.staged - pos < total) break; // the rest of the payload is still coming
        const uint8_t* payload = s.staging.data() + pos + session::header_size;
        switch (h.type) {
        case session::message_type::hello:
            s.session.hello_received = true;
            s.session.peer_window = h.value;
            s.session.peer_credit = h.value;
            pump_send(s);
            break;
        case session::message_type::data:
            s.session.window_left -= h.length;
            if (s.closing) {
                protocol_violation(s, "data arrived after the socket was closed");
                return;
            }
            s.ctx->stats.bytes_received += h.length;
            if (s.shut_read) {
                s.consumed_uncredited += h.length; // discarded, but the window comes back
                return_credit(s);
            } else {
                s.received_bytes += h.length;
                if (pos == 0 && total == s.staged && h.length >= full_frame && !compact_block_open(s)) {
                    // The staging buffer holds just this full frame: it becomes the received
                    // block (no copy) and a spare takes its place for the next receive.
                    received_block block{std::move(s.staging), session::header_size, false};
                    block.bytes.resize(total);
                    s.received.push_back(std::move(block));
                    s.staging = take_spare_staging(s);
                    s.staged = 0;
                    deliver_async(s);
                    return; // nothing else was staged
                }
                append_received(s, payload, h.length);
                deliver_async(s);
            }
            break;
        case session::message_type::credit:
            s.session.peer_credit += h.value;
            pump_send(s);
            break;
        case session::message_type::fin:
            s.session.fin_received = true;
            // Everything the peer sent before its FIN is in our buffer now: say so, so that
            // it may close hard without anything of its being lost.
            send_control(s, session::message_type::fin_ack, 0);
            deliver_async(s);
            finish_graceful_if_done(s);
            break;
        case session::message_type::fin_ack:
            s.session.fin_ack_received = true;
            finish_graceful_if_done(s);
            break;
        case session::message_type::keepalive:
            if (h.value == session::keepalive_probe) {
                // Answered at once, in every state after HELLO (also once the socket is closed
                // and its disconnect runs in the background): the peer asks whether we live.
                send_control(s, session::message_type::keepalive, session::keepalive_reply);
            } else {
                --s.session.probes_outstanding; // (receiving it already counts as life)
                ++s.probe_replies;
            }
            break;
        }
        if (s.state == socket_state::failed) return;
        pos += total;
    }
    if (pos > 0) {
        std::memmove(s.staging.data(), s.staging.data() + pos, s.staged - pos);
        s.staged -= pos;
    }
}

namespace {

// DATA frames from the send queue as long as the peer's credit allows: false when the
// provider refused one and the connection failed.
bool send_frames(stream_socket& s) {
    while (!s.send_queue.empty() && s.session.peer_credit > 0) {
        // Whole frames of 64 KiB (header included) split into whole provider slots; a full
        // 64 KiB payload would cost one more message for its last 16 bytes.
        const size_t n = std::min<size_t>({s.send_queued, s.session.peer_credit, session::max_data_payload - session::header_size});
        provider_request* r = new_request(s, provider::operation_kind::send);
        if (r == nullptr) break; // no memory now: the data stays queued (a closing socket ends at its time-out)
        try {
            r->bytes.resize(session::header_size + n);
        } catch (const std::bad_alloc&) {
            delete r;
            break;
        }
        session::header h;
        h.type = session::message_type::data;
        h.length = static_cast<uint32_t>(n);
        session::encode(h, r->bytes.data());
        // Fill the message from as many queued chunks as it takes.
        size_t filled = 0;
        while (filled < n) {
            send_chunk& chunk = s.send_queue.front();
            const size_t take = std::min(n - filled, chunk.length - chunk.offset);
            std::memcpy(r->bytes.data() + session::header_size + filled, chunk.data() + chunk.offset, take);
            filled += take;
            chunk.offset += take;
            if (chunk.offset == chunk.length) {
                if (chunk.op) queue_callback(s, chunk.op->callback, chunk.op->user, static_cast<int64_t>(chunk.length));
                s.send_queue.pop_front();
            }
        }
        r->buffer = r->bytes.data();
        r->length = r->bytes.size();
        r->data_bytes = static_cast<uint32_t>(n);
        s.send_queued -= n;
        s.session.peer_credit -= n;
        s.unacknowledged += n;
        if (int rc = send_request(s, r)) {
            s.unacknowledged -= n;
            s.data_lost = true;
            report_reset(s, false, received_reason(rc));
            fail_socket(s, rc == -ENETDOWN ? rc : -ECONNRESET);
            hard_close(s);
            return false;
        }
        s.ctx->stats.bytes_sent += n;
    }
    return true;
}

} // namespace

void pump_send(stream_socket& s) {
    if (s.ctx->messages) {
        pump_messages(s);
        return;
    }
    // What the caller queued or shut is published also when nothing can go yet (before HELLO).
    if (s.state == socket_state::connected && s.ps != 0 && s.session.hello_received && send_frames(s) &&
        s.shut_write && s.send_queue.empty() && !s.session.fin_sent) {
        if (send_control(s, session::message_type::fin, 0) == 0) s.session.fin_sent = true;
    }
    socket_changed(s);
}

size_t readable_bytes(const stream_socket& s) { return s.received_bytes; }

size_t take_received(stream_socket& s, uint8_t* out, size_t length) {
    if (s.ctx->messages) {
        const size_t taken = take_held(s, out, length);
        socket_changed(s);
        return taken;
    }
    size_t copied = 0;
    while (copied < length && !s.received.empty()) {
        received_block& front = s.received.front();
        const size_t n = std::min(length - copied, front.bytes.size() - front.begin);
        std::memcpy(out + copied, front.bytes.data() + front.begin, n);
        copied += n;
        front.begin += n;
        if (front.begin == front.bytes.size()) {
            std::vector<uint8_t>& spare = front.compact ? s.spare_compact : s.spare_staging;
            if (spare.capacity() == 0) spare = std::move(front.bytes); // reused
            s.received.pop_front();
        }
    }
    s.received_bytes -= copied;
    s.consumed_uncredited += static_cast<uint32_t>(copied);
    return_credit(s);
    socket_changed(s);
    return copied;
}

void drop_received(stream_socket& s) {
    if (s.ctx->messages) {
        drop_held(s);
        return;
    }
    s.received.clear();
    s.received_bytes = 0;
}

void deliver_async(stream_socket& s) {
    while (!s.async_accepts.empty() && !s.ready.empty()) {
        stream_socket& accepted = take_ready(s);
        if (accepted.handle != 0) note_accepted(accepted);
        const user_operation op = s.async_accepts.front();
        s.async_accepts.pop_front();
        queue_callback(s, op.callback, op.user, accepted.handle != 0 ? static_cast<int64_t>(accepted.handle) : -EMFILE);
        post_accept(s);
    }
    while (!s.async_recvs.empty()) {
        const user_operation& op = s.async_recvs.front();
        int64_t result;
        if (s.received_bytes > 0) result = static_cast<int64_t>(take_received(s, op.recv_buffer, op.length));
        else if (s.state == socket_state::failed) result = s.failure;
        else if (s.session.fin_received || s.shut_read) result = 0;
        else break;
        queue_callback(s, op.callback, op.user, result);
        s.async_recvs.pop_front();
    }
    socket_changed(s);
}

} // namespace sansock::sw

// SPDX-License-Identifier: MIT
// Stream sockets over a provider: the session protocol, flow control, graceful disconnect.
// Every function here runs with the context's mutex held.
#include <cstdio>
#include <cstring>
#include <new>

#include "switch/switch_internal.hpp"

namespace sansock::sw {

namespace {

void on_request_done(provider::operation& op) noexcept;

// nullptr when no memory is left (callers give up what they meant to send or receive, and
// never throw: they run inside completion routines and closes).
provider_request* new_request(stream_socket& s, provider::operation_kind kind) {
    auto* r = new (std::nothrow) provider_request;
    if (r == nullptr) return nullptr;
    r->kind = kind;
    r->owner = &s;
    r->complete = on_request_done;
    return r;
}

// Submits `r` through `submit`; on refusal frees it and returns the error.
template <typename Submit>
int submit(stream_socket& s, provider_request* r, Submit&& call) {
    int rc = call(s.ctx->ops, s.ctx->instance, s.ps, r);
    if (rc != 0) {
        delete r;
        return rc;
    }
    ++s.requests_in_flight;
    return 0;
}

int send_request(stream_socket& s, provider_request* r) {
    return submit(s, r, [](const provider::ops& ops, provider::instance* i, provider::socket_handle ps,
                           provider::operation* op) { return ops.send(i, ps, op); });
}

// A user operation's callback: room for it was reserved when it started (async_pending).
void queue_callback(stream_socket& s, sansock_callback callback, void* user, int64_t result) {
    s.ctx->callbacks.push_back({callback, user, result});
    --s.ctx->async_pending;
}

} // namespace

int send_control(stream_socket& s, session::message_type type, uint32_t value) {
    if (s.ps == 0) return -ENOTCONN;
    provider_request* r = new_request(s, provider::operation_kind::send);
    if (r == nullptr) return -ENOMEM;
    try {
        r->bytes.resize(session::header_size);
    } catch (const std::bad_alloc&) {
        delete r;
        return -ENOMEM;
    }
    session::header h;
    h.type = type;
    h.value = value;
    session::encode(h, r->bytes.data());
    r->buffer = r->bytes.data();
    r->length = r->bytes.size();
    return send_request(s, r);
}

namespace {


void post_recv(stream_socket& s) {
    if (s.ps == 0 || s.state != socket_state::connected || s.recv_request != nullptr || s.ctx->stopping) return;
    provider_request* r = new_request(s, provider::operation_kind::recv);
    if (r == nullptr) { // no memory left: nothing more can arrive, the connection is lost
        on_reset(s, -ENOMEM);
        return;
    }
    r->buffer = s.staging.data() + s.staged;
    r->length = s.staging.size() - s.staged;
    s.recv_request = r;
    int rc = submit(s, r, [](const provider::ops& ops, provider::instance* i, provider::socket_handle ps,
                             provider::operation* op) { return ops.recv(i, ps, op); });
    if (rc != 0) {
        s.recv_request = nullptr;
        on_reset(s, rc == -ENETDOWN ? rc : -ECONNRESET); // after both FINs, a graceful end
    }
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

// The peer broke the protocol: this connection alone is reset.
void protocol_violation(stream_socket& s, const char* reason) {
    report_reset(s, true, SANSOCK_RESET_PROTOCOL_ERROR, reason);
    fail_socket(s, -ECONNRESET);
    hard_close(s);
}

// A background graceful close ended without a reset (both FINs exchanged).
void graceful_done(stream_socket& s) {
    s.finished = true;
    ++s.ctx->stats.graceful_completed;
    if (log_enabled(*s.ctx, SANSOCK_LOG_DEBUG)) {
        char connection[connection_text_size];
        describe_connection(s, connection, sizeof connection);
        log_message(*s.ctx, SANSOCK_LOG_DEBUG, "connection %s: closed gracefully", connection);
    }
}

// What a failure the provider reports (a refused request, a failed completion, an up-call)
// means: the device went away, or the connection was reset.
sansock_reset_reason received_reason(int code) {
    return code == -ENETDOWN ? SANSOCK_RESET_NETWORK_DOWN : SANSOCK_RESET_PEER;
}

} // namespace

// The peer's provider socket closed, or the connection was lost.
void on_reset(stream_socket& s, int code) {
    if (s.session.fin_received && s.session.fin_sent) {
        // Both directions had ended: this is the peer's close after a graceful disconnect, not
        // an abort. What was received stays readable (then end of stream).
        if (s.closing && !s.finished) graceful_done(s);
    } else {
        report_reset(s, false, received_reason(code));
        fail_socket(s, code);
    }
    // The provider socket is dead: closed now if the user has let go, else at the user's close.
    if (s.handle == 0) hard_close(s);
}

namespace {

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

void on_connected(stream_socket& s, provider_request& r) {
    s.connect_request = nullptr;
    if (s.state != socket_state::connecting) return;
    if (r.result == 0 && s.ps != 0) {
        s.state = socket_state::connected;
        ++s.ctx->stats.connections_opened;
        start_connection(s);
        if (log_enabled(*s.ctx, SANSOCK_LOG_DEBUG)) {
            char connection[connection_text_size];
            describe_connection(s, connection, sizeof connection);
            log_message(*s.ctx, SANSOCK_LOG_DEBUG, "connection %s: connected", connection);
        }
        return;
    }
    const int code = r.result < 0 ? static_cast<int>(r.result) : -ECONNREFUSED;
    s.state = socket_state::failed;
    s.failure = code;
    s.pending_error = code;
}

void on_accepted(stream_socket& listener, provider_request& r) {
    listener.accept_request = nullptr;
    context& ctx = *listener.ctx;
    if (r.result < 0) {
        if (r.result != -ECANCELED && listener.state == socket_state::listening) {
            listener.state = socket_state::failed;
            listener.failure = static_cast<int>(r.result);
            cancel_user_operations(listener, listener.failure);
        }
        return;
    }
    auto owned = std::make_unique<stream_socket>();
    ctx.provider_closes.reserve(ctx.sockets.size() + 1); // room for its hard close
    stream_socket& s = *owned;
    s.ctx = &ctx;
    s.ps = r.accepted;
    s.state = socket_state::connected;
    s.window_bytes = listener.window_bytes;
    s.send_buffer_limit = listener.send_buffer_limit;
    s.linger_option = listener.linger_option;
    s.family = listener.family;
    s.v6only = listener.v6only;
    s.keepalive = listener.keepalive; // as Linux: a listener's keepalive options pass on
    s.keepalive_idle_s = listener.keepalive_idle_s;
    s.keepalive_interval_s = listener.keepalive_interval_s;
    s.keepalive_count = listener.keepalive_count;
    ctx.by_provider_socket[s.ps] = &s;
    ctx.sockets.emplace(&s, std::move(owned));
    start_connection(s);
    if (listener.handle == 0 || listener.state != socket_state::listening) {
        report_reset(s, true, SANSOCK_RESET_ABORTIVE_CLOSE, "its listener was closed before it was accepted");
        hard_close(s); // the listener was closed meanwhile: its client sees a reset
        maybe_free(s);
        return;
    }
    s.listener = &listener;
    listener.ready.push_back(&s);
    deliver_async(listener);
    post_accept(listener);
}

void on_sent(stream_socket& s, provider_request& r) {
    s.unacknowledged -= r.data_bytes;
    if (r.result < 0) {
        if (r.data_bytes > 0) s.data_lost = true;
        if (r.result != -ECANCELED) on_reset(s, static_cast<int>(r.result));
        return;
    }
    finish_graceful_if_done(s);
}

void on_received(stream_socket& s, provider_request& r) {
    s.recv_request = nullptr;
    if (r.result <= 0) {
        if (r.result != -ECANCELED) on_reset(s, r.result < 0 ? static_cast<int>(r.result) : -ECONNRESET);
        return;
    }
    s.staged += static_cast<size_t>(r.result);
    s.heard_from = s.ctx->now(); // any bytes from the peer: it lives (keepalive)
    s.probes_unanswered = 0;
    parse_frames(s);
    post_recv(s);
}

// Out of memory in a completion routine or an up-call (noexcept: an exception would end the
// process). Closes and failures never get here (their room is reserved); what does (an
// arrival, received data with nowhere to go) is said, and an accepted connection that could
// not be taken is closed (it is reset): queued when there is room, else closed here (it has
// no operation, so its close completes nothing under our lock).
void out_of_memory(context& ctx, const provider_request* r) noexcept {
    log_message(ctx, SANSOCK_LOG_ERROR, "out of memory in a completion: the connection it was for is lost");
    if (r == nullptr || r->kind != provider::operation_kind::accept || r->result != 0 ||
        r->accepted == provider::invalid_socket)
        return;
    if (auto found = ctx.by_provider_socket.find(r->accepted); found != ctx.by_provider_socket.end()) {
        if (ctx.sockets.count(found->second) != 0) { // made, not set up: it fails and is closed
            stream_socket& made = *found->second;
            fail_socket(made, -ENOMEM);
            hard_close(made);
            maybe_free(made);
            return;
        }
        ctx.by_provider_socket.erase(found); // freed as it was being made
    }
    if (ctx.provider_closes.size() < ctx.provider_closes.capacity())
        ctx.provider_closes.push_back(r->accepted);
    else
        ctx.ops.close(ctx.instance, r->accepted);
}

void on_request_done(provider::operation& op) noexcept {
    std::unique_ptr<provider_request> r(static_cast<provider_request*>(&op));
    stream_socket& s = *r->owner;
    context& ctx = *s.ctx;
    std::lock_guard lock(ctx.mutex);
    --s.requests_in_flight;
    try {
        switch (r->kind) {
        case provider::operation_kind::connect: on_connected(s, *r); break;
        case provider::operation_kind::accept: on_accepted(s, *r); break;
        case provider::operation_kind::send: on_sent(s, *r); break;
        case provider::operation_kind::recv: on_received(s, *r); break;
        }
    } catch (const std::bad_alloc&) {
        out_of_memory(ctx, r.get());
        // Whatever the completion left half done (a receive not posted again, a connection not
        // set up), the connection cannot go on: it fails and is closed (neither allocates).
        if (r->kind != provider::operation_kind::accept) {
            fail_socket(s, -ENOMEM);
            hard_close(s);
        }
    }
    refresh_fd(s);
    ctx.changed.notify_all();
    maybe_free(s);
}

} // namespace

void on_provider_event(void* c, provider::socket_handle ps, provider::connection_event, int status) noexcept {
    auto& ctx = *static_cast<context*>(c);
    std::lock_guard lock(ctx.mutex);
    auto found = ctx.by_provider_socket.find(ps);
    if (found == ctx.by_provider_socket.end()) return;
    stream_socket& s = *found->second;
    try {
        on_reset(s, status < 0 ? status : -ECONNRESET);
    } catch (const std::bad_alloc&) {
        out_of_memory(ctx, nullptr);
    }
    refresh_fd(s);
    ctx.changed.notify_all();
    maybe_free(s);
}

void start_connection(stream_socket& s) {
    const uint32_t window = s.window_bytes != 0 ? s.window_bytes : s.ctx->attr.window_bytes;
    s.session = {};
    s.session.our_window = window;
    s.session.window_left = window;
    if (s.send_buffer_limit == 0) s.send_buffer_limit = window;
    s.staging.assign(staging_size, 0);
    s.staged = 0;
    s.heard_from = s.ctx->now();
    s.probes_unanswered = 0;
    socklen_t length = sizeof s.local_address;
    s.ctx->ops.getsockname(s.ctx->instance, s.ps, &s.local_address.sa, &length);
    length = sizeof s.peer_address;
    s.ctx->ops.getpeername(s.ctx->instance, s.ps, &s.peer_address.sa, &length);
    s.local_address = address::to_family(s.local_address, s.family);
    s.peer_address = address::to_family(s.peer_address, s.family);
    if (int rc = send_control(s, session::message_type::hello, window)) {
        report_reset(s, false, received_reason(rc));
        fail_socket(s, -ECONNRESET);
        hard_close(s);
        return;
    }
    post_recv(s);
}

int post_accept(stream_socket& s) {
    if (s.state != socket_state::listening || s.ps == 0 || s.accept_request != nullptr || s.ctx->stopping) return 0;
    if (s.ready.size() >= static_cast<size_t>(s.backlog)) return 0; // resumes when the user accepts
    provider_request* r = new_request(s, provider::operation_kind::accept);
    s.accept_request = r;
    int rc = submit(s, r, [](const provider::ops& ops, provider::instance* i, provider::socket_handle ps,
                             provider::operation* op) { return ops.accept(i, ps, op); });
    if (rc != 0) s.accept_request = nullptr;
    return rc;
}

int start_connect(stream_socket& s, const sockaddr* address, socklen_t length) {
    provider_request* r = new_request(s, provider::operation_kind::connect);
    std::memcpy(&r->address, address, std::min<size_t>(length, sizeof r->address));
    r->address_length = length;
    s.connect_request = r;
    int rc = submit(s, r, [](const provider::ops& ops, provider::instance* i, provider::socket_handle ps,
                             provider::operation* op) { return ops.connect(i, ps, op); });
    if (rc != 0) s.connect_request = nullptr;
    return rc;
}

void pump_send(stream_socket& s) {
    if (s.state != socket_state::connected || s.ps == 0 || !s.session.hello_received) return;
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
            return;
        }
        s.ctx->stats.bytes_sent += n;
    }
    if (s.shut_write && s.send_queue.empty() && !s.session.fin_sent) {
        if (send_control(s, session::message_type::fin, 0) == 0) s.session.fin_sent = true;
    }
    s.ctx->changed.notify_all();
}

size_t readable_bytes(const stream_socket& s) { return s.received_bytes; }

size_t take_received(stream_socket& s, uint8_t* out, size_t length) {
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
    return copied;
}

void deliver_async(stream_socket& s) {
    context& ctx = *s.ctx;
    while (!s.async_accepts.empty() && !s.ready.empty()) {
        stream_socket* accepted = s.ready.front();
        s.ready.pop_front();
        accepted->listener = nullptr;
        accepted->handle = accepted->named = register_socket(accepted);
        if (accepted->handle != 0) note_accepted(*accepted);
        const user_operation op = s.async_accepts.front();
        s.async_accepts.pop_front();
        queue_callback(s, op.callback, op.user, accepted->handle != 0 ? static_cast<int64_t>(accepted->handle) : -EMFILE);
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
    ctx.changed.notify_all();
}

void fail_socket(stream_socket& s, int code) {
    if (s.state == socket_state::failed) return;
    if (s.send_queued > 0 || s.unacknowledged > 0) s.data_lost = true; // it can never be acknowledged now
    s.state = socket_state::failed;
    s.failure = code;
    s.pending_error = code;
    s.received.clear();
    s.received_bytes = 0;
    cancel_user_operations(s, code);
    s.ctx->changed.notify_all();
}

void cancel_user_operations(stream_socket& s, int code) {
    s.ctx->callbacks.reserve(s.ctx->callbacks.size() + s.async_accepts.size() + s.async_recvs.size() + s.send_queue.size());
    for (auto& op : s.async_accepts) queue_callback(s, op.callback, op.user, code);
    s.async_accepts.clear();
    for (auto& op : s.async_recvs) queue_callback(s, op.callback, op.user, code);
    s.async_recvs.clear();
    for (send_chunk& chunk : s.send_queue)
        if (chunk.op) queue_callback(s, chunk.op->callback, chunk.op->user, code);
    s.send_queue.clear();
    s.send_queued = 0;
}

void hard_close(stream_socket& s) {
    if (s.ps == 0) return;
    s.ctx->by_provider_socket.erase(s.ps);
    s.ctx->provider_closes.push_back(s.ps);
    s.ps = 0;
    // Connections a closed listener held for the user are reset with it.
    for (stream_socket* connection : s.ready) {
        connection->listener = nullptr;
        report_reset(*connection, true, SANSOCK_RESET_ABORTIVE_CLOSE, "its listener was closed before it was accepted");
        hard_close(*connection);
    }
    s.ready.clear();
    s.ctx->changed.notify_all();
}

void finish_graceful_if_done(stream_socket& s) {
    if (s.closing && !s.finished && s.session.fin_ack_received && s.session.fin_received) {
        graceful_done(s);
        hard_close(s); // the hard close after a completed graceful disconnect finds nothing pending
    }
}

void note_accepted(stream_socket& s) {
    ++s.ctx->stats.connections_accepted;
    if (log_enabled(*s.ctx, SANSOCK_LOG_DEBUG)) {
        char connection[connection_text_size];
        describe_connection(s, connection, sizeof connection);
        log_message(*s.ctx, SANSOCK_LOG_DEBUG, "connection %s: accepted", connection);
    }
}

void reset_on_destroy(stream_socket& s) {
    if (s.ps == 0 || s.finished || (s.session.fin_received && s.session.fin_ack_received)) return;
    report_reset(s, true, SANSOCK_RESET_CONTEXT_DESTROY);
}

void arm_notifications(stream_socket& s) {
    if (!s.notifications_off || s.ps == 0) return;
    s.notifications_off = false;
    s.ctx->ops.progress_socket(s.ctx->instance, s.ps, provider::poll_arm);
}

void maybe_free(stream_socket& s) {
    if (s.handle != 0 || s.listener != nullptr || s.ps != 0 || s.requests_in_flight != 0 || s.waiters != 0) return;
    s.ctx->sockets.erase(&s);
}

} // namespace sansock::sw

namespace sansock {
socket_internals internals_of(sansock_socket_t handle) {
    socket_internals out;
    // A test's socket, not closed meanwhile: found, then its context locked and found again.
    sw::stream_socket* found = sw::find_registered(handle);
    if (found == nullptr) return out;
    std::lock_guard lock(found->ctx->mutex);
    const sw::stream_socket* s = sw::find_registered(handle);
    if (s != found) return out;
    out.window = s->session.our_window;
    out.unread = s->received_bytes;
    out.buffer_bytes = s->staging.capacity() + s->spare_staging.capacity() + s->spare_compact.capacity();
    for (const sw::received_block& block : s->received) out.buffer_bytes += block.bytes.capacity();
    out.bookkeeping_bytes = s->received.size() * sizeof(sw::received_block);
    out.probes_sent = s->probes_sent;
    out.probe_replies = s->probe_replies;
    out.probes_unanswered = s->probes_unanswered;
    return out;
}
} // namespace sansock

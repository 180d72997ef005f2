// SPDX-License-Identifier: MIT
// A stream socket's life: a connection set up, failed, reset, closed gracefully or hard, and
// freed. Every function here runs with the context's mutex held.
#include "switch/stream_internal.hpp"

namespace sansock::sw {

namespace {

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

} // namespace

void queue_callback(stream_socket& s, sansock_callback callback, void* user, int64_t result) {
    s.ctx->callbacks.push_back({callback, user, result});
    --s.ctx->async_pending;
}

sansock_reset_reason received_reason(int code) {
    return code == -ENETDOWN ? SANSOCK_RESET_NETWORK_DOWN : SANSOCK_RESET_PEER;
}

void start_connection(stream_socket& s) {
    const uint32_t window = s.window_bytes != 0 ? s.window_bytes : s.ctx->attr.window_bytes;
    s.session = {};
    s.session.our_window = window;
    s.session.window_left = window;
    if (s.send_buffer_limit == 0) s.send_buffer_limit = window;
    reset_staging(s);
    s.heard_from = s.ctx->now();
    s.probes_unanswered = 0;
    socklen_t length = sizeof s.local_address;
    s.ctx->ops.getsockname(s.ctx->instance, s.ps, &s.local_address.sa, &length);
    length = sizeof s.peer_address;
    s.ctx->ops.getpeername(s.ctx->instance, s.ps, &s.peer_address.sa, &length);
    s.local_address = address::to_family(s.local_address, s.family);
    s.peer_address = address::to_family(s.peer_address, s.family);
    if (s.ctx->messages) {
        int rc = s.messages ? 0 : open_message_session(s, true);
        if (rc != 0) {
            report_reset(s, true, SANSOCK_RESET_ABORTIVE_CLOSE, "its control buffers could not be set up");
            fail_socket(s, rc == -ENOMEM ? rc : -ECONNRESET);
            hard_close(s);
            return;
        }
        start_message_session(s);
        return;
    }
    if (int rc = send_control(s, session::message_type::hello, window)) {
        report_reset(s, false, received_reason(rc));
        fail_socket(s, -ECONNRESET);
        hard_close(s);
        return;
    }
    post_recv(s);
}

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

void fail_socket(stream_socket& s, int code) {
    if (s.state == socket_state::failed) return;
    if (s.send_queued > 0 || s.unacknowledged > 0) s.data_lost = true; // it can never be acknowledged now
    s.state = socket_state::failed;
    s.failure = code;
    s.pending_error = code;
    drop_received(s);
    cancel_user_operations(s, code);
    socket_changed(s);
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
    socket_changed(s);
}

void finish_graceful_if_done(stream_socket& s) {
    if (s.closing && !s.finished && s.session.fin_ack_received && s.session.fin_received) {
        graceful_done(s);
        hard_close(s); // the hard close after a completed graceful disconnect finds nothing pending
    }
}

stream_socket& take_ready(stream_socket& listener) {
    stream_socket& accepted = *listener.ready.front();
    listener.ready.pop_front();
    accepted.listener = nullptr;
    accepted.handle = accepted.named = register_socket(&accepted);
    socket_changed(listener);
    return accepted;
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
    out.unread = s->received_bytes;
    if (const sw::message_session* m = s->messages.get()) { // version 3: the registered pool
        out.window = m->recv_buffers * (m->buffer_size - uint32_t(msg::header_size));
        out.buffer_bytes = m->memory_bytes;
        out.bookkeeping_bytes = m->recv_buffers * sizeof(sw::held_buffer);
    } else {
        out.window = s->session.our_window;
        out.buffer_bytes = s->staging.capacity() + s->spare_staging.capacity() + s->spare_compact.capacity();
        for (const sw::received_block& block : s->received) out.buffer_bytes += block.bytes.capacity();
        out.bookkeeping_bytes = s->received.size() * sizeof(sw::received_block);
    }
    out.probes_sent = s->probes_sent;
    out.probe_replies = s->probe_replies;
    out.probes_unanswered = s->probes_unanswered;
    return out;
}
} // namespace sansock

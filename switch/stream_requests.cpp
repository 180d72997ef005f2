// SPDX-License-Identifier: MIT
// A stream socket's provider requests and their completions: connect, accept, send, receive
// posted to the provider, and what each completion (or a provider's up-call) does. Every
// function here runs with the context's mutex held, except the completion routines, which take it.
#include <cstring>
#include <new>

#include "switch/stream_internal.hpp"

namespace sansock::sw {

namespace {

void on_request_done(provider::operation& op) noexcept;

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

} // namespace

provider_request* new_request(stream_socket& s, provider::operation_kind kind) {
    auto* r = new (std::nothrow) provider_request;
    if (r == nullptr) return nullptr;
    r->kind = kind;
    r->owner = &s;
    r->complete = on_request_done;
    return r;
}

int send_request(stream_socket& s, provider_request* r) {
    return submit(s, r, [](const provider::ops& ops, provider::instance* i, provider::socket_handle ps,
                           provider::operation* op) { return ops.send(i, ps, op); });
}

int send_control(stream_socket& s, session::message_type type, uint32_t value) {
    if (s.ctx->messages) return queue_control_message(s, type, value);
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
    // Version 3: the receives are posted before the connection exists, so the accepting side's
    // HELLO finds them.
    if (s.ctx->messages && !s.messages)
        if (int rc = open_message_session(s, false)) return rc;
    provider_request* r = new_request(s, provider::operation_kind::connect);
    if (r == nullptr) return -ENOMEM;
    std::memcpy(&r->address, address, std::min<size_t>(length, sizeof r->address));
    r->address_length = length;
    s.connect_request = r;
    int rc = submit(s, r, [](const provider::ops& ops, provider::instance* i, provider::socket_handle ps,
                             provider::operation* op) { return ops.connect(i, ps, op); });
    if (rc != 0) s.connect_request = nullptr;
    return rc;
}

void arm_notifications(stream_socket& s) {
    if (!s.notifications_off || s.ps == 0) return;
    s.notifications_off = false;
    s.ctx->ops.progress_socket(s.ctx->instance, s.ps, provider::poll_arm);
}

namespace {

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
    socket_changed(s);
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
    socket_changed(s);
    maybe_free(s);
}

} // namespace sansock::sw

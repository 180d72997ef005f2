// SPDX-License-Identifier: MIT
// The verbs provider's connections: rdma_cm events, connect, accept, the handshake.
#include <algorithm>
#include <cstring>

#include "lib/address.hpp"
#include "provider/verbs/verbs_call.hpp"
#include "provider/verbs/verbs_internal.hpp"

namespace sansock::verbs::detail {

static uint16_t our_version(const verbs_instance& self) {
    return self.settings.messages ? message_handshake_version : handshake_version;
}

static handshake our_handshake(const verbs_instance& self) {
    return {handshake_magic, our_version(self), 0, self.settings.recv_slots, self.settings.slot_size};
}

// A handshake of ours in `data` whose version is not this instance's: said in the log, -EPROTO.
static int check_version(const verbs_instance& self, const void* data, uint8_t length, const char* what) {
    handshake peer{};
    if (data == nullptr || length < sizeof peer) return 0;
    std::memcpy(&peer, data, sizeof peer);
    if (peer.magic != handshake_magic || peer.version == our_version(self)) return 0;
    log(self, provider::log_level::warn, "verbs: %s a peer of handshake version %u; this instance speaks version %u (%s mode)",
        what, unsigned(peer.version), unsigned(our_version(self)), self.settings.messages ? "message" : "stream");
    return -EPROTO;
}

// The peer's handshake, checked; 0 or -EPROTO.
static int take_peer_handshake(const verbs_instance& self, vsocket& s, const void* data, uint8_t length) {
    if (int rc = check_version(self, data, length, s.state == socket_state::accepting ? "refused" : "cannot connect to"))
        return rc;
    handshake peer{};
    if (data == nullptr || length < sizeof peer) return -EPROTO;
    std::memcpy(&peer, data, sizeof peer);
    if (peer.magic != handshake_magic || peer.recv_slots < 2 || peer.slot_size < 64) return -EPROTO;
    if (self.settings.messages) return 0; // no credits, no fragments: the user's flow control
    s.credits += peer.recv_slots; // credits returned before our ESTABLISHED was handled are kept
    s.fragment_size = std::min(s.slot_size, peer.slot_size);
    return 0;
}

// Hands an established connection to a waiting accept, if there is one.
static void match_accepts(verbs_instance& self, vsocket& listener) {
    while (!listener.accepts.empty() && !listener.ready.empty()) {
        vsocket* connection = listener.ready.front();
        listener.ready.pop_front();
        connection->listener = nullptr;
        const socket_handle handle = self.table.insert(connection);
        operation* op = listener.accepts.pop();
        if (handle == invalid_socket) {
            start_teardown(self, *connection);
            finish(self, listener, op, -EMFILE);
            continue;
        }
        connection->handle = handle;
        op->accepted = handle;
        finish(self, listener, op, 0);
    }
}

void fail_connect(verbs_instance& self, vsocket& s, int code) {
    if (s.state != socket_state::connecting) return;
    s.state = socket_state::failed;
    s.failure = code;
    if (operation* op = std::exchange(s.connect_op, nullptr)) finish(self, s, op, code);
    op_queue pending; // message mode: receives posted before the connect
    take_pending(s, pending);
    while (operation* op = pending.pop()) finish(self, s, op, code);
    stop_connection(s);
}

static void handle_connect_request(verbs_instance& self, vsocket* listener, rdma_cm_event& event,
                                   rdma_cm_id*& reject) {
    rdma_cm_id* id = event.id;
    if (listener == nullptr || listener->state != socket_state::listening ||
        listener->ready.size() + listener->handshaking >= static_cast<size_t>(std::max(1, listener->backlog))) {
        reject = id;
        return;
    }
    // Nothrow, here in progress: without memory the request is refused, as over the backlog.
    std::unique_ptr<vsocket> owned(new (std::nothrow) vsocket(&self.destroy_logging));
    if (!owned) {
        reject = id;
        return;
    }
    vsocket& s = *owned;
    s.id.reset(id);
    id->context = &s;
    s.state = socket_state::accepting;
    s.listener = listener;
    int rc = build_connection(self, s, id);
    if (rc == 0) rc = take_peer_handshake(self, s, event.param.conn.private_data, event.param.conn.private_data_len);
    auto kept = self.sockets.end(); // its place in the list, made before the accept can succeed
    if (rc == 0) rc = reserve_socket(self, &s, &kept);
    if (rc == 0) {
        handshake ours = our_handshake(self);
        rdma_conn_param param{};
        param.private_data = &ours;
        param.private_data_len = sizeof ours;
        // RDMA reads outstanding each way: ours, within what the peer offered (at least 1, as before).
        param.responder_resources = std::max<uint8_t>(1, std::min(s.device->responder_resources, event.param.conn.initiator_depth));
        param.initiator_depth = std::max<uint8_t>(1, std::min(s.device->initiator_depth, event.param.conn.responder_resources));
        param.rnr_retry_count = 0; // credits make receiver-not-ready impossible; any would be a bug
        rc = checked(rdma_accept(id, &param));
    }
    if (rc != 0) {
        // Release everything but the id itself, which is rejected once the event is acked.
        s.qp.reset();
        s.id.release();
        reject = id;
        if (kept != self.sockets.end()) self.sockets.erase(kept);
        return;
    }
    ++listener->handshaking;
    kept->second = std::move(owned);
}

// One event makes at most one id to reject and one device removed: no list to allocate.
static void handle_cm_event(verbs_instance& self, rdma_cm_event& event, rdma_cm_id*& reject, ibv_context*& removed) {
    if (event.event == RDMA_CM_EVENT_CONNECT_REQUEST) {
        handle_connect_request(self, static_cast<vsocket*>(event.listen_id->context), event, reject);
        return;
    }
    auto* s = static_cast<vsocket*>(event.id->context);
    if (s == nullptr) return;
    switch (event.event) {
    case RDMA_CM_EVENT_ADDR_RESOLVED:
        if (s->state == socket_state::connecting) {
            int rc = checked(rdma_resolve_route(s->id.get(), self.settings.resolve_timeout_ms));
            if (rc != 0) fail_connect(self, *s, -EHOSTUNREACH);
        }
        break;
    case RDMA_CM_EVENT_ROUTE_RESOLVED:
        if (s->state == socket_state::connecting) {
            int rc = build_connection(self, *s, s->id.get());
            if (rc == 0) {
                handshake ours = our_handshake(self);
                rdma_conn_param param{};
                param.private_data = &ours;
                param.private_data_len = sizeof ours;
                param.responder_resources = s->device->responder_resources;
                param.initiator_depth = s->device->initiator_depth;
                param.retry_count = 7;
                param.rnr_retry_count = 0;
                rc = checked(rdma_connect(s->id.get(), &param));
            }
            if (rc != 0) {
                if (s->qp) log(self, provider::log_level::error, "verbs: rdma_connect failed: %s", describe(rc));
                else if (self.settings.messages)
                    log(self, provider::log_level::error, "verbs: cannot set up the connection's QP or post its receives: %s", describe(rc));
                else log(self, provider::log_level::error,
                         "verbs: cannot set up the connection's QP or register its %zu-byte buffer: %s",
                         s->buffer_bytes, describe(rc));
                fail_connect(self, *s, s->qp ? -ECONNREFUSED : rc);
            }
        }
        break;
    case RDMA_CM_EVENT_ADDR_ERROR:
    case RDMA_CM_EVENT_ROUTE_ERROR:
        fail_connect(self, *s, -EHOSTUNREACH);
        break;
    case RDMA_CM_EVENT_UNREACHABLE:
        fail_connect(self, *s, -ETIMEDOUT);
        break;
    case RDMA_CM_EVENT_REJECTED:
        // A listener of the other handshake version sends its own handshake with the reject.
        if (s->state == socket_state::connecting &&
            check_version(self, event.param.conn.private_data, event.param.conn.private_data_len, "was refused by") != 0) {
            fail_connect(self, *s, -EPROTO);
            break;
        }
        [[fallthrough]];
    case RDMA_CM_EVENT_CONNECT_ERROR:
        fail_connect(self, *s, -ECONNREFUSED);
        if (s->state == socket_state::accepting && s->listener != nullptr) {
            --s->listener->handshaking;
            s->listener = nullptr;
            start_teardown(self, *s);
        }
        break;
    case RDMA_CM_EVENT_ESTABLISHED:
        if (s->state == socket_state::connecting) {
            int rc = take_peer_handshake(self, *s, event.param.conn.private_data, event.param.conn.private_data_len);
            if (rc != 0) {
                fail_connect(self, *s, rc);
                break;
            }
            s->state = socket_state::connected;
            if (operation* op = std::exchange(s->connect_op, nullptr)) finish(self, *s, op, 0);
            if (self.settings.messages) deliver_early(self, *s); // after the connect's completion
            else pump_sends(self, *s);
        } else if (s->state == socket_state::accepting) {
            s->state = socket_state::connected;
            vsocket* listener = s->listener;
            --listener->handshaking;
            listener->ready.push_back(s);
            match_accepts(self, *listener);
        }
        break;
    case RDMA_CM_EVENT_DISCONNECTED:
        // Completions already in the CQ came before the disconnect: deliver them first.
        if (s->cq) drain_completions(self, *s);
        if (s->state == socket_state::connected) {
            if (s->listener != nullptr) {
                s->state = socket_state::failed; // stays in the ready queue; the user meets the reset
                s->failure = -ECONNRESET;
                stop_connection(*s);
            } else {
                fail_connection(self, *s, -ECONNRESET, connection_event::peer_reset);
            }
        } else if (s->state != socket_state::closed) {
            stop_connection(*s);
        }
        break;
    case RDMA_CM_EVENT_DEVICE_REMOVAL:
        removed = event.id->verbs;
        break;
    default:
        break;
    }
}

void on_cm_events(void* context, int, uint32_t) noexcept {
    verbs_instance& self = *static_cast<verbs_instance*>(context);
    std::lock_guard lock(self.mutex);
    rdma_cm_event* event = nullptr;
    // (rdma_get_cm_event mallocs the event; without memory it fails, and the next progress
    // takes the event again: the descriptor stays readable.)
    while (rdma_get_cm_event(self.events.get(), &event) == 0) {
        rdma_cm_id* reject = nullptr;
        ibv_context* removed = nullptr;
        handle_cm_event(self, *event, reject, removed);
        rdma_ack_cm_event(event);
        if (removed != nullptr) release_device(self, removed);
        // An id we will not keep can only be destroyed once its event is acknowledged.
        if (rdma_cm_id* id = reject) {
            const handshake ours = our_handshake(self); // so a peer of the other version can say why
            rdma_reject(id, &ours, sizeof ours);
            if (id->qp != nullptr) rdma_destroy_qp(id);
            if (int rc = rdma_destroy_id(id)) report_destroy_failure(&self.destroy_logging, "rdma_destroy_id", rc);
        }
    }
}

int verbs_bind(provider::instance* p, socket_handle h, const sockaddr* address, socklen_t length) {
    verbs_instance* self = self_of(p);
    std::lock_guard lock(self->mutex);
    vsocket* s = find(*self, h);
    if (s == nullptr) return -ENOTSOCK;
    socket_address a{};
    // An IPv4-mapped address is bound as the IPv4 address it is (rdma_cm routes it as IPv4).
    if (int rc = address::parse(address, length, &a)) return rc;
    if (s->state == socket_state::failed) return s->failure;
    if (s->state != socket_state::fresh) return -EINVAL;
    if (a.sa.sa_family == AF_INET6) { // explicit, so the sysctl net.ipv6.bindv6only does not decide
        int afonly = s->v6only ? 1 : 0;
        if (int rc = checked(rdma_set_option(s->id.get(), RDMA_OPTION_ID, RDMA_OPTION_ID_AFONLY, &afonly, sizeof afonly)))
            return rc;
    }
    if (int rc = checked(rdma_bind_addr(s->id.get(), &a.sa))) return rc;
    s->state = socket_state::bound;
    return 0;
}

int verbs_listen(provider::instance* p, socket_handle h, int backlog) {
    verbs_instance* self = self_of(p);
    std::lock_guard lock(self->mutex);
    vsocket* s = find(*self, h);
    if (s == nullptr) return -ENOTSOCK;
    if (s->state == socket_state::failed) return s->failure;
    if (s->state != socket_state::bound) return s->state == socket_state::fresh ? -EDESTADDRREQ : -EINVAL;
    if (s->message_recvs > 0) return -EINVAL; // receives wait for a connection a listener never has
    if (backlog <= 0) backlog = 128;
    if (int rc = checked(rdma_listen(s->id.get(), backlog))) return rc;
    s->backlog = backlog;
    s->state = socket_state::listening;
    return 0;
}

int verbs_accept(provider::instance* p, socket_handle h, operation* op) {
    verbs_instance* self = self_of(p);
    std::lock_guard lock(self->mutex);
    vsocket* s = find(*self, h);
    if (s == nullptr) return -ENOTSOCK;
    if (int rc = validate_op(op, operation_kind::accept)) return rc;
    if (s->state == socket_state::failed) return s->failure;
    if (s->state != socket_state::listening) return -EINVAL;
    op->accepted = invalid_socket;
    s->accepts.push(op);
    match_accepts(*self, *s);
    if (!self->done.empty()) self->engine->wake();
    return 0;
}

int verbs_connect(provider::instance* p, socket_handle h, operation* op) {
    verbs_instance* self = self_of(p);
    std::lock_guard lock(self->mutex);
    vsocket* s = find(*self, h);
    if (s == nullptr) return -ENOTSOCK;
    if (int rc = validate_op(op, operation_kind::connect)) return rc;
    socket_address target{};
    if (int rc = address::parse(reinterpret_cast<const sockaddr*>(&op->address), op->address_length, &target))
        return rc;
    switch (s->state) {
    case socket_state::fresh:
    case socket_state::bound: break;
    case socket_state::connecting:
    case socket_state::accepting: return -EALREADY;
    case socket_state::connected: return -EISCONN;
    case socket_state::failed: return s->failure;
    default: return -EINVAL;
    }
    int rc = checked(rdma_resolve_addr(s->id.get(), nullptr, &target.sa, self->settings.resolve_timeout_ms));
    if (rc != 0) return rc;
    s->state = socket_state::connecting;
    s->connect_op = op;
    return 0;
}

static int copy_address(const sockaddr* from, sockaddr* to, socklen_t* length) {
    socket_address a{};
    std::memcpy(&a, from, std::max<socklen_t>(address::size_of(from->sa_family), sizeof(sockaddr_in)));
    return address::copy_out(a, to, length);
}

int verbs_getsockname(provider::instance* p, socket_handle h, sockaddr* address, socklen_t* length) {
    verbs_instance* self = self_of(p);
    std::lock_guard lock(self->mutex);
    vsocket* s = find(*self, h);
    if (s == nullptr) return -ENOTSOCK;
    if (!s->id) return s->failure;
    return copy_address(rdma_get_local_addr(s->id.get()), address, length);
}

int verbs_getpeername(provider::instance* p, socket_handle h, sockaddr* address, socklen_t* length) {
    verbs_instance* self = self_of(p);
    std::lock_guard lock(self->mutex);
    vsocket* s = find(*self, h);
    if (s == nullptr) return -ENOTSOCK;
    if (s->state != socket_state::connected || !s->id) return s->state == socket_state::failed ? s->failure : -ENOTCONN;
    return copy_address(rdma_get_peer_addr(s->id.get()), address, length);
}

} // namespace sansock::verbs::detail

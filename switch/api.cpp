// SPDX-License-Identifier: MIT
// The public socket calls that make and join connections: socket, bind, listen, accept,
// connect. The others are in switch/api_data.cpp, api_options.cpp, api_close.cpp, api_poll.cpp.
#include <netinet/in.h>

#include <cstring>

#include "switch/api_internal.hpp"

using namespace sansock;
using namespace sansock::sw;
using namespace sansock::sw::api;

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
    socket_address a{}; // an IPv4-mapped address is bound as the IPv4 address it is
    if (int rc = address::parse(address, length, &a)) return rc;
    if (s->family != AF_UNSPEC && s->family != address->sa_family) return -EAFNOSUPPORT;
    if (s->state != socket_state::created) return -EINVAL;
    if (s->v6only && a.sa.sa_family == AF_INET) return -EINVAL; // as Linux: IPv4-mapped on a v6-only socket
    provider::instance* instance = s->ctx->instance;
    if (s->v6only) {
        const int on = 1;
        if (int rc = s->ctx->ops.setsockopt(instance, s->ps, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on)) return rc;
    }
    if (int rc = s->ctx->ops.bind(instance, s->ps, &a.sa, address::size_of(a.sa.sa_family))) return rc;
    s->family = address->sa_family;
    s->bound_family = a.sa.sa_family;
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
    stream_socket* accepted = &take_ready(*s);
    post_accept(*s);
    if (accepted->handle == 0) {
        hard_close(*accepted);
        lock.unlock();
        run_deferred(ctx);
        return -EMFILE;
    }
    note_accepted(*accepted);
    if (peer != nullptr) address::copy_out(accepted->peer_address, peer, length); // cut as accept(2)
    *out = accepted->handle;
    return 0;
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_connect(sansock_socket_t h, const struct sockaddr* address, socklen_t length) try {
    socket_call lock;
    stream_socket* s = lock_socket(h, lock);
    if (s == nullptr) return -ENOTSOCK;
    socket_address a{};
    if (int rc = address::parse(address, length, &a)) return rc;
    if (s->family != AF_UNSPEC && s->family != address->sa_family) return -EAFNOSUPPORT; // as Linux
    if (s->v6only && a.sa.sa_family == AF_INET) return -ENETUNREACH; // IPv4-mapped on a v6-only socket
    switch (s->state) {
    case socket_state::created:
    case socket_state::bound: break;
    case socket_state::connecting: return -EALREADY;
    case socket_state::connected: return -EISCONN;
    case socket_state::failed: return s->failure;
    default: return -EINVAL;
    }
    // rdma_cm connects a bound id in its own family only; loopback is held to the same.
    if (s->bound_family != AF_UNSPEC && s->bound_family != a.sa.sa_family) return -EINVAL;
    if (int rc = start_connect(*s, &a.sa, address::size_of(a.sa.sa_family))) return rc;
    s->family = address->sa_family;
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

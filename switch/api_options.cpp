// SPDX-License-Identifier: MIT
// The public option and name calls: setsockopt, getsockopt, getsockname, getpeername.
#include <netinet/in.h>
#include <sys/time.h>

#include <climits>
#include <cstring>

#include "switch/api_internal.hpp"

using namespace sansock;
using namespace sansock::sw;
using namespace sansock::sw::api;

namespace {

// Longer time-outs saturate to this (about 68 years), as Linux saturates to its longest.
constexpr int64_t max_timeout_seconds = INT32_MAX;

// IPV6_V6ONLY (int), the one IPPROTO_IPV6 option: only before bind or connect (-EINVAL after,
// as Linux), -ENOPROTOOPT on an AF_INET socket. Setting it makes a socket that has no family
// yet AF_INET6 (as if made with socket(AF_INET6)): IPv4 addresses are then -EAFNOSUPPORT.
int set_v6only(stream_socket& s, int name, const void* value, socklen_t length) {
    if (name != IPV6_V6ONLY || s.family == AF_INET) return -ENOPROTOOPT;
    if (length < static_cast<socklen_t>(sizeof(int))) return -EINVAL;
    if (s.state != socket_state::created) return -EINVAL;
    int v = 0;
    std::memcpy(&v, value, sizeof v);
    s.v6only = v != 0;
    s.family = AF_INET6;
    return 0;
}

// A provider's name in the socket's family (IPv4 mapped on an AF_INET6 socket), cut as
// getsockname(2).
int give_name(const stream_socket& s, bool peer, sockaddr* address, socklen_t* length) {
    if (address == nullptr || length == nullptr) return -EINVAL;
    socket_address a{};
    socklen_t size = sizeof a;
    context& ctx = *s.ctx;
    const int rc = peer ? ctx.ops.getpeername(ctx.instance, s.ps, &a.sa, &size)
                        : ctx.ops.getsockname(ctx.instance, s.ps, &a.sa, &size);
    if (rc != 0) return rc;
    return address::copy_out(address::to_family(a, s.family), address, length);
}

} // namespace

extern "C" int sansock_setsockopt(sansock_socket_t h, int level, int name, const void* value, socklen_t length) try {
    socket_call lock;
    stream_socket* s = lock_socket(h, lock);
    if (s == nullptr) return -ENOTSOCK;
    if (value == nullptr) return -EINVAL;
    if (int rc = set_keepalive_option(*s, level, name, value, length); rc != not_a_keepalive_option) return rc;
    if (level == IPPROTO_IPV6) return set_v6only(*s, name, value, length);
    if (level != SOL_SOCKET) return -ENOPROTOOPT;
    auto as_int = [&](int& out) {
        if (length < static_cast<socklen_t>(sizeof(int))) return -EINVAL;
        std::memcpy(&out, value, sizeof out);
        return 0;
    };
    auto as_timeout = [&](std::chrono::milliseconds& out) {
        if (length < static_cast<socklen_t>(sizeof(timeval))) return -EINVAL;
        timeval tv;
        std::memcpy(&tv, value, sizeof tv);
        if (tv.tv_usec < 0 || tv.tv_usec >= 1000000) return -EDOM; // as Linux
        if (tv.tv_sec < 0) {
            out = no_wait;
            return 0;
        }
        const int64_t seconds = std::min<int64_t>(tv.tv_sec, max_timeout_seconds); // saturates
        out = std::chrono::milliseconds(seconds * 1000 + (tv.tv_usec + 999) / 1000);
        return 0;
    };
    int v = 0;
    switch (name) {
    case SO_LINGER: {
        if (length < static_cast<socklen_t>(sizeof(linger))) return -EINVAL;
        linger l;
        std::memcpy(&l, value, sizeof l);
        if (l.l_linger < 0) return -EINVAL;
        s->linger_option = {l.l_onoff != 0 ? 1 : 0, l.l_linger};
        return 0;
    }
    case SO_DONTLINGER:
        if (int rc = as_int(v)) return rc;
        s->linger_option.l_onoff = v != 0 ? 0 : 1;
        return 0;
    case SANSOCK_SO_NONBLOCK:
        if (int rc = as_int(v)) return rc;
        s->nonblocking = v != 0;
        return 0;
    case SO_SNDBUF:
        if (int rc = as_int(v)) return rc;
        if (v <= 0) return -EINVAL;
        s->send_buffer_limit = static_cast<size_t>(v);
        socket_changed(*s);
        return 0;
    case SO_RCVBUF:
        if (int rc = as_int(v)) return rc;
        if (v < static_cast<int>(session::min_window) || v > static_cast<int>(session::max_window)) return -EINVAL;
        if (s->state == socket_state::connected || s->state == socket_state::failed) return -EISCONN;
        s->window_bytes = static_cast<uint32_t>(v);
        return 0;
    case SO_RCVTIMEO: return as_timeout(s->recv_timeout);
    case SO_SNDTIMEO: return as_timeout(s->send_timeout);
    default: return -ENOPROTOOPT;
    }
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_getsockopt(sansock_socket_t h, int level, int name, void* value, socklen_t* length) try {
    socket_call lock;
    stream_socket* s = lock_socket(h, lock);
    if (s == nullptr) return -ENOTSOCK;
    if (value == nullptr || length == nullptr) return -EINVAL;
    if (int rc = get_keepalive_option(*s, level, name, value, length); rc != not_a_keepalive_option) return rc;
    if (level != SOL_SOCKET && level != IPPROTO_IPV6) return -ENOPROTOOPT;
    auto put = [&](const void* data, socklen_t size) {
        if (*length < size) return -EINVAL;
        std::memcpy(value, data, size);
        *length = size;
        return 0;
    };
    int v = 0;
    if (level == IPPROTO_IPV6) { // IPV6_V6ONLY only; an AF_INET socket has no IPv6 options
        if (name != IPV6_V6ONLY || s->family == AF_INET) return -ENOPROTOOPT;
        v = s->v6only;
        return put(&v, sizeof v);
    }
    switch (name) {
    case SO_LINGER: {
        linger l{s->linger_option.l_onoff, s->linger_option.l_linger};
        return put(&l, sizeof l);
    }
    case SO_DONTLINGER: v = s->linger_option.l_onoff == 0; return put(&v, sizeof v);
    case SANSOCK_SO_NONBLOCK: v = s->nonblocking; return put(&v, sizeof v);
    case SANSOCK_SO_NREAD:
        v = static_cast<int>(std::min<size_t>(readable_bytes(*s), INT_MAX));
        return put(&v, sizeof v);
    case SO_SNDBUF: v = static_cast<int>(s->send_buffer_limit); return put(&v, sizeof v);
    case SO_RCVBUF: v = static_cast<int>(s->window_bytes); return put(&v, sizeof v);
    case SO_TYPE: v = SOCK_STREAM; return put(&v, sizeof v);
    case SO_ERROR:
        v = -s->pending_error;
        s->pending_error = 0;
        return put(&v, sizeof v);
    case SO_RCVTIMEO:
    case SO_SNDTIMEO: {
        const auto ms = std::max<int64_t>((name == SO_RCVTIMEO ? s->recv_timeout : s->send_timeout).count(), 0);
        timeval tv{static_cast<time_t>(ms / 1000), static_cast<suseconds_t>((ms % 1000) * 1000)};
        return put(&tv, sizeof tv);
    }
    default: return -ENOPROTOOPT;
    }
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_getsockname(sansock_socket_t h, struct sockaddr* address, socklen_t* length) try {
    socket_call lock;
    stream_socket* s = lock_socket(h, lock);
    if (s == nullptr) return -ENOTSOCK;
    if (s->ps == 0) return s->failure != 0 ? s->failure : -ENOTCONN;
    return give_name(*s, false, address, length);
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_getpeername(sansock_socket_t h, struct sockaddr* address, socklen_t* length) try {
    socket_call lock;
    stream_socket* s = lock_socket(h, lock);
    if (s == nullptr) return -ENOTSOCK;
    if (s->state != socket_state::connected || s->ps == 0) return s->failure != 0 ? s->failure : -ENOTCONN;
    return give_name(*s, true, address, length);
} catch (...) {
    return sansock::c_error();
}

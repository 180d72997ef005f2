// SPDX-License-Identifier: MIT
// socket, bind, listen, accept, accept4, connect, shutdown, close, dup, dup2, dup3: where a
// kernel TCP socket becomes a sansock connection or a listener for both kinds of client, and
// where it falls back to the kernel (docs/transparent-mode.md, "Which connections").
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "lib/address.hpp"
#include "preload/exports.hpp"
#include "preload/real_calls.hpp"
#include "preload/runtime.hpp"
#include "preload/socket_moves.hpp"

using namespace sansock::preload;

namespace {

bool is_tcp(int domain, int type, int protocol) {
    return (domain == AF_INET || domain == AF_INET6) && (type & 0xf) == SOCK_STREAM &&
           (protocol == 0 || protocol == IPPROTO_TCP);
}

// The connection attempt over sansock: 0 and the connected socket, or the reason it failed.
int try_sansock_connect(int fd, const fd_entry& e, const sockaddr* address, socklen_t length,
                        sansock_socket_t* out) {
    sansock_context* ctx = context();
    if (ctx == nullptr) return -ENODEV;
    own_calls own;
    sansock_socket_t s = 0;
    int rc = sansock_socket(ctx, &s);
    if (rc != 0) return rc;
    carry_options(fd, e.options, s);
    // The try is bounded on its own, so that a peer without sansock costs little before the
    // kernel is asked; the program's own SO_SNDTIMEO is given back afterwards.
    const timeval bound{settings().connect_timeout_ms / 1000, (settings().connect_timeout_ms % 1000) * 1000};
    sansock_setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &bound, sizeof bound);
    rc = sansock_connect(s, address, length);
    if (rc != 0) {
        sansock_close(s);
        return rc;
    }
    const timeval none{};
    sansock_setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof none);
    carry_options(fd, e.options & set_sndtimeo, s);
    *out = s;
    return 0;
}

// accept on a dual listener: sansock and kernel clients in turn; waits on the epoll instance.
int accept_dual(int fd, const fd_entry& e, sockaddr* address, socklen_t* length, int flags) {
    const std::shared_ptr<dual_listener> l = find_listener(e.value);
    if (l == nullptr) {
        errno = EBADF;
        return -1;
    }
    const bool nonblocking = (real().fcntl(fd, F_GETFL) & O_NONBLOCK) != 0;
    for (;;) {
        if (l->closing.load()) {
            errno = EBADF;
            return -1;
        }
        const bool sansock_first = (l->turn.fetch_add(1) & 1) == 0;
        for (int attempt = 0; attempt < 2; ++attempt) {
            if ((attempt == 0) == sansock_first) {
                if (l->sansock_failed.load()) continue;
                own_calls own;
                sansock_socket_t s = 0;
                const int rc = sansock_accept(l->socket, &s, address, length);
                if (rc == 0) return adopt_accepted(s, flags);
                if (rc != -EWOULDBLOCK && rc != -EAGAIN) {
                    // The sansock side failed (its device went away): the kernel side goes on.
                    warn("listener %d: sansock accept failed (%s); kernel clients only from now on", fd,
                         sansock_strerror(rc));
                    l->sansock_failed.store(true);
                    epoll_ctl(l->epoll_fd, EPOLL_CTL_DEL, sansock_socket_fd(l->socket), nullptr);
                }
            } else {
                const int k = real().accept4(l->kernel_fd, address, length, flags);
                if (k >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) return k;
            }
        }
        if (nonblocking) {
            errno = EAGAIN;
            return -1;
        }
        pollfd p{l->epoll_fd, POLLIN, 0};
        const int n = ::poll(&p, 1, -1);
        if (n < 0 && errno == EINTR) return -1; // as accept(2) without SA_RESTART
        uint64_t woken;
        [[maybe_unused]] ssize_t r = real().read(l->wake_fd, &woken, sizeof woken);
    }
}

} // namespace

SANSOCK_PRELOAD_EXPORT int socket(int domain, int type, int protocol) {
    const int fd = real().socket(domain, type, protocol);
    if (fd >= 0 && is_tcp(domain, type, protocol) && settings().enabled && !own_calls::active())
        store(fd, {fd_kind::candidate, 0, 0});
    return fd;
}

SANSOCK_PRELOAD_EXPORT int connect(int fd, const sockaddr* address, socklen_t length) {
    const fd_entry e = lookup(fd);
    if (e.kind == fd_kind::stream) return int(posix_result(sansock_connect(e.value, address, length)));
    if (e.kind == fd_kind::inherited) return refuse_inherited(fd);
    if (e.kind != fd_kind::candidate || own_calls::active() || !peer_allowed(settings(), address, length))
        return real().connect(fd, address, length);
    sansock_socket_t s = 0;
    const int rc = try_sansock_connect(fd, e, address, length, &s);
    if (rc == 0) {
        if (adopt_connected(fd, s) == 0) return 0;
        return -1; // errno set: the descriptor could not be moved (no descriptor left)
    }
    count_fallback();
    char peer[sansock::address::format_size] = "?";
    sansock::socket_address parsed{};
    if (sansock::address::parse(address, length, &parsed) == 0) sansock::address::format(parsed, peer, sizeof peer);
    say("fd %d to %s: kernel TCP (sansock: %s)", fd, peer, sansock_strerror(rc));
    clear(fd);
    return real().connect(fd, address, length);
}

SANSOCK_PRELOAD_EXPORT int listen(int fd, int backlog) {
    const fd_entry e = lookup(fd);
    if (e.kind == fd_kind::listener) {
        const std::shared_ptr<dual_listener> l = find_listener(e.value);
        if (l == nullptr) return real().listen(fd, backlog);
        if (!l->sansock_failed.load()) sansock_listen(l->socket, backlog);
        return real().listen(l->kernel_fd, backlog);
    }
    if (e.kind == fd_kind::inherited) return refuse_inherited(fd);
    const int rc = real().listen(fd, backlog);
    if (rc != 0 || e.kind != fd_kind::candidate || own_calls::active()) return rc;
    make_dual_listener(fd, e, backlog); // stays a kernel listener if sansock cannot listen there
    return 0;
}

SANSOCK_PRELOAD_EXPORT int accept4(int fd, sockaddr* address, socklen_t* length, int flags) {
    const fd_entry e = lookup(fd);
    if (e.kind == fd_kind::listener) return accept_dual(fd, e, address, length, flags);
    if (e.kind == fd_kind::inherited) return refuse_inherited(fd);
    if (e.kind == fd_kind::stream) {
        errno = EINVAL; // not listening
        return -1;
    }
    return real().accept4(fd, address, length, flags);
}

SANSOCK_PRELOAD_EXPORT int accept(int fd, sockaddr* address, socklen_t* length) {
    return accept4(fd, address, length, 0);
}

SANSOCK_PRELOAD_EXPORT int shutdown(int fd, int how) {
    const fd_entry e = lookup(fd);
    if (e.kind == fd_kind::stream) return int(posix_result(sansock_shutdown(e.value, how)));
    if (e.kind == fd_kind::inherited) return refuse_inherited(fd);
    if (e.kind == fd_kind::listener) {
        const std::shared_ptr<dual_listener> l = find_listener(e.value);
        if (l == nullptr) {
            errno = EBADF;
            return -1;
        }
        return real().shutdown(l->kernel_fd, how);
    }
    return real().shutdown(fd, how);
}

SANSOCK_PRELOAD_EXPORT int close(int fd) {
    const fd_entry e = lookup(fd);
    if (e.kind == fd_kind::kernel) return real().close(fd);
    // The number goes first, as in the kernel, so a lingering close does not hold it.
    const int rc = real().close(fd);
    clear_if(fd, e);
    if (rc != 0 || e.kind == fd_kind::candidate || e.kind == fd_kind::inherited) return rc;
    return forget_number(e);
}

SANSOCK_PRELOAD_EXPORT int dup(int fd) {
    const int copy = real().dup(fd);
    if (copy >= 0) share_number(fd, copy);
    return copy;
}

SANSOCK_PRELOAD_EXPORT int dup3(int fd, int target, int flags) {
    if (fd == target) return real().dup3(fd, target, flags); // EINVAL, as the kernel says
    const fd_entry replaced = lookup(target);
    const int rc = real().dup3(fd, target, flags);
    if (rc < 0) return rc;
    if (replaced.kind != fd_kind::kernel) {
        clear_if(target, replaced);
        if (replaced.kind == fd_kind::stream || replaced.kind == fd_kind::listener) forget_number(replaced);
    }
    share_number(fd, target);
    return rc;
}

SANSOCK_PRELOAD_EXPORT int dup2(int fd, int target) {
    if (fd == target) return real().dup2(fd, target);
    return dup3(fd, target, 0);
}

// SPDX-License-Identifier: MIT
#include "preload/socket_moves.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>

#include "preload/real_calls.hpp"
#include "preload/runtime.hpp"

namespace sansock::preload {
namespace {

void carry(int fd, sansock_socket_t s, int level, int name) {
    int value = 0;
    socklen_t size = sizeof value;
    if (real().getsockopt(fd, level, name, &value, &size) != 0) return;
    if (level == SOL_SOCKET && (name == SO_RCVBUF || name == SO_SNDBUF)) value /= 2; // Linux doubles what was set
    const int rc = sansock_setsockopt(s, level, name, &value, sizeof value);
    if (rc != 0) say("option %d/%d = %d not taken by sansock (%s)", level, name, value, sansock_strerror(rc));
}

void carry_time(int fd, sansock_socket_t s, int name) {
    timeval t{};
    socklen_t size = sizeof t;
    if (real().getsockopt(fd, SOL_SOCKET, name, &t, &size) == 0) sansock_setsockopt(s, SOL_SOCKET, name, &t, sizeof t);
}

} // namespace

void carry_options(int fd, uint8_t bits, sansock_socket_t s) {
    own_calls own;
    const int nonblocking = (real().fcntl(fd, F_GETFL) & O_NONBLOCK) != 0;
    sansock_setsockopt(s, SOL_SOCKET, SANSOCK_SO_NONBLOCK, &nonblocking, sizeof nonblocking);
    if (bits & set_linger) {
        struct linger l{};
        socklen_t size = sizeof l;
        if (real().getsockopt(fd, SOL_SOCKET, SO_LINGER, &l, &size) == 0) sansock_setsockopt(s, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    if (bits & set_keepalive) {
        carry(fd, s, SOL_SOCKET, SO_KEEPALIVE);
        carry(fd, s, IPPROTO_TCP, TCP_KEEPIDLE);
        carry(fd, s, IPPROTO_TCP, TCP_KEEPINTVL);
        carry(fd, s, IPPROTO_TCP, TCP_KEEPCNT);
    }
    if (bits & set_rcvtimeo) carry_time(fd, s, SO_RCVTIMEO);
    if (bits & set_sndtimeo) carry_time(fd, s, SO_SNDTIMEO);
    if (bits & set_rcvbuf) carry(fd, s, SOL_SOCKET, SO_RCVBUF);
    if (bits & set_sndbuf) carry(fd, s, SOL_SOCKET, SO_SNDBUF);
    int domain = 0;
    socklen_t size = sizeof domain;
    if (real().getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &size) == 0 && domain == AF_INET6)
        carry(fd, s, IPPROTO_IPV6, IPV6_V6ONLY);
}

int adopt_connected(int fd, sansock_socket_t s) {
    own_calls own;
    const int descriptor = sansock_socket_fd(s);
    const int fd_flags = real().fcntl(fd, F_GETFD);
    const int status = real().fcntl(fd, F_GETFL);
    if (descriptor < 0 || fd_flags < 0 || status < 0 ||
        real().dup3(descriptor, fd, (fd_flags & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0) {
        errno = descriptor < 0 ? -descriptor : errno;
        sansock_close(s);
        return -1;
    }
    // sansock closes its own number only while it is still its (socket_fd.hpp), so the
    // program's number is the one that stays.
    real().close(descriptor);
    real().fcntl(fd, F_SETFL, status & O_NONBLOCK);
    store(fd, {fd_kind::stream, 0, s});
    add_number(lookup(fd));
    return 0;
}

int adopt_accepted(sansock_socket_t s, int flags) {
    own_calls own;
    const int fd = sansock_socket_fd(s);
    if (fd < 0) {
        sansock_close(s);
        errno = -fd;
        return -1;
    }
    const int nonblocking = (flags & SOCK_NONBLOCK) != 0;
    sansock_setsockopt(s, SOL_SOCKET, SANSOCK_SO_NONBLOCK, &nonblocking, sizeof nonblocking);
    if (nonblocking) real().fcntl(fd, F_SETFL, O_NONBLOCK);
    if (!(flags & SOCK_CLOEXEC)) real().fcntl(fd, F_SETFD, 0);
    if (!store(fd, {fd_kind::stream, 0, s})) {
        real().close(fd);
        sansock_close(s);
        errno = EMFILE;
        return -1;
    }
    add_number(lookup(fd));
    return fd;
}

void make_dual_listener(int fd, const fd_entry& e, int backlog) {
    sockaddr_storage local{};
    socklen_t length = sizeof local;
    if (real().getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length) != 0 ||
        !peer_allowed(settings(), reinterpret_cast<sockaddr*>(&local), length)) {
        clear(fd);
        return;
    }
    sansock_context* ctx = context();
    if (ctx == nullptr) {
        clear(fd);
        return;
    }
    own_calls own;
    auto l = std::make_shared<dual_listener>();
    int rc = sansock_socket(ctx, &l->socket);
    if (rc == 0) {
        carry_options(fd, e.options, l->socket);
        const int on = 1;
        sansock_setsockopt(l->socket, SOL_SOCKET, SANSOCK_SO_NONBLOCK, &on, sizeof on);
        rc = sansock_bind(l->socket, reinterpret_cast<sockaddr*>(&local), length);
    }
    if (rc == 0) rc = sansock_listen(l->socket, backlog);
    const int sansock_fd = rc == 0 ? sansock_socket_fd(l->socket) : rc;
    if (sansock_fd < 0) {
        say("listener %d: kernel clients only (sansock: %s)", fd, sansock_strerror(sansock_fd));
        clear(fd);
        return; // the destructor closes the sansock socket
    }
    const int fd_flags = real().fcntl(fd, F_GETFD);
    const int status = real().fcntl(fd, F_GETFL);
    l->kernel_fd = real().fcntl(fd, F_DUPFD_CLOEXEC, 0);
    l->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    l->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    bool ok = l->kernel_fd >= 0 && l->epoll_fd >= 0 && l->wake_fd >= 0;
    for (int member : {l->kernel_fd, sansock_fd, l->wake_fd}) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.fd = member;
        ok = ok && epoll_ctl(l->epoll_fd, EPOLL_CTL_ADD, member, &ev) == 0;
    }
    ok = ok && real().fcntl(l->kernel_fd, F_SETFL, O_NONBLOCK) == 0;
    // The program's number becomes the epoll instance; the kernel listener lives on at ours.
    ok = ok && real().dup3(l->epoll_fd, fd, (fd_flags & FD_CLOEXEC) ? O_CLOEXEC : 0) >= 0;
    if (!ok) {
        warn("listener %d: kernel clients only (no descriptor for the dual listener: %s)", fd, std::strerror(errno));
        clear(fd);
        return;
    }
    real().fcntl(fd, F_SETFL, status & O_NONBLOCK);
    const uint64_t id = add_listener(std::move(l));
    store(fd, {fd_kind::listener, 0, id});
    add_number(lookup(fd));
}

int refuse_inherited(int fd) {
    static std::atomic<bool> said{false};
    if (!said.exchange(true))
        warn("fd %d is a sansock socket of the parent process: a forked child cannot use it (EOPNOTSUPP); "
             "it may only close it",
             fd);
    errno = EOPNOTSUPP;
    return -1;
}

int forget_number(const fd_entry& e) {
    if (!release_number(e)) return 0;
    if (e.kind == fd_kind::listener) {
        drop_listener(e.value);
        return 0;
    }
    return int(posix_result(close_stream(e.value)));
}

void share_number(int fd, int copy) {
    const fd_entry e = lookup(fd);
    if (e.kind == fd_kind::stream || e.kind == fd_kind::listener || e.kind == fd_kind::inherited) {
        if (store(copy, e) && e.kind != fd_kind::inherited) add_number(e);
    } else if (e.kind == fd_kind::candidate) {
        // Two numbers of one unconnected kernel socket could not both follow it to sansock.
        clear(fd);
        clear(copy);
    } else {
        clear(copy);
    }
}

} // namespace sansock::preload

// SPDX-License-Identifier: MIT
// sansock_socket_fd: a kernel descriptor per socket for the application's poll, select and
// epoll, following the readiness sansock_poll reports (docs/semantics.md, "A descriptor per
// socket").
#include "switch/socket_fd.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "switch/switch_internal.hpp"

namespace sansock::sw {

namespace {

// More than the kernel's smallest send buffer (SOCK_MIN_SNDBUF, about 4.5 KiB) takes: one
// nonblocking send of it always stops short, and a unix socket whose send stopped short is
// not writable (its queued bytes count for more than a quarter of the buffer).
constexpr size_t fill_size = 8192;
constexpr uint8_t zeros[fill_size] = {};

int close_quietly(int fd) noexcept { return fd >= 0 ? ::close(fd) : 0; }

// Reads everything queued on `fd` (ours), so that it is what we wrote and nothing else.
void drain(int fd) noexcept {
    uint8_t sink[fill_size];
    while (::recv(fd, sink, sizeof sink, MSG_DONTWAIT) == static_cast<ssize_t>(sizeof sink)) {
    }
}

} // namespace

int pollable_fd::open() noexcept {
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair) != 0)
        return errno == ENOBUFS ? -ENOMEM : -errno;
    const int ours = ::fcntl(pair[0], F_DUPFD_CLOEXEC, 0);
    if (ours < 0) {
        const int rc = -errno;
        ::close(pair[0]);
        ::close(pair[1]);
        return rc;
    }
    const int smallest = 1; // the kernel makes it SOCK_MIN_SNDBUF
    ::setsockopt(pair[0], SOL_SOCKET, SO_SNDBUF, &smallest, sizeof smallest);
    user_ = pair[0];
    ours_ = ours;
    inner_ = pair[1];
    readable_ = false;
    writable_ = true;
    show(false, false);
    return 0;
}

void pollable_fd::show(bool readable, bool writable) noexcept {
    if (!is_open()) return;
    if (readable != readable_) {
        readable_ = readable;
        if (readable) {
            const uint8_t byte = 1;
            [[maybe_unused]] const ssize_t n = ::send(inner_, &byte, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
        } else {
            drain(ours_);
        }
    }
    if (writable != writable_) {
        writable_ = writable;
        if (writable) drain(inner_);
        else [[maybe_unused]] const ssize_t n = ::send(ours_, zeros, sizeof zeros, MSG_DONTWAIT | MSG_NOSIGNAL);
    }
}

void pollable_fd::close() noexcept {
    if (!is_open()) return;
    close_quietly(inner_);
    // The number handed out, only while it is still our socket: an application that closed
    // it (which it must not) may have a new descriptor of its own there now.
    struct stat mine {}, theirs {};
    if (::fstat(ours_, &mine) == 0 && ::fstat(user_, &theirs) == 0 && mine.st_ino == theirs.st_ino &&
        mine.st_dev == theirs.st_dev)
        close_quietly(user_);
    close_quietly(ours_);
    user_ = ours_ = inner_ = -1;
}

void refresh_fd_slow(stream_socket& s) noexcept {
    const short events = readiness(s);
    // POLLERR and POLLHUP cannot be shown by a descriptor of ours: an error makes it readable
    // and writable (as select(2) reports a socket's error), so that a wait for either ends.
    s.fd.show((events & (SANSOCK_POLLIN | SANSOCK_POLLERR | SANSOCK_POLLHUP)) != 0,
              (events & (SANSOCK_POLLOUT | SANSOCK_POLLERR)) != 0);
}

} // namespace sansock::sw

using namespace sansock::sw;

extern "C" int sansock_socket_fd(sansock_socket_t h) try {
    std::unique_lock<std::mutex> lock;
    stream_socket* s = lock_socket(h, lock);
    if (s == nullptr) return -ENOTSOCK;
    if (!s->fd.is_open()) {
        if (int rc = s->fd.open()) return rc;
        arm_notifications(*s); // from now on someone may wait on it: progress must hear of it
        refresh_fd_slow(*s);
    }
    return s->fd.user();
} catch (...) {
    return sansock::c_error();
}

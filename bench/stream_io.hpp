// SPDX-License-Identifier: MIT
// sansock-bench: what the two BSD-style systems (kernel TCP, system_tcp.cpp; rsockets,
// system_rsockets*.cpp) share: an owner of one descriptor, the stream loops (send all,
// receive exactly, receive to end of stream; the peer half's echo and sink) and the
// descriptor limit for the memory scenario.
// Each system passes its own calls as an Io:
//   static ssize_t send(int fd, const void* data, size_t n);
//   static ssize_t recv(int fd, void* data, size_t n);
//   static int close(int fd);             // 0 or a negated errno
//   static int blocked(int fd, short events); // EAGAIN: 0 to try again, or a negated errno
#pragma once

#include <poll.h>
#include <sys/resource.h>
#include <sys/types.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "bench/bench.hpp"

namespace sansock::bench {

inline int negated_errno() { return errno > 0 ? -errno : -EIO; }

// Owns one descriptor of `Io`; closing it is Io::close (which may block, for rsockets).
template <typename Io>
class descriptor_owner {
public:
    descriptor_owner() = default;
    explicit descriptor_owner(int fd) : fd_(fd) {}
    descriptor_owner(descriptor_owner&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    descriptor_owner& operator=(descriptor_owner&& other) noexcept {
        if (this != &other) {
            reset();
            fd_ = std::exchange(other.fd_, -1);
        }
        return *this;
    }
    descriptor_owner(const descriptor_owner&) = delete;
    descriptor_owner& operator=(const descriptor_owner&) = delete;
    ~descriptor_owner() { reset(); }
    int get() const { return fd_; }
    int release() { return std::exchange(fd_, -1); }
    void reset() { close_now(); }
    // Closes now and reports the close's own result (0 or a negated errno).
    int close_now() {
        const int fd = release();
        return fd < 0 ? 0 : Io::close(fd);
    }

private:
    int fd_ = -1;
};

namespace stream {

template <typename Io>
int send_all(int fd, const uint8_t* data, size_t n) {
    while (n > 0) {
        const ssize_t k = Io::send(fd, data, n);
        if (k > 0) {
            data += k;
            n -= size_t(k);
            continue;
        }
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (int rc = Io::blocked(fd, POLLOUT)) return rc;
            continue;
        }
        return k == 0 ? -EPIPE : negated_errno();
    }
    return 0;
}

// 0 when n bytes arrived, 1 on end of stream first, or a negated errno.
template <typename Io>
int recv_exact(int fd, uint8_t* data, size_t n) {
    while (n > 0) {
        const ssize_t k = Io::recv(fd, data, n);
        if (k > 0) {
            data += k;
            n -= size_t(k);
            continue;
        }
        if (k == 0) return 1;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (int rc = Io::blocked(fd, POLLIN)) return rc;
            continue;
        }
        return negated_errno();
    }
    return 0;
}

// Reads until end of stream; 0, or a negated errno (a reset counts as an error).
template <typename Io>
int recv_until_eof(int fd) {
    static thread_local std::vector<uint8_t> sink(64 * 1024);
    for (;;) {
        const ssize_t k = Io::recv(fd, sink.data(), sink.size());
        if (k > 0) continue;
        if (k == 0) return 0;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (int rc = Io::blocked(fd, POLLIN)) return rc;
            continue;
        }
        return negated_errno();
    }
}

// The peer half of ping_pong: echoes `message`-byte messages until end of stream (0), or a
// negated errno.
template <typename Io>
int echo_until_eof(int fd, size_t message, control& ctl) {
    std::vector<uint8_t> buffer(std::max<size_t>(message, 1));
    for (;;) {
        int rc = recv_exact<Io>(fd, buffer.data(), buffer.size());
        if (rc == 1) return 0; // end of stream: the client is done
        if (rc == 0) rc = send_all<Io>(fd, buffer.data(), buffer.size());
        if (rc) return rc;
        ctl.beat();
    }
}

// The peer half of one bandwidth sample: receives `total` bytes into `buffer` (discarded),
// then acknowledges them with one byte. 0, or a negated errno (-ECONNRESET for an early end).
template <typename Io>
int sink(int fd, uint64_t total, std::vector<uint8_t>& buffer, control& ctl) {
    while (total > 0) {
        const ssize_t k = Io::recv(fd, buffer.data(), size_t(std::min<uint64_t>(total, buffer.size())));
        if (k > 0) {
            total -= uint64_t(k);
            continue;
        }
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (int rc = Io::blocked(fd, POLLIN)) return rc;
            ctl.beat();
            continue;
        }
        return k == 0 ? -ECONNRESET : negated_errno();
    }
    const uint8_t ack = 1;
    return send_all<Io>(fd, &ack, 1);
}

} // namespace stream

// Raises the soft descriptor limit to `needed`; restores it on destruction.
class fd_limit {
public:
    explicit fd_limit(rlim_t needed) {
        if (getrlimit(RLIMIT_NOFILE, &saved_) != 0) return;
        if (saved_.rlim_cur != RLIM_INFINITY && saved_.rlim_cur < needed) {
            rlimit raised = saved_;
            raised.rlim_cur = needed;
            if (raised.rlim_max != RLIM_INFINITY && raised.rlim_max < needed) raised.rlim_max = needed;
            changed_ = setrlimit(RLIMIT_NOFILE, &raised) == 0;
        }
    }
    ~fd_limit() {
        if (changed_) setrlimit(RLIMIT_NOFILE, &saved_);
    }
    fd_limit(const fd_limit&) = delete;
    fd_limit& operator=(const fd_limit&) = delete;

private:
    rlimit saved_{};
    bool changed_ = false;
};

} // namespace sansock::bench

// SPDX-License-Identifier: MIT
// sansock-bench: what the two halves of the rsockets system share (system_rsockets.cpp, the
// measuring half; system_rsockets_peer.cpp, the peer half): the owner of an rsocket with
// rsockets' close sequence, its waits and stream loops (bench/stream_io.hpp with rsockets'
// calls). See system_rsockets.cpp for the rsockets facts these rely on.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <rdma/rsocket.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "bench/bench.hpp"
#include "bench/stream_io.hpp"

namespace sansock::bench::rs {

inline constexpr int wait_ms = 10000; // bound on every rpoll

inline int fail(std::string& why, int rc, const std::string& what) {
    why = "rsockets: " + what + ": " + std::strerror(-rc);
    return rc;
}

inline int wait_rs(int fd, short events, int timeout_ms = wait_ms) {
    pollfd pfd{fd, events, 0};
    for (;;) {
        int n = rpoll(&pfd, 1, timeout_ms);
        if (n > 0) return (pfd.revents & POLLNVAL) ? -EBADF : 0;
        if (n == 0) return -ETIMEDOUT;
        if (errno != EINTR) return negated_errno();
    }
}

inline int set_nonblocking(int fd) {
    int flags = rfcntl(fd, F_GETFL);
    if (flags < 0 || rfcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) return negated_errno();
    return 0;
}

// rsockets' calls for bench/stream_io.hpp. Sockets are nonblocking: a call that would block
// waits in rpoll (bounded) and tries again.
struct rs_io {
    static ssize_t send(int fd, const void* data, size_t n) { return rsend(fd, data, n, 0); }
    static ssize_t recv(int fd, void* data, size_t n) { return rrecv(fd, data, n, 0); }
    // rsockets' close sequence: rshutdown(SHUT_RDWR) then rclose (which may block: see
    // system_rsockets.cpp). 0 or a negated errno.
    static int close(int fd) {
        rshutdown(fd, SHUT_RDWR); // fails harmlessly (ENOTCONN) on listeners or dead links
        const int rc = rclose(fd); // 0, or a positive EBADF
        return rc == 0 ? 0 : -(rc > 0 ? rc : EIO);
    }
    static int blocked(int fd, short events) { return wait_rs(fd, events); }
};

// Owns one rsocket. The destructor runs rsockets' close (which may block).
using rs_owner = descriptor_owner<rs_io>;

inline int send_all(int fd, const uint8_t* data, size_t n) { return stream::send_all<rs_io>(fd, data, n); }
// Receives exactly n bytes: 0, 1 on end of stream first, or a negated errno.
inline int recv_exact(int fd, uint8_t* data, size_t n) { return stream::recv_exact<rs_io>(fd, data, n); }
inline int recv_until_eof(int fd) { return stream::recv_until_eof<rs_io>(fd); }

// The peer half (system_rsockets_peer.cpp).
int serve(const request& r, control& ctl, std::string& why);

} // namespace sansock::bench::rs

// SPDX-License-Identifier: MIT
// sansock-bench: kernel TCP on the RDMA device's address. The measuring half connects to the
// peer half's listener (bench.hpp: in a thread of this process or on the server host).
//
// Every blocking call is bounded: sockets carry SO_RCVTIMEO/SO_SNDTIMEO (connect honours the
// send time-out), accepts wait in poll with a time-out (and watch the control channel), and a
// linger close waits at most its linger time.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "bench/bench.hpp"
#include "bench/stream_io.hpp"

namespace sansock::bench {
namespace {

constexpr int wait_ms = 10000;  // bound on every single wait
constexpr int linger_seconds = 10; // linger_close: SO_LINGER {1, 10}

// Kernel TCP's calls for bench/stream_io.hpp. Sockets carry SO_RCVTIMEO / SO_SNDTIMEO: a call
// that would block has waited its time-out already.
struct tcp_io {
    static ssize_t send(int fd, const void* data, size_t n) { return ::send(fd, data, n, MSG_NOSIGNAL); }
    static ssize_t recv(int fd, void* data, size_t n) { return ::recv(fd, data, n, 0); }
    static int close(int fd) { return ::close(fd) == 0 ? 0 : negated_errno(); }
    static int blocked(int, short) { return -ETIMEDOUT; }
};

// Owns one file descriptor.
using fd_owner = descriptor_owner<tcp_io>;

int fail(std::string& why, int rc, const std::string& what) {
    why = "tcp: " + what + ": " + std::strerror(-rc);
    return rc;
}

int set_timeouts(int fd) {
    timeval tv{wait_ms / 1000, 0};
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0) return negated_errno();
    if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0) return negated_errno();
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) return negated_errno();
    return 0;
}

int set_linger(int fd, int on, int seconds) {
    linger l{on, seconds};
    return setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l) == 0 ? 0 : negated_errno();
}

struct listener {
    fd_owner fd;
    net_address addr{}; // with the bound port
};

int open_listener(const std::string& address, listener& out, std::string& why) {
    if (!parse_address(address, 0, out.addr)) return fail(why, -EINVAL, "bad IPv4 or IPv6 address '" + address + "'");
    out.fd = fd_owner(socket(out.addr.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (out.fd.get() < 0) return fail(why, negated_errno(), "socket");
    if (bind(out.fd.get(), &out.addr.sa, address_size(out.addr)) != 0)
        return fail(why, negated_errno(), "bind " + address);
    if (listen(out.fd.get(), SOMAXCONN) != 0) return fail(why, negated_errno(), "listen");
    socklen_t len = sizeof out.addr;
    if (getsockname(out.fd.get(), &out.addr.sa, &len) != 0)
        return fail(why, negated_errno(), "getsockname");
    return 0;
}

// Measuring half: a connection to the peer half's listener, with time-outs.
int connect_peer(control& ctl, fd_owner& client, std::string& why) {
    fd_owner c(socket(ctl.peer.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (c.get() < 0) return fail(why, negated_errno(), "socket");
    if (int rc = set_timeouts(c.get())) return fail(why, rc, "setsockopt");
    // connect is bounded by SO_SNDTIMEO.
    if (connect(c.get(), &ctl.peer.sa, address_size(ctl.peer)) != 0)
        return fail(why, negated_errno(), "connect");
    client = std::move(c);
    return 0;
}

// Peer half: the next connection, waiting at most peer_wait_ms (less if the measuring half
// ends the measurement: its control line makes the control socket readable).
int accept_peer(listener& l, control& ctl, fd_owner& server, std::string& why) {
    pollfd p[2] = {{l.fd.get(), POLLIN, 0}, {ctl.fd(), POLLIN, 0}};
    for (int waited = 0;; waited += 200) {
        ctl.beat();
        int n = poll(p, 2, 200); // a connection already there comes first
        if (n < 0 && errno != EINTR) return fail(why, negated_errno(), "poll");
        if (n > 0 && (p[0].revents & POLLIN)) break;
        if (ctl.stopping()) return fail(why, -ECANCELED, "the measuring half ended");
        if (waited >= peer_wait_ms) return fail(why, -ETIMEDOUT, "waiting to accept");
    }
    fd_owner s(accept4(l.fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (s.get() < 0) return fail(why, negated_errno(), "accept");
    if (int rc = set_timeouts(s.get())) return fail(why, rc, "setsockopt");
    server = std::move(s);
    return 0;
}

int send_all(int fd, const uint8_t* data, size_t n) { return stream::send_all<tcp_io>(fd, data, n); }
// 0 when n bytes arrived, 1 on end of stream first, or a negated errno.
int recv_exact(int fd, uint8_t* data, size_t n) { return stream::recv_exact<tcp_io>(fd, data, n); }
// Reads until end of stream; 0, or a negated errno (a reset counts as an error).
int recv_until_eof(int fd) { return stream::recv_until_eof<tcp_io>(fd); }

// ---- measuring half ----------------------------------------------------------------------

// graceful_close / graceful_to_eof / linger_close: one connection per sample; the peer half
// reads to end of stream and marks it.
int run_close(const request& r, control& ctl, measurement& out, std::string& why) {
    std::vector<uint8_t> payload(r.what == scenario::linger_close ? r.param : 0, 0x5a);
    return sample_loop(r, out, why, [&](double& ns, std::string& w) {
        fd_owner client;
        if (int rc = connect_peer(ctl, client, w)) return rc;
        if (r.what == scenario::linger_close) {
            if (int rc = set_linger(client.get(), 1, linger_seconds))
                return fail(w, rc, "SO_LINGER");
        }
        if (!payload.empty()) {
            if (int rc = send_all(client.get(), payload.data(), payload.size())) return fail(w, rc, "send");
        }
        const uint64_t t0 = now_ns();
        int closed = client.close_now();
        const uint64_t t1 = now_ns();
        if (closed) return fail(w, closed, "close");
        uint64_t eof_ns = 0;
        if (int rc = ctl.wait_mark(eof_ns)) return fail(w, rc, "waiting for the peer's end of stream");
        if (r.what == scenario::graceful_to_eof)
            ns = double(std::max(t1, eof_ns) - t0);
        else
            ns = double(t1 - t0);
        return 0;
    });
}

int run_hard_close(const request& r, control& ctl, measurement& out, std::string& why) {
    return sample_loop(r, out, why, [&](double& ns, std::string& w) {
        fd_owner client;
        if (int rc = connect_peer(ctl, client, w)) return rc;
        if (int rc = set_linger(client.get(), 1, 0)) return fail(w, rc, "SO_LINGER {1,0}");
        const uint64_t t0 = now_ns();
        int closed = client.close_now();
        const uint64_t t1 = now_ns();
        if (closed) return fail(w, closed, "close");
        ns = double(t1 - t0);
        return 0;
    });
}

int run_listener_close(const request& r, measurement& out, std::string& why) {
    return sample_loop(r, out, why, [&](double& ns, std::string& w) {
        listener l;
        if (int rc = open_listener(r.address, l, w)) return rc;
        const uint64_t t0 = now_ns();
        int closed = l.fd.close_now();
        const uint64_t t1 = now_ns();
        if (closed) return fail(w, closed, "close listener");
        ns = double(t1 - t0);
        return 0;
    });
}

// Until the peer half has read end of stream and closed its end (its mark).
int run_connect_teardown(const request& r, control& ctl, measurement& out, std::string& why) {
    return sample_loop(r, out, why, [&](double& ns, std::string& w) {
        const uint64_t t0 = now_ns();
        fd_owner client;
        if (int rc = connect_peer(ctl, client, w)) return rc;
        int closed = client.close_now();
        const uint64_t t1 = now_ns();
        if (closed) return fail(w, closed, "close client");
        uint64_t done_ns = 0;
        if (int rc = ctl.wait_mark(done_ns)) return fail(w, rc, "waiting for the peer's close");
        ns = double(std::max(t1, done_ns) - t0);
        return 0;
    });
}

int run_ping_pong(const request& r, control& ctl, measurement& out, std::string& why) {
    fd_owner client;
    if (int rc = connect_peer(ctl, client, why)) return rc;
    const size_t n = r.param;
    std::vector<uint8_t> ping(n, 0x11), pong(n);
    int rc = sample_loop(r, out, why, [&](double& ns, std::string& w) {
        const uint64_t t0 = now_ns();
        if (int e = send_all(client.get(), ping.data(), n)) return fail(w, e, "send ping");
        int e = recv_exact(client.get(), pong.data(), n);
        if (e == 1) e = -ECONNRESET;
        if (e) return fail(w, e, "receive pong");
        ns = double(now_ns() - t0);
        return 0;
    });
    shutdown(client.get(), SHUT_WR);
    return rc;
}

int run_bandwidth(const request& r, control& ctl, measurement& out, std::string& why) {
    fd_owner client;
    if (int rc = connect_peer(ctl, client, why)) return rc;
    const size_t message = r.param;
    const uint64_t messages = (r.stream_bytes + message - 1) / message;
    std::vector<uint8_t> payload(message, 0x33);
    int rc = sample_loop(r, out, why, [&](double& ns, std::string& w) {
        const uint64_t t0 = now_ns();
        for (uint64_t m = 0; m < messages; ++m)
            if (int e = send_all(client.get(), payload.data(), message)) return fail(w, e, "send");
        uint8_t ack = 0;
        int e = recv_exact(client.get(), &ack, 1);
        if (e == 1) e = -ECONNRESET;
        if (e) return fail(w, e, "receive the sink's acknowledgement");
        ns = double(now_ns() - t0);
        return 0;
    });
    out.bytes_per_sample = messages * message;
    return rc;
}

// Resident bytes per connection end, measured here once the peer half has accepted them all
// (both ends here in one-process mode: divided by two ends per connection); kernel TCP
// registers nothing.
int run_memory(const request& r, control& ctl, measurement& out, std::string& why) {
    fd_limit limit(rlim_t(2 * r.param + 64)); // both ends, in one-process mode
    const double ends = double(r.param) * (ctl.same_process() ? 2 : 1);
    double resident = 0;
    int rc = sample_loop(r, out, why, [&](double& ns, std::string& w) {
        std::vector<fd_owner> sockets;
        sockets.reserve(r.param);
        const uint64_t rss0 = resident_bytes();
        const uint64_t t0 = now_ns();
        for (uint64_t i = 0; i < r.param; ++i) {
            fd_owner client;
            if (int e = connect_peer(ctl, client, w)) return e;
            sockets.push_back(std::move(client));
        }
        uint64_t accepted = 0;
        if (int e = ctl.wait_mark(accepted)) return fail(w, e, "waiting for the peer to accept");
        ns = double(now_ns() - t0);
        const uint64_t rss1 = resident_bytes();
        resident = std::max(resident, double(rss1 > rss0 ? rss1 - rss0 : 0) / ends);
        return 0;
    });
    out.registered_bytes_per_connection = 0;
    out.resident_bytes_per_connection = resident;
    return rc;
}

const char* not_available(const request& r) {
    switch (r.what) {
    case scenario::hard_close:
        return r.param > 0 ? "BSD sockets have no overlapped operations to have outstanding at close" : nullptr;
    case scenario::listener_close:
        return r.param > 0 ? "BSD sockets have no pending accept operations (only a kernel backlog)" : nullptr;
    case scenario::listener_abort: return "BSD sockets have no listener abort distinct from close";
    case scenario::service_host_close: return "kernel TCP has no service host";
    default: return nullptr;
    }
}

int run(const request& r, control& ctl, measurement& out, std::string& why) {
    out = measurement{};
    if ((r.what == scenario::ping_pong || r.what == scenario::bandwidth || r.what == scenario::memory) && r.param == 0)
        return fail(why, -EINVAL, "the scenario needs a size or count");
    switch (r.what) {
    case scenario::hard_close: return run_hard_close(r, ctl, out, why);
    case scenario::graceful_close:
    case scenario::graceful_to_eof:
    case scenario::linger_close: return run_close(r, ctl, out, why);
    case scenario::listener_close: return run_listener_close(r, out, why);
    case scenario::connect_teardown: return run_connect_teardown(r, ctl, out, why);
    case scenario::ping_pong: return run_ping_pong(r, ctl, out, why);
    case scenario::bandwidth: return run_bandwidth(r, ctl, out, why);
    case scenario::memory: return run_memory(r, ctl, out, why);
    default: break;
    }
    why = "tcp: unknown scenario";
    return -EINVAL;
}

// ---- peer half -----------------------------------------------------------------------------

int serve(const request& r, control& ctl, std::string& why) {
    if (r.what == scenario::listener_close) return ctl.ready(r.address, 0); // the client's own listener
    listener l;
    if (int rc = open_listener(r.address, l, why)) return rc;
    if (int rc = ctl.ready(r.address, address_port(l.addr))) return fail(why, rc, "control channel");
    switch (r.what) {
    case scenario::hard_close:
        // The peer sees the reset (or end of stream if it raced); either way it is gone. The
        // last connection may still be on its way to the accept queue (or, reset first, never
        // get there) when the measuring half says it is done: the measurement is the measuring
        // half's, so its end ends this half too (seen as "the measuring half ended" in CI).
        return peer_loop(r, ctl, why, [&](std::string& w) {
            fd_owner server;
            if (int rc = accept_peer(l, ctl, server, w)) {
                if (rc != -ECANCELED) return rc;
                w.clear(); // the rest of the loop passes at once: stopping stays set
                return 0;
            }
            int rc = recv_until_eof(server.get());
            if (rc != 0 && rc != -ECONNRESET) return fail(w, rc, "peer after reset");
            return 0;
        });
    case scenario::graceful_close:
    case scenario::graceful_to_eof:
    case scenario::linger_close:
        return peer_loop(r, ctl, why, [&](std::string& w) {
            fd_owner server;
            if (int rc = accept_peer(l, ctl, server, w)) return rc;
            int rc = recv_until_eof(server.get());
            ctl.mark();
            if (rc) return fail(w, rc, "peer reading to end of stream");
            return 0;
        });
    case scenario::connect_teardown:
        return peer_loop(r, ctl, why, [&](std::string& w) {
            fd_owner server;
            if (int rc = accept_peer(l, ctl, server, w)) return rc;
            if (int rc = recv_until_eof(server.get())) return fail(w, rc, "server reading end of stream");
            int closed = server.close_now();
            ctl.mark();
            return closed ? fail(w, closed, "close server") : 0;
        });
    case scenario::ping_pong: {
        fd_owner server;
        if (int rc = accept_peer(l, ctl, server, why)) return rc;
        if (int rc = stream::echo_until_eof<tcp_io>(server.get(), r.param, ctl)) return fail(why, rc, "echo");
        return 0;
    }
    case scenario::bandwidth: {
        fd_owner server;
        if (int rc = accept_peer(l, ctl, server, why)) return rc;
        const uint64_t total = (r.stream_bytes + r.param - 1) / r.param * r.param;
        std::vector<uint8_t> buffer(std::min<size_t>(r.param, 1u << 20));
        return peer_loop(r, ctl, why, [&](std::string& w) {
            if (int rc = stream::sink<tcp_io>(server.get(), total, buffer, ctl)) return fail(w, rc, "sink");
            return 0;
        });
    }
    case scenario::memory: {
        fd_limit limit(rlim_t(2 * r.param + 64)); // both ends, in one-process mode
        return peer_loop(r, ctl, why, [&](std::string& w) {
            std::vector<fd_owner> sockets(r.param);
            for (auto& s : sockets)
                if (int rc = accept_peer(l, ctl, s, w)) return rc;
            ctl.mark();
            for (auto& s : sockets) recv_until_eof(s.get()); // the client closes them all
            return 0;
        });
    }
    default: break;
    }
    why = "tcp: unknown scenario";
    return -EINVAL;
}

} // namespace

const system tcp_system{"tcp", not_available, run, serve};

} // namespace sansock::bench

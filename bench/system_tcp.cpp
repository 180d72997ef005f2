// SPDX-License-Identifier: MIT
// sansock-bench: kernel TCP on the RDMA device's address, both ends in this process.
//
// Every blocking call is bounded: sockets carry SO_RCVTIMEO/SO_SNDTIMEO (connect honours the
// send time-out), accepts wait in poll with a time-out, and a linger close waits at most its
// linger time. Helper threads (drain, echo, sink) are std::jthread and always joined.
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

namespace sansock::bench {
namespace {

constexpr int wait_ms = 10000;  // bound on every single wait
constexpr int linger_seconds = 10; // linger_close: SO_LINGER {1, 10}

int negated_errno() { return errno > 0 ? -errno : -EIO; }

// Owns one file descriptor.
class fd_owner {
public:
    fd_owner() = default;
    explicit fd_owner(int fd) : fd_(fd) {}
    fd_owner(fd_owner&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    fd_owner& operator=(fd_owner&& other) noexcept {
        if (this != &other) {
            reset();
            fd_ = std::exchange(other.fd_, -1);
        }
        return *this;
    }
    fd_owner(const fd_owner&) = delete;
    fd_owner& operator=(const fd_owner&) = delete;
    ~fd_owner() { reset(); }
    int get() const { return fd_; }
    int release() { return std::exchange(fd_, -1); }
    void reset() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }
    // Closes now and reports close's own result (0 or a negated errno).
    int close_now() {
        int fd = release();
        if (fd < 0) return 0;
        return ::close(fd) == 0 ? 0 : negated_errno();
    }

private:
    int fd_ = -1;
};

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

int wait_fd(int fd, short events, int timeout_ms) {
    pollfd pfd{fd, events, 0};
    for (;;) {
        int n = poll(&pfd, 1, timeout_ms);
        if (n > 0) return 0;
        if (n == 0) return -ETIMEDOUT;
        if (errno != EINTR) return negated_errno();
    }
}

struct listener {
    fd_owner fd;
    sockaddr_in addr{}; // with the bound port
};

int open_listener(const std::string& address, listener& out, std::string& why) {
    out.addr = {};
    out.addr.sin_family = AF_INET;
    if (inet_pton(AF_INET, address.c_str(), &out.addr.sin_addr) != 1)
        return fail(why, -EINVAL, "bad IPv4 address '" + address + "'");
    out.fd = fd_owner(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (out.fd.get() < 0) return fail(why, negated_errno(), "socket");
    if (bind(out.fd.get(), reinterpret_cast<sockaddr*>(&out.addr), sizeof out.addr) != 0)
        return fail(why, negated_errno(), "bind " + address);
    if (listen(out.fd.get(), SOMAXCONN) != 0) return fail(why, negated_errno(), "listen");
    socklen_t len = sizeof out.addr;
    if (getsockname(out.fd.get(), reinterpret_cast<sockaddr*>(&out.addr), &len) != 0)
        return fail(why, negated_errno(), "getsockname");
    return 0;
}

// One connection: client connected to the listener, server accepted; both with time-outs.
int connect_pair(listener& l, fd_owner& client, fd_owner& server, std::string& why) {
    fd_owner c(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (c.get() < 0) return fail(why, negated_errno(), "socket");
    if (int rc = set_timeouts(c.get())) return fail(why, rc, "setsockopt");
    // connect is bounded by SO_SNDTIMEO.
    if (connect(c.get(), reinterpret_cast<const sockaddr*>(&l.addr), sizeof l.addr) != 0)
        return fail(why, negated_errno(), "connect");
    if (int rc = wait_fd(l.fd.get(), POLLIN, wait_ms)) return fail(why, rc, "waiting to accept");
    fd_owner s(accept4(l.fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (s.get() < 0) return fail(why, negated_errno(), "accept");
    if (int rc = set_timeouts(s.get())) return fail(why, rc, "setsockopt");
    client = std::move(c);
    server = std::move(s);
    return 0;
}

int send_all(int fd, const uint8_t* data, size_t n) {
    while (n > 0) {
        ssize_t k = send(fd, data, n, MSG_NOSIGNAL);
        if (k > 0) {
            data += k;
            n -= size_t(k);
            continue;
        }
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return -ETIMEDOUT;
        return negated_errno();
    }
    return 0;
}

// 0 when n bytes arrived, 1 on end of stream first, or a negated errno.
int recv_exact(int fd, uint8_t* data, size_t n) {
    while (n > 0) {
        ssize_t k = recv(fd, data, n, 0);
        if (k > 0) {
            data += k;
            n -= size_t(k);
            continue;
        }
        if (k == 0) return 1;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return -ETIMEDOUT;
        return negated_errno();
    }
    return 0;
}

// Reads until end of stream; 0, or a negated errno (a reset counts as an error).
int recv_until_eof(int fd) {
    static thread_local std::vector<uint8_t> sink(64 * 1024);
    for (;;) {
        ssize_t k = recv(fd, sink.data(), sink.size(), 0);
        if (k > 0) continue;
        if (k == 0) return 0;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return -ETIMEDOUT;
        return negated_errno();
    }
}

template <typename Sample>
int sample_loop(const request& r, measurement& out, std::string& why, Sample&& one) {
    out.samples_ns.clear();
    out.samples_ns.reserve(size_t(std::max(r.iterations, 0)));
    for (int i = 0; i < r.warmup + r.iterations; ++i) {
        double ns = 0;
        if (int rc = one(ns, why)) return rc;
        if (i >= r.warmup) out.samples_ns.push_back(ns);
    }
    return 0;
}

// A peer that reads to end of stream on its own thread, then closes; records when it saw EOF.
struct drain_peer {
    fd_owner fd;
    std::atomic<uint64_t> eof_ns{0};
    int rc = 0;
    std::jthread thread;
    void start() {
        thread = std::jthread([this] {
            rc = recv_until_eof(fd.get());
            eof_ns.store(now_ns());
            fd.reset();
        });
    }
    int finish() {
        if (thread.joinable()) thread.join();
        return rc;
    }
};

// graceful_close / graceful_to_eof / linger_close: one connection per sample, the peer reading.
int run_close(const request& r, measurement& out, std::string& why) {
    listener l;
    if (int rc = open_listener(r.address, l, why)) return rc;
    std::vector<uint8_t> payload(r.what == scenario::linger_close ? r.param : 0, 0x5a);
    return sample_loop(r, out, why, [&](double& ns, std::string& w) {
        fd_owner client;
        drain_peer peer;
        if (int rc = connect_pair(l, client, peer.fd, w)) return rc;
        if (r.what == scenario::linger_close) {
            if (int rc = set_linger(client.get(), 1, linger_seconds))
                return fail(w, rc, "SO_LINGER");
        }
        peer.start();
        if (!payload.empty()) {
            if (int rc = send_all(client.get(), payload.data(), payload.size())) {
                client.reset();
                peer.finish();
                return fail(w, rc, "send");
            }
        }
        const uint64_t t0 = now_ns();
        int closed = client.close_now();
        const uint64_t t1 = now_ns();
        int peer_rc = peer.finish();
        if (closed) return fail(w, closed, "close");
        if (peer_rc) return fail(w, peer_rc, "peer reading to end of stream");
        if (r.what == scenario::graceful_to_eof)
            ns = double(std::max(t1, peer.eof_ns.load()) - t0);
        else
            ns = double(t1 - t0);
        return 0;
    });
}

int run_hard_close(const request& r, measurement& out, std::string& why) {
    listener l;
    if (int rc = open_listener(r.address, l, why)) return rc;
    return sample_loop(r, out, why, [&](double& ns, std::string& w) {
        fd_owner client, server;
        if (int rc = connect_pair(l, client, server, w)) return rc;
        if (int rc = set_linger(client.get(), 1, 0)) return fail(w, rc, "SO_LINGER {1,0}");
        const uint64_t t0 = now_ns();
        int closed = client.close_now();
        const uint64_t t1 = now_ns();
        if (closed) return fail(w, closed, "close");
        // The peer sees the reset (or end of stream if it raced); either way it is gone.
        int peer_rc = recv_until_eof(server.get());
        if (peer_rc != 0 && peer_rc != -ECONNRESET) return fail(w, peer_rc, "peer after reset");
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

int run_connect_teardown(const request& r, measurement& out, std::string& why) {
    listener l;
    if (int rc = open_listener(r.address, l, why)) return rc;
    return sample_loop(r, out, why, [&](double& ns, std::string& w) {
        const uint64_t t0 = now_ns();
        fd_owner client, server;
        if (int rc = connect_pair(l, client, server, w)) return rc;
        int closed = client.close_now();
        if (closed) return fail(w, closed, "close client");
        if (int rc = recv_until_eof(server.get())) return fail(w, rc, "server reading end of stream");
        closed = server.close_now();
        if (closed) return fail(w, closed, "close server");
        ns = double(now_ns() - t0);
        return 0;
    });
}

int run_ping_pong(const request& r, measurement& out, std::string& why) {
    if (r.param == 0) return fail(why, -EINVAL, "ping_pong needs a message size");
    listener l;
    if (int rc = open_listener(r.address, l, why)) return rc;
    fd_owner client, server;
    if (int rc = connect_pair(l, client, server, why)) return rc;
    const size_t n = r.param;
    int echo_rc = 0;
    std::jthread echo([&] {
        std::vector<uint8_t> buffer(n);
        for (;;) {
            int rc = recv_exact(server.get(), buffer.data(), n);
            if (rc == 1) break; // end of stream: the client is done
            if (rc == 0) rc = send_all(server.get(), buffer.data(), n);
            if (rc) {
                echo_rc = rc;
                shutdown(server.get(), SHUT_RDWR); // unblock the client at once
                break;
            }
        }
    });
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
    echo.join();
    if (rc == 0 && echo_rc) rc = fail(why, echo_rc, "echo peer");
    return rc;
}

int run_bandwidth(const request& r, measurement& out, std::string& why) {
    if (r.param == 0 || r.stream_bytes == 0) return fail(why, -EINVAL, "bandwidth needs sizes");
    listener l;
    if (int rc = open_listener(r.address, l, why)) return rc;
    fd_owner client, server;
    if (int rc = connect_pair(l, client, server, why)) return rc;
    const size_t message = r.param;
    const uint64_t messages = (r.stream_bytes + message - 1) / message;
    const uint64_t total = messages * message;
    const int samples = r.warmup + r.iterations;
    int sink_rc = 0;
    std::jthread sink([&] {
        std::vector<uint8_t> buffer(std::min<size_t>(message, 1u << 20));
        for (int s = 0; s < samples; ++s) {
            uint64_t left = total;
            while (left > 0) {
                size_t want = size_t(std::min<uint64_t>(left, buffer.size()));
                ssize_t k = recv(server.get(), buffer.data(), want, 0);
                if (k > 0) {
                    left -= uint64_t(k);
                    continue;
                }
                if (k < 0 && errno == EINTR) continue;
                sink_rc = k == 0 ? -ECONNRESET
                          : (errno == EAGAIN || errno == EWOULDBLOCK) ? -ETIMEDOUT
                                                                      : negated_errno();
                shutdown(server.get(), SHUT_RDWR);
                return;
            }
            uint8_t ack = 1;
            if (int rc = send_all(server.get(), &ack, 1)) {
                sink_rc = rc;
                shutdown(server.get(), SHUT_RDWR);
                return;
            }
        }
    });
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
    if (rc) shutdown(client.get(), SHUT_RDWR);
    sink.join();
    if (rc == 0 && sink_rc) rc = fail(why, sink_rc, "sink");
    out.bytes_per_sample = total;
    return rc;
}

// Raises the soft descriptor limit for `needed` descriptors; restores it on destruction.
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

private:
    rlimit saved_{};
    bool changed_ = false;
};

// Resident bytes per socket (two per connection, both here); kernel TCP registers nothing.
int run_memory(const request& r, measurement& out, std::string& why) {
    if (r.param == 0) return fail(why, -EINVAL, "memory needs a connection count");
    fd_limit limit(rlim_t(2 * r.param + 64));
    listener l;
    if (int rc = open_listener(r.address, l, why)) return rc;
    double resident = 0;
    int rc = sample_loop(r, out, why, [&](double& ns, std::string& w) {
        std::vector<fd_owner> sockets;
        sockets.reserve(2 * r.param);
        const uint64_t rss0 = resident_bytes();
        const uint64_t t0 = now_ns();
        for (uint64_t i = 0; i < r.param; ++i) {
            fd_owner client, server;
            if (int e = connect_pair(l, client, server, w)) return e;
            sockets.push_back(std::move(client));
            sockets.push_back(std::move(server));
        }
        ns = double(now_ns() - t0);
        const uint64_t rss1 = resident_bytes();
        resident = std::max(resident, double(rss1 > rss0 ? rss1 - rss0 : 0) / double(2 * r.param));
        return 0;
    });
    out.registered_bytes_per_connection = 0;
    out.resident_bytes_per_connection = resident;
    return rc;
}

int run(const request& r, measurement& out, std::string& why) {
    out = measurement{};
    switch (r.what) {
    case scenario::hard_close:
        if (r.param > 0) {
            why = "BSD sockets have no overlapped operations to have outstanding at close";
            return -EOPNOTSUPP;
        }
        return run_hard_close(r, out, why);
    case scenario::graceful_close:
    case scenario::graceful_to_eof:
    case scenario::linger_close:
        return run_close(r, out, why);
    case scenario::listener_close:
        if (r.param > 0) {
            why = "BSD sockets have no pending accept operations (only a kernel backlog)";
            return -EOPNOTSUPP;
        }
        return run_listener_close(r, out, why);
    case scenario::listener_abort:
        why = "BSD sockets have no listener abort distinct from close";
        return -EOPNOTSUPP;
    case scenario::service_host_close:
        why = "kernel TCP has no service host";
        return -EOPNOTSUPP;
    case scenario::connect_teardown:
        return run_connect_teardown(r, out, why);
    case scenario::ping_pong:
        return run_ping_pong(r, out, why);
    case scenario::bandwidth:
        return run_bandwidth(r, out, why);
    case scenario::memory:
        return run_memory(r, out, why);
    }
    why = "tcp: unknown scenario";
    return -EINVAL;
}

} // namespace

const system tcp_system{"tcp", run};

} // namespace sansock::bench

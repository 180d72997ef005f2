// SPDX-License-Identifier: MIT
// sansock-bench: rsockets (librdmacm's rsocket API), with its own close sequence: rshutdown
// (SHUT_RDWR) then rclose. The measuring half connects to the peer half's listener (bench.hpp),
// where a thread accepts.
//
// rshutdown waits for every outstanding send with no time-out, and rclose calls it, so a
// close can block for ever (ofiwg/librdmacm#1). Each measurement therefore runs on a worker
// thread that reports progress; when it makes none for `stall_limit`, run() gives up with
// -ETIMEDOUT and abandons the worker (its sockets leak: nothing can reclaim a thread stuck in
// rclose). Every other wait is an rpoll with a time-out.
//
// rsockets facts used here, from rdma-core librdmacm/rsocket.c: SO_LINGER is only recorded
// (rsetsockopt stores a bit, nothing reads it; rgetsockopt reports l_linger 0), so there is no
// hard close; a stream rsocket registers its send buffer (def_wmem, 128 KiB), its receive
// buffer (def_mem, 128 KiB) and a 2-entry target SGL (2 x 16 bytes).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <rdma/rsocket.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "bench/bench.hpp"

namespace sansock::bench {
namespace {

constexpr int wait_ms = 10000;                    // bound on every rpoll
constexpr uint64_t stall_limit_ns = 30'000'000'000; // watchdog: no progress for this long
constexpr int linger_seconds = 10;
constexpr size_t target_sgl_bytes = 2 * 16; // RS_SGL_SIZE x sizeof(struct rs_sge)

int negated_errno() { return errno > 0 ? -errno : -EIO; }

int fail(std::string& why, int rc, const std::string& what) {
    why = "rsockets: " + what + ": " + std::strerror(-rc);
    return rc;
}

// The worker's progress counter (set on the worker thread only).
thread_local std::atomic<uint64_t>* progress_counter = nullptr;
void progress() {
    if (progress_counter) progress_counter->fetch_add(1, std::memory_order_relaxed);
}

// Owns one rsocket. The destructor runs rsockets' close (which may block: see above).
class rs_owner {
public:
    rs_owner() = default;
    explicit rs_owner(int fd) : fd_(fd) {}
    rs_owner(rs_owner&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    rs_owner& operator=(rs_owner&& other) noexcept {
        if (this != &other) {
            reset();
            fd_ = std::exchange(other.fd_, -1);
        }
        return *this;
    }
    rs_owner(const rs_owner&) = delete;
    rs_owner& operator=(const rs_owner&) = delete;
    ~rs_owner() { reset(); }
    int get() const { return fd_; }
    int release() { return std::exchange(fd_, -1); }
    void reset() { close_now(); }
    // rsockets' close sequence: rshutdown(SHUT_RDWR) then rclose. 0 or a negated errno.
    int close_now() {
        int fd = std::exchange(fd_, -1);
        if (fd < 0) return 0;
        rshutdown(fd, SHUT_RDWR); // fails harmlessly (ENOTCONN) on listeners or dead links
        int rc = rclose(fd);      // 0, or a positive EBADF
        return rc == 0 ? 0 : -(rc > 0 ? rc : EIO);
    }

private:
    int fd_ = -1;
};

int wait_rs(int fd, short events, int timeout_ms = wait_ms) {
    pollfd pfd{fd, events, 0};
    for (;;) {
        int n = rpoll(&pfd, 1, timeout_ms);
        if (n > 0) return (pfd.revents & POLLNVAL) ? -EBADF : 0;
        if (n == 0) return -ETIMEDOUT;
        if (errno != EINTR) return negated_errno();
    }
}

int set_nonblocking(int fd) {
    int flags = rfcntl(fd, F_GETFL);
    if (flags < 0 || rfcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) return negated_errno();
    return 0;
}

int send_all(int fd, const uint8_t* data, size_t n) {
    while (n > 0) {
        ssize_t k = rsend(fd, data, n, 0);
        if (k > 0) {
            data += k;
            n -= size_t(k);
            continue;
        }
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (int rc = wait_rs(fd, POLLOUT)) return rc;
            continue;
        }
        if (k < 0 && errno == EINTR) continue;
        return k == 0 ? -EPIPE : negated_errno();
    }
    return 0;
}

// Receives exactly n bytes: 0, 1 on end of stream first, or a negated errno.
int recv_exact(int fd, uint8_t* data, size_t n) {
    while (n > 0) {
        ssize_t k = rrecv(fd, data, n, 0);
        if (k > 0) {
            data += k;
            n -= size_t(k);
            continue;
        }
        if (k == 0) return 1;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (int rc = wait_rs(fd, POLLIN)) return rc;
            continue;
        }
        if (errno == EINTR) continue;
        return negated_errno();
    }
    return 0;
}

int recv_until_eof(int fd) {
    std::vector<uint8_t> sink(64 * 1024);
    for (;;) {
        ssize_t k = rrecv(fd, sink.data(), sink.size(), 0);
        if (k > 0) continue;
        if (k == 0) return 0;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (int rc = wait_rs(fd, POLLIN)) return rc;
            continue;
        }
        if (errno == EINTR) continue;
        return negated_errno();
    }
}

// A listening rsocket and a thread accepting on it; accepted sockets queue up for take().
class acceptor {
public:
    int open(const std::string& address, std::string& why) {
        if (!parse_address(address, 0, addr_)) return fail(why, -EINVAL, "bad IPv4 or IPv6 address '" + address + "'");
        listener_ = rs_owner(rsocket(addr_.sa.sa_family, SOCK_STREAM, 0));
        if (listener_.get() < 0) return fail(why, negated_errno(), "rsocket");
        if (rbind(listener_.get(), &addr_.sa, address_size(addr_)) != 0)
            return fail(why, negated_errno(), "rbind " + address);
        if (rlisten(listener_.get(), 1024) != 0) return fail(why, negated_errno(), "rlisten");
        if (int rc = set_nonblocking(listener_.get())) return fail(why, rc, "rfcntl O_NONBLOCK");
        socklen_t len = sizeof addr_;
        if (rgetsockname(listener_.get(), &addr_.sa, &len) != 0)
            return fail(why, negated_errno(), "rgetsockname");
        thread_ = std::jthread([this](std::stop_token stop) { accept_loop(stop); });
        return 0;
    }

    ~acceptor() {
        if (thread_.joinable()) {
            thread_.request_stop();
            thread_.join();
        }
        // ready_ and listener_ close themselves (members).
    }

    const net_address& address() const { return addr_; }

    // The next accepted socket (nonblocking), or a negated errno; waits at most peer_wait_ms,
    // in slices that watch the control channel.
    int take(control& ctl, rs_owner& out, std::string& why) {
        for (int waited = 0;; waited += 200) {
            ctl.beat();
            {
                std::unique_lock lock(mutex_); // one already there comes first
                if (ready_cv_.wait_for(lock, std::chrono::milliseconds(200), [&] { return !ready_.empty() || error_ != 0; }))
                    break;
            }
            if (ctl.stopping()) return fail(why, -ECANCELED, "raccept (the measuring half ended)");
            if (waited >= peer_wait_ms) return fail(why, -ETIMEDOUT, "waiting for raccept");
        }
        std::lock_guard lock(mutex_);
        if (ready_.empty()) return fail(why, error_, "raccept");
        out = std::move(ready_.front());
        ready_.pop_front();
        return 0;
    }

private:
    // rpoll on a listening rsocket proved unreliable on rxe (it missed or delayed connect
    // requests by seconds), so the listener is nonblocking and raccept is retried every
    // 50 us. The accepted socket may still be completing its accept; rsockets finishes that
    // on its first use.
    void accept_loop(std::stop_token stop) {
        int rc = 0;
        while (!stop.stop_requested()) {
            rs_owner s(raccept(listener_.get(), nullptr, nullptr));
            if (s.get() < 0) {
                rc = negated_errno();
                if (rc == -EAGAIN || rc == -EWOULDBLOCK || rc == -EINTR) {
                    std::this_thread::sleep_for(std::chrono::microseconds(50));
                    rc = 0;
                    continue;
                }
                break;
            }
            if ((rc = set_nonblocking(s.get())) != 0) break;
            std::lock_guard lock(mutex_);
            ready_.push_back(std::move(s));
            ready_cv_.notify_all();
        }
        if (rc == 0) return;
        std::lock_guard lock(mutex_);
        error_ = rc;
        ready_cv_.notify_all();
    }

    net_address addr_{};
    rs_owner listener_;
    std::mutex mutex_;
    std::condition_variable ready_cv_;
    std::deque<rs_owner> ready_;
    int error_ = 0;
    std::jthread thread_; // last: stopped and joined before the rest is destroyed
};

// Measuring half: a connected socket (nonblocking) to the peer half's listener.
int connect_peer(control& ctl, rs_owner& client, std::string& why) {
    rs_owner c(rsocket(ctl.peer.sa.sa_family, SOCK_STREAM, 0));
    if (c.get() < 0) return fail(why, negated_errno(), "rsocket");
    if (rconnect(c.get(), &ctl.peer.sa, address_size(ctl.peer)) != 0)
        return fail(why, negated_errno(), "rconnect");
    if (int rc = set_nonblocking(c.get())) return fail(why, rc, "rfcntl O_NONBLOCK");
    client = std::move(c);
    return 0;
}


// sample_loop (bench.hpp), counting progress after every sample for the hang detector.
template <typename Sample>
int sample_loop_counted(const request& r, measurement& out, std::string& why, Sample&& one) {
    return sample_loop(r, out, why, [&](double& ns, std::string& w) {
        const int rc = one(ns, w);
        progress();
        return rc;
    });
}

// ---- measuring half ----------------------------------------------------------------------

// graceful_close / graceful_to_eof / linger_close: the peer half reads to end of stream,
// marks it and closes.
int run_close(control& ctl, const request& r, measurement& out, std::string& why) {
    std::vector<uint8_t> payload(r.what == scenario::linger_close ? r.param : 0, 0x5a);
    return sample_loop_counted(r, out, why, [&](double& ns, std::string& w) {
        rs_owner client;
        if (int rc = connect_peer(ctl, client, w)) return rc;
        if (r.what == scenario::linger_close) {
            linger l{1, linger_seconds};
            if (rsetsockopt(client.get(), SOL_SOCKET, SO_LINGER, &l, sizeof l) != 0)
                return fail(w, negated_errno(), "rsetsockopt SO_LINGER");
        }
        if (!payload.empty()) {
            if (int rc = send_all(client.get(), payload.data(), payload.size())) return fail(w, rc, "rsend");
        }
        const uint64_t t0 = now_ns();
        int closed = client.close_now(); // rshutdown(SHUT_RDWR) + rclose
        const uint64_t t1 = now_ns();
        if (closed) return fail(w, closed, "rclose");
        uint64_t eof_ns = 0;
        if (int rc = ctl.wait_mark(eof_ns)) return fail(w, rc, "waiting for the peer's end of stream");
        if (r.what == scenario::graceful_to_eof)
            ns = double(std::max(t1, eof_ns) - t0);
        else
            ns = double(t1 - t0);
        return 0;
    });
}

int run_listener_close(const request& r, measurement& out, std::string& why) {
    net_address addr{};
    if (!parse_address(r.address, 0, addr)) return fail(why, -EINVAL, "bad IPv4 or IPv6 address '" + r.address + "'");
    return sample_loop_counted(r, out, why, [&](double& ns, std::string& w) {
        rs_owner l(rsocket(addr.sa.sa_family, SOCK_STREAM, 0));
        if (l.get() < 0) return fail(w, negated_errno(), "rsocket");
        if (rbind(l.get(), &addr.sa, address_size(addr)) != 0)
            return fail(w, negated_errno(), "rbind");
        if (rlisten(l.get(), 16) != 0) return fail(w, negated_errno(), "rlisten");
        const uint64_t t0 = now_ns();
        int rc = rclose(l.release()); // a listener: rclose alone (nothing to shut down)
        const uint64_t t1 = now_ns();
        if (rc != 0) return fail(w, -(rc > 0 ? rc : EIO), "rclose listener");
        ns = double(t1 - t0);
        return 0;
    });
}

// Until the peer half has read end of stream and closed its end (its mark).
int run_connect_teardown(control& ctl, const request& r, measurement& out, std::string& why) {
    return sample_loop_counted(r, out, why, [&](double& ns, std::string& w) {
        const uint64_t t0 = now_ns();
        rs_owner client;
        if (int rc = connect_peer(ctl, client, w)) return rc;
        if (int rc = client.close_now()) return fail(w, rc, "rclose client");
        const uint64_t t1 = now_ns();
        uint64_t done_ns = 0;
        if (int rc = ctl.wait_mark(done_ns)) return fail(w, rc, "waiting for the peer's close");
        ns = double(std::max(t1, done_ns) - t0);
        return 0;
    });
}

int run_ping_pong(control& ctl, const request& r, measurement& out, std::string& why) {
    rs_owner client;
    if (int rc = connect_peer(ctl, client, why)) return rc;
    const size_t n = r.param;
    std::vector<uint8_t> ping(n, 0x11), pong(n);
    int rc = sample_loop_counted(r, out, why, [&](double& ns, std::string& w) {
        const uint64_t t0 = now_ns();
        if (int e = send_all(client.get(), ping.data(), n)) return fail(w, e, "rsend ping");
        int e = recv_exact(client.get(), pong.data(), n);
        if (e == 1) e = -ECONNRESET;
        if (e) return fail(w, e, "rrecv pong");
        ns = double(now_ns() - t0);
        return 0;
    });
    int closed = client.close_now();
    if (rc == 0 && closed) rc = fail(why, closed, "rclose");
    return rc;
}

int run_bandwidth(control& ctl, const request& r, measurement& out, std::string& why) {
    rs_owner client;
    if (int rc = connect_peer(ctl, client, why)) return rc;
    const size_t message = r.param;
    const uint64_t messages = (r.stream_bytes + message - 1) / message;
    std::vector<uint8_t> payload(message, 0x33);
    int rc = sample_loop_counted(r, out, why, [&](double& ns, std::string& w) {
        const uint64_t t0 = now_ns();
        for (uint64_t m = 0; m < messages; ++m) {
            if (int e = send_all(client.get(), payload.data(), message)) return fail(w, e, "rsend");
            progress();
        }
        uint8_t ack = 0;
        int e = recv_exact(client.get(), &ack, 1);
        if (e == 1) e = -ECONNRESET;
        if (e) return fail(w, e, "rrecv the sink's acknowledgement");
        ns = double(now_ns() - t0);
        return 0;
    });
    int closed = client.close_now();
    if (rc == 0 && closed) rc = fail(why, closed, "rclose");
    out.bytes_per_sample = messages * message;
    return rc;
}

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

private:
    rlimit saved_{};
    bool changed_ = false;
};

int registered_bytes(int fd, uint64_t& bytes) {
    int sndbuf = 0, rcvbuf = 0;
    socklen_t len = sizeof sndbuf;
    if (rgetsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, &len) != 0) return negated_errno();
    len = sizeof rcvbuf;
    if (rgetsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, &len) != 0) return negated_errno();
    bytes += uint64_t(sndbuf) + uint64_t(rcvbuf) + target_sgl_bytes;
    return 0;
}

// Per rsocket on this side, at rsockets' default buffer sizes; resident bytes of this process
// (which holds both ends in one-process mode) once the peer half has accepted them all.
int run_memory(control& ctl, const request& r, measurement& out, std::string& why) {
    if (r.param == 0) return fail(why, -EINVAL, "memory needs a connection count");
    const double ends = double(r.param) * (ctl.same_process() ? 2 : 1);
    double registered = 0, resident = 0;
    int rc = sample_loop_counted(r, out, why, [&](double& ns, std::string& w) {
        std::vector<rs_owner> sockets;
        sockets.reserve(r.param);
        const uint64_t rss0 = resident_bytes();
        const uint64_t t0 = now_ns();
        uint64_t bytes = 0;
        for (uint64_t i = 0; i < r.param; ++i) {
            rs_owner client;
            if (int e = connect_peer(ctl, client, w)) return e;
            if (int e = registered_bytes(client.get(), bytes)) return fail(w, e, "rgetsockopt");
            sockets.push_back(std::move(client));
            progress();
        }
        uint64_t accepted = 0;
        if (int e = ctl.wait_mark(accepted)) return fail(w, e, "waiting for the peer to accept");
        ns = double(now_ns() - t0);
        const uint64_t rss1 = resident_bytes();
        registered = double(bytes) / double(r.param);
        resident = std::max(resident, double(rss1 > rss0 ? rss1 - rss0 : 0) / ends);
        // Close each; the peer half reads end of stream on its end and closes it.
        for (auto& s : sockets) {
            s.close_now();
            progress();
        }
        return 0;
    });
    out.registered_bytes_per_connection = registered;
    out.resident_bytes_per_connection = resident;
    return rc;
}

int measure(const request& r, control& ctl, measurement& out, std::string& why) {
    switch (r.what) {
    case scenario::listener_close: return run_listener_close(r, out, why);
    case scenario::graceful_close:
    case scenario::graceful_to_eof:
    case scenario::linger_close: return run_close(ctl, r, out, why);
    case scenario::connect_teardown: return run_connect_teardown(ctl, r, out, why);
    case scenario::ping_pong:
        if (r.param == 0) return fail(why, -EINVAL, "ping_pong needs a message size");
        return run_ping_pong(ctl, r, out, why);
    case scenario::bandwidth:
        if (r.param == 0 || r.stream_bytes == 0) return fail(why, -EINVAL, "bandwidth needs sizes");
        return run_bandwidth(ctl, r, out, why);
    case scenario::memory: {
        // Each rsocket holds two descriptors (its rdma_cm channel and its completion channel);
        // in one-process mode the peer half's rsockets share this process's limit.
        fd_limit limit(rlim_t(4 * r.param + 64));
        return run_memory(ctl, r, out, why);
    }
    default: break;
    }
    why = "rsockets: unknown scenario";
    return -EINVAL;
}

// ---- peer half -----------------------------------------------------------------------------

// Reads to end of stream, marks it, closes (rshutdown + rclose, which may wait for ever).
int drain_mark_close(rs_owner& s, control& ctl, std::string& why, bool mark_after_close) {
    int rc = recv_until_eof(s.get());
    if (!mark_after_close) ctl.mark();
    int closed = s.close_now();
    if (mark_after_close) ctl.mark();
    if (rc) return fail(why, rc, "peer reading to end of stream");
    return closed ? fail(why, closed, "rclose") : 0;
}

int serve(const request& r, control& ctl, std::string& why) {
    if (r.what == scenario::listener_close) return ctl.ready(r.address, 0); // the client's own listener
    fd_limit limit(rlim_t(4 * (r.what == scenario::memory ? r.param : 1) + 64)); // as in measure()
    acceptor a;
    if (int rc = a.open(r.address, why)) return rc;
    if (int rc = ctl.ready(r.address, address_port(a.address()))) return fail(why, rc, "control channel");
    switch (r.what) {
    case scenario::graceful_close:
    case scenario::graceful_to_eof:
    case scenario::linger_close:
    case scenario::connect_teardown:
        return peer_loop(r, ctl, why, [&](std::string& w) {
            rs_owner s;
            if (int rc = a.take(ctl, s, w)) return rc;
            return drain_mark_close(s, ctl, w, r.what == scenario::connect_teardown);
        });
    case scenario::ping_pong: {
        rs_owner server;
        if (int rc = a.take(ctl, server, why)) return rc;
        std::vector<uint8_t> buffer(std::max<uint64_t>(r.param, 1));
        for (;;) {
            int rc = recv_exact(server.get(), buffer.data(), buffer.size());
            if (rc == 1) break; // end of stream: the client is done
            if (rc == 0) rc = send_all(server.get(), buffer.data(), buffer.size());
            if (rc) return fail(why, rc, "echo");
            ctl.beat();
        }
        int closed = server.close_now();
        return closed ? fail(why, closed, "rclose") : 0;
    }
    case scenario::bandwidth: {
        rs_owner server;
        if (int rc = a.take(ctl, server, why)) return rc;
        const size_t message = std::max<uint64_t>(r.param, 1);
        const uint64_t total = (r.stream_bytes + message - 1) / message * message;
        std::vector<uint8_t> buffer(std::min<size_t>(message, 1u << 20));
        int rc = peer_loop(r, ctl, why, [&](std::string& w) {
            uint64_t left = total;
            while (left > 0) {
                size_t want = size_t(std::min<uint64_t>(left, buffer.size()));
                ssize_t k = rrecv(server.get(), buffer.data(), want, 0);
                if (k > 0) {
                    left -= uint64_t(k);
                    continue;
                }
                if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                    if (int e = wait_rs(server.get(), POLLIN)) return fail(w, e, "sink");
                    ctl.beat();
                    continue;
                }
                if (k < 0 && errno == EINTR) continue;
                return fail(w, k == 0 ? -ECONNRESET : negated_errno(), "sink");
            }
            uint8_t ack = 1;
            if (int e = send_all(server.get(), &ack, 1)) return fail(w, e, "sink acknowledgement");
            return 0;
        });
        if (rc == 0) {
            rc = recv_until_eof(server.get());
            if (rc) fail(why, rc, "sink reading end of stream");
        }
        int closed = server.close_now();
        if (rc == 0 && closed) rc = fail(why, closed, "rclose");
        return rc;
    }
    case scenario::memory: {
        std::vector<rs_owner> sockets(r.param);
        for (auto& s : sockets)
            if (int rc = a.take(ctl, s, why)) return rc;
        ctl.mark();
        for (auto& s : sockets) {
            recv_until_eof(s.get());
            s.close_now();
            ctl.beat();
        }
        return 0;
    }
    default: break;
    }
    why = "rsockets: unknown scenario";
    return -EINVAL;
}

// Shared between run() and its worker; the worker may outlive run() if it hangs.
struct run_state {
    request req;
    control* ctl = nullptr;
    std::atomic<uint64_t> beats{0};
    std::mutex mutex;
    std::condition_variable done_cv;
    bool done = false;
    int rc = 0;
    std::string why;
    measurement out;
};

const char* not_available(const request& r) {
    switch (r.what) {
    case scenario::hard_close: return "rsockets has no hard close: SO_LINGER is stored but never used";
    case scenario::listener_close:
        return r.param > 0 ? "rsockets has no asynchronous accept, so no accepts can be pending" : nullptr;
    case scenario::listener_abort: return "rsockets has no listener abort distinct from rclose";
    case scenario::service_host_close: return "rsockets has no service host";
    default: return nullptr;
    }
}

// The measuring half, on a worker thread with a watchdog (see the top of this file).
int run(const request& r, control& ctl, measurement& out, std::string& why) {
    out = measurement{};
    switch (r.what) {
    case scenario::hard_close:
        why = "rsockets has no hard close: SO_LINGER is stored but never used";
        return -EOPNOTSUPP;
    case scenario::listener_close:
        if (r.param > 0) {
            why = "rsockets has no asynchronous accept, so no accepts can be pending";
            return -EOPNOTSUPP;
        }
        break;
    case scenario::listener_abort:
        why = "rsockets has no listener abort distinct from rclose";
        return -EOPNOTSUPP;
    case scenario::service_host_close:
        why = "rsockets has no service host";
        return -EOPNOTSUPP;
    default: break;
    }

    auto state = std::make_shared<run_state>();
    state->req = r;
    state->ctl = &ctl; // a worker abandoned here dies with its process (a measuring child)
    std::thread worker([state] {
        progress_counter = &state->beats;
        measurement m;
        std::string w;
        int rc = measure(state->req, *state->ctl, m, w);
        std::lock_guard lock(state->mutex);
        state->rc = rc;
        state->why = std::move(w);
        state->out = std::move(m);
        state->done = true;
        state->done_cv.notify_all();
    });

    std::unique_lock lock(state->mutex);
    uint64_t seen = state->beats.load();
    uint64_t last_progress = now_ns();
    while (!state->done) {
        state->done_cv.wait_for(lock, std::chrono::milliseconds(250));
        if (state->done) break;
        const uint64_t beats = state->beats.load();
        if (beats != seen) {
            seen = beats;
            last_progress = now_ns();
        } else if (now_ns() - last_progress > stall_limit_ns) {
            lock.unlock();
            worker.detach(); // stuck in rsockets (rclose waits with no time-out): abandoned
            why = "rsockets: no progress for " + std::to_string(stall_limit_ns / 1'000'000'000) +
                  " s (rshutdown/rclose wait for sends with no time-out); the stuck thread and "
                  "its sockets are abandoned";
            return -ETIMEDOUT;
        }
    }
    lock.unlock();
    worker.join();
    out = std::move(state->out);
    why = std::move(state->why);
    return state->rc;
}

} // namespace

const system rsockets_system{"rsockets", not_available, run, serve};

} // namespace sansock::bench

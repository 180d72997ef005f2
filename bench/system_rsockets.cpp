// SPDX-License-Identifier: MIT
// sansock-bench: rsockets (librdmacm's rsocket API), with its own close sequence: rshutdown
// (SHUT_RDWR) then rclose. The measuring half (this file) connects to the peer half's listener
// (system_rsockets_peer.cpp), where a thread accepts; bench/rsockets_common.hpp has what both use.
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

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "bench/rsockets_common.hpp"

namespace sansock::bench {
namespace {

using namespace rs;

constexpr uint64_t stall_limit_ns = 30'000'000'000; // watchdog: no progress for this long
constexpr int linger_seconds = 10;
constexpr size_t target_sgl_bytes = 2 * 16; // RS_SGL_SIZE x sizeof(struct rs_sge)

// The worker's progress counter (set on the worker thread only).
thread_local std::atomic<uint64_t>* progress_counter = nullptr;
void progress() {
    if (progress_counter) progress_counter->fetch_add(1, std::memory_order_relaxed);
}

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

const system rsockets_system{"rsockets", not_available, run, rs::serve};

} // namespace sansock::bench


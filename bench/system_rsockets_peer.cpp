// SPDX-License-Identifier: MIT
// sansock-bench: the peer half of the rsockets system (the measuring half is
// system_rsockets.cpp): a listening rsocket with a thread accepting on it, and what each
// scenario does with the connections (drain, echo, sink, hold).
#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "bench/rsockets_common.hpp"

namespace sansock::bench::rs {
namespace {

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

// Reads to end of stream, marks it, closes (rshutdown + rclose, which may wait for ever).
int drain_mark_close(rs_owner& s, control& ctl, std::string& why, bool mark_after_close) {
    int rc = recv_until_eof(s.get());
    if (!mark_after_close) ctl.mark();
    int closed = s.close_now();
    if (mark_after_close) ctl.mark();
    if (rc) return fail(why, rc, "peer reading to end of stream");
    return closed ? fail(why, closed, "rclose") : 0;
}


} // namespace

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
        if (int rc = stream::echo_until_eof<rs_io>(server.get(), r.param, ctl)) return fail(why, rc, "echo");
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
            if (int e = stream::sink<rs_io>(server.get(), total, buffer, ctl)) return fail(w, e, "sink");
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

} // namespace sansock::bench::rs

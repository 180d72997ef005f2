// SPDX-License-Identifier: MIT
// Helpers of the switch unit tests: two (or more) contexts on one loopback fabric, an injected
// clock the test advances by hand, connected pairs, bounded blocking calls (a watchdog ends the
// process instead of letting a test hang), and a raw loopback peer that speaks the session
// protocol byte by byte.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

#include "provider/loopback/loopback.hpp"
#include "provider/provider.hpp"
#include "sansock/sansock.h"
#include "switch/context_hooks.hpp"
#include "switch/session_protocol.hpp"
#include "tests/support/bounded_time.hpp"
#include "tests/support/address.hpp"
#include "tests/support/socket_options.hpp"

namespace sansock::switchtest {

using namespace std::chrono_literals;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

using sansock::test::background;
using sansock::test::bounded;
using sansock::test::die;
using sansock::test::eventually;
using sansock::test::watchdog;

// The clock injected into contexts: stands still until the test advances it.
struct manual_clock {
    const steady_clock::time_point base = steady_clock::now();
    std::atomic<int64_t> offset_ns{0};

    steady_clock::time_point now() const { return base + std::chrono::nanoseconds(offset_ns.load()); }
    void advance(milliseconds d) { offset_ns.fetch_add(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count()); }
    std::function<steady_clock::time_point()> function() {
        return [this] { return now(); };
    }
};


inline void settle(milliseconds d = 200ms) { std::this_thread::sleep_for(d); }

inline const char* kAddress = "10.9.0.1";

inline sockaddr_in ipv4(uint16_t port, const char* dotted = kAddress) { return test::ipv4(dotted, port); }
using test::as_sockaddr;

struct host_options {
    uint32_t window_bytes = 0;
    uint32_t graceful_timeout_ms = 0;
    uint32_t progress_mode = SANSOCK_PROGRESS_THREAD;
    bool use_manual_clock = true;
    const provider::ops* provider_ops = nullptr;
    uint32_t busy_poll_us = 0; // 0: the default
};

// A loopback fabric, a manual clock and the contexts ("hosts") on it; destroys them in order.
class world {
public:
    world() : net_(loopback::create_fabric()) { REQUIRE(net_ != nullptr); }
    ~world() {
        for (auto it = contexts_.rbegin(); it != contexts_.rend(); ++it) {
            const int rc = bounded("sansock_context_destroy", [c = *it] { return sansock_context_destroy(c); });
            CHECK(rc == 0);
        }
        for (auto& raw : raw_peers_) raw.reset();
        CHECK(loopback::destroy_fabric(net_) == 0);
    }
    world(const world&) = delete;
    world& operator=(const world&) = delete;

    sansock_context* host(const host_options& o = {}) {
        sansock_context_attr attr;
        sansock_context_attr_init(&attr);
        attr.provider = SANSOCK_PROVIDER_LOOPBACK;
        attr.progress_mode = o.progress_mode;
        if (o.window_bytes != 0) attr.window_bytes = o.window_bytes;
        if (o.graceful_timeout_ms != 0) attr.graceful_timeout_ms = o.graceful_timeout_ms;
        if (o.busy_poll_us != 0) attr.busy_poll_us = o.busy_poll_us;
        context_hooks hooks;
        hooks.provider_specific = net_;
        hooks.provider_ops = o.provider_ops;
        hooks.session_version = session_version;
        if (o.use_manual_clock) hooks.now = clock.function();
        sansock_context* ctx = nullptr;
        const int rc = create_context(&attr, hooks, &ctx);
        REQUIRE(rc == 0);
        REQUIRE(ctx != nullptr);
        contexts_.push_back(ctx);
        return ctx;
    }
    loopback::fabric* fabric() const { return net_; }

    // Keeps a raw peer alive until after the contexts are gone.
    template <typename T>
    T& keep(std::unique_ptr<T> p) {
        T& ref = *p;
        raw_peers_.push_back(std::shared_ptr<void>(std::move(p)));
        return ref;
    }

    manual_clock clock;
    // The session protocol of the hosts made from now on (context_hooks::session_version; 0:
    // the environment's). The raw_peer below speaks version 2 over a stream-mode provider.
    int session_version = 0;

private:
    loopback::fabric* net_;
    std::vector<sansock_context*> contexts_;
    std::vector<std::shared_ptr<void>> raw_peers_;
};

// ---- socket helpers ----

using test::set_dontlinger;
using test::set_int_option;
using test::set_linger;
using test::set_nonblocking;

// A listening socket on `ctx` at kAddress with an ephemeral port (in *port).
inline sansock_socket_t listen_on(sansock_context* ctx, uint16_t* port, int backlog = 16) {
    sansock_socket_t l = 0;
    REQUIRE(sansock_socket(ctx, &l) == 0);
    REQUIRE(l != 0);
    const sockaddr_in any = ipv4(0);
    REQUIRE(sansock_bind(l, as_sockaddr(any), sizeof any) == 0);
    REQUIRE(sansock_listen(l, backlog) == 0);
    sockaddr_in bound{};
    socklen_t length = sizeof bound;
    REQUIRE(sansock_getsockname(l, reinterpret_cast<sockaddr*>(&bound), &length) == 0);
    REQUIRE(bound.sin_family == AF_INET);
    REQUIRE(ntohs(bound.sin_port) != 0);
    *port = ntohs(bound.sin_port);
    return l;
}

// Connects `s` to kAddress:port, bounded.
inline int connect_to(sansock_socket_t s, uint16_t port) {
    const sockaddr_in to = ipv4(port);
    return bounded("sansock_connect", [s, to] { return sansock_connect(s, as_sockaddr(to), sizeof to); });
}

inline sansock_socket_t accept_one(sansock_socket_t listener) {
    sansock_socket_t out = 0;
    const int rc = bounded("sansock_accept", [listener, &out] { return sansock_accept(listener, &out, nullptr, nullptr); });
    REQUIRE(rc == 0);
    REQUIRE(out != 0);
    return out;
}

// The loopback provider's table named `name`, with `change` applied to it: a test's wrapper
// around one of its entries (counting, recording).
template <typename Change>
provider::ops loopback_ops_with(const char* name, Change change) {
    provider::ops t = provider::with_defaults(loopback_ops);
    t.name = name;
    change(t);
    return t;
}

struct connection {
    sansock_socket_t client = 0; // on the client context
    sansock_socket_t server = 0; // on the server context
    sansock_socket_t listener = 0;
};

// A connected pair: client on `client_ctx`, accepted server socket on `server_ctx`.
inline connection connect_pair(sansock_context* client_ctx, sansock_context* server_ctx) {
    connection c;
    uint16_t port = 0;
    c.listener = listen_on(server_ctx, &port);
    REQUIRE(sansock_socket(client_ctx, &c.client) == 0);
    background<int> connecting("sansock_connect", [s = c.client, port] {
        const sockaddr_in to = ipv4(port);
        return sansock_connect(s, as_sockaddr(to), sizeof to);
    });
    c.server = accept_one(c.listener);
    REQUIRE(connecting.result() == 0);
    return c;
}

// Byte i of the test stream (not periodic in any power of two).
inline uint8_t pattern(uint64_t i) { return uint8_t((i * 2654435761u) >> 13 ^ (i % 251)); }
inline std::vector<uint8_t> pattern_bytes(uint64_t from, size_t n) {
    std::vector<uint8_t> v(n);
    for (size_t k = 0; k < n; ++k) v[k] = pattern(from + k);
    return v;
}

// Sends all of `data` on a blocking socket (bounded). Returns 0 or the first error.
inline ssize_t send_all(sansock_socket_t s, const void* data, size_t n) {
    return bounded("send_all", [s, data, n]() -> ssize_t {
        size_t done = 0;
        while (done < n) {
            const ssize_t r = sansock_send(s, static_cast<const uint8_t*>(data) + done, n - done, 0);
            if (r <= 0) return r < 0 ? r : -EIO;
            done += size_t(r);
        }
        return 0;
    });
}

// Fills the connection with the pattern (nonblocking sends) until the send side reports
// -EWOULDBLOCK twice 100 ms apart (the peer does not read). Leaves the socket in the
// nonblocking mode given by `stay_nonblocking`. Returns the bytes queued.
inline uint64_t fill_until_full(sansock_socket_t s, bool stay_nonblocking, uint64_t limit = uint64_t(64) << 20) {
    REQUIRE(set_nonblocking(s, true) == 0);
    uint64_t queued = 0;
    int full = 0;
    std::vector<uint8_t> chunk;
    while (full < 2 && queued < limit) {
        chunk = pattern_bytes(queued, 65536);
        const ssize_t r = sansock_send(s, chunk.data(), chunk.size(), 0);
        if (r == -EWOULDBLOCK) {
            ++full;
            settle(100ms);
            continue;
        }
        REQUIRE(r > 0);
        full = 0;
        queued += uint64_t(r);
    }
    REQUIRE(queued < limit); // the send side must push back when the peer does not read
    if (!stay_nonblocking) REQUIRE(set_nonblocking(s, false) == 0);
    return queued;
}

// Reads (blocking, bounded) until end of stream or an error; checks the bytes against the
// pattern from `from`. Returns {bytes read, last result (0 = end of stream, or the error)}.
struct read_outcome {
    uint64_t bytes = 0;
    ssize_t last = 0;
    bool in_order = true;
};
inline read_outcome read_to_end(sansock_socket_t s, uint64_t from = 0, milliseconds limit = 60s) {
    return bounded("read_to_end", [s, from]() {
        read_outcome out;
        std::vector<uint8_t> buffer(100000);
        for (;;) {
            const ssize_t r = sansock_recv(s, buffer.data(), buffer.size(), 0);
            out.last = r;
            if (r <= 0) return out;
            for (ssize_t k = 0; k < r; ++k)
                if (buffer[size_t(k)] != pattern(from + out.bytes + uint64_t(k))) out.in_order = false;
            out.bytes += uint64_t(r);
        }
    }, limit);
}

// Reads exactly n bytes (blocking, bounded); returns the bytes or fails the test.
inline std::vector<uint8_t> recv_exact(sansock_socket_t s, size_t n) {
    std::vector<uint8_t> buffer(n);
    const ssize_t rc = bounded("recv_exact", [s, &buffer, n]() -> ssize_t {
        size_t done = 0;
        while (done < n) {
            const ssize_t r = sansock_recv(s, buffer.data() + done, n - done, 0);
            if (r <= 0) return r < 0 ? r : -EPIPE;
            done += size_t(r);
        }
        return 0;
    });
    REQUIRE(rc == 0);
    return buffer;
}

// Polls one socket (bounded by timeout_ms, which must be finite).
inline short poll_one(sansock_socket_t s, short events, int timeout_ms) {
    sansock_pollfd p{s, events, 0};
    const int rc = bounded("sansock_poll", [&p, timeout_ms] { return sansock_poll(&p, 1, timeout_ms); },
                           milliseconds(timeout_ms + 10000));
    REQUIRE(rc >= 0);
    return p.revents;
}

// Receives with a nonblocking socket until the result is an error other than -EWOULDBLOCK
// (data and end of stream are skipped), at most `timeout`. Returns that error, or 1 on
// time-out. Switches the socket to nonblocking.
inline ssize_t wait_for_recv_error(sansock_socket_t s, milliseconds timeout = 10s, uint64_t* data_bytes = nullptr) {
    if (set_nonblocking(s, true) != 0) return -ENOTSOCK;
    const auto deadline = steady_clock::now() + timeout;
    std::vector<uint8_t> buffer(65536);
    while (steady_clock::now() < deadline) {
        const ssize_t r = sansock_recv(s, buffer.data(), buffer.size(), 0);
        if (r > 0) {
            if (data_bytes != nullptr) *data_bytes += uint64_t(r);
            continue;
        }
        if (r < 0 && r != -EWOULDBLOCK) return r;
        std::this_thread::sleep_for(5ms);
    }
    return 1;
}

// The provider socket and instance behind a switch socket (for loopback faults).
inline int freeze(sansock_context* ctx, sansock_socket_t s, bool frozen) {
    return loopback::freeze(provider_instance_of(ctx), provider_socket_of(s), frozen);
}

// ---- raw loopback peers ----

// The attack of `list` (each with a `name`) that this run of a malformed-peer test takes, and
// which side connects: one doctest SUBCASE for every attack in each direction.
template <typename Attack>
size_t pick_attack(const std::vector<Attack>& list, bool* raw_connects) {
    size_t which = 0;
    const auto pick = [&] {
        for (size_t i = 0; i < list.size(); ++i) {
            SUBCASE(list[i].name) { which = i; }
        }
    };
    SUBCASE("the raw peer connects to a switch listener") {
        *raw_connects = true;
        pick();
    }
    SUBCASE("the switch connects to a raw listener") {
        *raw_connects = false;
        pick();
    }
    return which;
}

// A provider listener of a raw peer on an ephemeral port of kAddress's fabric (returned).
inline uint16_t listen_raw(const provider::ops& ops, provider::instance* inst, provider::socket_handle* listener) {
    REQUIRE(ops.socket(inst, listener) == 0);
    const sockaddr_in any = ipv4(0);
    REQUIRE(ops.bind(inst, *listener, as_sockaddr(any), sizeof any) == 0);
    REQUIRE(ops.listen(inst, *listener, 8) == 0);
    sockaddr_in bound{};
    socklen_t length = sizeof bound;
    REQUIRE(ops.getsockname(inst, *listener, reinterpret_cast<sockaddr*>(&bound), &length) == 0);
    return ntohs(bound.sin_port);
}

// A raw peer speaking session protocol 2 as bytes:

class raw_peer {
public:
    struct op {
        provider::operation o;
        std::mutex mutex;
        std::condition_variable changed;
        int completions = 0;
        int64_t result = 0;
        std::vector<uint8_t> buffer;

        bool wait(milliseconds timeout) {
            std::unique_lock lock(mutex);
            return changed.wait_for(lock, timeout, [this] { return completions > 0; });
        }
        int64_t get_result() {
            std::lock_guard lock(mutex);
            return result;
        }
        int count() {
            std::lock_guard lock(mutex);
            return completions;
        }
    };

    explicit raw_peer(loopback::fabric* net) : ops(provider::with_defaults(loopback_ops)) {
        provider::config c;
        c.provider_specific = net;
        provider::upcalls calls{this, &on_event};
        REQUIRE(ops.create(c, calls, &inst) == 0);
        progress_ = std::thread([this] {
            while (!stop_.load()) ops.progress(inst, 50);
        });
    }
    ~raw_peer() {
        stop_.store(true);
        ops.wake(inst);
        progress_.join();
        ops.destroy(inst); // completes what is pending (-ECANCELED) before ops_ go
    }
    raw_peer(const raw_peer&) = delete;
    raw_peer& operator=(const raw_peer&) = delete;

    int resets() const { return resets_.load(); }

    op& new_op(provider::operation_kind kind, size_t length) {
        std::lock_guard lock(pool_mutex_);
        op& t = pool_.emplace_back();
        t.buffer.resize(length);
        t.o.kind = kind;
        t.o.buffer = length != 0 ? t.buffer.data() : nullptr;
        t.o.length = length;
        t.o.complete = &on_complete;
        t.o.user = &t;
        return t;
    }

    // Connects a new socket to kAddress:port; returns the completion result.
    int64_t connect(uint16_t port) {
        REQUIRE(ops.socket(inst, &s) == 0);
        op& t = new_op(provider::operation_kind::connect, 0);
        const sockaddr_in to = ipv4(port);
        std::memcpy(&t.o.address, &to, sizeof to);
        t.o.address_length = sizeof to;
        REQUIRE(ops.connect(inst, s, &t.o) == 0);
        if (!t.wait(10s)) die("raw peer connect");
        return t.get_result();
    }
    // Listens on an ephemeral port (returned).
    uint16_t listen() {
        return listen_raw(ops, inst, &listener);
    }
    op& start_accept() {
        op& t = new_op(provider::operation_kind::accept, 0);
        REQUIRE(ops.accept(inst, listener, &t.o) == 0);
        return t;
    }
    void accepted(op& t) {
        if (!t.wait(10s)) die("raw peer accept");
        REQUIRE(t.get_result() == 0);
        s = t.o.accepted;
    }

    // Starts sending `bytes`; the returned op completes when the switch's provider took them.
    op& send_bytes(const std::vector<uint8_t>& bytes) {
        op& t = new_op(provider::operation_kind::send, bytes.size());
        std::memcpy(t.buffer.data(), bytes.data(), bytes.size());
        REQUIRE(ops.send(inst, s, &t.o) == 0);
        return t;
    }
    op& send_header(const session::header& h, size_t payload = 0, uint8_t fill = 0x61) {
        std::vector<uint8_t> bytes(session::header_size + payload, fill);
        session::encode(h, bytes.data());
        return send_bytes(bytes);
    }
    // Receives exactly n bytes within `timeout`; nullopt on time-out, else {result, bytes}.
    std::pair<int64_t, std::vector<uint8_t>> recv_exact(size_t n, milliseconds timeout = 10s) {
        op& t = new_op(provider::operation_kind::recv, n);
        t.o.flags = provider::op_wait_all;
        REQUIRE(ops.recv(inst, s, &t.o) == 0);
        if (!t.wait(timeout)) return {1, {}}; // 1: timed out (the op stays pending until destroy)
        return {t.get_result(), t.buffer};
    }
    // Reads the switch's first message: must be HELLO with a window in range; returns it.
    session::header read_hello() {
        auto [rc, bytes] = recv_exact(session::header_size);
        REQUIRE(rc == int64_t(session::header_size));
        const session::header h = session::decode(bytes.data());
        CHECK(h.magic == session::magic);
        CHECK(h.version == session::version);
        CHECK(h.type == session::message_type::hello);
        CHECK(h.length == 0);
        CHECK(h.reserved == 0);
        return h;
    }
    op& send_hello(uint32_t window = 65536) {
        session::header h;
        h.type = session::message_type::hello;
        h.value = window;
        return send_header(h);
    }
    // Waits (bounded) until the connection is reset: a receive fails -ECONNRESET. Bytes
    // arriving meanwhile are skipped. Returns the final receive result (1: time-out).
    int64_t wait_for_reset(milliseconds timeout = 10s) {
        const auto deadline = steady_clock::now() + timeout;
        while (steady_clock::now() < deadline) {
            op& t = new_op(provider::operation_kind::recv, 65536);
            const int rc = ops.recv(inst, s, &t.o);
            if (rc != 0) return rc; // refused: already reset
            if (!t.wait(std::chrono::duration_cast<milliseconds>(deadline - steady_clock::now()) + 1ms)) return 1;
            if (t.get_result() < 0) return t.get_result();
        }
        return 1;
    }
    int close_socket() { return ops.close(inst, s); }

    const provider::ops ops;
    provider::instance* inst = nullptr;
    provider::socket_handle s = 0;
    provider::socket_handle listener = 0;

private:
    static void on_complete(provider::operation& o) noexcept {
        auto* t = static_cast<op*>(o.user);
        {
            std::lock_guard lock(t->mutex);
            t->result = o.result;
            ++t->completions;
        }
        t->changed.notify_all();
    }
    static void on_event(void* context, provider::socket_handle, provider::connection_event, int) noexcept {
        static_cast<raw_peer*>(context)->resets_.fetch_add(1);
    }

    std::atomic<int> resets_{0};
    std::atomic<bool> stop_{false};
    std::mutex pool_mutex_;
    std::deque<op> pool_;
    std::thread progress_;
};

// Checks that a healthy connection between `a` and `b` carries data both ways.
inline void check_healthy(const connection& c, size_t n = 100000) {
    const auto out = pattern_bytes(7, n);
    background<ssize_t> sending("healthy send", [&] { return send_all(c.client, out.data(), out.size()); });
    CHECK(recv_exact(c.server, n) == out);
    CHECK(sending.result() == 0);
    const auto back = pattern_bytes(99, n / 2);
    background<ssize_t> replying("healthy reply", [&] { return send_all(c.server, back.data(), back.size()); });
    CHECK(recv_exact(c.client, n / 2) == back);
    CHECK(replying.result() == 0);
}

} // namespace sansock::switchtest

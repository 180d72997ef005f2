// SPDX-License-Identifier: MIT
// Helpers of the conformance cases: tracked operations, two hosts with progress threads.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "provider/provider.hpp"
#include "tests/conformance/conformance_fixture.hpp"
#include "tests/support/address.hpp"

namespace sansock::conformance {

using provider::connection_event;
using provider::operation;
using provider::operation_kind;
using provider::socket_handle;

// Every completion and up-call notifies this, so tests wait on predicates without polling.
struct board {
    std::mutex mutex;
    std::condition_variable changed;
};
inline board& the_board() {
    static board b;
    return b;
}
inline void notify_board() {
    board& b = the_board();
    { std::lock_guard lock(b.mutex); }
    b.changed.notify_all();
}
// Waits at most timeout_ms for `done()`; returns its final value. Re-checks every 50 ms too,
// for state that changes without a completion (deferred teardown).
template <typename Predicate>
bool wait_until(Predicate done, int timeout_ms) {
    board& b = the_board();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    std::unique_lock lock(b.mutex);
    while (!done()) {
        const auto now = std::chrono::steady_clock::now();
        if (now >= deadline) return done();
        b.changed.wait_for(lock, std::min<std::chrono::steady_clock::duration>(deadline - now, std::chrono::milliseconds(50)));
    }
    return true;
}
// Lets pending events happen (used only to check that something does NOT happen).
inline void settle(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

// An operation that counts its completions.
struct tracked {
    operation op;
    std::atomic<int> completions{0};
    std::atomic<int64_t> result{0};
    std::atomic<std::thread::id> thread{};
    std::atomic<bool>* socket_closed = nullptr; // set when its socket's close has returned
    std::atomic<int> late{0};                   // completions after that
    // For routines that resubmit (streams); called after the bookkeeping above.
    void (*then)(tracked& t) noexcept = nullptr;
    void* context = nullptr;
};

inline void on_tracked_complete(operation& op) noexcept {
    auto* t = static_cast<tracked*>(op.user);
    t->result.store(op.result);
    t->thread.store(std::this_thread::get_id());
    if (t->socket_closed != nullptr && t->socket_closed->load()) t->late.fetch_add(1);
    t->completions.fetch_add(1);
    if (t->then != nullptr) t->then(*t);
    notify_board();
}

inline void prepare(tracked& t, operation_kind kind, void* buffer = nullptr, size_t length = 0) {
    t.op = operation{};
    t.op.kind = kind;
    t.op.buffer = buffer;
    t.op.length = length;
    t.op.complete = &on_tracked_complete;
    t.op.user = &t;
}

using sansock::test::ipv4;

inline void set_address(operation& op, const sockaddr_in& a) {
    std::memcpy(&op.address, &a, sizeof a);
    op.address_length = sizeof a;
}

struct upcall_record {
    socket_handle socket;
    connection_event event;
    int status;
};

// One host's up-calls, and the handles whose close has returned (for late up-calls).
struct host_side {
    std::mutex mutex;
    std::vector<upcall_record> events;
    std::set<socket_handle> closed;
    int late = 0;

    size_t count(socket_handle s, connection_event e) {
        std::lock_guard lock(mutex);
        size_t n = 0;
        for (const auto& r : events) n += r.socket == s && r.event == e;
        return n;
    }
    size_t count_for(socket_handle s) {
        std::lock_guard lock(mutex);
        size_t n = 0;
        for (const auto& r : events) n += r.socket == s;
        return n;
    }
    void mark_closed(socket_handle s) {
        std::lock_guard lock(mutex);
        closed.insert(s);
    }
    int late_upcalls() {
        std::lock_guard lock(mutex);
        return late;
    }
};

inline void on_upcall(void* context, socket_handle s, connection_event e, int status) noexcept {
    auto* side = static_cast<host_side*>(context);
    {
        std::lock_guard lock(side->mutex);
        side->events.push_back({s, e, status});
        if (side->closed.count(s) != 0) ++side->late;
    }
    notify_board();
}

// A small window (4 * 4 KiB per direction) so that flow control is reached quickly.
inline provider::config small_config() {
    provider::config c;
    c.slot_size = 4096;
    c.send_slots = 4;
    c.recv_slots = 4;
    c.max_sockets = 1024;
    return c;
}

// Two hosts from the fixture, each with a background progress thread. Owns storage for
// operations and buffers that must outlive the instances (destroy completes operations).
class two_hosts {
public:
    explicit two_hosts(const provider::config& settings = small_config())
        : fx(the_fixture()), ops(provider::with_defaults(*fx.table)), settings(settings) {
        provider::upcalls a_calls{&side_a, &on_upcall};
        provider::upcalls b_calls{&side_b, &on_upcall};
        REQUIRE(fx.create_hosts(settings, a_calls, b_calls, &h) == 0);
        start_progress(0);
        start_progress(1);
    }
    ~two_hosts() {
        stop_progress(0);
        stop_progress(1);
        fx.destroy_hosts(h);
    }
    two_hosts(const two_hosts&) = delete;
    two_hosts& operator=(const two_hosts&) = delete;

    provider::instance* a() const { return h.a; }
    provider::instance* b() const { return h.b; }
    int timeout() const { return fx.timeout_ms; }

    void start_progress(int which) {
        runner& r = runners[which];
        if (r.thread.joinable()) return;
        r.stop.store(false);
        provider::instance* inst = which == 0 ? h.a : h.b;
        r.thread = std::thread([this, &r, inst] {
            while (!r.stop.load()) ops.progress(inst, 200);
        });
    }
    void stop_progress(int which) {
        runner& r = runners[which];
        if (!r.thread.joinable()) return;
        r.stop.store(true);
        ops.wake(which == 0 ? h.a : h.b);
        r.thread.join();
    }

    tracked& new_op(operation_kind kind, void* buffer = nullptr, size_t length = 0) {
        tracked& t = op_pool.emplace_back();
        prepare(t, kind, buffer, length);
        return t;
    }
    uint8_t* new_buffer(size_t length) { return buffers.emplace_back(length).data(); }

    // A listening socket on b at the fixture's address; its port in *port.
    socket_handle listen_on_b(uint16_t* port, int backlog = 16) {
        socket_handle l = 0;
        REQUIRE(ops.socket(h.b, &l) == 0);
        const sockaddr_in any_port = ipv4(fx.listen_address, 0);
        REQUIRE(ops.bind(h.b, l, reinterpret_cast<const sockaddr*>(&any_port), sizeof any_port) == 0);
        REQUIRE(ops.listen(h.b, l, backlog) == 0);
        sockaddr_in bound{};
        socklen_t length = sizeof bound;
        REQUIRE(ops.getsockname(h.b, l, reinterpret_cast<sockaddr*>(&bound), &length) == 0);
        REQUIRE(bound.sin_family == AF_INET);
        REQUIRE(ntohs(bound.sin_port) != 0);
        *port = ntohs(bound.sin_port);
        return l;
    }

    struct connection {
        socket_handle client = 0; // on a
        socket_handle server = 0; // on b
        socket_handle listener = 0;
    };
    // Connects a client on a to a listener on b and accepts it.
    connection connect() {
        connection c;
        uint16_t port = 0;
        c.listener = listen_on_b(&port);
        REQUIRE(ops.socket(h.a, &c.client) == 0);
        tracked& connect_op = new_op(operation_kind::connect);
        set_address(connect_op.op, ipv4(fx.listen_address, port));
        tracked& accept_op = new_op(operation_kind::accept);
        REQUIRE(ops.accept(h.b, c.listener, &accept_op.op) == 0);
        REQUIRE(ops.connect(h.a, c.client, &connect_op.op) == 0);
        REQUIRE(wait_until([&] { return connect_op.completions.load() == 1 && accept_op.completions.load() == 1; },
                           timeout()));
        REQUIRE(connect_op.result.load() == 0);
        REQUIRE(accept_op.result.load() == 0);
        c.server = accept_op.op.accepted;
        REQUIRE(c.server != provider::invalid_socket);
        return c;
    }

    const fixture& fx;
    const provider::ops ops;
    const provider::config settings;
    host_side side_a;
    host_side side_b;

private:
    struct runner {
        std::thread thread;
        std::atomic<bool> stop{false};
    };
    // Freed after the destructor's destroy_hosts, which may still complete operations.
    std::deque<tracked> op_pool;
    std::deque<std::vector<uint8_t>> buffers;
    hosts h;
    runner runners[2];
};

// Whether `fd` polls readable within timeout_ms.
inline bool readable_within(int fd, int timeout_ms) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, timeout_ms) == 1;
}

// What the data-integrity cases of several files share: a checksum (FNV-1a, with the length),
// seeded random contents, a registration that must succeed.
inline uint64_t checksum(const uint8_t* p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
    return h ^ n;
}

inline void fill_random(uint8_t* p, size_t n, uint32_t seed) {
    std::mt19937 gen(seed);
    for (size_t i = 0; i < n; ++i) p[i] = uint8_t(gen());
}

inline provider::memory_handle register_on(two_hosts& hosts, provider::instance* inst, uint8_t* p, size_t n,
                                           uint32_t access) {
    provider::memory_handle m = provider::invalid_memory;
    REQUIRE(hosts.ops.register_memory(inst, p, n, access, &m) == 0);
    REQUIRE(m != provider::invalid_memory);
    return m;
}

} // namespace sansock::conformance

// SPDX-License-Identifier: MIT
// The provider conformance suite: the provider contract (provider.hpp) as test cases.
#include <sys/un.h>

#include <algorithm>
#include <random>

#include "tests/conformance/conformance_support.hpp"

namespace sansock::conformance {
namespace {

// ---- data integrity ----

// FNV-1a over 64-bit words of the stream (order-sensitive, fast), with byte-wise carry so
// the result does not depend on how the stream was cut into chunks.
struct stream_hash {
    uint64_t h = 0xcbf29ce484222325ull;
    uint64_t word = 0;
    unsigned filled = 0;
    uint64_t total = 0;

    void mix(uint64_t w) { h = (h ^ w) * 0x100000001b3ull; }
    void update(const uint8_t* p, size_t n) {
        total += n;
        while (n > 0 && filled != 0) {
            word |= uint64_t(*p++) << (8 * filled);
            --n;
            if (++filled == 8) {
                mix(word);
                word = 0;
                filled = 0;
            }
        }
        for (; n >= 8; p += 8, n -= 8) {
            uint64_t w;
            std::memcpy(&w, p, 8);
            mix(w);
        }
        while (n > 0) {
            word |= uint64_t(*p++) << (8 * filled++);
            --n;
        }
    }
    uint64_t finish() const {
        stream_hash copy = *this;
        if (copy.filled != 0) copy.mix(copy.word);
        copy.mix(total);
        return copy.h;
    }
};

// Sends `total` bytes taken cyclically from a random source (its length is not a multiple of
// any chunk size, so reordered chunks change the hash), with up to 4 sends in flight.
struct sender {
    const provider::ops* ops = nullptr;
    provider::instance* inst = nullptr;
    socket_handle s = 0;
    std::vector<uint8_t> source;
    uint64_t total = 0;
    std::mutex mutex;
    uint64_t submitted = 0; // bytes handed to the provider (under mutex)
    unsigned chunk_index = 0;
    stream_hash hash;
    std::atomic<uint64_t> acknowledged{0};
    std::atomic<int64_t> error{0};
    tracked ops_in_flight[4];

    // Submits the next chunk on `t` if any remain. Stream order is submission order.
    void submit_next(tracked& t) {
        std::lock_guard lock(mutex);
        if (submitted == total || error.load() != 0) return;
        static constexpr size_t sizes[] = {65536, 1, 4093, 131079, 300000, 16384, 777};
        const size_t at = submitted % source.size();
        const size_t n = std::min<uint64_t>({sizes[chunk_index++ % std::size(sizes)], source.size() - at, total - submitted});
        prepare(t, operation_kind::send, source.data() + at, n);
        t.then = &on_sent;
        t.context = this;
        hash.update(source.data() + at, n);
        submitted += n;
        if (int rc = ops->send(inst, s, &t.op); rc != 0) error.store(rc);
    }
    static void on_sent(tracked& t) noexcept {
        auto* self = static_cast<sender*>(t.context);
        const int64_t r = t.op.result;
        if (r < 0 || size_t(r) != t.op.length) {
            self->error.store(r < 0 ? r : -EIO);
            return;
        }
        self->acknowledged.fetch_add(uint64_t(r));
        self->submit_next(t);
    }
};

// Receives until `total` bytes arrived, one receive in flight (completions of several
// receives would be hashed in completion order, which the contract does not fix).
struct receiver {
    const provider::ops* ops = nullptr;
    provider::instance* inst = nullptr;
    socket_handle s = 0;
    std::vector<uint8_t> buffer = std::vector<uint8_t>(256 * 1024);
    uint64_t total = 0;
    stream_hash hash; // touched only by the routine, one at a time
    std::atomic<uint64_t> received{0};
    std::atomic<int64_t> error{0};
    tracked op;

    void submit() {
        prepare(op, operation_kind::recv, buffer.data(), buffer.size());
        op.then = &on_received;
        op.context = this;
        if (int rc = ops->recv(inst, s, &op.op); rc != 0) error.store(rc);
    }
    static void on_received(tracked& t) noexcept {
        auto* self = static_cast<receiver*>(t.context);
        const int64_t r = t.op.result;
        if (r <= 0 || size_t(r) > t.op.length) {
            self->error.store(r < 0 ? r : -EIO);
            return;
        }
        self->hash.update(self->buffer.data(), size_t(r));
        if (self->received.fetch_add(uint64_t(r)) + uint64_t(r) < self->total) self->submit();
    }
};

TEST_CASE("A connection carries a byte stream intact, with equal checksums at both ends") {
    const fixture& fx = the_fixture();
    uint64_t total = 0;
    SUBCASE("1 MiB") { total = uint64_t(1) << 20; }
    SUBCASE("16 MiB") { total = uint64_t(16) << 20; }
    SUBCASE("the largest size (256 MiB unless the fixture caps it)") {
        total = std::min<uint64_t>(uint64_t(256) << 20, fx.largest_transfer);
    }
    CAPTURE(total);
    sender out;
    receiver in;
    two_hosts hosts{provider::config{}};
    const auto c = hosts.connect();

    out.ops = in.ops = &hosts.ops;
    out.inst = hosts.a();
    out.s = c.client;
    out.total = in.total = total;
    in.inst = hosts.b();
    in.s = c.server;
    std::mt19937_64 random(total);
    out.source.resize((size_t(1) << 20) + 4099);
    for (auto& byte : out.source) byte = uint8_t(random());

    in.submit();
    for (tracked& t : out.ops_in_flight) out.submit_next(t);
    // Allow a slow provider 10 MB/s on top of the fixed bound.
    const int bound = fx.timeout_ms + int(total / (10 * 1000));
    const bool done = wait_until(
        [&] {
            return (in.received.load() == total && out.acknowledged.load() == total) || in.error.load() != 0 ||
                   out.error.load() != 0;
        },
        bound);
    CHECK(done);
    CHECK(out.error.load() == 0);
    CHECK(in.error.load() == 0);
    CHECK(out.acknowledged.load() == total);
    REQUIRE(in.received.load() == total);
    std::lock_guard lock(out.mutex);
    CHECK(in.hash.finish() == out.hash.finish());
    CHECK(hosts.ops.close(hosts.a(), c.client) == 0);
    CHECK(hosts.ops.close(hosts.b(), c.server) == 0);
}

// ---- hard close with pending operations ----

// `count` operations pending on a connected socket (the first `receives` of them receives with
// no data, the rest sends the peer does not read) when it is closed hard.
void check_pending_at_close(size_t count, size_t receives) {
    CAPTURE(count);
    CAPTURE(receives);
    two_hosts hosts;
    const auto c = hosts.connect();
    // Each send is larger than everything the connection can buffer, so none can complete.
    const size_t big = 2 * (size_t(hosts.settings.send_slots) + hosts.settings.recv_slots) * hosts.settings.slot_size;
    uint8_t* send_buffer = hosts.new_buffer(big);
    uint8_t* recv_buffer = hosts.new_buffer(64 * count);
    std::vector<tracked*> pending;
    for (size_t i = 0; i < count; ++i) {
        tracked& t = i < receives ? hosts.new_op(operation_kind::recv, recv_buffer + 64 * i, 64)
                                  : hosts.new_op(operation_kind::send, send_buffer, big);
        const int rc = i < receives ? hosts.ops.recv(hosts.a(), c.client, &t.op) : hosts.ops.send(hosts.a(), c.client, &t.op);
        REQUIRE(rc == 0);
        pending.push_back(&t);
    }
    settle(50);
    for (tracked* t : pending) REQUIRE(t->completions.load() == 0);

    REQUIRE(hosts.ops.close(hosts.a(), c.client) == 0);
    const auto me = std::this_thread::get_id();
    size_t once = 0, cancelled = 0, on_caller = 0;
    for (tracked* t : pending) {
        once += t->completions.load() == 1;
        cancelled += t->result.load() == -ECANCELED;
        on_caller += t->thread.load() == me;
    }
    CHECK(once == count);
    CHECK(cancelled == count);
    CHECK(on_caller == count);
    settle(100);
    for (tracked* t : pending) CHECK(t->completions.load() == 1);
    CHECK(hosts.ops.close(hosts.b(), c.server) == 0);
}

// doctest runs sibling SUBCASEs one at a time (not as a product), so the kinds are a loop.
void check_pending_at_close_all_kinds(size_t count) {
    check_pending_at_close(count, count);           // receives with no data
    check_pending_at_close(count, 0);               // sends the peer does not read
    check_pending_at_close(count, (count + 1) / 2); // both
}

TEST_CASE("Operations pending at a hard close complete once each with -ECANCELED before close returns") {
    SUBCASE("1 operation") { check_pending_at_close_all_kinds(1); }
    SUBCASE("16 operations") { check_pending_at_close_all_kinds(16); }
    SUBCASE("256 operations") { check_pending_at_close_all_kinds(256); }
}

// ---- the peer's view of a hard close ----

TEST_CASE("The peer of a hard close gets -ECONNRESET on pending and later I/O and one peer_reset") {
    two_hosts hosts;
    const auto c = hosts.connect();
    const size_t big = 2 * (size_t(hosts.settings.send_slots) + hosts.settings.recv_slots) * hosts.settings.slot_size;
    uint8_t* buffer = hosts.new_buffer(big);
    tracked& pending_recv = hosts.new_op(operation_kind::recv, hosts.new_buffer(64), 64);
    REQUIRE(hosts.ops.recv(hosts.b(), c.server, &pending_recv.op) == 0);
    tracked& pending_send = hosts.new_op(operation_kind::send, buffer, big); // a does not read
    REQUIRE(hosts.ops.send(hosts.b(), c.server, &pending_send.op) == 0);
    settle(20);
    REQUIRE(pending_recv.completions.load() == 0);
    REQUIRE(pending_send.completions.load() == 0);

    REQUIRE(hosts.ops.close(hosts.a(), c.client) == 0);
    REQUIRE(wait_until([&] { return pending_recv.completions.load() == 1 && pending_send.completions.load() == 1; },
                       hosts.timeout()));
    CHECK(pending_recv.result.load() == -ECONNRESET);
    CHECK(pending_send.result.load() == -ECONNRESET);
    REQUIRE(wait_until([&] { return hosts.side_b.count(c.server, connection_event::peer_reset) >= 1; }, hosts.timeout()));

    tracked& later_send = hosts.new_op(operation_kind::send, buffer, 64);
    tracked& later_recv = hosts.new_op(operation_kind::recv, buffer, 64);
    CHECK(hosts.ops.send(hosts.b(), c.server, &later_send.op) == -ECONNRESET);
    CHECK(hosts.ops.recv(hosts.b(), c.server, &later_recv.op) == -ECONNRESET);
    settle(200);
    CHECK(later_send.completions.load() == 0);
    CHECK(later_recv.completions.load() == 0);
    CHECK(pending_recv.completions.load() == 1);
    CHECK(pending_send.completions.load() == 1);
    CHECK(hosts.side_b.count(c.server, connection_event::peer_reset) == 1);
    {
        std::lock_guard lock(hosts.side_b.mutex);
        for (const auto& r : hosts.side_b.events)
            if (r.socket == c.server) CHECK(r.status == -ECONNRESET);
    }
    CHECK(hosts.ops.close(hosts.b(), c.server) == 0);
}

// ---- SO_ERROR ----

int so_error(const provider::ops& ops, provider::instance* inst, socket_handle s) {
    int value = -1;
    socklen_t length = sizeof value;
    REQUIRE(ops.getsockopt(inst, s, SOL_SOCKET, SO_ERROR, &value, &length) == 0);
    CHECK(length == sizeof value);
    return value;
}

TEST_CASE("SO_ERROR is the socket's failure as a positive errno (0 while healthy), not cleared by reading") {
    two_hosts hosts;
    const auto& ops = hosts.ops;
    SUBCASE("a connection whose peer closed hard") {
        const auto c = hosts.connect();
        CHECK(so_error(ops, hosts.a(), c.client) == 0);
        CHECK(so_error(ops, hosts.b(), c.server) == 0);
        REQUIRE(ops.close(hosts.a(), c.client) == 0);
        REQUIRE(wait_until([&] { return hosts.side_b.count(c.server, connection_event::peer_reset) >= 1; },
                           hosts.timeout()));
        CHECK(so_error(ops, hosts.b(), c.server) == ECONNRESET);
        CHECK(so_error(ops, hosts.b(), c.server) == ECONNRESET); // stays
        CHECK(ops.close(hosts.b(), c.server) == 0);
        CHECK(ops.close(hosts.b(), c.listener) == 0);
    }
    SUBCASE("a refused connect: the error it completed with") {
        socket_handle bound = 0; // bound, not listening: nobody can listen on its port
        REQUIRE(ops.socket(hosts.b(), &bound) == 0);
        const sockaddr_in any_port = ipv4(hosts.fx.listen_address, 0);
        REQUIRE(ops.bind(hosts.b(), bound, reinterpret_cast<const sockaddr*>(&any_port), sizeof any_port) == 0);
        sockaddr_in name{};
        socklen_t length = sizeof name;
        REQUIRE(ops.getsockname(hosts.b(), bound, reinterpret_cast<sockaddr*>(&name), &length) == 0);
        socket_handle s = 0;
        REQUIRE(ops.socket(hosts.a(), &s) == 0);
        CHECK(so_error(ops, hosts.a(), s) == 0);
        tracked& con = hosts.new_op(operation_kind::connect);
        set_address(con.op, name);
        REQUIRE(ops.connect(hosts.a(), s, &con.op) == 0);
        REQUIRE(wait_until([&] { return con.completions.load() == 1; }, hosts.timeout()));
        const int64_t r = con.result.load();
        REQUIRE(r < 0);
        CHECK(so_error(ops, hosts.a(), s) == -r);
        CHECK(ops.close(hosts.a(), s) == 0);
        CHECK(ops.close(hosts.b(), bound) == 0);
    }
}

// ---- stale handles ----

// Every entry that takes a socket, with `s`, must give -ENOTSOCK.
void check_every_entry_refuses(two_hosts& hosts, provider::instance* inst, socket_handle s) {
    const auto& ops = hosts.ops;
    uint8_t* buffer = hosts.new_buffer(16);
    const sockaddr_in address = ipv4(hosts.fx.listen_address, 0);
    const auto* sa = reinterpret_cast<const sockaddr*>(&address);
    CHECK(ops.bind(inst, s, sa, sizeof address) == -ENOTSOCK);
    CHECK(ops.listen(inst, s, 4) == -ENOTSOCK);
    tracked& acc = hosts.new_op(operation_kind::accept);
    CHECK(ops.accept(inst, s, &acc.op) == -ENOTSOCK);
    tracked& con = hosts.new_op(operation_kind::connect);
    set_address(con.op, ipv4(hosts.fx.listen_address, 9));
    CHECK(ops.connect(inst, s, &con.op) == -ENOTSOCK);
    tracked& snd = hosts.new_op(operation_kind::send, buffer, 16);
    CHECK(ops.send(inst, s, &snd.op) == -ENOTSOCK);
    tracked& rcv = hosts.new_op(operation_kind::recv, buffer, 16);
    CHECK(ops.recv(inst, s, &rcv.op) == -ENOTSOCK);
    sockaddr_in name{};
    socklen_t length = sizeof name;
    CHECK(ops.getsockname(inst, s, reinterpret_cast<sockaddr*>(&name), &length) == -ENOTSOCK);
    length = sizeof name;
    CHECK(ops.getpeername(inst, s, reinterpret_cast<sockaddr*>(&name), &length) == -ENOTSOCK);
    int value = 0;
    socklen_t value_length = sizeof value;
    CHECK(ops.getsockopt(inst, s, SOL_SOCKET, SO_RCVBUF, &value, &value_length) == -ENOTSOCK);
    CHECK(ops.setsockopt(inst, s, SOL_SOCKET, SO_RCVBUF, &value, sizeof value) == -ENOTSOCK);
    CHECK(ops.close(inst, s) == -ENOTSOCK);
    settle(20);
    for (tracked* t : {&acc, &con, &snd, &rcv}) CHECK(t->completions.load() == 0);
}

TEST_CASE("A closed handle gives -ENOTSOCK for every entry, also after its slot was reused") {
    // Four slots per instance: of the first four sockets opened on a afterwards (its only
    // ones) one must take the stale handle's slot, so the reuse is certain, not hoped for.
    provider::config four = small_config();
    four.max_sockets = 4;
    two_hosts hosts(four);
    const auto& ops = hosts.ops;
    socket_handle stale = 0;
    SUBCASE("a socket that was never connected") {
        REQUIRE(ops.socket(hosts.a(), &stale) == 0);
        REQUIRE(ops.close(hosts.a(), stale) == 0);
    }
    SUBCASE("a connected socket") {
        const auto c = hosts.connect();
        stale = c.client;
        REQUIRE(ops.close(hosts.a(), stale) == 0);
        CHECK(ops.close(hosts.b(), c.server) == 0);
    }
    check_every_entry_refuses(hosts, hosts.a(), stale);

    // Open sockets until one reuses the stale handle's slot (low 32 bits).
    std::vector<socket_handle> fresh;
    bool reused = false;
    for (uint32_t i = 0; i < four.max_sockets && !reused; ++i) {
        socket_handle s = 0;
        REQUIRE(ops.socket(hosts.a(), &s) == 0);
        CHECK(s != stale);
        fresh.push_back(s);
        reused = uint32_t(s) == uint32_t(stale);
    }
    REQUIRE_MESSAGE(reused, "no socket took the stale handle's slot: the check below would prove nothing");
    check_every_entry_refuses(hosts, hosts.a(), stale);
    // The new sockets are unaffected.
    for (socket_handle s : fresh) {
        sockaddr_in name{};
        socklen_t length = sizeof name;
        CHECK(ops.getsockname(hosts.a(), s, reinterpret_cast<sockaddr*>(&name), &length) == 0);
        CHECK(ops.close(hosts.a(), s) == 0);
    }
}

// ---- nothing after close ----

TEST_CASE("Nothing is signalled for a socket after its close returned") {
    SUBCASE("a completion and an up-call queued but not delivered when close is called") {
        two_hosts hosts;
        const auto c = hosts.connect();
        hosts.stop_progress(0); // a delivers nothing until we say so
        uint8_t* buffer = hosts.new_buffer(64);
        std::atomic<bool> closed{false};
        tracked& recv = hosts.new_op(operation_kind::recv, buffer, 64);
        recv.socket_closed = &closed;
        REQUIRE(hosts.ops.recv(hosts.a(), c.client, &recv.op) == 0);
        REQUIRE(hosts.ops.close(hosts.b(), c.server) == 0); // a's recv fails, a's peer_reset queued
        readable_within(hosts.ops.event_fd(hosts.a()), hosts.timeout());
        settle(50);
        REQUIRE(hosts.ops.close(hosts.a(), c.client) == 0);
        closed.store(true);
        hosts.side_a.mark_closed(c.client);
        // Delivered inside close: unchanged (-ECONNRESET) or converted (-ECANCELED).
        CHECK(recv.completions.load() == 1);
        CHECK((recv.result.load() == -ECONNRESET || recv.result.load() == -ECANCELED));
        hosts.start_progress(0);
        settle(200);
        CHECK(recv.completions.load() == 1);
        CHECK(recv.late.load() == 0);
        CHECK(hosts.side_a.count_for(c.client) == 0);
    }
    SUBCASE("both ends closing at the same time, repeatedly") {
        for (int round = 0; round < 20; ++round) {
            CAPTURE(round);
            two_hosts hosts;
            const auto c = hosts.connect();
            uint8_t* buffer = hosts.new_buffer(128);
            std::atomic<bool> a_closed{false}, b_closed{false};
            tracked& ra = hosts.new_op(operation_kind::recv, buffer, 64);
            ra.socket_closed = &a_closed;
            tracked& rb = hosts.new_op(operation_kind::recv, buffer + 64, 64);
            rb.socket_closed = &b_closed;
            REQUIRE(hosts.ops.recv(hosts.a(), c.client, &ra.op) == 0);
            REQUIRE(hosts.ops.recv(hosts.b(), c.server, &rb.op) == 0);
            std::thread other([&] {
                if (round % 2 == 0) settle(round % 4);
                CHECK(hosts.ops.close(hosts.b(), c.server) == 0);
                b_closed.store(true);
                hosts.side_b.mark_closed(c.server);
            });
            if (round % 2 == 1) settle(round % 4);
            REQUIRE(hosts.ops.close(hosts.a(), c.client) == 0);
            a_closed.store(true);
            hosts.side_a.mark_closed(c.client);
            CHECK(ra.completions.load() == 1);
            other.join();
            CHECK(rb.completions.load() == 1);
            settle(20);
            CHECK(ra.late.load() == 0);
            CHECK(rb.late.load() == 0);
            CHECK(hosts.side_a.late_upcalls() == 0);
            CHECK(hosts.side_b.late_upcalls() == 0);
            CHECK(hosts.side_a.count_for(c.client) <= 1);
            CHECK(hosts.side_b.count_for(c.server) <= 1);
        }
    }
}

// A completion routine that is still running when close is called on its socket.
struct slow_routine {
    std::atomic<bool> started{false};
    std::atomic<bool> finished{false};
    static void run(tracked& t) noexcept {
        auto* self = static_cast<slow_routine*>(t.context);
        self->started.store(true);
        notify_board();
        settle(300);
        self->finished.store(true);
    }
};

TEST_CASE("close waits for a completion routine of its socket that progress is running") {
    slow_routine slow;
    two_hosts hosts;
    const auto c = hosts.connect();
    tracked& recv = hosts.new_op(operation_kind::recv, hosts.new_buffer(8), 8);
    recv.then = &slow_routine::run;
    recv.context = &slow;
    REQUIRE(hosts.ops.recv(hosts.a(), c.client, &recv.op) == 0);
    tracked& send = hosts.new_op(operation_kind::send, hosts.new_buffer(8), 8);
    REQUIRE(hosts.ops.send(hosts.b(), c.server, &send.op) == 0);
    REQUIRE(wait_until([&] { return slow.started.load(); }, hosts.timeout()));
    REQUIRE(hosts.ops.close(hosts.a(), c.client) == 0);
    // Nothing for the socket runs after close returned: the routine has finished.
    CHECK(slow.finished.load());
    CHECK(recv.completions.load() == 1);
    CHECK(hosts.ops.close(hosts.b(), c.server) == 0);
}

// ---- close racing with sends ----

// A receiver that reads and discards until its connection fails.
struct drain {
    const provider::ops* ops = nullptr;
    provider::instance* inst = nullptr;
    socket_handle s = 0;
    std::vector<uint8_t> buffer = std::vector<uint8_t>(256 * 1024);
    tracked op;
    std::atomic<bool> stopped{false};

    void submit() {
        prepare(op, operation_kind::recv, buffer.data(), buffer.size());
        op.then = &on_received;
        op.context = this;
        if (ops->recv(inst, s, &op.op) != 0) stopped.store(true);
    }
    static void on_received(tracked& t) noexcept {
        auto* self = static_cast<drain*>(t.context);
        if (t.op.result > 0)
            self->submit();
        else
            self->stopped.store(true);
    }
};

// Totals of the close-racing-sends case, per completion (a racing_send is reused).
struct race_totals {
    std::atomic<int> doubles{0};
    std::atomic<uint64_t> accepted{0}, completed{0}, sent{0}, cancelled{0}, other{0};
    size_t chunk = 0;
};

struct racing_send {
    tracked t;
    std::atomic<bool> in_flight{false};
    race_totals* totals = nullptr;
    static void on_done(tracked& t) noexcept {
        auto* self = static_cast<racing_send*>(t.context);
        race_totals& totals = *self->totals;
        const int64_t r = t.op.result;
        if (r == int64_t(totals.chunk))
            totals.sent.fetch_add(1);
        else if (r == -ECANCELED)
            totals.cancelled.fetch_add(1);
        else
            totals.other.fetch_add(1);
        totals.completed.fetch_add(1);
        if (!self->in_flight.exchange(false)) totals.doubles.fetch_add(1);
    }
};

TEST_CASE("Closing from another thread while sends are in flight completes every send exactly once") {
    for (int round = 0; round < 6; ++round) {
        CAPTURE(round);
        race_totals totals;
        totals.chunk = 256 * 1024;
        racing_send sends[8];
        drain reader;
        std::vector<uint8_t> data(totals.chunk, 0x5a);
        two_hosts hosts{provider::config{}};
        const auto c = hosts.connect();
        reader.ops = &hosts.ops;
        reader.inst = hosts.b();
        reader.s = c.server;
        reader.submit();

        std::atomic<int> refused{0};
        std::thread sending([&] {
            const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(hosts.timeout());
            while (std::chrono::steady_clock::now() < deadline) {
                racing_send* free_send = nullptr;
                wait_until(
                    [&] {
                        for (auto& s : sends)
                            if (!s.in_flight.load()) return (free_send = &s), true;
                        return false;
                    },
                    100);
                if (free_send == nullptr) continue;
                prepare(free_send->t, operation_kind::send, data.data(), totals.chunk);
                free_send->t.then = &racing_send::on_done;
                free_send->t.context = free_send;
                free_send->totals = &totals;
                free_send->in_flight.store(true);
                const int rc = hosts.ops.send(hosts.a(), c.client, &free_send->t.op);
                if (rc != 0) {
                    free_send->in_flight.store(false);
                    refused.store(rc);
                    return;
                }
                totals.accepted.fetch_add(1);
            }
        });
        settle(5 * round);
        std::thread closing([&] { CHECK(hosts.ops.close(hosts.a(), c.client) == 0); });
        closing.join();
        // Every send accepted before close has completed by now; later ones were refused.
        sending.join();
        for (auto& s : sends) CHECK_FALSE(s.in_flight.load());
        CHECK(totals.doubles.load() == 0);
        CHECK(refused.load() == -ENOTSOCK);
        CHECK(totals.completed.load() == totals.accepted.load());
        CHECK(totals.other.load() == 0);
        CHECK(totals.sent.load() + totals.cancelled.load() == totals.accepted.load());
        CHECK(wait_until([&] { return reader.stopped.load(); }, hosts.timeout()));
        CHECK(hosts.ops.close(hosts.b(), c.server) == 0);
    }
}

// ---- listener close ----

TEST_CASE("Closing a listener cancels its pending accepts and resets connections it never accepted") {
    two_hosts hosts;
    const auto& ops = hosts.ops;
    SUBCASE("pending accepts complete -ECANCELED before close returns") {
        uint16_t port = 0;
        const socket_handle l = hosts.listen_on_b(&port);
        std::vector<tracked*> accepts;
        for (int i = 0; i < 3; ++i) {
            tracked& t = hosts.new_op(operation_kind::accept);
            REQUIRE(ops.accept(hosts.b(), l, &t.op) == 0);
            accepts.push_back(&t);
        }
        settle(20);
        for (tracked* t : accepts) REQUIRE(t->completions.load() == 0);
        REQUIRE(ops.close(hosts.b(), l) == 0);
        for (tracked* t : accepts) {
            CHECK(t->completions.load() == 1);
            CHECK(t->result.load() == -ECANCELED);
        }
        settle(50);
        for (tracked* t : accepts) CHECK(t->completions.load() == 1);
    }
    SUBCASE("a connection that arrived but was never accepted is reset") {
        uint16_t port = 0;
        const socket_handle l = hosts.listen_on_b(&port);
        socket_handle client = 0;
        REQUIRE(ops.socket(hosts.a(), &client) == 0);
        tracked& con = hosts.new_op(operation_kind::connect);
        set_address(con.op, ipv4(hosts.fx.listen_address, port));
        REQUIRE(ops.connect(hosts.a(), client, &con.op) == 0);
        REQUIRE(wait_until([&] { return con.completions.load() == 1; }, hosts.timeout()));
        REQUIRE(con.result.load() == 0);
        uint8_t* buffer = hosts.new_buffer(64);
        tracked& recv = hosts.new_op(operation_kind::recv, buffer, 64);
        REQUIRE(ops.recv(hosts.a(), client, &recv.op) == 0);
        REQUIRE(ops.close(hosts.b(), l) == 0);
        REQUIRE(wait_until([&] { return recv.completions.load() == 1; }, hosts.timeout()));
        CHECK(recv.result.load() == -ECONNRESET);
        CHECK(wait_until([&] { return hosts.side_a.count(client, connection_event::peer_reset) == 1; }, hosts.timeout()));
        CHECK(ops.close(hosts.a(), client) == 0);
    }
}

// ---- bad input ----

TEST_CASE("Bad input is refused with the documented errno and no completion") {
    two_hosts hosts;
    const auto& ops = hosts.ops;
    uint8_t* buffer = hosts.new_buffer(64);
    socket_handle s = 0;
    REQUIRE(ops.socket(hosts.a(), &s) == 0);

    SUBCASE("unknown handles") {
        for (socket_handle bogus : {socket_handle(0), socket_handle(0xdeadbeef12345678ull), socket_handle(s + (1ull << 32))}) {
            CAPTURE(bogus);
            CHECK(ops.close(hosts.a(), bogus) == -ENOTSOCK);
            tracked& t = hosts.new_op(operation_kind::send, buffer, 8);
            CHECK(ops.send(hosts.a(), bogus, &t.op) == -ENOTSOCK);
            CHECK(ops.listen(hosts.a(), bogus, 1) == -ENOTSOCK);
        }
    }
    SUBCASE("addresses of other families, and an AF_INET6 one shorter than sockaddr_in6") {
        sockaddr_in6 six{};
        six.sin6_family = AF_INET6;
        six.sin6_addr = in6addr_loopback;
        CHECK(ops.bind(hosts.a(), s, reinterpret_cast<const sockaddr*>(&six), sizeof six - 1) == -EINVAL);
        sockaddr_un unix_address{};
        unix_address.sun_family = AF_UNIX;
        std::strcpy(unix_address.sun_path, "/tmp/sansock-conformance");
        CHECK(ops.bind(hosts.a(), s, reinterpret_cast<const sockaddr*>(&unix_address), sizeof unix_address) ==
              -EAFNOSUPPORT);
        tracked& con = hosts.new_op(operation_kind::connect);
        std::memcpy(&con.op.address, &unix_address, sizeof unix_address);
        con.op.address_length = sizeof unix_address;
        CHECK(ops.connect(hosts.a(), s, &con.op) == -EAFNOSUPPORT);
        settle(20);
        CHECK(con.completions.load() == 0);
    }
    SUBCASE("null or short addresses") {
        const sockaddr_in good = ipv4(hosts.fx.listen_address, 0);
        CHECK(ops.bind(hosts.a(), s, nullptr, sizeof good) == -EINVAL);
        CHECK(ops.bind(hosts.a(), s, reinterpret_cast<const sockaddr*>(&good), sizeof good - 1) == -EINVAL);
        CHECK(ops.bind(hosts.a(), s, reinterpret_cast<const sockaddr*>(&good), 0) == -EINVAL);
        tracked& con = hosts.new_op(operation_kind::connect);
        set_address(con.op, good);
        con.op.address_length = sizeof good - 1;
        CHECK(ops.connect(hosts.a(), s, &con.op) == -EINVAL);
        sockaddr_in name{};
        CHECK(ops.getsockname(hosts.a(), s, reinterpret_cast<sockaddr*>(&name), nullptr) == -EINVAL);
    }
    SUBCASE("connect to a port nobody listens on is refused") {
        // Bound but not listening, so the port stays ours and nobody can listen on it.
        socket_handle bound = 0;
        REQUIRE(ops.socket(hosts.b(), &bound) == 0);
        const sockaddr_in any_port = ipv4(hosts.fx.listen_address, 0);
        REQUIRE(ops.bind(hosts.b(), bound, reinterpret_cast<const sockaddr*>(&any_port), sizeof any_port) == 0);
        sockaddr_in name{};
        socklen_t length = sizeof name;
        REQUIRE(ops.getsockname(hosts.b(), bound, reinterpret_cast<sockaddr*>(&name), &length) == 0);
        tracked& con = hosts.new_op(operation_kind::connect);
        set_address(con.op, name);
        REQUIRE(ops.connect(hosts.a(), s, &con.op) == 0);
        REQUIRE(wait_until([&] { return con.completions.load() == 1; }, hosts.timeout()));
        const int64_t r = con.result.load();
        CAPTURE(r);
        CHECK((r == -ECONNREFUSED || r == -ETIMEDOUT || r == -EHOSTUNREACH));
        CHECK(ops.close(hosts.b(), bound) == 0);
    }
    SUBCASE("invalid operations") {
        const auto c = hosts.connect();
        tracked& zero = hosts.new_op(operation_kind::send, buffer, 0);
        CHECK(ops.send(hosts.a(), c.client, &zero.op) == -EINVAL);
        tracked& zero_recv = hosts.new_op(operation_kind::recv, buffer, 0);
        CHECK(ops.recv(hosts.a(), c.client, &zero_recv.op) == -EINVAL);
        tracked& no_buffer = hosts.new_op(operation_kind::send, nullptr, 8);
        CHECK(ops.send(hosts.a(), c.client, &no_buffer.op) == -EINVAL);
        CHECK(ops.send(hosts.a(), c.client, nullptr) == -EINVAL);
        CHECK(ops.recv(hosts.a(), c.client, nullptr) == -EINVAL);
        tracked& no_routine = hosts.new_op(operation_kind::send, buffer, 8);
        no_routine.op.complete = nullptr;
        CHECK(ops.send(hosts.a(), c.client, &no_routine.op) == -EINVAL);
        tracked& wrong_kind = hosts.new_op(operation_kind::recv, buffer, 8);
        CHECK(ops.send(hosts.a(), c.client, &wrong_kind.op) == -EINVAL);
        settle(20);
        for (tracked* t : {&zero, &zero_recv, &no_buffer, &wrong_kind}) CHECK(t->completions.load() == 0);
        CHECK(ops.close(hosts.a(), c.client) == 0);
        CHECK(ops.close(hosts.b(), c.server) == 0);
    }
    SUBCASE("operations in the wrong state") {
        tracked& snd = hosts.new_op(operation_kind::send, buffer, 8);
        CHECK(ops.send(hosts.a(), s, &snd.op) == -ENOTCONN);
        tracked& acc = hosts.new_op(operation_kind::accept);
        CHECK(ops.accept(hosts.a(), s, &acc.op) == -EINVAL);
        uint16_t port = 0;
        const socket_handle l = hosts.listen_on_b(&port);
        CHECK(ops.listen(hosts.b(), l, 4) == -EINVAL);
        const auto c = hosts.connect();
        tracked& again = hosts.new_op(operation_kind::connect);
        set_address(again.op, ipv4(hosts.fx.listen_address, port));
        CHECK(ops.connect(hosts.a(), c.client, &again.op) == -EISCONN);
        settle(20);
        CHECK(again.completions.load() == 0);
        CHECK(ops.close(hosts.a(), c.client) == 0);
        CHECK(ops.close(hosts.b(), c.server) == 0);
        CHECK(ops.close(hosts.b(), l) == 0);
    }
    CHECK(ops.close(hosts.a(), s) == 0);
}

// ---- memory accounting ----

TEST_CASE("query_memory reports registered memory consistent with the configuration") {
    // The expectations come from the configuration and from the connections this case made,
    // never from the provider's own counts: registered_bytes == connections * per_connection
    // with both read from the provider would hold whatever the provider registered.
    two_hosts hosts;
    const auto& cfg = hosts.settings;
    const uint64_t per_connection = (uint64_t(cfg.send_slots) + cfg.recv_slots) * cfg.slot_size;
    auto stats_of = [&](provider::instance* inst) {
        provider::memory_stats m{};
        REQUIRE(hosts.ops.query_memory(inst, &m) == 0);
        return m;
    };
    CHECK(stats_of(hosts.a()).connections == 0);
    CHECK(stats_of(hosts.a()).registered_bytes == stats_of(hosts.a()).shared_bytes);
    constexpr uint64_t made = 3; // each with one end on a and one on b
    std::vector<two_hosts::connection> connections;
    for (uint64_t i = 0; i < made; ++i) connections.push_back(hosts.connect());
    const provider::memory_stats a = stats_of(hosts.a());
    const provider::memory_stats b = stats_of(hosts.b());
    CHECK(a.per_connection_bytes == per_connection);
    CHECK(a.connections == made);
    CHECK(a.sockets == made);
    CHECK(a.registered_bytes == a.shared_bytes + made * per_connection);
    CHECK(b.connections == made);
    CHECK(b.sockets == 2 * made); // listeners and accepted sockets
    CHECK(b.registered_bytes == b.shared_bytes + made * per_connection);
    // One connection less: its ends' memory goes, the others' stays.
    REQUIRE(hosts.ops.close(hosts.a(), connections[0].client) == 0);
    REQUIRE(hosts.ops.close(hosts.b(), connections[0].server) == 0);
    auto registered_is = [&](provider::instance* inst, uint64_t count) {
        return wait_until(
            [&] {
                provider::memory_stats now{};
                return hosts.ops.query_memory(inst, &now) == 0 && now.connections == count &&
                       now.registered_bytes == now.shared_bytes + count * per_connection;
            },
            hosts.timeout());
    };
    CHECK(registered_is(hosts.a(), made - 1));
    CHECK(registered_is(hosts.b(), made - 1));
    for (const auto& c : connections) {
        if (&c != &connections[0]) {
            REQUIRE(hosts.ops.close(hosts.a(), c.client) == 0);
            REQUIRE(hosts.ops.close(hosts.b(), c.server) == 0);
        }
        REQUIRE(hosts.ops.close(hosts.b(), c.listener) == 0);
    }
    // Teardown may be deferred: wait for the connections' memory to be released.
    CHECK(registered_is(hosts.a(), 0));
    CHECK(registered_is(hosts.b(), 0));
    CHECK(wait_until(
        [&] {
            provider::memory_stats now{};
            return hosts.ops.query_memory(hosts.a(), &now) == 0 && now.connections == 0 && now.sockets == 0;
        },
        hosts.timeout()));
}

} // namespace
} // namespace sansock::conformance

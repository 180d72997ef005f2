// SPDX-License-Identifier: MIT
// sansock_context_stats: every counter moves exactly as its comment in sansock.h says, for
// each close mode and each kind of reset; registered_bytes follows the connections; short
// sizes get the leading whole fields; NULL and too small are -EINVAL.
#include <atomic>
#include <chrono>
#include <cstddef>
#include <thread>

#include "tests/switch/switch_test_support.hpp"

namespace sansock::switchtest {
namespace {

struct sansock_context_stats stats_of(sansock_context* ctx) {
    struct sansock_context_stats s{};
    s.size = sizeof s;
    REQUIRE(sansock_context_stats(ctx, &s) == 0);
    return s;
}

// The counters a test expects (registered_bytes is checked separately).
struct expected {
    uint64_t opened = 0, accepted = 0;
    uint64_t dontlinger = 0, abortive = 0, linger = 0;
    uint64_t graceful_completed = 0, graceful_timed_out = 0;
    uint64_t sent[SANSOCK_RESET_REASONS] = {};
    uint64_t received[SANSOCK_RESET_REASONS] = {};
    uint64_t bytes_sent = 0, bytes_received = 0;
};

bool same(const struct sansock_context_stats& s, const expected& e) {
    for (int r = 0; r < SANSOCK_RESET_REASONS; ++r)
        if (s.resets_sent[r] != e.sent[r] || s.resets_received[r] != e.received[r]) return false;
    return s.connections_opened == e.opened && s.connections_accepted == e.accepted && s.closes_dontlinger == e.dontlinger &&
           s.closes_abortive == e.abortive && s.closes_linger == e.linger && s.graceful_completed == e.graceful_completed &&
           s.graceful_timed_out == e.graceful_timed_out && s.bytes_sent == e.bytes_sent && s.bytes_received == e.bytes_received;
}

// Waits (bounded) until the context's counters are `e`, then checks each (so a failure names
// the counter); they must stay so a little longer (nothing counted twice).
void check_counters(const char* which, sansock_context* ctx, const expected& e) {
    CAPTURE(which);
    eventually([&] { return same(stats_of(ctx), e); });
    settle(50ms);
    const struct sansock_context_stats s = stats_of(ctx);
    CHECK(s.connections_opened == e.opened);
    CHECK(s.connections_accepted == e.accepted);
    CHECK(s.closes_dontlinger == e.dontlinger);
    CHECK(s.closes_abortive == e.abortive);
    CHECK(s.closes_linger == e.linger);
    CHECK(s.graceful_completed == e.graceful_completed);
    CHECK(s.graceful_timed_out == e.graceful_timed_out);
    for (int r = 0; r < SANSOCK_RESET_REASONS; ++r) {
        CAPTURE(r);
        CHECK(s.resets_sent[r] == e.sent[r]);
        CHECK(s.resets_received[r] == e.received[r]);
    }
    CHECK(s.bytes_sent == e.bytes_sent);
    CHECK(s.bytes_received == e.bytes_received);
}

// Sends n pattern bytes from `from` and reads them on `to`.
void transfer(sansock_socket_t from, sansock_socket_t to, size_t n) {
    const auto data = pattern_bytes(0, n);
    background<ssize_t> sending("send", [&] { return send_all(from, data.data(), data.size()); });
    CHECK(recv_exact(to, n) == data);
    CHECK(sending.result() == 0);
}

TEST_CASE("A fresh context counts nothing") {
    world w;
    sansock_context* a = w.host();
    check_counters("fresh", a, {});
    CHECK(stats_of(a).registered_bytes == 0);
}

TEST_CASE("DONTLINGER closes on both ends: connects, accepts, closes, graceful completions and bytes both ways") {
    watchdog guard("stats, DONTLINGER");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    const uint64_t a_memory = stats_of(a).registered_bytes;
    const connection c = connect_pair(a, b);
    CHECK(stats_of(a).registered_bytes > a_memory); // the connection's buffers
    CHECK(stats_of(b).registered_bytes > 0);
    transfer(c.client, c.server, 300000);
    transfer(c.server, c.client, 12345);
    REQUIRE(sansock_close(c.client) == 0);
    char byte = 0;
    CHECK(bounded("recv end", [&] { return sansock_recv(c.server, &byte, 1, 0); }) == 0);
    REQUIRE(sansock_close(c.server) == 0);
    REQUIRE(sansock_close(c.listener) == 0);
    expected ea;
    ea.opened = 1;
    ea.dontlinger = 1;
    ea.graceful_completed = 1;
    ea.bytes_sent = 300000;
    ea.bytes_received = 12345;
    check_counters("client", a, ea);
    expected eb;
    eb.accepted = 1;
    eb.dontlinger = 2; // the accepted socket and the listener
    eb.graceful_completed = 1;
    eb.bytes_sent = 12345;
    eb.bytes_received = 300000;
    check_counters("server", b, eb);
    // Back where it started once the connections are gone.
    CHECK(eventually([&] { return stats_of(a).registered_bytes == a_memory; }));
    CHECK(eventually([&] { return stats_of(b).registered_bytes == 0; }));
}

// Counts the client's register_memory calls (the loopback provider's otherwise).
std::atomic<int> registrations{0};
int counting_register(provider::instance* self, void* address, size_t length, uint32_t access,
                      provider::memory_handle* out) {
    ++registrations;
    return loopback_ops.register_memory(self, address, length, access, out);
}
const provider::ops& counting_ops() {
    static const provider::ops table = loopback_ops_with("counting-loopback", [](provider::ops& t) { t.register_memory = &counting_register; });
    return table;
}

TEST_CASE("Version 3: a closed connection's pool stays registered for the next connection, then goes") {
    watchdog guard("stats, pool reuse");
    world w;
    w.session_version = 3;
    host_options counted;
    counted.provider_ops = &counting_ops();
    registrations = 0;
    sansock_context* a = w.host(counted);
    sansock_context* b = w.host();
    const connection c = connect_pair(a, b);
    const uint64_t pool = stats_of(a).registered_bytes;
    REQUIRE(pool > 0);
    CHECK(registrations == 1);
    REQUIRE(set_linger(c.client, 1, 0) == 0);
    REQUIRE(sansock_close(c.client) == 0);
    CHECK(wait_for_recv_error(c.server) == -ECONNRESET);
    REQUIRE(sansock_close(c.server) == 0);
    // A few progress rounds (each at most 100 ms): the pool is idle now, and kept registered
    // (deregistered, registered_bytes would be 0).
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    CHECK(stats_of(a).registered_bytes == pool);
    // The next connection takes it: nothing is registered again, and it carries data.
    const connection again = connect_pair(a, b);
    CHECK(registrations == 1);
    CHECK(stats_of(a).registered_bytes == pool);
    transfer(again.client, again.server, 100000);
    transfer(again.server, again.client, 1000);
    REQUIRE(set_linger(again.client, 1, 0) == 0);
    REQUIRE(sansock_close(again.client) == 0);
    CHECK(wait_for_recv_error(again.server) == -ECONNRESET);
    REQUIRE(sansock_close(again.server) == 0);
    // Unused for idle_pool_keep (1 s), it goes.
    CHECK(eventually([&] { return stats_of(a).registered_bytes == 0; }));
    CHECK(eventually([&] { return stats_of(b).registered_bytes == 0; }));
    CHECK(sansock_close(c.listener) == 0);
    CHECK(sansock_close(again.listener) == 0);
}

// A provider that can "poll" a socket without delivering anything itself: the progress
// thread delivers, and a waiting call sees the data while it polls.
int idle_poll(provider::instance*, provider::socket_handle, uint32_t) { return 0; }
const provider::ops& polling_ops() {
    static const provider::ops table = loopback_ops_with("polling-loopback", [](provider::ops& t) { t.progress_socket = &idle_poll; });
    return table;
}

// One blocking recv on `c.server` of a byte that `c.client` sends after `delay`.
void wait_for_byte(const connection& c, milliseconds delay) {
    std::thread sender([&] {
        std::this_thread::sleep_for(delay);
        const char byte = 'x';
        CHECK(sansock_send(c.client, &byte, 1, 0) == 1);
    });
    char got = 0;
    CHECK(bounded("recv", [&] { return sansock_recv(c.server, &got, 1, 0); }) == 1);
    sender.join();
}

TEST_CASE("waits_polled and waits_slept: how each blocking wait on a socket ended") {
    watchdog guard("stats, waits");
    world w;
    host_options o;
    o.provider_ops = &polling_ops();
    o.busy_poll_us = 1000000; // a wait may poll up to twice as long as the socket's last one
    o.use_manual_clock = false;
    sansock_context* a = w.host(o);
    sansock_context* b = w.host(o);
    const connection c = connect_pair(a, b);
    const struct sansock_context_stats before = stats_of(b);
    // The first wait polls 50 us only: the byte 100 ms later finds it asleep.
    wait_for_byte(c, milliseconds(100));
    struct sansock_context_stats s = stats_of(b);
    CHECK(s.waits_slept == before.waits_slept + 1);
    CHECK(s.waits_polled == before.waits_polled);
    // The next polls up to about 200 ms: a byte 5 ms later arrives while it polls.
    wait_for_byte(c, milliseconds(5));
    s = stats_of(b);
    CHECK(s.waits_slept == before.waits_slept + 1);
    CHECK(s.waits_polled == before.waits_polled + 1);
    // A context that never busy-polls counts neither.
    host_options never;
    never.busy_poll_us = SANSOCK_NO_BUSY_POLL;
    never.use_manual_clock = false;
    sansock_context* x = w.host(never);
    sansock_context* y = w.host(never);
    const connection quiet = connect_pair(x, y);
    wait_for_byte(quiet, milliseconds(50));
    CHECK(stats_of(y).waits_polled == 0);
    CHECK(stats_of(y).waits_slept == 0);
    for (const connection* k : {&c, &quiet}) {
        CHECK(sansock_close(k->client) == 0);
        CHECK(sansock_close(k->server) == 0);
        CHECK(sansock_close(k->listener) == 0);
    }
}

TEST_CASE("LINGER 0: an abortive close and a reset sent; the peer receives the reset") {
    watchdog guard("stats, LINGER 0");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    const connection c = connect_pair(a, b);
    transfer(c.client, c.server, 1000);
    REQUIRE(set_linger(c.client, 1, 0) == 0);
    REQUIRE(sansock_close(c.client) == 0);
    CHECK(wait_for_recv_error(c.server) == -ECONNRESET);
    REQUIRE(sansock_close(c.server) == 0); // failed: nothing graceful is left, no reset sent
    expected ea;
    ea.opened = 1;
    ea.abortive = 1;
    ea.sent[SANSOCK_RESET_ABORTIVE_CLOSE] = 1;
    ea.bytes_sent = 1000;
    check_counters("client", a, ea);
    expected eb;
    eb.accepted = 1;
    eb.dontlinger = 1;
    eb.received[SANSOCK_RESET_PEER] = 1;
    eb.bytes_received = 1000;
    check_counters("server", b, eb);
    CHECK(sansock_close(c.listener) == 0);
}

TEST_CASE("LINGER n: the close is counted when it releases the handle; acknowledged, it goes on gracefully") {
    watchdog guard("stats, LINGER n");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    const connection c = connect_pair(a, b);
    REQUIRE(send_all(c.client, "hello", 5) == 0);
    REQUIRE(set_linger(c.client, 1, 5) == 0);
    SUBCASE("blocking, every byte acknowledged") {
        CHECK(recv_exact(c.server, 5) == std::vector<uint8_t>{'h', 'e', 'l', 'l', 'o'});
        CHECK(bounded("LINGER 5 close", [s = c.client] { return sansock_close(s); }) == 0);
        char byte = 0;
        CHECK(bounded("recv end", [&] { return sansock_recv(c.server, &byte, 1, 0); }) == 0);
        REQUIRE(sansock_close(c.server) == 0);
        expected ea;
        ea.opened = 1;
        ea.linger = 1;
        ea.graceful_completed = 1;
        ea.bytes_sent = 5;
        check_counters("client", a, ea);
        expected eb;
        eb.accepted = 1;
        eb.dontlinger = 1;
        eb.graceful_completed = 1;
        eb.bytes_received = 5;
        check_counters("server", b, eb);
    }
    SUBCASE("blocking, time-out: a reset sent, the peer receives it") {
        CHECK(eventually([&] { return stats_of(b).bytes_received == 5; })); // "hello" is in
        REQUIRE(freeze(b, c.server, true) == 0);
        REQUIRE(send_all(c.client, "world", 5) == 0); // handed to the provider, never delivered
        background<int> closing("LINGER 5 close", [s = c.client] { return sansock_close(s); });
        CHECK_FALSE(closing.wait(200ms));
        w.clock.advance(6s);
        CHECK(closing.result() == -ETIMEDOUT);
        REQUIRE(freeze(b, c.server, false) == 0);
        CHECK(wait_for_recv_error(c.server) == -ECONNRESET);
        REQUIRE(sansock_close(c.server) == 0);
        expected ea;
        ea.opened = 1;
        ea.linger = 1;
        ea.sent[SANSOCK_RESET_LINGER_TIMEOUT] = 1;
        ea.bytes_sent = 10;
        check_counters("client", a, ea);
        expected eb;
        eb.accepted = 1;
        eb.dontlinger = 1;
        eb.received[SANSOCK_RESET_PEER] = 1;
        eb.bytes_received = 5; // what came before the freeze; then the reset
        check_counters("server", b, eb);
    }
    SUBCASE("nonblocking with unsent data: -EWOULDBLOCK is not a close") {
        const uint64_t queued = fill_until_full(c.client, true) + 5;
        CHECK(sansock_close(c.client) == -EWOULDBLOCK);
        CHECK(sansock_close(c.client) == -EWOULDBLOCK);
        expected ea;
        ea.opened = 1;
        ea.bytes_sent = stats_of(a).bytes_sent; // what credit let out so far
        check_counters("client, still open", a, ea);
        REQUIRE(set_dontlinger(c.client) == 0);
        CHECK(sansock_close(c.client) == 0);
        const read_outcome got = read_to_end(c.server, 0);
        CHECK(got.bytes == queued);
        REQUIRE(sansock_close(c.server) == 0);
        ea.dontlinger = 1;
        ea.graceful_completed = 1;
        ea.bytes_sent = queued;
        check_counters("client", a, ea);
        expected eb;
        eb.accepted = 1;
        eb.dontlinger = 1;
        eb.graceful_completed = 1;
        eb.bytes_received = queued;
        check_counters("server", b, eb);
    }
    CHECK(sansock_close(c.listener) == 0);
}

TEST_CASE("A background graceful close ended by the time-out: graceful_timed_out and a reset sent") {
    watchdog guard("stats, graceful time-out");
    world w;
    host_options o;
    o.graceful_timeout_ms = 3000;
    sansock_context* a = w.host(o);
    sansock_context* b = w.host(o);
    const connection c = connect_pair(a, b);
    REQUIRE(sansock_close(c.client) == 0);
    char byte = 0;
    CHECK(bounded("recv end", [&] { return sansock_recv(c.server, &byte, 1, 0); }) == 0);
    settle(100ms);
    expected ea;
    ea.opened = 1;
    ea.dontlinger = 1;
    check_counters("client, closing", a, ea); // nothing more before the time-out
    w.clock.advance(3500ms);
    CHECK(wait_for_recv_error(c.server) == -ECONNRESET);
    REQUIRE(sansock_close(c.server) == 0);
    ea.graceful_timed_out = 1;
    ea.sent[SANSOCK_RESET_GRACEFUL_TIMEOUT] = 1;
    check_counters("client", a, ea);
    expected eb;
    eb.accepted = 1;
    eb.dontlinger = 1;
    eb.received[SANSOCK_RESET_PEER] = 1;
    check_counters("server", b, eb);
    CHECK(sansock_close(c.listener) == 0);
}

TEST_CASE("A protocol error by the peer: a reset sent for that reason; the payload before it is counted") {
    watchdog guard("stats, protocol error");
    world w;
    w.session_version = 2; // the raw peer speaks version 2
    sansock_context* a = w.host();
    raw_peer raw(w.fabric());
    uint16_t port = 0;
    const sansock_socket_t l = listen_on(a, &port);
    REQUIRE(raw.connect(port) == 0);
    const sansock_socket_t s = accept_one(l);
    raw.read_hello();
    raw.send_hello();
    session::header data;
    data.type = session::message_type::data;
    data.length = 7;
    raw.send_header(data, 7);
    CHECK(recv_exact(s, 7) == std::vector<uint8_t>(7, 0x61));
    session::header fin_ack; // for a FIN the switch never sent
    fin_ack.type = session::message_type::fin_ack;
    raw.send_header(fin_ack);
    CHECK(wait_for_recv_error(s) == -ECONNRESET);
    CHECK(raw.wait_for_reset() == -ECONNRESET);
    CHECK(sansock_close(s) == 0);
    CHECK(sansock_close(l) == 0);
    expected e;
    e.accepted = 1;
    e.dontlinger = 2;
    e.sent[SANSOCK_RESET_PROTOCOL_ERROR] = 1;
    e.bytes_received = 7;
    check_counters("attacked", a, e);
}

TEST_CASE("Resets received: the connection is lost, the device goes away") {
    watchdog guard("stats, resets received");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    const connection c = connect_pair(a, b);
    expected ea;
    ea.opened = 1;
    expected eb;
    eb.accepted = 1;
    SUBCASE("connection lost") {
        REQUIRE(loopback::drop_connection(provider_instance_of(a), provider_socket_of(c.client)) == 0);
        CHECK(wait_for_recv_error(c.client) == -ECONNRESET);
        CHECK(wait_for_recv_error(c.server) == -ECONNRESET);
        ea.received[SANSOCK_RESET_PEER] = 1;
        eb.received[SANSOCK_RESET_PEER] = 1;
    }
    SUBCASE("device down") {
        REQUIRE(loopback::set_device_down(provider_instance_of(a)) == 0);
        CHECK(wait_for_recv_error(c.client) == -ENETDOWN);
        CHECK(wait_for_recv_error(c.server) == -ECONNRESET);
        ea.received[SANSOCK_RESET_NETWORK_DOWN] = 1;
        eb.received[SANSOCK_RESET_PEER] = 1;
    }
    check_counters("client", a, ea);
    check_counters("server", b, eb);
    // The reset connection's buffers are let go (version 3: its pool, by the next progress).
    CHECK(eventually([&] { return stats_of(a).registered_bytes == 0; }));
    CHECK(sansock_close(c.client) == 0);
    CHECK(sansock_close(c.server) == 0);
    CHECK(sansock_close(c.listener) == 0);
    ea.dontlinger = 1;
    eb.dontlinger = 2;
    check_counters("client, closed", a, ea);
    check_counters("server, closed", b, eb);
}

TEST_CASE("Destroying a context with a connection open resets it: the peer receives the reset") {
    watchdog guard("stats, context destroy");
    world w;
    sansock_context* b = w.host();
    sansock_context_attr attr;
    sansock_context_attr_init(&attr);
    attr.provider = SANSOCK_PROVIDER_LOOPBACK;
    context_hooks hooks;
    hooks.provider_specific = w.fabric();
    sansock_context* a = nullptr;
    REQUIRE(create_context(&attr, hooks, &a) == 0);
    const connection c = connect_pair(a, b);
    CHECK(bounded("destroy", [a] { return sansock_context_destroy(a); }) == 0);
    CHECK(wait_for_recv_error(c.server) == -ECONNRESET);
    expected eb;
    eb.accepted = 1;
    eb.received[SANSOCK_RESET_PEER] = 1;
    check_counters("server", b, eb);
    CHECK(sansock_close(c.server) == 0);
    CHECK(sansock_close(c.listener) == 0);
}

TEST_CASE("Asynchronous accepts and nonblocking connects are counted; refused connects are not") {
    watchdog guard("stats, async accept and nonblocking connect");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    uint16_t port = 0;
    const sansock_socket_t l = listen_on(b, &port);
    std::atomic<int64_t> accepted{0};
    REQUIRE(sansock_accept_async(l, [](void* user, int64_t r) { static_cast<std::atomic<int64_t>*>(user)->store(r); },
                                 &accepted) == 0);
    sansock_socket_t s = 0;
    REQUIRE(sansock_socket(a, &s) == 0);
    REQUIRE(set_nonblocking(s, true) == 0);
    const sockaddr_in to = ipv4(port);
    CHECK(sansock_connect(s, as_sockaddr(to), sizeof to) == -EINPROGRESS);
    CHECK((poll_one(s, SANSOCK_POLLOUT, 10000) & SANSOCK_POLLOUT) != 0);
    CHECK(eventually([&] { return accepted.load() > 0; }));
    sansock_socket_t refused = 0;
    REQUIRE(sansock_socket(a, &refused) == 0);
    const sockaddr_in nobody = ipv4(1);
    CHECK(connect_to(refused, ntohs(nobody.sin_port)) < 0);
    expected ea;
    ea.opened = 1;
    check_counters("client", a, ea);
    expected eb;
    eb.accepted = 1;
    check_counters("server", b, eb);
    CHECK(sansock_close(refused) == 0);
    CHECK(sansock_close(s) == 0);
    CHECK(sansock_close(sansock_socket_t(accepted.load())) == 0);
    CHECK(sansock_close(l) == 0);
}

TEST_CASE("A short size gets the leading whole fields; NULL and a size below the first counter are -EINVAL") {
    watchdog guard("stats, sizes");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    const connection c = connect_pair(a, b);
    transfer(c.client, c.server, 100);
    constexpr size_t first = offsetof(struct sansock_context_stats, connections_opened);
    static_assert(first == 8);
    unsigned char buffer[sizeof(struct sansock_context_stats) + 16];
    auto fill = [&](uint32_t size) {
        std::memset(buffer, 0xab, sizeof buffer);
        std::memcpy(buffer, &size, sizeof size);
        return reinterpret_cast<struct sansock_context_stats*>(buffer);
    };
    auto untouched_from = [&](size_t offset) {
        for (size_t i = offset; i < sizeof buffer; ++i)
            if (buffer[i] != 0xab) return false;
        return true;
    };
    SUBCASE("exactly the first counter") {
        struct sansock_context_stats* out = fill(first + 8);
        REQUIRE(sansock_context_stats(a, out) == 0);
        CHECK(out->size == first + 8);
        CHECK(out->connections_opened == 1);
        CHECK(untouched_from(first + 8));
    }
    SUBCASE("a field and a half: the half is not written") {
        struct sansock_context_stats* out = fill(first + 12);
        REQUIRE(sansock_context_stats(a, out) == 0);
        CHECK(out->connections_opened == 1);
        CHECK(untouched_from(first + 8));
    }
    SUBCASE("up to bytes_received") {
        const uint32_t size = offsetof(struct sansock_context_stats, registered_bytes);
        struct sansock_context_stats* out = fill(size);
        REQUIRE(sansock_context_stats(a, out) == 0);
        CHECK(out->connections_opened == 1);
        CHECK(out->connections_accepted == 0);
        CHECK(out->resets_sent[0] == 0);
        CHECK(out->resets_sent[SANSOCK_RESET_KEEPALIVE_TIMEOUT] == 0);
        CHECK(out->bytes_sent == 100);
        CHECK(out->bytes_received == 0);
        CHECK(untouched_from(size));
    }
    SUBCASE("larger than the struct: the struct is filled, the rest is left") {
        struct sansock_context_stats* out = fill(sizeof buffer);
        REQUIRE(sansock_context_stats(b, out) == 0);
        CHECK(out->size == sizeof buffer);
        CHECK(out->connections_accepted == 1);
        CHECK(out->bytes_received == 100);
        CHECK(out->registered_bytes > 0);
        CHECK(untouched_from(sizeof(struct sansock_context_stats)));
    }
    SUBCASE("too small") {
        for (uint32_t size : {0u, 4u, 8u, 15u}) {
            CAPTURE(size);
            struct sansock_context_stats* out = fill(size);
            CHECK(sansock_context_stats(a, out) == -EINVAL);
            CHECK(untouched_from(sizeof size));
        }
    }
    SUBCASE("NULL") {
        struct sansock_context_stats s{};
        s.size = sizeof s;
        CHECK(sansock_context_stats(nullptr, &s) == -EINVAL);
        CHECK(sansock_context_stats(a, nullptr) == -EINVAL);
    }
    CHECK(sansock_close(c.client) == 0);
    CHECK(sansock_close(c.server) == 0);
    CHECK(sansock_close(c.listener) == 0);
}

} // namespace
} // namespace sansock::switchtest

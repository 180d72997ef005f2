// SPDX-License-Identifier: MIT
// The switch calls the provider's close only for a hard close (docs/semantics.md section 3):
// after a completed graceful disconnect (once per connection end, after both ends' FINs), on
// LINGER 0, on a linger or graceful time-out. A counting provider proves it.
#include <map>

#include "tests/switch/switch_test_support.hpp"

namespace sansock::switchtest {
namespace {

// Every provider close, with what the test had declared about the peer at that moment.
struct close_record {
    provider::instance* inst;
    provider::socket_handle socket;
    bool peer_saw_end_of_stream;
    bool peer_closed;
};

struct close_log {
    std::mutex mutex;
    std::vector<close_record> records;
    std::atomic<bool> peer_saw_end_of_stream{false};
    std::atomic<bool> peer_closed{false};

    void reset() {
        std::lock_guard lock(mutex);
        records.clear();
        peer_saw_end_of_stream.store(false);
        peer_closed.store(false);
    }
    size_t count(provider::instance* inst, provider::socket_handle s) {
        std::lock_guard lock(mutex);
        size_t n = 0;
        for (const auto& r : records) n += r.inst == inst && r.socket == s;
        return n;
    }
    std::optional<close_record> first(provider::instance* inst, provider::socket_handle s) {
        std::lock_guard lock(mutex);
        for (const auto& r : records)
            if (r.inst == inst && r.socket == s) return r;
        return std::nullopt;
    }
};

close_log& the_log() {
    static close_log log;
    return log;
}

int counting_close(provider::instance* self, provider::socket_handle s) {
    close_log& log = the_log();
    {
        std::lock_guard lock(log.mutex);
        log.records.push_back({self, s, log.peer_saw_end_of_stream.load(), log.peer_closed.load()});
    }
    return loopback_ops.close(self, s);
}

const provider::ops& counting_ops() {
    static const provider::ops table = loopback_ops_with("counting-loopback", [](provider::ops& t) { t.close = &counting_close; });
    return table;
}

struct counted_pair {
    world w;
    sansock_context* a = nullptr;
    sansock_context* b = nullptr;
    connection c;
    provider::instance* a_inst = nullptr;
    provider::instance* b_inst = nullptr;
    provider::socket_handle a_sock = 0; // the client's provider socket
    provider::socket_handle b_sock = 0; // the server's

    explicit counted_pair(uint32_t graceful_timeout_ms = 0) {
        the_log().reset();
        host_options o;
        o.provider_ops = &counting_ops();
        o.graceful_timeout_ms = graceful_timeout_ms;
        a = w.host(o);
        b = w.host(o);
        c = connect_pair(a, b);
        a_inst = provider_instance_of(a);
        b_inst = provider_instance_of(b);
        a_sock = provider_socket_of(c.client);
        b_sock = provider_socket_of(c.server);
        REQUIRE(a_inst != nullptr);
        REQUIRE(b_inst != nullptr);
        REQUIRE(a_sock != provider::invalid_socket);
        REQUIRE(b_sock != provider::invalid_socket);
    }
    size_t a_closes() { return the_log().count(a_inst, a_sock); }
    size_t b_closes() { return the_log().count(b_inst, b_sock); }
};

TEST_CASE("A graceful close calls the provider's close once per end, only after both ends' FINs") {
    watchdog guard("graceful layering");
    counted_pair p;
    const auto data = pattern_bytes(0, 200000);
    background<ssize_t> sending("send", [&] { return send_all(p.c.client, data.data(), data.size()); });
    CHECK(recv_exact(p.c.server, 1000) == pattern_bytes(0, 1000));
    CHECK(sending.result() == 0);

    bool peer_closes = true;
    SUBCASE("the peer then closes with DONTLINGER") {}
    SUBCASE("the peer then shuts down SHUT_WR and keeps its handle") { peer_closes = false; }

    REQUIRE(sansock_close(p.c.client) == 0);
    settle(300ms);
    // The peer has not finished its direction: nothing may be closed hard yet.
    CHECK(p.a_closes() == 0);
    CHECK(p.b_closes() == 0);

    const read_outcome got = read_to_end(p.c.server, 1000);
    CHECK(got.bytes == data.size() - 1000);
    CHECK(got.in_order);
    CHECK(got.last == 0);
    the_log().peer_saw_end_of_stream.store(true);
    settle(200ms);
    CHECK(p.a_closes() == 0); // the peer's FIN has not been sent yet
    CHECK(p.b_closes() == 0);

    the_log().peer_closed.store(true);
    if (peer_closes) {
        REQUIRE(sansock_close(p.c.server) == 0);
        CHECK(eventually([&] { return p.a_closes() == 1 && p.b_closes() == 1; }));
    } else {
        REQUIRE(sansock_shutdown(p.c.server, SHUT_WR) == 0);
        CHECK(eventually([&] { return p.a_closes() == 1; }));
        // The graceful disconnect completed: the peer's receives keep reporting end of
        // stream, not a reset, though the provider connection is now gone.
        char byte = 0;
        settle(200ms);
        CHECK(bounded("recv after clean end", [&] { return sansock_recv(p.c.server, &byte, 1, 0); }) == 0);
        REQUIRE(sansock_close(p.c.server) == 0);
        CHECK(eventually([&] { return p.b_closes() == 1; }));
    }
    settle(300ms);
    CHECK(p.a_closes() == 1);
    CHECK(p.b_closes() == 1);
    const auto first = the_log().first(p.a_inst, p.a_sock);
    REQUIRE(first.has_value());
    CHECK(first->peer_saw_end_of_stream);
    CHECK(first->peer_closed);
}

TEST_CASE("shutdown never calls the provider's close") {
    watchdog guard("shutdown layering");
    counted_pair p;
    REQUIRE(sansock_shutdown(p.c.client, SHUT_WR) == 0);
    char byte = 0;
    CHECK(bounded("peer end", [&] { return sansock_recv(p.c.server, &byte, 1, 0); }) == 0);
    REQUIRE(sansock_shutdown(p.c.client, SHUT_RD) == 0);
    settle(300ms);
    CHECK(p.a_closes() == 0);
    CHECK(p.b_closes() == 0);
}

TEST_CASE("LINGER 0 calls the provider's close exactly once") {
    watchdog guard("LINGER 0 layering");
    counted_pair p;
    const auto data = pattern_bytes(0, 10000);
    REQUIRE(send_all(p.c.client, data.data(), data.size()) == 0);
    REQUIRE(set_linger(p.c.client, 1, 0) == 0);
    REQUIRE(sansock_close(p.c.client) == 0);
    CHECK(eventually([&] { return p.a_closes() == 1; }, 5s));
    CHECK(wait_for_recv_error(p.c.server) == -ECONNRESET);
    settle(200ms);
    CHECK(p.a_closes() == 1);
    REQUIRE(sansock_close(p.c.server) == 0);
    CHECK(eventually([&] { return p.b_closes() == 1; }, 5s)); // a reset end is released hard
    settle(200ms);
    CHECK(p.a_closes() == 1);
    CHECK(p.b_closes() == 1);
}

TEST_CASE("A linger time-out calls the provider's close exactly once, before close returns") {
    watchdog guard("linger time-out layering");
    counted_pair p;
    REQUIRE(freeze(p.b, p.c.server, true) == 0);
    REQUIRE(sansock_send(p.c.client, "abc", 3, 0) == 3);
    REQUIRE(set_linger(p.c.client, 1, 1) == 0);
    background<int> closing("LINGER 1 close", [s = p.c.client] { return sansock_close(s); });
    CHECK_FALSE(closing.wait(300ms));
    CHECK(p.a_closes() == 0);
    p.w.clock.advance(1500ms);
    CHECK(closing.result() == -ETIMEDOUT);
    CHECK(p.a_closes() == 1);
    settle(200ms);
    CHECK(p.a_closes() == 1);
}

TEST_CASE("A nonblocking LINGER close that would block calls nothing in the provider") {
    watchdog guard("nonblocking linger layering");
    counted_pair p;
    fill_until_full(p.c.client, true);
    REQUIRE(set_linger(p.c.client, 1, 3) == 0);
    CHECK(sansock_close(p.c.client) == -EWOULDBLOCK);
    CHECK(sansock_close(p.c.client) == -EWOULDBLOCK);
    settle(200ms);
    CHECK(p.a_closes() == 0);
    REQUIRE(set_linger(p.c.client, 1, 0) == 0);
    CHECK(sansock_close(p.c.client) == 0);
    CHECK(eventually([&] { return p.a_closes() == 1; }, 5s));
}

TEST_CASE("The graceful time-out calls the provider's close exactly once, not before it expires") {
    watchdog guard("graceful time-out layering");
    counted_pair p(4000);
    REQUIRE(sansock_close(p.c.client) == 0);
    settle(300ms);
    CHECK(p.a_closes() == 0);
    p.w.clock.advance(3000ms);
    settle(300ms);
    CHECK(p.a_closes() == 0);
    p.w.clock.advance(1500ms);
    CHECK(eventually([&] { return p.a_closes() == 1; }));
    CHECK(wait_for_recv_error(p.c.server) == -ECONNRESET);
    settle(200ms);
    CHECK(p.a_closes() == 1);
}

} // namespace
} // namespace sansock::switchtest

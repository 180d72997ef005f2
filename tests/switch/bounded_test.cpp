// SPDX-License-Identifier: MIT
// With the peer frozen (it moves no bytes), every close mode and every blocked call returns
// within its bound.
#include "tests/switch/switch_test_support.hpp"

namespace sansock::switchtest {
namespace {

TEST_CASE("With the peer frozen every close mode returns within its bound") {
    watchdog guard("frozen close modes");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    const connection c = connect_pair(a, b);
    REQUIRE(freeze(b, c.server, true) == 0);
    const auto data = pattern_bytes(0, 4000);
    REQUIRE(send_all(c.client, data.data(), data.size()) == 0);

    SUBCASE("DONTLINGER: 0 at once") {
        const auto start = steady_clock::now();
        CHECK(bounded("close", [s = c.client] { return sansock_close(s); }, 5s) == 0);
        CHECK(steady_clock::now() - start < 1s);
    }
    SUBCASE("DONTLINGER, nonblocking: 0 at once") {
        REQUIRE(set_nonblocking(c.client, true) == 0);
        CHECK(bounded("close", [s = c.client] { return sansock_close(s); }, 5s) == 0);
    }
    SUBCASE("LINGER 0: 0 at once") {
        REQUIRE(set_linger(c.client, 1, 0) == 0);
        CHECK(bounded("close", [s = c.client] { return sansock_close(s); }, 5s) == 0);
    }
    SUBCASE("LINGER 1, blocking: -ETIMEDOUT after 1 s of the context's clock") {
        REQUIRE(set_linger(c.client, 1, 1) == 0);
        background<int> closing("close", [s = c.client] { return sansock_close(s); });
        CHECK_FALSE(closing.wait(300ms));
        w.clock.advance(1100ms);
        CHECK(closing.wait(10s));
        CHECK(closing.result() == -ETIMEDOUT);
    }
    SUBCASE("LINGER 1, nonblocking: -EWOULDBLOCK at once, then LINGER 0 closes") {
        REQUIRE(set_linger(c.client, 1, 1) == 0);
        REQUIRE(set_nonblocking(c.client, true) == 0);
        CHECK(bounded("close", [s = c.client] { return sansock_close(s); }, 5s) == -EWOULDBLOCK);
        REQUIRE(set_linger(c.client, 1, 0) == 0);
        CHECK(bounded("close", [s = c.client] { return sansock_close(s); }, 5s) == 0);
    }
    SUBCASE("SHUT_WR, then close with LINGER 1 blocking") {
        CHECK(bounded("shutdown", [s = c.client] { return sansock_shutdown(s, SHUT_WR); }, 5s) == 0);
        REQUIRE(set_linger(c.client, 1, 1) == 0);
        background<int> closing("close", [s = c.client] { return sansock_close(s); });
        CHECK_FALSE(closing.wait(300ms));
        w.clock.advance(1100ms);
        CHECK(closing.wait(10s));
        CHECK(closing.result() == -ETIMEDOUT);
    }
    CHECK(sansock_close(c.client) == -ENOTSOCK);
    freeze(b, c.server, false); // after a reset the provider socket may be gone already
    CHECK(sansock_close(c.server) == 0);
}

TEST_CASE("Nonblocking calls on a frozen connection return -EWOULDBLOCK at once") {
    watchdog guard("frozen nonblocking");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    const connection c = connect_pair(a, b);
    REQUIRE(freeze(a, c.client, true) == 0);
    REQUIRE(set_nonblocking(c.client, true) == 0);
    char byte = 0;
    CHECK(sansock_recv(c.client, &byte, 1, 0) == -EWOULDBLOCK);
    // Sends are taken until the send side is full, then refused, never blocking.
    const uint64_t queued = fill_until_full(c.client, true, uint64_t(256) << 20);
    CHECK(queued > 0);
    const auto data = pattern_bytes(0, 1000);
    CHECK(sansock_send(c.client, data.data(), data.size(), 0) == -EWOULDBLOCK);
    REQUIRE(freeze(a, c.client, false) == 0);
    const read_outcome got = [&] {
        REQUIRE(set_dontlinger(c.client) == 0);
        REQUIRE(sansock_close(c.client) == 0);
        return read_to_end(c.server);
    }();
    CHECK(got.bytes == queued);
    CHECK(got.in_order);
    CHECK(got.last == 0);
}

TEST_CASE("A blocked receive returns when its socket is closed from another thread") {
    watchdog guard("blocked recv, close");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    const connection c = connect_pair(a, b);
    REQUIRE(freeze(b, c.server, true) == 0);
    REQUIRE(send_all(c.server, "never", 5) == 0); // stays in b: frozen
    std::vector<uint8_t> buffer(64);
    background<ssize_t> receiving("blocked recv", [&] { return sansock_recv(c.client, buffer.data(), buffer.size(), 0); });
    CHECK_FALSE(receiving.wait(300ms));
    SUBCASE("DONTLINGER") {}
    SUBCASE("LINGER 0") { REQUIRE(set_linger(c.client, 1, 0) == 0); }
    CHECK(bounded("close", [s = c.client] { return sansock_close(s); }, 5s) == 0);
    CHECK(receiving.wait(5s));
    const ssize_t r = receiving.result();
    CAPTURE(r);
    // Seed 004: blocking calls pending on the socket are cancelled.
    CHECK(r == -ECANCELED);
    freeze(b, c.server, false);
}

TEST_CASE("A blocked send returns when its socket is closed from another thread") {
    watchdog guard("blocked send, close");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    const connection c = connect_pair(a, b);
    REQUIRE(freeze(b, c.server, true) == 0);
    fill_until_full(c.client, false);
    const auto data = pattern_bytes(0, 1 << 20);
    background<ssize_t> sending("blocked send", [&] { return sansock_send(c.client, data.data(), data.size(), 0); });
    CHECK_FALSE(sending.wait(300ms));
    SUBCASE("DONTLINGER") {}
    SUBCASE("LINGER 0") { REQUIRE(set_linger(c.client, 1, 0) == 0); }
    CHECK(bounded("close", [s = c.client] { return sansock_close(s); }, 5s) == 0);
    CHECK(sending.wait(5s));
    const ssize_t r = sending.result();
    CAPTURE(r);
    // Either the part it had already queued, or cancelled.
    CHECK((r == -ECANCELED || (r > 0 && size_t(r) < data.size())));
    freeze(b, c.server, false);
}

TEST_CASE("A receive blocked on a frozen connection fails -ECONNRESET when the peer's linger time-out resets it") {
    watchdog guard("blocked recv, peer linger time-out");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    const connection c = connect_pair(a, b);
    REQUIRE(freeze(b, c.server, true) == 0);
    REQUIRE(send_all(c.client, "lost", 4) == 0);
    std::vector<uint8_t> buffer(64);
    background<ssize_t> receiving("blocked recv", [&] { return sansock_recv(c.server, buffer.data(), buffer.size(), 0); });
    REQUIRE(set_linger(c.client, 1, 2) == 0);
    background<int> closing("close", [s = c.client] { return sansock_close(s); });
    CHECK_FALSE(closing.wait(300ms));
    CHECK_FALSE(receiving.finished());
    w.clock.advance(2500ms);
    CHECK(closing.wait(10s));
    CHECK(closing.result() == -ETIMEDOUT);
    CHECK(receiving.wait(10s));
    CHECK(receiving.result() == -ECONNRESET);
    CHECK(sansock_close(c.server) == 0);
}

TEST_CASE("Destroying a context with graceful closes pending against a frozen peer returns") {
    watchdog guard("destroy with background closes");
    world w;
    sansock_context* b = w.host();
    sansock_context_attr attr;
    sansock_context_attr_init(&attr);
    attr.provider = SANSOCK_PROVIDER_LOOPBACK;
    context_hooks hooks;
    hooks.provider_specific = w.fabric();
    hooks.now = w.clock.function();
    sansock_context* a = nullptr;
    REQUIRE(create_context(&attr, hooks, &a) == 0);
    const connection c = connect_pair(a, b);
    REQUIRE(freeze(b, c.server, true) == 0);
    REQUIRE(send_all(c.client, "data", 4) == 0);
    REQUIRE(sansock_close(c.client) == 0); // graceful, in the background, stuck
    const connection d = connect_pair(a, b);
    CHECK(bounded("destroy", [a] { return sansock_context_destroy(a); }, 10s) == 0);
    // The peer sees its connections reset.
    freeze(b, c.server, false);
    CHECK(wait_for_recv_error(c.server) == -ECONNRESET);
    CHECK(wait_for_recv_error(d.server) == -ECONNRESET);
}

TEST_CASE("busy_poll_us: at most one second of polling, SANSOCK_NO_BUSY_POLL turns it off") {
    sansock_context_attr attr;
    sansock_context_attr_init(&attr);
    CHECK(attr.busy_poll_us == 1000);
    attr.provider = SANSOCK_PROVIDER_LOOPBACK;
    sansock_context* ctx = nullptr;
    attr.busy_poll_us = 1000001;
    CHECK(sansock_context_create(&attr, &ctx) == -EINVAL);
    CHECK(ctx == nullptr);
    for (uint32_t value : {1000000u, SANSOCK_NO_BUSY_POLL, 0u}) {
        attr.busy_poll_us = value;
        REQUIRE(sansock_context_create(&attr, &ctx) == 0);
        CHECK(sansock_context_destroy(ctx) == 0);
        ctx = nullptr;
    }
}

} // namespace
} // namespace sansock::switchtest

// SPDX-License-Identifier: MIT
// shutdown: SHUT_WR sends end of stream after the queued data, SHUT_RD ends our receives,
// SHUT_RDWR both; a second shutdown of a direction is harmless.
#include "tests/switch/switch_test_support.hpp"

namespace sansock::switchtest {
namespace {

TEST_CASE("SHUT_WR sends end of stream after the queued data; the other direction keeps working") {
    watchdog guard("SHUT_WR");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    const connection c = connect_pair(a, b);
    bool queued_beyond_windows = false;
    SUBCASE("a little data") {}
    SUBCASE("more data than the windows hold, still unsent at shutdown") { queued_beyond_windows = true; }
    uint64_t queued = 0;
    if (queued_beyond_windows) {
        queued = fill_until_full(c.client, false);
    } else {
        const auto data = pattern_bytes(0, 1000);
        REQUIRE(send_all(c.client, data.data(), data.size()) == 0);
        queued = data.size();
    }
    CHECK(bounded("shutdown", [s = c.client] { return sansock_shutdown(s, SHUT_WR); }, 5s) == 0);
    CHECK(sansock_send(c.client, "x", 1, 0) == -EPIPE);
    CHECK(sansock_shutdown(c.client, SHUT_WR) == 0); // a second time: harmless

    const read_outcome got = read_to_end(c.server);
    CHECK(got.bytes == queued);
    CHECK(got.in_order);
    CHECK(got.last == 0);
    char byte = 0;
    CHECK(bounded("recv again", [&] { return sansock_recv(c.server, &byte, 1, 0); }) == 0);

    // The peer can still send to us, and we receive it.
    const auto back = pattern_bytes(500, 200000);
    background<ssize_t> replying("reply", [&] { return send_all(c.server, back.data(), back.size()); });
    CHECK(recv_exact(c.client, back.size()) == back);
    CHECK(replying.result() == 0);
    CHECK(sansock_send(c.client, "x", 1, 0) == -EPIPE);

    // The peer finishes its direction too: we see end of stream.
    CHECK(sansock_shutdown(c.server, SHUT_WR) == 0);
    CHECK(bounded("recv end", [&] { return sansock_recv(c.client, &byte, 1, 0); }) == 0);
    CHECK(sansock_close(c.client) == 0);
    CHECK(sansock_close(c.server) == 0);
}

TEST_CASE("SHUT_RD makes our receives return 0 while sending still works") {
    watchdog guard("SHUT_RD");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    const connection c = connect_pair(a, b);
    CHECK(sansock_shutdown(c.client, SHUT_RD) == 0);
    char byte = 0;
    // Blocking receive: returns 0 at once (no data will ever be given to us).
    CHECK(bounded("recv after SHUT_RD", [&] { return sansock_recv(c.client, &byte, 1, 0); }, 5s) == 0);
    REQUIRE(set_nonblocking(c.client, true) == 0);
    CHECK(sansock_recv(c.client, &byte, 1, 0) == 0);
    REQUIRE(set_nonblocking(c.client, false) == 0);
    CHECK(sansock_shutdown(c.client, SHUT_RD) == 0); // a second time: harmless
    CHECK((poll_one(c.client, SANSOCK_POLLIN, 0) & SANSOCK_POLLIN) != 0);

    const auto data = pattern_bytes(0, 50000);
    background<ssize_t> sending("send", [&] { return send_all(c.client, data.data(), data.size()); });
    CHECK(recv_exact(c.server, data.size()) == data);
    CHECK(sending.result() == 0);
    CHECK(sansock_close(c.client) == 0);
    CHECK(bounded("peer end", [&] { return sansock_recv(c.server, &byte, 1, 0); }) == 0);
    CHECK(sansock_close(c.server) == 0);
}

TEST_CASE("SHUT_RDWR ends both directions: recv returns 0, send fails -EPIPE, the peer sees end of stream") {
    watchdog guard("SHUT_RDWR");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    const connection c = connect_pair(a, b);
    const auto data = pattern_bytes(0, 3000);
    REQUIRE(send_all(c.client, data.data(), data.size()) == 0);
    CHECK(sansock_shutdown(c.client, SHUT_RDWR) == 0);
    char byte = 0;
    CHECK(bounded("recv", [&] { return sansock_recv(c.client, &byte, 1, 0); }, 5s) == 0);
    CHECK(sansock_send(c.client, "x", 1, 0) == -EPIPE);
    CHECK(sansock_shutdown(c.client, SHUT_RDWR) == 0);
    CHECK(sansock_shutdown(c.client, SHUT_WR) == 0);
    CHECK(sansock_shutdown(c.client, SHUT_RD) == 0);
    const read_outcome got = read_to_end(c.server);
    CHECK(got.bytes == data.size());
    CHECK(got.in_order);
    CHECK(got.last == 0);
    CHECK(sansock_close(c.client) == 0);
    CHECK(sansock_close(c.server) == 0);
}

TEST_CASE("shutdown of a socket that is not connected is -ENOTCONN; a bad direction is -EINVAL") {
    watchdog guard("shutdown errors");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    sansock_socket_t fresh = 0;
    REQUIRE(sansock_socket(a, &fresh) == 0);
    CHECK(sansock_shutdown(fresh, SHUT_WR) == -ENOTCONN);
    uint16_t port = 0;
    const sansock_socket_t l = listen_on(a, &port);
    CHECK(sansock_shutdown(l, SHUT_RDWR) == -ENOTCONN);
    const connection c = connect_pair(a, b);
    CHECK(sansock_shutdown(c.client, 17) == -EINVAL);
    CHECK(sansock_shutdown(c.client, -1) == -EINVAL);
    CHECK(sansock_close(fresh) == 0);
    CHECK(sansock_close(l) == 0);
}

TEST_CASE("Both ends shutting down SHUT_WR then closing exchange everything and end cleanly") {
    watchdog guard("both SHUT_WR");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    const connection c = connect_pair(a, b);
    const auto ab = pattern_bytes(0, 70000);
    const auto ba = pattern_bytes(0, 90000);
    background<ssize_t> send_a("a sends", [&]() -> ssize_t {
        const ssize_t r = send_all(c.client, ab.data(), ab.size());
        return r != 0 ? r : sansock_shutdown(c.client, SHUT_WR);
    });
    background<ssize_t> send_b("b sends", [&]() -> ssize_t {
        const ssize_t r = send_all(c.server, ba.data(), ba.size());
        return r != 0 ? r : sansock_shutdown(c.server, SHUT_WR);
    });
    background<read_outcome> read_b("b reads", [&] { return read_to_end(c.server); });
    const read_outcome at_a = read_to_end(c.client);
    const read_outcome at_b = read_b.result();
    CHECK(send_a.result() == 0);
    CHECK(send_b.result() == 0);
    CHECK(at_a.bytes == ba.size());
    CHECK(at_a.in_order);
    CHECK(at_a.last == 0);
    CHECK(at_b.bytes == ab.size());
    CHECK(at_b.in_order);
    CHECK(at_b.last == 0);
    CHECK((poll_one(c.client, SANSOCK_POLLIN, 0) & SANSOCK_POLLIN) != 0);
    CHECK(sansock_close(c.client) == 0);
    CHECK(sansock_close(c.server) == 0);
}

} // namespace
} // namespace sansock::switchtest

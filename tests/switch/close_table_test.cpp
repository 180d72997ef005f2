// SPDX-License-Identifier: MIT
// The close table of docs/semantics.md section 2: DONTLINGER, LINGER 0, LINGER n blocking and
// nonblocking (0 only when every byte was acknowledged, else the failure), and the handle after
// close.
#include "tests/switch/switch_test_support.hpp"

namespace sansock::switchtest {
namespace {

TEST_CASE("DONTLINGER close returns 0 at once; the queued data arrives whole and in order, then end of stream") {
    watchdog guard("DONTLINGER close");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    const connection c = connect_pair(a, b);
    bool nonblocking = false;
    bool explicit_option = false;
    SUBCASE("blocking socket, default option") {}
    SUBCASE("nonblocking socket, default option") { nonblocking = true; }
    SUBCASE("blocking socket, SO_DONTLINGER set explicitly after a linger") { explicit_option = true; }
    SUBCASE("nonblocking socket, SO_DONTLINGER set explicitly after a linger") {
        nonblocking = explicit_option = true;
    }
    CAPTURE(nonblocking);
    CAPTURE(explicit_option);
    if (explicit_option) {
        REQUIRE(set_linger(c.client, 1, 30) == 0);
        REQUIRE(set_dontlinger(c.client) == 0);
    }
    // More than the windows hold: part of it is still unsent when close is called.
    const uint64_t queued = fill_until_full(c.client, nonblocking);
    const auto start = steady_clock::now();
    const int rc = bounded("close", [s = c.client] { return sansock_close(s); });
    const auto took = steady_clock::now() - start;
    CHECK(rc == 0);
    CHECK(took < 1s);
    CHECK(sansock_send(c.client, "x", 1, 0) == -ENOTSOCK);

    const read_outcome got = read_to_end(c.server);
    CHECK(got.bytes == queued);
    CHECK(got.in_order);
    CHECK(got.last == 0);
    char byte = 0;
    CHECK(bounded("recv after end", [&] { return sansock_recv(c.server, &byte, 1, 0); }) == 0);
    CHECK(sansock_close(c.server) == 0);
}

TEST_CASE("LINGER 0 close returns 0 at once and resets: the peer's pending receive, next send and next receive fail -ECONNRESET") {
    watchdog guard("LINGER 0 close");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    const connection c = connect_pair(a, b);
    bool with_unsent_data = false;
    bool nonblocking = false;
    SUBCASE("no data") {}
    SUBCASE("unsent data is lost") { with_unsent_data = true; }
    SUBCASE("nonblocking socket with unsent data") { with_unsent_data = nonblocking = true; }
    CAPTURE(with_unsent_data);
    CAPTURE(nonblocking);
    if (with_unsent_data) fill_until_full(c.client, nonblocking);
    REQUIRE(set_linger(c.client, 1, 0) == 0);

    background<ssize_t> pending("the peer's pending recv", [s = c.server] {
        // With unsent data the peer's window is full: read it away first, then block.
        std::vector<uint8_t> buffer(65536);
        for (;;) {
            const ssize_t r = sansock_recv(s, buffer.data(), buffer.size(), 0);
            if (r <= 0) return r;
        }
    });
    if (!with_unsent_data) {
        settle(100ms);
        CHECK_FALSE(pending.finished());
    }
    const auto start = steady_clock::now();
    const int rc = bounded("close", [s = c.client] { return sansock_close(s); });
    CHECK(rc == 0);
    CHECK(steady_clock::now() - start < 1s);
    CHECK(pending.result() == -ECONNRESET);
    char byte = 0;
    CHECK(sansock_send(c.server, "x", 1, 0) == -ECONNRESET);
    CHECK(bounded("recv after reset", [&] { return sansock_recv(c.server, &byte, 1, 0); }) == -ECONNRESET);
    CHECK(sansock_recv(c.client, &byte, 1, 0) == -ENOTSOCK);
    CHECK(sansock_close(c.server) == 0);
}

TEST_CASE("LINGER n on a blocking socket waits until every byte is acknowledged, then returns 0") {
    watchdog guard("LINGER n blocking, acknowledged");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    const connection c = connect_pair(a, b);
    const uint64_t queued = fill_until_full(c.client, false);
    REQUIRE(set_linger(c.client, 1, 5) == 0);

    background<int> closing("LINGER 5 close", [s = c.client] { return sansock_close(s); });
    // The peer does not read: the data cannot all be acknowledged, so close waits (the clock
    // stands still, so the linger interval does not run out either).
    CHECK_FALSE(closing.wait(300ms));
    // The peer reads: everything is acknowledged and close returns 0 without any time passing.
    background<read_outcome> reading("peer reads", [s = c.server] { return read_to_end(s); });
    CHECK(closing.wait(20s));
    CHECK(closing.result() == 0);
    const read_outcome got = reading.result();
    CHECK(got.bytes == queued);
    CHECK(got.in_order);
    CHECK(got.last == 0);
    CHECK(sansock_close(c.client) == -ENOTSOCK);
    CHECK(sansock_close(c.server) == 0);
}

TEST_CASE("LINGER n on a blocking socket times out after n seconds of the context's clock: reset, -ETIMEDOUT, handle released") {
    watchdog guard("LINGER n blocking, time-out");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    const connection c = connect_pair(a, b);
    bool frozen = false;
    SUBCASE("the peer's connection is frozen") {
        frozen = true;
        REQUIRE(freeze(b, c.server, true) == 0);
        const auto data = pattern_bytes(0, 1000);
        REQUIRE(send_all(c.client, data.data(), data.size()) == 0);
    }
    SUBCASE("the peer never reads and the data exceeds the windows") { fill_until_full(c.client, false); }
    CAPTURE(frozen);
    REQUIRE(set_linger(c.client, 1, 2) == 0);

    background<int> closing("LINGER 2 close", [s = c.client] { return sansock_close(s); });
    CHECK_FALSE(closing.wait(300ms));
    w.clock.advance(1000ms); // half the interval: still waiting
    CHECK_FALSE(closing.wait(300ms));
    w.clock.advance(1500ms); // 2.5 s in all
    CHECK(closing.wait(10s));
    CHECK(closing.result() == -ETIMEDOUT);
    CHECK(sansock_close(c.client) == -ENOTSOCK);
    char byte = 0;
    CHECK(sansock_send(c.client, &byte, 1, 0) == -ENOTSOCK);

    // (After the reset the switch may have released the provider socket: no check here.)
    if (frozen) freeze(b, c.server, false);
    // The connection was reset: the peer's receives fail (unread data may be discarded).
    CHECK(wait_for_recv_error(c.server) == -ECONNRESET);
    CHECK(sansock_close(c.server) == 0);
}

TEST_CASE("LINGER n on a blocking socket whose connection fails while close waits returns the failure, not 0; the handle is released") {
    watchdog guard("LINGER n blocking, connection fails");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    const connection c = connect_pair(a, b);
    fill_until_full(c.client, false); // the peer does not read: part of it stays unacknowledged
    REQUIRE(set_linger(c.client, 1, 30) == 0);
    background<int> closing("LINGER 30 close", [s = c.client] { return sansock_close(s); });
    CHECK_FALSE(closing.wait(300ms));
    int expected = 0;
    SUBCASE("the peer resets (SO_LINGER {1, 0})") {
        expected = -ECONNRESET;
        REQUIRE(set_linger(c.server, 1, 0) == 0);
        REQUIRE(sansock_close(c.server) == 0);
    }
    SUBCASE("the connection is lost") {
        expected = -ECONNRESET;
        REQUIRE(loopback::drop_connection(provider_instance_of(b), provider_socket_of(c.server)) == 0);
    }
    SUBCASE("the closing side's device goes down") {
        expected = -ENETDOWN;
        REQUIRE(loopback::set_device_down(provider_instance_of(a)) == 0);
    }
    CAPTURE(expected);
    CHECK(closing.wait(10s));
    CHECK(closing.result() == expected); // 0 would say that every byte was acknowledged
    CHECK(sansock_close(c.client) == -ENOTSOCK);
    sansock_close(c.server); // 0, or -ENOTSOCK where the peer closed it above
}

TEST_CASE("LINGER n close of a socket that already failed: its failure if data was unsent or unacknowledged, else 0") {
    watchdog guard("LINGER n, already failed");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    const connection c = connect_pair(a, b);
    bool unsent = true;
    bool nonblocking = false;
    SUBCASE("blocking, data unsent") {}
    SUBCASE("nonblocking, data unsent") { nonblocking = true; }
    SUBCASE("blocking, everything acknowledged before the reset") { unsent = false; }
    CAPTURE(unsent);
    CAPTURE(nonblocking);
    if (unsent) {
        fill_until_full(c.client, nonblocking);
    } else {
        const auto data = pattern_bytes(0, 5000);
        REQUIRE(send_all(c.client, data.data(), data.size()) == 0);
        CHECK(recv_exact(c.server, data.size()) == data);
        REQUIRE(set_nonblocking(c.client, nonblocking) == 0);
    }
    REQUIRE(set_linger(c.server, 1, 0) == 0);
    REQUIRE(sansock_close(c.server) == 0); // resets the client's connection
    CHECK(eventually([&] { return (poll_one(c.client, 0, 0) & SANSOCK_POLLERR) != 0; }));
    REQUIRE(set_linger(c.client, 1, 5) == 0);
    CHECK(bounded("close", [s = c.client] { return sansock_close(s); }, 5s) == (unsent ? -ECONNRESET : 0));
    CHECK(sansock_close(c.client) == -ENOTSOCK);
}

TEST_CASE("LINGER n on a nonblocking socket with unsent data: -EWOULDBLOCK, the handle stays, no disconnect starts") {
    watchdog guard("LINGER n nonblocking");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    const connection c = connect_pair(a, b);
    const uint64_t queued = fill_until_full(c.client, true);
    REQUIRE(set_linger(c.client, 1, 5) == 0);

    for (int i = 0; i < 3; ++i) CHECK(sansock_close(c.client) == -EWOULDBLOCK);
    // The handle is still a socket.
    int type = 0;
    socklen_t length = sizeof type;
    CHECK(sansock_getsockopt(c.client, SOL_SOCKET, SO_TYPE, &type, &length) == 0);
    CHECK(type == SOCK_STREAM);
    sockaddr_in peer{};
    socklen_t peer_length = sizeof peer;
    CHECK(sansock_getpeername(c.client, reinterpret_cast<sockaddr*>(&peer), &peer_length) == 0);
    // The peer sees no end of stream and no reset.
    const short revents = poll_one(c.server, SANSOCK_POLLIN, 0);
    CHECK((revents & (SANSOCK_POLLHUP | SANSOCK_POLLERR)) == 0);

    // Time passing does not change it either.
    w.clock.advance(10s);
    settle(200ms);
    CHECK(sansock_close(c.client) == -EWOULDBLOCK);

    enum { dontlinger, linger_off, linger_zero, shut_wr, none } how = none;
    SUBCASE("then SO_DONTLINGER: close returns 0, everything arrives, then end of stream") { how = dontlinger; }
    SUBCASE("then SO_LINGER {0, x}: close returns 0, everything arrives, then end of stream") { how = linger_off; }
    SUBCASE("then SHUT_WR: close returns 0, everything arrives, then end of stream") { how = shut_wr; }
    SUBCASE("then LINGER 0: close returns 0 and the peer is reset") { how = linger_zero; }
    SUBCASE("the peer drains everything: still no end of stream while the handle is open") {
        const read_outcome partial = bounded("drain", [&] {
            read_outcome out;
            std::vector<uint8_t> buffer(65536);
            while (out.bytes < queued) {
                const ssize_t r = sansock_recv(c.server, buffer.data(), buffer.size(), 0);
                out.last = r;
                if (r <= 0) break;
                for (ssize_t k = 0; k < r; ++k)
                    if (buffer[size_t(k)] != pattern(out.bytes + uint64_t(k))) out.in_order = false;
                out.bytes += uint64_t(r);
            }
            return out;
        });
        CHECK(partial.bytes == queued);
        CHECK(partial.in_order);
        REQUIRE(set_nonblocking(c.server, true) == 0);
        char byte = 0;
        settle(200ms);
        CHECK(sansock_recv(c.server, &byte, 1, 0) == -EWOULDBLOCK);
        CHECK((poll_one(c.server, SANSOCK_POLLIN, 0) & (SANSOCK_POLLIN | SANSOCK_POLLHUP | SANSOCK_POLLERR)) == 0);
        // The socket still works.
        CHECK(sansock_send(c.client, "z", 1, 0) == 1);
        REQUIRE(set_dontlinger(c.client) == 0);
        CHECK(sansock_close(c.client) == 0);
        REQUIRE(set_nonblocking(c.server, false) == 0);
        CHECK(recv_exact(c.server, 1) == std::vector<uint8_t>{'z'});
        CHECK(bounded("recv end", [&] { return sansock_recv(c.server, &byte, 1, 0); }) == 0);
        CHECK(sansock_close(c.server) == 0);
        return;
    }
    switch (how) {
    case dontlinger: REQUIRE(set_dontlinger(c.client) == 0); break;
    case linger_off: REQUIRE(set_linger(c.client, 0, 7) == 0); break;
    case linger_zero: REQUIRE(set_linger(c.client, 1, 0) == 0); break;
    case shut_wr: REQUIRE(sansock_shutdown(c.client, SHUT_WR) == 0); break;
    case none: break;
    }
    CHECK(sansock_close(c.client) == 0);
    CHECK(sansock_close(c.client) == -ENOTSOCK);
    if (how == linger_zero) {
        CHECK(wait_for_recv_error(c.server) == -ECONNRESET);
    } else {
        const read_outcome got = read_to_end(c.server);
        CHECK(got.bytes == queued);
        CHECK(got.in_order);
        CHECK(got.last == 0);
    }
    CHECK(sansock_close(c.server) == 0);
}

TEST_CASE("A DONTLINGER close whose peer never finishes is reset after the context's graceful time-out") {
    watchdog guard("graceful time-out");
    world w;
    host_options o;
    o.graceful_timeout_ms = 3000;
    sansock_context* a = w.host(o);
    sansock_context* b = w.host(o);
    const connection c = connect_pair(a, b);
    const auto data = pattern_bytes(0, 5000);
    REQUIRE(send_all(c.client, data.data(), data.size()) == 0);
    REQUIRE(sansock_close(c.client) == 0);
    // The peer reads everything and the end of stream, but never closes nor shuts down.
    CHECK(recv_exact(c.server, data.size()) == data);
    char byte = 0;
    CHECK(bounded("recv end", [&] { return sansock_recv(c.server, &byte, 1, 0); }) == 0);
    settle(300ms);
    REQUIRE(set_nonblocking(c.server, true) == 0);
    CHECK(sansock_recv(c.server, &byte, 1, 0) == 0); // no reset before the time-out
    w.clock.advance(2000ms);
    settle(300ms);
    CHECK(sansock_recv(c.server, &byte, 1, 0) == 0); // nor before it is over
    w.clock.advance(1500ms);
    CHECK(eventually([&] { return sansock_recv(c.server, &byte, 1, 0) == -ECONNRESET; }));
    CHECK(sansock_send(c.server, "x", 1, 0) == -ECONNRESET);
    CHECK(sansock_close(c.server) == 0);
}

TEST_CASE("Both ends closing with DONTLINGER after the exchange ends cleanly, with no reset") {
    watchdog guard("clean close");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    const connection c = connect_pair(a, b);
    const auto data = pattern_bytes(0, 300000);
    background<ssize_t> sending("send", [&] { return send_all(c.client, data.data(), data.size()); });
    CHECK(recv_exact(c.server, data.size()) == data);
    CHECK(sending.result() == 0);
    CHECK(sansock_close(c.client) == 0);
    char byte = 0;
    CHECK(bounded("recv end", [&] { return sansock_recv(c.server, &byte, 1, 0); }) == 0);
    CHECK(sansock_close(c.server) == 0);
}

TEST_CASE("After close the handle is not a socket for any call, also after its slot is reused") {
    watchdog guard("handle after close");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    sansock_socket_t closed = 0;
    SUBCASE("a connected socket") {
        const connection c = connect_pair(a, b);
        closed = c.client;
    }
    SUBCASE("a fresh socket") { REQUIRE(sansock_socket(a, &closed) == 0); }
    SUBCASE("a listener") {
        uint16_t port = 0;
        closed = listen_on(a, &port);
    }
    SUBCASE("a socket closed with LINGER 0") {
        const connection c = connect_pair(a, b);
        REQUIRE(set_linger(c.client, 1, 0) == 0);
        closed = c.client;
    }
    REQUIRE(sansock_close(closed) == 0);

    auto every_call_fails = [&] {
        char buffer[8] = {};
        const sockaddr_in any = ipv4(0);
        sockaddr_in name{};
        socklen_t length = sizeof name;
        int value = 1;
        socklen_t value_length = sizeof value;
        sansock_socket_t out = 0;
        CHECK(sansock_bind(closed, as_sockaddr(any), sizeof any) == -ENOTSOCK);
        CHECK(sansock_listen(closed, 4) == -ENOTSOCK);
        CHECK(sansock_accept(closed, &out, nullptr, nullptr) == -ENOTSOCK);
        CHECK(sansock_connect(closed, as_sockaddr(any), sizeof any) == -ENOTSOCK);
        CHECK(sansock_send(closed, buffer, sizeof buffer, 0) == -ENOTSOCK);
        CHECK(sansock_recv(closed, buffer, sizeof buffer, 0) == -ENOTSOCK);
        CHECK(sansock_shutdown(closed, SHUT_RDWR) == -ENOTSOCK);
        CHECK(sansock_setsockopt(closed, SOL_SOCKET, SANSOCK_SO_NONBLOCK, &value, sizeof value) == -ENOTSOCK);
        CHECK(sansock_getsockopt(closed, SOL_SOCKET, SO_TYPE, &value, &value_length) == -ENOTSOCK);
        CHECK(sansock_getsockname(closed, reinterpret_cast<sockaddr*>(&name), &length) == -ENOTSOCK);
        CHECK(sansock_getpeername(closed, reinterpret_cast<sockaddr*>(&name), &length) == -ENOTSOCK);
        CHECK(sansock_close(closed) == -ENOTSOCK);
        CHECK(sansock_send_async(closed, buffer, sizeof buffer, [](void*, int64_t) {}, nullptr) == -ENOTSOCK);
        CHECK(sansock_recv_async(closed, buffer, sizeof buffer, [](void*, int64_t) {}, nullptr) == -ENOTSOCK);
        CHECK(sansock_accept_async(closed, [](void*, int64_t) {}, nullptr) == -ENOTSOCK);
        sansock_pollfd p{closed, SANSOCK_POLLIN | SANSOCK_POLLOUT, 0};
        CHECK(sansock_poll(&p, 1, 0) == 1);
        CHECK(p.revents == SANSOCK_POLLNVAL);
    };
    every_call_fails();
    // New sockets take the freed slots; the closed handle must stay invalid.
    std::vector<sansock_socket_t> fresh;
    for (int i = 0; i < 64; ++i) {
        sansock_socket_t s = 0;
        REQUIRE(sansock_socket(a, &s) == 0);
        CHECK(s != closed);
        CHECK(s != 0);
        fresh.push_back(s);
    }
    every_call_fails();
    for (sansock_socket_t s : fresh) CHECK(sansock_close(s) == 0);
    // Close-and-reopen cycles, each reusing the slot just freed.
    for (int i = 0; i < 64; ++i) {
        sansock_socket_t s = 0;
        REQUIRE(sansock_socket(a, &s) == 0);
        CHECK(s != closed);
        CHECK(sansock_close(s) == 0);
        CHECK(sansock_close(s) == -ENOTSOCK);
    }
    every_call_fails();
}

TEST_CASE("SO_LINGER and SO_DONTLINGER round-trip; DONTLINGER 0 turns linger on with the stored interval") {
    watchdog guard("linger options");
    world w;
    sansock_context* a = w.host();
    sansock_socket_t s = 0;
    REQUIRE(sansock_socket(a, &s) == 0);
    linger l{};
    socklen_t length = sizeof l;
    REQUIRE(sansock_getsockopt(s, SOL_SOCKET, SO_LINGER, &l, &length) == 0);
    CHECK(l.l_onoff == 0); // DONTLINGER is the default
    int dont = 0;
    socklen_t dont_length = sizeof dont;
    REQUIRE(sansock_getsockopt(s, SOL_SOCKET, SO_DONTLINGER, &dont, &dont_length) == 0);
    CHECK(dont != 0);

    REQUIRE(set_linger(s, 1, 7) == 0);
    length = sizeof l;
    REQUIRE(sansock_getsockopt(s, SOL_SOCKET, SO_LINGER, &l, &length) == 0);
    CHECK(l.l_onoff != 0);
    CHECK(l.l_linger == 7);
    REQUIRE(set_dontlinger(s) == 0);
    length = sizeof l;
    REQUIRE(sansock_getsockopt(s, SOL_SOCKET, SO_LINGER, &l, &length) == 0);
    CHECK(l.l_onoff == 0);
    REQUIRE(set_int_option(s, SO_DONTLINGER, 0) == 0);
    length = sizeof l;
    REQUIRE(sansock_getsockopt(s, SOL_SOCKET, SO_LINGER, &l, &length) == 0);
    CHECK(l.l_onoff != 0);
    CHECK(l.l_linger == 7);

    CHECK(sansock_setsockopt(s, SOL_SOCKET, SO_LINGER, nullptr, sizeof l) == -EINVAL);
    CHECK(sansock_setsockopt(s, SOL_SOCKET, SO_LINGER, &l, 1) == -EINVAL);
    CHECK(sansock_setsockopt(s, SOL_SOCKET, 0x7777, &dont, sizeof dont) == -ENOPROTOOPT);
    CHECK(sansock_close(s) == 0);
}

TEST_CASE("Closing a socket that never connected returns 0 at once in every linger mode") {
    watchdog guard("close unconnected");
    world w;
    sansock_context* a = w.host();
    sansock_socket_t s = 0;
    REQUIRE(sansock_socket(a, &s) == 0);
    SUBCASE("DONTLINGER") {}
    SUBCASE("LINGER 0") { REQUIRE(set_linger(s, 1, 0) == 0); }
    SUBCASE("LINGER 5 blocking") { REQUIRE(set_linger(s, 1, 5) == 0); }
    SUBCASE("LINGER 5 nonblocking") {
        REQUIRE(set_linger(s, 1, 5) == 0);
        REQUIRE(set_nonblocking(s, true) == 0);
    }
    CHECK(bounded("close", [s] { return sansock_close(s); }, 5s) == 0);
    CHECK(sansock_close(s) == -ENOTSOCK);
}

} // namespace
} // namespace sansock::switchtest

// SPDX-License-Identifier: MIT
// sansock_poll: POLLIN on data, end of stream and a listener's pending connection; POLLOUT
// when writable; POLLHUP/POLLERR after a reset; POLLNVAL for a closed handle.
#include "tests/switch/switch_test_support.hpp"

namespace sansock::switchtest {
namespace {

// Poll time-outs are context time-outs: with the manual clock standing still they would never
// expire, so these contexts use the real clock.
host_options real_clock() {
    host_options o;
    o.use_manual_clock = false;
    return o;
}

TEST_CASE("POLLIN when data arrives, not before") {
    watchdog guard("POLLIN data");
    world w;
    sansock_context* a = w.host(real_clock());
    sansock_context* b = w.host(real_clock());
    const connection c = connect_pair(a, b);
    CHECK((poll_one(c.client, SANSOCK_POLLIN, 0) & SANSOCK_POLLIN) == 0);
    sansock_pollfd p{c.client, SANSOCK_POLLIN, 0};
    CHECK(bounded("poll 200 ms", [&] { return sansock_poll(&p, 1, 200); }) == 0);
    CHECK(p.revents == 0);
    background<int> polling("poll waiting", [&p] { return sansock_poll(&p, 1, 10000); });
    settle(100ms);
    REQUIRE(send_all(c.server, "x", 1) == 0);
    CHECK(polling.result() == 1);
    CHECK((p.revents & SANSOCK_POLLIN) != 0);
    CHECK((p.revents & (SANSOCK_POLLERR | SANSOCK_POLLHUP | SANSOCK_POLLNVAL)) == 0);
    CHECK(recv_exact(c.client, 1) == std::vector<uint8_t>{'x'});
    CHECK((poll_one(c.client, SANSOCK_POLLIN, 0) & SANSOCK_POLLIN) == 0);
}

TEST_CASE("POLLIN at end of stream") {
    watchdog guard("POLLIN end");
    world w;
    sansock_context* a = w.host(real_clock());
    sansock_context* b = w.host(real_clock());
    const connection c = connect_pair(a, b);
    SUBCASE("the peer shuts down") { REQUIRE(sansock_shutdown(c.server, SHUT_WR) == 0); }
    SUBCASE("the peer closes") { REQUIRE(sansock_close(c.server) == 0); }
    CHECK((poll_one(c.client, SANSOCK_POLLIN, 10000) & SANSOCK_POLLIN) != 0);
    REQUIRE(set_nonblocking(c.client, true) == 0);
    char byte = 0;
    CHECK(sansock_recv(c.client, &byte, 1, 0) == 0);
}

TEST_CASE("POLLIN on a listener with a connection to accept") {
    watchdog guard("POLLIN listener");
    world w;
    sansock_context* a = w.host(real_clock());
    sansock_context* b = w.host(real_clock());
    uint16_t port = 0;
    const sansock_socket_t l = listen_on(b, &port);
    CHECK((poll_one(l, SANSOCK_POLLIN, 0) & SANSOCK_POLLIN) == 0);
    sansock_socket_t client = 0;
    REQUIRE(sansock_socket(a, &client) == 0);
    REQUIRE(connect_to(client, port) == 0);
    CHECK((poll_one(l, SANSOCK_POLLIN, 10000) & SANSOCK_POLLIN) != 0);
    REQUIRE(set_nonblocking(l, true) == 0);
    sansock_socket_t server = 0;
    CHECK(sansock_accept(l, &server, nullptr, nullptr) == 0);
    CHECK(server != 0);
    CHECK(sansock_accept(l, &server, nullptr, nullptr) == -EWOULDBLOCK);
    CHECK((poll_one(l, SANSOCK_POLLIN, 0) & SANSOCK_POLLIN) == 0);
}

TEST_CASE("POLLOUT while there is room to send, not when the send side is full") {
    watchdog guard("POLLOUT");
    world w;
    sansock_context* a = w.host(real_clock());
    sansock_context* b = w.host(real_clock());
    const connection c = connect_pair(a, b);
    CHECK((poll_one(c.client, SANSOCK_POLLOUT, 0) & SANSOCK_POLLOUT) != 0);
    const uint64_t queued = fill_until_full(c.client, true);
    CHECK((poll_one(c.client, SANSOCK_POLLOUT, 0) & SANSOCK_POLLOUT) == 0);
    background<short> polling("poll for room", [s = c.client] {
        sansock_pollfd p{s, SANSOCK_POLLOUT, 0};
        return sansock_poll(&p, 1, 20000) == 1 ? p.revents : short(0);
    });
    CHECK_FALSE(polling.wait(200ms));
    // The peer reads: room comes back.
    std::vector<uint8_t> got = recv_exact(c.server, size_t(std::min<uint64_t>(queued, 1 << 20)));
    CHECK((polling.result() & SANSOCK_POLLOUT) != 0);
}

TEST_CASE("A nonblocking connect is -EINPROGRESS, then POLLOUT") {
    watchdog guard("nonblocking connect");
    world w;
    sansock_context* a = w.host(real_clock());
    sansock_context* b = w.host(real_clock());
    uint16_t port = 0;
    const sansock_socket_t l = listen_on(b, &port);
    sansock_socket_t s = 0;
    REQUIRE(sansock_socket(a, &s) == 0);
    REQUIRE(set_nonblocking(s, true) == 0);
    const sockaddr_in to = ipv4(port);
    const int rc = sansock_connect(s, as_sockaddr(to), sizeof to);
    CHECK((rc == -EINPROGRESS || rc == 0));
    CHECK((poll_one(s, SANSOCK_POLLOUT, 10000) & SANSOCK_POLLOUT) != 0);
    int error = -1;
    socklen_t length = sizeof error;
    CHECK(sansock_getsockopt(s, SOL_SOCKET, SO_ERROR, &error, &length) == 0);
    CHECK(error == 0);
    const sansock_socket_t server = accept_one(l);
    CHECK(sansock_send(s, "q", 1, 0) == 1);
    CHECK(recv_exact(server, 1) == std::vector<uint8_t>{'q'});
}

TEST_CASE("A nonblocking connect to nobody ends in POLLERR with the reason in SO_ERROR") {
    watchdog guard("refused connect");
    world w;
    sansock_context* a = w.host(real_clock());
    uint16_t port = 0;
    const sansock_socket_t l = listen_on(a, &port);
    REQUIRE(sansock_close(l) == 0); // nobody listens there any more
    sansock_socket_t s = 0;
    REQUIRE(sansock_socket(a, &s) == 0);
    REQUIRE(set_nonblocking(s, true) == 0);
    const sockaddr_in to = ipv4(port);
    const int rc = sansock_connect(s, as_sockaddr(to), sizeof to);
    if (rc == -EINPROGRESS) {
        CHECK((poll_one(s, SANSOCK_POLLOUT, 10000) & SANSOCK_POLLERR) != 0);
        int error = 0;
        socklen_t length = sizeof error;
        CHECK(sansock_getsockopt(s, SOL_SOCKET, SO_ERROR, &error, &length) == 0);
        CHECK(error == ECONNREFUSED);
    } else {
        CHECK(rc == -ECONNREFUSED);
    }
}

TEST_CASE("POLLHUP or POLLERR after the peer resets the connection") {
    watchdog guard("POLLHUP reset");
    world w;
    sansock_context* a = w.host(real_clock());
    sansock_context* b = w.host(real_clock());
    const connection c = connect_pair(a, b);
    SUBCASE("LINGER 0 close") {
        REQUIRE(set_linger(c.server, 1, 0) == 0);
        REQUIRE(sansock_close(c.server) == 0);
    }
    SUBCASE("the connection is lost") {
        REQUIRE(loopback::drop_connection(provider_instance_of(b), provider_socket_of(c.server)) == 0);
    }
    CHECK(eventually([&] {
        return (poll_one(c.client, SANSOCK_POLLIN | SANSOCK_POLLOUT, 0) & (SANSOCK_POLLHUP | SANSOCK_POLLERR)) != 0;
    }));
    const short revents = poll_one(c.client, SANSOCK_POLLIN, 0);
    if ((revents & SANSOCK_POLLERR) != 0) {
        int error = 0;
        socklen_t length = sizeof error;
        CHECK(sansock_getsockopt(c.client, SOL_SOCKET, SO_ERROR, &error, &length) == 0);
        CHECK(error == ECONNRESET);
    }
    char byte = 0;
    REQUIRE(set_nonblocking(c.client, true) == 0);
    CHECK(sansock_recv(c.client, &byte, 1, 0) == -ECONNRESET);
    CHECK(sansock_close(c.client) == 0);
}

TEST_CASE("POLLNVAL for a closed handle, alongside a ready socket") {
    watchdog guard("POLLNVAL");
    world w;
    sansock_context* a = w.host(real_clock());
    sansock_context* b = w.host(real_clock());
    const connection c = connect_pair(a, b);
    sansock_socket_t gone = 0;
    REQUIRE(sansock_socket(a, &gone) == 0);
    REQUIRE(sansock_close(gone) == 0);
    sansock_pollfd fds[2] = {{gone, SANSOCK_POLLIN, 0}, {c.client, SANSOCK_POLLOUT, 0}};
    CHECK(bounded("poll", [&] { return sansock_poll(fds, 2, 1000); }) == 2);
    CHECK(fds[0].revents == SANSOCK_POLLNVAL);
    CHECK((fds[1].revents & SANSOCK_POLLOUT) != 0);
}

TEST_CASE("Polling sockets of two contexts at once is -EINVAL") {
    watchdog guard("poll two contexts");
    world w;
    sansock_context* a = w.host(real_clock());
    sansock_context* b = w.host(real_clock());
    sansock_socket_t x = 0, y = 0;
    REQUIRE(sansock_socket(a, &x) == 0);
    REQUIRE(sansock_socket(b, &y) == 0);
    sansock_pollfd fds[2] = {{x, SANSOCK_POLLIN, 0}, {y, SANSOCK_POLLIN, 0}};
    CHECK(bounded("poll", [&] { return sansock_poll(fds, 2, 0); }) == -EINVAL);
}

} // namespace
} // namespace sansock::switchtest

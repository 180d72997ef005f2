// SPDX-License-Identifier: MIT
// The loopback fabric matches full addresses (provider/loopback/loopback.hpp): a port is held
// per address, INADDR_ANY conflicts with every address on its port as on Linux, and a connect
// reaches only the listener of the target's address (or the one on INADDR_ANY). Through the
// public API, with loopback contexts on the process's shared fabric, as separate hosts would be.
#include <arpa/inet.h>
#include <netinet/in.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <vector>

#include <doctest/doctest.h>

#include "sansock/sansock.h"
#include "tests/support/bounded_time.hpp"
#include "tests/support/address.hpp"

namespace {

using sansock::test::bounded;
using sansock::test::watchdog;

using sansock::test::as_sockaddr;
using sansock::test::ipv4;

sansock_context* loopback_context() {
    sansock_context_attr attr;
    sansock_context_attr_init(&attr);
    attr.provider = SANSOCK_PROVIDER_LOOPBACK;
    sansock_context* ctx = nullptr;
    REQUIRE(sansock_context_create(&attr, &ctx) == 0);
    return ctx;
}

// A socket of ctx bound to address; returns the bind's result and the socket in *out.
int bind_to(sansock_context* ctx, const sockaddr_in& address, sansock_socket_t* out) {
    REQUIRE(sansock_socket(ctx, out) == 0);
    return sansock_bind(*out, as_sockaddr(address), sizeof address);
}

sansock_socket_t listen_on(sansock_context* ctx, const sockaddr_in& address) {
    sansock_socket_t s = 0;
    REQUIRE(bind_to(ctx, address, &s) == 0);
    REQUIRE(sansock_listen(s, 8) == 0);
    const int on = 1;
    REQUIRE(sansock_setsockopt(s, SOL_SOCKET, SANSOCK_SO_NONBLOCK, &on, sizeof on) == 0);
    return s;
}

int connect_to(sansock_context* ctx, const sockaddr_in& address, sansock_socket_t* out) {
    REQUIRE(sansock_socket(ctx, out) == 0);
    const sansock_socket_t s = *out;
    return bounded("sansock_connect", [s, address] { return sansock_connect(s, as_sockaddr(address), sizeof address); });
}

// The connection waiting on a nonblocking listener (0 if none is there within a short wait).
sansock_socket_t accepted_on(sansock_socket_t listener, int wait_ms = 2000) {
    sansock_pollfd p{listener, SANSOCK_POLLIN, 0};
    if (sansock_poll(&p, 1, wait_ms) <= 0) return 0;
    sansock_socket_t s = 0;
    return sansock_accept(listener, &s, nullptr, nullptr) == 0 ? s : 0;
}

sockaddr_in local_of(sansock_socket_t s) {
    sockaddr_in a{};
    socklen_t n = sizeof a;
    REQUIRE(sansock_getsockname(s, reinterpret_cast<sockaddr*>(&a), &n) == 0);
    return a;
}

bool same(const sockaddr_in& a, const sockaddr_in& b) {
    return a.sin_addr.s_addr == b.sin_addr.s_addr && a.sin_port == b.sin_port;
}

// Sends a byte through the connection and reads it back on the other end.
void moves_a_byte(sansock_socket_t from, sansock_socket_t to) {
    const char out = 'x';
    CHECK(bounded("send", [from, out] { return sansock_send(from, &out, 1, 0); }) == 1);
    char in = 0;
    CHECK(bounded("recv", [to, &in] { return sansock_recv(to, &in, 1, 0); }) == 1);
    CHECK(in == 'x');
}

} // namespace

TEST_CASE("Two contexts bind one port on two addresses; a connect reaches only the one it names") {
    watchdog guard("loopback full addresses");
    sansock_context* host1 = loopback_context();
    sansock_context* host2 = loopback_context();
    sansock_context* client = loopback_context();
    const sockaddr_in first = ipv4("10.1.1.1", 5000);
    const sockaddr_in second = ipv4("10.2.2.2", 5000);
    const sansock_socket_t l1 = listen_on(host1, first);
    const sansock_socket_t l2 = listen_on(host2, second);

    sansock_socket_t to_second = 0;
    REQUIRE(connect_to(client, second, &to_second) == 0);
    const sansock_socket_t at_second = accepted_on(l2);
    REQUIRE(at_second != 0);
    CHECK(accepted_on(l1, 200) == 0); // the other address's listener saw nothing
    CHECK(same(local_of(at_second), second));
    moves_a_byte(to_second, at_second);

    sansock_socket_t to_first = 0;
    REQUIRE(connect_to(client, first, &to_first) == 0);
    const sansock_socket_t at_first = accepted_on(l1);
    REQUIRE(at_first != 0);
    CHECK(accepted_on(l2, 200) == 0);
    CHECK(same(local_of(at_first), first));
    moves_a_byte(at_first, to_first);

    SUBCASE("an address nobody bound on that port is refused") {
        sansock_socket_t s = 0;
        CHECK(connect_to(client, ipv4("10.3.3.3", 5000), &s) == -ECONNREFUSED);
        CHECK(sansock_close(s) == 0);
    }
    SUBCASE("a taken address is in use, from any context") {
        sansock_socket_t again = 0;
        CHECK(bind_to(client, first, &again) == -EADDRINUSE);
        CHECK(sansock_close(again) == 0);
        CHECK(bind_to(host2, first, &again) == -EADDRINUSE);
        CHECK(sansock_close(again) == 0);
    }
    SUBCASE("INADDR_ANY conflicts with any address on the port") {
        sansock_socket_t any = 0;
        CHECK(bind_to(client, ipv4("0.0.0.0", 5000), &any) == -EADDRINUSE);
        CHECK(sansock_close(any) == 0);
        CHECK(bind_to(client, ipv4("0.0.0.0", 5001), &any) == 0); // another port is free
        CHECK(sansock_close(any) == 0);
    }

    for (sansock_socket_t s : {to_first, to_second, at_first, at_second, l1, l2}) CHECK(sansock_close(s) == 0);
    for (sansock_context* c : {client, host2, host1}) CHECK(bounded("destroy", [c] { return sansock_context_destroy(c); }) == 0);
}

TEST_CASE("A listener on INADDR_ANY holds its port on every address and takes connects to any of them") {
    watchdog guard("loopback INADDR_ANY");
    sansock_context* host = loopback_context();
    sansock_context* other = loopback_context();
    const sansock_socket_t l = listen_on(host, ipv4("0.0.0.0", 5002));

    sansock_socket_t taken = 0;
    CHECK(bind_to(other, ipv4("10.1.1.1", 5002), &taken) == -EADDRINUSE);
    CHECK(sansock_close(taken) == 0);
    CHECK(bind_to(other, ipv4("0.0.0.0", 5002), &taken) == -EADDRINUSE);
    CHECK(sansock_close(taken) == 0);

    std::vector<sansock_socket_t> open;
    for (const char* dotted : {"10.1.1.1", "10.7.7.7"}) {
        sansock_socket_t c = 0;
        REQUIRE(connect_to(other, ipv4(dotted, 5002), &c) == 0);
        const sansock_socket_t a = accepted_on(l);
        REQUIRE(a != 0);
        CHECK(same(local_of(a), ipv4(dotted, 5002))); // the address the client named
        moves_a_byte(c, a);
        open.push_back(c);
        open.push_back(a);
    }
    for (sansock_socket_t s : open) CHECK(sansock_close(s) == 0);

    // Once the listener is gone, one specific address may take the port.
    CHECK(sansock_close(l) == 0);
    sansock_socket_t specific = 0;
    CHECK(bind_to(other, ipv4("10.1.1.1", 5002), &specific) == 0);
    CHECK(sansock_close(specific) == 0);
    for (sansock_context* c : {other, host}) CHECK(bounded("destroy", [c] { return sansock_context_destroy(c); }) == 0);
}

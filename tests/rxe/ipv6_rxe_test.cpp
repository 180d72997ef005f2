// SPDX-License-Identifier: MIT
// AF_INET6 over the verbs provider on a real device (rdma_cm with sockaddr_in6): a connection
// over an IPv6 address of the device with 4 MiB checked each way and a graceful close, the
// names in AF_INET6; a listener on :: taking an IPv6 client, an IPv4 one and an IPv4-mapped
// one (each seen as ::ffff:a.b.c.d); IPV6_V6ONLY making rdma_cm refuse the IPv4 client.
//
// The IPv6 address is $SANSOCK_TEST_ADDR6, else fd00::1, which tests/vm/setup-rxe gives veth0
// (rxe0) beside 10.0.0.1; the IPv4 one is test_address(). Without the IPv6 address on any
// interface the test fails (a missing set-up is not a pass).
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "sansock/sansock.h"
#include "tests/support/address.hpp"
#include "tests/support/bounded_time.hpp"
#include "tests/support/rdma_test_env.hpp"
#include "tests/support/socket_options.hpp"

using namespace std::chrono_literals;
using namespace sansock::test;

namespace {

constexpr int call_timeout_ms = 60000;

std::string address6() {
    const char* a = std::getenv("SANSOCK_TEST_ADDR6");
    return a != nullptr && *a != '\0' ? a : "fd00::1";
}

struct verbs_context {
    sansock_context* ctx = nullptr;
    verbs_context() {
        sansock_context_attr attr;
        sansock_context_attr_init(&attr); // verbs, own progress thread
        REQUIRE(sansock_context_create(&attr, &ctx) == 0);
    }
    ~verbs_context() { CHECK(sansock_context_destroy(ctx) == 0); }
    verbs_context(const verbs_context&) = delete;
    verbs_context& operator=(const verbs_context&) = delete;
};

sansock_socket_t new_socket(sansock_context* ctx) {
    sansock_socket_t s = 0;
    REQUIRE(sansock_socket(ctx, &s) == 0);
    REQUIRE(set_timeout(s, SO_RCVTIMEO, call_timeout_ms) == 0);
    REQUIRE(set_timeout(s, SO_SNDTIMEO, call_timeout_ms) == 0);
    return s;
}

struct name {
    sockaddr_storage address{};
    socklen_t length = sizeof(sockaddr_storage);
    uint16_t port() const {
        return ntohs(address.ss_family == AF_INET6 ? reinterpret_cast<const sockaddr_in6&>(address).sin6_port
                                                   : reinterpret_cast<const sockaddr_in&>(address).sin_port);
    }
};

name local_name(sansock_socket_t s) {
    name n;
    REQUIRE(sansock_getsockname(s, reinterpret_cast<sockaddr*>(&n.address), &n.length) == 0);
    return n;
}
name peer_name(sansock_socket_t s) {
    name n;
    REQUIRE(sansock_getpeername(s, reinterpret_cast<sockaddr*>(&n.address), &n.length) == 0);
    return n;
}

template <typename A>
sansock_socket_t listener_at(sansock_context* ctx, const A& address, uint16_t* port, bool v6only = false) {
    const sansock_socket_t l = new_socket(ctx);
    const int on = 1;
    if (v6only) REQUIRE(sansock_setsockopt(l, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on) == 0);
    const int rc = sansock_bind(l, as_sockaddr(address), sizeof address);
    INFO("bind: " << std::string(sansock_strerror(rc)));
    REQUIRE(rc == 0);
    REQUIRE(sansock_listen(l, 8) == 0);
    *port = local_name(l).port();
    REQUIRE(*port != 0);
    return l;
}

struct pair {
    sansock_socket_t client = 0, server = 0;
    name accepted_peer;
};

template <typename A>
pair connect_through(sansock_context* ctx, sansock_socket_t listener, const A& to) {
    pair p;
    p.client = new_socket(ctx);
    // The connect completes once the listener's provider accepted it, before the user accepts.
    const int connected = sansock_connect(p.client, as_sockaddr(to), sizeof to);
    INFO("connect: " << std::string(sansock_strerror(connected)));
    REQUIRE(connected == 0);
    const int rc = sansock_accept(listener, &p.server, reinterpret_cast<sockaddr*>(&p.accepted_peer.address),
                                  &p.accepted_peer.length);
    INFO("accept: " << std::string(sansock_strerror(rc)));
    REQUIRE(rc == 0);
    return p;
}

std::vector<uint8_t> bytes(size_t n, uint32_t seed) {
    std::vector<uint8_t> v(n);
    uint32_t x = seed * 2654435761u + 1;
    for (auto& b : v) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        b = uint8_t(x);
    }
    return v;
}

// `n` bytes from `from` to `to`, checked; the sender's thread runs beside the receiver.
void stream(sansock_socket_t from, sansock_socket_t to, size_t n, uint32_t seed) {
    const std::vector<uint8_t> out = bytes(n, seed);
    background<long> sending("send", [from, &out] {
        size_t sent = 0;
        while (sent < out.size()) {
            const ssize_t k = sansock_send(from, out.data() + sent, out.size() - sent, 0);
            if (k <= 0) return long(k);
            sent += size_t(k);
        }
        return long(sent);
    });
    std::vector<uint8_t> got(n);
    const ssize_t k = sansock_recv(to, got.data(), got.size(), MSG_WAITALL);
    CHECK(sending.result() == long(n));
    REQUIRE(k == ssize_t(n));
    CHECK(got == out);
}

void exchange_and_close(const pair& p, size_t n) {
    stream(p.client, p.server, n, 1);
    stream(p.server, p.client, n, 2);
    REQUIRE(sansock_shutdown(p.client, SHUT_WR) == 0);
    char byte = 0;
    CHECK(sansock_recv(p.server, &byte, 1, 0) == 0); // end of stream after all of it
    CHECK(sansock_close(p.server) == 0);
    CHECK(sansock_recv(p.client, &byte, 1, 0) == 0);
    CHECK(sansock_close(p.client) == 0);
}

} // namespace

TEST_CASE("Over an IPv6 address of the device: connect, accept, AF_INET6 names, 4 MiB each way, graceful close") {
    watchdog guard("ipv6 over verbs", 300s);
    const std::string six = address6();
    INFO("IPv6 address " << six << " (ip -6 addr: " << command_output("ip -6 addr show") << ")");
    verbs_context server, client;
    uint16_t port = 0;
    const sansock_socket_t l = listener_at(server.ctx, ipv6(six, 0), &port);
    const name bound = local_name(l);
    CHECK(bound.address.ss_family == AF_INET6);
    CHECK(bound.length == socklen_t(sizeof(sockaddr_in6)));
    CHECK(address_text(bound.address) == six);

    const pair p = connect_through(client.ctx, l, ipv6(six, port));
    CHECK(p.accepted_peer.address.ss_family == AF_INET6);
    CHECK(p.accepted_peer.length == socklen_t(sizeof(sockaddr_in6)));
    CHECK(address_text(p.accepted_peer.address) == six);
    const name client_local = local_name(p.client), client_peer = peer_name(p.client);
    const name server_local = local_name(p.server), server_peer = peer_name(p.server);
    for (const name* n : {&client_local, &client_peer, &server_local, &server_peer}) {
        CHECK(n->address.ss_family == AF_INET6);
        CHECK(n->length == socklen_t(sizeof(sockaddr_in6)));
        CHECK(address_text(n->address) == six);
    }
    CHECK(client_peer.port() == port);
    CHECK(server_peer.port() == client_local.port());
    exchange_and_close(p, 4u << 20);
    CHECK(sansock_close(l) == 0);
}

TEST_CASE("A listener on :: over verbs takes an IPv6 client, an IPv4 one and an IPv4-mapped one") {
    watchdog guard("dual stack over verbs", 300s);
    const std::string six = address6(), four = test_address();
    REQUIRE(!four.empty());
    verbs_context server, client;
    uint16_t port = 0;
    const sansock_socket_t l = listener_at(server.ctx, ipv6("::", 0), &port);
    CHECK(address_text(local_name(l).address) == "::");
    const std::string mapped = "::ffff:" + four;

    SUBCASE("IPv6") {
        const pair p = connect_through(client.ctx, l, ipv6(six, port));
        CHECK(address_text(p.accepted_peer.address) == six);
        exchange_and_close(p, 256 * 1024);
    }
    SUBCASE("IPv4") {
        const pair p = connect_through(client.ctx, l, ipv4(four, port));
        CHECK(p.accepted_peer.address.ss_family == AF_INET6);
        CHECK(address_text(p.accepted_peer.address) == mapped);
        CHECK(address_text(local_name(p.server).address) == mapped);
        const name client_peer = peer_name(p.client);
        CHECK(client_peer.address.ss_family == AF_INET);
        CHECK(address_text(client_peer.address) == four);
        exchange_and_close(p, 256 * 1024);
    }
    SUBCASE("IPv4-mapped") {
        const pair p = connect_through(client.ctx, l, ipv6(mapped, port));
        CHECK(address_text(p.accepted_peer.address) == mapped);
        const name client_peer = peer_name(p.client);
        CHECK(client_peer.address.ss_family == AF_INET6);
        CHECK(address_text(client_peer.address) == mapped);
        CHECK(client_peer.port() == port);
        exchange_and_close(p, 256 * 1024);
    }
    CHECK(sansock_close(l) == 0);
}

TEST_CASE("IPV6_V6ONLY over verbs: rdma_cm refuses the IPv4 client of a v6-only listener on ::") {
    watchdog guard("v6only over verbs", 300s);
    const std::string six = address6(), four = test_address();
    REQUIRE(!four.empty());
    verbs_context server, client;
    uint16_t port = 0;
    const sansock_socket_t l = listener_at(server.ctx, ipv6("::", 0), &port, true);
    const sansock_socket_t c = new_socket(client.ctx);
    const sockaddr_in to = ipv4(four, port);
    const int rc = sansock_connect(c, as_sockaddr(to), sizeof to);
    INFO("connect: " << std::string(sansock_strerror(rc)));
    CHECK((rc == -ECONNREFUSED || rc == -EHOSTUNREACH || rc == -ETIMEDOUT));
    CHECK(sansock_close(c) == 0);
    const pair p = connect_through(client.ctx, l, ipv6(six, port));
    exchange_and_close(p, 64 * 1024);
    CHECK(sansock_close(l) == 0);
}

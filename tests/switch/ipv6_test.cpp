// SPDX-License-Identifier: MIT
// AF_INET6 through the switch on loopback: bind, listen, connect, accept and the names over
// ::1 and fd00:: addresses, IPv4-mapped addresses, a socket on :: taking both families,
// IPV6_V6ONLY, bad lengths, names cut as Linux cuts them, and IPv6 in the reset messages.
#include <netinet/in.h>

#include "lib/address.hpp"
#include "tests/switch/switch_test_support.hpp"

using namespace sansock;
using namespace sansock::switchtest;
using sansock::test::address_text;
using sansock::test::ipv6;

namespace {

int set_v6only(sansock_socket_t s, int value) {
    return sansock_setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &value, sizeof value);
}

struct name {
    sockaddr_storage address{};
    socklen_t length = sizeof(sockaddr_storage);
    int rc = 0;
    uint16_t port() const {
        return ntohs(address.ss_family == AF_INET6 ? reinterpret_cast<const sockaddr_in6&>(address).sin6_port
                                                   : reinterpret_cast<const sockaddr_in&>(address).sin_port);
    }
};

name local_name(sansock_socket_t s) {
    name n;
    n.rc = sansock_getsockname(s, reinterpret_cast<sockaddr*>(&n.address), &n.length);
    return n;
}
name peer_name(sansock_socket_t s) {
    name n;
    n.rc = sansock_getpeername(s, reinterpret_cast<sockaddr*>(&n.address), &n.length);
    return n;
}

// A socket bound to `address` and listening; its port in *port.
template <typename A>
sansock_socket_t listener_at(sansock_context* ctx, const A& address, uint16_t* port, bool v6only = false) {
    sansock_socket_t l = 0;
    REQUIRE(sansock_socket(ctx, &l) == 0);
    if (v6only) REQUIRE(set_v6only(l, 1) == 0);
    REQUIRE(sansock_bind(l, as_sockaddr(address), sizeof address) == 0);
    REQUIRE(sansock_listen(l, 8) == 0);
    const name bound = local_name(l);
    REQUIRE(bound.rc == 0);
    *port = bound.port();
    REQUIRE(*port != 0);
    return l;
}

template <typename A>
int connect_socket(sansock_socket_t s, const A& to) {
    return bounded("sansock_connect", [s, to] { return sansock_connect(s, as_sockaddr(to), sizeof to); });
}

// Connects a fresh socket of `ctx` to `to`, accepts it on `listener`; both ends and the
// peer name accept gave.
struct pair {
    sansock_socket_t client = 0, server = 0;
    name accepted_peer;
};
template <typename A>
pair connect_through(sansock_context* ctx, sansock_socket_t listener, const A& to) {
    pair p;
    REQUIRE(sansock_socket(ctx, &p.client) == 0);
    // The connect completes once the listener's provider took it, before the user accepts.
    REQUIRE(connect_socket(p.client, to) == 0);
    p.accepted_peer.rc = bounded("sansock_accept", [&] {
        return sansock_accept(listener, &p.server, reinterpret_cast<sockaddr*>(&p.accepted_peer.address),
                              &p.accepted_peer.length);
    });
    REQUIRE(p.accepted_peer.rc == 0);
    return p;
}

// Bytes both ways, checked.
void exchange(const pair& p) {
    const std::vector<uint8_t> out = pattern_bytes(0, 3000), back = pattern_bytes(7, 1000);
    REQUIRE(send_all(p.client, out.data(), out.size()) == 0);
    std::vector<uint8_t> got(out.size());
    REQUIRE(bounded("recv", [&] { return sansock_recv(p.server, got.data(), got.size(), MSG_WAITALL); }) == ssize_t(got.size()));
    CHECK(got == out);
    REQUIRE(send_all(p.server, back.data(), back.size()) == 0);
    got.assign(back.size(), 0);
    REQUIRE(bounded("recv", [&] { return sansock_recv(p.client, got.data(), got.size(), MSG_WAITALL); }) == ssize_t(got.size()));
    CHECK(got == back);
}

void close_pair(const pair& p) {
    CHECK(sansock_close(p.client) == 0);
    CHECK(sansock_close(p.server) == 0);
}

} // namespace

TEST_CASE("Over ::1: bind, listen, connect, accept, and every name is a sockaddr_in6 of full length") {
    watchdog guard("ipv6 loopback address");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    uint16_t port = 0;
    const sansock_socket_t l = listener_at(b, ipv6("::1", 0), &port);
    const name bound = local_name(l);
    CHECK(bound.address.ss_family == AF_INET6);
    CHECK(bound.length == socklen_t(sizeof(sockaddr_in6)));
    CHECK(address_text(bound.address) == "::1");

    const pair p = connect_through(a, l, ipv6("::1", port));
    CHECK(p.accepted_peer.length == socklen_t(sizeof(sockaddr_in6)));
    CHECK(p.accepted_peer.address.ss_family == AF_INET6);
    CHECK(address_text(p.accepted_peer.address) == "::1");
    const name client_local = local_name(p.client), client_peer = peer_name(p.client);
    const name server_local = local_name(p.server), server_peer = peer_name(p.server);
    for (const name* n : {&client_local, &client_peer, &server_local, &server_peer}) {
        CHECK(n->rc == 0);
        CHECK(n->length == socklen_t(sizeof(sockaddr_in6)));
        CHECK(n->address.ss_family == AF_INET6);
        CHECK(address_text(n->address) == "::1");
    }
    CHECK(client_peer.port() == port);
    CHECK(server_local.port() == port);
    CHECK(server_peer.port() == client_local.port());
    CHECK(p.accepted_peer.port() == client_local.port());
    exchange(p);
    close_pair(p);
    CHECK(sansock_close(l) == 0);
}

TEST_CASE("A socket on :: takes IPv6 clients and IPv4 ones (seen as ::ffff:a.b.c.d); an IPv4 client sees AF_INET") {
    watchdog guard("dual stack");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    uint16_t port = 0;
    const sansock_socket_t l = listener_at(b, ipv6("::", 0), &port);
    CHECK(address_text(local_name(l).address) == "::");

    SUBCASE("IPv6 client") {
        const pair p = connect_through(a, l, ipv6("fd00::2", port));
        CHECK(address_text(p.accepted_peer.address) == "fd00::2");
        CHECK(address_text(local_name(p.server).address) == "fd00::2"); // the address it was reached at
        exchange(p);
        close_pair(p);
    }
    SUBCASE("IPv4 client, AF_INET") {
        const pair p = connect_through(a, l, ipv4(port));
        CHECK(p.accepted_peer.address.ss_family == AF_INET6);
        CHECK(p.accepted_peer.length == socklen_t(sizeof(sockaddr_in6)));
        CHECK(address_text(p.accepted_peer.address) == std::string("::ffff:") + kAddress);
        const name server_local = local_name(p.server);
        CHECK(server_local.address.ss_family == AF_INET6);
        CHECK(address_text(server_local.address) == std::string("::ffff:") + kAddress);
        CHECK(server_local.port() == port);
        const name client_peer = peer_name(p.client), client_local = local_name(p.client);
        CHECK(client_peer.address.ss_family == AF_INET);
        CHECK(client_peer.length == socklen_t(sizeof(sockaddr_in)));
        CHECK(address_text(client_peer.address) == kAddress);
        CHECK(client_local.address.ss_family == AF_INET);
        CHECK(p.accepted_peer.port() == client_local.port());
        exchange(p);
        close_pair(p);
    }
    SUBCASE("IPv4 client through an IPv4-mapped address, AF_INET6") {
        const pair p = connect_through(a, l, ipv6(std::string("::ffff:") + kAddress, port));
        CHECK(address_text(p.accepted_peer.address) == std::string("::ffff:") + kAddress);
        const name client_peer = peer_name(p.client), client_local = local_name(p.client);
        CHECK(client_peer.address.ss_family == AF_INET6);
        CHECK(address_text(client_peer.address) == std::string("::ffff:") + kAddress);
        CHECK(client_peer.port() == port);
        CHECK(address_text(client_local.address) == std::string("::ffff:") + kAddress);
        exchange(p);
        close_pair(p);
    }
    CHECK(sansock_close(l) == 0);
}

TEST_CASE("A socket bound to an IPv4-mapped address is an IPv4 listener that names itself in IPv6") {
    watchdog guard("mapped bind");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    uint16_t port = 0;
    const sansock_socket_t l = listener_at(b, ipv6(std::string("::ffff:") + kAddress, 0), &port);
    const name bound = local_name(l);
    CHECK(bound.address.ss_family == AF_INET6);
    CHECK(address_text(bound.address) == std::string("::ffff:") + kAddress);
    const pair p = connect_through(a, l, ipv4(port));
    CHECK(address_text(p.accepted_peer.address) == std::string("::ffff:") + kAddress);
    exchange(p);
    close_pair(p);
    // It holds the IPv4 address's port: an IPv4 bind there is taken.
    sansock_socket_t other = 0;
    REQUIRE(sansock_socket(b, &other) == 0);
    const sockaddr_in same = ipv4(port);
    CHECK(sansock_bind(other, as_sockaddr(same), sizeof same) == -EADDRINUSE);
    // No IPv6 listener covers fd00::1 on this port.
    sansock_socket_t c = 0;
    REQUIRE(sansock_socket(a, &c) == 0);
    CHECK(connect_socket(c, ipv6("fd00::1", port)) == -ECONNREFUSED);
    CHECK(sansock_close(c) == 0);
    CHECK(sansock_close(other) == 0);
    CHECK(sansock_close(l) == 0);
}

TEST_CASE("IPV6_V6ONLY: a v6-only socket on :: refuses IPv4 clients and shares its port with 0.0.0.0") {
    watchdog guard("v6only");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    sansock_socket_t fresh = 0;
    REQUIRE(sansock_socket(b, &fresh) == 0);
    int v = -1;
    socklen_t length = sizeof v;
    CHECK(sansock_getsockopt(fresh, IPPROTO_IPV6, IPV6_V6ONLY, &v, &length) == 0);
    CHECK(v == 0); // off by default, as Linux with net.ipv6.bindv6only 0
    CHECK(sansock_close(fresh) == 0);

    uint16_t port = 0;
    const sansock_socket_t l = listener_at(b, ipv6("::", 0), &port, true);
    length = sizeof v;
    CHECK(sansock_getsockopt(l, IPPROTO_IPV6, IPV6_V6ONLY, &v, &length) == 0);
    CHECK(v == 1);
    CHECK(set_v6only(l, 0) == -EINVAL); // after bind, as Linux

    sansock_socket_t c = 0;
    REQUIRE(sansock_socket(a, &c) == 0);
    CHECK(connect_socket(c, ipv4(port)) == -ECONNREFUSED);
    CHECK(sansock_close(c) == 0);
    const pair p = connect_through(a, l, ipv6("fd00::2", port));
    exchange(p);
    close_pair(p);

    // 0.0.0.0 on the same port: free beside a v6-only ::, taken beside a dual-stack one.
    uint16_t v4_port = 0;
    const sansock_socket_t l4 = listener_at(b, ipv4(port, "0.0.0.0"), &v4_port);
    CHECK(v4_port == port);
    const pair p4 = connect_through(a, l4, ipv4(port));
    CHECK(p4.accepted_peer.address.ss_family == AF_INET);
    exchange(p4);
    close_pair(p4);
    CHECK(sansock_close(l4) == 0);
    CHECK(sansock_close(l) == 0);

    uint16_t dual_port = 0;
    const sansock_socket_t dual = listener_at(b, ipv6("::", 0), &dual_port);
    sansock_socket_t clash = 0;
    REQUIRE(sansock_socket(b, &clash) == 0);
    const sockaddr_in any4 = ipv4(dual_port, "0.0.0.0");
    CHECK(sansock_bind(clash, as_sockaddr(any4), sizeof any4) == -EADDRINUSE);
    CHECK(sansock_close(clash) == 0);
    CHECK(sansock_close(dual) == 0);
}

TEST_CASE("IPV6_V6ONLY misuse: IPv4-mapped bind -EINVAL, connect -ENETUNREACH, IPv4 -EAFNOSUPPORT, AF_INET -ENOPROTOOPT") {
    watchdog guard("v6only misuse");
    world w;
    sansock_context* a = w.host();
    sansock_socket_t s = 0;
    REQUIRE(sansock_socket(a, &s) == 0);
    REQUIRE(set_v6only(s, 1) == 0);
    const sockaddr_in6 mapped = ipv6(std::string("::ffff:") + kAddress, 7000);
    CHECK(sansock_bind(s, as_sockaddr(mapped), sizeof mapped) == -EINVAL);
    CHECK(sansock_connect(s, as_sockaddr(mapped), sizeof mapped) == -ENETUNREACH);
    const sockaddr_in plain = ipv4(7000);
    CHECK(sansock_bind(s, as_sockaddr(plain), sizeof plain) == -EAFNOSUPPORT); // it is AF_INET6 now
    CHECK(sansock_connect(s, as_sockaddr(plain), sizeof plain) == -EAFNOSUPPORT);
    int hops = 1;
    CHECK(sansock_setsockopt(s, IPPROTO_IPV6, IPV6_UNICAST_HOPS, &hops, sizeof hops) == -ENOPROTOOPT);
    socklen_t length = sizeof hops;
    CHECK(sansock_getsockopt(s, IPPROTO_IPV6, IPV6_UNICAST_HOPS, &hops, &length) == -ENOPROTOOPT);
    char shorter = 1;
    CHECK(sansock_setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &shorter, sizeof shorter) == -EINVAL);
    CHECK(sansock_close(s) == 0);

    sansock_socket_t v4 = 0;
    REQUIRE(sansock_socket(a, &v4) == 0);
    const sockaddr_in any = ipv4(0);
    REQUIRE(sansock_bind(v4, as_sockaddr(any), sizeof any) == 0);
    CHECK(set_v6only(v4, 1) == -ENOPROTOOPT);
    int value = 0;
    length = sizeof value;
    CHECK(sansock_getsockopt(v4, IPPROTO_IPV6, IPV6_V6ONLY, &value, &length) == -ENOPROTOOPT);
    // An AF_INET socket does not connect to an IPv6 address (as Linux).
    const sockaddr_in6 six = ipv6("::1", 7000);
    CHECK(sansock_connect(v4, as_sockaddr(six), sizeof six) == -EAFNOSUPPORT);
    CHECK(sansock_close(v4) == 0);
}

TEST_CASE("Address lengths: sockaddr_in6 in full, else -EINVAL; other families -EAFNOSUPPORT") {
    watchdog guard("lengths");
    world w;
    sansock_context* a = w.host();
    sansock_socket_t s = 0;
    REQUIRE(sansock_socket(a, &s) == 0);
    const sockaddr_in6 six = ipv6("::1", 7000);
    for (socklen_t length : {socklen_t(sizeof six - 1), socklen_t(24), socklen_t(sizeof(sockaddr_in)), socklen_t(2), socklen_t(1)}) {
        CAPTURE(length);
        CHECK(sansock_bind(s, as_sockaddr(six), length) == -EINVAL);
        CHECK(sansock_connect(s, as_sockaddr(six), length) == -EINVAL);
    }
    sockaddr_storage unix_family{};
    unix_family.ss_family = AF_UNIX;
    CHECK(sansock_bind(s, reinterpret_cast<const sockaddr*>(&unix_family), sizeof unix_family) == -EAFNOSUPPORT);
    CHECK(sansock_connect(s, reinterpret_cast<const sockaddr*>(&unix_family), sizeof unix_family) == -EAFNOSUPPORT);
    // A longer buffer is fine.
    sockaddr_storage longer{};
    std::memcpy(&longer, &six, sizeof six);
    CHECK(sansock_bind(s, reinterpret_cast<const sockaddr*>(&longer), sizeof longer) == 0);
    CHECK(sansock_close(s) == 0);
}

TEST_CASE("getsockname, getpeername and accept cut an IPv6 name to the buffer and report 28 bytes") {
    watchdog guard("truncation");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    uint16_t port = 0;
    const sansock_socket_t l = listener_at(b, ipv6("fd00::1", 0), &port);
    const pair p = connect_through(a, l, ipv6("fd00::1", port));
    const name full = peer_name(p.client);
    REQUIRE(full.rc == 0);
    for (socklen_t room : {socklen_t(0), socklen_t(2), socklen_t(sizeof(sockaddr_in)), socklen_t(27)}) {
        CAPTURE(room);
        uint8_t buffer[64];
        std::memset(buffer, 0xAB, sizeof buffer);
        socklen_t length = room;
        CHECK(sansock_getpeername(p.client, reinterpret_cast<sockaddr*>(buffer), &length) == 0);
        CHECK(length == socklen_t(sizeof(sockaddr_in6)));
        CHECK(std::memcmp(buffer, &full.address, room) == 0);
        for (size_t i = room; i < sizeof buffer; ++i) CHECK(buffer[i] == 0xAB);
        length = room;
        std::memset(buffer, 0xAB, sizeof buffer);
        CHECK(sansock_getsockname(l, reinterpret_cast<sockaddr*>(buffer), &length) == 0);
        CHECK(length == socklen_t(sizeof(sockaddr_in6)));
        for (size_t i = room; i < sizeof buffer; ++i) CHECK(buffer[i] == 0xAB);
    }
    // accept's peer, cut the same way.
    sansock_socket_t c = 0;
    REQUIRE(sansock_socket(a, &c) == 0);
    background<int> connecting("sansock_connect", [c, port] {
        const sockaddr_in6 to = ipv6("fd00::1", port);
        return sansock_connect(c, as_sockaddr(to), sizeof to);
    });
    uint8_t peer[64];
    std::memset(peer, 0xAB, sizeof peer);
    socklen_t length = sizeof(sockaddr_in);
    sansock_socket_t accepted = 0;
    CHECK(bounded("accept", [&] { return sansock_accept(l, &accepted, reinterpret_cast<sockaddr*>(peer), &length); }) == 0);
    CHECK(connecting.result() == 0);
    CHECK(length == socklen_t(sizeof(sockaddr_in6)));
    CHECK(reinterpret_cast<const sockaddr*>(peer)->sa_family == AF_INET6);
    for (size_t i = sizeof(sockaddr_in); i < sizeof peer; ++i) CHECK(peer[i] == 0xAB);
    CHECK(sansock_close(accepted) == 0);
    CHECK(sansock_close(c) == 0);
    close_pair(p);
    CHECK(sansock_close(l) == 0);
}

TEST_CASE("Addresses are formatted for the log: IPv4, IPv6 in brackets, IPv4-mapped, anything else ?") {
    socket_address a{};
    char text[address::format_size];
    a.v4 = ipv4(7000, "10.0.0.1");
    address::format(a, text, sizeof text);
    CHECK(std::string(text) == "10.0.0.1:7000");
    a.v6 = ipv6("fd00::1", 49152);
    address::format(a, text, sizeof text);
    CHECK(std::string(text) == "[fd00::1]:49152");
    a.v6 = ipv6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535); // the longest: no cut
    address::format(a, text, sizeof text);
    CHECK(std::string(text) == "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
    a.v4 = ipv4(80, "10.0.0.2");
    address::format(address::to_family(a, AF_INET6), text, sizeof text);
    CHECK(std::string(text) == "[::ffff:10.0.0.2]:80");
    a = {};
    address::format(a, text, sizeof text);
    CHECK(std::string(text) == "?");
}

namespace {

struct log_lines {
    std::mutex mutex;
    std::vector<std::string> lines;
    static void receive(void* user, int, const char* message) {
        auto* self = static_cast<log_lines*>(user);
        std::lock_guard lock(self->mutex);
        self->lines.emplace_back(message);
    }
    bool has(const std::string& part) {
        std::lock_guard lock(mutex);
        for (const std::string& l : lines)
            if (l.find(part) != std::string::npos) return true;
        return false;
    }
};

} // namespace

TEST_CASE("A reset message names both IPv6 addresses, [address]:port") {
    watchdog guard("ipv6 log");
    world w;
    log_lines client_log;
    sansock_context_attr attr;
    sansock_context_attr_init(&attr);
    attr.provider = SANSOCK_PROVIDER_LOOPBACK;
    attr.log_level = SANSOCK_LOG_DEBUG;
    attr.log = &log_lines::receive;
    attr.log_user = &client_log;
    context_hooks hooks;
    hooks.provider_specific = w.fabric();
    hooks.now = w.clock.function();
    sansock_context* a = nullptr;
    REQUIRE(create_context(&attr, hooks, &a) == 0);
    sansock_context* b = w.host();
    uint16_t port = 0;
    const sansock_socket_t l = listener_at(b, ipv6("::", 0), &port);
    {
        const pair p = connect_through(a, l, ipv6("fd00::2", port));
        const uint16_t client_port = local_name(p.client).port();
        REQUIRE(set_linger(p.client, 1, 0) == 0);
        REQUIRE(sansock_close(p.client) == 0);
        const std::string both =
            "[fd00::2]:" + std::to_string(client_port) + " -> [fd00::2]:" + std::to_string(port);
        CHECK(eventually([&] { return client_log.has(both) && client_log.has("reset sent"); }));
        CHECK(sansock_close(p.server) == 0);
    }
    CHECK(sansock_close(l) == 0);
    CHECK(bounded("destroy", [a] { return sansock_context_destroy(a); }) == 0);
}

TEST_CASE("A bound socket connects in the family it was bound in (rdma_cm's rule, on loopback too)") {
    watchdog guard("bound connect");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    uint16_t port = 0;
    const sansock_socket_t l = listener_at(b, ipv6("::", 0), &port);
    const std::string mapped = std::string("::ffff:") + kAddress;
    auto bound_socket = [&](const sockaddr_in6& at) {
        sansock_socket_t s = 0;
        REQUIRE(sansock_socket(a, &s) == 0);
        REQUIRE(sansock_bind(s, as_sockaddr(at), sizeof at) == 0);
        return s;
    };
    const sansock_socket_t on_any = bound_socket(ipv6("::", 0));
    CHECK(connect_socket(on_any, ipv6(mapped, port)) == -EINVAL); // an IPv6 id, an IPv4 destination
    CHECK(sansock_close(on_any) == 0);
    const sansock_socket_t on_mapped = bound_socket(ipv6(mapped, 0));
    CHECK(connect_socket(on_mapped, ipv6("fd00::1", port)) == -EINVAL); // an IPv4 id, an IPv6 destination
    CHECK(sansock_close(on_mapped) == 0);

    const sansock_socket_t six = bound_socket(ipv6("fd00::3", 0));
    const uint16_t client_port = local_name(six).port();
    REQUIRE(connect_socket(six, ipv6("fd00::1", port)) == 0);
    sansock_socket_t server = 0;
    name peer;
    REQUIRE(bounded("accept", [&] { return sansock_accept(l, &server, reinterpret_cast<sockaddr*>(&peer.address), &peer.length); }) == 0);
    CHECK(address_text(peer.address) == "fd00::3");
    CHECK(peer.port() == client_port);
    const sansock_socket_t on_v4 = bound_socket(ipv6(mapped, 0));
    REQUIRE(connect_socket(on_v4, ipv6(mapped, port)) == 0); // IPv4 both: fine
    CHECK(address_text(peer_name(on_v4).address) == mapped);
    CHECK(sansock_close(on_v4) == 0);
    CHECK(sansock_close(server) == 0);
    CHECK(sansock_close(six) == 0);
    CHECK(sansock_close(l) == 0);
}

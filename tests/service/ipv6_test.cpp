// SPDX-License-Identifier: MIT
// IPv6 in the service layer, on loopback: listeners, channels and service host endpoints on
// AF_INET6 addresses (struct sockaddr_in6, all 28 bytes), a listener on :: taking IPv6, IPv4
// and IPv4-mapped clients, and the addresses refused.
#include <sys/un.h>

#include "tests/service/service_test_support.hpp"

using namespace sansock::svctest;
using sansock::test::address_text;
using sansock::test::ipv6;

namespace {

sockaddr_storage listener_name(sansock_listener* l) {
    sockaddr_storage a{};
    socklen_t n = sizeof a;
    REQUIRE(sansock_listener_address(l, reinterpret_cast<sockaddr*>(&a), &n) == 0);
    CHECK(n == (a.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in)));
    return a;
}

uint16_t port_of(const sockaddr_storage& a) {
    return ntohs(a.ss_family == AF_INET6 ? reinterpret_cast<const sockaddr_in6&>(a).sin6_port
                                         : reinterpret_cast<const sockaddr_in&>(a).sin_port);
}

int open_at(sansock_listener* l, const sockaddr_in6& at) {
    return sansock_listener_open(l, as_sockaddr(at), sizeof at, nullptr);
}

template <typename Address>
int open_to(sansock_channel* c, const Address& to) {
    return bounded("sansock_channel_open", [c, to] { return sansock_channel_open(c, as_sockaddr(to), sizeof to, nullptr); });
}

// A channel opened from `client` to `to`, accepted on `l` (server side): a message each way.
template <typename Address>
void talk_through(sansock_listener* l, sansock_context* client, sansock_context* server, const Address& to) {
    sansock_channel* c = new_channel(client);
    sansock_channel* s = new_channel(server);
    background<int> accepting("accept", [&] { return sansock_listener_accept(l, s, nullptr); });
    REQUIRE(open_to(c, to) == 0);
    REQUIRE(accepting.result() == 0);
    CHECK(send_text(c, "over IPv6?") == 0);
    CHECK(receive_text(s).text == "over IPv6?");
    CHECK(send_text(s, "yes") == 0);
    CHECK(receive_text(c).text == "yes");
    dispose(c);
    dispose(s);
}

// A server and a client context, a listener on the server open on [`address`]:0.
struct listening_on {
    watchdog guard{"ipv6 listener"};
    world w;
    sansock_context* server = w.host();
    sansock_context* client = w.host();
    sansock_listener* l = new_listener(server);
    sockaddr_storage bound{};
    uint16_t port = 0;
    explicit listening_on(const char* address) {
        REQUIRE(open_at(l, ipv6(address, 0)) == 0);
        bound = listener_name(l);
        port = port_of(bound);
    }
    ~listening_on() { dispose(l); }
};

} // namespace

TEST_CASE("A listener on [::1]: its address is a whole sockaddr_in6; a channel to it carries messages both ways") {
    listening_on t("::1");
    CHECK(t.bound.ss_family == AF_INET6);
    CHECK(address_text(t.bound) == "::1");
    CHECK(t.port != 0);
    // A buffer for an IPv4 name is too short for it.
    sockaddr_in short_buffer{};
    socklen_t n = sizeof short_buffer;
    CHECK(sansock_listener_address(t.l, reinterpret_cast<sockaddr*>(&short_buffer), &n) == -EINVAL);
    talk_through(t.l, t.client, t.server, ipv6("::1", t.port));
}

TEST_CASE("A listener on [::] takes IPv6, IPv4 and IPv4-mapped channels") {
    listening_on t("::");
    CHECK(address_text(t.bound) == "::");
    SUBCASE("IPv6") { talk_through(t.l, t.client, t.server, ipv6("fd00::2", t.port)); }
    SUBCASE("IPv4") { talk_through(t.l, t.client, t.server, ipv4(t.port)); }
    SUBCASE("IPv4-mapped") { talk_through(t.l, t.client, t.server, ipv6(std::string("::ffff:") + kAddress, t.port)); }
}

TEST_CASE("A channel to an IPv6 address nobody listens on is refused; bad addresses are -EINVAL or -EAFNOSUPPORT") {
    watchdog guard("ipv6 refusals");
    world w;
    sansock_context* ctx = w.host();
    sansock_channel* c = new_channel(ctx);
    CHECK(open_to(c, ipv6("fd00::9", 9)) == -ECONNREFUSED);
    CHECK(cstate(c) == SANSOCK_CHANNEL_CREATED);
    const sockaddr_in6 six = ipv6("::1", 0);
    sockaddr_un unix_address{};
    unix_address.sun_family = AF_UNIX;
    const auto* other = reinterpret_cast<const sockaddr*>(&unix_address);
    // An AF_INET6 address needs all of sockaddr_in6.
    CHECK(sansock_channel_open(c, as_sockaddr(six), sizeof(sockaddr_in), nullptr) == -EINVAL);
    CHECK(sansock_channel_open(c, other, sizeof unix_address, nullptr) == -EAFNOSUPPORT);
    sansock_listener* l = new_listener(ctx);
    CHECK(sansock_listener_open(l, as_sockaddr(six), sizeof(sockaddr_in), nullptr) == -EINVAL);
    CHECK(sansock_listener_open(l, other, sizeof unix_address, nullptr) == -EAFNOSUPPORT);
    CHECK(lstate(l) == SANSOCK_LISTENER_CREATED);
    sansock_service_host_attr attr{sizeof(sansock_service_host_attr), 0,
                                   [](sansock_service_host*, size_t, sansock_channel*, void*) {}, nullptr};
    sansock_service_host* h = nullptr;
    sansock_service_endpoint cut{as_sockaddr(six), sizeof(sockaddr_in), SANSOCK_CHANNEL_SESSION};
    CHECK(sansock_service_host_create(ctx, &cut, 1, &attr, &h) == -EINVAL);
    sansock_service_endpoint unix_endpoint{other, sizeof unix_address, SANSOCK_CHANNEL_SESSION};
    CHECK(sansock_service_host_create(ctx, &unix_endpoint, 1, &attr, &h) == -EAFNOSUPPORT);
    dispose(c);
    dispose(l);
}

TEST_CASE("A service host with an IPv6 endpoint and an IPv4 one: each says its address, each hands out its channels") {
    watchdog guard("host on both families");
    world w;
    sansock_context* server = w.host();
    sansock_context* client = w.host();
    struct handed {
        std::atomic<int> count{0};
        std::atomic<unsigned> endpoints{0}; // a bit per endpoint
        static void on_channel(sansock_service_host*, size_t endpoint, sansock_channel*, void* state) {
            auto* self = static_cast<handed*>(state);
            self->endpoints.fetch_or(1u << endpoint);
            self->count.fetch_add(1);
        }
    } got;
    const sockaddr_in6 six = ipv6("::1", 0);
    const sockaddr_in four = ipv4(0);
    const sansock_service_endpoint e[2] = {{as_sockaddr(six), sizeof six, SANSOCK_CHANNEL_SESSION},
                                           {as_sockaddr(four), sizeof four, SANSOCK_CHANNEL_SESSION}};
    sansock_service_host_attr attr{sizeof(sansock_service_host_attr), 2000, &handed::on_channel, &got};
    sansock_service_host* h = nullptr;
    REQUIRE(sansock_service_host_create(server, e, 2, &attr, &h) == 0);
    REQUIRE(sansock_service_host_open(h, nullptr) == 0);

    sockaddr_storage at6{}, at4{};
    socklen_t n = sizeof at6;
    REQUIRE(sansock_service_host_endpoint_address(h, 0, reinterpret_cast<sockaddr*>(&at6), &n) == 0);
    CHECK(n == sizeof(sockaddr_in6));
    CHECK(at6.ss_family == AF_INET6);
    CHECK(address_text(at6) == "::1");
    n = sizeof(sockaddr_in); // too short for the IPv6 endpoint
    CHECK(sansock_service_host_endpoint_address(h, 0, reinterpret_cast<sockaddr*>(&at4), &n) == -EINVAL);
    n = sizeof at4;
    REQUIRE(sansock_service_host_endpoint_address(h, 1, reinterpret_cast<sockaddr*>(&at4), &n) == 0);
    CHECK(n == sizeof(sockaddr_in));
    CHECK(at4.ss_family == AF_INET);

    sansock_channel* c6 = new_channel(client);
    REQUIRE(open_to(c6, ipv6("::1", port_of(at6))) == 0);
    REQUIRE(eventually([&] { return got.count.load() == 1; }));
    CHECK(got.endpoints.load() == 1u);
    sansock_channel* c4 = new_channel(client);
    REQUIRE(open_to(c4, ipv4(port_of(at4))) == 0);
    REQUIRE(eventually([&] { return got.count.load() == 2; }));
    CHECK(got.endpoints.load() == 3u);

    CHECK(sansock_service_host_abort(h) == 0);
    CHECK(bounded("host close", [h] { return sansock_service_host_close(h, nullptr); }) == 0);
    CHECK(sansock_service_host_free(h) == 0);
    dispose(c6);
    dispose(c4);
}

// SPDX-License-Identifier: MIT
// The service cases that involve the network, on verbs (rxe suite): accept, close resetting
// unaccepted clients, abort with an accept pending, messages, session shutdown and graceful
// close, faults, and the service host's close with session clients, a time-out and a
// non-session endpoint.
#include <memory>

#include "tests/service/service_test_support.hpp"
#include "tests/support/rdma_test_env.hpp"

using namespace sansock::svctest;

namespace {

// Two contexts on the default (verbs) provider, each with its own progress thread.
struct verbs_world {
    std::string address = sansock::test::test_address();
    sansock_context* server = nullptr;
    sansock_context* client = nullptr;
    verbs_world() {
        kAddress = address.c_str(); // the helpers bind and connect here
        sansock_context_attr attr;
        sansock_context_attr_init(&attr);
        REQUIRE(sansock_context_create(&attr, &server) == 0);
        REQUIRE(sansock_context_create(&attr, &client) == 0);
    }
    ~verbs_world() {
        CHECK(bounded("destroy", [this] { return sansock_context_destroy(client); }) == 0);
        CHECK(bounded("destroy", [this] { return sansock_context_destroy(server); }) == 0);
    }
};

struct accepted_log {
    std::mutex mutex;
    std::condition_variable changed;
    std::vector<sansock_channel*> channels;
    static void on_channel(sansock_service_host*, size_t, sansock_channel* c, void* state) {
        auto* log = static_cast<accepted_log*>(state);
        std::lock_guard lock(log->mutex);
        log->channels.push_back(c);
        log->changed.notify_all();
    }
    bool wait_for(size_t n) {
        std::unique_lock lock(mutex);
        return changed.wait_for(lock, 30s, [&] { return channels.size() >= n; });
    }
    sansock_channel* at(size_t i) {
        std::lock_guard lock(mutex);
        return channels.at(i);
    }
};

sansock_service_host* new_host(sansock_context* ctx, uint32_t kind, uint32_t timeout_ms, accepted_log& log) {
    const sockaddr_in any = ipv4(0);
    sansock_service_endpoint e{as_sockaddr(any), sizeof any, kind};
    sansock_service_host_attr attr{sizeof(sansock_service_host_attr), timeout_ms, &accepted_log::on_channel, &log};
    sansock_service_host* h = nullptr;
    REQUIRE(sansock_service_host_create(ctx, &e, 1, &attr, &h) == 0);
    REQUIRE(sansock_service_host_open(h, nullptr) == 0);
    return h;
}

sockaddr_in endpoint_of(sansock_service_host* h) {
    sockaddr_in a{};
    socklen_t n = sizeof a;
    REQUIRE(sansock_service_host_endpoint_address(h, 0, reinterpret_cast<sockaddr*>(&a), &n) == 0);
    return a;
}

void free_host(sansock_service_host* h) {
    sansock_service_host_abort(h);
    REQUIRE(eventually([&] { return sansock_service_host_get_state(h) != SANSOCK_HOST_CLOSING; }, 30s));
    bounded("host close", [&] { return sansock_service_host_close(h, nullptr); });
    CHECK(bounded("host free", [&] { return sansock_service_host_free(h); }) == 0);
}

} // namespace

TEST_CASE("verbs: listener accepts, channels carry messages, shutdown and graceful close") {
    watchdog guard("verbs channel", 120s);
    verbs_world w;
    channel_pair p = connect_pair(w.client, w.server);
    CHECK(send_text(p.client, "over rdma") == 0);
    CHECK(receive_text(p.server).text == "over rdma");
    CHECK(sansock_channel_shutdown(p.client, nullptr) == 0);
    CHECK(sansock_channel_shutdown(p.client, nullptr) == -EBADFD);
    CHECK(receive_text(p.server).rc == SANSOCK_S_END);
    async_record r;
    const sansock_async_context a = r.context();
    const int rc = sansock_channel_close(p.server, &a);
    CHECK(bounded("client close", [&] { return sansock_channel_close(p.client, nullptr); }) == 0);
    CHECK(async_outcome(rc, r, 30s) == 0);
    CHECK(cstate(p.server) == SANSOCK_CHANNEL_CLOSED);
    dispose(p);
}

TEST_CASE("verbs: listener close cancels pending accepts and resets unaccepted clients") {
    watchdog guard("verbs listener close", 120s);
    verbs_world w;
    sansock_listener* l = new_listener(w.server);
    REQUIRE(open_listener(l) == 0);
    sansock_channel* c = new_channel(w.client);
    REQUIRE(open_channel(c, address_of(l)) == 0);
    background<received> receiving("receive", [c] { return receive_text(c, 60s); }, 60s);
    CHECK(sansock_listener_close(l, nullptr) == 0);
    CHECK(receiving.result().rc == -ECONNRESET);
    CHECK(cstate(c) == SANSOCK_CHANNEL_FAULTED);
    dispose(c);
    dispose(l);
}

TEST_CASE("verbs: abort while an accept is pending cancels it; later accepts fail at once") {
    watchdog guard("verbs abort", 120s);
    verbs_world w;
    sansock_listener* l = new_listener(w.server);
    REQUIRE(open_listener(l) == 0);
    sansock_channel* s = new_channel(w.server);
    background<int> accepting("accept", [&] { return sansock_listener_accept(l, s, nullptr); });
    REQUIRE(eventually([&] { return cstate(s) == SANSOCK_CHANNEL_ACCEPTING; }));
    CHECK(sansock_listener_abort(l) == 0);
    CHECK(accepting.result() == -ECANCELED);
    CHECK(sansock_listener_accept(l, s, nullptr) == -ENOTRECOVERABLE);
    dispose(s);
    dispose(l);
}

TEST_CASE("verbs: a channel faults when its peer resets") {
    watchdog guard("verbs fault", 120s);
    verbs_world w;
    channel_pair p = connect_pair(w.client, w.server);
    background<received> receiving("receive", [&] { return receive_text(p.server, 60s); }, 60s);
    settle(100ms);
    CHECK(sansock_channel_abort(p.client) == 0);
    CHECK(receiving.result().rc == -ECONNRESET);
    CHECK(cstate(p.server) == SANSOCK_CHANNEL_FAULTED);
    CHECK(send_text(p.server, "x") == -ENOTRECOVERABLE);
    CHECK(bounded("close", [&] { return sansock_channel_close(p.server, nullptr); }) == 0);
    dispose(p);
}

TEST_CASE("verbs: host close with 10 session clients completes right after the last closes") {
    watchdog guard("verbs host close", 180s);
    verbs_world w;
    accepted_log log;
    sansock_service_host* h = new_host(w.server, SANSOCK_CHANNEL_SESSION, 0, log);
    constexpr size_t n = 10;
    std::vector<sansock_channel*> clients(n);
    for (auto& c : clients) {
        c = new_channel(w.client);
        REQUIRE(open_channel(c, endpoint_of(h)) == 0);
    }
    REQUIRE(log.wait_for(n));
    async_record r;
    const sansock_async_context a = r.context();
    const int rc = sansock_service_host_close(h, &a);
    REQUIRE(rc == -EINPROGRESS);
    for (size_t i = 0; i < n; ++i) {
        settle(20ms);
        CHECK(r.count() == 0);
        CHECK(bounded("client close", [&] { return sansock_channel_close(clients[i], nullptr); }) == 0);
    }
    CHECK(async_outcome(rc, r, 30s) == 0);
    CHECK(sansock_service_host_get_state(h) == SANSOCK_HOST_CLOSED);
    for (auto* c : clients) dispose(c);
    free_host(h);
}

TEST_CASE("verbs: host close times out with a client that never closes") {
    watchdog guard("verbs host time-out", 120s);
    verbs_world w;
    accepted_log log;
    sansock_service_host* h = new_host(w.server, SANSOCK_CHANNEL_SESSION, 500, log);
    sansock_channel* c = new_channel(w.client);
    REQUIRE(open_channel(c, endpoint_of(h)) == 0);
    REQUIRE(log.wait_for(1));
    CHECK(bounded("host close", [&] { return sansock_service_host_close(h, nullptr); }) == -ETIMEDOUT);
    CHECK(sansock_service_host_get_state(h) == SANSOCK_HOST_CLOSED);
    dispose(c);
    free_host(h);
}

TEST_CASE("verbs: host close on a non-session endpoint completes when pending I/O does") {
    watchdog guard("verbs non-session", 120s);
    verbs_world w;
    accepted_log log;
    sansock_service_host* h = new_host(w.server, SANSOCK_CHANNEL_NONSESSION, 0, log);
    sansock_channel* c = new_channel(w.client, SANSOCK_CHANNEL_NONSESSION);
    REQUIRE(open_channel(c, endpoint_of(h)) == 0);
    REQUIRE(log.wait_for(1));
    sansock_channel* mine = log.at(0);
    background<received> receiving("receive", [&] { return receive_text(mine, 60s); }, 60s);
    settle(100ms);
    async_record r;
    const sansock_async_context a = r.context();
    const int rc = sansock_service_host_close(h, &a);
    REQUIRE(rc == -EINPROGRESS);
    settle(200ms);
    CHECK(r.count() == 0);
    CHECK(send_text(c, "done") == 0);
    CHECK(receiving.result().text == "done");
    CHECK(async_outcome(rc, r, 30s) == 0);
    dispose(c);
    free_host(h);
}

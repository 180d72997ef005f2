// SPDX-License-Identifier: MIT
// Service host: close waits for every session client (N = 1, 10, 100), a client that never
// closes and the time-out, a non-session endpoint, abort, and the host's state table.
#include <memory>

#include "tests/service/service_test_support.hpp"

using namespace sansock::svctest;

namespace {

// The channels a host hands out.
struct accepted_log {
    std::mutex mutex;
    std::condition_variable changed;
    std::vector<sansock_channel*> channels;
    std::vector<size_t> endpoints;

    static void on_channel(sansock_service_host*, size_t endpoint, sansock_channel* c, void* state) {
        auto* log = static_cast<accepted_log*>(state);
        std::lock_guard lock(log->mutex);
        log->channels.push_back(c);
        log->endpoints.push_back(endpoint);
        log->changed.notify_all();
    }
    size_t count() {
        std::lock_guard lock(mutex);
        return channels.size();
    }
    bool wait_for(size_t n, milliseconds limit = 20s) {
        std::unique_lock lock(mutex);
        return changed.wait_for(lock, limit, [&] { return channels.size() >= n; });
    }
    sansock_channel* at(size_t i) {
        std::lock_guard lock(mutex);
        return channels.at(i);
    }
};

struct host_fixture {
    world w;
    sansock_context* server = w.host(false, 4096);
    sansock_context* client = w.host(false, 4096);
    accepted_log log;
    sansock_service_host* h = nullptr;

    explicit host_fixture(std::vector<uint32_t> kinds, uint32_t close_timeout_ms = 0) {
        const sockaddr_in any = ipv4(0);
        std::vector<sansock_service_endpoint> endpoints;
        for (uint32_t kind : kinds) endpoints.push_back({as_sockaddr(any), sizeof any, kind});
        sansock_service_host_attr attr{sizeof(sansock_service_host_attr), close_timeout_ms, &accepted_log::on_channel, &log};
        REQUIRE(sansock_service_host_create(server, endpoints.data(), endpoints.size(), &attr, &h) == 0);
    }
    ~host_fixture() {
        sansock_service_host_abort(h);
        REQUIRE(eventually([&] { return sansock_service_host_get_state(h) != SANSOCK_HOST_CLOSING; }));
        bounded("host close", [&] { return sansock_service_host_close(h, nullptr); });
        CHECK(bounded("host free", [&] { return sansock_service_host_free(h); }) == 0);
    }
    sockaddr_in endpoint(size_t i) {
        sockaddr_in a{};
        socklen_t n = sizeof a;
        REQUIRE(sansock_service_host_endpoint_address(h, i, reinterpret_cast<sockaddr*>(&a), &n) == 0);
        return a;
    }
    int state() { return sansock_service_host_get_state(h); }
};

void close_with_clients(size_t n) {
    watchdog guard("host close with " + std::to_string(n) + " clients", 120s);
    host_fixture f({SANSOCK_CHANNEL_SESSION});
    REQUIRE(sansock_service_host_open(f.h, nullptr) == 0);
    const sockaddr_in to = f.endpoint(0);
    std::vector<sansock_channel*> clients(n);
    for (auto& c : clients) {
        c = new_channel(f.client);
        REQUIRE(open_channel(c, to) == 0);
    }
    REQUIRE(f.log.wait_for(n));
    CHECK(send_text(clients[0], "request") == 0);
    CHECK(receive_text(f.log.at(0)).text == "request");

    async_record r;
    const sansock_async_context a = r.context();
    const int rc = sansock_service_host_close(f.h, &a);
    REQUIRE(rc == -EINPROGRESS);
    CHECK(f.state() == SANSOCK_HOST_CLOSING);
    // No new channel once close has started.
    sansock_channel* late = new_channel(f.client);
    const sockaddr_in again = to;
    const int late_rc = open_channel(late, again);
    CHECK(late_rc != 0);
    CHECK(f.log.count() == n);
    dispose(late);

    for (size_t i = 0; i < n; ++i) {
        CHECK(r.count() == 0); // not before the last client has closed
        CHECK(bounded("client close", [&] { return sansock_channel_close(clients[i], nullptr); }) == 0);
        if (i + 1 < n && (n <= 10 || i % 10 == 0)) {
            // the host's side of that session closes, and the host still waits
            const size_t closed_now = i + 1;
            CHECK(eventually([&] {
                size_t closed = 0;
                for (size_t k = 0; k < n; ++k) closed += cstate(f.log.at(k)) == SANSOCK_CHANNEL_CLOSED;
                return closed == closed_now;
            }));
            settle(n <= 10 ? 50ms : 5ms);
            CHECK(r.count() == 0);
            CHECK(f.state() == SANSOCK_HOST_CLOSING);
        }
    }
    const auto last = steady_clock::now();
    REQUIRE(r.wait(10s));
    CHECK(steady_clock::now() - last < 5s); // right after the last one
    CHECK(async_outcome(rc, r) == 0);
    CHECK(f.state() == SANSOCK_HOST_CLOSED);
    for (size_t k = 0; k < n; ++k) CHECK(cstate(f.log.at(k)) == SANSOCK_CHANNEL_CLOSED);
    for (auto* c : clients) dispose(c);
}

} // namespace

TEST_CASE("Host close with 1 session client completes right after the client closes") { close_with_clients(1); }
TEST_CASE("Host close with 10 session clients completes right after the last closes") { close_with_clients(10); }
TEST_CASE("Host close with 100 session clients completes right after the last closes") { close_with_clients(100); }

TEST_CASE("Host close with a client that never closes times out with -ETIMEDOUT") {
    watchdog guard("host close time-out");
    host_fixture f({SANSOCK_CHANNEL_SESSION}, 1000);
    REQUIRE(sansock_service_host_open(f.h, nullptr) == 0);
    sansock_channel* good = new_channel(f.client);
    sansock_channel* stubborn = new_channel(f.client);
    REQUIRE(open_channel(good, f.endpoint(0)) == 0);
    REQUIRE(open_channel(stubborn, f.endpoint(0)) == 0);
    REQUIRE(f.log.wait_for(2));
    const auto start = steady_clock::now();
    background<int> closing("host close", [&] { return sansock_service_host_close(f.h, nullptr); });
    CHECK(bounded("good client close", [&] { return sansock_channel_close(good, nullptr); }) == 0);
    CHECK(closing.result() == -ETIMEDOUT);
    CHECK(steady_clock::now() - start >= 900ms);
    CHECK(f.state() == SANSOCK_HOST_CLOSED);
    const int rc = receive_text(stubborn).rc; // its session was reset
    CHECK((rc == -ECONNRESET || rc == SANSOCK_S_END));
    dispose(good);
    dispose(stubborn);
}

TEST_CASE("Host close on a non-session endpoint completes as soon as pending I/O does") {
    watchdog guard("non-session host close");
    host_fixture f({SANSOCK_CHANNEL_NONSESSION});
    REQUIRE(sansock_service_host_open(f.h, nullptr) == 0);
    sansock_channel* c = new_channel(f.client, SANSOCK_CHANNEL_NONSESSION);
    REQUIRE(open_channel(c, f.endpoint(0)) == 0);
    REQUIRE(f.log.wait_for(1));
    sansock_channel* mine = f.log.at(0);
    background<received> receiving("pending receive", [&] { return receive_text(mine); });
    settle(50ms);
    async_record r;
    const sansock_async_context a = r.context();
    const int rc = sansock_service_host_close(f.h, &a);
    REQUIRE(rc == -EINPROGRESS);
    settle(200ms);
    CHECK(r.count() == 0); // the receive is still pending
    CHECK(send_text(c, "done") == 0);
    CHECK(receiving.result().text == "done");
    CHECK(async_outcome(rc, r) == 0); // without the client closing anything
    CHECK(f.state() == SANSOCK_HOST_CLOSED);
    dispose(c);
}

TEST_CASE("Host abort during close makes the close return -ECANCELED") {
    watchdog guard("host abort during close");
    host_fixture f({SANSOCK_CHANNEL_SESSION, SANSOCK_CHANNEL_NONSESSION});
    REQUIRE(sansock_service_host_open(f.h, nullptr) == 0);
    sansock_channel* c = new_channel(f.client);
    REQUIRE(open_channel(c, f.endpoint(0)) == 0);
    REQUIRE(f.log.wait_for(1));
    CHECK(f.log.endpoints.at(0) == 0);
    async_record r;
    const sansock_async_context a = r.context();
    const int rc = sansock_service_host_close(f.h, &a);
    REQUIRE(rc == -EINPROGRESS);
    CHECK(sansock_service_host_abort(f.h) == 0);
    CHECK(async_outcome(rc, r) == -ECANCELED);
    CHECK(f.state() == SANSOCK_HOST_CLOSED);
    dispose(c);
}

TEST_CASE("Host abort when open aborts listeners and channels without waiting; FAULTED") {
    watchdog guard("host abort");
    host_fixture f({SANSOCK_CHANNEL_SESSION});
    REQUIRE(sansock_service_host_open(f.h, nullptr) == 0);
    sansock_channel* c = new_channel(f.client);
    REQUIRE(open_channel(c, f.endpoint(0)) == 0);
    REQUIRE(f.log.wait_for(1));
    CHECK(sansock_service_host_abort(f.h) == 0);
    CHECK(f.state() == SANSOCK_HOST_FAULTED);
    CHECK(cstate(f.log.at(0)) == SANSOCK_CHANNEL_FAULTED);
    CHECK(receive_text(c).rc == -ECONNRESET);
    CHECK(bounded("close", [&] { return sansock_service_host_close(f.h, nullptr); }) == 0);
    CHECK(f.state() == SANSOCK_HOST_CLOSED);
    dispose(c);
}

TEST_CASE("Host state table: open, close, reset, free in each reachable state") {
    watchdog guard("host table");
    host_fixture f({SANSOCK_CHANNEL_SESSION});
    CHECK(f.state() == SANSOCK_HOST_CREATED);
    CHECK(sansock_service_host_reset(f.h) == 0);
    sockaddr_in a{};
    socklen_t n = sizeof a;
    CHECK(sansock_service_host_endpoint_address(f.h, 0, reinterpret_cast<sockaddr*>(&a), &n) == -EBADFD);
    CHECK(sansock_service_host_open(f.h, nullptr) == 0);
    CHECK(f.state() == SANSOCK_HOST_OPEN);
    CHECK(sansock_service_host_open(f.h, nullptr) == -EBADFD);
    CHECK(sansock_service_host_reset(f.h) == -EBADFD);
    CHECK(sansock_service_host_free(f.h) == -EBADFD);
    CHECK(sansock_service_host_close(f.h, nullptr) == 0); // no channel: at once
    CHECK(f.state() == SANSOCK_HOST_CLOSED);
    CHECK(sansock_service_host_close(f.h, nullptr) == 0);
    CHECK(sansock_service_host_abort(f.h) == 0);
    CHECK(f.state() == SANSOCK_HOST_CLOSED);
    CHECK(sansock_service_host_reset(f.h) == 0);
    CHECK(f.state() == SANSOCK_HOST_CREATED);
    CHECK(sansock_service_host_open(f.h, nullptr) == 0); // opens again after reset
    CHECK(sansock_service_host_endpoint_address(f.h, 1, reinterpret_cast<sockaddr*>(&a), &n) == -EINVAL);
}

TEST_CASE("Host open fails as a whole when one endpoint cannot open; no channel is accepted") {
    watchdog guard("host open failure");
    world w;
    sansock_context* server = w.host();
    sansock_listener* taken = new_listener(server);
    REQUIRE(open_listener(taken) == 0);
    const sockaddr_in busy = address_of(taken);
    const sockaddr_in any = ipv4(0);
    sansock_service_endpoint endpoints[2] = {{as_sockaddr(any), sizeof any, SANSOCK_CHANNEL_SESSION},
                                             {as_sockaddr(busy), sizeof busy, SANSOCK_CHANNEL_SESSION}};
    accepted_log log;
    sansock_service_host_attr attr{sizeof(sansock_service_host_attr), 0, &accepted_log::on_channel, &log};
    sansock_service_host* h = nullptr;
    REQUIRE(sansock_service_host_create(server, endpoints, 2, &attr, &h) == 0);
    CHECK(sansock_service_host_open(h, nullptr) == -EADDRINUSE);
    CHECK(sansock_service_host_get_state(h) == SANSOCK_HOST_CREATED);
    CHECK(sansock_service_host_free(h) == 0);
    dispose(taken);
}

// SPDX-License-Identifier: MIT
// Abort never allocates, and no close or abort needs memory: this binary links the failing
// allocator (tests/support/failing_allocator.hpp): every allocation fails, on one thread while
// that thread's flag is set, or on every thread (the service threads, the progress threads)
// while the global switch is on. Aborts listeners, channels and a host under the flag; then
// aborts, closes of sockets in each linger mode, their background completion and a context's
// destroy with no memory on any thread: each completes (or says -ENOMEM), the process never
// ends on std::bad_alloc.
#include "tests/service/service_test_support.hpp"
#include "tests/support/failing_allocator.hpp"
#include "tests/switch/switch_test_support.hpp"

using namespace sansock::svctest;
using sansock::test::allowed_allocations;
using sansock::test::fail_allocations;
using sansock::test::refused;
using sansock::test::without_memory;
using sansock::test::without_memory_anywhere;

namespace {
// How the other end of a connection reset under no memory sees it: the reset, or (its own
// receive found no memory meanwhile) its own failure.
bool lost(int64_t result) { return result == -ECONNRESET || result == -ENOMEM; }

struct sansock_context_stats stats_of(sansock_context* ctx) {
    struct sansock_context_stats s{};
    s.size = sizeof s;
    REQUIRE(sansock_context_stats(ctx, &s) == 0);
    return s;
}

// Whether, within 5 s since `start`, a socket of ctx was closed with SO_LINGER {1, 0} (as the
// service closes a listening socket). Allocates nothing (it runs while every allocation
// fails): the counters are read onto the stack, the wait is a sleep.
bool closed_since(sansock_context* ctx, const struct sansock_context_stats& start) {
    for (int i = 0; i < 5000; ++i) {
        struct sansock_context_stats now{};
        now.size = sizeof now;
        if (sansock_context_stats(ctx, &now) != 0) return false;
        if (now.closes_abortive > start.closes_abortive) return true;
        std::this_thread::sleep_for(1ms);
    }
    return false;
}
} // namespace

TEST_CASE("The allocation failure switch works") {
    const int before = refused.load();
    bool threw = false;
    fail_allocations = true;
    try {
        void* volatile p = ::operator new(64); // a call, not a new-expression: never elided
        ::operator delete(p);
    } catch (const std::bad_alloc&) {
        threw = true;
    }
    fail_allocations = false;
    CHECK(threw);
    CHECK(refused.load() == before + 1);
}

TEST_CASE("Listener abort succeeds with no memory: pending accepts cancelled, FAULTED, nothing allocated") {
    watchdog guard("abort without memory");
    world w;
    sansock_context* server = w.host();
    sansock_context* client = w.host();
    sansock_listener* l = new_listener(server);
    REQUIRE(open_listener(l) == 0);
    // A connection that arrived and was never accepted, and two pending accepts.
    sansock_channel* arrived = new_channel(client);
    REQUIRE(open_channel(arrived, address_of(l)) == 0);
    sansock_channel* first = new_channel(server);
    REQUIRE(bounded("accept", [&] { return sansock_listener_accept(l, first, nullptr); }) == 0);
    sansock_channel* a = new_channel(server);
    sansock_channel* b = new_channel(server);
    async_record r;
    const sansock_async_context ctx = r.context();
    const int pending = sansock_listener_accept(l, a, &ctx);
    REQUIRE(pending == -EINPROGRESS);
    background<int> sync_accept("sync accept", [&] { return sansock_listener_accept(l, b, nullptr); });
    REQUIRE(eventually([&] { return cstate(b) == SANSOCK_CHANNEL_ACCEPTING; }));

    const int before = refused.load();
    CHECK(without_memory([&] { return sansock_listener_abort(l); }) == 0);
    CHECK(refused.load() == before); // nothing on abort's path even tried to allocate
    CHECK(lstate(l) == SANSOCK_LISTENER_FAULTED);
    CHECK(async_outcome(pending, r) == -ECANCELED);
    CHECK(sync_accept.result() == -ECANCELED);
    CHECK(without_memory([&] { return sansock_listener_accept(l, a, nullptr); }) == -ENOTRECOVERABLE);
    // In every other state too.
    CHECK(without_memory([&] { return sansock_listener_abort(l); }) == 0);
    CHECK(bounded("close", [&] { return sansock_listener_close(l, nullptr); }) == 0);
    CHECK(without_memory([&] { return sansock_listener_abort(l); }) == 0);
    CHECK(refused.load() == before);
    dispose(first);
    dispose(a);
    dispose(b);
    dispose(arrived);
    dispose(l);
}

TEST_CASE("Channel and host abort succeed with no memory") {
    watchdog guard("channel/host abort without memory");
    world w;
    sansock_context* server = w.host();
    sansock_context* client = w.host();
    channel_pair p = connect_pair(client, server);
    background<received> receiving("receive", [&] { return receive_text(p.server); });
    settle(50ms);
    const int before = refused.load();
    CHECK(without_memory([&] { return sansock_channel_abort(p.server); }) == 0);
    CHECK(refused.load() == before);
    CHECK(receiving.result().rc == -ECANCELED);
    CHECK(cstate(p.server) == SANSOCK_CHANNEL_FAULTED);

    const sockaddr_in any = ipv4(0);
    sansock_service_endpoint e{as_sockaddr(any), sizeof any, SANSOCK_CHANNEL_SESSION};
    sansock_service_host_attr attr{sizeof(sansock_service_host_attr), 0,
                                   [](sansock_service_host*, size_t, sansock_channel*, void*) {}, nullptr};
    sansock_service_host* h = nullptr;
    REQUIRE(sansock_service_host_create(server, &e, 1, &attr, &h) == 0);
    REQUIRE(sansock_service_host_open(h, nullptr) == 0);
    CHECK(without_memory([&] { return sansock_service_host_abort(h); }) == 0);
    CHECK(refused.load() == before);
    CHECK(sansock_service_host_get_state(h) == SANSOCK_HOST_FAULTED);
    CHECK(bounded("host close", [&] { return sansock_service_host_close(h, nullptr); }) == 0);
    CHECK(sansock_service_host_free(h) == 0);
    dispose(p);
}

// ---- no memory on any thread ------------------------------------------------------------------

TEST_CASE("Listener abort with no memory on any thread: its background close completes") {
    watchdog guard("listener abort, no memory anywhere");
    world w;
    sansock_context* server = w.host();
    sansock_context* client = w.host();
    sansock_listener* l = new_listener(server);
    REQUIRE(open_listener(l) == 0);
    const sockaddr_in at = address_of(l);
    sansock_channel* a = new_channel(server);
    sansock_channel* arrived = new_channel(client);
    async_record r;
    const sansock_async_context ctx = r.context();
    int pending = 0;
    // One at a time: with an accept pending an arrival is handed to it, not left in the queue.
    SUBCASE("an accept pending (the switch has an accept queued): cancelled") {
        pending = sansock_listener_accept(l, a, &ctx);
        REQUIRE(pending == -EINPROGRESS);
    }
    SUBCASE("a connection arrived, never accepted: reset") {
        REQUIRE(open_channel(arrived, at) == 0);
        settle(50ms); // in the switch's queue
    }
    // The job thread closes the listening socket while every allocation fails: the call waits,
    // still with no memory anywhere, until the server's counters show that close (the
    // listening socket closed with SO_LINGER {1, 0}), so the close ran before memory came back.
    const struct sansock_context_stats start = stats_of(server);
    bool closed_without_memory = false;
    CHECK(without_memory_anywhere([&] {
              const int rc = sansock_listener_abort(l);
              closed_without_memory = closed_since(server, start);
              return rc;
          }) == 0);
    CHECK(closed_without_memory);
    CHECK(lstate(l) == SANSOCK_LISTENER_FAULTED);
    if (pending != 0) CHECK(async_outcome(pending, r) == -ECANCELED);
    else CHECK(lost(receive_text(arrived).rc)); // the arrival was reset with the listening socket
    // The listening socket is really closed: nobody listens there.
    sansock_channel* late = new_channel(client);
    CHECK(open_channel(late, at) == -ECONNREFUSED);
    CHECK(bounded("close", [&] { return sansock_listener_close(l, nullptr); }) == 0);
    dispose(late);
    dispose(a);
    dispose(arrived);
    dispose(l);
}

TEST_CASE("Channel abort with no memory on any thread: the blocked receive returns, the connection is reset") {
    watchdog guard("channel abort, no memory anywhere");
    world w;
    sansock_context* server = w.host();
    sansock_context* client = w.host();
    channel_pair p = connect_pair(client, server);
    background<received> receiving("receive", [&] { return receive_text(p.server); });
    settle(50ms);
    CHECK(without_memory_anywhere([&] { return sansock_channel_abort(p.server); }) == 0);
    CHECK(receiving.result().rc == -ECANCELED);
    CHECK(cstate(p.server) == SANSOCK_CHANNEL_FAULTED);
    CHECK(lost(receive_text(p.client).rc)); // the abort's reset went out
    CHECK(bounded("close", [&] { return sansock_channel_close(p.server, nullptr); }) == 0);
    dispose(p);
}

TEST_CASE("Service host abort and close with no memory on any thread") {
    watchdog guard("host abort, no memory anywhere");
    world w;
    sansock_context* server = w.host();
    sansock_context* client = w.host();
    struct handed {
        std::atomic<int> count{0};
        static void on_channel(sansock_service_host*, size_t, sansock_channel*, void* state) {
            static_cast<handed*>(state)->count.fetch_add(1);
        }
    } got;
    for (const bool abort_it : {true, false}) {
        CAPTURE(abort_it);
        const sockaddr_in any = ipv4(0);
        sansock_service_endpoint e{as_sockaddr(any), sizeof any, SANSOCK_CHANNEL_SESSION};
        sansock_service_host_attr attr{sizeof(sansock_service_host_attr), 2000, &handed::on_channel, &got};
        sansock_service_host* h = nullptr;
        REQUIRE(sansock_service_host_create(server, &e, 1, &attr, &h) == 0);
        REQUIRE(sansock_service_host_open(h, nullptr) == 0);
        sockaddr_in at{};
        socklen_t n = sizeof at;
        REQUIRE(sansock_service_host_endpoint_address(h, 0, reinterpret_cast<sockaddr*>(&at), &n) == 0);
        const int before = got.count.load();
        sansock_channel* c = new_channel(client);
        REQUIRE(open_channel(c, at) == 0);
        REQUIRE(eventually([&] { return got.count.load() == before + 1; }));
        if (abort_it) {
            CHECK(without_memory_anywhere([&] { return sansock_service_host_abort(h); }) == 0);
            CHECK(sansock_service_host_get_state(h) == SANSOCK_HOST_FAULTED);
            CHECK(lost(receive_text(c).rc));
            CHECK(bounded("host close", [&] { return sansock_service_host_close(h, nullptr); }) == 0);
        } else {
            // A close with no memory: the listener goes, the channel waits for its client's end
            // of session (none comes: the host's close_timeout_ms resets it).
            const int rc = without_memory_anywhere(
                [&] { return sansock_service_host_close(h, nullptr); }, 0ms);
            CHECK((rc == -ETIMEDOUT || rc == 0));
        }
        CHECK(sansock_service_host_get_state(h) == SANSOCK_HOST_CLOSED);
        CHECK(sansock_service_host_free(h) == 0);
        dispose(c);
    }
}

namespace {

namespace sw = sansock::switchtest;
using sansock::test::noted;

ssize_t recv_until_end(sansock_socket_t s) {
    return bounded("recv to the end", [s] {
        char buffer[4096];
        for (;;) {
            const ssize_t r = sansock_recv(s, buffer, sizeof buffer, 0);
            if (r <= 0) return r;
        }
    });
}

} // namespace

TEST_CASE("Socket closes in each linger mode with no memory on any thread complete, their background work too") {
    watchdog guard("socket closes, no memory anywhere");
    sw::world w; // a manual clock: the graceful time-out passes when the test says
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    char buffer[64];
    SUBCASE("SO_LINGER {1, 0}, a receive pending: reset, the receive cancelled inside close") {
        const sw::connection c = sw::connect_pair(a, b);
        noted cb;
        REQUIRE(sansock_recv_async(c.client, buffer, sizeof buffer, noted::run, &cb) == 0);
        REQUIRE(sw::set_linger(c.client, 1, 0) == 0);
        CHECK(without_memory_anywhere([&] { return sansock_close(c.client); }) == 0);
        CHECK(cb.calls.load() == 1);
        CHECK(cb.result.load() == -ECANCELED);
        CHECK(lost(recv_until_end(c.server)));
        CHECK(sansock_close(c.server) == 0);
    }
    SUBCASE("SO_DONTLINGER: 0 at once, then graceful or (no memory for the FIN) hard at the time-out") {
        const sw::connection c = sw::connect_pair(a, b);
        CHECK(without_memory_anywhere([&] {
                  const int rc = sansock_close(c.client);
                  w.clock.advance(11s); // past the graceful time-out, with no memory still
                  return rc;
              }) == 0);
        const ssize_t end = recv_until_end(c.server);
        CAPTURE(end);
        CHECK((end == 0 || end == -ECONNRESET || end == -ENOMEM)); // -ENOMEM: the peer's own receive
        CHECK(sansock_close(c.server) == 0);
    }
    SUBCASE("SO_LINGER {1, 5}, everything acknowledged: 0 at once, then as DONTLINGER") {
        const sw::connection c = sw::connect_pair(a, b);
        REQUIRE(sw::send_all(c.client, "data", 4) == 0);
        REQUIRE(sw::recv_exact(c.server, 4).size() == 4);
        REQUIRE(sw::set_linger(c.client, 1, 5) == 0);
        const int closed = without_memory_anywhere([&] {
            const int rc = sansock_close(c.client);
            w.clock.advance(11s);
            return rc;
        });
        CHECK(closed == 0);
        const ssize_t end = recv_until_end(c.server);
        CAPTURE(end);
        CHECK((end == 0 || end == -ECONNRESET || end == -ENOMEM)); // -ENOMEM: the peer's own receive
        CHECK(sansock_close(c.server) == 0);
    }
    SUBCASE("a listener with an accept pending: cancelled inside close") {
        uint16_t port = 0;
        const sansock_socket_t l = sw::listen_on(b, &port);
        noted cb;
        REQUIRE(sansock_accept_async(l, noted::run, &cb) == 0);
        CHECK(without_memory_anywhere([&] { return sansock_close(l); }) == 0);
        CHECK(cb.calls.load() == 1);
        CHECK(cb.result.load() == -ECANCELED);
    }
    SUBCASE("a listener with a connection not accepted: reset") {
        uint16_t port = 0;
        const sansock_socket_t l = sw::listen_on(b, &port);
        sansock_socket_t client = 0;
        REQUIRE(sansock_socket(a, &client) == 0);
        REQUIRE(sw::connect_to(client, port) == 0); // arrives; nobody accepts it
        REQUIRE(eventually([&] { return (sw::poll_one(l, SANSOCK_POLLIN, 100) & SANSOCK_POLLIN) != 0; }));
        CHECK(without_memory_anywhere([&] { return sansock_close(l); }) == 0);
        CHECK(lost(recv_until_end(client)));
        CHECK(sansock_close(client) == 0);
    }
    SUBCASE("a socket that never connected") {
        sansock_socket_t s = 0;
        REQUIRE(sansock_socket(a, &s) == 0);
        CHECK(without_memory_anywhere([&] { return sansock_close(s); }, 0ms) == 0);
        CHECK(sansock_close(s) == -ENOTSOCK);
    }
}

TEST_CASE("Context destroy with no memory on any thread: connections reset, pending operations cancelled") {
    watchdog guard("destroy, no memory anywhere");
    sansock::loopback::fabric* net = sansock::loopback::create_fabric();
    REQUIRE(net != nullptr);
    for (uint32_t mode : {uint32_t(SANSOCK_PROGRESS_THREAD), uint32_t(SANSOCK_PROGRESS_MANUAL)}) {
        CAPTURE(mode);
        auto make = [net](uint32_t progress) {
            sansock_context_attr attr;
            sansock_context_attr_init(&attr);
            attr.provider = SANSOCK_PROVIDER_LOOPBACK;
            attr.progress_mode = progress;
            sansock::context_hooks hooks;
            hooks.provider_specific = net;
            sansock_context* ctx = nullptr;
            REQUIRE(sansock::create_context(&attr, hooks, &ctx) == 0);
            return ctx;
        };
        sansock_context* doomed = make(mode);
        sansock_context* peer = make(SANSOCK_PROGRESS_THREAD);
        const sw::connection c = sw::connect_pair(doomed, peer);
        uint16_t port = 0;
        const sansock_socket_t l = sw::listen_on(doomed, &port);
        char buffer[64];
        noted received, accepted;
        REQUIRE(sansock_recv_async(c.client, buffer, sizeof buffer, noted::run, &received) == 0);
        REQUIRE(sansock_accept_async(l, noted::run, &accepted) == 0);
        CHECK(without_memory_anywhere([&] { return sansock_context_destroy(doomed); }, 0ms) == 0);
        CHECK(received.result.load() == -ECANCELED);
        CHECK(accepted.result.load() == -ECANCELED);
        CHECK(lost(recv_until_end(c.server)));
        CHECK(sansock_close(c.server) == 0);
        CHECK(sansock_close(c.listener) == 0);
        CHECK(bounded("destroy peer", [peer] { return sansock_context_destroy(peer); }) == 0);
    }
    CHECK(sansock::loopback::destroy_fabric(net) == 0);
}

TEST_CASE("Context create with allocations failing from the n-th on: -ENOMEM and nothing made, until it works") {
    // Every allocation of create in turn fails (std::make_unique<context>, the provider's, the
    // progress thread's state): each time -ENOMEM, no exception out of the C function, nothing
    // left behind (a leak shows under ASan). std::thread's -EAGAIN (no thread) takes the same path.
    for (uint32_t mode : {uint32_t(SANSOCK_PROGRESS_THREAD), uint32_t(SANSOCK_PROGRESS_MANUAL)}) {
        CAPTURE(mode);
        sansock_context_attr attr;
        sansock_context_attr_init(&attr);
        attr.provider = SANSOCK_PROVIDER_LOOPBACK;
        attr.progress_mode = mode;
        int failures = 0;
        for (int n = 0;; ++n) {
            REQUIRE(n < 1000);
            sansock_context* ctx = nullptr;
            allowed_allocations = n;
            const int rc = sansock_context_create(&attr, &ctx);
            allowed_allocations = -1;
            if (rc == 0) {
                CHECK(sansock_context_destroy(ctx) == 0);
                break;
            }
            CHECK(rc == -ENOMEM);
            ++failures;
        }
        CHECK(failures > 0);
    }
}

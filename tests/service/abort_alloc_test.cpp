// SPDX-License-Identifier: MIT
// Abort never allocates: this binary replaces the global operator new so that every
// allocation on a thread fails while that thread's flag is set, and aborts listeners, channels
// and a host under the flag.
#include <cstdlib>
#include <new>

// The replacements below pair malloc with free, which GCC cannot see through when it inlines
// the library's deallocations.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

#include "tests/service/service_test_support.hpp"

using namespace sansock::svctest;

namespace {
thread_local bool fail_allocations = false;
std::atomic<int> refused{0};

void* allocate(std::size_t n) noexcept {
    if (fail_allocations) {
        refused.fetch_add(1);
        return nullptr;
    }
    return std::malloc(n != 0 ? n : 1);
}

// Runs `call` with every allocation of this thread failing; returns its result.
template <typename F>
int without_memory(F call) {
    fail_allocations = true;
    const int rc = call();
    fail_allocations = false;
    return rc;
}
} // namespace

void* operator new(std::size_t n) {
    if (void* p = allocate(n)) return p;
    throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
    if (void* p = allocate(n)) return p;
    throw std::bad_alloc();
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return allocate(n); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return allocate(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

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

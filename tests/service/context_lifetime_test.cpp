// SPDX-License-Identifier: MIT
// The service engine belongs to a context (docs/service.md, "Threads and lifetime"): its two
// threads start with the context's first listener, channel or host and stop in
// sansock_context_destroy; destroy is -EBUSY while an object of the context is alive (or when
// called from one of its callbacks) and then changes nothing; contexts do not share threads.
#include <dirent.h>

#include <cstddef>
#include <thread>

#include "tests/service/service_test_support.hpp"

using namespace sansock::svctest;

namespace {

size_t thread_count() {
    size_t n = 0;
    DIR* d = opendir("/proc/self/task");
    REQUIRE(d != nullptr);
    while (dirent* e = readdir(d))
        if (e->d_name[0] != '.') ++n;
    closedir(d);
    return n;
}

// A joined thread may still be listed for a moment: wait for the count.
bool threads_become(size_t n) {
    return eventually([n] { return thread_count() == n; }, 5s);
}

sansock_context* thread_context() {
    sansock_context_attr attr;
    sansock_context_attr_init(&attr);
    attr.provider = SANSOCK_PROVIDER_LOOPBACK;
    sansock_context* ctx = nullptr;
    REQUIRE(sansock_context_create(&attr, &ctx) == 0);
    return ctx;
}

int destroy(sansock_context* ctx) {
    return bounded("sansock_context_destroy", [ctx] { return sansock_context_destroy(ctx); });
}

struct failed_open {
    sansock_channel* channel = nullptr;
    sansock_context* ctx = nullptr;
    std::mutex mutex;
    std::condition_variable changed;
    bool done = false;
    int open_result = 0, free_result = 0, destroy_result = 0;
    std::thread::id thread;

    // The callback frees its channel (allowed) and then tries to destroy its context.
    static void on_open(int result, void* state) {
        auto* f = static_cast<failed_open*>(state);
        const int freed = sansock_channel_free(f->channel);
        const int destroyed = sansock_context_destroy(f->ctx);
        std::lock_guard lock(f->mutex);
        f->open_result = result;
        f->free_result = freed;
        f->destroy_result = destroyed;
        f->thread = std::this_thread::get_id();
        f->done = true;
        f->changed.notify_all();
    }
    bool wait() {
        std::unique_lock lock(mutex);
        return changed.wait_for(lock, 10s, [this] { return done; });
    }
};

} // namespace

TEST_CASE("A context's service threads start with its first object and end with the context") {
    watchdog guard("service threads per context");
    const size_t before = thread_count();
    for (int round = 0; round < 2; ++round) {
        CAPTURE(round);
        sansock_context* ctx = thread_context();
        REQUIRE(threads_become(before + 1)); // its progress thread
        sansock_channel* c = new_channel(ctx);
        CHECK(threads_become(before + 3)); // and the context's job and callback threads
        sansock_listener* l = new_listener(ctx);
        CHECK(threads_become(before + 3)); // one engine per context
        dispose(c);
        dispose(l);
        CHECK(threads_become(before + 3)); // the engine stays until the context goes
        CHECK(destroy(ctx) == 0);
        CHECK(threads_become(before));
    }
}

TEST_CASE("Destroying a context with a live listener, channel or host is -EBUSY and changes nothing") {
    watchdog guard("destroy with live objects");
    world w;
    sansock_context* server = w.host();
    sansock_context* client = w.host();

    SUBCASE("a listener") {
        sansock_listener* l = new_listener(server);
        CHECK(destroy(server) == -EBUSY);
        REQUIRE(open_listener(l) == 0); // the context still works
        channel_pair p;
        p.listener = l;
        p.client = new_channel(client);
        p.server = new_channel(server);
        background<int> accepting("accept", [&] { return sansock_listener_accept(p.listener, p.server, nullptr); });
        CHECK(destroy(server) == -EBUSY);
        REQUIRE(open_channel(p.client, address_of(l)) == 0);
        REQUIRE(accepting.result() == 0);
        CHECK(send_text(p.client, "still here") == 0);
        CHECK(receive_text(p.server).text == "still here");
        CHECK(destroy(client) == -EBUSY);
        dispose(p);
    }
    SUBCASE("a channel, in any state") {
        sansock_channel* c = new_channel(client);
        CHECK(destroy(client) == -EBUSY);
        CHECK(sansock_channel_close(c, nullptr) == 0); // CLOSED, still not freed
        CHECK(destroy(client) == -EBUSY);
        CHECK(cstate(c) == SANSOCK_CHANNEL_CLOSED);
        CHECK(sansock_channel_free(c) == 0);
    }
    SUBCASE("a service host (and the listeners it opened)") {
        const sockaddr_in any = ipv4(0);
        sansock_service_endpoint endpoint{as_sockaddr(any), sizeof any, SANSOCK_CHANNEL_SESSION};
        sansock_service_host_attr attr{sizeof(sansock_service_host_attr), 0,
                                       [](sansock_service_host*, size_t, sansock_channel*, void*) {}, nullptr};
        sansock_service_host* h = nullptr;
        REQUIRE(sansock_service_host_create(server, &endpoint, 1, &attr, &h) == 0);
        CHECK(destroy(server) == -EBUSY);
        REQUIRE(sansock_service_host_open(h, nullptr) == 0);
        CHECK(destroy(server) == -EBUSY);
        CHECK(bounded("host close", [h] { return sansock_service_host_close(h, nullptr); }) == 0);
        CHECK(destroy(server) == -EBUSY);
        CHECK(sansock_service_host_free(h) == 0);
    }
    // Every object freed: the world's destroys succeed.
}

TEST_CASE("Each context has its own callback thread") {
    watchdog guard("callback thread per context");
    world w;
    sansock_context* server = w.host();
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    sansock_listener* l = new_listener(server);
    REQUIRE(open_listener(l) == 0);
    const sockaddr_in to = address_of(l);
    sansock_channel* ca = new_channel(a);
    sansock_channel* cb = new_channel(b);
    sansock_channel* sa = new_channel(server);
    sansock_channel* sb = new_channel(server);
    async_record ra, rb;
    const sansock_async_context aa = ra.context(), ab = rb.context();
    background<int> accept_a("accept a", [&] { return sansock_listener_accept(l, sa, nullptr); });
    CHECK(async_outcome(sansock_channel_open(ca, as_sockaddr(to), sizeof to, &aa), ra) == 0);
    CHECK(accept_a.result() == 0);
    background<int> accept_b("accept b", [&] { return sansock_listener_accept(l, sb, nullptr); });
    CHECK(async_outcome(sansock_channel_open(cb, as_sockaddr(to), sizeof to, &ab), rb) == 0);
    CHECK(accept_b.result() == 0);
    CHECK(ra.where() != rb.where());
    for (sansock_channel* c : {ca, cb, sa, sb}) dispose(c);
    dispose(l);
}

TEST_CASE("Destroy from a callback of the context is -EBUSY, even with its objects freed") {
    watchdog guard("destroy from a callback");
    world w;
    sansock_context* ctx = w.host();
    failed_open f;
    f.ctx = ctx;
    f.channel = new_channel(ctx);
    const sockaddr_in nobody = ipv4(9); // nothing listens there: the open fails
    const sansock_async_context async{&failed_open::on_open, &f};
    const int rc = sansock_channel_open(f.channel, as_sockaddr(nobody), sizeof nobody, &async);
    REQUIRE(rc == -EINPROGRESS);
    REQUIRE(f.wait());
    CHECK(f.open_result == -ECONNREFUSED);
    CHECK(f.free_result == 0);
    CHECK(f.destroy_result == -EBUSY); // the callback thread cannot stop itself
    CHECK(f.thread != std::this_thread::get_id());
    // The world destroys the context from this thread: 0.
}

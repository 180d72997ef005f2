// SPDX-License-Identifier: MIT
// sansock_context_destroy and the calls that use the context (issue 12, part 4): a call
// blocked on one of the context's sockets in another thread (recv, send, connect, accept,
// poll, a lingering close) returns -ECANCELED or -ENOTSOCK (poll: POLLNVAL) before destroy
// returns, in both progress modes; destroy called from any of the context's callbacks (on its
// progress thread, inside sansock_progress, inside a blocking call that drives manual progress,
// inside sansock_close, inside destroy itself) is -EBUSY and destroys nothing. Run under ASan
// and TSan too: the failure this guards against is a use after free.
#include <atomic>

#include "tests/switch/switch_test_support.hpp"

using namespace sansock;
using namespace sansock::switchtest;

namespace {

// A context the test destroys itself (`doomed`) and a peer context on the same fabric.
class doomed_world {
public:
    explicit doomed_world(uint32_t mode) : net_(loopback::create_fabric()) {
        REQUIRE(net_ != nullptr);
        peer = make(SANSOCK_PROGRESS_THREAD);
        doomed = make(mode);
    }
    ~doomed_world() {
        if (doomed != nullptr) CHECK(destroy_doomed() == 0);
        CHECK(bounded("destroy peer", [c = peer] { return sansock_context_destroy(c); }) == 0);
        CHECK(loopback::destroy_fabric(net_) == 0);
    }
    doomed_world(const doomed_world&) = delete;
    doomed_world& operator=(const doomed_world&) = delete;

    // Destroys `doomed` (bounded: a destroy that waits forever fails the test).
    int destroy_doomed() {
        const int rc = bounded("sansock_context_destroy", [c = doomed] { return sansock_context_destroy(c); });
        if (rc == 0) doomed = nullptr;
        return rc;
    }

    manual_clock clock;
    sansock_context* peer = nullptr;
    sansock_context* doomed = nullptr;

private:
    sansock_context* make(uint32_t mode) {
        sansock_context_attr attr;
        sansock_context_attr_init(&attr);
        attr.provider = SANSOCK_PROVIDER_LOOPBACK;
        attr.progress_mode = mode;
        context_hooks hooks;
        hooks.provider_specific = net_;
        hooks.now = clock.function(); // linger never times out by itself
        sansock_context* ctx = nullptr;
        REQUIRE(create_context(&attr, hooks, &ctx) == 0);
        return ctx;
    }
    loopback::fabric* net_;
};

std::string mode_name(uint32_t mode) { return mode == SANSOCK_PROGRESS_THREAD ? "thread progress" : "manual progress"; }

// Fills the connection until a blocking send would wait. With manual progress nothing moves
// unless someone makes progress: fill, progress (the peer's HELLO and credit come in, queued
// data goes out), again, until nothing more fits.
void fill_completely(sansock_context* ctx, sansock_socket_t s, uint32_t mode) {
    fill_until_full(s, false);
    if (mode != SANSOCK_PROGRESS_MANUAL) return;
    for (int quiet = 0; quiet < 2;) {
        for (int i = 0; i < 10; ++i) REQUIRE(sansock_progress(ctx, 10) >= 0);
        quiet = fill_until_full(s, false) == 0 ? quiet + 1 : 0;
    }
}

bool cancelled(int64_t r) { return r == -ECANCELED || r == -ENOTSOCK; }

// Starts `call` in another thread, checks that it blocks, destroys the context, and returns
// the call's result (which it must have returned by the time destroy did).
template <typename R, typename F>
R blocked_during_destroy(doomed_world& w, const char* what, F call) {
    background<R> blocked(what, call);
    REQUIRE_FALSE(blocked.wait(300ms)); // really blocked
    REQUIRE(w.destroy_doomed() == 0);
    // The call has left sansock before destroy returned (ASan would catch a use after free);
    // the thread marks itself finished just after its call returns, so allow it a moment.
    REQUIRE(blocked.wait(2000ms));
    return blocked.result();
}

} // namespace

TEST_CASE("Destroy makes every call blocked on one of its sockets return first") {
    for (uint32_t mode : {uint32_t(SANSOCK_PROGRESS_THREAD), uint32_t(SANSOCK_PROGRESS_MANUAL)}) {
        const std::string mode_text = mode_name(mode);
        CAPTURE(mode_text);
        watchdog guard("blocked calls during destroy, " + mode_name(mode));
        // One subcase per call and mode (the names tell doctest the two modes apart).
        auto named = [mode](const char* call) { return call + (", " + mode_name(mode)); };
        SUBCASE(named("recv").c_str()) {
            doomed_world w(mode);
            const connection c = connect_pair(w.doomed, w.peer);
            const ssize_t r = blocked_during_destroy<ssize_t>(w, "recv", [s = c.client] {
                char byte = 0;
                return sansock_recv(s, &byte, 1, 0);
            });
            CHECK(cancelled(r));
            CHECK(sansock_recv(c.client, nullptr, 0, 0) == -ENOTSOCK);
        }
        SUBCASE(named("recv with MSG_WAITALL").c_str()) {
            doomed_world w(mode);
            const connection c = connect_pair(w.doomed, w.peer);
            const ssize_t r = blocked_during_destroy<ssize_t>(w, "recv", [s = c.client] {
                char bytes[64];
                return sansock_recv(s, bytes, sizeof bytes, MSG_WAITALL);
            });
            CHECK(cancelled(r));
        }
        SUBCASE(named("send with a full buffer").c_str()) {
            doomed_world w(mode);
            const connection c = connect_pair(w.doomed, w.peer);
            fill_completely(w.doomed, c.client, mode);
            const ssize_t r = blocked_during_destroy<ssize_t>(w, "send", [s = c.client] {
                static const uint8_t bytes[65536] = {};
                return sansock_send(s, bytes, sizeof bytes, 0);
            });
            CHECK(cancelled(r));
        }
        SUBCASE(named("connect").c_str()) {
            doomed_world w(mode);
            uint16_t port = 0;
            const sansock_socket_t l = listen_on(w.peer, &port);
            sansock_socket_t s = 0;
            REQUIRE(sansock_socket(w.doomed, &s) == 0);
            // The connect's completion is held: the call waits for it.
            REQUIRE(loopback::delay_completions(provider_instance_of(w.doomed), provider_socket_of(s), 0) == 0);
            const int r = blocked_during_destroy<int>(w, "connect", [s, port] {
                const sockaddr_in to = ipv4(port);
                return sansock_connect(s, as_sockaddr(to), sizeof to);
            });
            CHECK(cancelled(r));
            CHECK(sansock_close(l) == 0);
        }
        SUBCASE(named("accept").c_str()) {
            doomed_world w(mode);
            uint16_t port = 0;
            const sansock_socket_t l = listen_on(w.doomed, &port);
            const int r = blocked_during_destroy<int>(w, "accept", [l] {
                sansock_socket_t out = 0;
                return sansock_accept(l, &out, nullptr, nullptr);
            });
            CHECK(cancelled(r));
        }
        SUBCASE(named("poll without a time-out").c_str()) {
            doomed_world w(mode);
            const connection c = connect_pair(w.doomed, w.peer);
            short revents = 0;
            const int r = blocked_during_destroy<int>(w, "poll", [s = c.client, &revents] {
                sansock_pollfd p{s, SANSOCK_POLLIN, 0};
                const int n = sansock_poll(&p, 1, -1);
                revents = p.revents;
                return n;
            });
            CHECK(r == 1);
            CHECK(revents == SANSOCK_POLLNVAL);
        }
        SUBCASE(named("close with SO_LINGER {1, 60} and data unacknowledged").c_str()) {
            doomed_world w(mode);
            const connection c = connect_pair(w.doomed, w.peer);
            fill_completely(w.doomed, c.client, mode); // the peer does not read: nothing is acknowledged
            REQUIRE(set_linger(c.client, 1, 60) == 0);
            const int r = blocked_during_destroy<int>(w, "lingering close", [s = c.client] { return sansock_close(s); });
            CHECK(cancelled(r));
        }
        SUBCASE(named("several at once, on several sockets").c_str()) {
            doomed_world w(mode);
            const connection c1 = connect_pair(w.doomed, w.peer);
            const connection c2 = connect_pair(w.doomed, w.peer);
            background<ssize_t> r1("recv 1", [s = c1.client] {
                char byte;
                return sansock_recv(s, &byte, 1, 0);
            });
            background<ssize_t> r2("recv 2", [s = c2.client] {
                char byte;
                return sansock_recv(s, &byte, 1, 0);
            });
            background<ssize_t> r3("recv 1 again", [s = c1.client] {
                char byte;
                return sansock_recv(s, &byte, 1, MSG_PEEK);
            });
            REQUIRE_FALSE(r1.wait(300ms));
            REQUIRE(w.destroy_doomed() == 0);
            CHECK(r1.wait(2000ms)); // returned before destroy did; marked finished just after
            CHECK(r2.wait(2000ms));
            CHECK(r3.wait(2000ms));
            CHECK(cancelled(r1.result()));
            CHECK(cancelled(r2.result()));
            CHECK(cancelled(r3.result()));
        }
    }
}

namespace {

// A callback that tries to destroy its own context, and what that returned.
struct destroying_callback {
    sansock_context* ctx = nullptr;
    std::atomic<int> calls{0};
    std::atomic<int> destroy_result{1};
    std::atomic<int64_t> result{0};
    static void run(void* user, int64_t result) {
        auto* self = static_cast<destroying_callback*>(user);
        self->result.store(result);
        self->destroy_result.store(sansock_context_destroy(self->ctx));
        self->calls.fetch_add(1);
    }
};

} // namespace

TEST_CASE("Destroy from a callback of the context is -EBUSY, whichever thread runs it") {
    watchdog guard("destroy from a callback");
    char buffer[16];
    SUBCASE("thread progress: on the progress thread") {
        doomed_world w(SANSOCK_PROGRESS_THREAD);
        const connection c = connect_pair(w.doomed, w.peer);
        destroying_callback cb;
        cb.ctx = w.doomed;
        REQUIRE(sansock_recv_async(c.client, buffer, sizeof buffer, destroying_callback::run, &cb) == 0);
        REQUIRE(sansock_send(c.server, "x", 1, 0) == 1);
        REQUIRE(eventually([&] { return cb.calls.load() == 1; }));
        CHECK(cb.result.load() == 1);
        CHECK(cb.destroy_result.load() == -EBUSY);
        check_healthy(c); // nothing was destroyed
    }
    SUBCASE("thread progress: a cancelled callback inside sansock_close") {
        doomed_world w(SANSOCK_PROGRESS_THREAD);
        const connection c = connect_pair(w.doomed, w.peer);
        destroying_callback cb;
        cb.ctx = w.doomed;
        REQUIRE(sansock_recv_async(c.client, buffer, sizeof buffer, destroying_callback::run, &cb) == 0);
        REQUIRE(sansock_close(c.client) == 0);
        CHECK(cb.calls.load() == 1); // inside close
        CHECK(cb.result.load() == -ECANCELED);
        CHECK(cb.destroy_result.load() == -EBUSY);
        sansock_socket_t s = 0;
        CHECK(sansock_socket(w.doomed, &s) == 0); // still a context
        CHECK(sansock_close(s) == 0);
    }
    SUBCASE("manual progress: inside sansock_progress") {
        doomed_world w(SANSOCK_PROGRESS_MANUAL);
        const connection c = connect_pair(w.doomed, w.peer);
        destroying_callback cb;
        cb.ctx = w.doomed;
        REQUIRE(sansock_recv_async(c.client, buffer, sizeof buffer, destroying_callback::run, &cb) == 0);
        REQUIRE(sansock_send(c.server, "x", 1, 0) == 1);
        REQUIRE(eventually([&] {
            REQUIRE(sansock_progress(w.doomed, 10) >= 0);
            return cb.calls.load() == 1;
        }));
        CHECK(cb.destroy_result.load() == -EBUSY);
        CHECK(sansock_progress(w.doomed, 0) >= 0); // still a context
    }
    SUBCASE("manual progress: inside a blocking call that drives progress") {
        doomed_world w(SANSOCK_PROGRESS_MANUAL);
        const connection c1 = connect_pair(w.doomed, w.peer);
        const connection c2 = connect_pair(w.doomed, w.peer);
        destroying_callback cb;
        cb.ctx = w.doomed;
        REQUIRE(sansock_recv_async(c1.client, buffer, sizeof buffer, destroying_callback::run, &cb) == 0);
        // The blocked recv on c2 is the only one making progress: it runs c1's callback.
        background<ssize_t> receiving("recv on c2", [s = c2.client] {
            char byte = 0;
            return sansock_recv(s, &byte, 1, 0);
        });
        REQUIRE_FALSE(receiving.wait(200ms));
        REQUIRE(sansock_send(c1.server, "x", 1, 0) == 1);
        REQUIRE(eventually([&] { return cb.calls.load() == 1; }));
        CHECK(cb.destroy_result.load() == -EBUSY);
        REQUIRE(sansock_send(c2.server, "y", 1, 0) == 1);
        CHECK(receiving.result() == 1); // the call that ran the callback is fine
    }
    SUBCASE("a cancelled callback inside destroy itself") {
        for (uint32_t mode : {uint32_t(SANSOCK_PROGRESS_THREAD), uint32_t(SANSOCK_PROGRESS_MANUAL)}) {
            const std::string mode_text = mode_name(mode);
            CAPTURE(mode_text);
            doomed_world w(mode);
            const connection c = connect_pair(w.doomed, w.peer);
            destroying_callback cb;
            cb.ctx = w.doomed;
            REQUIRE(sansock_recv_async(c.client, buffer, sizeof buffer, destroying_callback::run, &cb) == 0);
            REQUIRE(w.destroy_doomed() == 0);
            CHECK(cb.calls.load() == 1);
            CHECK(cb.result.load() == -ECANCELED);
            CHECK(cb.destroy_result.load() == -EBUSY); // the outer destroy does it, once
        }
    }
}

// SPDX-License-Identifier: MIT
// Asynchronous operations: started with 0, completed exactly once, never on the calling
// thread during the call, from the context's progress; cancelled (-ECANCELED) by close before
// close returns, and silent afterwards.
#include "tests/switch/switch_test_support.hpp"

namespace sansock::switchtest {
namespace {

struct async_record {
    std::atomic<int> calls{0};
    std::atomic<int64_t> result{0};
    std::atomic<std::thread::id> caller{};
    std::atomic<bool> in_call{false};       // the caller is inside the starting call
    std::atomic<bool> during_call{false};   // the callback ran on the caller's thread inside it
    std::atomic<std::thread::id> thread{};
    std::atomic<bool>* closed = nullptr;    // set once its socket's close has returned
    std::atomic<int> late{0};               // callbacks after that
};

void on_done(void* user, int64_t result) {
    auto* r = static_cast<async_record*>(user);
    if (std::this_thread::get_id() == r->caller.load() && r->in_call.load()) r->during_call.store(true);
    if (r->closed != nullptr && r->closed->load()) r->late.fetch_add(1);
    r->thread.store(std::this_thread::get_id());
    r->result.store(result);
    r->calls.fetch_add(1);
}

// Starts an async call with the bookkeeping of `r`.
template <typename F>
int start(async_record& r, F&& call) {
    r.caller.store(std::this_thread::get_id());
    r.in_call.store(true);
    const int rc = call();
    r.in_call.store(false);
    return rc;
}

void check_completed_once(async_record& r, int64_t expected) {
    CHECK(eventually([&] { return r.calls.load() >= 1; }));
    settle(100ms);
    CHECK(r.calls.load() == 1);
    CHECK(r.result.load() == expected);
    CHECK_FALSE(r.during_call.load());
}

TEST_CASE("recv_async completes once with the bytes, from the progress thread, after the call returned") {
    watchdog guard("recv_async");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    const connection c = connect_pair(a, b);
    std::vector<uint8_t> buffer(1000);
    async_record r;
    bool data_first = false;
    SUBCASE("pending until data arrives") {}
    SUBCASE("data already there") {
        data_first = true;
        REQUIRE(send_all(c.server, pattern_bytes(0, 100).data(), 100) == 0);
        REQUIRE((poll_one(c.client, SANSOCK_POLLIN, 5000) & SANSOCK_POLLIN) != 0);
    }
    CAPTURE(data_first);
    REQUIRE(start(r, [&] { return sansock_recv_async(c.client, buffer.data(), buffer.size(), &on_done, &r); }) == 0);
    if (!data_first) {
        settle(200ms);
        CHECK(r.calls.load() == 0);
        REQUIRE(send_all(c.server, pattern_bytes(0, 100).data(), 100) == 0);
    }
    check_completed_once(r, 100);
    CHECK(r.thread.load() != std::this_thread::get_id());
    CHECK(std::equal(buffer.begin(), buffer.begin() + 100, pattern_bytes(0, 100).begin()));
}

TEST_CASE("recv_async at end of stream completes with 0; on a reset connection with -ECONNRESET") {
    watchdog guard("recv_async end");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    const connection c = connect_pair(a, b);
    std::vector<uint8_t> buffer(64);
    async_record r;
    REQUIRE(start(r, [&] { return sansock_recv_async(c.client, buffer.data(), buffer.size(), &on_done, &r); }) == 0);
    int64_t expected = 0;
    SUBCASE("the peer shuts down") { REQUIRE(sansock_shutdown(c.server, SHUT_WR) == 0); }
    SUBCASE("the peer closes with LINGER 0") {
        expected = -ECONNRESET;
        REQUIRE(set_linger(c.server, 1, 0) == 0);
        REQUIRE(sansock_close(c.server) == 0);
    }
    check_completed_once(r, expected);
    CHECK(r.thread.load() != std::this_thread::get_id());
}

TEST_CASE("send_async completes once with the length and the peer receives the bytes") {
    watchdog guard("send_async");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    const connection c = connect_pair(a, b);
    const std::vector<uint8_t> data = pattern_bytes(0, 40000);
    async_record r;
    REQUIRE(start(r, [&] { return sansock_send_async(c.client, data.data(), data.size(), &on_done, &r); }) == 0);
    CHECK(recv_exact(c.server, data.size()) == data);
    check_completed_once(r, int64_t(data.size()));
    CHECK(r.thread.load() != std::this_thread::get_id());
}

TEST_CASE("accept_async completes once with a connected socket") {
    watchdog guard("accept_async");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    uint16_t port = 0;
    const sansock_socket_t l = listen_on(b, &port);
    async_record r;
    REQUIRE(start(r, [&] { return sansock_accept_async(l, &on_done, &r); }) == 0);
    settle(200ms);
    CHECK(r.calls.load() == 0);
    sansock_socket_t client = 0;
    REQUIRE(sansock_socket(a, &client) == 0);
    REQUIRE(connect_to(client, port) == 0);
    CHECK(eventually([&] { return r.calls.load() == 1; }));
    settle(100ms);
    CHECK(r.calls.load() == 1);
    CHECK_FALSE(r.during_call.load());
    CHECK(r.thread.load() != std::this_thread::get_id());
    REQUIRE(r.result.load() > 0);
    const auto server = sansock_socket_t(r.result.load());
    REQUIRE(send_all(server, "hi", 2) == 0);
    CHECK(recv_exact(client, 2) == std::vector<uint8_t>{'h', 'i'});
    CHECK(sansock_close(server) == 0);
    CHECK(sansock_close(client) == 0);
    CHECK(sansock_close(l) == 0);
}

TEST_CASE("close completes every pending async operation once with -ECANCELED before it returns, and nothing after") {
    watchdog guard("close cancels async");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    const connection c = connect_pair(a, b);
    uint16_t port = 0;
    const sansock_socket_t l = listen_on(a, &port);
    // The send side is full (the peer does not read): a send_async cannot finish.
    fill_until_full(c.client, false);

    std::atomic<bool> client_closed{false};
    std::atomic<bool> listener_closed{false};
    std::vector<uint8_t> in1(64), in2(64);
    const std::vector<uint8_t> out = pattern_bytes(0, 1 << 20);
    async_record recv1, recv2, send1, accept1, accept2;
    for (async_record* r : {&recv1, &recv2, &send1}) r->closed = &client_closed;
    for (async_record* r : {&accept1, &accept2}) r->closed = &listener_closed;
    REQUIRE(start(recv1, [&] { return sansock_recv_async(c.client, in1.data(), in1.size(), &on_done, &recv1); }) == 0);
    REQUIRE(start(recv2, [&] { return sansock_recv_async(c.client, in2.data(), in2.size(), &on_done, &recv2); }) == 0);
    REQUIRE(start(send1, [&] { return sansock_send_async(c.client, out.data(), out.size(), &on_done, &send1); }) == 0);
    REQUIRE(start(accept1, [&] { return sansock_accept_async(l, &on_done, &accept1); }) == 0);
    REQUIRE(start(accept2, [&] { return sansock_accept_async(l, &on_done, &accept2); }) == 0);
    settle(200ms);
    for (async_record* r : {&recv1, &recv2, &send1, &accept1, &accept2}) REQUIRE(r->calls.load() == 0);

    SUBCASE("DONTLINGER") {}
    SUBCASE("LINGER 0") { REQUIRE(set_linger(c.client, 1, 0) == 0); }
    SUBCASE("nonblocking DONTLINGER") { REQUIRE(set_nonblocking(c.client, true) == 0); }

    CHECK(bounded("close client", [s = c.client] { return sansock_close(s); }, 5s) == 0);
    client_closed.store(true);
    CHECK(bounded("close listener", [l] { return sansock_close(l); }, 5s) == 0);
    listener_closed.store(true);
    for (async_record* r : {&recv1, &recv2, &send1, &accept1, &accept2}) {
        CHECK(r->calls.load() == 1); // already, before close returned
        CHECK(r->result.load() == -ECANCELED);
    }
    settle(300ms);
    for (async_record* r : {&recv1, &recv2, &send1, &accept1, &accept2}) {
        CHECK(r->calls.load() == 1);
        CHECK(r->late.load() == 0);
        CHECK_FALSE(r->during_call.load());
    }
    CHECK(sansock_close(c.server) == 0);
}

TEST_CASE("With manual progress, callbacks run from sansock_progress, after the starting call returned") {
    watchdog guard("manual progress async");
    world w;
    host_options manual;
    manual.progress_mode = SANSOCK_PROGRESS_MANUAL;
    sansock_context* a = w.host(manual);
    sansock_context* b = w.host();
    CHECK(sansock_context_fd(a) >= 0);
    CHECK(sansock_progress(b, 0) == -EBADFD); // b has its own thread
    // Blocking calls drive a manual context's progress themselves.
    const connection c = connect_pair(a, b);
    REQUIRE(send_all(c.server, "abc", 3) == 0);
    settle(100ms);
    std::vector<uint8_t> buffer(16);
    async_record r;
    REQUIRE(start(r, [&] { return sansock_recv_async(c.client, buffer.data(), buffer.size(), &on_done, &r); }) == 0);
    settle(100ms);
    CHECK(r.calls.load() == 0); // nobody made progress yet
    std::thread::id progress_thread{};
    const bool done = bounded("progress loop", [&] {
        progress_thread = std::this_thread::get_id();
        for (int i = 0; i < 200 && r.calls.load() == 0; ++i)
            if (sansock_progress(a, 50) < 0) return false;
        return r.calls.load() == 1;
    });
    CHECK(done);
    CHECK(r.result.load() == 3);
    CHECK(r.thread.load() == progress_thread); // the thread that called progress
    CHECK_FALSE(r.during_call.load());
    CHECK(std::string(buffer.begin(), buffer.begin() + 3) == "abc");
}

TEST_CASE("An async call that cannot start returns the error and never calls back") {
    watchdog guard("async refused");
    world w;
    sansock_context* a = w.host();
    sansock_socket_t fresh = 0;
    REQUIRE(sansock_socket(a, &fresh) == 0);
    async_record r;
    char buffer[8] = {};
    CHECK(sansock_recv_async(fresh, buffer, sizeof buffer, &on_done, &r) == -ENOTCONN);
    CHECK(sansock_send_async(fresh, buffer, sizeof buffer, &on_done, &r) == -ENOTCONN);
    CHECK(sansock_accept_async(fresh, &on_done, &r) == -EINVAL);
    settle(200ms);
    CHECK(r.calls.load() == 0);
    CHECK(sansock_close(fresh) == 0);
    settle(100ms);
    CHECK(r.calls.load() == 0);
}

} // namespace
} // namespace sansock::switchtest

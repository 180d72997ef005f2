// SPDX-License-Identifier: MIT
// Leader/follower waiting (docs/architecture.md, "Threads and progress"): a call blocked past
// its busy-poll waits in the provider itself, so the completion it waits for is delivered on
// its own thread, not handed over by the progress thread. A provider wrapper records which
// threads delivered completions.
#include <set>

#include "tests/switch/switch_test_support.hpp"

namespace sansock::switchtest {
namespace {

struct delivery_log {
    std::mutex mutex;
    std::set<std::thread::id> threads; // threads whose progress call delivered something

    bool saw(std::thread::id t) {
        std::lock_guard lock(mutex);
        return threads.count(t) != 0;
    }
    void clear() {
        std::lock_guard lock(mutex);
        threads.clear();
    }
};

delivery_log& the_log() {
    static delivery_log log;
    return log;
}

int recording_progress(provider::instance* self, int timeout_ms) {
    const int rc = loopback_ops.progress(self, timeout_ms);
    if (rc > 0) {
        std::lock_guard lock(the_log().mutex);
        the_log().threads.insert(std::this_thread::get_id());
    }
    return rc;
}

const provider::ops& recording_ops() {
    static const provider::ops table = loopback_ops_with("recording-loopback", [](provider::ops& t) { t.progress = &recording_progress; });
    return table;
}

// Two thread-progress hosts that never busy-poll, so every wait past the first check sleeps.
struct sleeping_pair {
    world w;
    sansock_context* a = nullptr;
    sansock_context* b = nullptr;
    connection c;
    sleeping_pair() {
        host_options o;
        o.provider_ops = &recording_ops();
        o.busy_poll_us = SANSOCK_NO_BUSY_POLL;
        o.use_manual_clock = false;
        a = w.host(o);
        b = w.host(o);
        c = connect_pair(a, b);
    }
    ~sleeping_pair() {
        CHECK(sansock_close(c.client) == 0);
        CHECK(sansock_close(c.server) == 0);
        CHECK(sansock_close(c.listener) == 0);
    }
};

} // namespace

TEST_CASE("A blocked recv takes the data it waits for on its own thread (it leads)") {
    watchdog guard("leader recv");
    sleeping_pair p;
    the_log().clear();
    std::atomic<std::thread::id> receiver{};
    char got[8] = {};
    background<ssize_t> receiving("recv", [&] { // the recv itself on this thread (not recv_exact's)
        receiver.store(std::this_thread::get_id());
        return sansock_recv(p.c.server, got, sizeof got, MSG_WAITALL);
    });
    settle(100ms); // it sleeps: no busy-poll
    REQUIRE(send_all(p.c.client, "8 bytes!", 8) == 0);
    CHECK(receiving.result() == 8);
    CHECK(std::string(got, 8) == "8 bytes!");
    CHECK(the_log().saw(receiver.load()));
}

TEST_CASE("One call leads, the others follow, and every one gets its data") {
    watchdog guard("leader and followers");
    sleeping_pair p;
    const connection second = connect_pair(p.a, p.b);
    std::vector<std::unique_ptr<background<std::vector<uint8_t>>>> receivers;
    receivers.push_back(std::make_unique<background<std::vector<uint8_t>>>("recv 1", [&] { return recv_exact(p.c.server, 4); }));
    receivers.push_back(std::make_unique<background<std::vector<uint8_t>>>("recv 2", [&] { return recv_exact(second.server, 4); }));
    settle(100ms);
    REQUIRE(send_all(second.client, "two!", 4) == 0);
    CHECK(receivers[1]->result() == std::vector<uint8_t>{'t', 'w', 'o', '!'});
    settle(50ms);
    REQUIRE(send_all(p.c.client, "one!", 4) == 0);
    CHECK(receivers[0]->result() == std::vector<uint8_t>{'o', 'n', 'e', '!'});
    CHECK(sansock_close(second.client) == 0);
    CHECK(sansock_close(second.server) == 0);
    CHECK(sansock_close(second.listener) == 0);
}

TEST_CASE("A leading call ends when another thread changes what it waits for (shutdown)") {
    watchdog guard("leader woken by a local change");
    sleeping_pair p;
    background<ssize_t> receiving("recv", [&] {
        char byte = 0;
        return sansock_recv(p.c.server, &byte, 1, 0);
    });
    settle(100ms);
    const auto started = steady_clock::now();
    REQUIRE(sansock_shutdown(p.c.server, SHUT_RD) == 0);
    CHECK(receiving.result() == 0);
    // Woken by the change itself, not by the end of a slice of its wait (20 ms).
    CHECK(steady_clock::now() - started < 2s);
}

} // namespace sansock::switchtest

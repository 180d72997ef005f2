// SPDX-License-Identifier: MIT
// sansock_context_drain: it waits while a background graceful close still has data to deliver
// and returns 0 once the close has ended; -ETIMEDOUT while one runs; bad arguments.
#include "tests/switch/switch_test_support.hpp"

namespace sansock::switchtest {
namespace {

TEST_CASE("drain waits for a background graceful close to deliver its data and end") {
    world w;
    sansock_context* client_ctx = w.host({.window_bytes = 64 * 1024, .use_manual_clock = false});
    sansock_context* server_ctx = w.host({.window_bytes = 64 * 1024, .use_manual_clock = false});
    connection c = connect_pair(client_ctx, server_ctx);

    // More than the window and the send buffer hold, so the close has work in the background
    // until the server reads.
    const uint64_t queued = fill_until_full(c.client, true);
    REQUIRE(queued > 64 * 1024);
    REQUIRE(sansock_close(c.client) == 0); // SO_DONTLINGER: returns at once

    CHECK(sansock_context_drain(client_ctx, 0) == -ETIMEDOUT);
    CHECK(sansock_context_drain(client_ctx, 100) == -ETIMEDOUT); // nobody reads yet

    background<int> draining("sansock_context_drain", [client_ctx] { return sansock_context_drain(client_ctx, -1); });
    const read_outcome got = read_to_end(c.server);
    CHECK(got.bytes == queued);
    CHECK(got.last == 0);
    CHECK(got.in_order);
    CHECK(sansock_close(c.server) == 0); // its FIN ends the client's close
    CHECK(draining.result() == 0);
    CHECK(sansock_context_drain(server_ctx, -1) == 0);

    struct sansock_context_stats stats{};
    stats.size = sizeof stats;
    REQUIRE(sansock_context_stats(client_ctx, &stats) == 0);
    CHECK(stats.graceful_completed == 1);
    CHECK(stats.graceful_timed_out == 0);
    CHECK(sansock_context_drain(client_ctx, 0) == 0);
    CHECK(sansock_close(c.listener) == 0);
}

TEST_CASE("drain with nothing closing returns 0 at once; NULL is -EINVAL") {
    world w;
    sansock_context* ctx = w.host();
    CHECK(sansock_context_drain(ctx, 0) == 0);
    CHECK(sansock_context_drain(ctx, -1) == 0);
    CHECK(sansock_context_drain(nullptr, 0) == -EINVAL);
}

} // namespace
} // namespace sansock::switchtest

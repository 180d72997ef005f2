// SPDX-License-Identifier: MIT
// The RAII C++ header: owners close what they own, never block, and move.
#include <arpa/inet.h>
#include <doctest/doctest.h>

#include <chrono>
#include <vector>

#include "sansock/sansock.hpp"

TEST_CASE("RAII owners close their socket and context, and a lingering socket's destructor does not block") {
    sansock_context_attr attr;
    sansock_context_attr_init(&attr);
    attr.provider = SANSOCK_PROVIDER_LOOPBACK;
    sansock::context_owner ctx;
    REQUIRE(sansock::context_owner::create(&attr, ctx) == 0);
    sansock::socket_owner listener, client;
    REQUIRE(sansock::socket_owner::open(ctx.get(), listener) == 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    inet_pton(AF_INET, "10.77.0.1", &addr.sin_addr);
    socklen_t len = sizeof addr;
    REQUIRE(sansock_bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), len) == 0);
    REQUIRE(sansock_listen(listener.get(), 4) == 0);
    REQUIRE(sansock_getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    REQUIRE(sansock::socket_owner::open(ctx.get(), client) == 0);
    REQUIRE(sansock_connect(client.get(), reinterpret_cast<sockaddr*>(&addr), len) == 0);
    sansock_socket_t raw_peer = 0;
    REQUIRE(sansock_accept(listener.get(), &raw_peer, nullptr, nullptr) == 0);
    sansock::socket_owner peer(raw_peer);

    // Linger 30 s on a blocking socket whose peer never reads: close() would wait; the
    // destructor must not.
    const linger lingering{1, 30};
    REQUIRE(sansock_setsockopt(client.get(), SOL_SOCKET, SO_LINGER, &lingering, sizeof lingering) == 0);
    std::vector<char> data(1 << 20, 'x');
    const int nonblocking = 1;
    REQUIRE(sansock_setsockopt(client.get(), SOL_SOCKET, SANSOCK_SO_NONBLOCK, &nonblocking, sizeof nonblocking) == 0);
    while (sansock_send(client.get(), data.data(), data.size(), 0) > 0) {
    }
    const int blocking = 0;
    REQUIRE(sansock_setsockopt(client.get(), SOL_SOCKET, SANSOCK_SO_NONBLOCK, &blocking, sizeof blocking) == 0);
    const sansock_socket_t handle = client.get();
    const auto started = std::chrono::steady_clock::now();
    client.reset();
    CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(5));
    CHECK(sansock_close(handle) == -ENOTSOCK);

    sansock::socket_owner moved(std::move(peer));
    CHECK_FALSE(peer);
    CHECK(moved);
    CHECK(moved.close() == 0);
    CHECK(moved.close() == -ENOTSOCK);
}

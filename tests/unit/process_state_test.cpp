// SPDX-License-Identifier: MIT
// Process state (docs/architecture.md): the socket-handle table lives from the first context
// to the last; afterwards every handle is -ENOTSOCK, and the next table never gives a handle
// of the old one again. (tests/unit/dlopen_test.c checks that nothing is left in memory.)
#include <netinet/in.h>

#include <cerrno>
#include <cstdint>
#include <set>
#include <vector>

#include <doctest/doctest.h>

#include "sansock/sansock.h"
#include "tests/support/bounded_time.hpp"

namespace {

using sansock::test::bounded;
using sansock::test::watchdog;

sansock_context* loopback_context(int progress_mode) {
    sansock_context_attr attr;
    sansock_context_attr_init(&attr);
    attr.provider = SANSOCK_PROVIDER_LOOPBACK;
    attr.progress_mode = progress_mode;
    sansock_context* ctx = nullptr;
    REQUIRE(sansock_context_create(&attr, &ctx) == 0);
    return ctx;
}

void destroy(sansock_context* ctx) {
    CHECK(bounded("sansock_context_destroy", [ctx] { return sansock_context_destroy(ctx); }) == 0);
}

// Every call that takes a handle answers -ENOTSOCK for it.
void not_a_socket(sansock_socket_t s) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    socklen_t n = sizeof a;
    char byte = 0;
    int value = 0;
    socklen_t value_length = sizeof value;
    CHECK(sansock_bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == -ENOTSOCK);
    CHECK(sansock_listen(s, 1) == -ENOTSOCK);
    CHECK(sansock_connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == -ENOTSOCK);
    CHECK(sansock_send(s, &byte, 1, 0) == -ENOTSOCK);
    CHECK(sansock_recv(s, &byte, 1, 0) == -ENOTSOCK);
    CHECK(sansock_shutdown(s, SHUT_RDWR) == -ENOTSOCK);
    CHECK(sansock_getsockname(s, reinterpret_cast<sockaddr*>(&a), &n) == -ENOTSOCK);
    CHECK(sansock_getsockopt(s, SOL_SOCKET, SO_TYPE, &value, &value_length) == -ENOTSOCK);
    CHECK(sansock_close(s) == -ENOTSOCK);
    sansock_pollfd p{s, SANSOCK_POLLIN, 0};
    CHECK(sansock_poll(&p, 1, 0) == 1);
    CHECK((p.revents & SANSOCK_POLLNVAL) != 0);
}

} // namespace

TEST_CASE("With no context left every handle is not a socket, and a later table reuses none") {
    watchdog guard("handles across the last context");
    for (int mode : {SANSOCK_PROGRESS_THREAD, SANSOCK_PROGRESS_MANUAL}) {
        CAPTURE(mode);
        std::set<sansock_socket_t> old_handles;
        sansock_socket_t open_one = 0;
        {
            sansock_context* a = loopback_context(mode);
            sansock_context* b = loopback_context(mode);
            for (int i = 0; i < 6; ++i) { // slots reused, generations advance
                sansock_socket_t s = 0;
                REQUIRE(sansock_socket(i % 2 == 0 ? a : b, &s) == 0);
                CHECK(old_handles.insert(s).second);
                CHECK(sansock_close(s) == 0);
            }
            REQUIRE(sansock_socket(a, &open_one) == 0); // still open when its context goes
            old_handles.insert(open_one);
            destroy(a);
            not_a_socket(open_one);
            destroy(b); // the last context: the table is freed
        }
        for (sansock_socket_t s : old_handles) not_a_socket(s);
        CHECK(sansock_close(0) == -ENOTSOCK);

        sansock_context* c = loopback_context(mode); // a new table
        std::vector<sansock_socket_t> fresh;
        for (int i = 0; i < 8; ++i) {
            sansock_socket_t s = 0;
            REQUIRE(sansock_socket(c, &s) == 0);
            CHECK(old_handles.count(s) == 0);
            fresh.push_back(s);
        }
        for (sansock_socket_t s : old_handles) CHECK(sansock_close(s) == -ENOTSOCK);
        for (sansock_socket_t s : fresh) CHECK(sansock_close(s) == 0);
        destroy(c);
    }
}

TEST_CASE("Contexts come and go repeatedly; the shared loopback fabric goes with the last") {
    watchdog guard("fabric lifetime");
    for (int round = 0; round < 3; ++round) {
        CAPTURE(round);
        sansock_context* server = loopback_context(SANSOCK_PROGRESS_THREAD);
        sansock_context* client = loopback_context(SANSOCK_PROGRESS_THREAD);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(5100);
        a.sin_addr.s_addr = htonl(0x0a050505); // 10.5.5.5
        sansock_socket_t l = 0, c = 0, accepted = 0;
        REQUIRE(sansock_socket(server, &l) == 0);
        // The previous round's listener went with its context: the address is free again.
        REQUIRE(sansock_bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
        REQUIRE(sansock_listen(l, 4) == 0);
        REQUIRE(sansock_socket(client, &c) == 0);
        REQUIRE(bounded("connect", [c, a] { return sansock_connect(c, reinterpret_cast<const sockaddr*>(&a), sizeof a); }) == 0);
        REQUIRE(bounded("accept", [l, &accepted] { return sansock_accept(l, &accepted, nullptr, nullptr); }) == 0);
        const char out[3] = {'a', 'b', 'c'};
        char in[3] = {};
        CHECK(bounded("send", [c, &out] { return sansock_send(c, out, sizeof out, 0); }) == 3);
        CHECK(bounded("recv", [accepted, &in] { return sansock_recv(accepted, in, sizeof in, MSG_WAITALL); }) == 3);
        CHECK(in[2] == 'c');
        // Destroyed with the sockets still open: destroy closes them.
        destroy(client);
        destroy(server);
        not_a_socket(l);
        not_a_socket(accepted);
    }
}

// SPDX-License-Identifier: MIT
// Bad input gets a clear negated errno or does what its flag means (issue 12, part 6): time-out
// values out of range, the flags of send and recv (MSG_PEEK, MSG_DONTWAIT, unknown ones),
// accept's address arguments, counts a result cannot carry, context attributes both providers
// refuse alike, accept on a socket that is not (or no longer) a listener, MSG_WAITALL cut short
// by a failure, and a closed handle after its slot was certainly reused.
#include <sys/time.h>

#include <climits>
#include <limits>
#include <string>

#include "tests/switch/switch_test_support.hpp"

using namespace sansock;
using namespace sansock::switchtest;

namespace {

int set_timeout(sansock_socket_t s, int name, time_t seconds, suseconds_t microseconds) {
    timeval tv{};
    tv.tv_sec = seconds;
    tv.tv_usec = microseconds;
    return sansock_setsockopt(s, SOL_SOCKET, name, &tv, sizeof tv);
}

timeval get_timeout(sansock_socket_t s, int name) {
    timeval tv{-7, -7};
    socklen_t length = sizeof tv;
    REQUIRE(sansock_getsockopt(s, SOL_SOCKET, name, &tv, &length) == 0);
    CHECK(length == sizeof tv);
    return tv;
}

int create_with(uint32_t provider, void (*change)(sansock_context_attr&)) {
    sansock_context_attr attr;
    sansock_context_attr_init(&attr);
    attr.provider = provider;
    change(attr);
    sansock_context* ctx = nullptr;
    const int rc = sansock_context_create(&attr, &ctx);
    if (rc == 0) CHECK(sansock_context_destroy(ctx) == 0);
    return rc;
}

} // namespace

TEST_CASE("SO_RCVTIMEO and SO_SNDTIMEO: tv_usec out of range is -EDOM, a huge tv_sec saturates, a negative one does not wait") {
    watchdog guard("time-out values");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    const connection c = connect_pair(a, b);
    for (int name : {SO_RCVTIMEO, SO_SNDTIMEO}) {
        CAPTURE(name);
        CHECK(set_timeout(c.client, name, 1, -1) == -EDOM);
        CHECK(set_timeout(c.client, name, 1, 1000000) == -EDOM);
        CHECK(set_timeout(c.client, name, 0, 0) == 0);
        // Saturated at 2^31 - 1 s (about 68 years): still a time-out, read back as such.
        CHECK(set_timeout(c.client, name, std::numeric_limits<time_t>::max(), 0) == 0);
        timeval tv = get_timeout(c.client, name);
        CHECK(tv.tv_sec == INT32_MAX);
        CHECK(tv.tv_usec == 0);
        CHECK(set_timeout(c.client, name, 2, 500000) == 0);
        tv = get_timeout(c.client, name);
        CHECK(tv.tv_sec == 2);
        CHECK(tv.tv_usec == 500000);
        // Negative: as Linux, the calls do not wait, and it reads back as {0, 0}.
        CHECK(set_timeout(c.client, name, -5, 0) == 0);
        tv = get_timeout(c.client, name);
        CHECK(tv.tv_sec == 0);
        CHECK(tv.tv_usec == 0);
    }
    char byte = 0;
    const auto started = steady_clock::now();
    CHECK(bounded("recv, negative SO_RCVTIMEO", [&] { return sansock_recv(c.client, &byte, 1, 0); }) == -EWOULDBLOCK);
    CHECK(steady_clock::now() - started < 1s);

    // A saturated time-out waits (it is not "none" by overflow, nor "now").
    REQUIRE(set_timeout(c.client, SO_RCVTIMEO, std::numeric_limits<time_t>::max(), 999999) == 0);
    background<ssize_t> receiving("recv, saturated SO_RCVTIMEO", [&] { return sansock_recv(c.client, &byte, 1, 0); });
    CHECK_FALSE(receiving.wait(300ms));
    const char one = 'x';
    REQUIRE(sansock_send(c.server, &one, 1, 0) == 1);
    CHECK(receiving.result() == 1);
    CHECK(byte == 'x');

    // connect with a negative SO_SNDTIMEO does not wait either: -EINPROGRESS, as Linux.
    uint16_t port = 0;
    const sansock_socket_t l = listen_on(b, &port);
    sansock_socket_t s = 0;
    REQUIRE(sansock_socket(a, &s) == 0);
    REQUIRE(set_timeout(s, SO_SNDTIMEO, -1, 0) == 0);
    const sockaddr_in to = ipv4(port);
    CHECK(sansock_connect(s, as_sockaddr(to), sizeof to) == -EINPROGRESS);
    CHECK((poll_one(s, SANSOCK_POLLOUT, 5000) & SANSOCK_POLLOUT) != 0);
    CHECK(sansock_close(s) == 0);
    CHECK(sansock_close(l) == 0);
}

TEST_CASE("MSG_PEEK copies without consuming; with MSG_WAITALL it waits for the whole length") {
    watchdog guard("MSG_PEEK");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    const connection c = connect_pair(a, b);
    REQUIRE(send_all(c.client, "hello", 5) == 0);
    char got[16] = {};
    CHECK(eventually([&] { return (poll_one(c.server, SANSOCK_POLLIN, 100) & SANSOCK_POLLIN) != 0; }));
    CHECK(eventually([&] { return sansock_recv(c.server, got, 5, MSG_PEEK | MSG_DONTWAIT) == 5; }));
    CHECK(std::string(got, 5) == "hello");
    std::memset(got, 0, sizeof got);
    CHECK(sansock_recv(c.server, got, 3, MSG_PEEK) == 3);
    CHECK(std::string(got, 3) == "hel");
    // MSG_PEEK | MSG_WAITALL: 5 bytes there, 8 asked for: waits, and still consumes nothing.
    background<ssize_t> peeking("peek waitall", [&] { return sansock_recv(c.server, got, 8, MSG_PEEK | MSG_WAITALL); });
    CHECK_FALSE(peeking.wait(300ms));
    REQUIRE(send_all(c.client, " you", 4) == 0);
    CHECK(peeking.result() == 8);
    CHECK(std::string(got, 8) == "hello yo");
    std::memset(got, 0, sizeof got);
    CHECK(bounded("recv", [&] { return sansock_recv(c.server, got, 9, MSG_WAITALL); }) == 9);
    CHECK(std::string(got, 9) == "hello you");
}

TEST_CASE("MSG_PEEK leaves the bytes for the next read; at end of stream it returns 0") {
    watchdog guard("MSG_PEEK then read");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    const connection c = connect_pair(a, b);
    REQUIRE(send_all(c.client, "abcdef", 6) == 0);
    char got[8] = {};
    CHECK(bounded("peek", [&] { return sansock_recv(c.server, got, 6, MSG_PEEK | MSG_WAITALL); }) == 6);
    CHECK(std::string(got, 6) == "abcdef");
    std::memset(got, 0, sizeof got);
    CHECK(bounded("read", [&] { return sansock_recv(c.server, got, 6, MSG_WAITALL); }) == 6);
    CHECK(std::string(got, 6) == "abcdef");
    REQUIRE(set_nonblocking(c.server, true) == 0);
    CHECK(sansock_recv(c.server, got, 1, MSG_PEEK) == -EWOULDBLOCK);
    REQUIRE(sansock_shutdown(c.client, SHUT_WR) == 0);
    CHECK(eventually([&] { return sansock_recv(c.server, got, 1, MSG_PEEK) == 0; }));
    CHECK(sansock_recv(c.server, got, 1, 0) == 0);
}

TEST_CASE("MSG_DONTWAIT on a blocking socket never waits: recv with no data, send with a full buffer") {
    watchdog guard("MSG_DONTWAIT");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    const connection c = connect_pair(a, b);
    char byte = 0;
    auto started = steady_clock::now();
    CHECK(bounded("recv DONTWAIT", [&] { return sansock_recv(c.client, &byte, 1, MSG_DONTWAIT); }) == -EWOULDBLOCK);
    CHECK(steady_clock::now() - started < 1s);
    // The peer does not read: fill the connection, then a blocking socket's DONTWAIT send.
    fill_until_full(c.client, false);
    const std::vector<uint8_t> more(4096, 1);
    started = steady_clock::now();
    CHECK(bounded("send DONTWAIT", [&] { return sansock_send(c.client, more.data(), more.size(), MSG_DONTWAIT); }) ==
          -EWOULDBLOCK);
    CHECK(steady_clock::now() - started < 1s);
    // The socket itself is still blocking.
    int nonblocking = -1;
    socklen_t length = sizeof nonblocking;
    REQUIRE(sansock_getsockopt(c.client, SOL_SOCKET, SANSOCK_SO_NONBLOCK, &nonblocking, &length) == 0);
    CHECK(nonblocking == 0);
}

TEST_CASE("send and recv take their flags and refuse any other with -EOPNOTSUPP") {
    watchdog guard("flags");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    const connection c = connect_pair(a, b);
    char byte = 'q';
    CHECK(sansock_send(c.client, &byte, 1, MSG_OOB) == -EOPNOTSUPP);
    CHECK(sansock_send(c.client, &byte, 1, MSG_EOR) == -EOPNOTSUPP);
    CHECK(sansock_send(c.client, &byte, 1, MSG_CONFIRM) == -EOPNOTSUPP);
    CHECK(sansock_send(c.client, &byte, 1, MSG_NOSIGNAL) == 1);
    CHECK(sansock_send(c.client, &byte, 1, MSG_MORE) == 1);
    CHECK(sansock_send(c.client, &byte, 1, MSG_DONTWAIT | MSG_NOSIGNAL | MSG_MORE) == 1);
    char got[3] = {};
    CHECK(sansock_recv(c.server, got, 3, MSG_OOB) == -EOPNOTSUPP);
    CHECK(sansock_recv(c.server, got, 3, MSG_TRUNC) == -EOPNOTSUPP);
    CHECK(sansock_recv(c.server, got, 3, MSG_NOSIGNAL) == -EOPNOTSUPP);
    CHECK(sansock_recv(c.server, got, 3, MSG_ERRQUEUE) == -EOPNOTSUPP);
    CHECK(bounded("recv", [&] { return sansock_recv(c.server, got, 3, MSG_WAITALL | MSG_PEEK); }) == 3);
    CHECK(bounded("recv", [&] { return sansock_recv(c.server, got, 3, MSG_WAITALL | MSG_DONTWAIT); }) == 3);
    CHECK(std::string(got, 3) == "qqq");
}

TEST_CASE("accept: a peer buffer without a length is -EINVAL; a short length truncates and says the full size") {
    watchdog guard("accept address");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    uint16_t port = 0;
    const sansock_socket_t l = listen_on(b, &port);
    sansock_socket_t client = 0;
    REQUIRE(sansock_socket(a, &client) == 0);
    REQUIRE(connect_to(client, port) == 0);
    sansock_socket_t out = 0;
    sockaddr_in peer{};
    CHECK(sansock_accept(l, &out, reinterpret_cast<sockaddr*>(&peer), nullptr) == -EINVAL);
    CHECK(out == 0);
    // The connection is still there for a proper accept, with 4 bytes of room.
    uint8_t room[sizeof(sockaddr_in)];
    std::memset(room, 0xee, sizeof room);
    socklen_t length = 4;
    REQUIRE(bounded("accept", [&] { return sansock_accept(l, &out, reinterpret_cast<sockaddr*>(room), &length); }) == 0);
    CHECK(out != 0);
    CHECK(length == sizeof(sockaddr_in));
    sockaddr_in name{};
    socklen_t name_length = sizeof name;
    REQUIRE(sansock_getsockname(client, reinterpret_cast<sockaddr*>(&name), &name_length) == 0);
    CHECK(std::memcmp(room, &name, 4) == 0); // family and port
    for (size_t i = 4; i < sizeof room; ++i) CHECK(room[i] == 0xee);
    CHECK(sansock_close(out) == 0);
    CHECK(sansock_close(client) == 0);
    CHECK(sansock_close(l) == 0);
}

TEST_CASE("Counts a result cannot carry: async lengths above INT64_MAX are -EINVAL, blocking ones are clamped") {
    watchdog guard("lengths");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    const connection c = connect_pair(a, b);
    char buffer[64] = {};
    auto never = [](void*, int64_t) { FAIL("no callback for a refused operation"); };
    const size_t too_long = size_t(INT64_MAX) + 1;
    CHECK(sansock_send_async(c.client, buffer, too_long, never, nullptr) == -EINVAL);
    CHECK(sansock_send_async(c.client, buffer, SIZE_MAX, never, nullptr) == -EINVAL);
    CHECK(sansock_recv_async(c.client, buffer, too_long, never, nullptr) == -EINVAL);
    CHECK(sansock_recv_async(c.client, buffer, SIZE_MAX, never, nullptr) == -EINVAL);
    // A blocking recv's count is clamped: it returns what is there, never a negative count.
    REQUIRE(send_all(c.server, "12345", 5) == 0);
    CHECK(bounded("recv", [&] {
              ssize_t r = 0;
              for (size_t got = 0; got < 5; got += size_t(r))
                  if ((r = sansock_recv(c.client, buffer + got, SIZE_MAX, 0)) <= 0) return r;
              return ssize_t(5);
          }) == 5);
    CHECK(std::string(buffer, 5) == "12345");
}

TEST_CASE("Context attributes: the same ranges for both providers") {
    for (uint32_t provider : {uint32_t(SANSOCK_PROVIDER_LOOPBACK), uint32_t(SANSOCK_PROVIDER_VERBS)}) {
        CAPTURE(provider);
        CHECK(create_with(provider, [](sansock_context_attr& a) { a.slot_size = 1; }) == -EINVAL);
        CHECK(create_with(provider, [](sansock_context_attr& a) { a.slot_size = 63; }) == -EINVAL);
        CHECK(create_with(provider, [](sansock_context_attr& a) { a.recv_slots = 1; }) == -EINVAL);
        CHECK(create_with(provider, [](sansock_context_attr& a) { a.slot_size = 1u << 31; }) == -EINVAL);
        CHECK(create_with(provider, [](sansock_context_attr& a) {
                  a.slot_size = 1u << 20; // (512 + 512) MiB + 1 MiB
                  a.send_slots = 513;
                  a.recv_slots = 512;
              }) == -EINVAL);
        CHECK(create_with(provider, [](sansock_context_attr& a) {
                  a.slot_size = 1u << 29;
                  a.send_slots = 0xffffffffu; // no wrap-around in the product
                  a.recv_slots = 2;
              }) == -EINVAL);
    }
    // What the ranges allow works on loopback (verbs would need a device).
    CHECK(create_with(SANSOCK_PROVIDER_LOOPBACK, [](sansock_context_attr& a) {
              a.slot_size = 64;
              a.send_slots = 1;
              a.recv_slots = 2;
          }) == 0);
    CHECK(create_with(SANSOCK_PROVIDER_LOOPBACK, [](sansock_context_attr& a) {
              a.slot_size = 1u << 20;
              a.send_slots = 512;
              a.recv_slots = 512;
          }) == 0);
}

TEST_CASE("accept on a socket that never listened is -EINVAL, also when it failed; a failed listener gives its failure") {
    watchdog guard("accept on failed sockets");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    const connection c = connect_pair(a, b);
    REQUIRE(loopback::drop_connection(provider_instance_of(a), provider_socket_of(c.client)) == 0);
    char byte = 0;
    CHECK(bounded("recv", [&] { return sansock_recv(c.client, &byte, 1, 0); }) == -ECONNRESET);
    sansock_socket_t out = 0;
    CHECK(sansock_accept(c.client, &out, nullptr, nullptr) == -EINVAL);
    CHECK(sansock_accept_async(c.client, [](void*, int64_t) { FAIL("no callback"); }, nullptr) == -EINVAL);
    // The device under the listener goes away: the listener fails with -ENETDOWN.
    REQUIRE(loopback::set_device_down(provider_instance_of(b)) == 0);
    CHECK(eventually([&] { return sansock_accept(c.listener, &out, nullptr, nullptr) == -ENETDOWN; }));
    CHECK(sansock_accept_async(c.listener, [](void*, int64_t) { FAIL("no callback"); }, nullptr) == -ENETDOWN);
}

TEST_CASE("SO_RCVBUF once connected is -EISCONN: the window was fixed when the connection opened") {
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    const connection c = connect_pair(a, b);
    CHECK(set_int_option(c.client, SO_RCVBUF, 1 << 16) == -EISCONN);
    sansock_socket_t fresh = 0;
    REQUIRE(sansock_socket(a, &fresh) == 0);
    CHECK(set_int_option(fresh, SO_RCVBUF, 1 << 16) == 0);
    CHECK(sansock_close(fresh) == 0);
}

TEST_CASE("MSG_WAITALL cut short by a failure returns the bytes copied; the error comes at the next call") {
    watchdog guard("MSG_WAITALL and a failure");
    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    const connection c = connect_pair(a, b);
    char got[10] = {};
    background<ssize_t> receiving("recv WAITALL", [&] { return sansock_recv(c.server, got, sizeof got, MSG_WAITALL); });
    REQUIRE(send_all(c.client, "abcd", 4) == 0);
    CHECK_FALSE(receiving.wait(300ms)); // 4 of 10
    REQUIRE(loopback::drop_connection(provider_instance_of(a), provider_socket_of(c.client)) == 0);
    CHECK(receiving.result() == 4);
    CHECK(std::string(got, 4) == "abcd");
    CHECK(sansock_recv(c.server, got, sizeof got, 0) == -ECONNRESET);
}

TEST_CASE("A closed handle stays -ENOTSOCK once a new socket certainly took its slot") {
    watchdog guard("stale handle, slot reused");
    world w;
    sansock_context* a = w.host();
    sansock_socket_t stale = 0;
    REQUIRE(sansock_socket(a, &stale) == 0);
    REQUIRE(sansock_close(stale) == 0);
    // Handles are slot (low 32 bits) and generation: open sockets until one has the stale
    // handle's slot, and require it (the table reuses the slot freed last, so the first does).
    std::vector<sansock_socket_t> fresh;
    bool reused = false;
    for (int i = 0; i < 64 && !reused; ++i) {
        sansock_socket_t s = 0;
        REQUIRE(sansock_socket(a, &s) == 0);
        fresh.push_back(s);
        reused = uint32_t(s) == uint32_t(stale);
    }
    REQUIRE_MESSAGE(reused, "no new socket took the stale handle's slot: the checks below would prove nothing");
    const sansock_socket_t successor = fresh.back();
    CHECK(successor != stale);
    int type = 0;
    socklen_t length = sizeof type;
    CHECK(sansock_getsockopt(stale, SOL_SOCKET, SO_TYPE, &type, &length) == -ENOTSOCK);
    CHECK(sansock_setsockopt(stale, SOL_SOCKET, SANSOCK_SO_NONBLOCK, &type, sizeof type) == -ENOTSOCK);
    CHECK(sansock_listen(stale, 1) == -ENOTSOCK);
    CHECK(sansock_close(stale) == -ENOTSOCK);
    // The successor is untouched by all that.
    length = sizeof type;
    CHECK(sansock_getsockopt(successor, SOL_SOCKET, SO_TYPE, &type, &length) == 0);
    for (sansock_socket_t s : fresh) CHECK(sansock_close(s) == 0);
}

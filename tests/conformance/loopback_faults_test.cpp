// SPDX-License-Identifier: MIT
// The loopback provider's own behaviour: fault injection (freeze, drop, delay, device down),
// flow control and delivery details the shared suite leaves to each provider.
#include <chrono>

#include "provider/loopback/loopback.hpp"
#include "tests/conformance/conformance_support.hpp"

namespace sansock::conformance {
namespace {

namespace lb = sansock::loopback;

TEST_CASE("A frozen socket moves no bytes in either direction until it is unfrozen") {
    two_hosts hosts;
    const auto c = hosts.connect();
    REQUIRE(lb::freeze(hosts.a(), c.client, true) == 0);
    uint8_t* out_b = hosts.new_buffer(64);
    uint8_t* in_a = hosts.new_buffer(64);
    uint8_t* out_a = hosts.new_buffer(64);
    uint8_t* in_b = hosts.new_buffer(64);
    for (int i = 0; i < 64; ++i) out_b[i] = uint8_t(i), out_a[i] = uint8_t(100 + i);
    tracked& send_b = hosts.new_op(operation_kind::send, out_b, 64);
    tracked& recv_a = hosts.new_op(operation_kind::recv, in_a, 64);
    tracked& send_a = hosts.new_op(operation_kind::send, out_a, 64);
    tracked& recv_b = hosts.new_op(operation_kind::recv, in_b, 64);
    recv_a.op.flags = recv_b.op.flags = provider::op_wait_all;
    REQUIRE(hosts.ops.send(hosts.b(), c.server, &send_b.op) == 0);
    REQUIRE(hosts.ops.recv(hosts.a(), c.client, &recv_a.op) == 0);
    REQUIRE(hosts.ops.send(hosts.a(), c.client, &send_a.op) == 0);
    REQUIRE(hosts.ops.recv(hosts.b(), c.server, &recv_b.op) == 0);
    settle(100);
    for (tracked* t : {&send_b, &recv_a, &send_a, &recv_b}) CHECK(t->completions.load() == 0);

    REQUIRE(lb::freeze(hosts.a(), c.client, false) == 0);
    REQUIRE(wait_until([&] {
        return send_b.completions.load() + recv_a.completions.load() + send_a.completions.load() +
                   recv_b.completions.load() == 4;
    }, hosts.timeout()));
    CHECK(send_b.result.load() == 64);
    CHECK(recv_a.result.load() == 64);
    CHECK(std::memcmp(in_a, out_b, 64) == 0);
    CHECK(std::memcmp(in_b, out_a, 64) == 0);
    CHECK(lb::freeze(hosts.a(), 12345, true) == -ENOTSOCK);
}

TEST_CASE("A dropped connection resets both ends") {
    two_hosts hosts;
    const auto c = hosts.connect();
    tracked& recv_a = hosts.new_op(operation_kind::recv, hosts.new_buffer(64), 64);
    tracked& recv_b = hosts.new_op(operation_kind::recv, hosts.new_buffer(64), 64);
    REQUIRE(hosts.ops.recv(hosts.a(), c.client, &recv_a.op) == 0);
    REQUIRE(hosts.ops.recv(hosts.b(), c.server, &recv_b.op) == 0);
    REQUIRE(lb::drop_connection(hosts.a(), c.client) == 0);
    REQUIRE(wait_until([&] {
        return recv_a.completions.load() == 1 && recv_b.completions.load() == 1 &&
               hosts.side_a.count(c.client, connection_event::peer_reset) == 1 &&
               hosts.side_b.count(c.server, connection_event::peer_reset) == 1;
    }, hosts.timeout()));
    CHECK(recv_a.result.load() == -ECONNRESET);
    CHECK(recv_b.result.load() == -ECONNRESET);
    tracked& later = hosts.new_op(operation_kind::send, hosts.new_buffer(8), 8);
    CHECK(hosts.ops.send(hosts.a(), c.client, &later.op) == -ECONNRESET);
    CHECK(hosts.ops.send(hosts.b(), c.server, &later.op) == -ECONNRESET);
    CHECK(lb::drop_connection(hosts.a(), c.client) == -ENOTCONN);
    settle(50);
    CHECK(hosts.side_a.count_for(c.client) == 1);
    CHECK(hosts.side_b.count_for(c.server) == 1);
    CHECK(hosts.ops.close(hosts.a(), c.client) == 0);
    CHECK(hosts.ops.close(hosts.b(), c.server) == 0);
}

TEST_CASE("Delayed completions are held for a number of progress calls or until released") {
    two_hosts hosts;
    const auto c = hosts.connect();
    hosts.stop_progress(0); // a's progress is counted by hand
    uint8_t* data = hosts.new_buffer(8);
    tracked& send_b = hosts.new_op(operation_kind::send, data, 8);

    SUBCASE("for three progress calls") {
        tracked& recv_a = hosts.new_op(operation_kind::recv, hosts.new_buffer(8), 8);
        REQUIRE(lb::delay_completions(hosts.a(), c.client, 3) == 0);
        REQUIRE(hosts.ops.recv(hosts.a(), c.client, &recv_a.op) == 0);
        REQUIRE(hosts.ops.send(hosts.b(), c.server, &send_b.op) == 0);
        CHECK(hosts.ops.progress(hosts.a(), 0) == 0);
        CHECK(hosts.ops.progress(hosts.a(), 0) == 0);
        CHECK(recv_a.completions.load() == 0);
        CHECK(hosts.ops.progress(hosts.a(), 0) == 1);
        CHECK(recv_a.completions.load() == 1);
        CHECK(recv_a.result.load() == 8);
    }
    SUBCASE("until released") {
        tracked& recv_a = hosts.new_op(operation_kind::recv, hosts.new_buffer(8), 8);
        REQUIRE(lb::delay_completions(hosts.a(), c.client, 0) == 0);
        REQUIRE(hosts.ops.recv(hosts.a(), c.client, &recv_a.op) == 0);
        REQUIRE(hosts.ops.send(hosts.b(), c.server, &send_b.op) == 0);
        for (int i = 0; i < 5; ++i) CHECK(hosts.ops.progress(hosts.a(), 10) == 0);
        CHECK(recv_a.completions.load() == 0);
        REQUIRE(lb::release_completions(hosts.a(), c.client) == 0);
        CHECK(hosts.ops.progress(hosts.a(), 0) == 1);
        CHECK(recv_a.completions.load() == 1);
    }
    SUBCASE("a held completion is delivered unchanged by close") {
        tracked& recv_a = hosts.new_op(operation_kind::recv, hosts.new_buffer(8), 8);
        tracked& pending = hosts.new_op(operation_kind::recv, hosts.new_buffer(8), 8);
        REQUIRE(lb::delay_completions(hosts.a(), c.client, 0) == 0);
        REQUIRE(hosts.ops.recv(hosts.a(), c.client, &recv_a.op) == 0);
        REQUIRE(hosts.ops.recv(hosts.a(), c.client, &pending.op) == 0);
        REQUIRE(hosts.ops.send(hosts.b(), c.server, &send_b.op) == 0);
        REQUIRE(hosts.ops.close(hosts.a(), c.client) == 0);
        CHECK(recv_a.completions.load() == 1);
        CHECK(recv_a.result.load() == 8);
        CHECK(pending.completions.load() == 1);
        CHECK(pending.result.load() == -ECANCELED);
        CHECK(hosts.ops.progress(hosts.a(), 0) == 0);
    }
    CHECK(wait_until([&] { return send_b.completions.load() == 1; }, hosts.timeout()));
}

TEST_CASE("Device down fails pending operations -ENETDOWN, signals device_down and resets peers") {
    two_hosts hosts;
    const auto c = hosts.connect();
    uint16_t port = 0;
    socket_handle a_listener = 0;
    REQUIRE(hosts.ops.socket(hosts.a(), &a_listener) == 0);
    REQUIRE(hosts.ops.listen(hosts.a(), a_listener, 4) == 0);
    sockaddr_in name{};
    socklen_t length = sizeof name;
    REQUIRE(hosts.ops.getsockname(hosts.a(), a_listener, reinterpret_cast<sockaddr*>(&name), &length) == 0);
    port = ntohs(name.sin_port);
    tracked& accept_a = hosts.new_op(operation_kind::accept);
    REQUIRE(hosts.ops.accept(hosts.a(), a_listener, &accept_a.op) == 0);
    tracked& recv_a = hosts.new_op(operation_kind::recv, hosts.new_buffer(8), 8);
    tracked& recv_b = hosts.new_op(operation_kind::recv, hosts.new_buffer(8), 8);
    REQUIRE(hosts.ops.recv(hosts.a(), c.client, &recv_a.op) == 0);
    REQUIRE(hosts.ops.recv(hosts.b(), c.server, &recv_b.op) == 0);

    REQUIRE(lb::set_device_down(hosts.a()) == 0);
    REQUIRE(wait_until([&] {
        return recv_a.completions.load() == 1 && accept_a.completions.load() == 1 && recv_b.completions.load() == 1 &&
               hosts.side_a.count(c.client, connection_event::device_down) == 1 &&
               hosts.side_a.count(a_listener, connection_event::device_down) == 1 &&
               hosts.side_b.count(c.server, connection_event::peer_reset) == 1;
    }, hosts.timeout())); // every up-call is waited for: progress delivers them one by one
    CHECK(recv_a.result.load() == -ENETDOWN);
    CHECK(accept_a.result.load() == -ENETDOWN);
    CHECK(recv_b.result.load() == -ECONNRESET);
    CHECK(hosts.side_a.count(a_listener, connection_event::device_down) == 1);
    {
        std::lock_guard lock(hosts.side_a.mutex);
        for (const auto& r : hosts.side_a.events) CHECK(r.status == -ENETDOWN);
    }

    // Later calls fail -ENETDOWN; close still releases handles.
    socket_handle s = 0;
    CHECK(hosts.ops.socket(hosts.a(), &s) == -ENETDOWN);
    tracked& later = hosts.new_op(operation_kind::send, hosts.new_buffer(8), 8);
    CHECK(hosts.ops.send(hosts.a(), c.client, &later.op) == -ENETDOWN);
    // Nobody can reach a's listener any more.
    socket_handle from_b = 0;
    REQUIRE(hosts.ops.socket(hosts.b(), &from_b) == 0);
    tracked& con = hosts.new_op(operation_kind::connect);
    set_address(con.op, ipv4("127.0.0.1", port));
    REQUIRE(hosts.ops.connect(hosts.b(), from_b, &con.op) == 0);
    REQUIRE(wait_until([&] { return con.completions.load() == 1; }, hosts.timeout()));
    CHECK(con.result.load() == -ECONNREFUSED);
    CHECK(hosts.ops.close(hosts.a(), c.client) == 0);
    CHECK(hosts.ops.close(hosts.a(), a_listener) == 0);
    CHECK(hosts.ops.close(hosts.a(), c.client) == -ENOTSOCK);
    CHECK(hosts.ops.close(hosts.b(), from_b) == 0);
}

TEST_CASE("Flow control holds sends beyond the peer's receive window until it reads") {
    two_hosts hosts; // window: 4 slots of 4 KiB
    const auto c = hosts.connect();
    const size_t window = size_t(hosts.settings.recv_slots) * hosts.settings.slot_size;
    uint8_t* data = hosts.new_buffer(window + 1);
    tracked& fill = hosts.new_op(operation_kind::send, data, window);
    tracked& beyond = hosts.new_op(operation_kind::send, data + window, 1);
    REQUIRE(hosts.ops.send(hosts.a(), c.client, &fill.op) == 0);
    REQUIRE(hosts.ops.send(hosts.a(), c.client, &beyond.op) == 0);
    REQUIRE(wait_until([&] { return fill.completions.load() == 1; }, hosts.timeout()));
    CHECK(fill.result.load() == int64_t(window));
    settle(50);
    CHECK(beyond.completions.load() == 0);
    // One byte read makes room for the last byte.
    tracked& one = hosts.new_op(operation_kind::recv, hosts.new_buffer(1), 1);
    REQUIRE(hosts.ops.recv(hosts.b(), c.server, &one.op) == 0);
    REQUIRE(wait_until([&] { return beyond.completions.load() == 1 && one.completions.load() == 1; }, hosts.timeout()));
    CHECK(beyond.result.load() == 1);
    CHECK(one.result.load() == 1);
}

TEST_CASE("Receives take what is there, or exactly their length with op_wait_all, in FIFO order") {
    two_hosts hosts;
    const auto c = hosts.connect();
    uint8_t* out = hosts.new_buffer(100);
    for (int i = 0; i < 100; ++i) out[i] = uint8_t(i);
    uint8_t* in = hosts.new_buffer(200);
    tracked& whole = hosts.new_op(operation_kind::recv, in, 100);
    whole.op.flags = provider::op_wait_all;
    tracked& next = hosts.new_op(operation_kind::recv, in + 100, 100);
    REQUIRE(hosts.ops.recv(hosts.b(), c.server, &whole.op) == 0);
    REQUIRE(hosts.ops.recv(hosts.b(), c.server, &next.op) == 0);
    tracked& first = hosts.new_op(operation_kind::send, out, 60);
    REQUIRE(hosts.ops.send(hosts.a(), c.client, &first.op) == 0);
    settle(50);
    CHECK(whole.completions.load() == 0);
    tracked& second = hosts.new_op(operation_kind::send, out + 60, 40);
    REQUIRE(hosts.ops.send(hosts.a(), c.client, &second.op) == 0);
    tracked& third = hosts.new_op(operation_kind::send, out, 10);
    REQUIRE(hosts.ops.send(hosts.a(), c.client, &third.op) == 0);
    REQUIRE(wait_until([&] { return whole.completions.load() == 1 && next.completions.load() == 1; }, hosts.timeout()));
    CHECK(whole.result.load() == 100);
    CHECK(std::memcmp(in, out, 100) == 0);
    CHECK(next.result.load() == 10);
    CHECK(std::memcmp(in + 100, out, 10) == 0);
}

TEST_CASE("Unread data is discarded when the peer closes hard") {
    two_hosts hosts;
    const auto c = hosts.connect();
    tracked& send = hosts.new_op(operation_kind::send, hosts.new_buffer(100), 100);
    REQUIRE(hosts.ops.send(hosts.a(), c.client, &send.op) == 0);
    REQUIRE(wait_until([&] { return send.completions.load() == 1; }, hosts.timeout()));
    REQUIRE(hosts.ops.close(hosts.a(), c.client) == 0);
    tracked& recv = hosts.new_op(operation_kind::recv, hosts.new_buffer(100), 100);
    CHECK(hosts.ops.recv(hosts.b(), c.server, &recv.op) == -ECONNRESET);
}

TEST_CASE("Completions never run inside the submitting call") {
    two_hosts hosts;
    const auto c = hosts.connect();
    hosts.stop_progress(0);
    hosts.stop_progress(1);
    tracked& send = hosts.new_op(operation_kind::send, hosts.new_buffer(8), 8);
    REQUIRE(hosts.ops.send(hosts.a(), c.client, &send.op) == 0);
    tracked& recv = hosts.new_op(operation_kind::recv, hosts.new_buffer(8), 8);
    REQUIRE(hosts.ops.recv(hosts.b(), c.server, &recv.op) == 0);
    CHECK(send.completions.load() == 0);
    CHECK(recv.completions.load() == 0);
    CHECK(readable_within(hosts.ops.event_fd(hosts.a()), 0));
    CHECK(hosts.ops.progress(hosts.a(), 0) == 1);
    CHECK(hosts.ops.progress(hosts.b(), 0) == 1);
    CHECK(send.completions.load() == 1);
    CHECK(recv.completions.load() == 1);
    CHECK_FALSE(readable_within(hosts.ops.event_fd(hosts.a()), 0));
}

TEST_CASE("progress waits at most its timeout and returns early on wake") {
    two_hosts hosts;
    hosts.stop_progress(0);
    // Stopping the progress thread woke the instance; a wake it did not consume yet would end
    // the timed wait below at once. Take it first.
    hosts.ops.progress(hosts.a(), 0);
    using clock = std::chrono::steady_clock;
    auto start = clock::now();
    CHECK(hosts.ops.progress(hosts.a(), 100) == 0);
    auto waited = clock::now() - start;
    CHECK(waited >= std::chrono::milliseconds(90));
    CHECK(waited < std::chrono::seconds(5));

    std::thread waker([&] {
        settle(50);
        hosts.ops.wake(hosts.a());
    });
    start = clock::now();
    CHECK(hosts.ops.progress(hosts.a(), 20000) == 0);
    waker.join();
    CHECK(clock::now() - start < std::chrono::seconds(10));
}

TEST_CASE("Instances without a shared fabric cannot reach each other") {
    const provider::ops ops = provider::with_defaults(loopback_ops);
    provider::instance* one = nullptr;
    provider::instance* two = nullptr;
    REQUIRE(ops.create(small_config(), provider::upcalls{}, &one) == 0);
    REQUIRE(ops.create(small_config(), provider::upcalls{}, &two) == 0);
    socket_handle l = 0, s = 0;
    REQUIRE(ops.socket(one, &l) == 0);
    REQUIRE(ops.listen(one, l, 4) == 0);
    sockaddr_in name{};
    socklen_t length = sizeof name;
    REQUIRE(ops.getsockname(one, l, reinterpret_cast<sockaddr*>(&name), &length) == 0);
    REQUIRE(ops.socket(two, &s) == 0);
    tracked con;
    prepare(con, operation_kind::connect);
    set_address(con.op, ipv4("127.0.0.1", ntohs(name.sin_port)));
    REQUIRE(ops.connect(two, s, &con.op) == 0);
    CHECK(ops.progress(two, 1000) == 1);
    CHECK(con.result.load() == -ECONNREFUSED);
    ops.destroy(one);
    ops.destroy(two);
}

TEST_CASE("destroy completes every pending operation -ECANCELED") {
    tracked recv;
    tracked accept;
    std::vector<uint8_t> buffer(8);
    {
        two_hosts hosts;
        const auto c = hosts.connect();
        prepare(recv, operation_kind::recv, buffer.data(), buffer.size());
        REQUIRE(hosts.ops.recv(hosts.a(), c.client, &recv.op) == 0);
        prepare(accept, operation_kind::accept);
        REQUIRE(hosts.ops.accept(hosts.b(), c.listener, &accept.op) == 0);
    }
    CHECK(recv.completions.load() == 1);
    CHECK(recv.result.load() == -ECANCELED);
    CHECK(accept.completions.load() == 1);
    CHECK(accept.result.load() == -ECANCELED);
}

TEST_CASE("A fabric cannot be destroyed while an instance uses it") {
    lb::fabric* net = lb::create_fabric();
    REQUIRE(net != nullptr);
    provider::config c = small_config();
    c.provider_specific = net;
    provider::instance* inst = nullptr;
    REQUIRE(loopback_ops.create(c, provider::upcalls{}, &inst) == 0);
    CHECK(lb::destroy_fabric(net) == -EBUSY);
    loopback_ops.destroy(inst);
    CHECK(lb::destroy_fabric(net) == 0);
}

} // namespace
} // namespace sansock::conformance

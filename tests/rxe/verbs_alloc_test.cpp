// SPDX-License-Identifier: MIT
// The verbs provider's close and destroy need no memory (docs/semantics.md, "Out of memory"),
// on a real device: with every allocation of every thread failing (the failing allocator of
// tests/support/failing_allocator.hpp; malloc, and so rdma-core, is untouched), hard closes of
// connections with operations pending (each completes exactly once, -ECANCELED), of listeners
// and of a connecting socket, an instance destroyed, then closes through the switch in each
// linger mode with their background work and a context destroyed. The process never ends on
// std::bad_alloc, and once memory is back the device objects of the process are all gone.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "provider/verbs/verbs_provider.hpp"
#include "sansock/sansock.h"
#include "tests/support/address.hpp"
#include "tests/support/bounded_time.hpp"
#include "tests/support/failing_allocator.hpp"
#include "tests/support/provider_harness.hpp"
#include "tests/support/rdma_test_env.hpp"
#include "tests/support/socket_options.hpp"

using namespace std::chrono_literals;
using namespace sansock;
using namespace sansock::test;
using provider::operation_kind;
using provider::socket_handle;

namespace {

constexpr auto op_timeout = 60s;
constexpr const char* nobody = "10.0.0.99"; // on the test subnet, never answers: a connect stays pending

uint16_t port_of(provider_harness& h, socket_handle s) {
    sockaddr_in a{};
    socklen_t length = sizeof a;
    REQUIRE(h.ops().getsockname(h.instance(), s, reinterpret_cast<sockaddr*>(&a), &length) == 0);
    return ntohs(a.sin_port);
}

socket_handle open_listener(provider_harness& h, const std::string& address) {
    socket_handle l = 0;
    REQUIRE(h.ops().socket(h.instance(), &l) == 0);
    sockaddr_in a = ipv4(address, 0);
    REQUIRE(h.ops().bind(h.instance(), l, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(h.ops().listen(h.instance(), l, 16) == 0);
    return l;
}

// Submits a connect from a new socket of `client` to `address`:`port`.
socket_handle start_connect(provider_harness& client, waitable_operation& op, const std::string& address, uint16_t port) {
    socket_handle s = 0;
    REQUIRE(client.ops().socket(client.instance(), &s) == 0);
    const sockaddr_in a = ipv4(address, port);
    std::memcpy(&op.address, &a, sizeof a);
    op.address_length = sizeof a;
    REQUIRE(client.ops().connect(client.instance(), s, &op) == 0);
    return s;
}

struct connection {
    socket_handle client = 0, server = 0;
};

connection connect_pair(provider_harness& server, provider_harness& client, socket_handle l, const std::string& address) {
    waitable_operation accept_op(operation_kind::accept), connect_op(operation_kind::connect);
    REQUIRE(server.ops().accept(server.instance(), l, &accept_op) == 0);
    connection c;
    c.client = start_connect(client, connect_op, address, port_of(server, l));
    REQUIRE(connect_op.wait(op_timeout));
    REQUIRE(connect_op.result == 0);
    REQUIRE(accept_op.wait(op_timeout));
    REQUIRE(accept_op.result == 0);
    c.server = accept_op.accepted;
    return c;
}

// A receive or send on `s`: 0 when submitted, else the refusal.
int submit(provider_harness& h, socket_handle s, waitable_operation& op, void* buffer, size_t length) {
    op.buffer = buffer;
    op.length = length;
    return op.kind == operation_kind::recv ? h.ops().recv(h.instance(), s, &op) : h.ops().send(h.instance(), s, &op);
}

// How a socket whose peer was reset sees it: a receive refused, or completed, -ECONNRESET.
int64_t receive_outcome(provider_harness& h, socket_handle s) {
    uint8_t byte;
    waitable_operation op(operation_kind::recv);
    if (int rc = submit(h, s, op, &byte, 1)) return rc;
    return op.wait(op_timeout) ? op.result : -ETIME;
}

std::map<std::string, long> verbs_objects() {
    auto counts = rdma_resource_counts();
    std::map<std::string, long> kept;
    for (const char* type : {"pd", "cq", "qp", "mr", "cm_id"}) kept[type] = counts[type];
    return kept;
}

std::string describe(const std::map<std::string, long>& counts) {
    std::string text;
    for (const auto& [type, count] : counts) text += type + "=" + std::to_string(count) + " ";
    return text;
}

// ---- the switch -------------------------------------------------------------------------------

constexpr int call_timeout_ms = 30000;

sansock_context* verbs_context(uint32_t graceful_timeout_ms) {
    sansock_context_attr attr;
    sansock_context_attr_init(&attr);
    REQUIRE(attr.provider == SANSOCK_PROVIDER_VERBS);
    attr.graceful_timeout_ms = graceful_timeout_ms;
    sansock_context* ctx = nullptr;
    REQUIRE(sansock_context_create(&attr, &ctx) == 0);
    return ctx;
}

sansock_socket_t listen_on(sansock_context* ctx, const std::string& address, uint16_t* port) {
    sansock_socket_t l = 0;
    REQUIRE(sansock_socket(ctx, &l) == 0);
    sockaddr_in a = ipv4(address, 0);
    REQUIRE(sansock_bind(l, as_sockaddr(a), sizeof a) == 0);
    REQUIRE(sansock_listen(l, 8) == 0);
    socklen_t length = sizeof a;
    REQUIRE(sansock_getsockname(l, reinterpret_cast<sockaddr*>(&a), &length) == 0);
    *port = ntohs(a.sin_port);
    REQUIRE(set_timeout(l, SO_RCVTIMEO, call_timeout_ms) == 0);
    return l;
}

struct switch_pair {
    sansock_socket_t client = 0, server = 0;
};

switch_pair connect_switch(sansock_context* client, sansock_socket_t l, const std::string& address, uint16_t port) {
    switch_pair p;
    REQUIRE(sansock_socket(client, &p.client) == 0);
    const sockaddr_in a = ipv4(address, port);
    REQUIRE(sansock_connect(p.client, as_sockaddr(a), sizeof a) == 0);
    REQUIRE(sansock_accept(l, &p.server, nullptr, nullptr) == 0);
    for (sansock_socket_t s : {p.client, p.server}) {
        REQUIRE(set_timeout(s, SO_RCVTIMEO, call_timeout_ms) == 0);
        REQUIRE(set_timeout(s, SO_SNDTIMEO, call_timeout_ms) == 0);
    }
    return p;
}

ssize_t recv_until_end(sansock_socket_t s) {
    char buffer[4096];
    for (;;) {
        const ssize_t r = sansock_recv(s, buffer, sizeof buffer, 0);
        if (r <= 0) return r;
    }
}

// The other end of a close under no memory: end of stream (graceful), or the reset, or
// -ENOMEM (its own receive found no memory meanwhile).
bool ended(ssize_t r) { return r == 0 || r == -ECONNRESET || r == -ENOMEM; }

} // namespace

TEST_CASE("Verbs hard close, instance destroy and switch closes with no memory on any thread; nothing left on the device") {
    watchdog guard("verbs closes without memory", 300s);
    const std::string address = test_address();
    const auto baseline = verbs_objects();
    const int refused_before = refused.load();
    std::vector<uint8_t> big(1 << 20, 0x5a), small(4096, 0xa5), into(256);
    {
        provider_harness server(verbs::verbs_ops, {});
        provider_harness client(verbs::verbs_ops, {});
        auto doomed = std::make_unique<provider_harness>(verbs::verbs_ops, provider::config{});
        REQUIRE(server.status() == 0);
        REQUIRE(client.status() == 0);
        REQUIRE(doomed->status() == 0);
        const socket_handle l = open_listener(server, address);
        const connection c = connect_pair(server, client, l, address);
        const connection d = connect_pair(server, *doomed, l, address);

        // Pending on the client's connection: a receive, a send larger than the peer's window
        // (partly in flight, partly queued; the server reads nothing) and one queued behind it.
        waitable_operation recv_op(operation_kind::recv), big_send(operation_kind::send), small_send(operation_kind::send);
        REQUIRE(submit(client, c.client, recv_op, into.data(), into.size()) == 0);
        REQUIRE(submit(client, c.client, big_send, big.data(), big.size()) == 0);
        REQUIRE(submit(client, c.client, small_send, small.data(), small.size()) == 0);
        // A listener with two accepts pending, one with a connection nobody accepted, a connect
        // that cannot finish.
        const socket_handle accepting = open_listener(server, address);
        waitable_operation accept1(operation_kind::accept), accept2(operation_kind::accept);
        REQUIRE(server.ops().accept(server.instance(), accepting, &accept1) == 0);
        REQUIRE(server.ops().accept(server.instance(), accepting, &accept2) == 0);
        const socket_handle holding = open_listener(server, address);
        waitable_operation arrival_connect(operation_kind::connect);
        const socket_handle arrived = start_connect(client, arrival_connect, address, port_of(server, holding));
        REQUIRE(arrival_connect.wait(op_timeout));
        REQUIRE(arrival_connect.result == 0);
        waitable_operation stuck(operation_kind::connect);
        const socket_handle connecting = start_connect(client, stuck, nobody, 7);
        // On the instance to be destroyed: a receive on its connection, an accept on a listener.
        waitable_operation doomed_recv(operation_kind::recv), doomed_accept(operation_kind::accept);
        REQUIRE(submit(*doomed, d.client, doomed_recv, into.data(), into.size()) == 0);
        const socket_handle doomed_listener = open_listener(*doomed, address);
        REQUIRE(doomed->ops().accept(doomed->instance(), doomed_listener, &doomed_accept) == 0);
        std::this_thread::sleep_for(200ms); // the window fills: sends in flight and queued
        REQUIRE(big_send.completed() == 0);
        REQUIRE(stuck.completed() == 0);

        int closed[4] = {};
        without_memory_anywhere(
            [&] {
                closed[0] = client.ops().close(client.instance(), c.client);
                closed[1] = server.ops().close(server.instance(), accepting);
                closed[2] = server.ops().close(server.instance(), holding);
                closed[3] = client.ops().close(client.instance(), connecting);
                doomed.reset(); // its progress thread joined, the instance destroyed
                return 0;
            },
            1000ms); // progress moves the QPs to error, sends the DREQs, reaps, with no memory
        CHECK(refused.load() >= refused_before);
        for (int rc : closed) CHECK(rc == 0);
        for (waitable_operation* op : {&recv_op, &big_send, &small_send, &accept1, &accept2, &stuck, &doomed_recv, &doomed_accept}) {
            CHECK(op->completed() == 1);
            CHECK(op->result == -ECANCELED);
        }
        std::this_thread::sleep_for(100ms);
        for (waitable_operation* op : {&recv_op, &big_send, &small_send, &accept1, &accept2, &stuck})
            CHECK(op->completed() == 1); // exactly once: nothing more came later
        // The peers were reset: the server's ends of both connections, the unaccepted arrival.
        CHECK(receive_outcome(server, c.server) == -ECONNRESET);
        CHECK(receive_outcome(server, d.server) == -ECONNRESET);
        CHECK(receive_outcome(client, arrived) == -ECONNRESET);
        CHECK(server.ops().close(server.instance(), c.server) == 0);
        CHECK(server.ops().close(server.instance(), d.server) == 0);
        CHECK(client.ops().close(client.instance(), arrived) == 0);
        CHECK(server.ops().close(server.instance(), l) == 0);
    }

    // Through the switch: a close in each linger mode, a listener's, and a context's destroy.
    sansock_context* a = verbs_context(500); // graceful time-out: passes while memory is off
    sansock_context* b = verbs_context(500);
    sansock_context* doomed = verbs_context(500);
    uint16_t port = 0;
    const sansock_socket_t l = listen_on(b, address, &port);
    const switch_pair abortive = connect_switch(a, l, address, port);
    const switch_pair dontlinger = connect_switch(a, l, address, port);
    const switch_pair lingering = connect_switch(a, l, address, port);
    const switch_pair destroyed = connect_switch(doomed, l, address, port);
    char buffer[64];
    noted aborted_recv, listener_accept, doomed_recv, doomed_accept;
    REQUIRE(sansock_recv_async(abortive.client, buffer, sizeof buffer, noted::run, &aborted_recv) == 0);
    REQUIRE(set_linger(abortive.client, 1, 0) == 0);
    REQUIRE(sansock_send(lingering.client, "data", 4, 0) == 4);
    REQUIRE(sansock_recv(lingering.server, buffer, 4, MSG_WAITALL) == 4);
    REQUIRE(set_linger(lingering.client, 1, 5) == 0);
    uint16_t other_port = 0;
    const sansock_socket_t other_listener = listen_on(a, address, &other_port);
    REQUIRE(sansock_accept_async(other_listener, noted::run, &listener_accept) == 0);
    sansock_socket_t fresh = 0;
    REQUIRE(sansock_socket(a, &fresh) == 0);
    REQUIRE(sansock_recv_async(destroyed.client, buffer, sizeof buffer, noted::run, &doomed_recv) == 0);
    uint16_t doomed_port = 0;
    const sansock_socket_t doomed_listener = listen_on(doomed, address, &doomed_port);
    REQUIRE(sansock_accept_async(doomed_listener, noted::run, &doomed_accept) == 0);

    int closes[6] = {};
    without_memory_anywhere(
        [&] {
            closes[0] = sansock_close(abortive.client);
            closes[1] = sansock_close(dontlinger.client);
            closes[2] = sansock_close(lingering.client);
            closes[3] = sansock_close(other_listener);
            closes[4] = sansock_close(fresh);
            closes[5] = sansock_context_destroy(doomed);
            return 0;
        },
        2000ms); // the background closes end (hard at the 500 ms time-out without a FIN)
    for (int rc : closes) CHECK(rc == 0);
    for (noted* cb : {&aborted_recv, &listener_accept, &doomed_recv, &doomed_accept}) {
        CHECK(cb->calls.load() == 1);
        CHECK(cb->result.load() == -ECANCELED);
    }
    const ssize_t abortive_end = recv_until_end(abortive.server);
    const ssize_t dontlinger_end = recv_until_end(dontlinger.server);
    const ssize_t lingering_end = recv_until_end(lingering.server);
    const ssize_t destroyed_end = recv_until_end(destroyed.server);
    CHECK((abortive_end == -ECONNRESET || abortive_end == -ENOMEM));
    CHECK(ended(dontlinger_end));
    CHECK(ended(lingering_end));
    CHECK((destroyed_end == -ECONNRESET || destroyed_end == -ENOMEM));
    for (sansock_socket_t s : {abortive.server, dontlinger.server, lingering.server, destroyed.server, l})
        CHECK(sansock_close(s) == 0);
    CHECK(sansock_context_destroy(a) == 0);
    CHECK(sansock_context_destroy(b) == 0);

    // Memory is back: every QP, CQ, MR, cm_id and PD of the process is gone.
    std::map<std::string, long> after;
    eventually([&] { return (after = verbs_objects()) == baseline; }, 30s);
    MESSAGE("allocations refused: " << refused.load() - refused_before << "; device objects before: "
                                    << describe(baseline) << "after: " << describe(after));
    CHECK(after == baseline);
    for (const char* type : {"pd", "cq", "qp", "mr", "cm_id"}) {
        INFO("resource " << type);
        CHECK(rdma_resource_count_of_pid(type, getpid()) == 0);
    }
}

// SPDX-License-Identifier: MIT
// The verbs provider on a real device: connections through the ops table, hard close, no
// growth over 1,000 connect/close cycles, and registered memory at 1,000 idle connections.
#include <arpa/inet.h>
#include <doctest/doctest.h>

#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <memory>
#include <numeric>

#include "provider/verbs/verbs_provider.hpp"
#include "tests/support/provider_harness.hpp"
#include "tests/support/rdma_test_env.hpp"
#include "tests/support/address.hpp"

using namespace std::chrono_literals;
using namespace sansock;
using namespace sansock::test;
using provider::operation_kind;
using provider::socket_handle;

namespace {

constexpr auto op_timeout = 60s;

using sansock::test::ipv4;

struct listener {
    socket_handle handle = 0;
    uint16_t port = 0;
};

listener open_listener(provider_harness& h, const std::string& address) {
    listener l;
    REQUIRE(h.ops().socket(h.instance(), &l.handle) == 0);
    sockaddr_in a = ipv4(address, 0);
    REQUIRE(h.ops().bind(h.instance(), l.handle, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(h.ops().listen(h.instance(), l.handle, 1024) == 0);
    socklen_t length = sizeof a;
    REQUIRE(h.ops().getsockname(h.instance(), l.handle, reinterpret_cast<sockaddr*>(&a), &length) == 0);
    l.port = ntohs(a.sin_port);
    REQUIRE(l.port != 0);
    return l;
}

struct connection {
    socket_handle client = 0;
    socket_handle server = 0;
};

connection connect_pair(provider_harness& server, provider_harness& client, const listener& l,
                        const std::string& address) {
    connection c;
    waitable_operation accept_op(operation_kind::accept);
    REQUIRE(server.ops().accept(server.instance(), l.handle, &accept_op) == 0);
    REQUIRE(client.ops().socket(client.instance(), &c.client) == 0);
    waitable_operation connect_op(operation_kind::connect);
    sockaddr_in a = ipv4(address, l.port);
    std::memcpy(&connect_op.address, &a, sizeof a);
    connect_op.address_length = sizeof a;
    REQUIRE(client.ops().connect(client.instance(), c.client, &connect_op) == 0);
    REQUIRE(connect_op.wait(op_timeout));
    REQUIRE(connect_op.result == 0);
    REQUIRE(accept_op.wait(op_timeout));
    REQUIRE(accept_op.result == 0);
    c.server = accept_op.accepted;
    return c;
}

std::map<std::string, long> verbs_objects(std::map<std::string, long> counts) {
    std::map<std::string, long> kept;
    for (const char* type : {"pd", "cq", "qp", "mr", "cm_id", "ctx"}) kept[type] = counts[type];
    return kept;
}

// Lets closed connections finish flushing and be destroyed in the background.
void let_teardown_finish(const std::map<std::string, long>& expected, std::chrono::seconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (verbs_objects(rdma_resource_counts()) != expected && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(100ms);
}

std::string describe(const std::map<std::string, long>& counts) {
    std::string text;
    for (const auto& [type, count] : counts) text += type + "=" + std::to_string(count) + " ";
    return text;
}

// Two provider instances on the test device, a listener on one and a connection between them.
struct connected_instances {
    std::string address = test_address();
    provider_harness server{verbs::verbs_ops, {}};
    provider_harness client{verbs::verbs_ops, {}};
    listener l;
    connection c;
    connected_instances() {
        REQUIRE(server.status() == 0);
        REQUIRE(client.status() == 0);
        l = open_listener(server, address);
        c = connect_pair(server, client, l, address);
    }
};

} // namespace

TEST_CASE("Verbs provider: connect, stream 4 MiB intact, and a hard close resets the peer") {
    connected_instances pair;
    auto& [address, server, client, l, c] = pair;

    std::vector<uint8_t> sent(4 << 20), got(sent.size());
    for (size_t i = 0; i < sent.size(); ++i) sent[i] = static_cast<uint8_t>(i * 2654435761u >> 13);
    waitable_operation recv_op(operation_kind::recv);
    recv_op.buffer = got.data();
    recv_op.length = got.size();
    recv_op.flags = provider::op_wait_all;
    REQUIRE(server.ops().recv(server.instance(), c.server, &recv_op) == 0);
    std::vector<std::unique_ptr<waitable_operation>> sends;
    for (size_t offset = 0; offset < sent.size(); offset += 100000) {
        auto op = std::make_unique<waitable_operation>(operation_kind::send);
        op->buffer = sent.data() + offset;
        op->length = std::min<size_t>(100000, sent.size() - offset);
        REQUIRE(client.ops().send(client.instance(), c.client, op.get()) == 0);
        sends.push_back(std::move(op));
    }
    for (auto& op : sends) {
        REQUIRE(op->wait(op_timeout));
        CHECK(op->result == static_cast<int64_t>(op->length));
    }
    REQUIRE(recv_op.wait(op_timeout));
    CHECK(recv_op.result == static_cast<int64_t>(got.size()));
    CHECK(got == sent);

    // The client's pending receive is cancelled by its own close; the server's by the reset.
    uint8_t byte;
    waitable_operation client_recv(operation_kind::recv), server_recv(operation_kind::recv);
    client_recv.buffer = server_recv.buffer = &byte;
    client_recv.length = server_recv.length = 1;
    REQUIRE(client.ops().recv(client.instance(), c.client, &client_recv) == 0);
    REQUIRE(server.ops().recv(server.instance(), c.server, &server_recv) == 0);
    REQUIRE(client.ops().close(client.instance(), c.client) == 0);
    CHECK(client_recv.completed() == 1); // before close returned
    CHECK(client_recv.result == -ECANCELED);
    REQUIRE(server_recv.wait(op_timeout));
    CHECK(server_recv.result == -ECONNRESET);
    CHECK(client.ops().close(client.instance(), c.client) == -ENOTSOCK);
    waitable_operation late(operation_kind::recv);
    late.buffer = &byte;
    late.length = 1;
    CHECK(server.ops().recv(server.instance(), c.server, &late) == -ECONNRESET);
    const auto events = server.events();
    REQUIRE(events.size() == 1);
    CHECK(events[0].socket == c.server);
    CHECK(events[0].event == provider::connection_event::peer_reset);
    CHECK(client.events().empty());
    CHECK(server.ops().close(server.instance(), c.server) == 0);
    CHECK(server.ops().close(server.instance(), l.handle) == 0);
}

namespace {
// A receive that records the thread its completion routine ran on.
struct thread_recording_recv : waitable_operation {
    std::atomic<std::thread::id> completed_on{};
    uint8_t bytes[64]{};
    thread_recording_recv() : waitable_operation(operation_kind::recv) {
        buffer = bytes;
        length = sizeof bytes;
        user = this;
        complete = [](provider::operation& op) noexcept {
            auto& self = *static_cast<thread_recording_recv*>(op.user);
            self.completed_on = std::this_thread::get_id();
            std::lock_guard lock(self.mutex);
            ++self.completions;
            self.changed.notify_all();
        };
    }
};

void send_bytes(provider_harness& h, socket_handle s, const char* text) {
    waitable_operation op(operation_kind::send);
    op.buffer = const_cast<char*>(text);
    op.length = std::strlen(text);
    REQUIRE(h.ops().send(h.instance(), s, &op) == 0);
    REQUIRE(op.wait(op_timeout));
    REQUIRE(op.result == static_cast<int64_t>(op.length));
}
} // namespace

TEST_CASE("Verbs provider: progress_socket delivers on the polling thread, and progress hears of the socket again after poll_stop") {
    connected_instances pair;
    auto& [address, server, client, l, c] = pair;
    CHECK(server.ops().progress_socket(server.instance(), c.server, 1u << 7) == -EINVAL);
    CHECK(server.ops().progress_socket(server.instance(), c.server + (1ull << 32), 0) == -ENOTSOCK);

    // While polled, the receive completes on this thread, not the harness's progress thread
    // (whose events for the socket are held back until poll_stop).
    thread_recording_recv polled;
    REQUIRE(server.ops().recv(server.instance(), c.server, &polled) == 0);
    REQUIRE(server.ops().progress_socket(server.instance(), c.server, provider::poll_start) >= 0);
    send_bytes(client, c.client, "polled");
    const auto deadline = std::chrono::steady_clock::now() + op_timeout;
    while (polled.completed() == 0 && std::chrono::steady_clock::now() < deadline)
        REQUIRE(server.ops().progress_socket(server.instance(), c.server, 0) >= 0);
    REQUIRE(polled.completed() == 1);
    CHECK(polled.completed_on.load() == std::this_thread::get_id());
    CHECK(polled.result == 6);
    CHECK(std::string(reinterpret_cast<char*>(polled.bytes), 6) == "polled");
    REQUIRE(server.ops().progress_socket(server.instance(), c.server, provider::poll_stop) >= 0);

    // After poll_stop the CQ is armed again: the next receive is delivered by progress alone.
    thread_recording_recv progressed;
    REQUIRE(server.ops().recv(server.instance(), c.server, &progressed) == 0);
    send_bytes(client, c.client, "progressed");
    REQUIRE(progressed.wait(std::chrono::milliseconds(10000)));
    CHECK(progressed.completed_on.load() != std::this_thread::get_id());
    CHECK(progressed.result == 10);
    CHECK(std::string(reinterpret_cast<char*>(progressed.bytes), 10) == "progressed");

    // A socket closed while polled needs no poll_stop: its teardown re-arms and flushes.
    thread_recording_recv cancelled;
    REQUIRE(server.ops().recv(server.instance(), c.server, &cancelled) == 0);
    REQUIRE(server.ops().progress_socket(server.instance(), c.server, provider::poll_start) >= 0);
    REQUIRE(server.ops().close(server.instance(), c.server) == 0);
    CHECK(cancelled.completed() == 1);
    CHECK(cancelled.result == -ECANCELED);
    CHECK(server.ops().progress_socket(server.instance(), c.server, provider::poll_stop) == -ENOTSOCK);
    CHECK(client.ops().close(client.instance(), c.client) == 0);
    CHECK(server.ops().close(server.instance(), l.handle) == 0);
}

TEST_CASE("Verbs provider: a socket left unarmed by its poller is heard of again, at poll_arm or by progress itself") {
    connected_instances pair;
    auto& [address, server, client, l, c] = pair;
    const auto& ops = server.ops();
    CHECK(ops.progress_socket(server.instance(), c.server, provider::poll_arm | provider::poll_stop) == -EINVAL);

    // One polled run that ends with notifications left off: the completion's event comes
    // while the run lasts (the sleep lets progress see it), so the CQ is not re-armed.
    auto polled_run = [&](const char* text) {
        thread_recording_recv polled;
        REQUIRE(ops.recv(server.instance(), c.server, &polled) == 0);
        REQUIRE(ops.progress_socket(server.instance(), c.server, provider::poll_start) >= 0);
        send_bytes(client, c.client, text);
        std::this_thread::sleep_for(200ms);
        const auto deadline = std::chrono::steady_clock::now() + op_timeout;
        while (polled.completed() == 0 && std::chrono::steady_clock::now() < deadline)
            REQUIRE(ops.progress_socket(server.instance(), c.server, 0) >= 0);
        REQUIRE(polled.completed() == 1);
        REQUIRE(ops.progress_socket(server.instance(), c.server, provider::poll_stop | provider::poll_stay_unarmed) >= 0);
    };

    // poll_arm: the next completion reaches progress at once.
    polled_run("one");
    REQUIRE(ops.progress_socket(server.instance(), c.server, provider::poll_arm) == 0);
    thread_recording_recv armed;
    REQUIRE(ops.recv(server.instance(), c.server, &armed) == 0);
    send_bytes(client, c.client, "armed");
    REQUIRE(armed.wait(std::chrono::milliseconds(5000)));
    CHECK(armed.completed_on.load() != std::this_thread::get_id());

    // Nobody comes back: progress arms it by itself (about 10 ms later) and delivers.
    polled_run("two");
    thread_recording_recv abandoned;
    REQUIRE(ops.recv(server.instance(), c.server, &abandoned) == 0);
    send_bytes(client, c.client, "abandoned");
    REQUIRE(abandoned.wait(std::chrono::milliseconds(5000)));
    CHECK(abandoned.completed_on.load() != std::this_thread::get_id());
    CHECK(abandoned.result == 9);
    CHECK(client.ops().close(client.instance(), c.client) == 0);
    CHECK(ops.close(server.instance(), c.server) == 0);
    CHECK(ops.close(server.instance(), l.handle) == 0);
}

TEST_CASE("Verbs provider: 1,000 open/connect/close cycles leave no object behind") {
    const std::string address = test_address();
    auto before_instances = verbs_objects(rdma_resource_counts());
    {
        provider_harness server(verbs::verbs_ops, {});
        provider_harness client(verbs::verbs_ops, {});
        REQUIRE(server.status() == 0);
        REQUIRE(client.status() == 0);
        listener l = open_listener(server, address);
        // One cycle first, so the per-device PD and completion channel exist.
        connection warm = connect_pair(server, client, l, address);
        REQUIRE(client.ops().close(client.instance(), warm.client) == 0);
        REQUIRE(server.ops().close(server.instance(), warm.server) == 0);
        let_teardown_finish({}, 2s);
        const auto before = verbs_objects(rdma_resource_counts());

        constexpr int cycles = 1000;
        int connected = 0;
        const auto started = std::chrono::steady_clock::now();
        for (int i = 0; i < cycles; ++i) {
            connection c = connect_pair(server, client, l, address);
            ++connected;
            // Alternate which side closes first, so both orders are exercised.
            if (i % 2 == 0) {
                REQUIRE(client.ops().close(client.instance(), c.client) == 0);
                REQUIRE(server.ops().close(server.instance(), c.server) == 0);
            } else {
                REQUIRE(server.ops().close(server.instance(), c.server) == 0);
                REQUIRE(client.ops().close(client.instance(), c.client) == 0);
            }
        }
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        MESSAGE(connected << " connect/close cycles in " << seconds << " s (" << 1e3 * seconds / cycles << " ms each)");
        CHECK(connected == cycles);
        let_teardown_finish(before, 60s);
        const auto after = verbs_objects(rdma_resource_counts());
        INFO("before: " << describe(before) << " after: " << describe(after));
        CHECK(after == before);
        provider::memory_stats memory{};
        REQUIRE(client.ops().query_memory(client.instance(), &memory) == 0);
        CHECK(memory.registered_bytes == 0);
        CHECK(memory.sockets == 0);
        REQUIRE(server.ops().close(server.instance(), l.handle) == 0);
    }
    // Destroying the instances releases the per-device objects too (librdmacm keeps its device
    // contexts open for the life of the process, so ctx is not compared).
    auto after_instances = verbs_objects(rdma_resource_counts());
    for (const char* type : {"pd", "cq", "qp", "mr", "cm_id"}) {
        INFO("resource " << type);
        CHECK(after_instances[type] == before_instances[type]);
    }
}

TEST_CASE("Verbs provider: registered memory at 1, 100 and 1,000 idle connections") {
    const std::string address = test_address();
    provider::config settings; // the documented defaults
    provider_harness server(verbs::verbs_ops, settings);
    provider_harness client(verbs::verbs_ops, settings);
    REQUIRE(server.status() == 0);
    REQUIRE(client.status() == 0);
    listener l = open_listener(server, address);
    std::vector<connection> connections;
    for (int target : {1, 100, 1000}) {
        while (static_cast<int>(connections.size()) < target)
            connections.push_back(connect_pair(server, client, l, address));
        provider::memory_stats memory{};
        REQUIRE(client.ops().query_memory(client.instance(), &memory) == 0);
        MESSAGE(target << " idle connections: " << memory.registered_bytes << " bytes registered ("
                       << memory.per_connection_bytes << " per connection, " << memory.shared_bytes << " shared)");
        CHECK(memory.connections == static_cast<uint32_t>(target));
        CHECK(memory.per_connection_bytes == uint64_t(settings.slot_size) * (settings.send_slots + settings.recv_slots));
        CHECK(memory.registered_bytes <= target * memory.per_connection_bytes + memory.shared_bytes);
        // And the device agrees: one MR per connection on each side.
        CHECK(rdma_resource_count_of_pid("mr", getpid()) == 2L * target);
    }
    for (const connection& c : connections) {
        CHECK(client.ops().close(client.instance(), c.client) == 0);
        CHECK(server.ops().close(server.instance(), c.server) == 0);
    }
    CHECK(server.ops().close(server.instance(), l.handle) == 0);
}

TEST_CASE("Verbs provider: a connection buffer over the per-connection limit is refused when the instance is made") {
    // (send_slots + recv_slots) x slot_size above provider::max_connection_bytes (1 GiB): the
    // shared configuration check refuses it with -EINVAL before anything is pinned.
    provider::config huge;
    huge.slot_size = 1u << 30; // 16 GiB per connection
    provider_harness client(verbs::verbs_ops, huge);
    CHECK(client.status() == -EINVAL);
    provider::config largest;
    largest.slot_size = 1u << 26; // 8 + 8 slots of 64 MiB: exactly the limit
    CHECK(provider::check_config(largest) == 0);
}

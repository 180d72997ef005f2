// SPDX-License-Identifier: MIT
// A device that disappears under the verbs provider (`rdma link delete`): every pending
// operation completes -ENETDOWN, later calls fail the same, nothing crashes, nothing hangs, and
// the removal itself completes (the provider lets go of the device).
//
// Destructive, so it runs only on a device the environment declares removable
// (SANSOCK_TEST_REMOVABLE_DEVICE, _ADDR, _NETDEV: set in the SoftRoCE VM and by
// scripts/test's native-rxe mode), and puts the device back afterwards.
#include <arpa/inet.h>
#include <doctest/doctest.h>

#include <cstdlib>
#include <cstring>
#include <thread>

#include "provider/verbs/verbs_provider.hpp"
#include "tests/support/peer_process.hpp"
#include "tests/support/provider_harness.hpp"
#include "tests/support/rdma_test_env.hpp"
#include "tests/support/address.hpp"

using namespace std::chrono_literals;
using namespace sansock;
using namespace sansock::test;
using provider::operation_kind;

namespace {

std::string env(const char* name) {
    const char* value = std::getenv(name);
    return value != nullptr ? value : "";
}

using sansock::test::ipv4;

const char* text(int64_t code) { return code < 0 ? strerrordesc_np(static_cast<int>(-code)) : "ok"; }

// Receives and sends of message mode name a registered region instead of a buffer.
void name_region(provider::operation& op, provider::memory_handle region) {
    op.buffer = nullptr;
    op.memory = region;
    op.memory_offset = 0;
}

// The process that holds sockets on the device while it is removed; in stream mode or message
// mode (config::messages), where the regions the receives named are released with the device.
int device_holder(const std::vector<std::string>& args) {
    if (args.size() != 2) return 2;
    const std::string address = args[0];
    provider::config settings;
    settings.messages = args[1] == "messages";
    provider_harness server(verbs::verbs_ops, settings);
    provider_harness client(verbs::verbs_ops, settings);
    if (server.status() != 0 || client.status() != 0) return 3;
    const auto& ops = server.ops();
    provider::socket_handle listener = 0, connected = 0;
    sockaddr_in a = ipv4(address, 0);
    socklen_t length = sizeof a;
    if (ops.socket(server.instance(), &listener) || ops.bind(server.instance(), listener, reinterpret_cast<sockaddr*>(&a), sizeof a) ||
        ops.listen(server.instance(), listener, 16) ||
        ops.getsockname(server.instance(), listener, reinterpret_cast<sockaddr*>(&a), &length))
        return 4;
    waitable_operation accept_op(operation_kind::accept), connect_op(operation_kind::connect);
    ops.accept(server.instance(), listener, &accept_op);
    ops.socket(client.instance(), &connected);
    std::memcpy(&connect_op.address, &a, sizeof a);
    connect_op.address_length = sizeof a;
    ops.connect(client.instance(), connected, &connect_op);
    if (!connect_op.wait(60s) || connect_op.result != 0 || !accept_op.wait(60s) || accept_op.result != 0) return 5;
    const provider::socket_handle accepted = accept_op.accepted;

    // Pending at removal: a receive at each end, and a second accept.
    uint8_t byte_a, byte_b;
    waitable_operation recv_a(operation_kind::recv), recv_b(operation_kind::recv), accept_more(operation_kind::accept);
    recv_a.buffer = &byte_a;
    recv_b.buffer = &byte_b;
    recv_a.length = recv_b.length = 1;
    provider::memory_handle region_a = 0, region_b = 0;
    if (settings.messages) {
        if (ops.register_memory(client.instance(), &byte_a, 1, provider::memory_local, &region_a) ||
            ops.register_memory(server.instance(), &byte_b, 1, provider::memory_local, &region_b))
            return 6;
        name_region(recv_a, region_a);
        name_region(recv_b, region_b);
    }
    ops.recv(client.instance(), connected, &recv_a);
    ops.recv(server.instance(), accepted, &recv_b);
    ops.accept(server.instance(), listener, &accept_more);
    report("ready", 1);

    const bool all_done = recv_a.wait(120s) && recv_b.wait(120s) && accept_more.wait(120s);
    report("completed", all_done ? 1 : 0);
    report("recv_client", text(recv_a.result));
    report("recv_server", text(recv_b.result));
    report("accept", text(accept_more.result));
    report("completions", recv_a.completed() + recv_b.completed() + accept_more.completed());

    // Later calls fail the same way; close still works.
    waitable_operation late(operation_kind::send);
    late.buffer = &byte_a;
    late.length = 1;
    if (settings.messages) name_region(late, region_a);
    report("later_send", text(ops.send(client.instance(), connected, &late)));
    waitable_operation late_recv(operation_kind::recv);
    late_recv.buffer = &byte_b;
    late_recv.length = 1;
    if (settings.messages) name_region(late_recv, region_b);
    report("later_recv", text(ops.recv(server.instance(), accepted, &late_recv)));
    waitable_operation late_accept(operation_kind::accept);
    report("later_accept", text(ops.accept(server.instance(), listener, &late_accept)));
    // Up-calls come after the completions in progress: wait for them, bounded.
    long down_events = 0;
    for (int i = 0; i < 200; ++i) {
        down_events = 0;
        for (const auto& e : server.events()) down_events += e.event == provider::connection_event::device_down;
        for (const auto& e : client.events()) down_events += e.event == provider::connection_event::device_down;
        if (down_events >= 2) break;
        std::this_thread::sleep_for(50ms);
    }
    report("device_down_events", down_events);
    report("close", ops.close(client.instance(), connected) | ops.close(server.instance(), accepted) |
                        ops.close(server.instance(), listener));
    if (settings.messages) // nothing is left on the device to keep the regions busy
        report("deregister", ops.deregister_memory(client.instance(), region_a) | ops.deregister_memory(server.instance(), region_b));
    return 0;
}

peer_role_registrar register_holder("device-holder", device_holder);

} // namespace

static void check_removal(const char* mode) {
    const std::string device = env("SANSOCK_TEST_REMOVABLE_DEVICE");
    const std::string address = env("SANSOCK_TEST_REMOVABLE_ADDR");
    const std::string netdev = env("SANSOCK_TEST_REMOVABLE_NETDEV");
    REQUIRE_MESSAGE(!device.empty(), "SANSOCK_TEST_REMOVABLE_* not set");

    // The device of a previous removal was added back: it may take a moment to be active.
    for (int i = 0; i < 100 && command_output("rdma link show " + device + "/1 2>&1").find("ACTIVE") == std::string::npos; ++i)
        std::this_thread::sleep_for(100ms);
    peer_process holder("device-holder", {address, mode});
    REQUIRE(holder.started());
    REQUIRE_MESSAGE(holder.wait_for("ready", 120s).has_value(), "the holder did not connect");

    // Bounded: a removal that waits for ever on a context nobody releases is the failure here.
    const std::string removal = command_output("timeout 90 rdma link delete " + device + " && echo removed");
    CHECK_MESSAGE(removal.find("removed") != std::string::npos, "rdma link delete did not finish");
    const int status = holder.wait_exit(150s);
    // Put the device back for whatever runs next.
    command_output("rdma link add " + device + " type rxe netdev " + netdev + " && echo added");

    const auto& r = holder.reports();
    auto value = [&](const char* key) {
        auto it = r.find(key);
        return it == r.end() ? std::string("(not reported)") : it->second;
    };
    CHECK(status == 0);
    CHECK(value("completed") == "1");
    CHECK(value("completions") == "3");
    const std::string down = strerrordesc_np(ENETDOWN);
    const std::string reset = strerrordesc_np(ECONNRESET);
    // Both ends of the connection are on the removed device, in two instances: each hears of
    // the removal from its own rdma_cm events, and the end that handles it first tears its
    // connection down, which the other end may see as the peer's reset before its own removal
    // event comes. So each end fails -ENETDOWN or -ECONNRESET, at least one -ENETDOWN, with one
    // device_down up-call for each end that failed -ENETDOWN. The listener has no peer.
    const std::string client_end = value("recv_client"), server_end = value("recv_server");
    CHECK((client_end == down || client_end == reset));
    CHECK((server_end == down || server_end == reset));
    CHECK((client_end == down || server_end == down));
    CHECK(value("accept") == down);
    CHECK((value("later_send") == down || value("later_send") == client_end));
    CHECK((value("later_recv") == down || value("later_recv") == server_end));
    CHECK(value("later_accept") == down);
    CHECK(value("device_down_events") == std::to_string((client_end == down) + (server_end == down)));
    CHECK(value("close") == "0");
    if (std::string(mode) == "messages") CHECK(value("deregister") == "0");
}

TEST_CASE("Removing the device completes pending operations with -ENETDOWN and later calls fail the same") {
    check_removal("stream");
}

TEST_CASE("Message mode: removing the device completes pending receives with -ENETDOWN and releases their regions") {
    check_removal("messages");
}

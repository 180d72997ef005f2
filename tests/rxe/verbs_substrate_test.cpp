// SPDX-License-Identifier: MIT
// The substrate the verbs provider relies on, proven on the device itself: two RC queue pairs
// connected through rdma_cm, in two processes, exchange 10,000 messages of mixed sizes with
// their contents checked; then one side moves its QP to the error state and every posted
// receive and send completes exactly once with IBV_WC_WR_FLUSH_ERR, the peer learns of the
// disconnect through an rdma_cm event, and every object is destroyed.
#include <doctest/doctest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <set>

#include "tests/rxe/rc_endpoint.hpp"
#include "tests/support/peer_process.hpp"
#include "tests/support/rdma_test_env.hpp"

using namespace std::chrono_literals;
using namespace sansock::test;

namespace {

constexpr uint32_t slot_size = 32 * 1024;
constexpr uint32_t client_window = 16;     // messages in flight from the client
constexpr uint32_t pending_at_error = 16;  // sends left pending when the QP goes to error

// Mixed sizes: the edges of the slot and of the MTU every tenth message, small and large
// pseudo-random sizes otherwise. Deterministic, so both ends agree without telling each other.
uint32_t message_size(uint32_t index) {
    static const uint32_t edges[] = {1, 2, 63, 64, 65, 1024, 4095, 4096, 4097, slot_size};
    if (index % 10 == 0) return edges[(index / 10) % 10];
    uint32_t x = index * 2654435761u;
    x ^= x >> 13;
    return 1 + x % (index % 3 == 0 ? slot_size : 600);
}

uint8_t message_byte(uint32_t index, uint32_t offset) {
    return static_cast<uint8_t>(index * 131 + offset * 7 + (offset >> 8) * 13);
}

void fill_message(uint8_t* buffer, uint32_t index) {
    for (uint32_t i = 0, n = message_size(index); i < n; ++i) buffer[i] = message_byte(index, i);
}

bool message_matches(const uint8_t* buffer, uint32_t length, uint32_t index) {
    if (length != message_size(index)) return false;
    for (uint32_t i = 0; i < length; ++i)
        if (buffer[i] != message_byte(index, i)) return false;
    return true;
}

bool is_receive(const ibv_wc& wc) { return wc.wr_id >= rc_endpoint::recv_wr_base; }

const char* event_name(int type) {
    return type < 0 ? strerrordesc_np(-type) : rdma_event_str(static_cast<rdma_cm_event_type>(type));
}

// Objects of this process still known to the kernel after teardown.
void report_leftovers() {
    for (const char* type : {"pd", "cq", "qp", "mr", "cm_id"})
        report(std::string("left_") + type, rdma_resource_count_of_pid(type, getpid()));
}

// The passive end: echoes every message back, and posts exactly as many receives as there are
// messages, so once the exchange is over it has none left and the client's later sends wait
// (receiver not ready, retried for ever) until the client's QP goes to error.
int echo_server(const std::vector<std::string>& args) {
    if (args.size() != 2) return 2;
    const std::string address = args[0];
    const uint32_t messages = static_cast<uint32_t>(std::stoul(args[1]));
    rc_endpoint endpoint({.slot_size = slot_size, .recv_slots = 64, .send_slots = 64});
    int port = endpoint.listen(address);
    if (port <= 0) {
        report("error", std::string("listen: ") + strerrordesc_np(-port));
        return 1;
    }
    report("port", port);
    std::fprintf(stderr, "server: listening on %s:%d (rdma_cm, RC)\n", address.c_str(), port);
    uint32_t posted = std::min<uint32_t>(messages, 64);
    if (int rc = endpoint.accept(posted)) {
        report("error", std::string("accept: ") + strerrordesc_np(-rc));
        return 1;
    }

    uint32_t received = 0, mismatches = 0, echoes_in_flight = 0;
    std::deque<std::pair<uint32_t, uint32_t>> to_echo; // (receive slot, length)
    std::vector<uint32_t> free_send_slots;
    for (uint32_t slot = 0; slot < 64; ++slot) free_send_slots.push_back(slot);
    std::vector<ibv_wc> completions;
    while (received < messages || echoes_in_flight > 0 || !to_echo.empty()) {
        while (!to_echo.empty() && !free_send_slots.empty()) {
            auto [recv_slot, length] = to_echo.front();
            to_echo.pop_front();
            uint32_t send_slot = free_send_slots.back();
            free_send_slots.pop_back();
            std::memcpy(endpoint.send_buffer(send_slot), endpoint.recv_buffer(recv_slot), length);
            if (int rc = endpoint.post_send(send_slot, length)) {
                report("error", std::string("post_send: ") + strerrordesc_np(-rc));
                return 1;
            }
            ++echoes_in_flight;
            if (posted < messages) {
                if (endpoint.post_receive(recv_slot) != 0) return 1;
                ++posted;
            }
        }
        completions.clear();
        int n = endpoint.wait_completions(completions, 30s);
        if (n <= 0) {
            report("error", n == 0 ? "timed out in the exchange" : strerrordesc_np(-n));
            return 1;
        }
        for (const ibv_wc& wc : completions) {
            if (wc.status != IBV_WC_SUCCESS) {
                report("error", std::string("completion: ") + ibv_wc_status_str(wc.status));
                return 1;
            }
            if (is_receive(wc)) {
                uint32_t slot = static_cast<uint32_t>(wc.wr_id - rc_endpoint::recv_wr_base);
                if (!message_matches(endpoint.recv_buffer(slot), wc.byte_len, received)) ++mismatches;
                ++received;
                to_echo.emplace_back(slot, wc.byte_len);
            } else {
                free_send_slots.push_back(static_cast<uint32_t>(wc.wr_id));
                --echoes_in_flight;
            }
        }
    }
    report("received", received);
    report("mismatches", mismatches);
    report("receives_posted_total", posted);

    // The client now moves its QP to error and disconnects: that must reach us as a CM event.
    int event = endpoint.next_cm_event(60s);
    report("cm_event", event_name(event));
    std::fprintf(stderr, "server: %u messages received and checked; then rdma_cm told us: %s\n",
                 received, event_name(event));
    if (event == RDMA_CM_EVENT_DISCONNECTED) endpoint.disconnect();
    report("teardown", endpoint.teardown());
    report_leftovers();
    return 0;
}

int flush_client(const std::vector<std::string>& args) {
    if (args.size() != 3) return 2;
    const std::string address = args[0];
    const uint16_t port = static_cast<uint16_t>(std::stoul(args[1]));
    const uint32_t messages = static_cast<uint32_t>(std::stoul(args[2]));
    const uint32_t recv_slots = 64;
    rc_endpoint endpoint({.slot_size = slot_size, .recv_slots = recv_slots,
                          .send_slots = client_window + pending_at_error});
    if (int rc = endpoint.connect(address, port, recv_slots)) {
        report("error", std::string("connect: ") + strerrordesc_np(-rc));
        return 1;
    }
    std::fprintf(stderr, "client: connected to %s:%u, QP %u\n", address.c_str(), port, endpoint.qp()->qp_num);
    const auto started = std::chrono::steady_clock::now();
    uint32_t sent = 0, echoed = 0, mismatches = 0;
    uint64_t bytes = 0;
    bool send_slot_free[client_window];
    std::fill(std::begin(send_slot_free), std::end(send_slot_free), true);
    std::vector<ibv_wc> completions;
    while (echoed < messages) {
        while (sent < messages && sent - echoed < client_window && send_slot_free[sent % client_window]) {
            uint32_t slot = sent % client_window;
            fill_message(endpoint.send_buffer(slot), sent);
            if (int rc = endpoint.post_send(slot, message_size(sent))) {
                report("error", std::string("post_send: ") + strerrordesc_np(-rc));
                return 1;
            }
            send_slot_free[slot] = false;
            bytes += message_size(sent);
            ++sent;
        }
        completions.clear();
        int n = endpoint.wait_completions(completions, 30s);
        if (n <= 0) {
            report("error", n == 0 ? "timed out in the exchange" : strerrordesc_np(-n));
            return 1;
        }
        for (const ibv_wc& wc : completions) {
            if (wc.status != IBV_WC_SUCCESS) {
                report("error", std::string("completion: ") + ibv_wc_status_str(wc.status));
                return 1;
            }
            if (is_receive(wc)) {
                uint32_t slot = static_cast<uint32_t>(wc.wr_id - rc_endpoint::recv_wr_base);
                if (!message_matches(endpoint.recv_buffer(slot), wc.byte_len, echoed)) ++mismatches;
                ++echoed;
                if (endpoint.post_receive(slot) != 0) return 1;
            } else {
                send_slot_free[wc.wr_id] = true;
            }
        }
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    report("echoed", echoed);
    report("mismatches", mismatches);
    std::fprintf(stderr, "client: %u messages (%.1f MiB each way) echoed and checked in %.2f s\n",
                 echoed, bytes / 1048576.0, seconds);

    // Every receive slot is posted now. Post sends that cannot complete: the server has no
    // receive left, so they sit in receiver-not-ready retry.
    std::set<uint64_t> posted_wr_ids;
    for (uint32_t slot = 0; slot < recv_slots; ++slot) posted_wr_ids.insert(rc_endpoint::recv_wr_base + slot);
    for (uint32_t i = 0; i < pending_at_error; ++i) {
        uint32_t slot = client_window + i;
        fill_message(endpoint.send_buffer(slot), i);
        if (int rc = endpoint.post_send(slot, 64)) {
            report("error", std::string("post_send before error: ") + strerrordesc_np(-rc));
            return 1;
        }
        posted_wr_ids.insert(slot);
    }
    completions.clear();
    endpoint.wait_completions(completions, 300ms);
    report("completions_before_error", static_cast<long>(completions.size()));

    if (int rc = endpoint.move_qp_to_error()) {
        report("error", std::string("modify to ERR: ") + strerrordesc_np(-rc));
        return 1;
    }
    const auto error_at = std::chrono::steady_clock::now();
    std::set<uint64_t> completed;
    long flushed_receives = 0, flushed_sends = 0, other_status = 0, duplicates = 0, unknown = 0;
    auto deadline = std::chrono::steady_clock::now() + 30s;
    while (completed.size() < posted_wr_ids.size() && std::chrono::steady_clock::now() < deadline) {
        completions.clear();
        if (endpoint.wait_completions(completions, 1s) < 0) break;
        for (const ibv_wc& wc : completions) {
            if (!posted_wr_ids.count(wc.wr_id)) { ++unknown; continue; }
            if (!completed.insert(wc.wr_id).second) { ++duplicates; continue; }
            if (wc.status != IBV_WC_WR_FLUSH_ERR) { ++other_status; continue; }
            ++(is_receive(wc) ? flushed_receives : flushed_sends);
        }
    }
    const double flush_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - error_at).count();
    // Anything more would be a second completion of some request.
    completions.clear();
    endpoint.wait_completions(completions, 300ms);
    for (const ibv_wc& wc : completions) ++(posted_wr_ids.count(wc.wr_id) ? duplicates : unknown);
    report("posted_receives", recv_slots);
    report("posted_sends", pending_at_error);
    report("flushed_receives", flushed_receives);
    report("flushed_sends", flushed_sends);
    report("other_status", other_status);
    report("duplicates", duplicates);
    report("unknown", unknown);
    std::fprintf(stderr, "client: QP to error; %ld receives and %ld sends flushed in %.2f ms\n",
                 flushed_receives, flushed_sends, flush_ms);

    if (int rc = endpoint.disconnect()) report("disconnect", strerrordesc_np(-rc));
    report("own_cm_event", event_name(endpoint.next_cm_event(30s)));
    report("teardown", endpoint.teardown());
    report_leftovers();
    return 0;
}

peer_role_registrar register_server("echo-server", echo_server);
peer_role_registrar register_client("flush-client", flush_client);

long as_number(const std::map<std::string, std::string>& reports, const std::string& key) {
    auto it = reports.find(key);
    return it == reports.end() ? -1 : std::stol(it->second);
}

std::string as_text(const std::map<std::string, std::string>& reports, const std::string& key) {
    auto it = reports.find(key);
    return it == reports.end() ? "(not reported)" : it->second;
}

} // namespace

TEST_CASE("RC queue pairs exchange 10,000 mixed-size messages, then a QP in error flushes every "
          "posted request exactly once and the peer sees the disconnect") {
    constexpr long messages = 10000;
    const auto before = rdma_resource_counts();
    REQUIRE_MESSAGE(!before.empty(), "`rdma resource show` gave nothing (iproute2 missing?)");
    const std::string address = test_address();
    INFO("address: " << address);

    peer_process server("echo-server", {address, std::to_string(messages)});
    REQUIRE(server.started());
    auto port = server.wait_for("port", 60s);
    REQUIRE_MESSAGE(port.has_value(), "the server reported no port: " << as_text(server.reports(), "error"));

    peer_process client("flush-client", {address, *port, std::to_string(messages)});
    REQUIRE(client.started());
    const int client_status = client.wait_exit(600s);
    const int server_status = server.wait_exit(120s);
    const auto& c = client.reports();
    const auto& s = server.reports();
    INFO("client error: " << as_text(c, "error") << "; server error: " << as_text(s, "error"));
    CHECK(client_status == 0);
    CHECK(server_status == 0);

    // The exchange, checked at both ends.
    CHECK(as_number(c, "echoed") == messages);
    CHECK(as_number(c, "mismatches") == 0);
    CHECK(as_number(s, "received") == messages);
    CHECK(as_number(s, "mismatches") == 0);

    // The flush: nothing completed while the sends were stuck, then each request exactly once.
    CHECK(as_number(c, "completions_before_error") == 0);
    CHECK(as_number(c, "flushed_receives") == as_number(c, "posted_receives"));
    CHECK(as_number(c, "flushed_sends") == as_number(c, "posted_sends"));
    CHECK(as_number(c, "flushed_sends") == pending_at_error);
    CHECK(as_number(c, "other_status") == 0);
    CHECK(as_number(c, "duplicates") == 0);
    CHECK(as_number(c, "unknown") == 0);

    // The peer learns of it through rdma_cm.
    CHECK(as_text(s, "cm_event") == rdma_event_str(RDMA_CM_EVENT_DISCONNECTED));
    CHECK(as_text(c, "own_cm_event") == rdma_event_str(RDMA_CM_EVENT_DISCONNECTED));

    // Every object destroyed explicitly by its owner, and none left on the device.
    for (const auto* side : {&c, &s}) {
        CHECK(as_number(*side, "teardown") == 0);
        for (const char* type : {"pd", "cq", "qp", "mr", "cm_id"})
            CHECK_MESSAGE(as_number(*side, std::string("left_") + type) == 0, type);
    }
    const auto after = rdma_resource_counts();
    auto show = [](const std::map<std::string, long>& counts) {
        std::string text;
        for (const auto& [type, count] : counts) text += type + " " + std::to_string(count) + " ";
        return text;
    };
    MESSAGE("rdma resource show, before: " << show(before) << "/ after: " << show(after));
    for (const auto& [type, count] : before) {
        INFO("resource " << type);
        CHECK(after.at(type) == count);
    }
}

// SPDX-License-Identifier: MIT
// twohost cases: the link cut (netem loss 100% both ways) and restored, short and long.
#include <doctest/doctest.h>

#include "tests/twohost/host_driver.hpp"

using namespace twohost;

namespace {

// Cuts the link (netem loss 100% on both guests' eth0, so neither direction carries anything)
// for `seconds`, then restores it; returns once both guests have restored it. The streams
// `a` and `b` must still be running once the link is cut (else the case tests nothing).
void cut_link_for(int seconds, remote_job& a, remote_job& b) {
    std::vector<std::pair<std::string, std::string>> cuts;
    static int counter = 0;
    for (const char* g : {"A", "B"}) {
        const std::string name = std::string("cut-") + g + "-" + std::to_string(getpid()) + "-" + std::to_string(++counter);
        const ctl_result r = guest_ctl(g, {"start", name, "tc qdisc add dev eth0 root netem loss 100% && echo cut=1 && sleep " +
                                                              std::to_string(seconds) + "; tc qdisc del dev eth0 root"});
        REQUIRE(r.status == 0);
        cuts.emplace_back(g, name);
    }
    for (const auto& [guest, job] : cuts) {
        INFO("cutting the link on host " << guest);
        CHECK(guest_ctl(guest, {"get", job, "cut", "30"}).status == 0);
    }
    for (remote_job* stream : {&a, &b}) {
        INFO("the stream had ended before the link was cut: " << stream->output());
        CHECK_FALSE(stream->get("recv_last", 0).has_value());
    }
    for (const auto& [guest, job] : cuts) {
        const ctl_result w = guest_ctl(guest, {"wait", job, std::to_string(seconds + 60)});
        INFO("cutting the link on host " << guest);
        CHECK(w.status == 0);
    }
}

} // namespace

TEST_CASE("partition-short: the link cut for 2 s mid-transfer and restored; the RC retries carry the streams "
          "over it and they arrive whole") {
    both_hosts_up();
    const uint64_t bytes = 8 << 20;
    const uint64_t pace = 512 * 1024; // 16 s for the whole stream: the cut comes at about 4 s
    stream_run r = run_streams(
        bytes, 60000, bytes / 4, 600, [](remote_job& a, remote_job& b) { cut_link_for(2, a, b); }, pace);
    check_intact(r, bytes);
}

TEST_CASE("partition-long: the link cut for 20 s mid-transfer; both ends report an error within the bound, "
          "neither a false end of stream nor wrong data") {
    both_hosts_up();
    const uint64_t bytes = 8 << 20;
    const uint64_t pace = 512 * 1024; // 16 s for the whole stream: the cut comes at about 4 s
    const long bound_ms = 10000; // SO_RCVTIMEO / SO_SNDTIMEO at both ends, shorter than the cut
    stream_run r = run_streams(
        bytes, bound_ms, bytes / 4, 600, [](remote_job& a, remote_job& b) { cut_link_for(20, a, b); }, pace);
    remote_job &a = *r.a, &b = *r.b;
    INFO(a.output() << "\n" << b.output());
    REQUIRE(r.status_a == 0);
    REQUIRE(r.status_b == 0);
    for (remote_job* side : {&a, &b}) {
        remote_job& s = *side;
        // Each end's blocked send and receive ended within the bound, by the time-out or a
        // reset; neither end has a complete stream, and what did arrive is right.
        check_ended_in_bound(s, "sent_rc", "sent_last_call_ms", bound_ms);
        check_ended_in_bound(s, "recv_last", "recv_last_call_ms", bound_ms);
        CHECK(s.number("recv_bytes") < static_cast<long>(bytes));
        CHECK(s["recv_first_bad"] == "-1");
        CHECK(s["destroy"] == "0");
        CHECK(s["after_destroy"] == "qp 0 cq 0 mr 0 cm_id 0 registered 0");
    }
    MESSAGE("A: send " << text(a.number("sent_rc")) << " (" << a["sent_last_call_ms"] << " ms), receive "
                       << text(a.number("recv_last")) << " (" << a["recv_last_call_ms"] << " ms); B: send "
                       << text(b.number("sent_rc")) << " (" << b["sent_last_call_ms"] << " ms), receive "
                       << text(b.number("recv_last")) << " (" << b["recv_last_call_ms"] << " ms)");
}


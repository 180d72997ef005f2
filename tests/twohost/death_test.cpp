// SPDX-License-Identifier: MIT
// twohost cases: host B killed outright (its QEMU) mid-transfer, idle and during each close
// mode; every call on host A returns within its bound and A lets everything go.
#include <doctest/doctest.h>

#include "tests/twohost/host_driver.hpp"

using namespace twohost;

namespace {

// Host B dies: its QEMU is killed (nothing more leaves it), and it is booted again by the next
// case's both_hosts_up.
void kill_host_b(remote_job& doomed) {
    const ctl_result r = guest_ctl("B", {"kill"});
    REQUIRE(r.status == 0);
    REQUIRE(guest_ctl("B", {"alive"}).status != 0);
    doomed.host_died();
}

// Kills host B once A reports `ready_key`, tells A (SIGUSR1: B is dead) and waits for A's role
// to end.
void kill_b_then_tell_a(remote_job& a, remote_job& b, const std::string& ready_key) {
    a.need(ready_key, 200);
    kill_host_b(b);
    a.signal("USR1");
    const int status = a.wait(300);
    INFO(a.output());
    REQUIRE(status == 0);
    CHECK(a["told_dead"] == "1");
}

constexpr long call_ms = 10000; // SO_RCVTIMEO / SO_SNDTIMEO on the survivor
const std::string timed_out = std::to_string(SANSOCK_E_WOULDBLOCK);

// What every host-death case checks on the survivor at the end: it holds on the device what it
// held before its connections (the listener's cm_id), registered_bytes is back to its value
// then, and the context goes at once.
void check_survivor_recovered(remote_job& a) {
    CHECK(a["back_ms"] != "-1"); // within 120 s
    CHECK(a["back"] == a["baseline"]);
    CHECK(a["destroy"] == "0");
    CHECK(a.number("destroy_ms") < 10000);
    CHECK(a["after_destroy"] == "qp 0 cq 0 mr 0 cm_id 0 registered 0");
}

std::string transport_note(remote_job& a);

// Host B was really gone: something A sent after the death was retried by the RC transport
// (a quiet but living peer would have acknowledged it).
void check_host_b_was_gone(remote_job& a) {
    INFO(transport_note(a));
    CHECK(a.number("transport_retried") >= 1);
}

std::string transport_note(remote_job& a) {
    return "rxe0 on A retried " + a["transport_retried"] + " time-outs, " + a["transport_retries_exceeded"] +
           " requests ran out of retries";
}

} // namespace

TEST_CASE("death-transfer: host B dies mid-transfer both ways; host A's calls return within their bounds") {
    both_hosts_up();
    remote_job a("A", "survivor", {"case=transfer", "call_ms=" + std::to_string(call_ms), "graceful_ms=5000"});
    remote_job b("B", "doomed", {"port=" + a.need("port", 120), "connections=2", "traffic=1"});
    REQUIRE(a.need("flowing", 200) == "1");
    a.need("mark", 60);
    kill_host_b(b);
    const int status = a.wait(300);
    INFO(a.output());
    REQUIRE(status == 0);
    // The blocked send (data in flight, unacknowledged) and the blocked receive.
    check_ended_in_bound(a, "out_rc", "out_last_call_ms", call_ms);
    check_ended_in_bound(a, "in_last", "in_last_call_ms", call_ms);
    CHECK(a["in_first_bad"] == "-1");
    // A further send and receive on each: still bounded.
    check_ended_in_bound(a, "out_probe_recv", "out_probe_recv_ms", call_ms);
    check_ended_in_bound(a, "in_probe_recv", "in_probe_recv_ms", call_ms);
    check_survivor_recovered(a);
    check_host_b_was_gone(a);
    MESSAGE("A's send returned " << text(a.number("out_rc")) << " after " << a["out_last_call_ms"]
                                 << " ms, its receive " << text(a.number("in_last")) << " after "
                                 << a["in_last_call_ms"] << " ms (bounds " << call_ms << " ms); "
                                 << transport_note(a) << "; resources back " << a["back_ms"] << " ms after the closes");
}

TEST_CASE("death-idle: host B dies while the connection is idle; host A's timed receive returns, and so do a "
          "send and a receive after it") {
    both_hosts_up();
    const long idle_ms = 8000;
    remote_job a("A", "survivor", {"case=idle", "wait=rcvtimeo", "idle_ms=" + std::to_string(idle_ms),
                                   "call_ms=" + std::to_string(call_ms), "graceful_ms=5000"});
    remote_job b("B", "doomed", {"port=" + a.need("port", 120), "connections=1"});
    a.need("idle", 120);
    kill_host_b(b);
    const int status = a.wait(300);
    INFO(a.output());
    REQUIRE(status == 0);
    // Nothing is in flight: nothing tells A, and SO_RCVTIMEO ends the receive.
    CHECK(a["idle_recv"] == timed_out);
    CHECK(a.number("idle_recv_ms") >= idle_ms - 1000);
    CHECK(a.number("idle_recv_ms") <= idle_ms + slack_ms);
    // A byte sent then (queued: 1) and a receive: bounded too.
    CHECK(a["probe_send"] == "1");
    check_ended_in_bound(a, "probe_recv", "probe_recv_ms", call_ms);
    check_survivor_recovered(a);
    check_host_b_was_gone(a);
    MESSAGE("the idle receive returned " << text(a.number("idle_recv")) << " after " << a["idle_recv_ms"]
                                         << " ms; after a byte sent, the receive returned "
                                         << text(a.number("probe_recv")) << " after " << a["probe_recv_ms"]
                                         << " ms; " << transport_note(a));
}

TEST_CASE("death-close: host B dies during each close mode on host A; every close returns within its bound and "
          "everything is let go") {
    both_hosts_up();
    const long graceful_ms = 8000, linger_s = 10;
    remote_job a("A", "survivor", {"case=close", "graceful_ms=" + std::to_string(graceful_ms),
                                   "linger_s=" + std::to_string(linger_s), "call_ms=" + std::to_string(call_ms)});
    remote_job b("B", "doomed", {"port=" + a.need("port", 120), "connections=4"});
    kill_b_then_tell_a(a, b, "closing");
    INFO(a.output());
    // 1: SO_DONTLINGER with data queued: 0 at once; the graceful close goes on in the
    // background until the graceful time-out ends it hard.
    CHECK(a["close1"] == "0");
    CHECK(a.number("close1_us") < 1000000);
    // 2: SO_LINGER {1, 10}, blocking, data unacknowledged: -ETIMEDOUT after the interval.
    CHECK(a["close2"] == std::to_string(SANSOCK_E_TIMED_OUT));
    CHECK(a.number("close2_ms") >= linger_s * 1000 - 1000);
    CHECK(a.number("close2_ms") <= linger_s * 1000 + slack_ms);
    // 3: SO_LINGER {1, 0} after the death: 0 at once.
    CHECK(a["close3"] == "0");
    CHECK(a.number("close3_us") < 1000000);
    // 4: SO_DONTLINGER on the idle connection after the death: 0 at once.
    CHECK(a["close4"] == "0");
    CHECK(a.number("close4_us") < 1000000);
    // Everything let go once the graceful time-out has ended 1 and 4.
    check_survivor_recovered(a);
    CHECK(a.number("back_ms") <= graceful_ms + slack_ms);
    check_host_b_was_gone(a);
    MESSAGE("the lingering close returned " << text(a.number("close2")) << " after " << a["close2_ms"]
                                            << " ms; resources back " << a["back_ms"]
                                            << " ms after the last close; resets sent by reason: " << a["resets_sent"]
                                            << "; " << transport_note(a));
}

// ---- partition -----------------------------------------------------------------------------------


TEST_CASE("death-keepalive: host B dies; on host A a receive, a send and a poll without time-outs and a graceful "
          "background close all end by keepalive within idle + interval x count (+10%)") {
    both_hosts_up();
    const long idle_s = 5, interval_s = 2, count = 3;
    const long bound_ms = (idle_s + interval_s * count) * 1000 * 11 / 10;
    const long earliest_ms = interval_s * count * 1000 - 1000;
    remote_job a("A", "survivor",
                 {"case=keepalive", "graceful_ms=600000", "ka_idle_s=" + std::to_string(idle_s),
                  "ka_interval_s=" + std::to_string(interval_s), "ka_count=" + std::to_string(count)});
    remote_job b("B", "doomed", {"port=" + a.need("port", 120), "connections=4"});
    kill_b_then_tell_a(a, b, "ready");
    INFO(a.output());
    // The keepalive resets all four connections after B's death (ms counted from A being told,
    // which is after the kill) and within the bound: B answered probes until it died, so A's
    // silence began at most idle (+ a round trip) before. The background close was ended by
    // the keepalive too, not by the graceful time-out (600 s). Nothing else held the context
    // meanwhile (its lock was never waited for long).
    CHECK(a["ka_close"] == "0");
    CHECK(a["keepalive_resets"] == "4");
    CHECK(a.number("keepalive_resets_ms") <= bound_ms);
    CHECK(a.number("longest_stats_ms") < 500);
    // Each wait ends with the keepalive's -ETIMEDOUT, no wait before count intervals have
    // passed, and within the bound plus what the kernel took to destroy a closed connection's
    // QP: the call that leads progress may be the one that waits for it (rxe holds a QP whose
    // peer host is gone for about a second).
    const long wait_bound_ms = bound_ms + a.number("longest_destroy_ms");
    const std::string etimedout = std::to_string(SANSOCK_E_TIMED_OUT);
    for (const char* call : {"ka_recv", "ka_send"}) {
        INFO(call << " = " << text(a.number(call)) << " after " << a[std::string(call) + "_ms"] << " ms");
        CHECK(a[call] == etimedout);
        CHECK(a.number(std::string(call) + "_ms") <= wait_bound_ms);
        CHECK(a.number(std::string(call) + "_ms") >= earliest_ms);
    }
    // The poll returns its socket ready with the error.
    CHECK(a["ka_poll"] == "1");
    CHECK((a.number("ka_poll_revents") & SANSOCK_POLLERR) != 0);
    CHECK(a.number("ka_poll_ms") <= wait_bound_ms);
    CHECK(a.number("ka_poll_ms") >= earliest_ms);
    CHECK(a["graceful_timed_out"] == "0");
    check_survivor_recovered(a);
    MESSAGE("keepalive " << idle_s << " s + " << count << " x " << interval_s << " s (bound with 10%: " << bound_ms
                         << " ms): receive " << text(a.number("ka_recv")) << " after " << a["ka_recv_ms"]
                         << " ms, send " << text(a.number("ka_send")) << " after " << a["ka_send_ms"]
                         << " ms, poll after " << a["ka_poll_ms"] << " ms (revents " << a["ka_poll_revents"]
                         << "), the keepalive resets after " << a["keepalive_reset_times_ms"]
                         << " ms (the context's lock waited for at most " << a["longest_stats_ms"]
                         << " ms; the longest destroy of a closed connection took " << a["longest_destroy_ms"] << " ms); "
                         << transport_note(a));
}

// SPDX-License-Identifier: MIT
// The guest side of the twohost suite: the roles the drivers start in host A and host B. No
// doctest here; every outcome is reported as key=value, the driver judges.
#include <netinet/tcp.h>

#include "tests/twohost/role_support.hpp"

using namespace twohost;

namespace {

// ---- the roles -------------------------------------------------------------------------------

// Both directions at once: `bytes` of stream A->B and B->A, each checked byte by byte with a
// running checksum, then SHUT_WR after the last byte, end of stream, a graceful close.
// side=server (host A: listens, reports port=) or side=client port=N (host B). call_ms bounds
// every call (SO_RCVTIMEO/SO_SNDTIMEO); mark=N reports mark=1 once N bytes have arrived;
// pace=N sends at most N bytes a second (so that a fault the driver injects after the mark
// meets the streams still running, however fast the machine is).
int role_stream(const role_args& a) {
    watchdog guard("the stream role", std::chrono::seconds(a.num("limit_s", 1200)));
    const bool server = a.str("side") == "server";
    const uint64_t bytes = static_cast<uint64_t>(a.num("bytes"));
    const long call_ms = a.num("call_ms", 60000);
    endpoint e;
    if (server) {
        e.listen();
        e.announce();
    }
    const sansock_socket_t s = server ? e.accept(call_ms) : e.connect(a.num("port"), call_ms);
    report("connected", 1);
    const auto start = steady_clock::now();
    sent out;
    std::thread sender([&] {
        out = send_stream(s, server ? seed_a : seed_b, bytes, static_cast<uint64_t>(a.num("pace", 0)));
        if (out.rc == 0) out.rc = sansock_shutdown(s, SHUT_WR);
    });
    const received in = receive_stream(s, server ? seed_b : seed_a, static_cast<uint64_t>(a.num("mark", 0)));
    sender.join();
    const double seconds = seconds_since(start);
    report_sent("sent_", out);
    report_received("recv_", in);
    report("seconds", std::to_string(seconds));
    report("send_ended_ms", static_cast<long>(std::chrono::duration<double>(out.ended - start).count() * 1000));
    report("recv_ended_ms", static_cast<long>(std::chrono::duration<double>(in.ended - start).count() * 1000));
    std::fprintf(stderr, "stream (%s): sent %.1f MiB (%s), received %.1f MiB (%s) in %.1f s: %.2f MB/s each way\n",
                 server ? "A" : "B", out.bytes / 1048576.0, text(out.rc).c_str(), in.bytes / 1048576.0,
                 in.last == 0 ? "end of stream" : text(in.last).c_str(), seconds,
                 std::min(out.bytes, in.bytes) / 1e6 / seconds);
    report("close", sansock_close(s));
    e.wait_resources(resources{0, 0, 0, server ? 1 : 0, 0}, "closed", 30s);
    e.destroy();
    return 0;
}

// Reads stream A (after pause_ms), checking it, to the end; then closes.
int role_sink(const role_args& a) {
    watchdog guard("the sink role", 10min);
    endpoint e;
    const sansock_socket_t s = e.connect(a.num("port"), a.num("call_ms", 60000));
    report("connected", 1);
    std::this_thread::sleep_for(milliseconds(a.num("pause_ms", 0)));
    const received in = receive_stream(s, seed_a);
    report_received("", in);
    report("close", sansock_close(s));
    e.wait_resources(resources{}, "closed", 30s);
    e.destroy();
    return 0;
}

// Host A's side of each close mode across hosts (mode=dontlinger|linger0|linger).
//   dontlinger: sends `bytes` of stream A, closes at once (SO_DONTLINGER).
//   linger0: waits for B's ready byte, then hold_ms, then closes with SO_LINGER {1, 0}; stays
//            alive for hold_ms more, so B's reset comes from the close.
//   linger: queues stream A until B's window and our send buffer are full (B is not reading
//           yet), then closes with SO_LINGER {1, linger_s}, blocking.
int role_closer(const role_args& a) {
    watchdog guard("the closer role", 10min);
    const std::string mode = a.str("mode");
    endpoint e;
    e.listen();
    // Measured before B can connect (it starts once it has the port).
    const resources baseline = resources_now(e.ctx);
    report("baseline", baseline.describe());
    e.announce();
    const sansock_socket_t s = e.accept(60000);
    report("connected", 1);
    if (mode == "dontlinger") {
        const sent out = send_stream(s, seed_a, static_cast<uint64_t>(a.num("bytes")));
        report_sent("sent_", out);
    } else if (mode == "linger0") {
        recv_byte(s);
        std::this_thread::sleep_for(milliseconds(a.num("hold_ms", 2000)));
        must(set_linger(s, 1, 0), "SO_LINGER {1, 0}");
    } else if (mode == "linger") {
        report("queued", std::to_string(fill_until_full(s, seed_a)));
        must(set_linger(s, 1, static_cast<int>(a.num("linger_s", 60))), "SO_LINGER {1, n}");
    } else {
        throw role_failure{"unknown mode " + mode};
    }
    const auto closing = steady_clock::now();
    const int rc = sansock_close(s);
    report("close_us", static_cast<long>(seconds_since(closing) * 1e6));
    report("close", rc);
    e.wait_resources(baseline, "closed", 60s);
    const struct sansock_context_stats st = stats_of(e.ctx);
    report("graceful_completed", static_cast<long>(st.graceful_completed));
    report("resets_sent", static_cast<long>(st.resets_sent[SANSOCK_RESET_ABORTIVE_CLOSE] +
                                            st.resets_sent[SANSOCK_RESET_LINGER_TIMEOUT] +
                                            st.resets_sent[SANSOCK_RESET_GRACEFUL_TIMEOUT]));
    if (mode == "linger0") std::this_thread::sleep_for(milliseconds(a.num("hold_ms", 2000)));
    e.destroy();
    return 0;
}

// Host B's side of the LINGER 0 case: sends the ready byte and waits in a receive; reports what
// it returned and how long it waited, then what a send and a receive return after it.
int role_reset_watcher(const role_args& a) {
    watchdog guard("the reset-watcher role", 5min);
    endpoint e;
    const sansock_socket_t s = e.connect(a.num("port"), a.num("call_ms", 60000));
    send_byte(s, 'R');
    const auto receiving = steady_clock::now();
    uint8_t b = 0;
    const ssize_t r = sansock_recv(s, &b, 1, 0);
    report("recv_ms", ms_since(receiving));
    report("recv", static_cast<long>(r));
    report("send_after", static_cast<long>(sansock_send(s, &b, 1, 0)));
    report("recv_after", static_cast<long>(sansock_recv(s, &b, 1, 0)));
    report("close", sansock_close(s));
    e.wait_resources(resources{}, "closed", 30s);
    e.destroy();
    return 0;
}

// Host B in the host-death cases: connections=N connections to A. Each sends the ready byte
// 'R'; then with traffic=1 the first is read to nowhere and the second carries stream B to A
// forever, else nothing is read or sent. Runs until its host is killed.
int role_doomed(const role_args& a) {
    endpoint e;
    std::vector<sansock_socket_t> sockets;
    for (long i = 0; i < a.num("connections", 1); ++i) {
        sockets.push_back(e.connect(a.num("port"), 600000));
        send_byte(sockets.back(), 'R');
    }
    if (a.num("traffic", 0) != 0 && sockets.size() >= 2) {
        std::thread([s = sockets[0]] { receive_stream(s, seed_a); }).detach();
        std::thread([s = sockets[1]] { send_stream(s, seed_b, UINT64_MAX); }).detach();
    }
    report("connected", static_cast<long>(sockets.size()));
    sleep_forever();
}

// Host A, the survivor, in the host-death cases (case=transfer|idle|close). Every call it makes
// after host B dies is bounded: by SO_RCVTIMEO/SO_SNDTIMEO (call_ms), the linger interval, or
// the context's graceful time-out; each reports what it returned and how long it took. At the
// end the process must hold on the device what it held before its connections (the listener's
// cm_id), and registered_bytes must be back to its value then.
//
//   transfer: two connections, stream A->B on the first and B->A on the second, both moving
//     when it reports flowing=1 (B is killed then); each direction's failing call, then a
//     probe (one byte sent, a receive) on each.
//   idle: one connection, quiet; reports idle=1 and waits in a receive (the wait named by
//     wait=, see idle_waits), which host B's death ends; then the probe.
//   close: four connections, B reading nothing. 1: queued full, closed SO_DONTLINGER (the
//     graceful close goes on in the background); 2: queued full, closed SO_LINGER {1,
//     linger_s}, blocking, on its own thread. It reports closing=1 with both under way (B is
//     killed then), and waits for SIGUSR1 (the driver's word that B is dead): 3 is closed with
//     SO_LINGER {1, 0}, 4 (idle) with SO_DONTLINGER.
//   keepalive: see survive_keepalive.
// case=keepalive: four connections, keepalive on each (ka_idle_s, ka_interval_s, ka_count) and
// no time-out on any call. Before B's death: 1 stays idle, 2 is queued full (B reads nothing),
// 3 idle, 4 queued full; it reports ready=1 and waits for SIGUSR1 (B is dead). Then at once:
// a receive on 1, a send on 2, a poll without a time-out on 3, and 4 closed SO_DONTLINGER (its
// graceful close goes on in the background, the context's graceful time-out far away). Only
// the keepalive can end them: each reports what it returned and when (ms from SIGUSR1), and
// keepalive_resets_ms is when the fourth keepalive reset had been sent.
void survive_keepalive(endpoint& e, const std::vector<sansock_socket_t>& s, const sigset_t& usr1, const role_args& a) {
    const int idle = static_cast<int>(a.num("ka_idle_s")), interval = static_cast<int>(a.num("ka_interval_s")),
              count = static_cast<int>(a.num("ka_count"));
    for (auto c : s) {
        must(set_int_option(c, SO_KEEPALIVE, 1), "SO_KEEPALIVE");
        must(sansock_setsockopt(c, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle), "TCP_KEEPIDLE");
        must(sansock_setsockopt(c, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval), "TCP_KEEPINTVL");
        must(sansock_setsockopt(c, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count), "TCP_KEEPCNT");
        set_call_timeouts(c, 0); // no time-out: nothing but the keepalive ends the waits below
    }
    report("queued2", std::to_string(fill_until_full(s[1], seed_a)));
    report("queued4", std::to_string(fill_until_full(s[3], seed_a)));
    report("ready", 1);
    timespec limit{180, 0};
    report("told_dead", sigtimedwait(&usr1, nullptr, &limit) == SIGUSR1 ? 1 : 0);
    const auto told = steady_clock::now();
    std::thread receiving([&] {
        uint8_t b = 0;
        const ssize_t r = sansock_recv(s[0], &b, 1, 0);
        report("ka_recv_ms", ms_since(told));
        report("ka_recv", static_cast<long>(r));
    });
    std::thread sending([&] {
        std::vector<uint8_t> chunk(64 * 1024, 'S');
        const ssize_t r = sansock_send(s[1], chunk.data(), chunk.size(), 0);
        report("ka_send_ms", ms_since(told));
        report("ka_send", static_cast<long>(r));
    });
    std::thread polling([&] {
        sansock_pollfd p{s[2], SANSOCK_POLLIN, 0};
        const int r = sansock_poll(&p, 1, -1);
        report("ka_poll_ms", ms_since(told));
        report("ka_poll", r);
        report("ka_poll_revents", p.revents);
    });
    report("ka_close", sansock_close(s[3]));
    // Sampled every 20 ms: when each keepalive reset was counted, and the longest a stats call
    // (which takes the context's lock) waited, so a late reset can be told from a stalled context.
    uint64_t resets = 0;
    long longest_stats_ms = 0;
    std::string reset_times;
    while (resets < 4 && ms_since(told) < 120000) {
        std::this_thread::sleep_for(20ms);
        const auto asked = steady_clock::now();
        const uint64_t now_resets = stats_of(e.ctx).resets_sent[SANSOCK_RESET_KEEPALIVE_TIMEOUT];
        longest_stats_ms = std::max(longest_stats_ms, ms_since(asked));
        for (; resets < now_resets; ++resets) reset_times += (reset_times.empty() ? "" : " ") + std::to_string(ms_since(told));
    }
    report("keepalive_resets", static_cast<long>(resets));
    report("keepalive_resets_ms", ms_since(told));
    report("keepalive_reset_times_ms", reset_times);
    report("longest_stats_ms", longest_stats_ms);
    receiving.join();
    sending.join();
    polling.join();
    report("longest_destroy_ms", e.longest_destroy_ms());
    for (size_t i = 0; i < 3; ++i) sansock_close(s[i]);
}

int role_survivor(const role_args& a) {
    watchdog guard("the survivor role", 10min);
    // SIGUSR1 is taken with sigtimedwait: block it before the context starts its threads.
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &usr1, nullptr);

    const std::string test = a.str("case");
    const long call_ms = a.num("call_ms", 20000);
    endpoint e(static_cast<uint32_t>(a.num("graceful_ms", 0)));
    e.listen();
    // Measured before B can connect (it starts once it has the port).
    const resources baseline = resources_now(e.ctx);
    report("baseline", baseline.describe());
    transport_retries retries_before = transport_retries_now();
    e.announce();
    const long count = test == "transfer" ? 2 : test == "idle" ? 1 : 4;
    std::vector<sansock_socket_t> s;
    for (long i = 0; i < count; ++i) s.push_back(e.accept(call_ms));
    for (auto c : s) recv_byte(c);

    // After B's death: a byte sent and a receive, on a connection that has not failed yet: the
    // send gives the RC transport something to retry, so the connection must fail.
    auto probe = [&](const std::string& prefix, sansock_socket_t c) {
        uint8_t b = 'P';
        report(prefix + "probe_send", static_cast<long>(sansock_send(c, &b, 1, 0)));
        const auto receiving = steady_clock::now();
        report(prefix + "probe_recv", static_cast<long>(sansock_recv(c, &b, 1, 0)));
        report(prefix + "probe_recv_ms", ms_since(receiving));
    };

    if (test == "transfer") {
        sent out;
        received in;
        std::atomic<uint64_t> moved_out{0};
        std::thread sender([&] {
            // Counted in pieces so that `flowing` can be told.
            std::vector<uint8_t> buffer(chunk_size);
            for (;;) {
                fill_stream(buffer.data(), out.bytes, buffer.size(), seed_a);
                const auto call = steady_clock::now();
                const ssize_t r = sansock_send(s[0], buffer.data(), buffer.size(), 0);
                if (r <= 0) {
                    out.rc = r < 0 ? r : -EIO;
                    out.last_call_s = seconds_since(call);
                    break;
                }
                out.fnv = fnv1a(out.fnv, buffer.data(), static_cast<size_t>(r));
                out.bytes += static_cast<uint64_t>(r);
                moved_out = out.bytes;
            }
        });
        std::thread receiver([&] { in = receive_stream(s[1], seed_b, 1 << 20); });
        // receive_stream reports mark=1 after 1 MiB; flowing once 1 MiB has gone out as well.
        const auto start = steady_clock::now();
        while (moved_out < (1u << 20) && seconds_since(start) < 180) std::this_thread::sleep_for(50ms);
        report("flowing", moved_out >= (1u << 20) ? 1 : 0);
        sender.join();
        receiver.join();
        report_sent("out_", out);
        report_received("in_", in);
        std::thread probing([&] { probe("out_", s[0]); });
        probe("in_", s[1]);
        probing.join();
    } else if (test == "idle") {
        const std::string wait = a.str("wait", "rcvtimeo");
        report("idle", 1);
        uint8_t b = 0;
        const auto receiving = steady_clock::now();
        ssize_t r = 0;
        // The waits an idle connection can end by, once its peer's host is dead: with
        // SO_RCVTIMEO (wait=rcvtimeo) the receive returns -EWOULDBLOCK after idle_ms. (Waits
        // without a time-out, which only a keepalive ends, are case=keepalive.)
        if (wait == "rcvtimeo") {
            must(set_timeout(s[0], SO_RCVTIMEO, a.num("idle_ms", 15000)), "SO_RCVTIMEO");
            r = sansock_recv(s[0], &b, 1, 0);
        } else {
            throw role_failure{"unknown wait " + wait};
        }
        report("idle_recv_ms", ms_since(receiving));
        report("idle_recv", static_cast<long>(r));
        must(set_timeout(s[0], SO_RCVTIMEO, call_ms), "SO_RCVTIMEO");
        probe("", s[0]);
    } else if (test == "keepalive") {
        survive_keepalive(e, s, usr1, a);
    } else if (test == "close") {
        report("queued1", std::to_string(fill_until_full(s[0], seed_a)));
        report("queued2", std::to_string(fill_until_full(s[1], seed_a)));
        auto closing = steady_clock::now();
        report("close1", sansock_close(s[0]));
        report("close1_us", static_cast<long>(seconds_since(closing) * 1e6));
        must(set_linger(s[1], 1, static_cast<int>(a.num("linger_s", 10))), "SO_LINGER {1, n}");
        std::thread lingering([&] {
            const auto started = steady_clock::now();
            const int rc = sansock_close(s[1]);
            report("close2_ms", ms_since(started));
            report("close2", rc);
        });
        std::this_thread::sleep_for(300ms);
        report("closing", 1);
        timespec limit{180, 0};
        const int got = sigtimedwait(&usr1, nullptr, &limit);
        report("told_dead", got == SIGUSR1 ? 1 : 0);
        // Retries count from here: filling the buffers before may have met a slow ACK.
        retries_before = transport_retries_now();
        must(set_linger(s[2], 1, 0), "SO_LINGER {1, 0}");
        closing = steady_clock::now();
        report("close3", sansock_close(s[2]));
        report("close3_us", static_cast<long>(seconds_since(closing) * 1e6));
        closing = steady_clock::now();
        report("close4", sansock_close(s[3]));
        report("close4_us", static_cast<long>(seconds_since(closing) * 1e6));
        lingering.join();
    } else {
        throw role_failure{"unknown case " + test};
    }
    if (test != "close" && test != "keepalive") {
        const auto closing = steady_clock::now();
        for (auto c : s) sansock_close(c);
        report("close_ms", ms_since(closing));
    }
    e.wait_resources(baseline, "back", 120s);
    const transport_retries retries_after = transport_retries_now();
    report("transport_retried", retries_after.retried - retries_before.retried);
    report("transport_retries_exceeded", retries_after.exceeded - retries_before.exceeded);
    const struct sansock_context_stats st = stats_of(e.ctx);
    std::ostringstream resets;
    for (int i = 0; i < SANSOCK_RESET_REASONS; ++i) resets << (i ? " " : "") << st.resets_sent[i];
    report("resets_sent", resets.str());
    report("graceful_timed_out", static_cast<long>(st.graceful_timed_out));
    e.destroy();
    return 0;
}

// Every role reports a failed set-up step as `error=` and exits 1.
template <int (*Role)(const role_args&)>
int guarded(const std::vector<std::string>& args) {
    try {
        return Role(role_args(args));
    } catch (const role_failure& f) {
        report("error", f.what);
        return 1;
    }
}

peer_role_registrar register_stream("stream", guarded<role_stream>);
peer_role_registrar register_sink("sink", guarded<role_sink>);
peer_role_registrar register_closer("closer", guarded<role_closer>);
peer_role_registrar register_reset_watcher("reset-watcher", guarded<role_reset_watcher>);
peer_role_registrar register_doomed("doomed", guarded<role_doomed>);
peer_role_registrar register_survivor("survivor", guarded<role_survivor>);

} // namespace

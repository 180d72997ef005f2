// SPDX-License-Identifier: MIT
// sansock-bench: the job protocol between the two halves of a measurement: the measuring
// half's and the peer half's side of it, in a thread, a child process or over TCP.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "bench/runner.hpp"
#include "tests/support/peer_process.hpp"

namespace sansock::bench {
namespace {

constexpr int ready_wait_ms = 60000;  // the peer half's set-up (a process start on the server)
constexpr int result_wait_ms = 60000; // the peer half's end after the measuring half's

// ---- the job protocol (docs/benchmarks.md, "How to run it") ---------------------------------
// measuring half: job SYSTEM SCENARIO PARAM ITERATIONS WARMUP STREAM-BYTES
// peer half:      ready ADDRESS PORT | fail TEXT
//                 ... mark NS, host/opened/closed (service_host_close) ...
// measuring half: end RC
// peer half:      [cpu NS]      its CPU time over the counted samples (older servers: none;
//                               older clients skip it as they skip any line before result)
//                 result RC TEXT

// The peer half's result line, taking its cpu line on the way (two-host mode only: in one
// process, the measuring half's process_cpu_ns already counts the peer half's thread).
int expect_result(control& ctl, std::string& rest, measurement& m) {
    const uint64_t end = now_ns() + uint64_t(result_wait_ms) * 1'000'000;
    for (;;) {
        const uint64_t now = now_ns();
        if (now >= end) return -ETIMEDOUT;
        std::string line;
        if (int rc = ctl.receive(line, int((end - now) / 1'000'000) + 1)) return rc;
        const std::string first = line.substr(0, line.find(' '));
        rest = line.size() > first.size() ? line.substr(first.size() + 1) : std::string();
        if (first == "result") return 0;
        if (first == "fail") return -EPROTO;
        if (first == "cpu" && !ctl.same_process()) m.peer_cpu_ns = std::strtoll(rest.c_str(), nullptr, 10);
    }
}

} // namespace

// The measuring half of one measurement against the peer half at the other end of `ctl`.
int client_job(control& ctl, const system& sys, const request& r, measurement& m, std::string& why) {
    std::ostringstream job;
    job << "job " << sys.name << " " << scenario_name(r.what) << " " << r.param << " " << r.iterations << " "
        << r.warmup << " " << r.stream_bytes;
    if (int rc = ctl.send(job.str())) {
        why = std::string("control channel: ") + strerror(-rc);
        return rc;
    }
    std::string rest;
    if (int rc = ctl.expect("ready", rest, ready_wait_ms)) {
        why = "peer half: " + (rc == -EPROTO ? rest : std::string("no ready: ") + strerror(-rc));
        return rc == -EPROTO ? -EIO : rc;
    }
    std::istringstream ready(rest);
    std::string ip;
    unsigned port = 0;
    ready >> ip >> port;
    if (!parse_address(ip, static_cast<uint16_t>(port), ctl.peer)) {
        why = "peer half: bad ready line '" + rest + "'";
        return -EPROTO;
    }
    int rc = sys.run(r, ctl, m, why);
    ctl.send("end " + std::to_string(rc));
    int got = expect_result(ctl, rest, m);
    if (rc != 0) return rc; // the measuring half's own failure comes first
    if (got != 0) {
        why = std::string(sys.name) + ": the peer half gave no result in " + std::to_string(result_wait_ms / 1000) +
              " s (" + strerror(-got) + ")";
        return -ETIMEDOUT;
    }
    const int peer_rc = std::atoi(rest.c_str());
    if (peer_rc != 0) {
        why = "peer half: " + rest.substr(std::min(rest.size(), rest.find(' ') + 1));
        return peer_rc;
    }
    return 0;
}

namespace {

// The peer half of one measurement: reads the job (unless the server already did), serves it,
// waits for the measuring half's end and reports the result. Returns the peer half's result.
int serve_job(control& ctl, const std::string& address, std::string line, std::string& why) {
    if (line.empty()) {
        if (int rc = ctl.receive(line, peer_wait_ms)) {
            why = "no job line";
            return rc;
        }
    }
    std::istringstream job(line);
    std::string word, system_text, scenario_text;
    request r;
    job >> word >> system_text >> scenario_text >> r.param >> r.iterations >> r.warmup >> r.stream_bytes;
    r.address = address;
    const system* sys = system_named(system_text);
    if (word != "job" || !job || sys == nullptr || !scenario_named(scenario_text, r.what) || r.iterations < 0 ||
        r.warmup < 0) {
        why = "bad job line '" + line + "'";
        ctl.send("fail " + why);
        return -EPROTO;
    }
    int rc = sys->serve(r, ctl, why);
    if (!ctl.ready_sent()) {
        ctl.send("fail " + std::string(sys->name) + " set-up: " + (why.empty() ? strerror(-rc) : why));
        return rc;
    }
    // Until the measuring half's end (a vanished one: the channel closes or the time runs out).
    std::string rest;
    int end = -ETIMEDOUT;
    for (int waited = 0; end == -ETIMEDOUT && waited < 10 * peer_wait_ms; waited += 1000) {
        ctl.beat();
        end = ctl.expect("end", rest, 1000);
    }
    if (end != 0) {
        if (rc == 0) why = std::string("no end from the measuring half: ") + strerror(-end);
        return rc != 0 ? rc : end;
    }
    // Stopped early because the measuring half ended with a failure: not the peer half's.
    if (rc == -ECANCELED && std::atoi(rest.c_str()) != 0) rc = 0;
    if (rc != 0 && why.empty()) why = strerror(-rc);
    std::string text = why;
    std::replace(text.begin(), text.end(), '\n', ' ');
    if (rc == 0 && ctl.cpu_ns >= 0) ctl.send("cpu " + std::to_string(ctl.cpu_ns));
    ctl.send("result " + std::to_string(rc) + " " + text);
    return rc;
}

} // namespace

// One-process mode: the peer half in a thread of this process, over a socketpair.
int local_job(const system& sys, const request& r, measurement& m, std::string& why) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        why = std::string("socketpair: ") + strerror(errno);
        return -errno;
    }
    struct peer_state {
        control ctl;
        std::atomic<bool> done{false};
        peer_state(int fd) : ctl(fd, true) {}
    };
    auto peer = std::make_shared<peer_state>(sv[1]);
    std::thread server([peer, address = r.address] {
        std::string peer_why;
        serve_job(peer->ctl, address, "", peer_why);
        peer->done = true;
    });
    int rc;
    {
        control ctl(sv[0], true);
        rc = client_job(ctl, sys, r, m, why);
    } // closes the measuring half's end: a peer half still waiting sees it at once
    // The peer half's waits end within peer_wait_ms once its control channel has closed.
    for (int i = 0; i < peer_wait_ms / 100 + 50 && !peer->done; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (peer->done) server.join();
    else server.detach(); // stuck in a library call with no time-out (rsockets' rclose): abandoned
    return rc;
}

// Two-host mode: a control connection to `sansock-bench --server` (bounded connect), or a
// negated errno with `why`.
int connect_control(const std::string& host, uint16_t port, std::string& why) {
    net_address a{};
    if (!parse_address(host, port, a)) {
        why = "'" + host + "' is neither an IPv4 nor an IPv6 address";
        return -EINVAL;
    }
    const std::string where = (a.sa.sa_family == AF_INET6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
    int fd = socket(a.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        why = std::string("socket: ") + strerror(errno);
        return -errno;
    }
    int rc = connect(fd, &a.sa, address_size(a)) == 0 ? 0 : -errno;
    if (rc == -EINPROGRESS) {
        pollfd p{fd, POLLOUT, 0};
        int n = poll(&p, 1, 10000);
        int err = 0;
        socklen_t len = sizeof err;
        if (n == 0) rc = -ETIMEDOUT;
        else if (n < 0) rc = -errno;
        else rc = getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 ? -err : -errno;
    }
    if (rc != 0) {
        ::close(fd);
        why = "cannot reach the server at " + where + ": " + strerror(-rc) + " (errno " + std::to_string(-rc) +
              "); is `sansock-bench --server` running there?";
        return rc;
    }
    const int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    // A vanished peer is noticed within about 20 s even while nothing is sent.
    tune_control_socket(fd);
    return fd;
}

// Keepalive after 10 s idle, probes 5 s apart, two of them; no Nagle (short control lines).
void tune_control_socket(int fd) {
    int one = 1, idle = 10, interval = 5, count = 2;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

namespace {

// A measurement in a child process: `measure SYSTEM SCENARIO-INDEX PARAM ITERATIONS WARMUP
// ADDRESS STREAM-BYTES CONTROL-FD`, reported as key=value lines. CONTROL-FD -1: the peer half
// runs in a thread of the child (one-process mode); else it is the control connection to the
// server (two-host mode).
int measure_role(const std::vector<std::string>& a) {
    if (a.size() != 8) return 2;
    const system* sys = system_named(a[0]);
    if (sys == nullptr) return 2;
    request r;
    r.what = static_cast<scenario>(std::stoi(a[1]));
    r.param = std::stoull(a[2]);
    r.iterations = std::stoi(a[3]);
    r.warmup = std::stoi(a[4]);
    r.address = a[5];
    r.stream_bytes = std::stoull(a[6]);
    const int fd = std::stoi(a[7]);
    measurement m;
    std::string why;
    int rc;
    if (fd < 0) {
        rc = local_job(*sys, r, m, why);
    } else {
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        control ctl(fd, false);
        rc = client_job(ctl, *sys, r, m, why);
    }
    std::string samples;
    for (double ns : m.samples_ns) samples += (samples.empty() ? "" : ",") + std::to_string(ns);
    sansock::test::report("samples", samples);
    sansock::test::report("bytes_per_sample", static_cast<long>(m.bytes_per_sample));
    sansock::test::report("registered", std::to_string(m.registered_bytes_per_connection));
    sansock::test::report("resident", std::to_string(m.resident_bytes_per_connection));
    sansock::test::report("span_ns", std::to_string(m.span_ns));
    sansock::test::report("cpu_ns", std::to_string(m.cpu_ns));
    sansock::test::report("peer_cpu_ns", std::to_string(m.peer_cpu_ns));
    sansock::test::report("why", why);
    sansock::test::report("rc", rc);
    std::fflush(stdout);
    _exit(0); // what a stuck library thread does after this is not our concern
}
sansock::test::peer_role_registrar register_measure("measure", measure_role);

} // namespace

// rsockets is measured in a child process: its close can wait for ever (ofiwg/librdmacm#1),
// and a thread stuck inside it cannot be reclaimed; the child is killed instead. In two-host
// mode the child gets the control connection (`control_fd`, inherited).
int run_isolated(const system& sys, const request& r, measurement& m, std::string& why,
                 int control_fd) {
    if (control_fd >= 0) fcntl(control_fd, F_SETFD, 0); // inherited by the child
    sansock::test::peer_process child("measure", {sys.name, std::to_string(static_cast<int>(r.what)),
                                                  std::to_string(r.param), std::to_string(r.iterations),
                                                  std::to_string(r.warmup), r.address, std::to_string(r.stream_bytes),
                                                  std::to_string(control_fd)});
    if (control_fd >= 0) fcntl(control_fd, F_SETFD, FD_CLOEXEC);
    if (!child.started()) {
        why = "could not start the measuring process";
        return -ECHILD;
    }
    const int status = child.wait_exit(std::chrono::seconds(180));
    const auto& got = child.reports();
    if (status != 0 || !got.count("rc")) {
        why = status == -1 ? sys.name + std::string(": no result in 180 s (its close waits for sends with no time-out); the process was killed")
                           : sys.name + std::string(": the measuring process died (status ") + std::to_string(status) + ")";
        return -ETIMEDOUT;
    }
    std::istringstream list(got.at("samples"));
    std::string item;
    while (std::getline(list, item, ','))
        if (!item.empty()) m.samples_ns.push_back(std::stod(item));
    m.bytes_per_sample = std::stoull(got.at("bytes_per_sample"));
    m.registered_bytes_per_connection = std::stod(got.at("registered"));
    m.resident_bytes_per_connection = std::stod(got.at("resident"));
    auto number = [&](const char* key, int64_t fallback) {
        return got.count(key) ? std::stoll(got.at(key)) : fallback;
    };
    m.span_ns = uint64_t(number("span_ns", 0));
    m.cpu_ns = number("cpu_ns", -1);
    m.peer_cpu_ns = number("peer_cpu_ns", -1);
    why = got.at("why");
    return std::stoi(got.at("rc"));
}

namespace {

// A server's job in a child process: `serve CONTROL-FD ADDRESS JOB-LINE`. Prints beat= lines
// while it makes progress, then rc= and why=.
int serve_role(const std::vector<std::string>& a) {
    if (a.size() != 3) return 2;
    const int fd = std::stoi(a[0]);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    control::beats_to_stdout(true);
    control ctl(fd, false);
    std::string why;
    const int rc = serve_job(ctl, a[1], a[2], why);
    sansock::test::report("why", why);
    sansock::test::report("rc", rc);
    std::fflush(stdout);
    _exit(0);
}
sansock::test::peer_role_registrar register_serve("serve", serve_role);

} // namespace

} // namespace sansock::bench

// SPDX-License-Identifier: MIT
// sansock-bench: close latency and the data path, sansock side by side with rsockets, a
// raw-verbs floor and kernel TCP, in one run: on one device with the peer halves in threads
// (one-process mode), or against `sansock-bench --server` on another host or port (two-host
// mode). See docs/benchmarks.md.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <thread>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "bench/bench.hpp"
#include "sansock/sansock.h"
#include "tests/support/peer_process.hpp"
#include "tests/support/rdma_test_env.hpp"

namespace sansock::bench {
const char* scenario_name(scenario s) {
    switch (s) {
    case scenario::hard_close: return "hard_close";
    case scenario::graceful_close: return "graceful_close";
    case scenario::graceful_to_eof: return "graceful_to_eof";
    case scenario::linger_close: return "linger_close";
    case scenario::listener_close: return "listener_close";
    case scenario::listener_abort: return "listener_abort";
    case scenario::service_host_close: return "service_host_close";
    case scenario::connect_teardown: return "connect_teardown";
    case scenario::ping_pong: return "ping_pong";
    case scenario::bandwidth: return "bandwidth";
    case scenario::memory: return "memory";
    }
    return "unknown";
}
} // namespace sansock::bench

using namespace sansock::bench;

namespace {

constexpr long default_port = 18515;

struct options {
    int iterations = 200;
    int warmup = 20;
    bool short_run = false;
    std::string json_path, csv_path, address;
    std::vector<std::string> scenarios, systems;
    uint64_t stream_bytes = 64u << 20;
};

struct stats {
    double min = 0, typical = 0, max = 0, avg = 0, stdev = 0, p99 = 0, p999 = 0;
};

stats summarise(std::vector<double> v) {
    stats s;
    if (v.empty()) return s;
    std::sort(v.begin(), v.end());
    auto at = [&](double q) { return v[std::min(v.size() - 1, static_cast<size_t>(std::ceil(q * v.size())) - (q > 0 ? 1 : 0))]; };
    s.min = v.front();
    s.max = v.back();
    s.typical = v[v.size() / 2];
    double sum = 0;
    for (double x : v) sum += x;
    s.avg = sum / v.size();
    double sq = 0;
    for (double x : v) sq += (x - s.avg) * (x - s.avg);
    s.stdev = v.size() > 1 ? std::sqrt(sq / (v.size() - 1)) : 0;
    s.p99 = at(0.99);
    s.p999 = at(0.999);
    return s;
}

struct row {
    std::string scenario, system, param_text, unit;
    uint64_t param = 0;
    bool available = false;
    std::string note; // n/a reason or failure
    stats figures;    // in `unit`
    size_t samples = 0;
    double ratio_floor = 0, ratio_rsockets = 0;
    std::vector<double> values; // every sample in `unit`, for the distribution plots
};

struct plan_item {
    scenario what;
    uint64_t param;
    std::string param_text;
};

std::vector<plan_item> plan(const options& o) {
    std::vector<plan_item> items;
    auto add = [&](scenario s, uint64_t p, std::string text) { items.push_back({s, p, std::move(text)}); };
    for (uint64_t ops : {0, 16, 256}) add(scenario::hard_close, ops, std::to_string(ops) + " ops");
    add(scenario::graceful_close, 0, "returns");
    add(scenario::graceful_to_eof, 0, "peer EOF");
    add(scenario::linger_close, 1 << 20, "1 MiB in flight");
    for (uint64_t pending : {0, 16, 256}) add(scenario::listener_close, pending, std::to_string(pending) + " accepts");
    for (uint64_t pending : {0, 16}) add(scenario::listener_abort, pending, std::to_string(pending) + " accepts");
    for (uint64_t channels : {1, 10, 100}) add(scenario::service_host_close, channels, std::to_string(channels) + " channels");
    add(scenario::connect_teardown, 0, "per connection");
    const std::vector<uint64_t> pings = o.short_run ? std::vector<uint64_t>{8, 4096, 65536}
                                                    : std::vector<uint64_t>{8, 64, 512, 4096, 16384, 65536};
    for (uint64_t size : pings) add(scenario::ping_pong, size, std::to_string(size) + " B");
    const std::vector<uint64_t> streams = o.short_run ? std::vector<uint64_t>{4096, 65536, 1 << 20}
                                                      : std::vector<uint64_t>{4096, 16384, 65536, 262144, 1 << 20};
    for (uint64_t size : streams) add(scenario::bandwidth, size, std::to_string(size / 1024) + " KiB");
    const std::vector<uint64_t> conns = o.short_run ? std::vector<uint64_t>{1, 100} : std::vector<uint64_t>{1, 100, 1000};
    for (uint64_t n : conns) add(scenario::memory, n, std::to_string(n) + " conns");
    if (!o.scenarios.empty())
        std::erase_if(items, [&](const plan_item& i) {
            return std::find(o.scenarios.begin(), o.scenarios.end(), scenario_name(i.what)) == o.scenarios.end();
        });
    return items;
}

const sansock::bench::system* system_named(const std::string& name) {
    for (const sansock::bench::system* s : {&sansock_system, &rsockets_system, &verbs_system, &tcp_system})
        if (name == s->name) return s;
    return nullptr;
}

bool scenario_named(const std::string& name, scenario& out) {
    for (int i = 0; i <= static_cast<int>(scenario::memory); ++i)
        if (name == scenario_name(static_cast<scenario>(i))) {
            out = static_cast<scenario>(i);
            return true;
        }
    return false;
}

constexpr int ready_wait_ms = 60000;  // the peer half's set-up (a process start on the server)
constexpr int result_wait_ms = 60000; // the peer half's end after the measuring half's

// ---- the job protocol (docs/benchmarks.md, "How to run it") ---------------------------------
// measuring half: job SYSTEM SCENARIO PARAM ITERATIONS WARMUP STREAM-BYTES
// peer half:      ready ADDRESS PORT | fail TEXT
//                 ... mark NS, host/opened/closed (service_host_close) ...
// measuring half: end RC
// peer half:      result RC TEXT

// The measuring half of one measurement against the peer half at the other end of `ctl`.
int client_job(control& ctl, const sansock::bench::system& sys, const request& r, measurement& m, std::string& why) {
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
    ctl.peer = {};
    ctl.peer.sin_family = AF_INET;
    ctl.peer.sin_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET, ip.c_str(), &ctl.peer.sin_addr) != 1) {
        why = "peer half: bad ready line '" + rest + "'";
        return -EPROTO;
    }
    int rc = sys.run(r, ctl, m, why);
    ctl.send("end " + std::to_string(rc));
    int got = ctl.expect("result", rest, result_wait_ms);
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
    const sansock::bench::system* sys = system_named(system_text);
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
    ctl.send("result " + std::to_string(rc) + " " + text);
    return rc;
}

// One-process mode: the peer half in a thread of this process, over a socketpair.
int local_job(const sansock::bench::system& sys, const request& r, measurement& m, std::string& why) {
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
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    if (inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) {
        why = "'" + host + "' is not an IPv4 address";
        return -EINVAL;
    }
    const std::string where = host + ":" + std::to_string(port);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        why = std::string("socket: ") + strerror(errno);
        return -errno;
    }
    int rc = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 ? 0 : -errno;
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
    int one = 1, idle = 10, interval = 5, count = 2;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

// A measurement in a child process: `measure SYSTEM SCENARIO-INDEX PARAM ITERATIONS WARMUP
// ADDRESS STREAM-BYTES CONTROL-FD`, reported as key=value lines. CONTROL-FD -1: the peer half
// runs in a thread of the child (one-process mode); else it is the control connection to the
// server (two-host mode).
int measure_role(const std::vector<std::string>& a) {
    if (a.size() != 8) return 2;
    const sansock::bench::system* sys = system_named(a[0]);
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
    sansock::test::report("why", why);
    sansock::test::report("rc", rc);
    std::fflush(stdout);
    _exit(0); // what a stuck library thread does after this is not our concern
}
sansock::test::peer_role_registrar register_measure("measure", measure_role);

// rsockets is measured in a child process: its close can wait for ever (ofiwg/librdmacm#1),
// and a thread stuck inside it cannot be reclaimed; the child is killed instead. In two-host
// mode the child gets the control connection (`control_fd`, inherited).
int run_isolated(const sansock::bench::system& sys, const request& r, measurement& m, std::string& why,
                 int control_fd = -1) {
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
    why = got.at("why");
    return std::stoi(got.at("rc"));
}

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

// To stderr with status 2 after a bad argument; to stdout with status 0 for --help.
int usage(const char* argv0, FILE* out = stderr, int status = 2) {
    std::fprintf(out,
                 "usage: %s [--short] [--iterations N] [--warmup N] [--address IPV4] [--device NAME]\n"
                 "          [--scenario NAME]... [--system NAME]... [--stream-bytes N] [--json FILE] [--csv FILE]\n"
                 "          [--client SERVER-IPV4 [--port N]]\n"
                 "       %s --server [--address IPV4] [--device NAME] [--port N] [--once]\n"
                 "scenarios: hard_close graceful_close graceful_to_eof linger_close listener_close listener_abort\n"
                 "           service_host_close connect_teardown ping_pong bandwidth memory\n"
                 "systems: sansock rsockets raw-verbs tcp\n"
                 "--server runs the peer halves for a --client on another host (or port); default port %d\n"
                 "       %s --help | --version\n",
                 argv0, argv0, static_cast<int>(default_port), argv0);
    return status;
}

int print_version() {
    const int loaded = sansock_version();
    std::printf("sansock-bench %s (libsansock %d.%d.%d)\n", SANSOCK_VERSION_STRING, loaded / 10000, loaded / 100 % 100,
                loaded % 100);
    return 0;
}

std::string json_escape(const std::string& s) {
    std::string out;
    for (char c : s) {
        if (c == '"' || c == '\\') out += '\\';
        if (static_cast<unsigned char>(c) < 0x20) continue;
        out += c;
    }
    return out;
}

std::string first_line_of(const std::string& command) {
    std::string text = sansock::test::command_output(command);
    return text.substr(0, text.find('\n'));
}

// This host: what the JSON records, and what a server tells its client.
struct host_info {
    std::string hostname, kernel, cpus, device, address, rdma_core, sansock = "0.1.0";

    static host_info here(const std::string& address) {
        host_info h;
        char host[256] = {};
        gethostname(host, sizeof host - 1);
        h.hostname = host;
        utsname un{};
        uname(&un);
        h.kernel = un.release;
        h.cpus = std::to_string(sysconf(_SC_NPROCESSORS_ONLN));
        // The device whose netdev has the address (else the first RDMA link).
        h.device = first_line_of("dev=$(ip -4 -o addr show 2>/dev/null | awk '$4 ~ /^" + address +
                                 "\\// {print $2; exit}'); rdma link show 2>/dev/null | awk -v d=\"$dev\" "
                                 "'d != \"\" && $0 ~ (\"netdev \" d \"( |$)\") {print $2; f=1; exit} END {if (!f) {}}'");
        if (h.device.empty()) h.device = first_line_of("rdma link show 2>/dev/null | awk '{print $2}'");
        h.address = address;
        h.rdma_core = first_line_of("dpkg-query -W -f='${Version}' rdma-core 2>/dev/null");
        return h;
    }
    std::vector<std::pair<std::string, std::string*>> fields() {
        return {{"hostname", &hostname}, {"kernel", &kernel},       {"cpus", &cpus},      {"device", &device},
                {"address", &address},   {"rdma-core", &rdma_core}, {"sansock", &sansock}};
    }
    std::string line() {
        std::string out = "info";
        for (auto& [key, value] : fields()) out += "\t" + key + "=" + *value;
        return out;
    }
    static host_info parse(const std::string& rest) {
        host_info h;
        std::istringstream in(rest);
        std::string item;
        while (std::getline(in, item, '\t'))
            for (auto& [key, value] : h.fields())
                if (item.rfind(key + "=", 0) == 0) *value = item.substr(key.size() + 1);
        return h;
    }
    std::string json() {
        std::string out = "{";
        for (auto& [key, value] : fields())
            out += (out.size() > 1 ? ", \"" : "\"") + key + "\": \"" + json_escape(*value) + "\"";
        return out + "}";
    }
};

volatile sig_atomic_t stop_requested = 0;

// `sansock-bench --server`: serves one control connection after another (a job each, run in a
// child process that is killed when it stops making progress). With --once it exits after a
// client's run ends (its `bye`): 0 if every peer half succeeded, else 1.
int serve_forever(const std::string& address, uint16_t port, bool once) {
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    if (listener < 0 || bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(listener, 16) != 0) {
        std::fprintf(stderr, "sansock-bench --server: cannot listen on TCP port %u: %s\n", port, strerror(errno));
        return 1;
    }
    std::signal(SIGPIPE, SIG_IGN);
    std::signal(SIGTERM, [](int) { stop_requested = 1; });
    std::signal(SIGINT, [](int) { stop_requested = 1; });
    std::fprintf(stderr, "sansock-bench --server: control channel on TCP port %u, data path on %s%s\n", port,
                 address.c_str(), once ? " (one client run)" : "");
    host_info me = host_info::here(address);
    int failures = 0, jobs = 0;
    constexpr uint64_t once_idle_limit_ns = 600'000'000'000ull; // --once: a client within 10 min
    constexpr uint64_t stall_limit_ns = 120'000'000'000ull;     // a job silent this long is killed
    uint64_t idle_since = now_ns();
    while (!stop_requested) {
        pollfd p{listener, POLLIN, 0};
        if (poll(&p, 1, 1000) <= 0) {
            if (once && now_ns() - idle_since > once_idle_limit_ns) {
                std::fprintf(stderr, "sansock-bench --server: no client for %llu s; giving up\n",
                             static_cast<unsigned long long>(once_idle_limit_ns / 1'000'000'000ull));
                ::close(listener);
                return 1;
            }
            continue;
        }
        sockaddr_in from{};
        socklen_t length = sizeof from;
        int fd = accept4(listener, reinterpret_cast<sockaddr*>(&from), &length, SOCK_CLOEXEC);
        if (fd < 0) continue;
        int idle = 10, interval = 5, count = 2;
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        char who[INET_ADDRSTRLEN] = {};
        inet_ntop(AF_INET, &from.sin_addr, who, sizeof who);
        // The first line fits in one read; the control object stays here (the child reads
        // the rest of the connection itself).
        std::string line;
        {
            pollfd q{fd, POLLIN, 0};
            char buffer[1024];
            ssize_t n = poll(&q, 1, 10000) == 1 ? recv(fd, buffer, sizeof buffer - 1, 0) : -1;
            if (n > 0) line.assign(buffer, size_t(n));
            line = line.substr(0, line.find('\n'));
        }
        if (line == "hello") {
            control ctl(fd, false);
            ctl.send(me.line());
            idle_since = now_ns();
            continue;
        }
        if (line == "bye") {
            ::close(fd);
            std::fprintf(stderr, "sansock-bench --server: client %s finished its run: %d jobs, %d peer halves failed\n",
                         who, jobs, failures);
            idle_since = now_ns();
            if (once) {
                ::close(listener);
                return failures == 0 ? 0 : 1;
            }
            jobs = failures = 0;
            continue;
        }
        if (line.rfind("job ", 0) != 0) {
            std::fprintf(stderr, "sansock-bench --server: %s sent '%s', not a job; closed\n", who, line.c_str());
            ::close(fd);
            continue;
        }
        ++jobs;
        fcntl(fd, F_SETFD, 0); // inherited by the job's process
        sansock::test::peer_process child("serve", {std::to_string(fd), address, line});
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        // The child reads the connection; this copy only watches for the client hanging up.
        uint64_t last = now_ns(), hung_up = 0;
        int status = -1;
        bool killed = false;
        while (child.started()) {
            const uint64_t before = now_ns();
            if (child.read_line(std::chrono::milliseconds(1000))) {
                last = now_ns();
                continue;
            }
            siginfo_t info{};
            if (waitid(P_PID, static_cast<id_t>(child.pid()), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
                info.si_pid == child.pid()) {
                status = child.wait_exit(std::chrono::seconds(5));
                break;
            }
            pollfd h{fd, POLLRDHUP, 0};
            if (hung_up == 0 && poll(&h, 1, 0) == 1 && (h.revents & (POLLRDHUP | POLLHUP | POLLERR))) hung_up = now_ns();
            // Silent too long, or still running 10 s after its client went (stuck in a close).
            if (now_ns() - last > stall_limit_ns || (hung_up != 0 && now_ns() - hung_up > 10'000'000'000ull) ||
                stop_requested) {
                child.wait_exit(std::chrono::milliseconds(0)); // kills it
                killed = true;
                break;
            }
            if (now_ns() - before < 100'000'000) std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        ::close(fd);
        const auto& got = child.reports();
        const int rc = got.count("rc") ? std::atoi(got.at("rc").c_str()) : -1;
        const bool rsockets = line.rfind("job rsockets ", 0) == 0;
        if (status != 0 || rc != 0) {
            // rsockets' close may wait for ever (ofiwg/librdmacm#1): a finding, not our failure.
            if (!rsockets) ++failures;
            std::fprintf(stderr, "sansock-bench --server: %s: %s\n", line.c_str(),
                         killed ? "no progress for 120 s, or its client had gone for 10 s: killed"
                         : status != 0 ? ("the job's process ended with status " + std::to_string(status)).c_str()
                                       : (got.count("why") ? got.at("why") : std::string("failed")).c_str());
        }
        idle_since = now_ns();
    }
    ::close(listener);
    return failures == 0 ? 0 : 1;
}

// Two-host mode: asks the server about itself (and whether it is there at all).
int server_hello(const std::string& host, uint16_t port, host_info& out, std::string& why) {
    int fd = connect_control(host, port, why);
    if (fd < 0) return fd;
    control ctl(fd, false);
    std::string rest;
    int rc = ctl.send("hello");
    if (rc == 0) rc = ctl.expect("info", rest, 10000);
    if (rc != 0) {
        why = "the server at " + host + ":" + std::to_string(port) + " did not answer: " + strerror(-rc) + " (errno " +
              std::to_string(-rc) + "); is `sansock-bench --server` running there?";
        return rc;
    }
    out = host_info::parse(rest);
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    if (argc >= 3 && std::strcmp(argv[1], "--peer") == 0)
        return sansock::test::run_peer_role(argv[2], std::vector<std::string>(argv + 3, argv + argc));
    options o;
    std::string device, server_host;
    bool server = false, once = false;
    long port = default_port;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&]() -> std::optional<std::string> {
            if (i + 1 >= argc) return std::nullopt;
            return std::string(argv[++i]);
        };
        auto number = [&](const std::string& text, long& out) {
            char* end = nullptr;
            errno = 0;
            out = std::strtol(text.c_str(), &end, 10);
            return errno == 0 && end != text.c_str() && *end == '\0';
        };
        std::optional<std::string> v;
        long n = 0;
        if (a == "--help" || a == "-h") return usage(argv[0], stdout, 0);
        if (a == "--version") return print_version();
        if (a == "--short") o.short_run = true;
        else if (a == "--iterations" && (v = value()) && number(*v, n)) o.iterations = static_cast<int>(n);
        else if (a == "--warmup" && (v = value()) && number(*v, n)) o.warmup = static_cast<int>(n);
        else if (a == "--address" && (v = value())) o.address = *v;
        else if (a == "--device" && (v = value())) device = *v;
        else if (a == "--scenario" && (v = value())) o.scenarios.push_back(*v);
        else if (a == "--system" && (v = value())) o.systems.push_back(*v);
        else if (a == "--stream-bytes" && (v = value()) && number(*v, n) && n > 0) o.stream_bytes = static_cast<uint64_t>(n);
        else if (a == "--json" && (v = value())) o.json_path = *v;
        else if (a == "--csv" && (v = value())) o.csv_path = *v;
        else if (a == "--server") server = true;
        else if (a == "--once") once = true;
        else if (a == "--client" && (v = value())) server_host = *v;
        else if (a == "--port" && (v = value()) && number(*v, port)) {
        } else {
            std::fprintf(stderr, "sansock-bench: bad argument '%s'\n", a.c_str());
            return usage(argv[0]);
        }
    }
    const bool client = !server_host.empty();
    auto refuse = [&](const char* what) {
        std::fprintf(stderr, "sansock-bench: %s\n", what);
        return usage(argv[0]);
    };
    if (server && client) return refuse("--server and --client exclude each other (one process is one end)");
    if (once && !server) return refuse("--once is for --server");
    if (port < 1 || port > 65535) return refuse("--port takes 1 to 65535");
    if (server && (o.short_run || !o.scenarios.empty() || !o.systems.empty() || !o.json_path.empty() ||
                   !o.csv_path.empty()))
        return refuse("--server takes only --address, --device, --port and --once: the client chooses what is measured");
    for (const std::string& name : o.systems)
        if (system_named(name) == nullptr) return refuse(("unknown system '" + name + "'").c_str());
    for (const std::string& name : o.scenarios) {
        scenario ignored;
        if (!scenario_named(name, ignored)) return refuse(("unknown scenario '" + name + "'").c_str());
    }
    if (o.short_run && o.iterations == 200) {
        o.iterations = 30;
        o.warmup = 5;
        o.stream_bytes = 8u << 20;
    }
    if (o.iterations < 1 || o.warmup < 0) return usage(argv[0]);
    if (o.address.empty()) {
        if (!device.empty()) setenv("SANSOCK_TEST_DEVICE", device.c_str(), 1);
        o.address = sansock::test::test_address();
    }
    if (o.address.empty()) {
        std::fprintf(stderr, "sansock-bench: no RDMA device with an IPv4 address found (use --address)\n");
        return 1;
    }
    if (server) return serve_forever(o.address, static_cast<uint16_t>(port), once);

    host_info server_info;
    if (client) {
        std::signal(SIGPIPE, SIG_IGN);
        std::string why;
        if (server_hello(server_host, static_cast<uint16_t>(port), server_info, why) != 0) {
            std::fprintf(stderr, "sansock-bench: %s\n", why.c_str());
            return 1;
        }
    }

    using bench_system = sansock::bench::system;
    const bench_system* all[] = {&sansock_system, &rsockets_system, &verbs_system, &tcp_system};
    std::vector<const bench_system*> systems;
    for (const bench_system* s : all)
        if (o.systems.empty() || std::find(o.systems.begin(), o.systems.end(), s->name) != o.systems.end())
            systems.push_back(s);

    const auto items = plan(o);
    const bool terminal = isatty(STDERR_FILENO);
    std::vector<row> rows;
    size_t done = 0;
    for (const plan_item& item : items) {
        for (const bench_system* sys : systems) {
            ++done;
            std::fprintf(stderr, "%s[%zu/%zu] %s %s: %s...%s", terminal ? "\r\033[K" : "", done,
                         items.size() * systems.size(), scenario_name(item.what), item.param_text.c_str(), sys->name,
                         terminal ? "" : "\n");
            request r;
            r.what = item.what;
            r.param = item.param;
            r.iterations = item.what == scenario::memory ? 1 : o.iterations;
            r.warmup = item.what == scenario::memory ? 0 : o.warmup;
            if (item.what == scenario::connect_teardown || item.what == scenario::bandwidth) {
                r.iterations = std::max(1, o.iterations / 4);
                r.warmup = std::min(r.warmup, 2);
            }
            r.address = o.address;
            r.stream_bytes = o.stream_bytes;
            measurement m;
            std::string why;
            const bool isolate = std::strcmp(sys->name, "rsockets") == 0;
            int rc;
            if (const char* reason = sys->not_available(r)) {
                why = reason;
                rc = -EOPNOTSUPP;
            } else if (!client) {
                rc = isolate ? run_isolated(*sys, r, m, why) : local_job(*sys, r, m, why);
            } else {
                // Two-host mode: one control connection per measurement.
                int fd = connect_control(server_host, static_cast<uint16_t>(port), why);
                if (fd < 0) {
                    rc = fd;
                } else if (isolate) {
                    rc = run_isolated(*sys, r, m, why, fd);
                    ::close(fd);
                } else {
                    control ctl(fd, false);
                    rc = client_job(ctl, *sys, r, m, why);
                }
            }
            row out;
            out.scenario = scenario_name(item.what);
            out.system = sys->name;
            out.param = item.param;
            out.param_text = item.param_text;
            out.samples = m.samples_ns.size();
            if (rc == 0 && !m.samples_ns.empty()) {
                out.available = true;
                if (item.what == scenario::bandwidth) {
                    std::vector<double> mbps;
                    for (double ns : m.samples_ns) mbps.push_back(double(m.bytes_per_sample) / (ns / 1e9) / 1e6);
                    out.figures = summarise(mbps);
                    out.unit = "MB/s";
                } else if (item.what == scenario::memory) {
                    out.figures.typical = m.registered_bytes_per_connection / 1024.0;
                    out.figures.avg = m.resident_bytes_per_connection / 1024.0;
                    out.unit = "KiB reg";
                    out.note = "resident " + std::to_string(static_cast<long>(m.resident_bytes_per_connection / 1024)) + " KiB/conn";
                } else {
                    std::vector<double> us;
                    for (double ns : m.samples_ns) us.push_back(ns / 1e3);
                    out.figures = summarise(us);
                    out.unit = "us";
                    out.values = us;
                }
            } else {
                // rsockets' close waits for its sends with no time-out (ofiwg/librdmacm#1): a
                // measurement it never finishes is a finding about rsockets, reported as such.
                const char* kind = rc == -EOPNOTSUPP ? "n/a: "
                                   : (rc == -ETIMEDOUT && std::strcmp(sys->name, "rsockets") == 0) ? "hung: "
                                                                                                    : "failed: ";
                out.note = kind + (why.empty() ? std::string(strerror(-rc)) : why);
            }
            rows.push_back(out);
        }
    }
    if (terminal) std::fprintf(stderr, "\r\033[K");

    // Ratios of medians to the raw-verbs floor and to rsockets, scenario by scenario.
    for (row& r : rows) {
        if (!r.available) continue;
        for (const row& other : rows) {
            if (!other.available || other.scenario != r.scenario || other.param != r.param || other.figures.typical <= 0) continue;
            if (other.system == "raw-verbs") r.ratio_floor = r.figures.typical / other.figures.typical;
            if (other.system == "rsockets") r.ratio_rsockets = r.figures.typical / other.figures.typical;
        }
    }

    if (client) {
        // The end of this client's run (a --once server exits on it).
        std::string ignored;
        int fd = connect_control(server_host, static_cast<uint16_t>(port), ignored);
        if (fd >= 0) {
            control ctl(fd, false);
            ctl.send("bye");
        }
    }

    host_info me = host_info::here(o.address);
    const std::string& kernel = me.kernel;
    const std::string& device_name = me.device;
    const std::string& rdma_core = me.rdma_core;
    std::printf("sansock-bench  %s  kernel %s  device %s  address %s  rdma-core %s  iterations %d (warm-up %d)\n",
                client ? "two-host, this host measures" : "one process", kernel.c_str(), device_name.c_str(),
                o.address.c_str(), rdma_core.c_str(), o.iterations, o.warmup);
    if (client)
        std::printf("server %s (%s)  kernel %s  device %s  address %s  rdma-core %s  sansock %s\n",
                    server_host.c_str(), server_info.hostname.c_str(), server_info.kernel.c_str(),
                    server_info.device.c_str(), server_info.address.c_str(), server_info.rdma_core.c_str(),
                    server_info.sansock.c_str());
    std::printf("%-20s %-16s %-10s %12s %12s %12s %12s %9s %9s  %s\n", "scenario", "parameter", "system", "typical",
                "min", "p99", "max", "x floor", "x rsock", "unit / note");
    for (const row& r : rows) {
        if (!r.available) {
            std::printf("%-20s %-16s %-10s %12s %12s %12s %12s %9s %9s  %s\n", r.scenario.c_str(), r.param_text.c_str(),
                        r.system.c_str(), "n/a", "", "", "", "", "", r.note.c_str());
            continue;
        }
        auto ratio = [](double x) { return x > 0 ? (std::ostringstream() << std::fixed << std::setprecision(2) << x).str() : std::string("-"); };
        std::printf("%-20s %-16s %-10s %12.2f %12.2f %12.2f %12.2f %9s %9s  %s%s%s\n", r.scenario.c_str(),
                    r.param_text.c_str(), r.system.c_str(), r.figures.typical, r.figures.min, r.figures.p99,
                    r.figures.max, ratio(r.ratio_floor).c_str(), ratio(r.ratio_rsockets).c_str(), r.unit.c_str(),
                    r.note.empty() ? "" : ", ", r.note.c_str());
    }

    if (!o.json_path.empty()) {
        std::ofstream j(o.json_path);
        j << "{\n  \"tool\": \"sansock-bench\",\n  \"mode\": \"" << (client ? "two-host" : "one-process") << "\",\n";
        if (client) j << "  \"server\": " << server_info.json() << ",\n";
        j << "  \"machine\": {\"hostname\": \"" << json_escape(me.hostname)
          << "\", \"kernel\": \"" << json_escape(kernel) << "\", \"cpus\": " << sysconf(_SC_NPROCESSORS_ONLN)
          << "},\n  \"device\": \"" << json_escape(device_name) << "\",\n  \"address\": \"" << json_escape(o.address)
          << "\",\n  \"versions\": {\"sansock\": \"0.1.0\", \"rdma-core\": \"" << json_escape(rdma_core)
          << "\"},\n  \"iterations\": " << o.iterations << ",\n  \"warmup\": " << o.warmup << ",\n  \"rows\": [\n";
        for (size_t i = 0; i < rows.size(); ++i) {
            const row& r = rows[i];
            j << "    {\"scenario\": \"" << r.scenario << "\", \"parameter\": \"" << json_escape(r.param_text)
              << "\", \"param\": " << r.param << ", \"system\": \"" << r.system << "\", \"available\": "
              << (r.available ? "true" : "false") << ", \"unit\": \"" << r.unit << "\", \"samples\": " << r.samples
              << ", \"t_min\": " << r.figures.min << ", \"t_typical\": " << r.figures.typical << ", \"t_max\": "
              << r.figures.max << ", \"t_avg\": " << r.figures.avg << ", \"stdev\": " << r.figures.stdev
              << ", \"p99\": " << r.figures.p99 << ", \"p99_9\": " << r.figures.p999 << ", \"ratio_to_floor\": "
              << r.ratio_floor << ", \"ratio_to_rsockets\": " << r.ratio_rsockets << ", \"note\": \""
              << json_escape(r.note) << "\", \"values\": [";
            for (size_t k = 0; k < r.values.size(); ++k) j << (k ? "," : "") << r.values[k];
            j << "]}" << (i + 1 < rows.size() ? "," : "") << "\n";
        }
        j << "  ]\n}\n";
    }
    if (!o.csv_path.empty()) {
        std::ofstream c(o.csv_path);
        c << "scenario,parameter,system,available,unit,samples,t_min,t_typical,t_max,t_avg,stdev,p99,p99_9,"
             "ratio_to_floor,ratio_to_rsockets,note,kernel,device\n";
        for (const row& r : rows)
            c << r.scenario << ",\"" << r.param_text << "\"," << r.system << "," << r.available << "," << r.unit << ","
              << r.samples << "," << r.figures.min << "," << r.figures.typical << "," << r.figures.max << ","
              << r.figures.avg << "," << r.figures.stdev << "," << r.figures.p99 << "," << r.figures.p999 << ","
              << r.ratio_floor << "," << r.ratio_rsockets << ",\"" << r.note << "\"," << kernel << "," << device_name
              << "\n";
    }
    // Exit status: 0 unless a measurement failed (n/a is not a failure).
    for (const row& r : rows)
        if (!r.available && r.note.rfind("failed", 0) == 0) return 1;
    return 0;
}

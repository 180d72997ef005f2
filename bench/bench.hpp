// SPDX-License-Identifier: MIT
// sansock-bench: the interface between the runner and each system measured (sansock,
// rsockets, raw verbs, kernel TCP). A system measures one scenario at a time in two halves:
// the measuring half (run, in the client) and the peer half (serve: accepts, echoes, drains),
// which runs in a thread of this process (one-process mode) or in `sansock-bench --server` on
// another host (two-host mode). The halves talk over a control channel (class control).
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <string>
#include <vector>

namespace sansock::bench {

// A data-path address of either family (what --address names: IPv4 or IPv6), with a port.
union net_address {
    sockaddr sa;
    sockaddr_in v4;
    sockaddr_in6 v6;
};
// `text` (an IPv4 or IPv6 address) with `port` (host order) in *out; false if it is neither.
bool parse_address(const std::string& text, uint16_t port, net_address& out);
socklen_t address_size(const net_address& a); // sizeof sockaddr_in or sockaddr_in6
uint16_t address_port(const net_address& a);  // host order
void set_port(net_address& a, uint16_t port);
std::string address_text(const net_address& a); // the address alone, no port

enum class scenario {
    hard_close,          // (a) LINGER 0 close with `param` operations outstanding (0, 16, 256)
    graceful_close,      // (b) DONTLINGER close: samples = until close returns
    graceful_to_eof,     // (b) until the peer has read end of stream (resources released)
    linger_close,        // (c) LINGER n close with `param` bytes in flight
    listener_close,      // (d) listener close with `param` accepts pending
    listener_abort,      // (e)
    service_host_close,  // (f) with `param` channels
    connect_teardown,    // (g) connect + accept + close of both ends, one connection per sample
    ping_pong,           // (h) round trip of `param` bytes (sample = one round trip)
    bandwidth,           // (h) streaming `param`-byte messages (sample = time for `count` bytes)
    memory,              // (i) registered and resident bytes per connection at `param` connections
};

const char* scenario_name(scenario s);

struct request {
    scenario what = scenario::hard_close;
    uint64_t param = 0;        // outstanding ops, message size, connections, ... (see above)
    int iterations = 100;      // measured samples
    int warmup = 10;           // samples taken first and dropped
    std::string address;       // this host's IPv4 address on the RDMA device's netdev
    uint64_t stream_bytes = 64u << 20; // bandwidth: bytes per sample
};

struct measurement {
    // Durations in nanoseconds, one per measured iteration (not the warm-up).
    std::vector<double> samples_ns;
    // bandwidth: bytes moved per sample, so MB/s can be derived; memory: the figures instead.
    uint64_t bytes_per_sample = 0;
    double registered_bytes_per_connection = 0; // memory scenario
    double resident_bytes_per_connection = 0;   // memory scenario
    // From the start of the first counted sample to the end of the last (warm-up excluded):
    uint64_t span_ns = 0; // wall time, which sizes the runner's next batch (runner.cpp)
    int64_t cpu_ns = -1;  // user + system CPU of this process (process_cpu_ns), -1: not measured
    // Two-host mode: the server's job process over its counted samples (-1: not reported).
    int64_t peer_cpu_ns = -1;
};

// The control channel of one measurement: lines of text over a stream socket (a socketpair
// when both halves are in this process, TCP between two hosts). Every wait is bounded.
class control {
public:
    control(int fd, bool same_process); // owns fd
    control(const control&) = delete;
    control& operator=(const control&) = delete;
    ~control();
    int fd() const { return fd_; }
    // Both halves in this process: one clock and one resident set.
    bool same_process() const { return same_process_; }

    int send(const std::string& line);
    // The next line: 0, -ETIMEDOUT, -ECONNRESET (closed by the other end) or a negated errno.
    int receive(std::string& line, int timeout_ms);
    // Skips lines until one starting with `word`; the rest of it in `rest`. A `fail` line from
    // the peer half returns -EPROTO with its text in `rest`.
    int expect(const std::string& word, std::string& rest, int timeout_ms);

    // Peer half: its listener is at `port` on its address (0: the scenario needs none).
    int ready(const std::string& address, uint16_t port);
    bool ready_sent() const { return ready_sent_; }
    // Peer half: "it happened now" (end of stream read, connection closed, ...).
    void mark();
    // Peer half: the measuring half has ended the measurement (or vanished): stop waiting.
    bool stopping();
    // Peer half: progress, for the server's watchdog (a line on stdout in a server job).
    void beat();
    static void beats_to_stdout(bool on);

    // Measuring half: the peer half's data address (from its ready line).
    net_address peer{};
    // Peer half: its CPU time over its counted samples (peer_loop), sent with its result.
    int64_t cpu_ns = -1;
    // Measuring half: when the peer half's next mark happened: its own clock in one process,
    // else the moment the mark arrived here (one control-channel one-way trip later).
    int wait_mark(uint64_t& at_ns, int timeout_ms = 30000);

private:
    int fill(int timeout_ms);
    int fd_ = -1;
    bool same_process_ = false;
    bool closed_ = false;
    bool ready_sent_ = false;
    std::string buffer_;
};

// One measured system. `not_available` gives the reason when the system has no equivalent of
// the scenario (printed as n/a), else nullptr. `run` (the measuring half) returns 0 with
// samples or a negated errno with `why`; `serve` (the peer half) returns 0 or a negated errno
// with `why`, and calls ctl.ready once it listens.
struct system {
    const char* name;
    const char* (*not_available)(const request& r);
    int (*run)(const request& r, control& ctl, measurement& out, std::string& why);
    int (*serve)(const request& r, control& ctl, std::string& why);
};

// Each defined in its own file: system_sansock.cpp, system_rsockets.cpp, system_verbs.cpp,
// system_tcp.cpp.
extern const system sansock_system;
extern const system rsockets_system;
extern const system verbs_system;
extern const system tcp_system;

// Helpers shared by the systems.
uint64_t now_ns();
// Resident set size of this process in bytes (from /proc/self/statm).
uint64_t resident_bytes();
// User + system CPU time of this whole process (getrusage RUSAGE_SELF: every thread, so a
// sansock context's progress thread and, in one process, the peer half's thread too).
int64_t process_cpu_ns();
// A time-out for every wait in a peer half, sliced so it can check ctl.stopping().
constexpr int peer_wait_ms = 30000;

// Measuring half: `one(ns, why)` (0 or a negated errno, the sample in `ns`) warm-up plus
// iterations times; the warm-up samples are dropped.
// Records span_ns and cpu_ns over the counted samples.
template <typename Sample>
int sample_loop(const request& r, measurement& out, std::string& why, Sample&& one) {
    out.samples_ns.clear();
    out.samples_ns.reserve(size_t(r.iterations > 0 ? r.iterations : 0));
    uint64_t wall0 = 0;
    int64_t cpu0 = 0;
    for (int i = 0; i < r.warmup + r.iterations; ++i) {
        if (i == r.warmup) {
            wall0 = now_ns();
            cpu0 = process_cpu_ns();
        }
        double ns = 0;
        if (int rc = one(ns, why)) return rc;
        if (i >= r.warmup) out.samples_ns.push_back(ns);
    }
    if (r.iterations > 0) {
        out.cpu_ns = process_cpu_ns() - cpu0;
        out.span_ns = now_ns() - wall0;
    }
    return 0;
}

// Peer half: `once(why)` (0 or a negated errno) for every sample, warm-up included. Records
// its process's CPU time over the counted samples in ctl.cpu_ns (a counted sample starts
// when the previous one's last step here, an acknowledgement or a close, is done).
template <typename Once>
int peer_loop(const request& r, control& ctl, std::string& why, Once&& once) {
    int64_t cpu0 = 0;
    for (int i = 0; i < r.warmup + r.iterations; ++i) {
        if (i == r.warmup) cpu0 = process_cpu_ns();
        if (int rc = once(why)) return rc;
        ctl.beat();
    }
    if (r.iterations > 0) ctl.cpu_ns = process_cpu_ns() - cpu0;
    return 0;
}

} // namespace sansock::bench

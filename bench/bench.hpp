// SPDX-License-Identifier: MIT
// sansock-bench: the interface between the runner and each system measured (sansock,
// rsockets, raw verbs, kernel TCP). A system measures one scenario at a time, both ends in
// this process (a server thread), and returns per-iteration samples.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sansock::bench {

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
    std::string address;       // IPv4 address of the RDMA device's netdev (rdma_cm, TCP)
    uint64_t stream_bytes = 64u << 20; // bandwidth: bytes per sample
};

struct measurement {
    // Durations in nanoseconds, one per measured iteration (not the warm-up).
    std::vector<double> samples_ns;
    // bandwidth: bytes moved per sample, so MB/s can be derived; memory: the figures instead.
    uint64_t bytes_per_sample = 0;
    double registered_bytes_per_connection = 0; // memory scenario
    double resident_bytes_per_connection = 0;   // memory scenario
};

// One measured system. `run` returns 0 with samples, -EOPNOTSUPP with `why` set when the
// system has no equivalent of the scenario (printed as n/a with the reason), or another
// negated errno with `why` when the measurement failed.
struct system {
    const char* name;
    int (*run)(const request& r, measurement& out, std::string& why);
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

} // namespace sansock::bench

// SPDX-License-Identifier: MIT
// sansock-bench: the runner's own declarations (options, result rows, the job protocol, the
// server), shared by its files; the systems see only bench.hpp.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "bench/bench.hpp"

namespace sansock::bench {

struct options {
    int iterations = 200;
    int warmup = 20;
    bool short_run = false;
    // Given on the command line: fixed counts, no time budget (runner.cpp, row_policy).
    bool iterations_given = false, warmup_given = false, stream_bytes_given = false;
    std::string json_path, csv_path, address;
    std::vector<std::string> scenarios, systems;
    uint64_t stream_bytes = 64u << 20;
};

// --short without --iterations: counts per row from a time budget (runner.cpp).
bool budgeted(const options& o);
// That policy in words, for the table's header and the JSON.
std::string policy_text(const options& o);

// ---- the registry and the run loop (runner.cpp) -----------------------------------------------

const system* system_named(const std::string& name);
bool scenario_named(const std::string& name, scenario& out);

struct stats {
    double min = 0, typical = 0, max = 0, avg = 0, stdev = 0, p99 = 0, p999 = 0;
};

struct row {
    std::string scenario, system, param_text, unit;
    uint64_t param = 0;
    bool available = false;
    std::string note; // n/a reason or failure
    stats figures;    // in `unit`
    size_t samples = 0;
    int batches = 0; // jobs the samples came from (the short run adds batches up to a time budget)
    double elapsed_s = 0; // wall time of the row's jobs, set-up included (what the run spends on it)
    double ratio_floor = 0, ratio_rsockets = 0;
    // bandwidth: CPU seconds (user + system) of both ends over the counted samples, and per
    // GiB moved (-1: not measured), with the ratio of the latter to rsockets' (0: none).
    double cpu_s = -1, cpu_s_per_gib = -1, cpu_ratio_rsockets = 0;
    std::vector<double> values; // every sample in `unit`, for the distribution plots
};

// Every planned measurement of every chosen system: in this process (one-process mode), or
// against the server at `server_host`:`port` (two-host mode, `server_host` not empty). With
// the ratios to the raw-verbs floor and to rsockets.
std::vector<row> run_all(const options& o, const std::string& server_host, uint16_t port);

// ---- the job protocol (jobs.cpp) --------------------------------------------------------------

// The measuring half of one measurement against the peer half at the other end of `ctl`.
int client_job(control& ctl, const system& sys, const request& r, measurement& m, std::string& why);
// One-process mode: the peer half in a thread of this process, over a socketpair.
int local_job(const system& sys, const request& r, measurement& m, std::string& why);
// rsockets is measured in a child process (see jobs.cpp).
int run_isolated(const system& sys, const request& r, measurement& m, std::string& why, int control_fd = -1);
// Two-host mode: a control connection to `sansock-bench --server` (bounded connect), or a
// negated errno with `why`.
int connect_control(const std::string& host, uint16_t port, std::string& why);
// A control connection's socket options: TCP keepalive, no Nagle.
void tune_control_socket(int fd);

// ---- the two-host server and what a client asks it (server.cpp) ------------------------------

// This host: what the JSON records, and what a server tells its client.
struct host_info {
    std::string hostname, kernel, cpus, device, address, rdma_core, sansock = "0.1.0";

    static host_info here(const std::string& address);
    std::vector<std::pair<std::string, std::string*>> fields();
    std::string line();
    static host_info parse(const std::string& rest);
    std::string json();
};

// `sansock-bench --server` (see server.cpp).
int serve_forever(const std::string& address, uint16_t port, bool once);
// Two-host mode: asks the server about itself (and whether it is there at all).
int server_hello(const std::string& host, uint16_t port, host_info& out, std::string& why);
// Two-host mode: the end of this client's run (a --once server exits on it).
void say_bye(const std::string& host, uint16_t port);

// ---- results (results.cpp) --------------------------------------------------------------------

stats summarise(std::vector<double> v);
std::string json_escape(const std::string& s);

// The table on stdout, then the JSON and CSV files when asked for. `server`: the server's
// host_info in two-host mode (at `server_host`), else nullptr.
void print_results(const options& o, const std::vector<row>& rows, const std::string& server_host, host_info* server);

} // namespace sansock::bench

// SPDX-License-Identifier: MIT
// sansock-bench: the scenarios and systems by name, the plan of measurements and the loop
// that runs them into result rows.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench/runner.hpp"

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

namespace {

// Every measured system, in the order of the results.
const system* const all_systems[] = {&sansock_system, &rsockets_system, &verbs_system, &tcp_system};

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

} // namespace

const system* system_named(const std::string& name) {
    for (const system* s : all_systems)
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

namespace {

// How many samples a row takes. Fixed counts (one batch) unless the run is budgeted: then
// batches (one job each, with its own warm-up) until the row has at least min_samples and
// min_seconds of counted samples (their wall time, set-up and warm-up excluded), and never
// more than max_samples or max_seconds: a row whose samples are slow stops at the time cap
// with fewer than min_samples. Figures in docs/benchmarks.md ("Iterations").
struct row_policy {
    int min_samples = 1, max_samples = 1, warmup = 0;
    double min_seconds = 0, max_seconds = 0;
};

constexpr int pilot_samples = 10; // a budgeted row's first batch, which times its samples
constexpr int max_batches = 5;    // bounds the set-up cost of a row

row_policy policy_for(const options& o, scenario s) {
    row_policy p;
    if (s == scenario::memory) return p; // one sample: the figures are per connection
    if (budgeted(o)) {
        const int warmup = o.warmup_given ? o.warmup : -1;
        if (s == scenario::ping_pong) p = {1000, 1000, warmup < 0 ? 50 : warmup, 0, 0};
        else if (s == scenario::bandwidth) p = {10, 200, warmup < 0 ? 2 : std::min(warmup, 2), 5, 20};
        else p = {50, 1000, warmup < 0 ? 5 : warmup, 2, 10};
        return p;
    }
    p.min_samples = p.max_samples = o.iterations;
    p.warmup = o.warmup;
    if (s == scenario::connect_teardown || s == scenario::bandwidth) {
        p.min_samples = p.max_samples = std::max(1, o.iterations / 4);
        p.warmup = std::min(o.warmup, 2);
    }
    return p;
}

// One job: in this process, or against the server (one control connection per job).
int run_job(const system& sys, const request& r, const std::string& server_host, uint16_t port, measurement& m,
            std::string& why) {
    const bool isolate = std::strcmp(sys.name, "rsockets") == 0;
    if (server_host.empty()) return isolate ? run_isolated(sys, r, m, why) : local_job(sys, r, m, why);
    int fd = connect_control(server_host, port, why);
    if (fd < 0) return fd;
    if (isolate) {
        const int rc = run_isolated(sys, r, m, why, fd);
        ::close(fd);
        return rc;
    }
    control ctl(fd, false);
    return client_job(ctl, sys, r, m, why);
}

int64_t sum_known(int64_t a, int64_t b) { return a < 0 || b < 0 ? -1 : a + b; }

// Every batch of one row, merged into `all`; the number of batches in `batches`.
int run_batches(const system& sys, request r, const row_policy& p, const std::string& server_host, uint16_t port,
                measurement& all, std::string& why, int& batches) {
    const bool timed = p.min_seconds > 0;
    int want = timed ? std::min(pilot_samples, p.min_samples) : p.min_samples;
    r.warmup = p.warmup;
    for (batches = 0; batches < max_batches && want > 0;) {
        r.iterations = want;
        measurement m;
        ++batches;
        if (int rc = run_job(sys, r, server_host, port, m, why)) return rc;
        const bool first = all.samples_ns.empty();
        all.samples_ns.insert(all.samples_ns.end(), m.samples_ns.begin(), m.samples_ns.end());
        all.bytes_per_sample = m.bytes_per_sample;
        all.registered_bytes_per_connection = m.registered_bytes_per_connection;
        all.resident_bytes_per_connection = m.resident_bytes_per_connection;
        all.span_ns += m.span_ns;
        all.cpu_ns = first ? m.cpu_ns : sum_known(all.cpu_ns, m.cpu_ns);
        all.peer_cpu_ns = first ? m.peer_cpu_ns : sum_known(all.peer_cpu_ns, m.peer_cpu_ns);
        const double n = double(all.samples_ns.size()), seconds = double(all.span_ns) / 1e9;
        if (!timed || n == 0 || n >= p.max_samples || seconds >= p.max_seconds) break;
        if (n >= p.min_samples && seconds >= p.min_seconds) break;
        // The next batch from this row's own pace so far, 10 % over so that one more is enough.
        const double per_sample = std::max(seconds / n, 1e-6);
        const double by_time = std::ceil(std::max(0.0, p.min_seconds - seconds) / per_sample * 1.1);
        const double room = std::floor((p.max_seconds - seconds) / per_sample);
        want = int(std::min({std::max(by_time, p.min_samples - n), p.max_samples - n, room}));
    }
    return 0;
}

} // namespace

bool budgeted(const options& o) { return o.short_run && !o.iterations_given; }

std::string policy_text(const options& o) {
    if (!budgeted(o))
        return std::to_string(o.iterations) + " iterations after " + std::to_string(o.warmup) +
               " warm-up (bandwidth and connect_teardown: a quarter, after at most 2)";
    auto describe = [&](scenario s) {
        const row_policy p = policy_for(o, s);
        char text[160];
        std::snprintf(text, sizeof text, "at least %d samples and %.0f s, at most %d or %.0f s, in batches after %d warm-up",
                      p.min_samples, p.min_seconds, p.max_samples, p.max_seconds, p.warmup);
        return std::string(text);
    };
    return "ping_pong " + std::to_string(policy_for(o, scenario::ping_pong).min_samples) + " iterations after " +
           std::to_string(policy_for(o, scenario::ping_pong).warmup) + " warm-up; bandwidth " +
           describe(scenario::bandwidth) + "; close scenarios and connect_teardown " + describe(scenario::hard_close) +
           "; memory 1";
}

std::vector<row> run_all(const options& o, const std::string& server_host, uint16_t port) {
    const bool client = !server_host.empty();
    std::vector<const system*> systems;
    for (const system* s : all_systems)
        if (o.systems.empty() || std::find(o.systems.begin(), o.systems.end(), s->name) != o.systems.end())
            systems.push_back(s);

    const auto items = plan(o);
    const bool terminal = isatty(STDERR_FILENO);
    std::vector<row> rows;
    size_t done = 0;
    for (const plan_item& item : items) {
        for (const system* sys : systems) {
            ++done;
            std::fprintf(stderr, "%s[%zu/%zu] %s %s: %s...%s", terminal ? "\r\033[K" : "", done,
                         items.size() * systems.size(), scenario_name(item.what), item.param_text.c_str(), sys->name,
                         terminal ? "" : "\n");
            request r;
            r.what = item.what;
            r.param = item.param;
            r.address = o.address;
            r.stream_bytes = o.stream_bytes;
            measurement m;
            std::string why;
            int rc, batches = 0;
            const uint64_t row_start = now_ns();
            if (const char* reason = sys->not_available(r)) {
                why = reason;
                rc = -EOPNOTSUPP;
            } else {
                rc = run_batches(*sys, r, policy_for(o, item.what), server_host, port, m, why, batches);
            }
            row out;
            out.batches = batches;
            out.elapsed_s = double(now_ns() - row_start) / 1e9;
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
                    // Both ends: this process's CPU covers both halves in one process; in
                    // two-host mode the server reports its own.
                    const int64_t cpu = client ? sum_known(m.cpu_ns, m.peer_cpu_ns) : m.cpu_ns;
                    const double gib = double(m.bytes_per_sample) * double(m.samples_ns.size()) / double(1ull << 30);
                    if (cpu >= 0 && gib > 0) {
                        out.cpu_s = double(cpu) / 1e9;
                        out.cpu_s_per_gib = out.cpu_s / gib;
                    } else if (client && m.peer_cpu_ns < 0) {
                        out.note = "CPU: the server reported none (an older sansock-bench?)";
                    }
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
            if (other.system == "rsockets" && r.cpu_s_per_gib >= 0 && other.cpu_s_per_gib > 0)
                r.cpu_ratio_rsockets = r.cpu_s_per_gib / other.cpu_s_per_gib;
        }
    }
    return rows;
}

} // namespace sansock::bench

// SPDX-License-Identifier: MIT
// sansock-bench: the scenarios and systems by name, the plan of measurements and the loop
// that runs them into result rows.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
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
                int fd = connect_control(server_host, port, why);
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
    return rows;
}

} // namespace sansock::bench

// SPDX-License-Identifier: MIT
// sansock-bench: close latency and the data path, sansock side by side with rsockets, a
// raw-verbs floor and kernel TCP, in one run on one device. See docs/benchmarks.md.
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "bench/bench.hpp"
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

// A measurement in a child process: `measure SYSTEM SCENARIO-INDEX PARAM ITERATIONS WARMUP
// ADDRESS STREAM-BYTES`, reported as key=value lines.
int measure_role(const std::vector<std::string>& a) {
    if (a.size() != 7) return 2;
    const sansock::bench::system* sys = system_named(a[0]);
    if (sys == nullptr) return 2;
    request r;
    r.what = static_cast<scenario>(std::stoi(a[1]));
    r.param = std::stoull(a[2]);
    r.iterations = std::stoi(a[3]);
    r.warmup = std::stoi(a[4]);
    r.address = a[5];
    r.stream_bytes = std::stoull(a[6]);
    measurement m;
    std::string why;
    const int rc = sys->run(r, m, why);
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
// and a thread stuck inside it cannot be reclaimed; the child is killed instead.
int run_isolated(const sansock::bench::system& sys, const request& r, measurement& m, std::string& why) {
    sansock::test::peer_process child("measure", {sys.name, std::to_string(static_cast<int>(r.what)),
                                                  std::to_string(r.param), std::to_string(r.iterations),
                                                  std::to_string(r.warmup), r.address, std::to_string(r.stream_bytes)});
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

int usage(const char* argv0) {
    std::fprintf(stderr,
                 "usage: %s [--short] [--iterations N] [--warmup N] [--address IPV4] [--device NAME]\n"
                 "          [--scenario NAME]... [--system NAME]... [--stream-bytes N] [--json FILE] [--csv FILE]\n"
                 "scenarios: hard_close graceful_close graceful_to_eof linger_close listener_close listener_abort\n"
                 "           service_host_close connect_teardown ping_pong bandwidth memory\n"
                 "systems: sansock rsockets raw-verbs tcp\n",
                 argv0);
    return 2;
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

} // namespace

int main(int argc, char** argv) {
    if (argc >= 3 && std::strcmp(argv[1], "--peer") == 0)
        return sansock::test::run_peer_role(argv[2], std::vector<std::string>(argv + 3, argv + argc));
    options o;
    std::string device;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&]() -> std::optional<std::string> {
            if (i + 1 >= argc) return std::nullopt;
            return std::string(argv[++i]);
        };
        std::optional<std::string> v;
        if (a == "--short") o.short_run = true;
        else if (a == "--iterations" && (v = value())) o.iterations = std::stoi(*v);
        else if (a == "--warmup" && (v = value())) o.warmup = std::stoi(*v);
        else if (a == "--address" && (v = value())) o.address = *v;
        else if (a == "--device" && (v = value())) device = *v;
        else if (a == "--scenario" && (v = value())) o.scenarios.push_back(*v);
        else if (a == "--system" && (v = value())) o.systems.push_back(*v);
        else if (a == "--stream-bytes" && (v = value())) o.stream_bytes = std::stoull(*v);
        else if (a == "--json" && (v = value())) o.json_path = *v;
        else if (a == "--csv" && (v = value())) o.csv_path = *v;
        else return usage(argv[0]);
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
            int rc = isolate ? run_isolated(*sys, r, m, why) : sys->run(r, m, why);
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

    utsname un{};
    uname(&un);
    const std::string kernel = un.release;
    const std::string device_name = first_line_of("rdma link show 2>/dev/null | awk '{print $2}'");
    const std::string rdma_core = first_line_of("dpkg-query -W -f='${Version}' rdma-core 2>/dev/null");
    std::printf("sansock-bench  kernel %s  device %s  address %s  rdma-core %s  iterations %d (warm-up %d)\n",
                kernel.c_str(), device_name.c_str(), o.address.c_str(), rdma_core.c_str(), o.iterations, o.warmup);
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
        char host[256] = {};
        gethostname(host, sizeof host - 1);
        j << "{\n  \"tool\": \"sansock-bench\",\n  \"machine\": {\"hostname\": \"" << json_escape(host)
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

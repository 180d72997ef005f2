// SPDX-License-Identifier: MIT
// sansock-bench: result statistics and the output: the table on stdout, JSON and CSV files.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <sstream>
#include <string>
#include <vector>

#include "bench/runner.hpp"

namespace sansock::bench {

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

std::string json_escape(const std::string& s) {
    std::string out;
    for (char c : s) {
        if (c == '"' || c == '\\') out += '\\';
        if (static_cast<unsigned char>(c) < 0x20) continue;
        out += c;
    }
    return out;
}

void print_results(const options& o, const std::vector<row>& rows, const std::string& server_host, host_info* server) {
    host_info me = host_info::here(o.address);
    const std::string& kernel = me.kernel;
    const std::string& device_name = me.device;
    const std::string& rdma_core = me.rdma_core;
    std::printf("sansock-bench  %s  kernel %s  device %s  address %s  rdma-core %s\niterations: %s\n",
                server ? "two-host, this host measures" : "one process", kernel.c_str(), device_name.c_str(),
                o.address.c_str(), rdma_core.c_str(), policy_text(o).c_str());
    if (server)
        std::printf("server %s (%s)  kernel %s  device %s  address %s  rdma-core %s  sansock %s\n",
                    server_host.c_str(), server->hostname.c_str(), server->kernel.c_str(),
                    server->device.c_str(), server->address.c_str(), server->rdma_core.c_str(),
                    server->sansock.c_str());
    // cpu s/GiB: bandwidth rows only, both ends' CPU per GiB moved (docs/benchmarks.md).
    std::printf("%-20s %-16s %-10s %12s %12s %12s %12s %9s %9s %10s %9s  %s\n", "scenario", "parameter", "system",
                "typical", "min", "p99", "max", "x floor", "x rsock", "cpu s/GiB", "cpu x rs", "unit / note");
    for (const row& r : rows) {
        if (!r.available) {
            std::printf("%-20s %-16s %-10s %12s %12s %12s %12s %9s %9s %10s %9s  %s\n", r.scenario.c_str(),
                        r.param_text.c_str(), r.system.c_str(), "n/a", "", "", "", "", "", "", "", r.note.c_str());
            continue;
        }
        auto fixed = [](double x, int digits) { return (std::ostringstream() << std::fixed << std::setprecision(digits) << x).str(); };
        auto ratio = [&](double x) { return x > 0 ? fixed(x, 2) : std::string("-"); };
        const bool has_cpu = r.cpu_s_per_gib >= 0;
        std::printf("%-20s %-16s %-10s %12.2f %12.2f %12.2f %12.2f %9s %9s %10s %9s  %s%s%s\n", r.scenario.c_str(),
                    r.param_text.c_str(), r.system.c_str(), r.figures.typical, r.figures.min, r.figures.p99,
                    r.figures.max, ratio(r.ratio_floor).c_str(), ratio(r.ratio_rsockets).c_str(),
                    has_cpu ? fixed(r.cpu_s_per_gib, 3).c_str() : "", has_cpu ? ratio(r.cpu_ratio_rsockets).c_str() : "",
                    r.unit.c_str(), r.note.empty() ? "" : ", ", r.note.c_str());
    }
    double elapsed = 0;
    for (const row& r : rows) elapsed += r.elapsed_s;
    std::printf("%zu rows in %.1f s\n", rows.size(), elapsed);

    if (!o.json_path.empty()) {
        std::ofstream j(o.json_path);
        j << "{\n  \"tool\": \"sansock-bench\",\n  \"mode\": \"" << (server ? "two-host" : "one-process") << "\",\n";
        if (server) j << "  \"server\": " << server->json() << ",\n";
        j << "  \"machine\": {\"hostname\": \"" << json_escape(me.hostname)
          << "\", \"kernel\": \"" << json_escape(kernel) << "\", \"cpus\": " << sysconf(_SC_NPROCESSORS_ONLN)
          << "},\n  \"device\": \"" << json_escape(device_name) << "\",\n  \"address\": \"" << json_escape(o.address)
          << "\",\n  \"versions\": {\"sansock\": \"0.1.0\", \"rdma-core\": \"" << json_escape(rdma_core)
          << "\"},\n  \"iterations\": " << (budgeted(o) ? "null" : std::to_string(o.iterations))
          << ",\n  \"warmup\": " << (budgeted(o) ? "null" : std::to_string(o.warmup)) // per row: iteration_policy
          << ",\n  \"iteration_policy\": \"" << json_escape(policy_text(o)) << "\",\n  \"cpu_accounting\": \""
          << (server ? "getrusage(RUSAGE_SELF) of the client's measuring process plus the server's job process, each over its counted samples"
                     : "getrusage(RUSAGE_SELF) of the process holding both halves (and their libraries' threads), over the counted samples")
          << "\",\n  \"rows\": [\n";
        for (size_t i = 0; i < rows.size(); ++i) {
            const row& r = rows[i];
            j << "    {\"scenario\": \"" << r.scenario << "\", \"parameter\": \"" << json_escape(r.param_text)
              << "\", \"param\": " << r.param << ", \"system\": \"" << r.system << "\", \"available\": "
              << (r.available ? "true" : "false") << ", \"unit\": \"" << r.unit << "\", \"samples\": " << r.samples
              << ", \"t_min\": " << r.figures.min << ", \"t_typical\": " << r.figures.typical << ", \"t_max\": "
              << r.figures.max << ", \"t_avg\": " << r.figures.avg << ", \"stdev\": " << r.figures.stdev
              << ", \"p99\": " << r.figures.p99 << ", \"p99_9\": " << r.figures.p999 << ", \"ratio_to_floor\": "
              << r.ratio_floor << ", \"ratio_to_rsockets\": " << r.ratio_rsockets << ", \"batches\": " << r.batches
              << ", \"elapsed_s\": " << r.elapsed_s;
            if (r.cpu_s_per_gib >= 0)
                j << ", \"cpu_s\": " << r.cpu_s << ", \"cpu_s_per_gib\": " << r.cpu_s_per_gib
                  << ", \"cpu_ratio_to_rsockets\": " << r.cpu_ratio_rsockets;
            else
                j << ", \"cpu_s\": null, \"cpu_s_per_gib\": null, \"cpu_ratio_to_rsockets\": 0";
            j << ", \"note\": \""
              << json_escape(r.note) << "\", \"values\": [";
            for (size_t k = 0; k < r.values.size(); ++k) j << (k ? "," : "") << r.values[k];
            j << "]}" << (i + 1 < rows.size() ? "," : "") << "\n";
        }
        j << "  ]\n}\n";
    }
    if (!o.csv_path.empty()) {
        std::ofstream c(o.csv_path);
        c << "scenario,parameter,system,available,unit,samples,t_min,t_typical,t_max,t_avg,stdev,p99,p99_9,"
             "ratio_to_floor,ratio_to_rsockets,note,kernel,device,batches,cpu_s,cpu_s_per_gib,cpu_ratio_to_rsockets,elapsed_s\n";
        for (const row& r : rows)
            c << r.scenario << ",\"" << r.param_text << "\"," << r.system << "," << r.available << "," << r.unit << ","
              << r.samples << "," << r.figures.min << "," << r.figures.typical << "," << r.figures.max << ","
              << r.figures.avg << "," << r.figures.stdev << "," << r.figures.p99 << "," << r.figures.p999 << ","
              << r.ratio_floor << "," << r.ratio_rsockets << ",\"" << r.note << "\"," << kernel << "," << device_name
              << "," << r.batches << "," << (r.cpu_s_per_gib >= 0 ? std::to_string(r.cpu_s) : "") << ","
              << (r.cpu_s_per_gib >= 0 ? std::to_string(r.cpu_s_per_gib) : "") << "," << r.cpu_ratio_rsockets << "," << r.elapsed_s << "\n";
    }
}

} // namespace sansock::bench

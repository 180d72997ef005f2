// SPDX-License-Identifier: MIT
// sansock-bench: close latency and the data path, sansock side by side with rsockets, a
// raw-verbs floor and kernel TCP, in one run: on one device with the peer halves in threads
// (one-process mode), or against `sansock-bench --server` on another host or port (two-host
// mode). See docs/benchmarks.md.
#include <unistd.h>

#include <csignal>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "bench/runner.hpp"
#include "sansock/sansock.h"
#include "tests/support/peer_process.hpp"
#include "tests/support/rdma_test_env.hpp"

using namespace sansock::bench;

namespace {

constexpr long default_port = 18515;

// To stderr with status 2 after a bad argument; to stdout with status 0 for --help.
int usage(const char* argv0, FILE* out = stderr, int status = 2) {
    std::fprintf(out,
                 "usage: %s [--short] [--iterations N] [--warmup N] [--address IP] [--device NAME]\n"
                 "          [--scenario NAME]... [--system NAME]... [--stream-bytes N] [--json FILE] [--csv FILE]\n"
                 "          [--client SERVER-IP [--port N]]\n"
                 "       %s --server [--address IP] [--device NAME] [--port N] [--once]\n"
                 "scenarios: hard_close graceful_close graceful_to_eof linger_close listener_close listener_abort\n"
                 "           service_host_close connect_teardown ping_pong bandwidth memory\n"
                 "systems: sansock rsockets raw-verbs tcp\n"
                 "IP: an IPv4 or IPv6 address (of the RDMA device's netdev, for the data path)\n"
                 "--short: fewer sizes, 8 MiB bandwidth samples, samples per row from a time budget\n"
                 "         (--iterations N fixes the counts instead; see docs/benchmarks.md)\n"
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
        else if (a == "--iterations" && (v = value()) && number(*v, n)) {
            o.iterations = static_cast<int>(n);
            o.iterations_given = true;
        } else if (a == "--warmup" && (v = value()) && number(*v, n)) {
            o.warmup = static_cast<int>(n);
            o.warmup_given = true;
        } else if (a == "--address" && (v = value())) o.address = *v;
        else if (a == "--device" && (v = value())) device = *v;
        else if (a == "--scenario" && (v = value())) o.scenarios.push_back(*v);
        else if (a == "--system" && (v = value())) o.systems.push_back(*v);
        else if (a == "--stream-bytes" && (v = value()) && number(*v, n) && n > 0) {
            o.stream_bytes = static_cast<uint64_t>(n);
            o.stream_bytes_given = true;
        } else if (a == "--json" && (v = value())) o.json_path = *v;
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
    // The short run: 8 MiB per bandwidth sample, counts per row from a time budget unless
    // --iterations fixes them (runner.cpp, row_policy).
    if (o.short_run && !o.stream_bytes_given) o.stream_bytes = 8u << 20;
    if (o.iterations < 1 || o.warmup < 0) return usage(argv[0]);
    if (o.address.empty()) {
        if (!device.empty()) setenv("SANSOCK_TEST_DEVICE", device.c_str(), 1);
        o.address = sansock::test::test_address();
    }
    if (o.address.empty()) {
        std::fprintf(stderr, "sansock-bench: no RDMA device with an IPv4 address found (use --address, IPv4 or IPv6)\n");
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

    const std::vector<row> rows = run_all(o, server_host, static_cast<uint16_t>(port));

    if (client) say_bye(server_host, static_cast<uint16_t>(port));

    print_results(o, rows, server_host, client ? &server_info : nullptr);

    // Exit status: 0 unless a measurement failed (n/a is not a failure).
    for (const row& r : rows)
        if (!r.available && r.note.rfind("failed", 0) == 0) return 1;
    return 0;
}

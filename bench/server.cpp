// SPDX-License-Identifier: MIT
// sansock-bench: the two-host server side (`sansock-bench --server`, its jobs' processes
// watched) and what a client asks it besides jobs (hello, bye), with this host's description.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <thread>

#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "bench/runner.hpp"
#include "tests/support/peer_process.hpp"
#include "tests/support/rdma_test_env.hpp"

namespace sansock::bench {
namespace {

std::string first_line_of(const std::string& command) {
    std::string text = sansock::test::command_output(command);
    return text.substr(0, text.find('\n'));
}

} // namespace

// This host: what the JSON records, and what a server tells its client.
host_info host_info::here(const std::string& address) {
    host_info h;
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    h.hostname = host;
    utsname un{};
    uname(&un);
    h.kernel = un.release;
    h.cpus = std::to_string(sysconf(_SC_NPROCESSORS_ONLN));
    // The device whose netdev has the address (else the first RDMA link).
    h.device = first_line_of("dev=$(ip -o addr show 2>/dev/null | awk '$4 ~ /^" + address +
                             "\\// {print $2; exit}'); rdma link show 2>/dev/null | awk -v d=\"$dev\" "
                             "'d != \"\" && $0 ~ (\"netdev \" d \"( |$)\") {print $2; f=1; exit} END {if (!f) {}}'");
    if (h.device.empty()) h.device = first_line_of("rdma link show 2>/dev/null | awk '{print $2}'");
    h.address = address;
    h.rdma_core = first_line_of("dpkg-query -W -f='${Version}' rdma-core 2>/dev/null");
    return h;
}

std::vector<std::pair<std::string, std::string*>> host_info::fields() {
    return {{"hostname", &hostname}, {"kernel", &kernel},       {"cpus", &cpus},      {"device", &device},
            {"address", &address},   {"rdma-core", &rdma_core}, {"sansock", &sansock}};
}

std::string host_info::line() {
    std::string out = "info";
    for (auto& [key, value] : fields()) out += "\t" + key + "=" + *value;
    return out;
}

host_info host_info::parse(const std::string& rest) {
    host_info h;
    std::istringstream in(rest);
    std::string item;
    while (std::getline(in, item, '\t'))
        for (auto& [key, value] : h.fields())
            if (item.rfind(key + "=", 0) == 0) *value = item.substr(key.size() + 1);
    return h;
}

std::string host_info::json() {
    std::string out = "{";
    for (auto& [key, value] : fields())
        out += (out.size() > 1 ? ", \"" : "\"") + key + "\": \"" + json_escape(*value) + "\"";
    return out + "}";
}

namespace {

volatile sig_atomic_t stop_requested = 0;

} // namespace

// `sansock-bench --server`: serves one control connection after another (a job each, run in a
// child process that is killed when it stops making progress). With --once it exits after a
// client's run ends (its `bye`): 0 if every peer half succeeded, else 1.
int serve_forever(const std::string& address, uint16_t port, bool once) {
    // On :: for clients of either family (IPV6_V6ONLY off); on 0.0.0.0 where there is no IPv6.
    net_address a{};
    parse_address("::", port, a);
    int listener = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listener < 0) {
        parse_address("0.0.0.0", port, a);
        listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    }
    int one = 1, off = 0;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (a.sa.sa_family == AF_INET6) setsockopt(listener, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
    if (listener < 0 || bind(listener, &a.sa, address_size(a)) != 0 || listen(listener, 16) != 0) {
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
        net_address from{};
        socklen_t length = sizeof from;
        int fd = accept4(listener, &from.sa, &length, SOCK_CLOEXEC);
        if (fd < 0) continue;
        tune_control_socket(fd);
        const std::string who_text = address_text(from);
        const char* who = who_text.c_str();
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

// Two-host mode: the end of this client's run (a --once server exits on it).
void say_bye(const std::string& host, uint16_t port) {
    std::string ignored;
    int fd = connect_control(host, port, ignored);
    if (fd >= 0) {
        control ctl(fd, false);
        ctl.send("bye");
    }
}

} // namespace sansock::bench

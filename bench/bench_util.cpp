// SPDX-License-Identifier: MIT
// sansock-bench: helpers shared by the measured systems (monotonic clock, resident set size,
// process CPU time, addresses of either family).
#include <arpa/inet.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>

#include "bench/bench.hpp"

namespace sansock::bench {

uint64_t now_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1'000'000'000u + uint64_t(ts.tv_nsec);
}

uint64_t resident_bytes() {
    // /proc/self/statm: size resident shared text lib data dt, in pages.
    FILE* statm = std::fopen("/proc/self/statm", "re");
    if (statm == nullptr) return 0;
    unsigned long long size = 0, resident = 0;
    const int fields = std::fscanf(statm, "%llu %llu", &size, &resident);
    std::fclose(statm);
    if (fields != 2) return 0;
    const long page = sysconf(_SC_PAGESIZE);
    return uint64_t(resident) * uint64_t(page > 0 ? page : 4096);
}

int64_t process_cpu_ns() {
    rusage u{};
    if (getrusage(RUSAGE_SELF, &u) != 0) return 0;
    auto ns = [](const timeval& t) { return int64_t(t.tv_sec) * 1'000'000'000 + int64_t(t.tv_usec) * 1000; };
    return ns(u.ru_utime) + ns(u.ru_stime);
}

bool parse_address(const std::string& text, uint16_t port, net_address& out) {
    out = {};
    if (inet_pton(AF_INET, text.c_str(), &out.v4.sin_addr) == 1) {
        out.v4.sin_family = AF_INET;
    } else if (inet_pton(AF_INET6, text.c_str(), &out.v6.sin6_addr) == 1) {
        out.v6.sin6_family = AF_INET6;
    } else {
        return false;
    }
    set_port(out, port);
    return true;
}

socklen_t address_size(const net_address& a) { return a.sa.sa_family == AF_INET6 ? sizeof a.v6 : sizeof a.v4; }

uint16_t address_port(const net_address& a) { return ntohs(a.sa.sa_family == AF_INET6 ? a.v6.sin6_port : a.v4.sin_port); }

void set_port(net_address& a, uint16_t port) {
    if (a.sa.sa_family == AF_INET6) a.v6.sin6_port = htons(port);
    else a.v4.sin_port = htons(port);
}

std::string address_text(const net_address& a) {
    char text[INET6_ADDRSTRLEN] = {};
    const void* raw = a.sa.sa_family == AF_INET6 ? static_cast<const void*>(&a.v6.sin6_addr)
                                                 : static_cast<const void*>(&a.v4.sin_addr);
    if (inet_ntop(a.sa.sa_family, raw, text, sizeof text) == nullptr) return "?";
    return text;
}

} // namespace sansock::bench

// SPDX-License-Identifier: MIT
// sansock-bench: helpers shared by the measured systems (monotonic clock, resident set size).
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

} // namespace sansock::bench

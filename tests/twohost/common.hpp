// SPDX-License-Identifier: MIT
// The twohost suite's shared pieces: time, the checksummed streams, role arguments and
// failures (tests/twohost/, see main.cpp for what the suite is).
#pragma once

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "sansock/sansock.h"
#include "tests/support/bounded_time.hpp"
#include "tests/support/peer_process.hpp"
#include "tests/support/rdma_test_env.hpp"
#include "tests/support/address.hpp"
#include "tests/support/socket_options.hpp"

using namespace std::chrono_literals;
using namespace sansock::test;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

namespace twohost {

inline double seconds_since(steady_clock::time_point start) {
    return std::chrono::duration<double>(steady_clock::now() - start).count();
}
inline long ms_since(steady_clock::time_point start) { return static_cast<long>(seconds_since(start) * 1000); }
inline std::string text(long code) { return code < 0 ? sansock_strerror(static_cast<int>(code)) : std::to_string(code); }

// ---- the data: a deterministic stream per direction, and a running checksum ------------------

inline uint64_t mix(uint64_t k) {
    k += 0x9E3779B97F4A7C15ull;
    k = (k ^ (k >> 30)) * 0xBF58476D1CE4E5B9ull;
    k = (k ^ (k >> 27)) * 0x94D049BB133111EBull;
    return k ^ (k >> 31);
}

// Byte `offset` of the stream `seed`, however the stream is cut into pieces.
inline void fill_stream(uint8_t* out, uint64_t offset, size_t n, uint64_t seed) {
    size_t i = 0;
    while (i < n) {
        const uint64_t position = offset + i;
        const uint64_t word = mix((position / 8) ^ (seed << 48));
        const size_t first = position % 8;
        const size_t take = std::min<size_t>(8 - first, n - i);
        std::memcpy(out + i, reinterpret_cast<const uint8_t*>(&word) + first, take);
        i += take;
    }
}

constexpr uint64_t fnv_basis = 0xcbf29ce484222325ull;
inline uint64_t fnv1a(uint64_t h, const uint8_t* p, size_t n) {
    for (size_t i = 0; i < n; ++i) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

constexpr uint64_t seed_a = 0xA, seed_b = 0xB; // what A sends, what B sends
constexpr size_t chunk_size = 256 * 1024;

// =============================================================================================
// The guest side: roles. No doctest here; every outcome is reported, the driver judges.
// =============================================================================================

// key=value arguments.
class role_args {
public:
    explicit role_args(const std::vector<std::string>& args) {
        for (const auto& a : args)
            if (auto eq = a.find('='); eq != std::string::npos) values_[a.substr(0, eq)] = a.substr(eq + 1);
    }
    std::string str(const std::string& key, const std::string& otherwise = "") const {
        auto it = values_.find(key);
        return it == values_.end() ? otherwise : it->second;
    }
    long num(const std::string& key, long otherwise = 0) const {
        auto it = values_.find(key);
        return it == values_.end() ? otherwise : std::stol(it->second);
    }

private:
    std::map<std::string, std::string> values_;
};

// A set-up step failed: the role reports `error=` and exits 1.
struct role_failure {
    std::string what;
};
inline void must(long rc, const std::string& what) {
    if (rc < 0) throw role_failure{what + ": " + text(rc)};
}

using sansock::test::set_int_option;
using sansock::test::set_linger;
using sansock::test::set_timeout;
inline void set_call_timeouts(sansock_socket_t s, long ms) {
    must(set_timeout(s, SO_RCVTIMEO, ms), "SO_RCVTIMEO");
    must(set_timeout(s, SO_SNDTIMEO, ms), "SO_SNDTIMEO");
}
using sansock::test::ipv4;
inline std::string env(const char* name) {
    const char* v = std::getenv(name);
    return v != nullptr ? v : "";
}

} // namespace twohost

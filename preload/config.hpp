// SPDX-License-Identifier: MIT
// The preload's settings, read once from the environment (docs/transparent-mode.md).
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <vector>

namespace sansock::preload {

struct address_prefix {
    sa_family_t family = AF_INET;
    uint8_t bytes[16] = {};
    unsigned bits = 0;
};

struct config {
    bool enabled = true;               // SANSOCK_PRELOAD: 0 or off turns it off
    bool verbose = false;              // SANSOCK_PRELOAD_VERBOSE=1: a line at start, one per fallback
    bool loopback_provider = false;    // SANSOCK_PRELOAD_PROVIDER=loopback (tests, one process)
    bool all_peers = false;            // SANSOCK_PRELOAD_PEERS=all
    std::vector<address_prefix> peers; // SANSOCK_PRELOAD_PEERS=10.0.0.0/24,fd00::/64
    int connect_timeout_ms = 3000;     // SANSOCK_PRELOAD_CONNECT_MS: the sansock try's bound
    std::string report_path;           // SANSOCK_PRELOAD_REPORT: counters written at exit
    std::string problem;               // a setting that could not be read (the preload is then off)
};

// Parses the environment. A bad value turns the preload off and says why in `problem`.
config read_config();

// Whether a connection to (or a listener on) `address` is tried over sansock: with no list,
// every address but loopback (127.0.0.0/8, ::1) and IPv4-mapped loopback; the unspecified
// address (a listener on 0.0.0.0 or ::) always is.
bool peer_allowed(const config& settings, const sockaddr* address, socklen_t length);

} // namespace sansock::preload

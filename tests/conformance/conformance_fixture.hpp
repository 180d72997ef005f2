// SPDX-License-Identifier: MIT
// What a provider supplies to run the conformance suite: one <provider>_fixture.cpp each.
//
// conformance_cases.cpp is written once against the ops table. A provider's fixture file
// defines sansock::conformance::the_fixture() (and nothing else the suite needs); the suite
// drives progress itself (one background progress thread per instance, stopped with wake).
#pragma once

#include <cstdint>
#include <string>

#include "provider/provider.hpp"

namespace sansock::conformance {

// Two provider instances ("hosts") that can connect to each other in both directions.
struct hosts {
    provider::instance* a = nullptr;
    provider::instance* b = nullptr;
    void* state = nullptr; // the fixture's own, handed back to destroy_hosts
};

struct fixture {
    const char* name = nullptr;
    // The provider's ops table as exported (the suite applies provider::with_defaults).
    const provider::ops* table = nullptr;
    // An IPv4 address (dotted quad) on which both hosts can listen and that both can reach.
    // Cases bind it with port 0 and read the port back with getsockname.
    std::string listen_address;
    // Size of the largest data-integrity transfer (256 MiB; a slow provider may cap it).
    uint64_t largest_transfer = uint64_t(256) << 20;
    // The bound of every single wait in a case (connect, a completion, a transfer).
    int timeout_ms = 60000;

    // Creates two instances that can reach each other, with `settings` (the fixture may set
    // provider_specific and anything device-specific; it keeps slot sizes and counts as given)
    // and the given up-calls for each. Returns 0 or a negated errno; on failure nothing is left
    // to destroy.
    int (*create_hosts)(const provider::config& settings, const provider::upcalls& a_calls,
                        const provider::upcalls& b_calls, hosts* out) = nullptr;
    // Destroys both instances (table->destroy) and frees `state`.
    void (*destroy_hosts)(hosts& h) = nullptr;
};

// Defined once per provider, by its fixture file (loopback_fixture.cpp, verbs_fixture.cpp).
const fixture& the_fixture();

} // namespace sansock::conformance

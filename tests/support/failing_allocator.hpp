// SPDX-License-Identifier: MIT
// An allocator that fails on demand, for the tests that no close, abort or destroy needs
// memory (docs/semantics.md, "Out of memory"). A binary that includes this header links
// tests/support/failing_allocator.cpp, which replaces the global operator new and delete:
// every allocation fails on one thread while its flag is set, or on every thread (progress
// threads, service threads) while the global switch is on. malloc itself, and so rdma-core's
// allocations, is not touched.
#pragma once

#include <atomic>
#include <cstdint>
#include <chrono>
#include <thread>

namespace sansock::test {

extern thread_local bool fail_allocations;  // this thread's allocations fail
extern thread_local int allowed_allocations; // >= 0: this thread's fail once these are used
extern std::atomic<bool> fail_everywhere;    // every thread's allocations fail
extern std::atomic<int> refused;             // allocations refused so far

// Runs `call` with every allocation of this thread failing; returns its result.
template <typename F>
auto without_memory(F call) {
    fail_allocations = true;
    const auto rc = call();
    fail_allocations = false;
    return rc;
}

// Runs `call` with every allocation of every thread failing, and keeps them failing for
// `after` more, while the background work the call started runs (a service thread's close, a
// progress thread's time-out). Nothing here allocates meanwhile (no check, no thread start).
template <typename F>
auto without_memory_anywhere(F call, std::chrono::milliseconds after = std::chrono::milliseconds(300)) {
    fail_everywhere.store(true);
    const auto rc = call();
    std::this_thread::sleep_for(after);
    fail_everywhere.store(false);
    return rc;
}

// An async callback's result, recorded without allocating.
struct noted {
    std::atomic<int> calls{0};
    std::atomic<int64_t> result{0};
    static void run(void* user, int64_t result) {
        auto* self = static_cast<noted*>(user);
        self->result.store(result);
        self->calls.fetch_add(1);
    }
};

} // namespace sansock::test

// SPDX-License-Identifier: MIT
// The replaced global allocation functions of tests/support/failing_allocator.hpp.
#include "tests/support/failing_allocator.hpp"

#include <cstdlib>
#include <new>

// The replacements below pair malloc with free, which GCC cannot see through when it inlines
// the library's deallocations.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

namespace sansock::test {

thread_local bool fail_allocations = false;
thread_local int allowed_allocations = -1;
std::atomic<bool> fail_everywhere{false};
std::atomic<int> refused{0};

namespace {

bool allowed() noexcept {
    if (allowed_allocations < 0) return true;
    if (allowed_allocations == 0) return false;
    --allowed_allocations;
    return true;
}

void* allocate(std::size_t n) noexcept {
    if (fail_allocations || fail_everywhere.load(std::memory_order_relaxed) || !allowed()) {
        refused.fetch_add(1);
        return nullptr;
    }
    return std::malloc(n != 0 ? n : 1);
}

} // namespace
} // namespace sansock::test

void* operator new(std::size_t n) {
    if (void* p = sansock::test::allocate(n)) return p;
    throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
    if (void* p = sansock::test::allocate(n)) return p;
    throw std::bad_alloc();
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return sansock::test::allocate(n); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return sansock::test::allocate(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
// What a nothrow new-expression calls when the constructor throws (its memory is this malloc's).
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }

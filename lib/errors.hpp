// SPDX-License-Identifier: MIT
// Internal helpers for sansock's negated-errno convention (docs/semantics.md section 1).
#pragma once

#include <cerrno>
#include <new>
#include <system_error>

namespace sansock {

// Result of an internal call: >= 0 success, < 0 a negated errno. Kept as a plain int so the
// C API can return it unchanged.
using status = int;

// The calling thread's errno as a negated errno; -EIO if errno was left at 0 by a
// misbehaving library, so a failure can never be mistaken for success.
inline status negated_errno() noexcept { return errno > 0 ? -errno : -EIO; }

// The handler of every exported function (a function-try-block: `extern "C" int f(...) try
// {...} catch (...) { return sansock::c_error(); }`): no exception ever crosses into C. Call it
// only from a catch handler. Out of memory is -ENOMEM; a std::system_error its errno (a thread
// that could not start: -EAGAIN); anything else -EIO.
inline status c_error() noexcept {
    try {
        throw;
    } catch (const std::bad_alloc&) {
        return -ENOMEM;
    } catch (const std::system_error& e) {
        const int code = e.code().value();
        return e.code().category() == std::generic_category() && code > 0 ? -code : -EAGAIN;
    } catch (...) {
        return -EIO;
    }
}

} // namespace sansock

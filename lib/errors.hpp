// SPDX-License-Identifier: MIT
// Internal helpers for sansock's negated-errno convention (docs/semantics.md section 1).
#pragma once

#include <cerrno>

namespace sansock {

// Result of an internal call: >= 0 success, < 0 a negated errno. Kept as a plain int so the
// C API can return it unchanged.
using status = int;

// The calling thread's errno as a negated errno; -EIO if errno was left at 0 by a
// misbehaving library, so a failure can never be mistaken for success.
inline status negated_errno() noexcept { return errno > 0 ? -errno : -EIO; }

} // namespace sansock

// SPDX-License-Identifier: MIT
// The one adapter from rdma-core's mixed error conventions to sansock's negated errno.
#pragma once

#include <cerrno>

#include "lib/errors.hpp"

namespace sansock::verbs {

// libibverbs returns 0 or a positive errno (ibv_modify_qp, ibv_post_send, ibv_destroy_*);
// librdmacm returns 0 or -1 with errno set (rdma_*). Some older providers return -errno.
// This maps all three to 0 or a negated errno.
inline status checked(int rc) noexcept {
    if (rc == 0) return 0;
    if (rc == -1) return negated_errno();
    return rc > 0 ? -rc : rc;
}

// For calls that return a pointer, or NULL with errno set.
template <typename T>
inline status checked_pointer(T* pointer) noexcept {
    return pointer != nullptr ? 0 : negated_errno();
}

} // namespace sansock::verbs

// SPDX-License-Identifier: MIT
// Failure reporting for the RAII owners of verbs objects.
#include "provider/verbs/verbs_objects.hpp"

#include <cstdio>
#include <cstring>

#include "provider/verbs/verbs_call.hpp"

namespace sansock::verbs {

void report_destroy_failure(const char* what, int rc) noexcept {
    const int code = checked(rc);
    std::fprintf(stderr, "sansock: %s failed: %s (the object leaks)\n", what, strerrordesc_np(-code));
}

} // namespace sansock::verbs

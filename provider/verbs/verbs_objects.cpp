// SPDX-License-Identifier: MIT
// Failure reporting for the RAII owners of verbs objects.
#include "provider/verbs/verbs_objects.hpp"

#include <cstdio>
#include <cstring>

#include "provider/verbs/verbs_call.hpp"

namespace sansock::verbs {

void report_destroy_failure(const destroy_log* log, const char* what, int rc) noexcept {
    const char* description = strerrordesc_np(-checked(rc));
    char message[256];
    std::snprintf(message, sizeof message, "verbs: %s failed: %s (the object leaks)", what,
                  description != nullptr ? description : "unknown error");
    if (log != nullptr && log->log != nullptr) log->log(log->context, provider::log_level::error, message);
    else std::fprintf(stderr, "sansock: %s\n", message);
}

} // namespace sansock::verbs

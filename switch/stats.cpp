// SPDX-License-Identifier: MIT
// Context counters (sansock_context_stats). Placeholder until the counters land in this change.
#include <cerrno>

#include "sansock/sansock.h"

extern "C" int sansock_context_stats(sansock_context*, struct sansock_context_stats*) { return -EOPNOTSUPP; }

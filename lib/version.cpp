// SPDX-License-Identifier: MIT
// The library's own version, for programs that check what they loaded against their header.
#include "sansock/version.h"

extern "C" int sansock_version(void) { return SANSOCK_VERSION_NUMBER; }

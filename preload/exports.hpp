// SPDX-License-Identifier: MIT
// The calls the preload library puts in front of the C library's (preload/preload.map lists
// them: they and sansock_preload_* are all it exports).
#pragma once

#define SANSOCK_PRELOAD_EXPORT extern "C" [[gnu::visibility("default")]]

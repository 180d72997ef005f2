/* SPDX-License-Identifier: MIT */
/* What a program running under libsansock-preload.so may ask it. The preload is loaded with
 * LD_PRELOAD, not linked, so find these with dlsym(RTLD_DEFAULT, "sansock_preload_fd_kind"):
 * NULL means the preload is not loaded. */
#ifndef SANSOCK_PRELOAD_H
#define SANSOCK_PRELOAD_H

#include "sansock/sansock.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What carries descriptor fd: 0 the kernel (any descriptor that is not the two below), 1 a
 * sansock connection, 2 a listener for kernel and sansock clients, 3 a sansock socket
 * inherited from the parent process (it fails with EOPNOTSUPP). */
typedef int (*sansock_preload_fd_kind_fn)(int fd);
/* The counters of the preload's sansock context (sansock_context_stats); -ENODEV if it has
 * made none (nothing was carried by sansock). */
typedef int (*sansock_preload_stats_fn)(struct sansock_context_stats* out);

#ifdef __cplusplus
}
#endif

#endif

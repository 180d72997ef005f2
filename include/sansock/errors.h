/* SPDX-License-Identifier: MIT */
/* sansock error codes: every public function returns >= 0 on success or a negated errno. */
#ifndef SANSOCK_ERRORS_H
#define SANSOCK_ERRORS_H

#include <errno.h>

#ifdef __cplusplus
extern "C" {
#endif
#pragma GCC visibility push(default) /* the library is built -fvisibility=hidden */

/* The Windows conditions sansock reproduces, by the name users know them under.
 * Each is a negated errno, exactly as returned (docs/semantics.md, section 1). */
#define SANSOCK_E_NOTSOCK (-ENOTSOCK)               /* WSAENOTSOCK: not (or no longer) a socket */
#define SANSOCK_E_OPERATION_ABORTED (-ECANCELED)    /* WSA_OPERATION_ABORTED: cancelled by close or abort */
#define SANSOCK_E_CONNRESET (-ECONNRESET)           /* WSAECONNRESET: the peer closed hard */
#define SANSOCK_E_WOULDBLOCK (-EWOULDBLOCK)         /* WSAEWOULDBLOCK: a nonblocking call cannot finish now */
#define SANSOCK_E_NETDOWN (-ENETDOWN)               /* WSAENETDOWN: the device or port went away */
#define SANSOCK_E_ASYNC (-EINPROGRESS)              /* WS_S_ASYNC: the callback will report the result */
#define SANSOCK_E_INVALID_OPERATION (-EBADFD)       /* WS_E_INVALID_OPERATION: not valid in this state */
#define SANSOCK_E_OBJECT_FAULTED (-ENOTRECOVERABLE) /* WS_E_OBJECT_FAULTED: only close, abort, free work */
#define SANSOCK_E_TIMED_OUT (-ETIMEDOUT)            /* WS_E_OPERATION_TIMED_OUT */
#define SANSOCK_E_INVALIDARG (-EINVAL)              /* E_INVALIDARG */

/* A message for any code a sansock function returns (negated errno) or for 0.
 * Never NULL; the string is static. Unknown codes get a generic message with no number
 * formatting, so the call is thread-safe and allocation-free. */
const char* sansock_strerror(int code);

#pragma GCC visibility pop
#ifdef __cplusplus
}
#endif

#endif /* SANSOCK_ERRORS_H */

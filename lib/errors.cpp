// SPDX-License-Identifier: MIT
// sansock_strerror: the message for each code of docs/semantics.md section 1.
#include <cstring>

#include "sansock/errors.h"

namespace {

// The Windows-derived conditions get the wording of their Windows names, so users recognise
// them; anything else falls back to the C library's text for the errno.
const char* sansock_message(int code) noexcept {
    switch (code) {
    case 0: return "success";
    case -ENOTSOCK: return "not a socket (the handle was closed or never valid) [WSAENOTSOCK]";
    case -ECANCELED: return "operation aborted by close or abort [WSA_OPERATION_ABORTED]";
    case -ECONNRESET: return "connection reset by the peer [WSAECONNRESET]";
    case -EWOULDBLOCK: return "operation would block [WSAEWOULDBLOCK]";
    case -ENETDOWN: return "network device or port went down [WSAENETDOWN]";
    case -EINPROGRESS: return "operation in progress; the callback reports the result [WS_S_ASYNC]";
    case -EBADFD: return "invalid operation in the object's current state [WS_E_INVALID_OPERATION]";
    case -ENOTRECOVERABLE: return "object is faulted; only close, abort and free work [WS_E_OBJECT_FAULTED]";
    case -ETIMEDOUT: return "operation timed out [WS_E_OPERATION_TIMED_OUT]";
    case -EINVAL: return "invalid argument [E_INVALIDARG]";
    default: return nullptr;
    }
}

} // namespace

extern "C" const char* sansock_strerror(int code) {
    if (const char* message = sansock_message(code)) return message;
    if (code > 0) return "not an error code (a positive value is a success result)";
    // Not negated before this test: -INT_MIN overflows. Errno values are below 4096.
    if (code < -4095) return "unknown error code";
    // strerrordesc_np (glibc >= 2.32) is thread-safe and never formats into a buffer.
    if (const char* text = strerrordesc_np(-code)) return text;
    return "unknown error code";
}

// SPDX-License-Identifier: MIT
// The socket options the tests set, each one call: one copy for every suite.
#pragma once

#include <sys/socket.h>
#include <sys/time.h>

#include "sansock/sansock.h"

namespace sansock::test {

inline int set_int_option(sansock_socket_t s, int name, int value) {
    return sansock_setsockopt(s, SOL_SOCKET, name, &value, sizeof value);
}
inline int set_nonblocking(sansock_socket_t s, bool on) { return set_int_option(s, SANSOCK_SO_NONBLOCK, on ? 1 : 0); }
inline int set_linger(sansock_socket_t s, int onoff, int seconds) {
    linger l{};
    l.l_onoff = onoff;
    l.l_linger = seconds;
    return sansock_setsockopt(s, SOL_SOCKET, SO_LINGER, &l, sizeof l);
}
inline int set_dontlinger(sansock_socket_t s) { return set_int_option(s, SO_DONTLINGER, 1); }
// SO_RCVTIMEO or SO_SNDTIMEO in milliseconds.
inline int set_timeout(sansock_socket_t s, int name, long ms) {
    timeval tv{ms / 1000, (ms % 1000) * 1000};
    return sansock_setsockopt(s, SOL_SOCKET, name, &tv, sizeof tv);
}

} // namespace sansock::test

// SPDX-License-Identifier: MIT
// What option_calls.cpp keeps for sansock connections: the values of options taken with no
// effect (so getsockopt reads back what the program set), and FIONREAD's byte count.
#pragma once

#include <sys/socket.h>

#include "sansock/sansock.h"

namespace sansock::preload {

// Stores an int-sized (or smaller) option value for socket `s`: 0, or -1 with errno (EINVAL:
// a NULL value or one longer than an int; ENOMEM).
int remember_option(sansock_socket_t s, int level, int name, const void* value, socklen_t length);
// Reads it back (0 if never set), as getsockopt does: 0 or -1 with errno.
int recall_option(sansock_socket_t s, int level, int name, void* value, socklen_t* length);
// The socket is gone: its stored values go too.
void forget_options(sansock_socket_t s);
// getsockopt's way of giving an int.
int put_int(int answer, void* value, socklen_t* length);
// Bytes a recv could take now without waiting (FIONREAD), or a negated errno.
long readable_bytes(sansock_socket_t s);

} // namespace sansock::preload

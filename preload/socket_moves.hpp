// SPDX-License-Identifier: MIT
// Moving a descriptor number between the kernel and sansock: a connected kernel socket's
// number becomes its sansock connection's pollable descriptor, a listening one becomes an
// epoll instance over both listeners; and the bookkeeping of numbers that share a socket.
#pragma once

#include <sys/socket.h>

#include "preload/fd_table.hpp"
#include "sansock/sansock.h"

namespace sansock::preload {

// Gives the sansock socket the options the program set on the kernel socket `fd` (those in
// `bits`) and, always, its O_NONBLOCK and IPV6_V6ONLY.
void carry_options(int fd, uint8_t bits, sansock_socket_t s);
// `fd` (a kernel socket) becomes connection `s`: 0, or -1 with errno (then `s` is closed and
// the number is still the kernel socket, unconnected).
int adopt_connected(int fd, sansock_socket_t s);
// A new number for an accepted connection (accept4's flags): the number, or -1 with errno.
int adopt_accepted(sansock_socket_t s, int flags);
// After listen on a candidate: listens on sansock as well, or leaves it a kernel listener.
void make_dual_listener(int fd, const fd_entry& e, int backlog);
// A call on a socket inherited across fork: -1, EOPNOTSUPP, said once per process.
int refuse_inherited(int fd);
// A number of a stream or listener was closed: closes the socket with its last number.
// 0 or -1 with errno (a lingering close's failure).
int forget_number(const fd_entry& e);
// `copy` is a new number for what `fd` is (dup and friends).
void share_number(int fd, int copy);

} // namespace sansock::preload

// SPDX-License-Identifier: MIT
// The preload's process state: its settings, its one sansock context (made at the first
// connect or listen that goes over sansock), the listeners, how many descriptor numbers share
// each socket, and what happens at fork and at exit. docs/transparent-mode.md.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <memory>

#include "preload/config.hpp"
#include "preload/fd_table.hpp"
#include "sansock/sansock.h"

namespace sansock::preload {

const config& settings();
// The context, made on first use; nullptr when the preload is off or the context cannot be
// made (said once on stderr when verbose; the program then runs on the kernel alone).
sansock_context* context();
// The context if one was made, without making it.
sansock_context* existing_context();
// True in a child forked after the parent's sockets were made: those fail cleanly there.
bool in_forked_child();

// Calls made by the library's own code (sansock, rdma-core) go to the kernel unchanged.
class own_calls {
public:
    own_calls() { ++depth_; }
    ~own_calls() { --depth_; }
    own_calls(const own_calls&) = delete;
    own_calls& operator=(const own_calls&) = delete;
    static bool active() { return depth_ > 0; }

private:
    static thread_local int depth_;
};

// A listener that takes kernel and sansock clients: the program's descriptor number is an
// epoll instance that holds both listening descriptors (so its own poll, select or epoll sees
// either kind of client) and a wake-up for a close while accept waits.
struct dual_listener {
    int kernel_fd = -1; // the kernel listening socket, at a number of our own
    int epoll_fd = -1;  // our own number of the epoll instance the program's number is
    int wake_fd = -1;   // eventfd: close wakes a blocked accept
    sansock_socket_t socket = 0;
    std::atomic<bool> closing{false};
    std::atomic<bool> sansock_failed{false};
    std::atomic<unsigned> turn{0}; // which side accept tries first, in turn
    ~dual_listener();
};
uint64_t add_listener(std::shared_ptr<dual_listener> listener);
std::shared_ptr<dual_listener> find_listener(uint64_t id);
// The listener's last number was closed: it wakes any accept and goes once they return.
void drop_listener(uint64_t id);

// Descriptor numbers per socket (dup, dup2, dup3, F_DUPFD): the socket closes with the last.
void add_number(const fd_entry& e);
// True when `e`'s last number went.
bool release_number(const fd_entry& e);

// A sansock connection's last number was closed: sansock_close, as a Linux close would do it
// (a nonblocking socket with SO_LINGER {1, n} waits, as Linux does). 0 or a negated errno.
int close_stream(sansock_socket_t s);

// The result of a sansock call as the C library gives it: -1 and errno, or the value.
// A handle that went away under the call (closed by another thread) is EBADF.
inline long posix_result(long rc) {
    if (rc >= 0) return rc;
    errno = (rc == -ENOTSOCK || rc == -ECANCELED) ? EBADF : int(-rc);
    return -1;
}

void count_fallback();
// One line on stderr, prefixed "sansock-preload: ", only when SANSOCK_PRELOAD_VERBOSE is set
// (warnings are always written).
[[gnu::format(printf, 1, 2)]] void say(const char* format, ...);
[[gnu::format(printf, 1, 2)]] void warn(const char* format, ...);

} // namespace sansock::preload

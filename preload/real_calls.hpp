// SPDX-License-Identifier: MIT
// The C library's own socket calls, found behind the preload library with dlsym(RTLD_NEXT):
// every call the preload does not carry over sansock goes to these unchanged.
#pragma once

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

namespace sansock::preload {

struct real_calls {
    int (*socket)(int, int, int);
    int (*bind)(int, const sockaddr*, socklen_t);
    int (*listen)(int, int);
    int (*accept)(int, sockaddr*, socklen_t*);
    int (*accept4)(int, sockaddr*, socklen_t*, int);
    int (*connect)(int, const sockaddr*, socklen_t);
    ssize_t (*read)(int, void*, size_t);
    ssize_t (*write)(int, const void*, size_t);
    ssize_t (*readv)(int, const iovec*, int);
    ssize_t (*writev)(int, const iovec*, int);
    ssize_t (*send)(int, const void*, size_t, int);
    ssize_t (*recv)(int, void*, size_t, int);
    ssize_t (*sendto)(int, const void*, size_t, int, const sockaddr*, socklen_t);
    ssize_t (*recvfrom)(int, void*, size_t, int, sockaddr*, socklen_t*);
    ssize_t (*sendmsg)(int, const msghdr*, int);
    ssize_t (*recvmsg)(int, msghdr*, int);
    int (*sendmmsg)(int, mmsghdr*, unsigned int, int);
    int (*recvmmsg)(int, mmsghdr*, unsigned int, int, timespec*);
    ssize_t (*sendfile)(int, int, off_t*, size_t);
    ssize_t (*splice)(int, off_t*, int, off_t*, size_t, unsigned int);
    int (*shutdown)(int, int);
    int (*close)(int);
    int (*setsockopt)(int, int, int, const void*, socklen_t);
    int (*getsockopt)(int, int, int, void*, socklen_t*);
    int (*getsockname)(int, sockaddr*, socklen_t*);
    int (*getpeername)(int, sockaddr*, socklen_t*);
    int (*fcntl)(int, int, ...);
    int (*ioctl)(int, unsigned long, ...);
    int (*dup)(int);
    int (*dup2)(int, int);
    int (*dup3)(int, int, int);
};

// Resolved on first use (a constructor of another library may call before ours ran). A call
// the C library does not have ends the process with a message: nothing can go on without it.
const real_calls& real();

} // namespace sansock::preload

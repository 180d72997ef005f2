// SPDX-License-Identifier: MIT
#include "preload/real_calls.hpp"

#include <dlfcn.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace sansock::preload {
namespace {

real_calls table{};
std::atomic<bool> resolved{false};
std::once_flag once;

template <typename F>
void find(F& slot, const char* name) {
    void* found = ::dlsym(RTLD_NEXT, name);
    if (found == nullptr) {
        // No stdio: it may be what is being set up. A message, then the end.
        const char* parts[] = {"sansock-preload: the C library has no ", name, "; cannot go on\n"};
        for (const char* p : parts) [[maybe_unused]] ssize_t n = ::syscall(SYS_write, 2, p, std::strlen(p));
        std::abort();
    }
    slot = reinterpret_cast<F>(found);
}

void resolve() {
    find(table.socket, "socket");
    find(table.bind, "bind");
    find(table.listen, "listen");
    find(table.accept, "accept");
    find(table.accept4, "accept4");
    find(table.connect, "connect");
    find(table.read, "read");
    find(table.write, "write");
    find(table.readv, "readv");
    find(table.writev, "writev");
    find(table.send, "send");
    find(table.recv, "recv");
    find(table.sendto, "sendto");
    find(table.recvfrom, "recvfrom");
    find(table.sendmsg, "sendmsg");
    find(table.recvmsg, "recvmsg");
    find(table.sendmmsg, "sendmmsg");
    find(table.recvmmsg, "recvmmsg");
    find(table.sendfile, "sendfile");
    find(table.splice, "splice");
    find(table.shutdown, "shutdown");
    find(table.close, "close");
    find(table.setsockopt, "setsockopt");
    find(table.getsockopt, "getsockopt");
    find(table.getsockname, "getsockname");
    find(table.getpeername, "getpeername");
    find(table.fcntl, "fcntl");
    find(table.ioctl, "ioctl");
    find(table.dup, "dup");
    find(table.dup2, "dup2");
    find(table.dup3, "dup3");
    resolved.store(true, std::memory_order_release);
}

} // namespace

const real_calls& real() {
    if (!resolved.load(std::memory_order_acquire)) std::call_once(once, resolve);
    return table;
}

} // namespace sansock::preload

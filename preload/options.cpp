// SPDX-License-Identifier: MIT
#include "preload/options.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <pthread.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

#include "preload/runtime.hpp"

namespace sansock::preload {
namespace {

struct stored_option {
    int level, name, value;
};

std::mutex& options_mutex() {
    static std::mutex* m = new std::mutex; // process state of the preload; used until exit
    return *m;
}
std::unordered_map<sansock_socket_t, std::vector<stored_option>>& stored() {
    static auto* map = new std::unordered_map<sansock_socket_t, std::vector<stored_option>>;
    return *map;
}

// A fork while another thread holds the lock would leave it held in the child forever.
[[gnu::constructor]] void guard_fork() {
    ::pthread_atfork([] { options_mutex().lock(); }, [] { options_mutex().unlock(); },
                     [] { options_mutex().unlock(); });
}

} // namespace

int put_int(int answer, void* value, socklen_t* length) {
    if (value == nullptr || length == nullptr) {
        errno = EFAULT;
        return -1;
    }
    const socklen_t size = *length < sizeof answer ? *length : socklen_t(sizeof answer);
    std::memcpy(value, &answer, size);
    *length = size;
    return 0;
}

int remember_option(sansock_socket_t s, int level, int name, const void* value, socklen_t length) {
    if (value == nullptr || length == 0 || length > sizeof(int)) {
        errno = value == nullptr ? EFAULT : EINVAL;
        return -1;
    }
    int v = 0;
    std::memcpy(&v, value, length);
    try {
        std::lock_guard lock(options_mutex());
        std::vector<stored_option>& list = stored()[s];
        for (stored_option& o : list)
            if (o.level == level && o.name == name) {
                o.value = v;
                return 0;
            }
        list.push_back({level, name, v});
    } catch (const std::bad_alloc&) {
        errno = ENOMEM;
        return -1;
    }
    return 0;
}

int recall_option(sansock_socket_t s, int level, int name, void* value, socklen_t* length) {
    // Unset, an option reads as on Linux, except the segment size: sansock has none, and a
    // reader that takes 0 for nonsense (iperf3) gets the provider's default buffer size, what
    // one message carries.
    int v = level == IPPROTO_TCP && name == TCP_MAXSEG ? 16384 : 0;
    {
        std::lock_guard lock(options_mutex());
        const auto it = stored().find(s);
        if (it != stored().end())
            for (const stored_option& o : it->second)
                if (o.level == level && o.name == name) v = o.value;
    }
    return put_int(v, value, length);
}

void forget_options(sansock_socket_t s) {
    std::lock_guard lock(options_mutex());
    stored().erase(s);
}

long readable_bytes(sansock_socket_t s) {
    int n = 0;
    socklen_t size = sizeof n;
    const int rc = sansock_getsockopt(s, SOL_SOCKET, SANSOCK_SO_NREAD, &n, &size);
    return rc != 0 ? rc : n;
}

} // namespace sansock::preload

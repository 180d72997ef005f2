// SPDX-License-Identifier: MIT
// setsockopt, getsockopt, getsockname, getpeername, fcntl, ioctl on the preload's sockets.
// Which options reach the switch, which are taken with no effect and which are refused is
// the table in docs/transparent-mode.md, "Socket options"; it is this file's `option_fate`.
// Both the plain and the 64-bit names are defined here, so the header must not turn one
// into the other.
#undef _FILE_OFFSET_BITS
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "preload/exports.hpp"
#include "preload/options.hpp"
#include "preload/real_calls.hpp"
#include "preload/runtime.hpp"
#include "preload/socket_moves.hpp"

using namespace sansock::preload;

namespace {

enum class fate { switch_option, no_effect, refused };

fate option_fate(int level, int name) {
    if (level == SOL_SOCKET) {
        switch (name) {
        case SO_LINGER: case SO_KEEPALIVE: case SO_RCVTIMEO: case SO_SNDTIMEO: case SO_RCVBUF: case SO_SNDBUF:
        case SO_ERROR: case SO_TYPE:
            return fate::switch_option;
        case SO_REUSEADDR: case SO_REUSEPORT: case SO_PRIORITY:
            return fate::no_effect; // a connection over RDMA has no port reuse or queueing priority to set
        default: return fate::refused;
        }
    }
    if (level == IPPROTO_TCP) {
        switch (name) {
        case TCP_KEEPIDLE: case TCP_KEEPINTVL: case TCP_KEEPCNT: return fate::switch_option;
        // sansock sends at once and has no segments, congestion control or ACK timing to tune.
        case TCP_NODELAY: case TCP_CORK: case TCP_QUICKACK: case TCP_MAXSEG: case TCP_CONGESTION: return fate::no_effect;
        default: return fate::refused;
        }
    }
    if (level == IPPROTO_IPV6 && name == IPV6_V6ONLY) return fate::switch_option;
    if ((level == IPPROTO_IP && name == IP_TOS) || (level == IPPROTO_IPV6 && name == IPV6_TCLASS)) return fate::no_effect;
    return fate::refused;
}

uint8_t candidate_bit(int level, int name) {
    if (level == SOL_SOCKET) {
        switch (name) {
        case SO_LINGER: return set_linger;
        case SO_KEEPALIVE: return set_keepalive;
        case SO_RCVTIMEO: return set_rcvtimeo;
        case SO_SNDTIMEO: return set_sndtimeo;
        case SO_RCVBUF: return set_rcvbuf;
        case SO_SNDBUF: return set_sndbuf;
        default: return 0;
        }
    }
    if (level == IPPROTO_TCP && (name == TCP_KEEPIDLE || name == TCP_KEEPINTVL || name == TCP_KEEPCNT)) return set_keepalive;
    if (level == IPPROTO_IPV6 && name == IPV6_V6ONLY) return set_v6only;
    return 0;
}

int stream_setsockopt(const fd_entry& e, int level, int name, const void* value, socklen_t length) {
    switch (option_fate(level, name)) {
    case fate::switch_option: {
        const int rc = sansock_setsockopt(e.value, level, name, value, length);
        // The receive window is fixed when the connection opens; Linux takes a late SO_RCVBUF
        // and so does the preload, with no effect.
        if (rc == -EISCONN && level == SOL_SOCKET && name == SO_RCVBUF) return remember_option(e.value, level, name, value, length);
        return int(posix_result(rc));
    }
    case fate::no_effect: return remember_option(e.value, level, name, value, length);
    case fate::refused: break;
    }
    errno = ENOPROTOOPT;
    return -1;
}

int stream_getsockopt(const fd_entry& e, int level, int name, void* value, socklen_t* length) {
    if (value == nullptr || length == nullptr) {
        errno = EFAULT;
        return -1;
    }
    if (level == SOL_SOCKET && (name == SO_DOMAIN || name == SO_PROTOCOL || name == SO_ACCEPTCONN)) {
        int answer = 0;
        if (name == SO_PROTOCOL) answer = IPPROTO_TCP;
        if (name == SO_DOMAIN) {
            sockaddr_storage local{};
            socklen_t size = sizeof local;
            answer = sansock_getsockname(e.value, reinterpret_cast<sockaddr*>(&local), &size) == 0 ? local.ss_family : AF_INET;
        }
        return put_int(answer, value, length);
    }
    if (level == IPPROTO_TCP && name == TCP_INFO) {
        // What a TCP_INFO reader (iperf3 does) needs to go on: an established connection;
        // sansock has no segments, windows or round-trip estimates to report (all 0).
        tcp_info info{};
        info.tcpi_state = TCP_ESTABLISHED;
        const socklen_t size = std::min<socklen_t>(*length, sizeof info);
        std::memcpy(value, &info, size);
        *length = size;
        return 0;
    }
    switch (option_fate(level, name)) {
    case fate::switch_option: return int(posix_result(sansock_getsockopt(e.value, level, name, value, length)));
    case fate::no_effect: return recall_option(e.value, level, name, value, length);
    case fate::refused: break;
    }
    errno = ENOPROTOOPT;
    return -1;
}

long arg_of(va_list& args) { return va_arg(args, long); }

int stream_fcntl(int fd, const fd_entry& e, int command, long arg) {
    switch (command) {
    case F_SETFL: {
        if (arg & O_ASYNC) {
            errno = EINVAL; // no SIGIO from a sansock connection
            return -1;
        }
        const int nonblocking = (arg & O_NONBLOCK) != 0;
        const int rc = sansock_setsockopt(e.value, SOL_SOCKET, SANSOCK_SO_NONBLOCK, &nonblocking, sizeof nonblocking);
        if (rc != 0) return int(posix_result(rc));
        return real().fcntl(fd, F_SETFL, arg);
    }
    case F_SETOWN: case F_SETSIG: case F_SETOWN_EX:
        errno = EINVAL;
        return -1;
    default: return real().fcntl(fd, command, arg);
    }
}

} // namespace

SANSOCK_PRELOAD_EXPORT int setsockopt(int fd, int level, int name, const void* value, socklen_t length) {
    const fd_entry e = lookup(fd);
    switch (e.kind) {
    case fd_kind::kernel: return real().setsockopt(fd, level, name, value, length);
    case fd_kind::candidate: {
        const int rc = real().setsockopt(fd, level, name, value, length);
        if (rc == 0) add_options(fd, candidate_bit(level, name));
        return rc;
    }
    case fd_kind::stream: return stream_setsockopt(e, level, name, value, length);
    case fd_kind::listener: {
        const std::shared_ptr<dual_listener> l = find_listener(e.value);
        if (l == nullptr) break;
        const int rc = real().setsockopt(l->kernel_fd, level, name, value, length);
        if (rc == 0 && option_fate(level, name) == fate::switch_option) sansock_setsockopt(l->socket, level, name, value, length);
        return rc;
    }
    case fd_kind::inherited: return refuse_inherited(fd);
    }
    errno = EBADF;
    return -1;
}

SANSOCK_PRELOAD_EXPORT int getsockopt(int fd, int level, int name, void* value, socklen_t* length) {
    const fd_entry e = lookup(fd);
    switch (e.kind) {
    case fd_kind::kernel: case fd_kind::candidate: return real().getsockopt(fd, level, name, value, length);
    case fd_kind::stream: return stream_getsockopt(e, level, name, value, length);
    case fd_kind::listener: {
        const std::shared_ptr<dual_listener> l = find_listener(e.value);
        if (l == nullptr) break;
        return real().getsockopt(l->kernel_fd, level, name, value, length);
    }
    case fd_kind::inherited: return refuse_inherited(fd);
    }
    errno = EBADF;
    return -1;
}

SANSOCK_PRELOAD_EXPORT int getsockname(int fd, sockaddr* address, socklen_t* length) {
    const fd_entry e = lookup(fd);
    if (e.kind == fd_kind::stream) return int(posix_result(sansock_getsockname(e.value, address, length)));
    if (e.kind == fd_kind::listener) {
        if (const std::shared_ptr<dual_listener> l = find_listener(e.value)) return real().getsockname(l->kernel_fd, address, length);
        errno = EBADF;
        return -1;
    }
    if (e.kind == fd_kind::inherited) return refuse_inherited(fd);
    return real().getsockname(fd, address, length);
}

SANSOCK_PRELOAD_EXPORT int getpeername(int fd, sockaddr* address, socklen_t* length) {
    const fd_entry e = lookup(fd);
    if (e.kind == fd_kind::stream) return int(posix_result(sansock_getpeername(e.value, address, length)));
    if (e.kind == fd_kind::listener) {
        errno = ENOTCONN;
        return -1;
    }
    if (e.kind == fd_kind::inherited) return refuse_inherited(fd);
    return real().getpeername(fd, address, length);
}

SANSOCK_PRELOAD_EXPORT int fcntl(int fd, int command, ...) {
    va_list args;
    va_start(args, command);
    const long arg = arg_of(args);
    va_end(args);
    const fd_entry e = lookup(fd);
    if (command == F_DUPFD || command == F_DUPFD_CLOEXEC) {
        const int copy = real().fcntl(fd, command, arg);
        if (copy >= 0 && e.kind != fd_kind::kernel) share_number(fd, copy);
        return copy;
    }
    if (e.kind == fd_kind::stream) return stream_fcntl(fd, e, command, arg);
    return real().fcntl(fd, command, arg);
}

SANSOCK_PRELOAD_EXPORT int fcntl64(int fd, int command, ...) {
    va_list args;
    va_start(args, command);
    const long arg = arg_of(args);
    va_end(args);
    return fcntl(fd, command, arg);
}

SANSOCK_PRELOAD_EXPORT int ioctl(int fd, unsigned long request, ...) {
    va_list args;
    va_start(args, request);
    void* arg = va_arg(args, void*);
    va_end(args);
    const fd_entry e = lookup(fd);
    if (e.kind != fd_kind::stream) {
        if (e.kind == fd_kind::inherited) return refuse_inherited(fd);
        return real().ioctl(fd, request, arg); // a listener's FIONBIO sets its epoll number's O_NONBLOCK, which accept reads
    }
    if (arg == nullptr) {
        errno = EFAULT;
        return -1;
    }
    if (request == FIONBIO) {
        const int nonblocking = *static_cast<int*>(arg) != 0;
        const int rc = sansock_setsockopt(e.value, SOL_SOCKET, SANSOCK_SO_NONBLOCK, &nonblocking, sizeof nonblocking);
        if (rc != 0) return int(posix_result(rc));
        return real().ioctl(fd, request, arg);
    }
    if (request == FIONREAD) {
        const long n = readable_bytes(e.value);
        if (n < 0) return int(posix_result(n));
        *static_cast<int*>(arg) = int(n);
        return 0;
    }
    errno = ENOTTY; // no other ioctl on a sansock connection
    return -1;
}

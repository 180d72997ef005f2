// SPDX-License-Identifier: MIT
// read, write, readv, writev, send, recv, sendto, recvfrom, sendmsg, recvmsg, sendmmsg,
// recvmmsg, sendfile, splice and the fortified __read_chk, __recv_chk, __recvfrom_chk: on a
// sansock connection they are sansock_send and sansock_recv.
// Both the plain and the 64-bit names are defined here, so the header must not turn one
// into the other.
#undef _FILE_OFFSET_BITS
#include <pthread.h>
#include <signal.h>
#include <sys/sendfile.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "preload/exports.hpp"
#include "preload/real_calls.hpp"
#include "preload/runtime.hpp"
#include "preload/socket_moves.hpp"

using namespace sansock::preload;

namespace {

// A data call on a number that is ours but no connection: a listener has none (ENOTCONN, as a
// listening TCP socket); an inherited socket fails as refuse_inherited says.
long not_a_connection(int fd, const fd_entry& e) {
    if (e.kind == fd_kind::inherited) return refuse_inherited(fd);
    errno = ENOTCONN;
    return -1;
}

long send_result(long rc, int flags) {
    // The kernel raises SIGPIPE for a send on a connection that cannot send any more.
    if (rc == -EPIPE && !(flags & MSG_NOSIGNAL)) ::pthread_kill(::pthread_self(), SIGPIPE);
    return posix_result(rc);
}

ssize_t stream_send(const fd_entry& e, const void* data, size_t length, int flags) {
    const ssize_t rc = sansock_send(e.value, data, length, flags | MSG_NOSIGNAL);
    if (rc == -EOPNOTSUPP) say("send flags 0x%x: only MSG_NOSIGNAL, MSG_DONTWAIT and MSG_MORE go over sansock", unsigned(flags));
    return send_result(rc, flags);
}

// Flags a Linux TCP receive takes and ignores.
constexpr int ignored_recv_flags = MSG_NOSIGNAL | MSG_CMSG_CLOEXEC;

ssize_t stream_recv(const fd_entry& e, void* data, size_t length, int flags) {
    const ssize_t rc = sansock_recv(e.value, data, length, flags & ~ignored_recv_flags);
    if (rc == -EOPNOTSUPP) say("recv flags 0x%x: only MSG_PEEK, MSG_WAITALL and MSG_DONTWAIT go over sansock", unsigned(flags));
    return posix_result(rc);
}

// Gathers into one send when the pieces are small (one message instead of many), else sends
// piece by piece and stops at the first short one, as a stream socket may.
ssize_t stream_sendv(const fd_entry& e, const iovec* iov, size_t count, int flags) {
    size_t total = 0;
    for (size_t k = 0; k < count; ++k) total += iov[k].iov_len;
    if (total == 0) return 0;
    constexpr size_t gather_limit = 16 * 1024;
    if (count > 1 && total <= gather_limit) {
        thread_local char gathered[gather_limit];
        size_t at = 0;
        for (size_t k = 0; k < count; ++k) {
            std::memcpy(gathered + at, iov[k].iov_base, iov[k].iov_len);
            at += iov[k].iov_len;
        }
        return stream_send(e, gathered, total, flags);
    }
    ssize_t sent = 0;
    for (size_t k = 0; k < count; ++k) {
        if (iov[k].iov_len == 0) continue;
        const ssize_t n = sansock_send(e.value, iov[k].iov_base, iov[k].iov_len, (flags | MSG_NOSIGNAL) | (sent > 0 ? MSG_DONTWAIT : 0));
        if (n < 0) return sent > 0 ? sent : send_result(n, flags);
        sent += n;
        if (size_t(n) < iov[k].iov_len) break;
    }
    return sent;
}

// Fills the first piece (waiting as the socket does), then the others from what is there.
ssize_t stream_recvv(const fd_entry& e, const iovec* iov, size_t count, int flags) {
    ssize_t got = 0;
    for (size_t k = 0; k < count; ++k) {
        if (iov[k].iov_len == 0) continue;
        const ssize_t n = sansock_recv(e.value, iov[k].iov_base, iov[k].iov_len, (flags & ~ignored_recv_flags) | (got > 0 ? MSG_DONTWAIT : 0));
        if (n < 0) return got > 0 ? got : posix_result(n);
        got += n;
        if (n == 0 || size_t(n) < iov[k].iov_len) break;
    }
    return got;
}

} // namespace

SANSOCK_PRELOAD_EXPORT ssize_t send(int fd, const void* data, size_t length, int flags) {
    const fd_entry e = lookup(fd);
    if (e.kind == fd_kind::stream) return stream_send(e, data, length, flags);
    if (e.kind == fd_kind::kernel || e.kind == fd_kind::candidate) return real().send(fd, data, length, flags);
    return not_a_connection(fd, e);
}

SANSOCK_PRELOAD_EXPORT ssize_t write(int fd, const void* data, size_t length) {
    const fd_entry e = lookup(fd);
    if (e.kind == fd_kind::stream) return stream_send(e, data, length, 0);
    if (e.kind == fd_kind::kernel || e.kind == fd_kind::candidate) return real().write(fd, data, length);
    return not_a_connection(fd, e);
}

SANSOCK_PRELOAD_EXPORT ssize_t sendto(int fd, const void* data, size_t length, int flags, const sockaddr* to, socklen_t size) {
    const fd_entry e = lookup(fd);
    if (e.kind == fd_kind::stream) return stream_send(e, data, length, flags); // a connected stream ignores `to`, as TCP does
    if (e.kind == fd_kind::kernel || e.kind == fd_kind::candidate) return real().sendto(fd, data, length, flags, to, size);
    return not_a_connection(fd, e);
}

SANSOCK_PRELOAD_EXPORT ssize_t recv(int fd, void* data, size_t length, int flags) {
    const fd_entry e = lookup(fd);
    if (e.kind == fd_kind::stream) return stream_recv(e, data, length, flags);
    if (e.kind == fd_kind::kernel || e.kind == fd_kind::candidate) return real().recv(fd, data, length, flags);
    return not_a_connection(fd, e);
}

SANSOCK_PRELOAD_EXPORT ssize_t read(int fd, void* data, size_t length) {
    const fd_entry e = lookup(fd);
    if (e.kind == fd_kind::stream) return stream_recv(e, data, length, 0);
    if (e.kind == fd_kind::kernel || e.kind == fd_kind::candidate) return real().read(fd, data, length);
    return not_a_connection(fd, e);
}

SANSOCK_PRELOAD_EXPORT ssize_t recvfrom(int fd, void* data, size_t length, int flags, sockaddr* from, socklen_t* size) {
    const fd_entry e = lookup(fd);
    if (e.kind == fd_kind::stream) {
        if (size != nullptr) *size = 0; // as TCP: no address
        return stream_recv(e, data, length, flags);
    }
    if (e.kind == fd_kind::kernel || e.kind == fd_kind::candidate) return real().recvfrom(fd, data, length, flags, from, size);
    return not_a_connection(fd, e);
}

// _FORTIFY_SOURCE builds call these instead (the C library's own go to its internal read).
SANSOCK_PRELOAD_EXPORT ssize_t __read_chk(int fd, void* data, size_t length, size_t room) {
    if (length > room) std::abort(); // as the C library's check does
    return read(fd, data, length);
}
SANSOCK_PRELOAD_EXPORT ssize_t __recv_chk(int fd, void* data, size_t length, size_t room, int flags) {
    if (length > room) std::abort();
    return recv(fd, data, length, flags);
}
SANSOCK_PRELOAD_EXPORT ssize_t __recvfrom_chk(int fd, void* data, size_t length, size_t room, int flags, sockaddr* from,
                                              socklen_t* size) {
    if (length > room) std::abort();
    return recvfrom(fd, data, length, flags, from, size);
}

SANSOCK_PRELOAD_EXPORT ssize_t writev(int fd, const iovec* iov, int count) {
    const fd_entry e = lookup(fd);
    if (e.kind == fd_kind::kernel || e.kind == fd_kind::candidate) return real().writev(fd, iov, count);
    if (e.kind != fd_kind::stream) return not_a_connection(fd, e);
    if (count < 0 || (count > 0 && iov == nullptr)) {
        errno = count < 0 ? EINVAL : EFAULT;
        return -1;
    }
    return stream_sendv(e, iov, size_t(count), 0);
}

SANSOCK_PRELOAD_EXPORT ssize_t readv(int fd, const iovec* iov, int count) {
    const fd_entry e = lookup(fd);
    if (e.kind == fd_kind::kernel || e.kind == fd_kind::candidate) return real().readv(fd, iov, count);
    if (e.kind != fd_kind::stream) return not_a_connection(fd, e);
    if (count < 0 || (count > 0 && iov == nullptr)) {
        errno = count < 0 ? EINVAL : EFAULT;
        return -1;
    }
    return stream_recvv(e, iov, size_t(count), 0);
}

SANSOCK_PRELOAD_EXPORT ssize_t sendmsg(int fd, const msghdr* message, int flags) {
    const fd_entry e = lookup(fd);
    if (e.kind == fd_kind::kernel || e.kind == fd_kind::candidate) return real().sendmsg(fd, message, flags);
    if (e.kind != fd_kind::stream) return not_a_connection(fd, e);
    if (message == nullptr) {
        errno = EFAULT;
        return -1;
    }
    if (message->msg_controllen != 0) {
        errno = EOPNOTSUPP; // no ancillary data over sansock (TCP carries none either)
        return -1;
    }
    return stream_sendv(e, message->msg_iov, message->msg_iovlen, flags);
}

SANSOCK_PRELOAD_EXPORT ssize_t recvmsg(int fd, msghdr* message, int flags) {
    const fd_entry e = lookup(fd);
    if (e.kind == fd_kind::kernel || e.kind == fd_kind::candidate) return real().recvmsg(fd, message, flags);
    if (e.kind != fd_kind::stream) return not_a_connection(fd, e);
    if (message == nullptr) {
        errno = EFAULT;
        return -1;
    }
    message->msg_namelen = 0;
    message->msg_controllen = 0;
    message->msg_flags = 0;
    return stream_recvv(e, message->msg_iov, message->msg_iovlen, flags);
}

SANSOCK_PRELOAD_EXPORT int sendmmsg(int fd, mmsghdr* messages, unsigned int count, int flags) {
    const fd_entry e = lookup(fd);
    if (e.kind == fd_kind::kernel || e.kind == fd_kind::candidate) return real().sendmmsg(fd, messages, count, flags);
    unsigned done = 0;
    for (; done < count; ++done) {
        const ssize_t n = sendmsg(fd, &messages[done].msg_hdr, flags | (done > 0 ? MSG_DONTWAIT : 0));
        if (n < 0) return done > 0 ? int(done) : -1;
        messages[done].msg_len = unsigned(n);
    }
    return int(done);
}

SANSOCK_PRELOAD_EXPORT int recvmmsg(int fd, mmsghdr* messages, unsigned int count, int flags, timespec* timeout) {
    const fd_entry e = lookup(fd);
    if (e.kind == fd_kind::kernel || e.kind == fd_kind::candidate) return real().recvmmsg(fd, messages, count, flags, timeout);
    unsigned done = 0;
    for (; done < count; ++done) {
        const ssize_t n = recvmsg(fd, &messages[done].msg_hdr, flags | (done > 0 ? MSG_DONTWAIT : 0));
        if (n < 0) return done > 0 ? int(done) : -1;
        messages[done].msg_len = unsigned(n);
        if (n == 0) return int(done + 1);
    }
    return int(done);
}

// sendfile to a sansock connection: read, then send (the kernel cannot splice into it).
SANSOCK_PRELOAD_EXPORT ssize_t sendfile(int out, int in, off_t* offset, size_t count) {
    const fd_entry e = lookup(out);
    if (e.kind == fd_kind::kernel || e.kind == fd_kind::candidate) {
        if (lookup(in).kind == fd_kind::kernel || lookup(in).kind == fd_kind::candidate) return real().sendfile(out, in, offset, count);
        errno = EINVAL; // a socket cannot be sendfile's source, as in the kernel
        return -1;
    }
    if (e.kind != fd_kind::stream) return not_a_connection(out, e);
    char buffer[64 * 1024];
    ssize_t sent = 0;
    off_t at = offset != nullptr ? *offset : 0;
    while (size_t(sent) < count) {
        const size_t want = std::min(sizeof buffer, count - size_t(sent));
        const ssize_t got = offset != nullptr ? ::pread(in, buffer, want, at) : read(in, buffer, want);
        if (got <= 0) {
            if (got < 0 && sent == 0) return -1;
            break;
        }
        ssize_t put = 0;
        while (put < got) {
            const ssize_t n = sansock_send(e.value, buffer + put, size_t(got - put), MSG_NOSIGNAL);
            if (n < 0) {
                // What was read but not sent is given back to a file without an offset.
                if (offset == nullptr) ::lseek(in, put - got, SEEK_CUR);
                if (sent + put > 0) {
                    sent += put;
                    if (offset != nullptr) *offset = at + put;
                    return sent;
                }
                return send_result(n, 0);
            }
            put += n;
        }
        sent += got;
        at += got;
    }
    if (offset != nullptr) *offset = at;
    return sent;
}

SANSOCK_PRELOAD_EXPORT ssize_t sendfile64(int out, int in, off_t* offset, size_t count) {
    return sendfile(out, in, offset, count);
}

// splice cannot move data into or out of a sansock connection: EINVAL, as for a descriptor
// the kernel cannot splice.
SANSOCK_PRELOAD_EXPORT ssize_t splice(int in, off_t* in_offset, int out, off_t* out_offset, size_t length, unsigned int flags) {
    if (lookup(in).kind > fd_kind::candidate || lookup(out).kind > fd_kind::candidate) {
        errno = EINVAL;
        return -1;
    }
    return real().splice(in, in_offset, out, out_offset, length, flags);
}

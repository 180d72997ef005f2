/* SPDX-License-Identifier: MIT */
/* sansock: stream sockets over RDMA with Windows SAN-provider close semantics. C11 and C++. */
#ifndef SANSOCK_H
#define SANSOCK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "sansock/errors.h"
#include "sansock/version.h"

#ifdef __cplusplus
extern "C" {
#endif
#pragma GCC visibility push(default) /* the library is built -fvisibility=hidden */

/* Every function returns >= 0 on success or a negated errno (see errors.h); errno is never
 * used. Errors any call can give besides those listed: -EINVAL for a NULL pointer argument. */

/* ---- Context ------------------------------------------------------------------------------ */

typedef struct sansock_context sansock_context;

enum sansock_progress_mode {
    SANSOCK_PROGRESS_THREAD = 0, /* an internal thread makes progress (default) */
    SANSOCK_PROGRESS_MANUAL = 1  /* the caller calls sansock_progress; blocking calls drive it too */
};

enum sansock_provider_kind {
    SANSOCK_PROVIDER_VERBS = 0,    /* RDMA through rdma-core (default) */
    SANSOCK_PROVIDER_LOOPBACK = 1  /* in-process, for tests: contexts reach each other by address */
};

enum sansock_log_level {
    SANSOCK_LOG_DEFAULT = 0, /* SANSOCK_LOG from the environment, else SANSOCK_LOG_WARN */
    SANSOCK_LOG_OFF = 1,
    SANSOCK_LOG_ERROR = 2,   /* the context cannot do what it was asked (a device failed) */
    SANSOCK_LOG_WARN = 3,    /* a connection was reset for a reason worth an operator's look */
    SANSOCK_LOG_INFO = 4,    /* connection events: resets from the peer, time-outs */
    SANSOCK_LOG_DEBUG = 5    /* everything else */
};

/* Receives one message (no trailing newline; valid only during the call) and its level. Called
 * from any thread running the context's code (its progress thread, a thread inside a sansock
 * call of the context, sansock_context_create and _destroy included), from several at once,
 * mostly with the context's internal locks held: it must not call sansock, and should return
 * soon. */
typedef void (*sansock_log_fn)(void* user, int level, const char* message);

struct sansock_context_attr {
    uint32_t size;                 /* sizeof(struct sansock_context_attr) */
    uint32_t provider;             /* enum sansock_provider_kind */
    uint32_t progress_mode;        /* enum sansock_progress_mode */
    uint32_t graceful_timeout_ms;  /* background graceful disconnect, then hard; 0: default 10000 */
    /* The provider's buffers, for both providers (loopback checks what verbs needs): slot_size
     * 64 to 2^30 bytes, send_slots >= 1, recv_slots >= 2, and (send_slots + recv_slots) *
     * slot_size (the memory a connection registers) at most 2^30; else -EINVAL. */
    uint32_t slot_size;            /* provider buffer slot; 0: default 16384 */
    uint32_t send_slots;           /* 0: default 8 */
    uint32_t recv_slots;           /* 0: default 8 */
    uint32_t window_bytes;         /* per-connection receive window of the session; 0: 262144 */
    /* A blocking send, recv or linger close that has to wait first polls its connection's
     * completions on its own thread, then sleeps until the progress thread wakes it: a reply
     * that comes quickly needs no thread hand-off. It polls about twice as long as the
     * socket's previous wait took, at least 50 us and at most busy_poll_us (microseconds), so
     * an idle connection costs 50 us of spinning per wait and a busy one none of its replies'
     * hand-offs. 0: default 1000; SANSOCK_NO_BUSY_POLL: never; at most 1000000. Thread
     * progress only (a manual-progress caller makes progress itself). */
    uint32_t busy_poll_us;
    /* Messages of this level and the more severe ones go to log (enum sansock_log_level;
     * SANSOCK_LOG_OFF: none; above SANSOCK_LOG_DEBUG: -EINVAL). 0: the level named by the
     * environment variable SANSOCK_LOG (off, error, warn, info, debug, in any case), warn when
     * it is unset or empty. A value naming no level does not fail the create: the context says
     * so once, at warn, through log, and uses warn. */
    uint32_t log_level;
    uint32_t reserved0;            /* must be 0 */
    /* Where messages go; NULL: standard error, one line each, prefixed "sansock: ". */
    sansock_log_fn log;
    void* log_user;                /* passed to log */
    /* Dead-peer detection: the initial SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL and
     * TCP_KEEPCNT of the context's sockets (see sansock_setsockopt). After keepalive_idle_s
     * seconds with nothing received on a connection the switch sends a probe, which the peer's
     * switch answers; after keepalive_count probes keepalive_interval_s seconds apart have gone
     * unanswered, the connection fails with -ETIMEDOUT. On by default, unlike TCP (off, 7200 s,
     * 75 s, 9) and rsockets (off): over RDMA a vanished host is otherwise never noticed, since
     * the transport retries a dead peer without end (rxe), so a blocked recv would wait
     * forever; UCX keeps its keepalive on too (20 s) and SMC-R tests its links every 30 s. The
     * defaults, 30 s, 10 s and 6, end every wait on a dead peer within 90 s, and let a live
     * peer's switch go without answering for as long (manual progress not called, a long
     * callback on the progress thread); a probe is 16 bytes. docs/semantics.md, "Keepalive". */
    uint32_t keepalive;            /* enum sansock_keepalive; 0: default on */
    uint32_t keepalive_idle_s;     /* 0: default 30; at most 32767 */
    uint32_t keepalive_interval_s; /* 0: default 10; at most 32767 */
    uint32_t keepalive_count;      /* 0: default 6; at most 127 */
};

#define SANSOCK_NO_BUSY_POLL 0xffffffffu

enum sansock_keepalive {
    SANSOCK_KEEPALIVE_DEFAULT = 0, /* on */
    SANSOCK_KEEPALIVE_ON = 1,
    SANSOCK_KEEPALIVE_OFF = 2
};

/* Fills *attr with the defaults. */
void sansock_context_attr_init(struct sansock_context_attr* attr);

/* Creates a context (attr NULL: defaults). -EINVAL (bad attribute), -ENOMEM, -EAGAIN (no
 * thread for the progress thread), -ENOSYS (no io_uring, or one too old), -EPERM (io_uring
 * disabled), -EMFILE, -ENFILE (no file descriptor left), -EACCES (no access to the RDMA
 * devices), -ENETDOWN (no RDMA stack for the verbs provider). */
int sansock_context_create(const struct sansock_context_attr* attr, sansock_context** out);

/* Hard-closes every socket of the context, stops its threads and frees it. Sockets closing
 * gracefully in the background are reset. 0, or -EBUSY (nothing destroyed) if called from a
 * sansock callback or while a listener, channel or service host of the context (service.h)
 * is not freed. A callback is any of the context's (an async operation's, on whichever thread
 * runs it: the progress thread, sansock_progress, a blocking call driving manual progress,
 * sansock_close, destroy itself). Calls blocked on its sockets in other threads return first
 * (-ECANCELED; poll: SANSOCK_POLLNVAL): destroy waits until every call that found one of its
 * sockets has returned; later calls with its handles give -ENOTSOCK. Calls that take the
 * context itself (sansock_socket, _progress, _context_fd, _context_stats) must not overlap
 * destroy. Never fails for lack of memory. */
int sansock_context_destroy(sansock_context* ctx);

/* ---- Counters ----------------------------------------------------------------------------- */

/* Why a connection was reset (hard-closed): the index of resets_sent (0 to 4 and 7: this
 * context reset it) and resets_received (5 and 6: the reset came to it). A connection's reset
 * is counted once, for the first reason, and only if it was connected until then. */
enum sansock_reset_reason {
    SANSOCK_RESET_ABORTIVE_CLOSE = 0,  /* closed with SO_LINGER {1, 0}; or, not accepted yet, its listener was */
    SANSOCK_RESET_LINGER_TIMEOUT = 1,  /* a lingering close ran out of time */
    SANSOCK_RESET_GRACEFUL_TIMEOUT = 2,/* a background graceful close ran out of time */
    SANSOCK_RESET_PROTOCOL_ERROR = 3,  /* the peer broke the session protocol */
    SANSOCK_RESET_CONTEXT_DESTROY = 4, /* the context was destroyed with the connection live */
    SANSOCK_RESET_PEER = 5,            /* received: the peer went away without a graceful close */
    SANSOCK_RESET_NETWORK_DOWN = 6,    /* received: the device or port went away */
    SANSOCK_RESET_KEEPALIVE_TIMEOUT = 7, /* the peer answered no keepalive probe (SO_KEEPALIVE) */
    SANSOCK_RESET_REASONS = 8
};

/* Totals since the context was created; registered_bytes is the amount now. In C++ the type
 * is spelled struct sansock_context_stats (the function of the same name hides it). */
struct sansock_context_stats {
    uint32_t size;                     /* in: sizeof(struct sansock_context_stats); not changed */
    uint32_t reserved;
    uint64_t connections_opened;       /* connects that succeeded (blocking or not) */
    uint64_t connections_accepted;     /* connections accepted (sansock_accept or async) */
    uint64_t closes_dontlinger;        /* sansock_close with SO_DONTLINGER (the default), of any socket */
    uint64_t closes_abortive;          /* sansock_close with SO_LINGER {1, 0}, of any socket */
    uint64_t closes_linger;            /* sansock_close with SO_LINGER {1, n > 0} that released the handle */
    uint64_t graceful_completed;       /* background graceful closes that ended with both FINs exchanged, no reset */
    uint64_t graceful_timed_out;       /* background graceful closes ended hard by the time-out */
    uint64_t resets_sent[SANSOCK_RESET_REASONS];
    uint64_t resets_received[SANSOCK_RESET_REASONS];
    uint64_t bytes_sent;               /* stream payload bytes handed to the provider */
    uint64_t bytes_received;           /* stream payload bytes received from peers (read or not) */
    uint64_t registered_bytes;         /* memory registered with the device now (loopback: what verbs would register) */
    uint64_t waits_polled;             /* blocking waits on a socket that ended while busy-polling it */
    uint64_t waits_slept;              /* blocking waits on a socket that went on to sleep (or lead progress) */
};

/* Fills *out: the counters as one snapshot, then registered_bytes. out->size must be set: a
 * smaller size gets the leading whole fields, a larger one the struct (the rest of *out is
 * left as it was). -EINVAL (NULL, size too small for the first counter). */
int sansock_context_stats(sansock_context* ctx, struct sansock_context_stats* out);

/* Waits until no socket of the context is closing gracefully in the background (each ended
 * with both FINs exchanged, or was reset by the graceful time-out), at most timeout_ms (0:
 * check; -1: the context's graceful time-out and a second, by which every close begun before
 * the call has ended). For a program that closed its sockets and is about to destroy the
 * context or exit: sansock_context_destroy resets what is still closing. 0, -ETIMEDOUT (some
 * still closing), -EBUSY (called from a callback of the context, or from its progress
 * thread). */
int sansock_context_drain(sansock_context* ctx, int timeout_ms);

/* Manual progress: a descriptor that polls readable when sansock_progress has work, and the
 * call that does it (waits at most timeout_ms; 0 does not wait). Returns the number of events
 * handled. -EBADFD if the context makes progress by its own thread. */
int sansock_context_fd(sansock_context* ctx);
int sansock_progress(sansock_context* ctx, int timeout_ms);

/* ---- Sockets ------------------------------------------------------------------------------ */

/* A socket handle. Handles carry a generation: a closed handle stays invalid (-ENOTSOCK) even
 * after its slot is reused. 0 is never a socket. */
typedef uint64_t sansock_socket_t;

/* -ENOMEM, -EMFILE (the process's socket handles or the context's provider sockets are used
 * up), -ENETDOWN (the device went away); verbs: what rdma_create_id fails with (-ENODEV,
 * -ENOMEM). */
int sansock_socket(sansock_context* ctx, sansock_socket_t* out);

/* Every call below: -ENOTSOCK for a handle that is not (or no longer) a socket. */

/* AF_INET (struct sockaddr_in) or AF_INET6 (struct sockaddr_in6, all 28 bytes); the first
 * bind or connect gives the socket its family. An IPv4-mapped address (::ffff:a.b.c.d) binds
 * its IPv4 address; :: takes IPv4 and IPv6 clients unless IPV6_V6ONLY is set (see
 * sansock_setsockopt). -EAFNOSUPPORT (neither family, or not the socket's family),
 * -EINVAL (address shorter than its family's sockaddr, already bound, the socket is not fresh,
 * or an IPv4-mapped address on an IPV6_V6ONLY socket), -EADDRINUSE, -EADDRNOTAVAIL,
 * -ENETDOWN (the device went away), -ENODEV (verbs: no RDMA device has the address). */
int sansock_bind(sansock_socket_t s, const struct sockaddr* address, socklen_t length);

/* -EDESTADDRREQ (not bound), -EINVAL (connecting, connected or failed), -ENETDOWN (the device
 * went away), -ENOMEM; verbs: what rdma_listen fails with (-EADDRINUSE). */
int sansock_listen(sansock_socket_t s, int backlog);

/* Blocking: waits for a connection, at most SO_RCVTIMEO (then -EWOULDBLOCK). Nonblocking:
 * -EWOULDBLOCK if none is ready. peer may be NULL; if not, length must not be NULL, and the
 * peer's address is stored as accept(2) does (cut to *length, which is set to its full size:
 * 16 for AF_INET, 28 for AF_INET6; a listener of AF_INET6 gives an IPv4 peer as ::ffff:a.b.c.d).
 * -EINVAL (out NULL, peer without length, a socket that is not listening, also one whose
 * connection failed), -ECANCELED (closed by another thread, or its context destroyed, while
 * the call waited), -EMFILE (no handle left: the connection is reset), -ENETDOWN and any other
 * failure of the listener itself (its provider's accept failed; verbs: also -EMFILE). */
int sansock_accept(sansock_socket_t s, sansock_socket_t* out, struct sockaddr* peer, socklen_t* length);

/* Blocking: connects (bounded by the provider's resolution and connection time-outs).
 * Nonblocking: -EINPROGRESS, then the socket polls writable (SANSOCK_POLLOUT) when connected,
 * or SANSOCK_POLLERR with the reason in SO_ERROR. A negative SO_SNDTIMEO: -EINPROGRESS too.
 * -ECONNREFUSED, -ETIMEDOUT (also the 60 s bound, or SO_SNDTIMEO, passed), -EHOSTUNREACH,
 * -EISCONN, -EALREADY, -EAFNOSUPPORT (neither AF_INET nor AF_INET6, or not the family the
 * socket was bound in), -EINVAL (address shorter than its family's sockaddr; a listening
 * socket; a socket bound in IPv6 connecting to an IPv4-mapped address, or the reverse, which
 * rdma_cm refuses), -ENETUNREACH (an IPv4-mapped address on an IPV6_V6ONLY socket),
 * -ECANCELED (closed by another thread, or its context destroyed, while the call waited),
 * -ENETDOWN, -ENOMEM (verbs: the connection's QP or buffer), -EPROTO (verbs: the peer's
 * handshake is not sansock's); a socket whose connect failed gives that failure again. */
int sansock_connect(sansock_socket_t s, const struct sockaddr* address, socklen_t length);

/* Queues data for sending; returns the bytes taken (1..length). Blocking: waits for room.
 * Nonblocking: -EWOULDBLOCK when the send buffer is full. -ENOTCONN, -EPIPE (after SHUT_WR or
 * close), -ECONNRESET (the peer reset), -ENETDOWN, -ETIMEDOUT (keepalive: the peer is
 * dead). */
/* Also: -EWOULDBLOCK when SO_SNDTIMEO passed with nothing taken, or with MSG_DONTWAIT (this
 * call only is nonblocking); -ECANCELED (closed by another thread, or its context destroyed,
 * while the call waited); -EINVAL (NULL buffer with a length); -EOPNOTSUPP (a flag other than
 * MSG_NOSIGNAL, MSG_DONTWAIT, MSG_MORE: no signal is ever raised, MSG_MORE changes nothing);
 * and a failed socket's failure (also a failed connect's: -ECONNREFUSED, -EHOSTUNREACH,
 * -ETIMEDOUT ...). A length above SO_SNDBUF takes at most SO_SNDBUF. */
ssize_t sansock_send(sansock_socket_t s, const void* buffer, size_t length, int flags);

/* Returns 1..length bytes, or 0 at end of stream (the peer shut down or closed gracefully,
 * or after SHUT_RD). Blocking: waits for data. Nonblocking: -EWOULDBLOCK. -ENOTCONN,
 * -ECONNRESET, -ENETDOWN, -ETIMEDOUT (keepalive). MSG_WAITALL waits for length bytes (or end
 * of stream). */
/* Also: -EWOULDBLOCK when SO_RCVTIMEO passed with nothing received, or with MSG_DONTWAIT;
 * -ECANCELED (closed by another thread, or its context destroyed, while the call waited);
 * -EINVAL (NULL buffer with a length); -EOPNOTSUPP (a flag other than MSG_PEEK, MSG_WAITALL,
 * MSG_DONTWAIT); and a failed socket's failure (as for send). MSG_PEEK copies without
 * consuming (with MSG_WAITALL: once length bytes are there, or the stream ended). MSG_WAITALL
 * cut short by a failure, SO_RCVTIMEO or a close returns the bytes already copied; the error
 * comes at the next call. */
ssize_t sansock_recv(sansock_socket_t s, void* buffer, size_t length, int flags);

/* SHUT_WR sends end of stream after the queued data; SHUT_RD makes receives return 0;
 * SHUT_RDWR both. A second shutdown of a direction is harmless (0). -ENOTCONN, -EINVAL (how),
 * and a failed socket's failure (-ECONNRESET, -ENETDOWN, -ETIMEDOUT, a failed connect's). */
int sansock_shutdown(sansock_socket_t s, int how);

/* SOL_SOCKET options: SO_LINGER (struct linger), SO_DONTLINGER (int; nonzero sets linger
 * off, zero sets it on with the stored interval), SO_SNDBUF, SO_RCVBUF (int, bytes),
 * SO_ERROR (get: the pending error, positive errno, cleared), SO_TYPE (get), SO_KEEPALIVE
 * (int, nonzero: on). And SANSOCK_SO_NONBLOCK (int), SANSOCK_SO_NREAD (get only, int: the bytes a
 * recv could take now without waiting, as FIONREAD). IPPROTO_TCP options (int, as on Linux;
 * <netinet/tcp.h>): TCP_KEEPIDLE (seconds, 1 to 32767), TCP_KEEPINTVL (seconds, 1 to 32767),
 * TCP_KEEPCNT (1 to 127); other values -EINVAL. With SO_KEEPALIVE on (by default: see
 * sansock_context_attr), a connection that has received nothing for TCP_KEEPIDLE seconds
 * gets a probe, which the peer's switch answers; after TCP_KEEPCNT probes TCP_KEEPINTVL
 * seconds apart have gone unanswered it fails with -ETIMEDOUT (blocked calls return it, poll
 * reports SANSOCK_POLLERR). Accepted connections take these four from their listener.
 * IPPROTO_IPV6: IPV6_V6ONLY (int, default 0) before bind or connect (-EINVAL after): a socket
 * on :: then takes IPv6 clients only; it makes a socket with no family yet AF_INET6; on an
 * AF_INET socket -ENOPROTOOPT; every other IPPROTO_IPV6 option -ENOPROTOOPT.
 * -ENOPROTOOPT (unknown option or level), -EINVAL (NULL value, short length), -EFAULT is
 * never returned. */
#define SANSOCK_SO_NONBLOCK 0x5301
#define SANSOCK_SO_NREAD 0x5302
#ifndef SO_DONTLINGER
#define SO_DONTLINGER ((int)(~SO_LINGER))
#endif
int sansock_setsockopt(sansock_socket_t s, int level, int name, const void* value, socklen_t length);
int sansock_getsockopt(sansock_socket_t s, int level, int name, void* value, socklen_t* length);
int sansock_getsockname(sansock_socket_t s, struct sockaddr* address, socklen_t* length);
int sansock_getpeername(sansock_socket_t s, struct sockaddr* address, socklen_t* length);
/* setsockopt also: -EISCONN (SO_RCVBUF on a connected or failed socket: the window is fixed
 * when the connection opens), -EDOM (SO_RCVTIMEO, SO_SNDTIMEO with tv_usec outside 0..999999;
 * a negative tv_sec is taken, as on Linux: the calls do not wait, and it reads back as {0, 0};
 * one above 2^31 - 1 s saturates to that). getsockname: -ENOTCONN (the socket has no
 * provider socket any more) or the failure that closed it. getpeername: -ENOTCONN (not
 * connected) or the socket's failure. Both: -EINVAL (NULL address or length); the address is
 * cut to *length, which is set to its full size (16 or 28), as on Linux; an AF_INET6 socket
 * gives an IPv4 name as ::ffff:a.b.c.d. */

/* Closes the handle, as the table of docs/semantics.md section 2:
 * - SO_DONTLINGER (default): returns 0 at once; queued data is still sent, then the connection
 *   is closed gracefully in the background, hard after the context's graceful time-out.
 * - SO_LINGER 0: returns 0 at once; the connection is reset, unsent data is lost.
 * - SO_LINGER n, blocking socket: waits until all data is sent and acknowledged, or n seconds;
 *   on time-out the connection is reset and close returns -ETIMEDOUT. 0 means every byte was
 *   acknowledged: a connection that fails while close waits (or had failed before) with data
 *   unsent or unacknowledged gives its failure, -ECONNRESET or -ENETDOWN. The handle is
 *   released either way.
 * - SO_LINGER n, nonblocking socket, data still unsent: -EWOULDBLOCK; the handle stays valid
 *   and no disconnect starts, until linger is changed or shutdown is called.
 * Pending asynchronous operations complete -ECANCELED before close returns; no other callback
 * runs for the socket afterwards. -ENOTSOCK, -EWOULDBLOCK, -ETIMEDOUT, -ECONNRESET, -ENETDOWN,
 * -ECANCELED (a lingering close whose socket another thread closed, or whose context was
 * destroyed, meanwhile: the handle is gone). */
int sansock_close(sansock_socket_t s);

/* ---- Poll --------------------------------------------------------------------------------- */

#define SANSOCK_POLLIN 0x001  /* data, end of stream, or (listener) a connection to accept */
#define SANSOCK_POLLOUT 0x004 /* room to send; a nonblocking connect has finished */
#define SANSOCK_POLLERR 0x008 /* an error is pending (SO_ERROR) */
#define SANSOCK_POLLHUP 0x010 /* the connection is gone (reset, or both directions shut) */
#define SANSOCK_POLLNVAL 0x020 /* not a socket */

struct sansock_pollfd {
    sansock_socket_t socket;
    short events;
    short revents;
};

/* Waits until one of the sockets is ready or timeout_ms passes (-1: no limit; 0: check).
 * Returns how many have revents set. All sockets must belong to one context (-EINVAL; also for
 * fds NULL or count 0). A socket closed, or whose context is destroyed, while the call waits
 * reports SANSOCK_POLLNVAL (and the call returns). */
int sansock_poll(struct sansock_pollfd* fds, size_t count, int timeout_ms);

/* A kernel descriptor for the application's own poll, select or epoll (level- or
 * edge-triggered): readable (POLLIN) while sansock_poll would report SANSOCK_POLLIN,
 * SANSOCK_POLLERR or SANSOCK_POLLHUP, writable (POLLOUT) while it would report SANSOCK_POLLOUT
 * or SANSOCK_POLLERR; it never shows POLLERR or POLLHUP itself (SO_ERROR and sansock_poll give
 * the reason). Each change to ready is an edge; data that arrives while it is readable already
 * is none (edge-triggered callers read until -EWOULDBLOCK). Made at the first call (the same
 * number afterwards), O_CLOEXEC, owned by the socket and closed when sansock_close releases
 * the handle (a thread polling it wakes: POLLHUP, or POLLNVAL) or by sansock_context_destroy.
 * It follows the socket as progress delivers: with SANSOCK_PROGRESS_MANUAL only inside the
 * context's calls, so poll sansock_context_fd too and call sansock_progress when it is
 * readable. The application must not read, write, shut down or close it; reading or writing
 * it only makes it show stale readiness until the next change; a number it closed is not
 * closed again by sansock (nor touched). -EMFILE, -ENFILE (no descriptor left; the socket is
 * unchanged), -ENOMEM. docs/semantics.md, "A descriptor per socket". */
int sansock_socket_fd(sansock_socket_t s);

/* ---- Asynchronous (overlapped) operations ------------------------------------------------- */

/* result: bytes sent or received (0 = end of stream), the accepted socket for accept, or a
 * negated errno (-ECANCELED when the socket was closed). Called exactly once, never on the
 * calling thread before the call returns, from the context's progress (its thread, or
 * sansock_progress). */
typedef void (*sansock_callback)(void* user, int64_t result);

/* Return 0 when the operation was started (the callback follows), or a negated errno and no
 * callback. The buffer must stay valid until the callback. -EINVAL (NULL buffer or callback,
 * length 0 or above INT64_MAX: the result could not be told from an error), -ENOTCONN,
 * -EPIPE (send after SHUT_WR), -EINVAL (accept: not listening, also a socket whose connection
 * failed), -ENOMEM, and a failed socket's failure (accept: a failed listener's). */
int sansock_send_async(sansock_socket_t s, const void* buffer, size_t length, sansock_callback callback, void* user);
int sansock_recv_async(sansock_socket_t s, void* buffer, size_t length, sansock_callback callback, void* user);
int sansock_accept_async(sansock_socket_t s, sansock_callback callback, void* user);

#pragma GCC visibility pop
#ifdef __cplusplus
}
#endif

#endif /* SANSOCK_H */

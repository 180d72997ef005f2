/* SPDX-License-Identifier: MIT */
/* Listeners, channels and service hosts with Windows Web Services close/abort semantics. C11 and C++. */
#ifndef SANSOCK_SERVICE_H
#define SANSOCK_SERVICE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "sansock/sansock.h"

#ifdef __cplusplus
extern "C" {
#endif
#pragma GCC visibility push(default) /* the library is built -fvisibility=hidden */

/* docs/service.md has the state tables; every call below returns 0 (or a documented
 * non-negative value) or a negated errno, never through errno. Common to every call: -EINVAL
 * for a NULL object or a NULL required pointer. Objects must be used with a context whose
 * progress mode is SANSOCK_PROGRESS_THREAD (create gives -EINVAL otherwise).
 *
 * Threads and context lifetime: each context has two service threads of its own (internal
 * jobs and time-outs; user callbacks), started when the first listener, channel or service
 * host is created in it and stopped by sansock_context_destroy. Free every listener, channel
 * and host of a context before destroying it: while one is not freed, sansock_context_destroy
 * returns -EBUSY and destroys nothing (the context and its objects keep working). Called from
 * one of the context's service callbacks it returns -EBUSY too (a thread cannot stop itself).
 *
 * Invalid in the current state: -EBADFD (SANSOCK_E_INVALID_OPERATION, WS_E_INVALID_OPERATION).
 * Faulted: -ENOTRECOVERABLE (SANSOCK_E_OBJECT_FAULTED). Cancelled by close or abort:
 * -ECANCELED (SANSOCK_E_OPERATION_ABORTED). Asynchronous: -EINPROGRESS (SANSOCK_E_ASYNC). */

/* ---- Async context (WS_ASYNC_CONTEXT) ----------------------------------------------------- */

/* Every open, accept, close and channel shutdown takes `const struct sansock_async_context*`.
 * NULL: the call is synchronous. Otherwise the call either completes at once (it returns the
 * final code and the callback is never called) or returns -EINPROGRESS and later calls
 * callback(result, state) exactly once. The callback runs on the callback thread of the
 * object's sansock context, never on the calling thread before the call has returned. The
 * async context itself need only live for the call; the object must stay valid (not freed)
 * until the callback. Callbacks should not block for long: a context's callbacks share one
 * thread. */
struct sansock_async_context {
    void (*callback)(int result, void* state);
    void* state;
};

/* ---- Listener (WS_LISTENER) --------------------------------------------------------------- */

typedef struct sansock_listener sansock_listener;
typedef struct sansock_channel sansock_channel;

enum sansock_listener_state {
    SANSOCK_LISTENER_CREATED = 0,
    SANSOCK_LISTENER_OPENING = 1,
    SANSOCK_LISTENER_OPEN = 2,
    SANSOCK_LISTENER_FAULTED = 3,
    SANSOCK_LISTENER_CLOSING = 4,
    SANSOCK_LISTENER_CLOSED = 5
};

/* Kind of channel (WS_CHANNEL_TYPE_DUPLEX_SESSION vs a sessionless duplex channel). */
enum sansock_channel_kind {
    SANSOCK_CHANNEL_SESSION = 0,    /* close exchanges end of session with the peer */
    SANSOCK_CHANNEL_NONSESSION = 1  /* close waits only for pending I/O */
};

struct sansock_listener_attr {
    uint32_t size;    /* sizeof(struct sansock_listener_attr) */
    int32_t backlog;  /* connections the switch holds before they are accepted; 0: 128 */
};

/* Creates a listener in CREATED. attr may be NULL. -EINVAL (bad attribute, manual-progress
 * context, a context being destroyed), -ENOMEM, -EAGAIN (the context's first service object:
 * no thread for its service threads). */
int sansock_listener_create(sansock_context* ctx, const struct sansock_listener_attr* attr, sansock_listener** out);

/* CREATED -> OPENING -> OPEN: binds and listens on address (AF_INET: struct sockaddr_in,
 * or AF_INET6: all of struct sockaddr_in6, as sansock_bind takes them; port 0 picks one, see
 * sansock_listener_address). Completes at once (the async context's callback is never used).
 * -EBADFD (not CREATED), -EAFNOSUPPORT, -EADDRINUSE, -EADDRNOTAVAIL, -ENOMEM, -EMFILE,
 * -ENETDOWN: the listener goes back to CREATED. -ECANCELED: aborted while opening (back to
 * CREATED). */
int sansock_listener_open(sansock_listener* l, const struct sockaddr* address, socklen_t length,
                          const struct sansock_async_context* async);

/* WsAcceptChannel: the channel (CREATED, same context) goes ACCEPTING, then OPEN with the next
 * connection. Synchronous: waits for a connection (or close/abort). Async: -EINPROGRESS, then
 * the callback with 0 or an error. Results: 0; -EBADFD (listener not OPEN, or channel not
 * CREATED); -ENOTRECOVERABLE at once (listener FAULTED); -ECANCELED (the listener was closed
 * or aborted, or the channel aborted, while the accept was pending); -ENETDOWN, -EMFILE from
 * the switch; -EINVAL (channel of another context). On failure the channel is CREATED again. */
int sansock_listener_accept(sansock_listener* l, sansock_channel* channel, const struct sansock_async_context* async);

/* CREATED or CLOSED: 0, CLOSED. OPEN or FAULTED: CLOSING; pending accepts fail -ECANCELED,
 * connections that arrived but were not accepted are reset, the call waits for pending I/O,
 * then CLOSED with 0 (or -ECANCELED if sansock_listener_abort came meanwhile; still CLOSED).
 * With an async context: 0 at once when nothing is pending, else -EINPROGRESS and the callback.
 * -EBADFD in OPENING and CLOSING. */
int sansock_listener_close(sansock_listener* l, const struct sansock_async_context* async);

/* Any state, never waits, never allocates, never fails for lack of resources. OPEN ->
 * FAULTED (pending accepts fail -ECANCELED, later accepts -ENOTRECOVERABLE at once); OPENING:
 * the open fails -ECANCELED (back to CREATED); CLOSING: the close completes -ECANCELED (ends
 * CLOSED); other states unchanged. Returns 0 (-EINVAL only for NULL). */
int sansock_listener_abort(sansock_listener* l);

/* CREATED: 0. CLOSED: 0, back to CREATED with its attributes kept. Else -EBADFD. */
int sansock_listener_reset(sansock_listener* l);

/* CREATED or CLOSED: frees it (waits, bounded, for sansock's own in-flight callbacks) and
 * returns 0. Else -EBADFD and nothing is freed. */
int sansock_listener_free(sansock_listener* l);

/* The state (enum sansock_listener_state, >= 0), or -EINVAL. */
int sansock_listener_get_state(sansock_listener* l);

/* The address the last successful open bound (with its port); *length is set to its size
 * (sockaddr_in or sockaddr_in6). -EBADFD if never opened, -EINVAL (shorter buffer). */
int sansock_listener_address(sansock_listener* l, struct sockaddr* address, socklen_t* length);

/* ---- Channel (WS_CHANNEL) ----------------------------------------------------------------- */

enum sansock_channel_state {
    SANSOCK_CHANNEL_CREATED = 0,
    SANSOCK_CHANNEL_OPENING = 1,
    SANSOCK_CHANNEL_ACCEPTING = 2,
    SANSOCK_CHANNEL_OPEN = 3,
    SANSOCK_CHANNEL_FAULTED = 4,
    SANSOCK_CHANNEL_CLOSING = 5,
    SANSOCK_CHANNEL_CLOSED = 6
};

/* receive's result when the peer ended the session (WS_S_END): no more messages. */
#define SANSOCK_S_END 1

struct sansock_channel_attr {
    uint32_t size;             /* sizeof(struct sansock_channel_attr) */
    uint32_t kind;             /* enum sansock_channel_kind */
    uint32_t close_timeout_ms; /* how long close waits; 0: 30000; UINT32_MAX: no limit */
    uint32_t max_message;      /* largest message accepted; 0: 16 MiB (16777216) */
};

/* Creates a channel in CREATED. attr may be NULL (a session channel). -EINVAL, -ENOMEM,
 * -EAGAIN (as for sansock_listener_create). */
int sansock_channel_create(sansock_context* ctx, const struct sansock_channel_attr* attr, sansock_channel** out);

/* CREATED -> OPENING -> OPEN: connects to address (AF_INET or AF_INET6, as sansock_connect
 * takes them; -EINVAL when shorter than its family's sockaddr). Sync: waits (bounded by the switch's
 * connect bound). Async: -EINPROGRESS and the callback. 0; -EBADFD (not CREATED);
 * -ECONNREFUSED, -ETIMEDOUT, -EHOSTUNREACH, -ENETDOWN, -EAFNOSUPPORT, -ENOMEM, -EMFILE,
 * -EPROTO (verbs: the peer's handshake is not sansock's) (the channel is CREATED again);
 * -ECANCELED (aborted while opening; CREATED again); -EAGAIN (no thread for an async open). */
int sansock_channel_open(sansock_channel* c, const struct sockaddr* address, socklen_t length,
                         const struct sansock_async_context* async);

/* Framing (docs/service.md): each message is a 4-byte big-endian length, then that many
 * bytes; end of session is the end of the byte stream (shutdown SHUT_WR).
 * send: blocking; returns 0 once the whole message is queued. -EBADFD (not OPEN, or after
 * shutdown), -ENOTRECOVERABLE (FAULTED), -EBUSY (another send in progress), -EMSGSIZE (longer
 * than max_message), -ECANCELED (aborted or closed hard meanwhile), or the I/O error that
 * faulted the channel (-ECONNRESET, -ENETDOWN, -EPIPE ...). */
int sansock_channel_send(sansock_channel* c, const void* message, size_t length);

/* receive: blocking; 0 with the message in buffer and its length in *size; SANSOCK_S_END
 * when the peer ended the session (again on every later call). -EMSGSIZE: the message did
 * not fit (it is consumed; *size is its length; the channel stays OPEN). -EBADFD (not OPEN),
 * -ENOTRECOVERABLE (FAULTED), -EBUSY (another receive in progress), -ECANCELED (aborted or
 * closed hard meanwhile), -EPROTO (bad framing: the channel faults), or the I/O error that
 * faulted the channel (-ECONNRESET, -ENETDOWN ...). */
int sansock_channel_receive(sansock_channel* c, void* buffer, size_t capacity, size_t* size);

/* Ends the session (sends end of session after the messages already sent). Session channels
 * only. 0 at once, or (a send in progress) -EINPROGRESS and the callback / a wait. -EBADFD
 * (not OPEN, second shutdown, non-session channel), -ENOTRECOVERABLE (FAULTED, also when the
 * channel faulted while the shutdown waited for a send), -ECANCELED (aborted while waiting
 * for a send), or the socket's I/O error, which faults the channel (-ECONNRESET, -ENETDOWN,
 * -ETIMEDOUT ...). */
int sansock_channel_shutdown(sansock_channel* c, const struct sansock_async_context* async);

/* CREATED or CLOSED: 0, CLOSED. OPEN: CLOSING, graceful: waits for pending sends, sends end of
 * session (session channels), waits for pending receives, then reads (and drops) what is left
 * until the peer's end of session; closes the connection; CLOSED with 0. FAULTED: CLOSING,
 * waits for pending I/O to end, CLOSED with 0. -ETIMEDOUT: close_timeout_ms passed (the
 * connection is reset; CLOSED). -ECANCELED: aborted during close (CLOSED). Async: 0 at once
 * or -EINPROGRESS and the callback. -EBADFD in OPENING, ACCEPTING, CLOSING. */
int sansock_channel_close(sansock_channel* c, const struct sansock_async_context* async);

/* Any state, never waits, never allocates. OPEN -> FAULTED (the connection is reset in the
 * background; pending send/receive return -ECANCELED); OPENING/ACCEPTING: the open/accept
 * fails -ECANCELED, back to CREATED; CLOSING: the close completes -ECANCELED, CLOSED; others
 * unchanged. 0 (-EINVAL only for NULL). */
int sansock_channel_abort(sansock_channel* c);

/* CREATED: 0. CLOSED: back to CREATED, attributes kept. Else -EBADFD. */
int sansock_channel_reset(sansock_channel* c);

/* CREATED or CLOSED: frees it, 0. Else -EBADFD. -EPERM: the channel belongs to a service
 * host (the host frees it). */
int sansock_channel_free(sansock_channel* c);

/* The state (enum sansock_channel_state, >= 0), or -EINVAL. */
int sansock_channel_get_state(sansock_channel* c);

/* ---- Service host (WS_SERVICE_HOST) ------------------------------------------------------- */

typedef struct sansock_service_host sansock_service_host;

enum sansock_service_host_state {
    SANSOCK_HOST_CREATED = 0,
    SANSOCK_HOST_OPENING = 1,
    SANSOCK_HOST_OPEN = 2,
    SANSOCK_HOST_CLOSING = 3,
    SANSOCK_HOST_CLOSED = 4,
    SANSOCK_HOST_FAULTED = 5
};

struct sansock_service_endpoint {
    const struct sockaddr* address; /* AF_INET or AF_INET6; copied at create */
    socklen_t address_length;
    uint32_t kind;                  /* enum sansock_channel_kind */
};

/* Called (on the context's callback thread) with each accepted channel, which is OPEN. The host owns the
 * channel: the application may send, receive, shut it down, close or abort it, but must not
 * free it; it stays valid until the host is reset or freed. */
typedef void (*sansock_channel_accepted_fn)(sansock_service_host* host, size_t endpoint, sansock_channel* channel,
                                            void* state);

struct sansock_service_host_attr {
    uint32_t size;                 /* sizeof(struct sansock_service_host_attr) */
    uint32_t close_timeout_ms;     /* 0: close waits without limit for the clients */
    sansock_channel_accepted_fn on_channel; /* required */
    void* state;
};

/* Creates a host in CREATED with `count` (>= 1) endpoints. -EINVAL, -EAFNOSUPPORT (an
 * endpoint's address is neither AF_INET nor AF_INET6), -ENOMEM, -EAGAIN (as for sansock_listener_create). */
int sansock_service_host_create(sansock_context* ctx, const struct sansock_service_endpoint* endpoints, size_t count,
                                const struct sansock_service_host_attr* attr, sansock_service_host** out);

/* CREATED -> OPENING -> OPEN: opens a listener per endpoint; channels are accepted (and
 * handed to on_channel) only once all are open. Completes at once. -EBADFD (not CREATED);
 * a listener's open error (back to CREATED, every listener closed); -ECANCELED (aborted
 * while opening; back to CREATED). */
int sansock_service_host_open(sansock_service_host* h, const struct sansock_async_context* async);

/* CREATED or CLOSED: 0, CLOSED. OPEN or FAULTED: CLOSING; every listener is closed at once
 * (no new channel; connections not accepted are reset), then each accepted channel is closed
 * gracefully: session channels when their client has ended its session, non-session channels
 * when their pending I/O is done. CLOSED with 0; -ETIMEDOUT when close_timeout_ms passed first
 * (the rest are reset); -ECANCELED when aborted meanwhile. Async: 0 at once or -EINPROGRESS
 * and the callback. -EBADFD in OPENING and CLOSING. */
int sansock_service_host_close(sansock_service_host* h, const struct sansock_async_context* async);

/* Any state, never waits: aborts the listeners and the channels. OPEN -> FAULTED; OPENING:
 * the open fails -ECANCELED; CLOSING: the close completes -ECANCELED (CLOSED). 0. */
int sansock_service_host_abort(sansock_service_host* h);

/* CREATED: 0. CLOSED: frees the listeners and channels, back to CREATED. Else -EBADFD. */
int sansock_service_host_reset(sansock_service_host* h);

/* CREATED or CLOSED: frees the host, its listeners and channels, 0. Else -EBADFD. */
int sansock_service_host_free(sansock_service_host* h);

/* The state (enum sansock_service_host_state, >= 0), or -EINVAL. */
int sansock_service_host_get_state(sansock_service_host* h);

/* The address endpoint i is listening on (with its port) once opened; *length is set to its
 * size (sockaddr_in or sockaddr_in6). -EBADFD (never opened), -EINVAL (no such endpoint,
 * shorter buffer). */
int sansock_service_host_endpoint_address(sansock_service_host* h, size_t endpoint, struct sockaddr* address,
                                          socklen_t* length);

#pragma GCC visibility pop
#ifdef __cplusplus
}
#endif

#endif /* SANSOCK_SERVICE_H */

// SPDX-License-Identifier: MIT
// The provider interface (the SPI): an ops table a provider fills, and the overlapped
// operations and up-calls through which it reports back to the switch. docs/provider-interface.md
// is the prose version of this file; keep the two together.
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>

namespace sansock::provider {

// A provider socket: slot index in the low 32 bits, generation in the high 32 bits, so a
// handle whose slot was reused by a newer socket is still told apart (-ENOTSOCK). 0 is never
// a valid handle.
using socket_handle = uint64_t;
inline constexpr socket_handle invalid_socket = 0;

enum class operation_kind : uint8_t { send, recv, accept, connect };

struct operation;
// The operation's own completion routine. Called exactly once per accepted submission, never
// from inside the submitting call, with no provider lock held; after it returns the provider
// never touches the operation again, so the routine may free or reuse it.
using completion_routine = void (*)(operation& op) noexcept;

// Flags on an operation.
inline constexpr uint32_t op_wait_all = 1u << 0; // recv: complete only when `length` bytes arrived

// An overlapped operation. The submitter owns it and keeps it, and its buffer, valid until the
// completion routine runs. The provider only links it into its queues (no allocation per op).
struct operation {
    operation_kind kind = operation_kind::send;
    uint32_t flags = 0;
    void* buffer = nullptr; // send: the bytes to send; recv: where received bytes go
    size_t length = 0;      // send: bytes to send (> 0); recv: room in buffer (> 0)
    // Connect: the peer's address.
    sockaddr_storage address{};
    socklen_t address_length = 0;

    // Result, set before `complete` is called:
    //   send    length, once every byte was acknowledged by the peer's adapter
    //   recv    bytes received (1..length; exactly length with op_wait_all)
    //   accept  0, the new connected socket in `accepted`
    //   connect 0, the socket is connected
    //   or a negated errno: -ECANCELED (closed while pending), -ECONNRESET (the peer closed
    //   hard or the connection was lost), -ENETDOWN (the device went away), -ECONNREFUSED,
    //   -ETIMEDOUT, -EHOSTUNREACH (connect).
    int64_t result = 0;
    socket_handle accepted = invalid_socket;

    completion_routine complete = nullptr;
    void* user = nullptr; // the submitter's, untouched by the provider

    // Provider-private links, so queueing an operation never allocates.
    operation* provider_next = nullptr;
    uint64_t provider_word = 0;
};

// Flags of progress_socket.
inline constexpr uint32_t poll_start = 1u << 0;
inline constexpr uint32_t poll_stop = 1u << 1;
// With poll_stop: the caller polls again soon, so progress need not be woken for the socket
// meanwhile; the provider arms its notifications again at poll_arm, at close, or by itself
// within about 10 ms of no polling.
inline constexpr uint32_t poll_stay_unarmed = 1u << 2;
// Alone: progress is to be woken for the socket's completions again (someone will sleep on
// them, or async operations wait). Delivers nothing, so it may be called under the caller's
// own locks.
inline constexpr uint32_t poll_arm = 1u << 3;

// Events that are not the completion of an operation.
enum class connection_event : uint8_t {
    peer_reset,  // the peer closed hard or the connection was lost (status -ECONNRESET)
    device_down, // the device or port went away (status -ENETDOWN)
};

// Levels of the log up-call; the values of enum sansock_log_level (include/sansock/sansock.h).
enum class log_level : int {
    error = 2, // the provider cannot do what it was asked (a device failed, a destroy leaked)
    warn = 3,
    info = 4,
    debug = 5,
};

// The switch's up-calls. on_connection_event is called from inside `progress` on the thread
// that calls it, with no provider lock held; never for a socket after its close was called.
struct upcalls {
    void* context = nullptr;
    void (*on_connection_event)(void* context, socket_handle socket, connection_event event,
                                int status) noexcept = nullptr;
    // A message for the context's log (the switch filters by level): one line without a
    // newline, valid only during the call. May come from any thread inside any entry, destroy
    // too, with provider locks held: it takes no lock of the provider's and never calls it.
    // Null: the provider writes its messages to standard error, prefixed "sansock: ".
    void (*log)(void* context, log_level level, const char* message) noexcept = nullptr;
};

// Per-instance settings; the switch passes its context's. Registered memory per connection is
// send_slots * slot_size + recv_slots * slot_size.
struct config {
    uint32_t slot_size = 16 * 1024; // bytes per registered send or receive buffer
    uint32_t send_slots = 8;        // messages in flight per connection
    uint32_t recv_slots = 8;        // receives pre-posted per connection (= initial credits)
    uint32_t max_sockets = 4096;
    int resolve_timeout_ms = 5000;  // rdma_cm address and route resolution
    void* provider_specific = nullptr; // e.g. the loopback fabric to join
};

// The one check of a config, shared by every provider's create (and the ranges
// include/sansock/sansock.h lists for the context attributes): slot_size 64 to 2^30 bytes,
// send_slots >= 1, recv_slots >= 2, (send_slots + recv_slots) * slot_size at most 2^30 bytes
// (the memory a connection registers), max_sockets >= 1, resolve_timeout_ms > 0. 0 or -EINVAL.
int check_config(const config& settings);
inline constexpr uint32_t min_slot_size = 64;
inline constexpr uint64_t max_connection_bytes = uint64_t(1) << 30;

struct memory_stats {
    uint64_t registered_bytes = 0;      // all memory registered with the device now
    uint64_t per_connection_bytes = 0;  // registered per connected socket (from config)
    uint64_t shared_bytes = 0;          // registered outside connections (shared pools)
    uint32_t connections = 0;           // connected sockets holding registered memory
    uint32_t sockets = 0;               // open handles of any kind
};

struct instance; // a provider's per-context state (opaque to the switch)

// The ops table. Every entry returns 0 (or a documented non-negative value) or a negated
// errno. An entry a provider leaves null is filled by `with_defaults` with one that returns
// -EOPNOTSUPP, so callers never meet a null pointer. Asynchronous entries (accept, connect,
// send, recv) return 0 when they have accepted the operation, whose completion then comes
// exactly once; a negative return means it was refused and no completion will come.
// Every entry may be called from any thread.
struct ops {
    const char* name = nullptr;

    int (*create)(const config& settings, const upcalls& calls, instance** out) = nullptr;
    // Hard-closes every socket (their operations complete -ECANCELED) and frees the instance.
    void (*destroy)(instance* self) = nullptr;

    int (*socket)(instance* self, socket_handle* out) = nullptr;
    int (*bind)(instance* self, socket_handle s, const sockaddr* address, socklen_t length) = nullptr;
    int (*listen)(instance* self, socket_handle s, int backlog) = nullptr;
    int (*accept)(instance* self, socket_handle listener, operation* op) = nullptr;
    int (*connect)(instance* self, socket_handle s, operation* op) = nullptr;
    int (*send)(instance* self, socket_handle s, operation* op) = nullptr;
    int (*recv)(instance* self, socket_handle s, operation* op) = nullptr;
    int (*getsockname)(instance* self, socket_handle s, sockaddr* address, socklen_t* length) = nullptr;
    int (*getpeername)(instance* self, socket_handle s, sockaddr* address, socklen_t* length) = nullptr;
    int (*getsockopt)(instance* self, socket_handle s, int level, int name, void* value,
                      socklen_t* length) = nullptr;
    int (*setsockopt)(instance* self, socket_handle s, int level, int name, const void* value,
                      socklen_t length) = nullptr;

    // The hard close, the provider's only close. Every pending operation on `s` completes with
    // -ECANCELED before close returns (on the calling thread), then the handle is released:
    // later use gives -ENOTSOCK. No event is signalled for `s` after close is called. The
    // peer's pending and later receives fail -ECONNRESET. Never returns -EWOULDBLOCK or
    // -EINPROGRESS; resources may be torn down in the background.
    int (*close)(instance* self, socket_handle s) = nullptr;

    // Explicit progress: waits at most timeout_ms (0: do not wait) for events, then delivers
    // completions and up-calls. Returns the number delivered, or a negated errno. Concurrent
    // calls are serialised.
    int (*progress)(instance* self, int timeout_ms) = nullptr;
    // Busy-poll support (optional): delivers what has completed on socket `s`, on the calling
    // thread and without waiting, even while `progress` waits in another thread. A socket's
    // completions keep their order: while another thread delivers for `s` this delivers
    // nothing. A run of calls starts with poll_start and ends with poll_stop; in between the
    // provider may stop waking `progress` for `s` (the caller takes its completions). Returns
    // the number delivered, or a negated errno (-ENOTSOCK; a closed socket's run needs no stop).
    // See poll_stay_unarmed and poll_arm above.
    int (*progress_socket)(instance* self, socket_handle s, uint32_t flags) = nullptr;
    // A file descriptor that polls readable when `progress` has work.
    int (*event_fd)(instance* self) = nullptr;
    // Makes a `progress` blocked in another thread return soon.
    int (*wake)(instance* self) = nullptr;

    int (*query_memory)(instance* self, memory_stats* out) = nullptr;
};

// A copy of `table` with every null entry replaced by one that returns -EOPNOTSUPP.
ops with_defaults(const ops& table);

} // namespace sansock::provider

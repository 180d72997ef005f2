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

// A registered memory region of an instance (register_memory): slot index in the low 32 bits,
// generation in the high 32 bits, as socket_handle; a handle whose region was deregistered is
// told apart (-ENOENT). 0 is never a valid handle.
using memory_handle = uint64_t;
inline constexpr memory_handle invalid_memory = 0;

// Access of a registration. Local access (the region as the local side of rdma_write and
// rdma_read) is always allowed; the remote flags let the peer read or write it.
inline constexpr uint32_t memory_local = 0;
inline constexpr uint32_t memory_remote_read = 1u << 0;
inline constexpr uint32_t memory_remote_write = 1u << 1;

// What a peer needs to reach a region (describe_memory): its address, length and key (the
// rkey on verbs). The switch sends it to its peer, which names it in rdma_write or rdma_read.
struct remote_memory {
    uint64_t address = 0;
    uint64_t length = 0;
    uint32_t key = 0;
};

enum class operation_kind : uint8_t { send, recv, accept, connect };
// One-sided transfers between a local registration and a peer's, submitted with ops::rdma on
// a connected socket. Values of operation_kind named outside its enumerator list for now, so
// that the switch's exhaustive `switch` statements on the kinds it posts keep compiling with
// -Werror=switch; they join the list when the switch posts them (issue 11).
inline constexpr operation_kind rdma_write = operation_kind(4);
inline constexpr operation_kind rdma_read = operation_kind(5);

struct operation;
// The operation's own completion routine. Called exactly once per accepted submission, never
// from inside the submitting call, with no provider lock held; after it returns the provider
// never touches the operation again, so the routine may free or reuse it.
using completion_routine = void (*)(operation& op) noexcept;

// Flags on an operation.
inline constexpr uint32_t op_wait_all = 1u << 0; // recv (stream mode): complete only when `length` bytes arrived

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
    //   In message mode (config::messages): send and recv name registered memory, `length`
    //   bytes at `memory_offset` in registration `memory` (checked at submission: -ENOENT,
    //   -EINVAL), and `buffer` is not used. A send is one message of 1..slot_size bytes
    //   (-EMSGSIZE beyond), completing with `length` once the peer's adapter acknowledged it. A
    //   recv takes exactly one message, completing with its length (1..length); a message
    //   longer than `length` completes that recv -EMSGSIZE and resets the connection at both
    //   ends. A message that finds no receive posted at the peer resets the connection at both
    //   ends (verbs: rnr_retry 0): the submitter's own flow control must prevent it. Receives
    //   may be posted on a socket that is not connected yet (before connect, or while it
    //   connects): they are on the device before the connection is established. At most
    //   recv_slots receives are pending at once (-ENOBUFS beyond); sends beyond send_slots wait
    //   in the provider, in order with rdma operations. op_wait_all is refused (-EINVAL).
    //   rdma_write, rdma_read  length, once the transfer is done (a write: placed in the
    //   peer's memory as its adapter acknowledged); -EACCES when the peer's side was refused
    //   (bad key, outside the region, no such access, deregistered), after which the
    //   connection is reset at both ends.
    int64_t result = 0;
    socket_handle accepted = invalid_socket;

    // rdma_write, rdma_read: the local side is `length` bytes at `memory_offset` in the
    // registration `memory` (checked at submission); the remote side is `length` bytes at
    // `remote_address` of the peer's region whose key is `remote_key` (checked by the peer).
    // A write copies local to remote, a read remote to local. `buffer` is not used.
    memory_handle memory = invalid_memory;
    uint64_t memory_offset = 0;
    uint64_t remote_address = 0;
    uint32_t remote_key = 0;

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

// Per-instance settings; the switch passes its context's. In stream mode (messages false)
// registered memory per connection is send_slots * slot_size + recv_slots * slot_size.
struct config {
    uint32_t slot_size = 16 * 1024; // bytes per registered send or receive buffer
    uint32_t send_slots = 8;        // messages in flight per connection
    uint32_t recv_slots = 8;        // receives pre-posted per connection (= initial credits)
    uint32_t max_sockets = 4096;
    // Message mode (docs/provider-interface.md, "Message mode"), for the whole instance. Then
    // send and recv each carry one message of registered memory (see operation), the provider
    // has no byte stream, no framing and no flow control of its own, and registers nothing per
    // connection; slot_size is the largest message, send_slots how many sends and recv_slots
    // how many receives a connection has on the device at once. Both ends of a connection must
    // be in the same mode (verbs refuses a peer of the other: its handshake version differs).
    bool messages = false;
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
    uint32_t regions = 0;               // live register_memory regions
    uint64_t region_bytes = 0;          // their lengths (each once, however many devices), in registered_bytes too
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

    // ---- memory registration and RDMA (docs/provider-interface.md, "Memory and RDMA") ----

    // Registers `length` (> 0) bytes at `address` with `access` (memory_local, or
    // memory_remote_read and/or memory_remote_write); the handle in *out. The memory must stay
    // valid until deregistered. -EINVAL (null, length 0, unknown flags), -ENOMEM, or the
    // device's error. Allocates; may be called from any thread.
    int (*register_memory)(instance* self, void* address, size_t length, uint32_t access,
                           memory_handle* out) = nullptr;
    // Releases a registration: later remote access to it fails, its key is never given again.
    // -ENOENT (not, or no longer, a live handle), -EBUSY while an rdma operation naming it has
    // not completed (its completion routine has not yet been called), and in message mode
    // while a send or recv naming it is pending or, after the hard close that cancelled it,
    // may still be on the device (verbs: until its flush was reaped, within a few seconds of
    // the close): the caller tries again later (progress). Never allocates.
    int (*deregister_memory)(instance* self, memory_handle memory) = nullptr;
    // Whether the device is done with a region (optional): 1 when deregister_memory would not
    // say -EBUSY, 0 while it would, -ENOENT. So a caller can reuse a registered region for a
    // new connection once every operation that named it is over, without registering again.
    // Never allocates.
    int (*memory_idle)(instance* self, memory_handle memory) = nullptr;
    // The descriptor of a remotely accessible region for the peer of connected socket `s` (on
    // verbs the key depends on the device the connection uses). -ENOENT, -ENOTSOCK,
    // -EINVAL (a local-only region, null out), -ENOTCONN, or the socket's failure.
    int (*describe_memory)(instance* self, memory_handle memory, socket_handle s,
                           remote_memory* out) = nullptr;
    // Submits an rdma_write or rdma_read on connected socket `s`; asynchronous like send.
    // Refused: -ENOTSOCK, -EINVAL (bad op, length 0, the local range outside its
    // registration), -ENOENT (stale op->memory), -ENOTCONN, -ECONNRESET, -ENETDOWN.
    int (*rdma)(instance* self, socket_handle s, operation* op) = nullptr;
};

// A copy of `table` with every null entry replaced by one that returns -EOPNOTSUPP.
ops with_defaults(const ops& table);

} // namespace sansock::provider

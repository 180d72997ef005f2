// SPDX-License-Identifier: MIT
// The switch's internal state: contexts, stream sockets, and the operations between them and
// the provider. Only switch/*.cpp include this.
#pragma once

#include <netinet/in.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <type_traits>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <span>
#include <unordered_map>
#include <vector>

#include "lib/address.hpp"
#include "lib/errors.hpp"
#include "provider/provider.hpp"
#include "sansock/sansock.h"
#include "switch/context_hooks.hpp"
#include "switch/context_layer.hpp"
#include "switch/message_session.hpp"
#include "switch/session_protocol.hpp"
#include "switch/socket_fd.hpp"

namespace sansock::sw {

using time_point = std::chrono::steady_clock::time_point;
struct stream_socket;

// An asynchronous operation of the user's (send_async, recv_async, accept_async).
struct user_operation {
    enum class kind { send, recv, accept } what;
    uint8_t* recv_buffer = nullptr;
    size_t length = 0;
    sansock_callback callback = nullptr;
    void* user = nullptr;
};

struct ready_callback {
    sansock_callback callback;
    void* user;
    int64_t result;
};

// A provider operation the switch has in flight, with the bytes it carries.
struct provider_request : provider::operation {
    stream_socket* owner = nullptr;
    std::vector<uint8_t> bytes;
    uint32_t data_bytes = 0;
};

// Received stream bytes not read yet: bytes[begin, size()). Either a staging buffer that held
// one full frame alone (kept without a copy: 16 bytes of header and at most 16 unused), or a
// compact block of compact_block_size bytes that small frames are copied into, end to end.
struct received_block {
    std::vector<uint8_t> bytes;
    size_t begin = 0;
    bool compact = false;
};

// Send queue entry: bytes copied from a blocking send, or a user's async buffer.
struct send_chunk {
    std::vector<uint8_t> copy;
    const uint8_t* external = nullptr;
    size_t length = 0;
    size_t offset = 0;
    std::optional<user_operation> op; // completes once fully handed to the provider
    const uint8_t* data() const { return external != nullptr ? external : copy.data(); }
};

enum class socket_state { created, bound, listening, connecting, connected, failed };

struct context;

struct stream_socket {
    context* ctx = nullptr;
    sansock_socket_t handle = 0;       // 0 once the user closed it (or before accept)
    sansock_socket_t named = 0;        // the handle it was given, kept after close (log messages)
    provider::socket_handle ps = 0;    // 0 once the provider socket is closed
    socket_state state = socket_state::created;
    bool nonblocking = false;
    linger linger_option{0, 0};
    std::chrono::milliseconds recv_timeout{0}, send_timeout{0}; // 0: none; negative: do not wait
    int pending_error = 0;             // SO_ERROR, negated errno
    int failure = 0;                   // the error every call gives once failed
    uint32_t requests_in_flight = 0;   // provider operations not completed yet
    uint32_t waiters = 0;              // blocking calls waiting on it (they keep it alive)
    uint32_t last_wait_us = UINT32_MAX; // how long its last blocking wait took (busy-poll time)
    bool notifications_off = false;    // a busy-poll left the provider not waking progress for it

    bool reset_counted = false;        // its reset was counted and logged (once per connection)

    // Dead-peer detection (docs/semantics.md, "Keepalive"): SO_KEEPALIVE (-1: the context's
    // attr.keepalive), TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT (0: the context's); inherited
    // by the connections a listener accepts. Once connected: when the peer was last heard from
    // (any bytes received; or keepalive was turned on), and the probes sent since.
    int8_t keepalive = -1;
    uint8_t keepalive_count = 0;
    uint16_t keepalive_idle_s = 0;
    uint16_t keepalive_interval_s = 0;
    time_point heard_from{};
    uint32_t probes_unanswered = 0;
    uint64_t probes_sent = 0, probe_replies = 0; // totals (tests)
    socket_address local_address{};    // once connected, in `family` (log messages, accept)
    socket_address peer_address{};
    // AF_INET or AF_INET6 once bound or connecting (accepted: the listener's); names are given
    // in it, an IPv4 one mapped (::ffff:a.b.c.d) on an AF_INET6 socket. IPV6_V6ONLY.
    sa_family_t family = AF_UNSPEC;
    sa_family_t bound_family = AF_UNSPEC; // what the provider was bound in (a mapped address: AF_INET)
    bool v6only = false;

    // Connecting.
    provider_request* connect_request = nullptr;

    // Listening.
    int backlog = 0;
    provider_request* accept_request = nullptr;
    std::deque<stream_socket*> ready;  // connections not accepted by the user yet
    std::deque<user_operation> async_accepts; // by value: no allocation per operation
    stream_socket* listener = nullptr; // while in a listener's ready queue

    // Connected: sending.
    std::deque<send_chunk> send_queue;
    size_t send_queued = 0;
    size_t send_buffer_limit = 0;
    uint32_t window_bytes = 0;         // the receive window this socket advertises
    uint64_t unacknowledged = 0;       // DATA bytes given to the provider, not yet acknowledged
    bool data_lost = false;            // the connection failed with data sent but not acknowledged
    bool shut_write = false;           // our FIN and FIN_ACK state lives in `session`
    session::receive_state session;

    // Connected: receiving.
    provider_request* recv_request = nullptr;
    std::vector<uint8_t> staging;      // bytes from the provider not yet parsed
    size_t staged = 0;
    std::deque<received_block> received;
    std::vector<uint8_t> spare_staging; // a consumed staging buffer, for reuse (capacity 0: none)
    std::vector<uint8_t> spare_compact; // a consumed compact block, for reuse (capacity 0: none)
    size_t received_bytes = 0;
    uint32_t consumed_uncredited = 0;
    bool shut_read = false;
    std::deque<user_operation> async_recvs;

    // After the user's close.
    bool closing = false;              // graceful disconnect running in the background
    time_point graceful_deadline{};
    bool finished = false;             // nothing more to do but free it

    pollable_fd fd;                    // sansock_socket_fd's descriptor, made at its first call; closed with the handle

    // Session protocol version 3 (context::messages): the connection's control buffers and
    // credits, from before its connect (or at its accept) to its free. Null on version 2.
    std::unique_ptr<message_session> messages;
};

struct context {
    sansock_context_attr attr{};
    context_hooks hooks;
    provider::ops ops{};
    provider::instance* instance = nullptr;
    bool manual_progress = false;
    // Session protocol version 3 over a message-mode provider (docs/protocol.md, part 2);
    // false: version 2 over the provider's byte stream.
    bool messages = false;
    size_t message_sessions = 0;       // live message_session objects (registered pools)
    struct retired_region {
        provider::memory_handle region;
        uint8_t* memory;
        size_t bytes;
    };
    std::vector<retired_region> retired_regions; // pools of ended sessions, not yet released
    // Registered pools no connection uses, kept (at most idle_pool_limit, for idle_pool_keep)
    // so that the next connection need not register one: registering a pool cost about 2 ms
    // on rxe, on the path of a connection's first message (docs/protocol.md 4.1).
    struct idle_pool {
        provider::memory_handle region;
        uint8_t* memory;
        size_t bytes;
        std::chrono::steady_clock::time_point since;
    };
    std::vector<idle_pool> idle_pools; // capacity idle_pool_limit from the start: never grows

    std::mutex mutex;                  // every socket of the context
    std::condition_variable changed;   // any socket's state changed
    std::unordered_map<stream_socket*, std::unique_ptr<stream_socket>> sockets;
    std::unordered_map<provider::socket_handle, stream_socket*> by_provider_socket;
    std::vector<provider::socket_handle> provider_closes; // hard closes to run without the lock
    std::vector<ready_callback> callbacks;                // user callbacks to run without the lock
    // So that no close, abort or failure needs memory: provider_closes has room for every
    // socket's hard close (reserved when a socket is made; run_deferred keeps its capacity),
    // and callbacks for every async operation pending in a socket (`async_pending`, reserved
    // when it is started).
    size_t async_pending = 0;
    struct sansock_context_stats stats{}; // the counters (size, registered_bytes unused)

    std::thread progress_thread;
    // Leader/follower (docs/architecture.md, "Threads and progress"): a blocked call of a
    // thread-progress context that has to sleep waits in the provider itself, so the completion
    // it waits for is delivered on its own thread, when no other call is doing so; meanwhile
    // the progress thread only runs time-outs and deferred work. Under `mutex`.
    bool leading = false;
    std::thread::id leader{};
    bool stopping = false;             // destroy has begun: no handle is given out any more
    // Socket calls inside the context, from the handle's lookup to the return (socket_call):
    // destroy waits for none to be left. Counted under the process mutex, uncounted under
    // `mutex`, so atomic.
    std::atomic<size_t> calls{0};
    // The threads running user callbacks of the context now (run_callbacks; nodes on their
    // stacks), so that destroy from one of them is -EBUSY. Under `mutex`.
    struct callback_run {
        std::thread::id thread;
        callback_run* next;
    };
    callback_run* callback_runs = nullptr;

    layer_slot layer;                  // the service layer's state (switch/context_layer.hpp)
    bool shared_fabric = false;        // uses the process's shared loopback fabric

    time_point now() const { return hooks.now ? hooks.now() : std::chrono::steady_clock::now(); }
};

// --- context.cpp -------------------------------------------------------------------------------
// A socket call's hold on its context from the handle's lookup (lock_socket) to the call's
// return: the context's lock (this unique_lock, which the call may release and take again
// while it waits) and one count of context::calls. sansock_context_destroy makes every handle
// of the context invalid first (a blocked call wakes, sees its handle gone and returns), then
// waits for the count to fall to 0, so no call touches the context after it is freed.
// Declare it first in a call (destroyed last, after every guard that uses the lock).
class socket_call : public std::unique_lock<std::mutex> {
public:
    socket_call() = default;
    socket_call(const socket_call&) = delete;
    socket_call& operator=(const socket_call&) = delete;
    ~socket_call() { leave(); }
    // The call is done with the context (lock held or not; released on return).
    void leave();

private:
    friend stream_socket* lock_socket(sansock_socket_t handle, socket_call& lock);
    friend stream_socket* lock_socket(sansock_socket_t handle, std::unique_lock<std::mutex>& lock);
    context* ctx_ = nullptr;
};

// Runs user callbacks of `ctx` on this thread (without the context's lock), marked so that
// sansock_context_destroy called from one of them gets -EBUSY: the call running them would
// touch the context afterwards. Every user callback of the switch runs through here.
void run_callbacks(context& ctx, std::span<const ready_callback> callbacks);
// Whether this thread is running user callbacks of `ctx` (nested in any depth). Without the lock.
bool in_callbacks_of(context& ctx);

int progress_once(context& ctx, int timeout_ms);
// Runs the hard closes and user callbacks collected under the lock (call without the lock).
void run_deferred(context& ctx);
// --- waiting.cpp -------------------------------------------------------------------------------
// Waits (lock held on entry and exit) until `ready()` or `deadline`; true if ready. Drives
// progress itself in manual mode. Protocol time-outs (linger, graceful) are measured on the
// context's clock, which tests may inject; the caller's own waits (poll, SO_RCVTIMEO,
// SO_SNDTIMEO, connect) on the real one. With `polled`, a thread-progress context first
// busy-polls that socket's connection (see poll_time in waiting.cpp); `polled` must stay alive.
enum class clock_kind { context, real };
// What a wait tests: a reference to the caller's callable (which outlives the call), not a
// std::function, which may allocate: a wait (a lingering close among them) needs no memory.
class ready_fn {
public:
    template <typename F>
        requires(!std::is_same_v<std::remove_cvref_t<F>, ready_fn>)
    ready_fn(F&& f) noexcept // NOLINT: converts from any callable, as std::function does
        : object_(const_cast<void*>(static_cast<const void*>(std::addressof(f)))),
          call_([](void* object) { return static_cast<bool>((*static_cast<std::remove_reference_t<F>*>(object))()); }) {}
    bool operator()() const { return call_(object_); }

private:
    void* object_;
    bool (*call_)(void*);
};
bool wait_until(context& ctx, std::unique_lock<std::mutex>& lock, ready_fn ready,
                std::optional<time_point> deadline, clock_kind clock = clock_kind::real,
                stream_socket* polled = nullptr);

// --- log.cpp: the context's log (attr.log_level, log, log_user) ----------------------------------
// Checks the log attributes and resolves log_level 0 from SANSOCK_LOG. 0 or -EINVAL.
int resolve_log_attributes(sansock_context_attr& attr);
bool log_enabled(const context& ctx, int level);
// Formats on the stack (cut to fit a 512-byte line) and hands it to attr.log or stderr.
[[gnu::format(printf, 3, 4)]] void log_message(const context& ctx, int level, const char* format, ...) noexcept;
// The provider's log up-call (provider::upcalls::log).
void provider_log(void* context, provider::log_level level, const char* message) noexcept;
// "10.0.0.1:49152 -> 10.0.0.2:7000 (socket 4294967297, closed by the user)" into out.
// Room for it: two IPv6 endpoints at their longest, a 20-digit handle and the words.
constexpr size_t connection_text_size = 2 * address::format_size + 64;
void describe_connection(const stream_socket& s, char* out, size_t size) noexcept;
// The connection is reset: by us (`sent`) or to us; counted in resets_sent/resets_received
// and logged, once per connection (a connected socket only). `detail` may be null.
void report_reset(stream_socket& s, bool sent, sansock_reset_reason reason, const char* detail = nullptr) noexcept;

// The process-wide handle registry (docs/architecture.md, "Process state"): it exists from
// the first context to the last; with no context every lookup finds nothing (-ENOTSOCK).
sansock_socket_t register_socket(stream_socket* s);
void unregister_socket(sansock_socket_t handle);
// The socket behind `handle` with its context locked and the call counted, or nullptr
// (-ENOTSOCK; nothing counted).
stream_socket* lock_socket(sansock_socket_t handle, socket_call& lock);
// The same for a call that keeps the lock until it is done with the context (it never waits
// nor runs deferred work): counted only until the lock is taken, as destroy cannot free the
// context while the lock is held.
stream_socket* lock_socket(sansock_socket_t handle, std::unique_lock<std::mutex>& lock);
// The socket behind `handle` (its context's lock must be held by the caller), or nullptr.
stream_socket* find_registered(sansock_socket_t handle);

// --- keepalive.cpp: SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT and their defaults ----
// Fills in the defaults of the keepalive attributes and checks them. 0 or -EINVAL.
int resolve_keepalive_attributes(sansock_context_attr& attr);
struct keepalive_settings {
    bool on = false;
    uint32_t idle_s = 0, interval_s = 0, count = 0;
};
keepalive_settings keepalive_of(const stream_socket& s);
// setsockopt and getsockopt of those four options: 0, a negated errno, or
// not_a_keepalive_option when (level, name) is none of them.
inline constexpr int not_a_keepalive_option = 1;
int set_keepalive_option(stream_socket& s, int level, int name, const void* value, socklen_t length);
int get_keepalive_option(const stream_socket& s, int level, int name, void* value, socklen_t* length);

// --- stream_socket.cpp, stream_requests.cpp, stream_data.cpp (and stream_internal.hpp) -----------
void on_provider_event(void* context, provider::socket_handle ps, provider::connection_event event, int status) noexcept;
void check_timers(context& ctx);
// A control message (CREDIT, FIN, FIN_ACK, KEEPALIVE) of `type` with `value`: 0, or -ENOMEM,
// -ENOTCONN, or the provider's refusal.
int send_control(stream_socket& s, session::message_type type, uint32_t value);
// The provider socket was reset or lost (`code`): the socket fails, unless both directions had
// already ended gracefully.
void on_reset(stream_socket& s, int code);
void start_connection(stream_socket& s);   // connected: HELLO, first receive
int post_accept(stream_socket& s);
int start_connect(stream_socket& s, const sockaddr* address, socklen_t length);
void hard_close(stream_socket& s);         // schedules the provider close
void cancel_user_operations(stream_socket& s, int code);
void maybe_free(stream_socket& s);
void pump_send(stream_socket& s);
size_t readable_bytes(const stream_socket& s);
size_t take_received(stream_socket& s, uint8_t* out, size_t length);
// Unread data is dropped (close, shutdown for reading, failure); version 3 gives its receive
// buffers back to the peer while the connection lives.
void drop_received(stream_socket& s);
void finish_graceful_if_done(stream_socket& s);
void fail_socket(stream_socket& s, int code);
void deliver_async(stream_socket& s);
// The first connection in a listener's queue, out of it and given a handle (0 when none is
// left: -EMFILE); the listener's change published.
stream_socket& take_ready(stream_socket& listener);
// A connection was handed to the user (its handle is set): counted, logged.
void note_accepted(stream_socket& s);
// The context is destroyed with `s` open: its connection, if it is still live, is reset.
void reset_on_destroy(stream_socket& s);
// Progress is to hear of the socket's completions again (async operations, poll, queued data,
// background close): undoes what a busy-poll left off. Lock held.
void arm_notifications(stream_socket& s);

// --- socket_fd.cpp: the socket's descriptor follows its readiness ---------------------------------
// sansock_poll's events of the socket (api_poll.cpp). Lock held.
short readiness(const stream_socket& s);
void refresh_fd_slow(stream_socket& s) noexcept;
// The one place where a change of a socket's state is published (lock held): the context's
// waiters wake (blocked calls, sansock_poll), and the socket's descriptor shows its readiness
// (free unless the application asked for the descriptor; a few syscalls only when the
// readiness changed). Whatever changes what sansock_poll would report of a socket calls this,
// through the functions that change it: pump_send, take_received, deliver_async,
// take_ready, fail_socket, hard_close, and the completion routines and up-calls.
inline void socket_changed(stream_socket& s) noexcept {
    if (s.fd.is_open()) refresh_fd_slow(s);
    s.ctx->changed.notify_all();
    // A call leading in the provider is woken too, unless this is its own delivery.
    if (s.ctx->leading && s.ctx->leader != std::this_thread::get_id()) s.ctx->ops.wake(s.ctx->instance);
}

} // namespace sansock::sw

// SPDX-License-Identifier: MIT
// Shared internals of listeners, channels and service hosts: per context one engine (one lock,
// two service threads: internal jobs and timers; user callbacks), intrusive queues so abort
// never allocates. The engine is attached to its context through the context's layer slot
// (switch/context_layer.hpp): made with the first object created in the context, stopped and
// freed by sansock_context_destroy.
#pragma once

#include <netinet/in.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "lib/address.hpp"
#include "lib/errors.hpp"
#include "sansock/sansock.h"
#include "sansock/service.h"
#include "switch/context_layer.hpp"

namespace sansock::svc {

using clock = std::chrono::steady_clock;
using lock_t = std::unique_lock<std::mutex>;

struct service_engine;

// A unit of work for one of the service threads. Linked into its queue without allocating.
// `run` is called with the lock held; it must set `running = false` (under the lock) before
// it lets go of the task for good (e.g. before calling user code that may free the owner).
struct task {
    void (*run)(service_engine& e, task& t, lock_t& lock) = nullptr;
    void* owner = nullptr;
    task* next = nullptr;
    bool queued = false;
    bool running = false;
};

// A deadline on the job thread. `fire` runs with the lock held and must not block.
struct timer {
    void (*fire)(timer& t) = nullptr;
    void* owner = nullptr;
    clock::time_point when{};
    bool armed = false;
    timer* next = nullptr;
};

// The completion of an open, accept, close or shutdown: synchronous (a waiter on the lock's
// condition variable), asynchronous (the user's callback on the callback thread), or internal
// (a function called under the lock by whoever finishes the operation).
struct completion {
    sansock_async_context async{};
    void (*internal)(completion& c, int result) = nullptr; // set by the owner (service host)
    void* internal_owner = nullptr;
    bool active = false;   // an operation is using it
    bool finished = false; // sync: the result is there
    int result = 0;
    task deliver;          // async: the callback
};

// A context's service engine. Every object of the context points to it.
struct service_engine : sansock::attached_layer {
    sansock_context* ctx = nullptr;
    std::mutex mutex; // guards every listener, channel and host of the context, and the queues
    std::condition_variable changed; // any object's state changed (waiters re-check)
    std::condition_variable jobs_changed;
    std::condition_variable callbacks_changed;
    task* jobs_head = nullptr;
    task* jobs_tail = nullptr;
    task* callbacks_head = nullptr;
    task* callbacks_tail = nullptr;
    timer* timers = nullptr;
    bool stopping = false;
    std::thread job_thread;
    std::thread callback_thread;
};

// An object is being created in ctx: counts a use of the context's engine and gives it, made
// and its threads started if this is the context's first object (it may allocate). 0, -EINVAL
// (the context is being destroyed), -ENOMEM, -EAGAIN (no thread).
int engine_acquire(sansock_context* ctx, service_engine** out);
// The object that counted a use is freed; nothing of it touches the engine any more (call
// without the lock). sansock_context_destroy returns -EBUSY while uses are counted.
void engine_release(sansock_context* ctx);

// Under the lock. Never allocate.
void post_job(service_engine& e, task& t);
void post_callback(service_engine& e, task& t);
void arm_timer(service_engine& e, timer& t, clock::time_point when);
void disarm_timer(service_engine& e, timer& t);
bool task_idle(const task& t);

// Starts an operation on `c` (under the lock).
void begin(completion& c, const sansock_async_context* async);
// Finishes it (under the lock): sync waiter woken, async callback queued, internal called.
void finish(service_engine& e, completion& c, int result);
// The call's return for a started operation that did not finish at once: waits (sync) or
// returns -EINPROGRESS (async). Lock held on entry and exit.
int wait_or_async(service_engine& e, completion& c, lock_t& lock);
// An operation that finished within the call: its result, no callback.
int finish_at_once(completion& c, int result);

// Whether the context runs its own progress thread (required).
bool has_progress_thread(sansock_context* ctx);
// Closes a switch socket (never call with the lock held: the switch may run callbacks inline).
void close_socket(sansock_socket_t s, bool hard);

// The addresses of listeners, channels and host endpoints: AF_INET (struct sockaddr_in) or
// AF_INET6 (all of struct sockaddr_in6), as sansock_bind and sansock_connect take them.
// Checks `address` and copies it into *out (its family's size): 0, -EINVAL or -EAFNOSUPPORT.
int take_address(const sockaddr* address, socklen_t length, socket_address* out);
// Gives `a` out (sansock_listener_address, sansock_service_host_endpoint_address): -EINVAL
// when *length is shorter than its family's sockaddr; else *length is set to that size.
int give_address(const socket_address& a, sockaddr* out, socklen_t* length);

} // namespace sansock::svc

// ---- the objects (global names: they are the opaque types of service.h) ------------------

struct sansock_listener {
    sansock_context* ctx = nullptr;
    sansock::svc::service_engine* engine = nullptr; // the context's
    int backlog = 128;
    sansock_listener_state state = SANSOCK_LISTENER_CREATED;
    sansock_socket_t sock = 0;
    sansock::socket_address address{};
    bool address_known = false;
    bool abort_requested = false;     // during OPENING
    // Channels waiting in accept, in order (linked through sansock_channel::accept_next).
    sansock_channel* accepts_head = nullptr;
    sansock_channel* accepts_tail = nullptr;
    bool switch_accept_pending = false; // a sansock_accept_async is outstanding
    uint32_t io_outstanding = 0;        // switch callbacks not yet finished
    int close_result = 0;
    bool close_in_call = false;         // a close call is closing the socket (it finishes)
    sansock::svc::completion close_done;
    sansock::svc::task cleanup;         // abort: closes the socket off the caller's path
    bool cleanup_pending = false;
};

struct sansock_channel {
    sansock_context* ctx = nullptr;
    sansock::svc::service_engine* engine = nullptr; // the context's
    sansock_channel_kind kind = SANSOCK_CHANNEL_SESSION;
    uint32_t close_timeout_ms = 30000;  // UINT32_MAX: none
    uint32_t max_message = 16u << 20;
    sansock_channel_state state = SANSOCK_CHANNEL_CREATED;
    sansock_socket_t sock = 0;

    // Opening / accepting.
    bool abort_requested = false;
    std::thread opener;                 // an async open's thread (joined later)
    sansock::svc::completion open_done;
    sansock_listener* accepting_on = nullptr;
    sansock_channel* accept_next = nullptr;
    sansock::svc::completion accept_done;

    // Open.
    uint32_t sending = 0, receiving = 0; // user threads inside send / receive
    bool shut_down = false;              // end of session sent (or requested)
    bool shutdown_waiting = false;
    sansock::svc::completion shutdown_done;
    bool eos_received = false;
    bool io_failed = false;              // an I/O error was seen
    bool cancelled = false;              // abort or hard close: pending I/O reports -ECANCELED
    bool io_woken = false;               // blocked send/receive woken by a shutdown (see wake_blocked_io)
    bool abort_waiting = false;          // abort's reset waits for user threads to leave the switch

    // Closing.
    enum class phase { none, wait_sends, wait_receives, drain, final_job, finishing } close_phase = phase::none;
    bool close_hard = false;
    bool close_notify = false;           // close_done is in use (the user's close)
    int close_result = 0;
    uint32_t io_outstanding = 0;         // switch callbacks (drain) not finished
    bool drain_pending = false;
    std::vector<uint8_t> drain_buffer;
    sansock::svc::completion close_done;
    sansock::svc::task close_job;        // final close of the socket
    sansock::svc::task abort_job;        // abort: resets the connection off the caller's path
    sansock::svc::timer close_timer;

    // Owned by a service host.
    sansock_service_host* host = nullptr;
    size_t endpoint = 0;
    sansock::svc::task deliver;          // hands the channel to on_channel
};

struct sansock_service_host {
    struct endpoint {
        sansock::socket_address address{};
        sansock_channel_kind kind = SANSOCK_CHANNEL_SESSION;
        sansock_listener* listener = nullptr;
        sansock_channel* accepting = nullptr; // the channel in accept on this endpoint
        sansock_channel* spare = nullptr;     // a channel whose accept failed (freed later)
        sansock::socket_address bound{};
        bool bound_known = false;
    };
    sansock_context* ctx = nullptr;
    sansock::svc::service_engine* engine = nullptr; // the context's
    sansock_service_host_state state = SANSOCK_HOST_CREATED;
    uint32_t close_timeout_ms = 0;
    sansock_channel_accepted_fn on_channel = nullptr;
    void* user_state = nullptr;
    std::vector<endpoint> endpoints;
    std::vector<sansock_channel*> channels; // accepted (host-owned)
    bool abort_requested = false;
    bool close_in_call = false;  // the close call itself finishes the close
    int close_result = 0;
    sansock::svc::completion close_done;
    sansock::svc::timer close_timer;
};

namespace sansock::svc {

// Channel internals used by the listener and the host (lock held).
void channel_accepted(sansock_channel& c, sansock_socket_t s); // ACCEPTING -> OPEN
void channel_accept_failed(sansock_channel& c, int result);    // ACCEPTING -> CREATED
// Starts a close (OPEN or FAULTED -> CLOSING). notify: the user's close (close_done used).
void channel_start_close(sansock_channel& c, bool notify, std::optional<uint32_t> timeout_ms);
void channel_abort_locked(sansock_channel& c);
// A close in progress stops waiting, resets the connection and completes with `result`.
void channel_force_hard(sansock_channel& c, int result);
// Channel creation and destruction without the public checks (and without counting a use of
// the engine: a host's channels are part of the host).
sansock_channel* channel_new(service_engine& e, sansock_context* ctx, sansock_channel_kind kind);
void channel_delete(sansock_channel* c, lock_t& lock); // waits for its tasks (lock held)
// Listener internals.
int listener_accept_locked(sansock_listener& l, sansock_channel& c, const sansock_async_context* async);
void listener_abort_locked(sansock_listener& l);
void listener_remove_accept(sansock_listener& l, sansock_channel& c);
// Host: a channel it owns reached CLOSED (or CREATED).
void host_channel_changed(sansock_service_host& h);

} // namespace sansock::svc

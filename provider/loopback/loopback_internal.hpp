// SPDX-License-Identifier: MIT
// The loopback provider's internal types and the helpers its files share.
#pragma once

#include <netinet/in.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "lib/address.hpp"
#include "lib/handle_table.hpp"
#include "provider/loopback/loopback.hpp"

namespace sansock::loopback {

namespace detail {

using provider::connection_event;
using provider::operation;
using provider::operation_kind;
using provider::socket_handle;

// An intrusive FIFO of operations linked through provider_next (no allocation per op).
struct op_queue {
    operation* head = nullptr;
    operation* tail = nullptr;

    bool empty() const { return head == nullptr; }
    void push(operation* op) {
        op->provider_next = nullptr;
        if (tail != nullptr)
            tail->provider_next = op;
        else
            head = op;
        tail = op;
    }
    operation* pop() {
        operation* op = head;
        if (op == nullptr) return nullptr;
        head = op->provider_next;
        if (head == nullptr) tail = nullptr;
        op->provider_next = nullptr;
        return op;
    }
    void splice(op_queue& other) {
        while (operation* op = other.pop()) push(op);
    }
    // Moves every op whose provider_word is `word` to `out`, keeping the order of both.
    void extract(uint64_t word, op_queue& out) {
        op_queue keep;
        while (operation* op = pop()) {
            if (op->provider_word == word)
                out.push(op);
            else
                keep.push(op);
        }
        *this = keep;
    }
};

struct loop_instance;

enum class sock_state : uint8_t { fresh, listening, connected, reset, down };

struct lsock {
    loop_instance* owner = nullptr;
    socket_handle handle = provider::invalid_socket;
    sock_state state = sock_state::fresh;
    bool accepted = true;    // false while it arrived at a listener and was not accepted yet
    bool bound = false;
    bool owns_port = false;  // holds its port in the fabric's port map
    bool frozen = false;
    bool v6only = false;     // IPV6_V6ONLY: a socket bound to :: takes no IPv4 connection
    socket_address local{};  // AF_INET or AF_INET6 (never IPv4-mapped: address::parse)
    socket_address remote{};
    lsock* peer = nullptr;
    int failure = 0; // SO_ERROR (negated): why the connection or the last connect failed, as verbs

    // The receive window: unread bytes from the peer, at most recv_slots * slot_size.
    std::unique_ptr<uint8_t[]> ring;
    size_t ring_capacity = 0;
    size_t ring_head = 0;
    size_t ring_count = 0;

    // Pending operations. While pending, provider_word counts bytes done (send, recv).
    op_queue sends;
    op_queue recvs;
    op_queue accepts;
    op_queue rdmas; // rdma_write and rdma_read not done yet (only while frozen)

    // Listener: connections that arrived and wait for an accept.
    int backlog = 0;
    std::deque<lsock*> arrived;
    lsock* listener = nullptr; // for an arrived socket, its listener

    // delay_completions
    bool holding = false;
    uint32_t hold_countdown = 0;
    op_queue held;
};

// A register_memory region. Guarded by the fabric mutex: a peer's rdma reads its key map.
struct lregion {
    provider::memory_handle handle = provider::invalid_memory;
    uint8_t* address = nullptr;
    size_t length = 0;
    uint32_t access = 0;
    uint32_t key = 0;
    uint32_t pending = 0; // rdma operations naming it whose completion has not run yet
};

struct pending_event {
    socket_handle socket;
    connection_event event;
    int status;
};

// Up-calls waiting for progress, first in first out. A socket posts at most two in its life
// (a reset, then device down), and room for two per socket is made when the socket is
// (reserve_for), so posting never allocates: an up-call is never lost for want of memory
// (its socket may have nothing pending that would tell the switch). A freed socket's up-calls
// are dropped with it (drop), so the room reserved for the live sockets always suffices.
class event_queue {
public:
    static constexpr size_t per_socket = 2;
    // Room for `sockets` sockets' up-calls; false (nothing changed) without memory.
    bool reserve_for(size_t sockets) noexcept {
        try {
            items_.reserve(per_socket * sockets);
            return true;
        } catch (const std::bad_alloc&) {
            return false;
        }
    }
    // False only if the reserved room is exceeded (a bug: the up-call is then dropped).
    bool push(const pending_event& e) noexcept {
        if (items_.size() == items_.capacity() && head_ > 0) compact();
        if (items_.size() == items_.capacity()) return false;
        items_.push_back(e); // within capacity: no allocation
        return true;
    }
    bool pop(pending_event& out) noexcept {
        if (empty()) return false;
        out = items_[head_++];
        if (head_ == items_.size()) clear();
        return true;
    }
    void drop(socket_handle socket) noexcept {
        compact();
        std::erase_if(items_, [socket](const pending_event& e) { return e.socket == socket; });
    }
    size_t size() const noexcept { return items_.size() - head_; }
    bool empty() const noexcept { return size() == 0; }
    void clear() noexcept {
        items_.clear();
        head_ = 0;
    }

private:
    void compact() noexcept {
        items_.erase(items_.begin(), items_.begin() + static_cast<std::ptrdiff_t>(head_));
        head_ = 0;
    }
    std::vector<pending_event> items_;
    size_t head_ = 0;
};


} // namespace detail

// One mutex for the whole fabric: connected instances touch each other's state.
struct fabric {
    std::mutex mutex;
    // Every bound socket by port. A port holds sockets on addresses that do not overlap (a
    // wildcard covers its family, :: without IPV6_V6ONLY both), as Linux without SO_REUSEADDR.
    std::multimap<uint16_t, detail::lsock*> ports;
    uint16_t next_port = 49152;
    std::vector<detail::loop_instance*> members;
};

namespace detail {

struct loop_instance {
    fabric* net = nullptr;
    bool owns_fabric = false;
    provider::config settings;
    provider::upcalls calls;
    handle_table<lsock> table;
    op_queue done;                      // completions waiting for progress
    event_queue events;                 // up-calls waiting for progress
    std::vector<lsock*> holding;        // sockets with delay_completions active
    int event_fd = -1;
    bool down = false;

    // Progress calls are serialised by this flag rather than a timed mutex, whose timed lock
    // ThreadSanitizer does not understand (pthread_mutex_clocklock).
    bool progress_busy = false;         // a thread is inside progress (fabric mutex)
    std::thread::id progress_thread;    // that thread
    socket_handle delivering = 0;       // whose completion or up-call progress is running
    std::condition_variable delivered;  // with the fabric mutex: delivering or busy changed
    std::atomic<bool> wake_requested{false};

    // register_memory: regions by handle and by key. Keys count up and are never reused, so a
    // deregistered region's key finds nothing.
    handle_table<lregion> regions{1u << 20};
    std::map<uint32_t, lregion*> keys;
    uint32_t next_key = 0x1000;

    explicit loop_instance(const provider::config& c) : settings(c), table(c.max_sockets) {}
};

inline loop_instance* as_loop(provider::instance* self) { return reinterpret_cast<loop_instance*>(self); }
inline provider::instance* as_instance(loop_instance* self) { return reinterpret_cast<provider::instance*>(self); }

// ---- the fabric (fabric.cpp): addresses and ports ----

// Releases the port `s` holds in the fabric's port map, if any.
void release_port(lsock* s);
// Whether `address` (its port included) may be bound with `v6only`: no socket holds the port
// on an overlapping set of addresses (a wildcard covers its family; :: without IPV6_V6ONLY
// covers IPv4 too), as Linux without SO_REUSEADDR.
bool address_free(const fabric& net, const socket_address& address, bool v6only);
// Binds `s` to `address` (checked free).
void take_address(lsock* s, const socket_address& address);
// Gives `s` `address` with an ephemeral port no socket of the fabric holds on any address;
// -EADDRNOTAVAIL when none is left.
int bind_ephemeral(lsock* s, const socket_address& address);
// address::parse: 0, -EINVAL (null, short) or -EAFNOSUPPORT; an IPv4-mapped one is AF_INET.
int parse_address(const sockaddr* address, socklen_t length, socket_address* out);
// The listener a connect to `target` reaches, or nullptr (the connection is refused).
lsock* find_listener(const fabric& net, const socket_address& target);

// ---- socket and connection state, the data path (connection.cpp) ----

// Wakes the instance's event fd.
void signal(loop_instance* inst);
// A user-visible socket of `inst` (arrived-but-unaccepted ones are not), or nullptr.
lsock* find(loop_instance* inst, socket_handle s);
inline size_t window_bytes(const provider::config& c) { return size_t(c.recv_slots) * c.slot_size; }
// Queues op's completion for progress (or holds it for delay_completions).
void complete(lsock* s, operation* op, int64_t result);
// Queues a connection up-call for progress (dropped with no memory for it).
void post_event(lsock* s, connection_event event, int status) noexcept;
// Ends delay_completions on `s`: its held completions go to progress.
void release_held(lsock* s);
// Moves bytes from `from`'s pending sends into its peer's window and from there into the
// peer's pending receives, until neither can advance.
void move_bytes(lsock* from);
void complete_all(lsock* s, op_queue& q, int64_t result);
void drop_window(lsock* s);
// The connection is gone: pending I/O fails with `status`, later I/O with -ECONNRESET.
void reset_socket(lsock* s, connection_event event, int status);
// Detaches `s` from its peer, which sees a reset.
void reset_peer(lsock* s);
// Frees a socket that is in the handle table (arrived or user-visible) after detaching it.
void free_socket(lsock* s);
// The hard close under the fabric lock: everything for `s` goes to `out` (pending ops with
// -ECANCELED, queued completions unchanged), the peer is reset, the handle released.
void close_locked(lsock* s, op_queue& out, std::unique_lock<std::mutex>& lock);
// Runs completion routines with no lock held. Returns how many ran.
int run_completions(op_queue& q);

// Runs `body` on the socket under the fabric lock; -EINVAL / -ENOTSOCK as documented.
template <typename Body>
int with_socket(provider::instance* self, socket_handle h, Body&& body) {
    loop_instance* inst = as_loop(self);
    if (inst == nullptr) return -EINVAL;
    std::lock_guard lock(inst->net->mutex);
    lsock* s = find(inst, h);
    if (s == nullptr) return -ENOTSOCK;
    return body(s);
}

// ---- memory registration and RDMA (rdma.cpp) ----

// Runs the rdma operations queued on `s` (unless a side is frozen); a refused one completes
// -EACCES and resets the connection at both ends, as the QP error does on verbs.
void run_rdma(lsock* s);
// An rdma operation's completion is about to run: its region is no longer busy for it.
void note_delivered(loop_instance* inst, const operation* op);
// Frees every region of the instance (destroy).
void free_regions(loop_instance* inst);
int lb_register_memory(provider::instance* self, void* address, size_t length, uint32_t access,
                       provider::memory_handle* out);
int lb_deregister_memory(provider::instance* self, provider::memory_handle memory);
int lb_memory_idle(provider::instance* self, provider::memory_handle memory);
int lb_describe_memory(provider::instance* self, provider::memory_handle memory, socket_handle h,
                       provider::remote_memory* out);
int lb_rdma(provider::instance* self, socket_handle h, operation* op);

// ---- the socket entries of the ops table (socket_calls.cpp) ----

int lb_socket(provider::instance* self, socket_handle* out);
int lb_bind(provider::instance* self, socket_handle h, const sockaddr* address, socklen_t length);
int lb_listen(provider::instance* self, socket_handle h, int backlog);
int lb_accept(provider::instance* self, socket_handle h, operation* op);
int lb_connect(provider::instance* self, socket_handle h, operation* op);
int lb_send(provider::instance* self, socket_handle h, operation* op);
int lb_recv(provider::instance* self, socket_handle h, operation* op);
int lb_getsockname(provider::instance* self, socket_handle h, sockaddr* address, socklen_t* length);
int lb_getpeername(provider::instance* self, socket_handle h, sockaddr* address, socklen_t* length);
int lb_getsockopt(provider::instance* self, socket_handle h, int level, int name, void* value, socklen_t* length);
int lb_setsockopt(provider::instance* self, socket_handle h, int level, int name, const void* value, socklen_t length);
int lb_close(provider::instance* self, socket_handle h);

} // namespace detail

} // namespace sansock::loopback

// SPDX-License-Identifier: MIT
// The verbs provider's internals: its types and the functions its files share.
#pragma once

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <thread>
#include <unordered_map>
#include <vector>

#include "lib/event_engine.hpp"
#include "lib/handle_table.hpp"
#include "provider/verbs/verbs_objects.hpp"
#include "provider/verbs/verbs_provider.hpp"

namespace sansock::verbs::detail {

using provider::config;
using provider::connection_event;
using provider::invalid_socket;
using provider::memory_stats;
using provider::op_wait_all;
using provider::operation;
using provider::operation_kind;
using provider::poll_start;
using provider::poll_arm;
using provider::poll_stay_unarmed;
using provider::poll_stop;
using provider::socket_handle;
using provider::upcalls;

constexpr uint32_t handshake_magic = 0x53414e53; // "SANS"
constexpr uint64_t recv_wr_flag = 1ull << 63;
constexpr uint64_t rdma_wr_flag = 1ull << 62; // with the index of the connection's RDMA slot
// RDMA operations posted at once per connection (more wait in software): the QP's send queue
// and the CQ have room for them besides the send slots.
constexpr uint32_t rdma_depth = 16;
// Inline data asked for at QP creation (message mode): a small send needs no DMA read of the
// user's memory. The device may grant less; vsocket::max_inline keeps what it granted.
constexpr uint32_t wanted_inline = 128;
// A close waits at most this for the flushes of its RDMA requests (see quiesce_rdma).
constexpr auto rdma_flush_limit = std::chrono::seconds(1);
constexpr auto slow_destroy = std::chrono::milliseconds(20); // logged (info): the kernel waited
// Flushes normally arrive within milliseconds; past this the QP is destroyed regardless.
constexpr auto teardown_limit = std::chrono::seconds(5);
// A socket left unarmed by a poller that has not come back within this is armed by progress.
constexpr auto unarmed_limit = std::chrono::milliseconds(10);

// Carried in rdma_cm private data by connect and accept (docs/provider-interface.md).
struct handshake {
    uint32_t magic;
    uint16_t version;
    uint16_t reserved;
    uint32_t recv_slots; // the sender's receives, posted before it connects or accepts
    uint32_t slot_size;  // the largest message the sender can receive
};

// An intrusive FIFO of operations, linked through operation::provider_next.
struct op_queue {
    operation* head = nullptr;
    operation* tail = nullptr;
    bool empty() const { return head == nullptr; }
    operation* front() const { return head; }
    void push(operation* op) {
        op->provider_next = nullptr;
        if (tail != nullptr) tail->provider_next = op;
        else head = op;
        tail = op;
    }
    operation* pop() {
        operation* op = head;
        if (op != nullptr) {
            head = op->provider_next;
            if (head == nullptr) tail = nullptr;
            op->provider_next = nullptr;
        }
        return op;
    }
};

enum class socket_state { fresh, bound, listening, connecting, accepting, connected, failed, closed };

struct buffer_deleter {
    void operator()(uint8_t* p) const noexcept { std::free(p); }
};

struct verbs_instance;

// What the instance keeps per RDMA device it has used.
struct device_resources {
    explicit device_resources(const destroy_log* log) : pd(nullptr, {log}), channel(nullptr, {log}) {}
    verbs_instance* owner = nullptr;
    ibv_context* context = nullptr;
    protection_domain pd;
    completion_channel channel;
    event_engine::watch_id watch = 0;
    // RDMA reads a connection may have outstanding, each way (rdma_cm's conn_param).
    uint8_t responder_resources = 1;
    uint8_t initiator_depth = 1;
};

// A register_memory region: one memory region per device the instance has opened, since a
// key is only valid on the PD it was made in.
struct region_mr {
    device_resources* device = nullptr;
    memory_region mr;
};
struct vregion {
    provider::memory_handle handle = provider::invalid_memory;
    uint8_t* address = nullptr;
    size_t length = 0;
    uint32_t access = 0;  // provider::memory_remote_*
    uint32_t pending = 0; // operations naming it whose completion has not been delivered
    // Message mode: work requests naming it on a QP whose completion (a flush, after a close)
    // has not been reaped; the device may still touch the memory.
    uint32_t posted = 0;
    std::vector<region_mr> mrs;
};

// A posted send (or, in message mode, receive) slot.
struct slot_use {
    operation* op = nullptr; // the send whose last fragment this slot carries (message mode: its op), else null
    provider::memory_handle memory = provider::invalid_memory; // message mode: the region the request names
};

struct received_fragment {
    uint32_t slot;
    uint32_t offset;
    uint32_t length;
};

// The received fragments not yet read, one per receive slot at most: a ring allocated with the
// connection, so a completion never allocates (docs/semantics.md, "Out of memory").
struct fragment_ring {
    std::unique_ptr<received_fragment[]> items;
    uint32_t capacity = 0, head = 0, count = 0;
    bool allocate(uint32_t n) noexcept {
        items.reset(new (std::nothrow) received_fragment[n]);
        capacity = items ? n : 0;
        head = count = 0;
        return items != nullptr;
    }
    bool empty() const { return count == 0; }
    received_fragment& front() { return items[head]; }
    void pop_front() {
        head = (head + 1) % capacity;
        --count;
    }
    // False when full, which a peer that keeps to its credits cannot make happen.
    bool push_back(const received_fragment& f) {
        if (count == capacity) return false;
        items[(head + count++) % capacity] = f;
        return true;
    }
    void clear() { head = count = 0; }
};

struct vsocket;
// An intrusive FIFO of sockets, linked through vsocket::ready_next (a listener's established
// connections): an arrival needs no memory.
struct vsocket_queue {
    vsocket* head = nullptr;
    vsocket* tail = nullptr;
    size_t count = 0;
    bool empty() const { return head == nullptr; }
    size_t size() const { return count; }
    vsocket* front() const { return head; }
    inline void push_back(vsocket* s);
    inline vsocket* pop_front();
};

struct vsocket {
    // Its owners report a failed destroy to `log` (the instance's).
    explicit vsocket(const destroy_log* log) : id(nullptr, {log}), mr(nullptr, {log}), cq(nullptr, {log}) {}
    socket_state state = socket_state::fresh;
    socket_handle handle = invalid_socket; // 0 until the user holds it (accepted sockets)
    cm_id id;
    int failure = 0; // the negated errno every call gives once failed (-ECONNRESET, -ENETDOWN)
    bool v6only = false; // IPV6_V6ONLY, given to rdma_cm (RDMA_OPTION_ID_AFONLY) at an AF_INET6 bind

    // As a listener.
    int backlog = 0;
    op_queue accepts;
    vsocket_queue ready; // established, not accepted yet
    uint32_t handshaking = 0;
    // As a connection a listener still holds.
    vsocket* listener = nullptr;
    vsocket* ready_next = nullptr; // in the listener's `ready`
    vsocket* reaped_next = nullptr; // reaped, to be destroyed (reap_closed)

    // As a connection.
    operation* connect_op = nullptr;
    device_resources* device = nullptr;
    uint32_t slot_size = 0, send_slots = 0, recv_slots = 0;
    uint32_t fragment_size = 0; // min(own slot, peer's slot)
    std::unique_ptr<uint8_t, buffer_deleter> buffer; // send slots, then receive slots
    size_t buffer_bytes = 0;
    // Declared after the buffer and in parent-to-child order, so destroyed child first.
    memory_region mr;
    completion_queue cq;
    queue_pair qp;
    uint32_t credits = 0; // receives the peer has posted that we may consume
    uint32_t owed = 0;    // receives we reposted and have not yet returned to the peer
    std::vector<uint32_t> free_send_slots;     // capacity send_slots from the start: never grows
    std::vector<slot_use> send_slot_uses; // send_slots, fixed
    // Message mode: the receives on the RQ by slot (wr_id recv_wr_flag | slot), and the free ones.
    std::vector<slot_use> recv_slot_uses;  // recv_slots, fixed
    std::vector<uint32_t> free_recv_slots; // capacity recv_slots from the start
    uint32_t message_recvs = 0;  // receives accepted, not completed: at most recv_slots (-ENOBUFS)
    op_queue arrived_early;      // message receives completed before our ESTABLISHED: after the connect
    uint32_t max_inline = 0;     // inline data the QP was granted
    uint32_t posted_sends = 0, posted_recvs = 0;
    op_queue sends;           // not yet fully posted
    size_t send_offset = 0;   // bytes of sends.front() already posted
    fragment_ring received;
    op_queue recvs; // message mode: receives not posted yet (the QP is not made yet)
    // RDMA: posted operations by slot (wr_id rdma_wr_flag | slot; rdma_depth, made with the
    // connection), and those waiting for room on the SQ (in message mode sends too, in their
    // order: a send after an RDMA write is never posted before it).
    std::unique_ptr<operation*[]> rdma_slots;
    uint32_t rdma_posted = 0; // requests on the QP, flushed ones included until they complete
    op_queue sq_waiting;
    std::chrono::steady_clock::time_point teardown_deadline{};
    bool disconnect_pending = false; // closed: the peer is told by the next progress
    // Busy polling: while callers poll this socket's CQ themselves, its completion events are
    // not re-armed, so progress is not woken for completions the caller is about to take.
    uint32_t busy_pollers = 0;
    bool cq_armed = true;
    bool left_unarmed = false; // poll_stay_unarmed: the poller comes back; progress re-arms it late
    std::chrono::steady_clock::time_point unarmed_since{};
    // Delivery: the thread delivering this socket's completions or up-call now, and how many
    // it holds, so its order is kept and close can wait (docs/provider-interface.md). Kept
    // here, not in a map, so that taking a delivery never allocates.
    std::thread::id claim_thread{};
    uint32_t claims = 0;
    // The up-call to deliver (one per connection at most), kept here so a failure needs no memory.
    bool signal_pending = false;
    connection_event signal_event{};
    int signal_status = 0;

    uint8_t* send_slot(uint32_t slot) { return buffer.get() + size_t(slot) * slot_size; }
    uint8_t* recv_slot(uint32_t slot) { return buffer.get() + size_t(send_slots + slot) * slot_size; }
};

void vsocket_queue::push_back(vsocket* s) {
    s->ready_next = nullptr;
    if (tail != nullptr) tail->ready_next = s;
    else head = s;
    tail = s;
    ++count;
}

vsocket* vsocket_queue::pop_front() {
    vsocket* s = head;
    if (s != nullptr) {
        head = s->ready_next;
        if (head == nullptr) tail = nullptr;
        s->ready_next = nullptr;
        --count;
    }
    return s;
}

// Every socket of an instance, closed ones too, by address.
using socket_list = std::unordered_map<vsocket*, std::unique_ptr<vsocket>>;

struct verbs_instance {
    config settings;
    upcalls calls;
    destroy_log destroy_logging; // calls.log, for the owners' destructors; outlives them all
    std::mutex progress_mutex; // one progress at a time
    std::mutex mutex;          // everything below
    std::unique_ptr<event_engine> engine;
    event_channel events;
    event_engine::watch_id events_watch = 0;
    handle_table<vsocket> table;
    socket_list sockets;
    uint32_t closing = 0; // sockets closed and not reaped yet (state closed), torn down in progress()
    std::map<ibv_context*, std::unique_ptr<device_resources>> devices;
    handle_table<vregion> regions{1u << 20}; // register_memory; freed before the devices
    // Completions to deliver from progress, linked through provider_next; each one's
    // provider_word is its socket's handle (0: a socket the user does not hold yet). Intrusive,
    // so finishing an operation never allocates.
    op_queue done;
    uint32_t signals = 0; // sockets with signal_pending
    // A claim (vsocket::claims) ended: a socket's completions are delivered by one thread at a
    // time, so they keep their order when progress and a caller's progress_socket run at once,
    // and close waits for them: nothing of a socket runs after its close returned.
    std::condition_variable delivered;

    explicit verbs_instance(const config& c, const upcalls& u)
        : settings(c), calls(u), destroy_logging{u.log, u.context}, table(c.max_sockets) {}
};

inline verbs_instance* self_of(provider::instance* p) { return reinterpret_cast<verbs_instance*>(p); }

inline void finish(verbs_instance& self, const vsocket& s, operation* op, int64_t result) {
    op->result = result;
    op->provider_word = s.handle;
    self.done.push(op);
}

// Looks the socket up; a failed connection answers with its failure.
inline vsocket* find(verbs_instance& self, socket_handle handle) { return self.table.find(handle); }

// verbs_provider.cpp: the instance, socket options, the log.
const char* describe(int code);
[[gnu::format(printf, 3, 4)]] void log(const verbs_instance& self, provider::log_level level,
                                      const char* format, ...);
int validate_op(const operation* op, operation_kind kind);
int reserve_socket(verbs_instance& self, vsocket* s, socket_list::iterator* out) noexcept;
int set_nonblocking(int fd);

// verbs_connection.cpp: rdma_cm events, connect, accept and the handshake.
void fail_connect(verbs_instance& self, vsocket& s, int code);
void on_cm_events(void* context, int fd, uint32_t revents) noexcept;
int verbs_bind(provider::instance* p, socket_handle h, const sockaddr* address, socklen_t length);
int verbs_listen(provider::instance* p, socket_handle h, int backlog);
int verbs_accept(provider::instance* p, socket_handle h, operation* op);
int verbs_connect(provider::instance* p, socket_handle h, operation* op);
int verbs_getsockname(provider::instance* p, socket_handle h, sockaddr* address, socklen_t* length);
int verbs_getpeername(provider::instance* p, socket_handle h, sockaddr* address, socklen_t* length);

// verbs_completion.cpp: completion queues, the event engine's callbacks, progress.
void rearm_completions(verbs_instance& self, vsocket& s);
void drain_completions(verbs_instance& self, vsocket& s);
void on_device_completions(void* context, int fd, uint32_t revents) noexcept;
int verbs_progress(provider::instance* p, int timeout_ms);
int verbs_progress_socket(provider::instance* p, socket_handle h, uint32_t flags);
int verbs_event_fd(provider::instance* p);
int verbs_wake(provider::instance* p);

// verbs_data.cpp: posting sends and receives, credits.
int post_receive(vsocket& s, uint32_t slot);
bool repost_receive(verbs_instance& self, vsocket& s, uint32_t slot);
void pump_sends(verbs_instance& self, vsocket& s);
void deliver_received(verbs_instance& self, vsocket& s);
int verbs_send(provider::instance* p, socket_handle h, operation* op);
int verbs_recv(provider::instance* p, socket_handle h, operation* op);

// verbs_memory.cpp: device resources, a connection's registered buffer, CQ and QP.
device_resources* device_for(verbs_instance& self, ibv_context* context, int* error);
int build_connection(verbs_instance& self, vsocket& s, rdma_cm_id* id);
int verbs_query_memory(provider::instance* p, memory_stats* out);

// verbs_rdma.cpp: memory registration and RDMA operations.
int register_on_device(verbs_instance& self, vregion& r, device_resources& device) noexcept;
const ibv_mr* mr_on(const vregion& r, const device_resources* device);
inline bool inside(uint64_t offset, uint64_t length, uint64_t size) { return offset <= size && length <= size - offset; }
void pump_send_queue(verbs_instance& self, vsocket& s);
void on_rdma_completion(verbs_instance& self, vsocket& s, const ibv_wc& wc);
void take_posted_rdma(vsocket& s, op_queue& out);
void quiesce_rdma(verbs_instance& self, vsocket& s, std::unique_lock<std::mutex>& lock);
void note_delivered(verbs_instance& self, const operation* op);
void release_region_mrs(verbs_instance& self, ibv_context* context);
void free_regions(verbs_instance& self);
int verbs_register_memory(provider::instance* p, void* address, size_t length, uint32_t access,
                          provider::memory_handle* out);
int verbs_deregister_memory(provider::instance* p, provider::memory_handle memory);
int verbs_memory_idle(provider::instance* p, provider::memory_handle memory);
int verbs_describe_memory(provider::instance* p, provider::memory_handle memory, socket_handle h,
                          provider::remote_memory* out);
int verbs_rdma(provider::instance* p, socket_handle h, operation* op);

// verbs_messages.cpp: message mode's sends and receives (config::messages).
int message_send(verbs_instance& self, vsocket& s, operation* op);
int message_recv(verbs_instance& self, vsocket& s, operation* op);
int post_message_send(verbs_instance& self, vsocket& s, operation* op);
int build_message_slots(vsocket& s);
int post_early_receives(verbs_instance& self, vsocket& s);
void on_message_completion(verbs_instance& self, vsocket& s, const ibv_wc& wc);
void deliver_early(verbs_instance& self, vsocket& s);
void release_message_slots(verbs_instance& self, vsocket& s);

// verbs_teardown.cpp: failure, hard close, background teardown, device removal.
void take_pending(vsocket& s, op_queue& out);
void stop_connection(vsocket& s);
void fail_connection(verbs_instance& self, vsocket& s, int code, connection_event event);
void start_teardown(verbs_instance& self, vsocket& s);
void release_device(verbs_instance& self, ibv_context* context);
vsocket* reap_closed(verbs_instance& self);
void destroy_reaped(verbs_instance& self, vsocket* reaped);
int verbs_close(provider::instance* p, socket_handle h);

} // namespace sansock::verbs::detail

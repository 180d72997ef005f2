// SPDX-License-Identifier: MIT
// The verbs provider: byte-stream sockets over RC queue pairs, credit flow control, hard close.
//
// Each connection owns one registered buffer split into send slots and receive slots, an RC
// QP and a CQ; all CQs of a device share one completion channel, and all rdma_cm ids of an
// instance one event channel, both watched by the io_uring event engine. A send is copied into
// send slots (split when larger than a slot) and posted as SEND_WITH_IMM; the immediate data
// returns credits (receives reposted since the last message), so a sender only ever consumes
// receives its peer has posted and never provokes receiver-not-ready retries.
#include "provider/verbs/verbs_provider.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <condition_variable>
#include <unordered_map>
#include <vector>

#include "lib/event_engine.hpp"
#include "lib/handle_table.hpp"
#include "provider/verbs/verbs_call.hpp"
#include "provider/verbs/verbs_objects.hpp"

namespace sansock::verbs {

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

namespace {

constexpr uint32_t handshake_magic = 0x53414e53; // "SANS"
constexpr uint64_t recv_wr_flag = 1ull << 63;
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
};

struct send_slot_use {
    operation* op = nullptr;   // the send whose last fragment this slot carries, else null
};

struct received_fragment {
    uint32_t slot;
    uint32_t offset;
    uint32_t length;
};

struct vsocket {
    // Its owners report a failed destroy to `log` (the instance's).
    explicit vsocket(const destroy_log* log) : id(nullptr, {log}), mr(nullptr, {log}), cq(nullptr, {log}) {}
    socket_state state = socket_state::fresh;
    socket_handle handle = invalid_socket; // 0 until the user holds it (accepted sockets)
    cm_id id;
    int failure = 0; // the negated errno every call gives once failed (-ECONNRESET, -ENETDOWN)

    // As a listener.
    int backlog = 0;
    op_queue accepts;
    std::deque<vsocket*> ready; // established, not accepted yet
    uint32_t handshaking = 0;
    // As a connection a listener still holds.
    vsocket* listener = nullptr;

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
    std::vector<uint32_t> free_send_slots;
    std::vector<send_slot_use> send_slot_uses;
    uint32_t posted_sends = 0, posted_recvs = 0;
    op_queue sends;           // not yet fully posted
    size_t send_offset = 0;   // bytes of sends.front() already posted
    std::deque<received_fragment> received;
    op_queue recvs;
    std::chrono::steady_clock::time_point teardown_deadline{};
    bool disconnect_pending = false; // closed: the peer is told by the next progress
    // Busy polling: while callers poll this socket's CQ themselves, its completion events are
    // not re-armed, so progress is not woken for completions the caller is about to take.
    uint32_t busy_pollers = 0;
    bool cq_armed = true;
    bool left_unarmed = false; // poll_stay_unarmed: the poller comes back; progress re-arms it late
    std::chrono::steady_clock::time_point unarmed_since{};

    uint8_t* send_slot(uint32_t slot) { return buffer.get() + size_t(slot) * slot_size; }
    uint8_t* recv_slot(uint32_t slot) { return buffer.get() + size_t(send_slots + slot) * slot_size; }
};

struct finished_op {
    operation* op;
    socket_handle socket; // 0 for a socket the user does not hold yet
};

struct pending_upcall {
    socket_handle socket;
    connection_event event;
    int status;
};

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
    std::unordered_map<vsocket*, std::unique_ptr<vsocket>> sockets; // every socket, closed ones too
    std::vector<vsocket*> closing;                                   // torn down in progress()
    std::map<ibv_context*, std::unique_ptr<device_resources>> devices;
    std::vector<finished_op> done; // completions to deliver from progress
    std::vector<pending_upcall> signals;
    // Sockets whose completions or up-calls a thread has taken out of `done`/`signals` and is
    // delivering: one thread at a time per socket, so a socket's completions keep their order
    // when progress and a caller's progress_socket run at once, and close can wait for them:
    // nothing of a socket runs after its close returned.
    struct claim {
        std::thread::id thread;
        uint32_t count = 0;
    };
    std::unordered_map<socket_handle, claim> claims;
    std::condition_variable delivered; // a claim ended

    explicit verbs_instance(const config& c, const upcalls& u)
        : settings(c), calls(u), destroy_logging{u.log, u.context}, table(c.max_sockets) {}
};

verbs_instance* self_of(provider::instance* p) { return reinterpret_cast<verbs_instance*>(p); }

const char* describe(int code) {
    const char* text = strerrordesc_np(code < 0 ? -code : code);
    return text != nullptr ? text : "unknown error";
}

// A message for the context's log (upcalls::log), formatted on the stack: callable on any
// failure path, with the instance lock held.
[[gnu::format(printf, 3, 4)]] void log(const verbs_instance& self, provider::log_level level, const char* format, ...) {
    char message[320];
    va_list args;
    va_start(args, format);
    std::vsnprintf(message, sizeof message, format, args);
    va_end(args);
    if (self.calls.log != nullptr) self.calls.log(self.calls.context, level, message);
    else std::fprintf(stderr, "sansock: %s\n", message);
}

// --- helpers, called with the instance mutex held --------------------------------------------

void finish(verbs_instance& self, const vsocket& s, operation* op, int64_t result) {
    op->result = result;
    self.done.push_back({op, s.handle});
}

int validate_ipv4(const sockaddr* address, socklen_t length) {
    if (address == nullptr || length < static_cast<socklen_t>(sizeof(sa_family_t))) return -EINVAL;
    if (address->sa_family != AF_INET) return -EAFNOSUPPORT;
    if (length < static_cast<socklen_t>(sizeof(sockaddr_in))) return -EINVAL;
    return 0;
}

int validate_op(const operation* op, operation_kind kind) {
    if (op == nullptr || op->complete == nullptr || op->kind != kind) return -EINVAL;
    if ((kind == operation_kind::send || kind == operation_kind::recv) && (op->buffer == nullptr || op->length == 0))
        return -EINVAL;
    return 0;
}

void on_device_completions(void* context, int fd, uint32_t revents) noexcept;
struct vsocket;
void drain_completions(verbs_instance& self, vsocket& s);

device_resources* device_for(verbs_instance& self, ibv_context* context, int* error) {
    auto found = self.devices.find(context);
    if (found != self.devices.end()) return found->second.get();
    auto device = std::make_unique<device_resources>(&self.destroy_logging);
    device->owner = &self;
    device->context = context;
    device->pd.reset(ibv_alloc_pd(context));
    if ((*error = checked_pointer(device->pd.get())) != 0) return nullptr;
    device->channel.reset(ibv_create_comp_channel(context));
    if ((*error = checked_pointer(device->channel.get())) != 0) return nullptr;
    const int flags = fcntl(device->channel->fd, F_GETFL);
    if (flags < 0 || fcntl(device->channel->fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        *error = -errno;
        return nullptr;
    }
    if ((*error = self.engine->watch(device->channel->fd, on_device_completions, device.get(), &device->watch)) != 0)
        return nullptr;
    return self.devices.emplace(context, std::move(device)).first->second.get();
}

int post_receive(vsocket& s, uint32_t slot) {
    ibv_sge sge{reinterpret_cast<uintptr_t>(s.recv_slot(slot)), s.slot_size, s.mr->lkey};
    ibv_recv_wr wr{};
    wr.wr_id = recv_wr_flag | slot;
    wr.sg_list = &sge;
    wr.num_sge = 1;
    ibv_recv_wr* bad = nullptr;
    int rc = checked(ibv_post_recv(s.qp.get(), &wr, &bad));
    if (rc == 0) ++s.posted_recvs;
    return rc;
}

// The QP, CQ and registered buffer of a connection, with every receive posted.
int build_connection(verbs_instance& self, vsocket& s, rdma_cm_id* id) {
    int rc = 0;
    s.device = device_for(self, id->verbs, &rc);
    if (s.device == nullptr) return rc;
    s.slot_size = self.settings.slot_size;
    s.send_slots = self.settings.send_slots;
    s.recv_slots = self.settings.recv_slots;
    s.buffer_bytes = size_t(s.slot_size) * (s.send_slots + s.recv_slots);
    s.buffer.reset(static_cast<uint8_t*>(std::aligned_alloc(4096, (s.buffer_bytes + 4095) / 4096 * 4096)));
    if (!s.buffer) return -ENOMEM;
    // (ibv_reg_mr): the function, not verbs.h's macro, whose test of IBV_ACCESS_OPTIONAL_RANGE
    // mixes two enumerations (deprecated in C++20: clang warns); for these flags it calls the same.
    s.mr.reset((ibv_reg_mr)(s.device->pd.get(), s.buffer.get(), s.buffer_bytes, IBV_ACCESS_LOCAL_WRITE));
    if ((rc = checked_pointer(s.mr.get())) != 0) return rc;
    const int depth = static_cast<int>(s.send_slots + s.recv_slots);
    s.cq.reset(ibv_create_cq(id->verbs, depth, &s, s.device->channel.get(), 0));
    if ((rc = checked_pointer(s.cq.get())) != 0) return rc;
    if ((rc = checked(ibv_req_notify_cq(s.cq.get(), 0))) != 0) return rc;
    ibv_qp_init_attr attr{};
    attr.send_cq = s.cq.get();
    attr.recv_cq = s.cq.get();
    attr.qp_type = IBV_QPT_RC;
    attr.sq_sig_all = 1;
    attr.cap.max_send_wr = s.send_slots;
    attr.cap.max_recv_wr = s.recv_slots;
    attr.cap.max_send_sge = 1;
    attr.cap.max_recv_sge = 1;
    if ((rc = checked(rdma_create_qp(id, s.device->pd.get(), &attr))) != 0) return rc;
    s.qp = queue_pair(id);
    s.send_slot_uses.assign(s.send_slots, {});
    s.free_send_slots.clear();
    for (uint32_t slot = s.send_slots; slot-- > 0;) s.free_send_slots.push_back(slot);
    for (uint32_t slot = 0; slot < s.recv_slots; ++slot)
        if ((rc = post_receive(s, slot)) != 0) return rc;
    return 0;
}

handshake our_handshake(const vsocket& s) {
    return {handshake_magic, handshake_version, 0, s.recv_slots, s.slot_size};
}

// The peer's handshake, checked; 0 or -EPROTO.
int take_peer_handshake(vsocket& s, const void* data, uint8_t length) {
    handshake peer{};
    if (data == nullptr || length < sizeof peer) return -EPROTO;
    std::memcpy(&peer, data, sizeof peer);
    if (peer.magic != handshake_magic || peer.version != handshake_version || peer.recv_slots < 2 || peer.slot_size < 64)
        return -EPROTO;
    s.credits += peer.recv_slots; // credits returned before our ESTABLISHED was handled are kept
    s.fragment_size = std::min(s.slot_size, peer.slot_size);
    return 0;
}

void fail_queue(verbs_instance& self, const vsocket& s, op_queue& queue, int code) {
    while (operation* op = queue.pop()) finish(self, s, op, code);
}

// Every operation still pending on `s`, taken out of the socket.
void take_pending(vsocket& s, std::vector<operation*>& out) {
    if (s.connect_op != nullptr) out.push_back(std::exchange(s.connect_op, nullptr));
    while (operation* op = s.accepts.pop()) out.push_back(op);
    while (operation* op = s.sends.pop()) out.push_back(op);
    s.send_offset = 0;
    for (auto& use : s.send_slot_uses)
        if (use.op != nullptr) out.push_back(std::exchange(use.op, nullptr));
    while (operation* op = s.recvs.pop()) out.push_back(op);
    s.received.clear();
}

void signal(verbs_instance& self, vsocket& s, connection_event event, int status) {
    if (s.handle != invalid_socket) self.signals.push_back({s.handle, event, status});
}

// Stops the connection: the QP goes to error (every posted request flushes) and the peer is
// told through rdma_cm. Safe to call more than once.
void stop_connection(vsocket& s) {
    if (s.id && s.id->qp != nullptr) rdma_disconnect(s.id.get()); // QP to error, then DREQ
}

// The connection failed under the user (peer reset, device gone): pending operations fail with
// `code`, later calls too, and the user hears of it once.
void fail_connection(verbs_instance& self, vsocket& s, int code, connection_event event) {
    if (s.state == socket_state::closed || s.state == socket_state::failed) return;
    const bool was_connected = s.state == socket_state::connected;
    s.state = socket_state::failed;
    s.failure = code;
    std::vector<operation*> pending;
    take_pending(s, pending);
    for (operation* op : pending) finish(self, s, op, code);
    stop_connection(s);
    if (was_connected) signal(self, s, event, code);
}

// Events on, so progress hears of the flushes that teardown waits for; what completed while
// they were off is taken now.
void rearm_completions(verbs_instance& self, vsocket& s) {
    s.busy_pollers = 0;
    s.left_unarmed = false;
    if (s.cq_armed || !s.cq) return;
    s.cq_armed = ibv_req_notify_cq(s.cq.get(), 0) == 0;
    drain_completions(self, s);
}

void start_teardown(verbs_instance& self, vsocket& s) {
    s.state = socket_state::closed;
    // Nothing on the caller's path touches the device: every buffer posted to the QP is one of
    // our own registered slots, never the user's, so the pending operations can be cancelled
    // at once. The next progress (woken by close) moves the QP to error and sends the
    // disconnect request (rdma_disconnect); what arrives meanwhile is dropped with the socket.
    // (Moving the QP to error here cost 200+ us on rxe: its flush events woke progress.)
    if (s.id && s.id->qp != nullptr) s.disconnect_pending = true;
    s.teardown_deadline = std::chrono::steady_clock::now() + teardown_limit;
    self.closing.push_back(&s);
    rearm_completions(self, s);
}

int post_send_slot(vsocket& s, uint32_t slot, uint32_t length) {
    ibv_sge sge{reinterpret_cast<uintptr_t>(s.send_slot(slot)), length, s.mr->lkey};
    ibv_send_wr wr{};
    wr.wr_id = slot;
    wr.sg_list = length > 0 ? &sge : nullptr;
    wr.num_sge = length > 0 ? 1 : 0;
    wr.opcode = IBV_WR_SEND_WITH_IMM;
    wr.send_flags = IBV_SEND_SIGNALED;
    wr.imm_data = htonl(s.owed);
    ibv_send_wr* bad = nullptr;
    int rc = checked(ibv_post_send(s.qp.get(), &wr, &bad));
    if (rc == 0) {
        s.owed = 0;
        --s.credits;
        ++s.posted_sends;
    }
    return rc;
}

// Posts what flow control allows: data while two or more credits remain (the last one is kept
// for returning credits, so both ends can never be left without), else a bare credit return
// once half the receives are owed.
void pump_sends(verbs_instance& self, vsocket& s) {
    while (s.state == socket_state::connected && !s.free_send_slots.empty()) {
        const uint32_t slot = s.free_send_slots.back();
        if (!s.sends.empty() && s.credits >= 2) {
            operation* op = s.sends.front();
            const size_t chunk = std::min<size_t>(op->length - s.send_offset, s.fragment_size);
            std::memcpy(s.send_slot(slot), static_cast<const uint8_t*>(op->buffer) + s.send_offset, chunk);
            if (int rc = post_send_slot(s, slot, static_cast<uint32_t>(chunk))) {
                fail_connection(self, s, rc == -ENETDOWN ? rc : -ECONNRESET, connection_event::peer_reset);
                return;
            }
            s.free_send_slots.pop_back();
            s.send_offset += chunk;
            s.send_slot_uses[slot].op = nullptr;
            if (s.send_offset == op->length) {
                s.send_slot_uses[slot].op = s.sends.pop();
                s.send_offset = 0;
            }
            continue;
        }
        if (s.owed >= std::max(1u, s.recv_slots / 2) && s.credits >= 1) {
            if (int rc = post_send_slot(s, slot, 0)) {
                fail_connection(self, s, rc == -ENETDOWN ? rc : -ECONNRESET, connection_event::peer_reset);
                return;
            }
            s.free_send_slots.pop_back();
            s.send_slot_uses[slot].op = nullptr;
            continue;
        }
        return;
    }
}

// Moves received bytes into waiting receives; a slot emptied is posted again (a credit owed).
void deliver_received(verbs_instance& self, vsocket& s) {
    while (!s.recvs.empty() && !s.received.empty()) {
        operation* op = s.recvs.front();
        while (!s.received.empty() && op->provider_word < op->length) {
            received_fragment& fragment = s.received.front();
            const size_t n = std::min<size_t>(fragment.length, op->length - op->provider_word);
            std::memcpy(static_cast<uint8_t*>(op->buffer) + op->provider_word, s.recv_slot(fragment.slot) + fragment.offset, n);
            op->provider_word += n;
            fragment.offset += static_cast<uint32_t>(n);
            fragment.length -= static_cast<uint32_t>(n);
            if (fragment.length == 0) {
                const uint32_t slot = fragment.slot;
                s.received.pop_front();
                if (post_receive(s, slot) != 0) {
                    fail_connection(self, s, -ECONNRESET, connection_event::peer_reset);
                    return;
                }
                ++s.owed;
            }
        }
        if (op->provider_word == op->length || !(op->flags & op_wait_all)) {
            s.recvs.pop();
            finish(self, s, op, static_cast<int64_t>(op->provider_word));
        } else {
            break; // wait-all receive still short: wait for more data
        }
    }
    pump_sends(self, s);
}

// A socket whose QP carries the user's traffic (connected, or about to be).
bool receiving(const vsocket& s) {
    return s.state == socket_state::connected ||
           ((s.state == socket_state::connecting || s.state == socket_state::accepting) && s.qp);
}

void handle_completion(verbs_instance& self, vsocket& s, const ibv_wc& wc) {
    if (wc.wr_id & recv_wr_flag) {
        --s.posted_recvs;
        const uint32_t slot = static_cast<uint32_t>(wc.wr_id & ~recv_wr_flag);
        // The peer may send as soon as it is established, before our own ESTABLISHED event is
        // handled: a connection still connecting or accepting takes its data too.
        if (!receiving(s)) return; // flushes of a failed or closed socket
        if (wc.status != IBV_WC_SUCCESS) {
            fail_connection(self, s, -ECONNRESET, connection_event::peer_reset);
            return;
        }
        if (wc.wc_flags & IBV_WC_WITH_IMM) s.credits += ntohl(wc.imm_data);
        if (wc.byte_len == 0) {
            if (post_receive(s, slot) != 0) {
                fail_connection(self, s, -ECONNRESET, connection_event::peer_reset);
                return;
            }
            ++s.owed;
        } else {
            s.received.push_back({slot, 0, wc.byte_len});
        }
        deliver_received(self, s);
        return;
    }
    --s.posted_sends;
    const uint32_t slot = static_cast<uint32_t>(wc.wr_id);
    if (slot >= s.send_slots) return;
    s.free_send_slots.push_back(slot);
    operation* op = std::exchange(s.send_slot_uses[slot].op, nullptr);
    if (!receiving(s)) return;
    if (wc.status != IBV_WC_SUCCESS) {
        if (op != nullptr) finish(self, s, op, -ECONNRESET);
        fail_connection(self, s, -ECONNRESET, connection_event::peer_reset);
        return;
    }
    if (op != nullptr) finish(self, s, op, static_cast<int64_t>(op->length));
    pump_sends(self, s);
}

void drain_completions(verbs_instance& self, vsocket& s) {
    ibv_wc batch[32];
    int n;
    while (s.cq && (n = ibv_poll_cq(s.cq.get(), 32, batch)) > 0)
        for (int i = 0; i < n; ++i) handle_completion(self, s, batch[i]);
}

void on_device_completions(void* context, int, uint32_t) noexcept {
    auto* device = static_cast<device_resources*>(context);
    verbs_instance& self = *device->owner;
    std::lock_guard lock(self.mutex);
    ibv_cq* cq = nullptr;
    void* cq_context = nullptr;
    while (ibv_get_cq_event(device->channel.get(), &cq, &cq_context) == 0) {
        ibv_ack_cq_events(cq, 1);
        auto* s = static_cast<vsocket*>(cq_context);
        if (s->busy_pollers > 0) {
            s->cq_armed = false; // the poller re-arms it when it stops
            continue;
        }
        ibv_req_notify_cq(cq, 0);
        drain_completions(self, *s);
    }
}

// Hands an established connection to a waiting accept, if there is one.
void match_accepts(verbs_instance& self, vsocket& listener) {
    while (!listener.accepts.empty() && !listener.ready.empty()) {
        vsocket* connection = listener.ready.front();
        listener.ready.pop_front();
        connection->listener = nullptr;
        const socket_handle handle = self.table.insert(connection);
        operation* op = listener.accepts.pop();
        if (handle == invalid_socket) {
            start_teardown(self, *connection);
            finish(self, listener, op, -EMFILE);
            continue;
        }
        connection->handle = handle;
        op->accepted = handle;
        finish(self, listener, op, 0);
    }
}

void fail_connect(verbs_instance& self, vsocket& s, int code) {
    if (s.state != socket_state::connecting) return;
    s.state = socket_state::failed;
    s.failure = code;
    if (operation* op = std::exchange(s.connect_op, nullptr)) finish(self, s, op, code);
    stop_connection(s);
}

void handle_connect_request(verbs_instance& self, vsocket* listener, rdma_cm_event& event,
                            std::vector<rdma_cm_id*>& reject) {
    rdma_cm_id* id = event.id;
    if (listener == nullptr || listener->state != socket_state::listening ||
        listener->ready.size() + listener->handshaking >= static_cast<size_t>(std::max(1, listener->backlog))) {
        reject.push_back(id);
        return;
    }
    auto owned = std::make_unique<vsocket>(&self.destroy_logging);
    vsocket& s = *owned;
    s.id.reset(id);
    id->context = &s;
    s.state = socket_state::accepting;
    s.listener = listener;
    int rc = build_connection(self, s, id);
    if (rc == 0) rc = take_peer_handshake(s, event.param.conn.private_data, event.param.conn.private_data_len);
    if (rc == 0) {
        handshake ours = our_handshake(s);
        rdma_conn_param param{};
        param.private_data = &ours;
        param.private_data_len = sizeof ours;
        param.responder_resources = 1;
        param.initiator_depth = 1;
        param.rnr_retry_count = 0; // credits make receiver-not-ready impossible; any would be a bug
        rc = checked(rdma_accept(id, &param));
    }
    if (rc != 0) {
        // Release everything but the id itself, which is rejected once the event is acked.
        s.qp.reset();
        s.id.release();
        reject.push_back(id);
        return;
    }
    ++listener->handshaking;
    self.sockets.emplace(&s, std::move(owned));
}

void handle_cm_event(verbs_instance& self, rdma_cm_event& event, std::vector<rdma_cm_id*>& reject,
                     std::vector<ibv_context*>& removed) {
    if (event.event == RDMA_CM_EVENT_CONNECT_REQUEST) {
        handle_connect_request(self, static_cast<vsocket*>(event.listen_id->context), event, reject);
        return;
    }
    auto* s = static_cast<vsocket*>(event.id->context);
    if (s == nullptr) return;
    switch (event.event) {
    case RDMA_CM_EVENT_ADDR_RESOLVED:
        if (s->state == socket_state::connecting) {
            int rc = checked(rdma_resolve_route(s->id.get(), self.settings.resolve_timeout_ms));
            if (rc != 0) fail_connect(self, *s, -EHOSTUNREACH);
        }
        break;
    case RDMA_CM_EVENT_ROUTE_RESOLVED:
        if (s->state == socket_state::connecting) {
            int rc = build_connection(self, *s, s->id.get());
            if (rc == 0) {
                handshake ours = our_handshake(*s);
                rdma_conn_param param{};
                param.private_data = &ours;
                param.private_data_len = sizeof ours;
                param.responder_resources = 1;
                param.initiator_depth = 1;
                param.retry_count = 7;
                param.rnr_retry_count = 0;
                rc = checked(rdma_connect(s->id.get(), &param));
            }
            if (rc != 0) {
                if (s->qp) log(self, provider::log_level::error, "verbs: rdma_connect failed: %s", describe(rc));
                else log(self, provider::log_level::error,
                         "verbs: cannot set up the connection's QP or register its %zu-byte buffer: %s",
                         s->buffer_bytes, describe(rc));
                fail_connect(self, *s, s->qp ? -ECONNREFUSED : rc);
            }
        }
        break;
    case RDMA_CM_EVENT_ADDR_ERROR:
    case RDMA_CM_EVENT_ROUTE_ERROR:
        fail_connect(self, *s, -EHOSTUNREACH);
        break;
    case RDMA_CM_EVENT_UNREACHABLE:
        fail_connect(self, *s, -ETIMEDOUT);
        break;
    case RDMA_CM_EVENT_REJECTED:
    case RDMA_CM_EVENT_CONNECT_ERROR:
        fail_connect(self, *s, -ECONNREFUSED);
        if (s->state == socket_state::accepting && s->listener != nullptr) {
            --s->listener->handshaking;
            s->listener = nullptr;
            start_teardown(self, *s);
        }
        break;
    case RDMA_CM_EVENT_ESTABLISHED:
        if (s->state == socket_state::connecting) {
            int rc = take_peer_handshake(*s, event.param.conn.private_data, event.param.conn.private_data_len);
            if (rc != 0) {
                fail_connect(self, *s, rc);
                break;
            }
            s->state = socket_state::connected;
            if (operation* op = std::exchange(s->connect_op, nullptr)) finish(self, *s, op, 0);
            pump_sends(self, *s);
        } else if (s->state == socket_state::accepting) {
            s->state = socket_state::connected;
            vsocket* listener = s->listener;
            --listener->handshaking;
            listener->ready.push_back(s);
            match_accepts(self, *listener);
        }
        break;
    case RDMA_CM_EVENT_DISCONNECTED:
        // Completions already in the CQ came before the disconnect: deliver them first.
        if (s->cq) drain_completions(self, *s);
        if (s->state == socket_state::connected) {
            if (s->listener != nullptr) {
                s->state = socket_state::failed; // stays in the ready queue; the user meets the reset
                s->failure = -ECONNRESET;
                stop_connection(*s);
            } else {
                fail_connection(self, *s, -ECONNRESET, connection_event::peer_reset);
            }
        } else if (s->state != socket_state::closed) {
            stop_connection(*s);
        }
        break;
    case RDMA_CM_EVENT_DEVICE_REMOVAL:
        removed.push_back(event.id->verbs);
        break;
    default:
        break;
    }
}

// The device went away: every socket on it fails with -ENETDOWN (pending operations, later
// calls, one device_down up-call for connections), and everything the instance holds on the
// device is released now, not at close: the kernel cannot finish removing a device that has no
// way to disassociate (rxe among them) until every user context on it is closed.
void release_device(verbs_instance& self, ibv_context* context) {
    log(self, provider::log_level::error, "verbs: device %s was removed: its sockets fail with -ENETDOWN",
        context->device != nullptr ? ibv_get_device_name(context->device) : "?");
    std::vector<vsocket*> dead;
    for (auto& [s, owned] : self.sockets) {
        const bool on_device = (s->id && s->id->verbs == context) || (s->device && s->device->context == context);
        if (!on_device) continue;
        switch (s->state) {
        case socket_state::closed: dead.push_back(s); continue;
        case socket_state::connecting: fail_connect(self, *s, -ENETDOWN); break;
        case socket_state::listening:
            fail_queue(self, *s, s->accepts, -ENETDOWN);
            break;
        case socket_state::connected:
        case socket_state::accepting:
            if (s->listener == nullptr) fail_connection(self, *s, -ENETDOWN, connection_event::device_down);
            break;
        default: break;
        }
        std::vector<operation*> pending;
        take_pending(*s, pending);
        for (operation* op : pending) finish(self, *s, op, -ENETDOWN);
        s->state = socket_state::failed;
        s->failure = -ENETDOWN;
        s->qp.reset();
        s->cq.reset();
        s->mr.reset();
        s->buffer.reset();
        s->posted_sends = s->posted_recvs = 0;
        s->device = nullptr;
        s->id.reset();
    }
    for (vsocket* s : dead) {
        std::erase(self.closing, s);
        self.sockets.erase(s);
    }
    auto device = self.devices.find(context);
    if (device != self.devices.end()) {
        self.engine->unwatch(device->second->watch);
        self.devices.erase(device);
    }
}

void on_cm_events(void* context, int, uint32_t) noexcept {
    verbs_instance& self = *static_cast<verbs_instance*>(context);
    std::lock_guard lock(self.mutex);
    rdma_cm_event* event = nullptr;
    while (rdma_get_cm_event(self.events.get(), &event) == 0) {
        std::vector<rdma_cm_id*> reject;
        std::vector<ibv_context*> removed;
        handle_cm_event(self, *event, reject, removed);
        rdma_ack_cm_event(event);
        for (ibv_context* context : removed) release_device(self, context);
        // An id we will not keep can only be destroyed once its event is acknowledged.
        for (rdma_cm_id* id : reject) {
            rdma_reject(id, nullptr, 0);
            if (id->qp != nullptr) rdma_destroy_qp(id);
            if (int rc = rdma_destroy_id(id)) report_destroy_failure(&self.destroy_logging, "rdma_destroy_id", rc);
        }
    }
}

// Sockets left unarmed whose poller did not come back: progress hears of them again.
void rearm_abandoned(verbs_instance& self) {
    const auto now = std::chrono::steady_clock::now();
    for (auto& [s, owned] : self.sockets)
        if (s->left_unarmed && s->busy_pollers == 0 && now - s->unarmed_since >= unarmed_limit) rearm_completions(self, *s);
}

// Destroys closed sockets whose posted requests have all flushed (or that ran out of time).
void reap_closed(verbs_instance& self) {
    const auto now = std::chrono::steady_clock::now();
    std::erase_if(self.closing, [&](vsocket* s) {
        if (s->disconnect_pending) {
            s->disconnect_pending = false;
            stop_connection(*s);
        }
        if (s->posted_sends + s->posted_recvs > 0 && now < s->teardown_deadline) return false;
        self.sockets.erase(s); // members destroy QP, CQ, MR, buffer, then the id
        return true;
    });
}

// --- the ops ------------------------------------------------------------------------------

int verbs_create(const config& settings, const upcalls& calls, provider::instance** out) {
    if (out == nullptr) return -EINVAL;
    if (int rc = provider::check_config(settings)) return rc; // the same ranges as loopback
    auto self = std::make_unique<verbs_instance>(settings, calls);
    if (int rc = event_engine::create(self->engine)) return rc;
    self->events.reset(rdma_create_event_channel());
    if (int rc = checked_pointer(self->events.get())) return rc == -ENOENT || rc == -ENODEV ? -ENETDOWN : rc;
    const int flags = fcntl(self->events->fd, F_GETFL);
    if (flags < 0 || fcntl(self->events->fd, F_SETFL, flags | O_NONBLOCK) < 0) return -errno;
    if (int rc = self->engine->watch(self->events->fd, on_cm_events, self.get(), &self->events_watch)) return rc;
    *out = reinterpret_cast<provider::instance*>(self.release());
    return 0;
}


void verbs_destroy(provider::instance* p) {
    verbs_instance* self = self_of(p);
    if (self == nullptr) return;
    std::vector<operation*> cancelled;
    {
        std::lock_guard lock(self->mutex);
        std::vector<socket_handle> handles;
        self->table.for_each([&](uint64_t handle, vsocket*) { handles.push_back(handle); });
        for (socket_handle handle : handles) self->table.remove(handle);
        for (auto& [s, owned] : self->sockets) {
            take_pending(*s, cancelled);
            stop_connection(*s);
        }
        for (operation* op : cancelled) op->result = -ECANCELED;
        for (const finished_op& f : self->done) cancelled.push_back(f.op);
        self->done.clear();
        self->signals.clear();
        self->engine->unwatch(self->events_watch);
        for (auto& [context, device] : self->devices) self->engine->unwatch(device->watch);
    }
    for (operation* op : cancelled) op->complete(*op);
    self->sockets.clear();
    self->devices.clear();
    delete self;
}

int verbs_socket(provider::instance* p, socket_handle* out) {
    verbs_instance* self = self_of(p);
    if (self == nullptr || out == nullptr) return -EINVAL;
    std::lock_guard lock(self->mutex);
    auto owned = std::make_unique<vsocket>(&self->destroy_logging);
    rdma_cm_id* id = nullptr;
    if (int rc = checked(rdma_create_id(self->events.get(), &id, owned.get(), RDMA_PS_TCP))) return rc;
    owned->id.reset(id);
    const socket_handle handle = self->table.insert(owned.get());
    if (handle == invalid_socket) return -EMFILE;
    owned->handle = handle;
    self->sockets.emplace(owned.get(), std::move(owned));
    *out = handle;
    return 0;
}

// Looks the socket up; a failed connection answers with its failure.
vsocket* find(verbs_instance& self, socket_handle handle) { return self.table.find(handle); }

int verbs_bind(provider::instance* p, socket_handle h, const sockaddr* address, socklen_t length) {
    verbs_instance* self = self_of(p);
    std::lock_guard lock(self->mutex);
    vsocket* s = find(*self, h);
    if (s == nullptr) return -ENOTSOCK;
    if (int rc = validate_ipv4(address, length)) return rc;
    if (s->state == socket_state::failed) return s->failure;
    if (s->state != socket_state::fresh) return -EINVAL;
    if (int rc = checked(rdma_bind_addr(s->id.get(), const_cast<sockaddr*>(address)))) return rc;
    s->state = socket_state::bound;
    return 0;
}

int verbs_listen(provider::instance* p, socket_handle h, int backlog) {
    verbs_instance* self = self_of(p);
    std::lock_guard lock(self->mutex);
    vsocket* s = find(*self, h);
    if (s == nullptr) return -ENOTSOCK;
    if (s->state == socket_state::failed) return s->failure;
    if (s->state != socket_state::bound) return s->state == socket_state::fresh ? -EDESTADDRREQ : -EINVAL;
    if (backlog <= 0) backlog = 128;
    if (int rc = checked(rdma_listen(s->id.get(), backlog))) return rc;
    s->backlog = backlog;
    s->state = socket_state::listening;
    return 0;
}

int verbs_accept(provider::instance* p, socket_handle h, operation* op) {
    verbs_instance* self = self_of(p);
    std::lock_guard lock(self->mutex);
    vsocket* s = find(*self, h);
    if (s == nullptr) return -ENOTSOCK;
    if (int rc = validate_op(op, operation_kind::accept)) return rc;
    if (s->state == socket_state::failed) return s->failure;
    if (s->state != socket_state::listening) return -EINVAL;
    op->accepted = invalid_socket;
    s->accepts.push(op);
    match_accepts(*self, *s);
    if (!self->done.empty()) self->engine->wake();
    return 0;
}

int verbs_connect(provider::instance* p, socket_handle h, operation* op) {
    verbs_instance* self = self_of(p);
    std::lock_guard lock(self->mutex);
    vsocket* s = find(*self, h);
    if (s == nullptr) return -ENOTSOCK;
    if (int rc = validate_op(op, operation_kind::connect)) return rc;
    if (int rc = validate_ipv4(reinterpret_cast<const sockaddr*>(&op->address), op->address_length)) return rc;
    switch (s->state) {
    case socket_state::fresh:
    case socket_state::bound: break;
    case socket_state::connecting:
    case socket_state::accepting: return -EALREADY;
    case socket_state::connected: return -EISCONN;
    case socket_state::failed: return s->failure;
    default: return -EINVAL;
    }
    int rc = checked(rdma_resolve_addr(s->id.get(), nullptr, reinterpret_cast<sockaddr*>(&op->address),
                                       self->settings.resolve_timeout_ms));
    if (rc != 0) return rc;
    s->state = socket_state::connecting;
    s->connect_op = op;
    return 0;
}

int verbs_send(provider::instance* p, socket_handle h, operation* op) {
    verbs_instance* self = self_of(p);
    std::lock_guard lock(self->mutex);
    vsocket* s = find(*self, h);
    if (s == nullptr) return -ENOTSOCK;
    if (int rc = validate_op(op, operation_kind::send)) return rc;
    if (s->state == socket_state::failed) return s->failure;
    if (s->state != socket_state::connected) return -ENOTCONN;
    s->sends.push(op);
    pump_sends(*self, *s);
    return 0;
}

int verbs_recv(provider::instance* p, socket_handle h, operation* op) {
    verbs_instance* self = self_of(p);
    std::lock_guard lock(self->mutex);
    vsocket* s = find(*self, h);
    if (s == nullptr) return -ENOTSOCK;
    if (int rc = validate_op(op, operation_kind::recv)) return rc;
    if (s->state == socket_state::failed) return s->failure;
    if (s->state != socket_state::connected) return -ENOTCONN;
    op->provider_word = 0;
    s->recvs.push(op);
    deliver_received(*self, *s);
    if (!self->done.empty()) self->engine->wake();
    return 0;
}

int copy_address(const sockaddr* from, sockaddr* to, socklen_t* length) {
    if (to == nullptr || length == nullptr) return -EINVAL;
    const socklen_t size = from->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
    std::memcpy(to, from, std::min(*length, size));
    *length = size;
    return 0;
}

int verbs_getsockname(provider::instance* p, socket_handle h, sockaddr* address, socklen_t* length) {
    verbs_instance* self = self_of(p);
    std::lock_guard lock(self->mutex);
    vsocket* s = find(*self, h);
    if (s == nullptr) return -ENOTSOCK;
    if (!s->id) return s->failure;
    return copy_address(rdma_get_local_addr(s->id.get()), address, length);
}

int verbs_getpeername(provider::instance* p, socket_handle h, sockaddr* address, socklen_t* length) {
    verbs_instance* self = self_of(p);
    std::lock_guard lock(self->mutex);
    vsocket* s = find(*self, h);
    if (s == nullptr) return -ENOTSOCK;
    if (s->state != socket_state::connected || !s->id) return s->state == socket_state::failed ? s->failure : -ENOTCONN;
    return copy_address(rdma_get_peer_addr(s->id.get()), address, length);
}

int verbs_getsockopt(provider::instance* p, socket_handle h, int level, int name, void* value, socklen_t* length) {
    verbs_instance* self = self_of(p);
    std::lock_guard lock(self->mutex);
    vsocket* s = find(*self, h);
    if (s == nullptr) return -ENOTSOCK;
    if (value == nullptr || length == nullptr || *length < static_cast<socklen_t>(sizeof(int))) return -EINVAL;
    if (level != SOL_SOCKET) return -ENOPROTOOPT;
    int result;
    switch (name) {
    case SO_TYPE: result = SOCK_STREAM; break;
    case SO_SNDBUF: result = static_cast<int>(self->settings.slot_size * self->settings.send_slots); break;
    case SO_RCVBUF: result = static_cast<int>(self->settings.slot_size * self->settings.recv_slots); break;
    case SO_ERROR: result = -s->failure; break;
    default: return -ENOPROTOOPT;
    }
    std::memcpy(value, &result, sizeof result);
    *length = sizeof result;
    return 0;
}

int verbs_setsockopt(provider::instance* p, socket_handle h, int, int, const void*, socklen_t) {
    verbs_instance* self = self_of(p);
    std::lock_guard lock(self->mutex);
    if (find(*self, h) == nullptr) return -ENOTSOCK;
    return -ENOPROTOOPT; // buffer sizes are per instance (config)
}

int verbs_close(provider::instance* p, socket_handle h) {
    verbs_instance* self = self_of(p);
    if (self == nullptr) return -EINVAL;
    std::vector<operation*> cancelled;
    std::vector<operation*> finished; // completed before close, not delivered yet
    {
        std::unique_lock lock(self->mutex);
        vsocket* s = self->table.remove(h);
        if (s == nullptr) return -ENOTSOCK;
        // Completions or up-calls of this socket taken by another thread are delivered before
        // close returns (not when close is called from inside one of them).
        self->delivered.wait(lock, [&] {
            auto claim = self->claims.find(h);
            return claim == self->claims.end() || claim->second.thread == std::this_thread::get_id();
        });
        std::erase_if(self->done, [&](const finished_op& f) {
            if (f.socket != h) return false;
            finished.push_back(f.op);
            return true;
        });
        s->handle = invalid_socket; // no up-call for it from now on
        take_pending(*s, cancelled);
        // Connections a listener held but nobody accepted are reset.
        for (vsocket* connection : s->ready) {
            connection->listener = nullptr;
            start_teardown(*self, *connection);
        }
        s->ready.clear();
        for (auto& [other, owned] : self->sockets)
            if (other->listener == s) {
                other->listener = nullptr;
                start_teardown(*self, *other);
            }
        start_teardown(*self, *s);
    }
    // Progress moves the QP to error and tells the peer, on its own thread while this one
    // completes what it cancelled.
    self->engine->wake();
    for (operation* op : finished) op->complete(*op);
    for (operation* op : cancelled) {
        op->result = -ECANCELED;
        op->complete(*op);
    }
    return 0;
}

// Takes the completions and up-calls to deliver (of socket `only`, or of all when 0) out of
// the instance, claiming their sockets for this thread. Those of a socket another thread is
// delivering stay queued, for that thread or the next progress.
void take_deliveries(verbs_instance& self, socket_handle only, std::vector<finished_op>& ops,
                     std::vector<pending_upcall>& signals) {
    const auto me = std::this_thread::get_id();
    auto take = [&](socket_handle socket) {
        if (only != invalid_socket && socket != only) return false;
        if (socket == invalid_socket) return true; // not held by the user: nothing can close it
        auto [claim, fresh] = self.claims.try_emplace(socket);
        if (!fresh && claim->second.thread != me) return false;
        claim->second.thread = me;
        ++claim->second.count;
        return true;
    };
    std::erase_if(self.done, [&](const finished_op& f) {
        if (!take(f.socket)) return false;
        ops.push_back(f);
        return true;
    });
    std::erase_if(self.signals, [&](const pending_upcall& u) {
        if (!take(u.socket)) return false;
        signals.push_back(u);
        return true;
    });
}

void release_claim(verbs_instance& self, socket_handle socket) {
    if (socket == invalid_socket) return;
    std::lock_guard lock(self.mutex);
    auto claim = self.claims.find(socket);
    if (claim == self.claims.end() || --claim->second.count > 0) return;
    self.claims.erase(claim);
    self.delivered.notify_all();
}

// Delivers what take_deliveries took, without the instance lock. An up-call for a socket
// closed meanwhile is dropped; a completion never is.
void deliver(verbs_instance& self, const std::vector<finished_op>& ops, const std::vector<pending_upcall>& signals) {
    for (const finished_op& f : ops) {
        f.op->complete(*f.op);
        release_claim(self, f.socket);
    }
    for (const pending_upcall& signal : signals) {
        bool open;
        {
            std::lock_guard lock(self.mutex);
            open = self.table.find(signal.socket) != nullptr;
        }
        if (open && self.calls.on_connection_event != nullptr)
            self.calls.on_connection_event(self.calls.context, signal.socket, signal.event, signal.status);
        release_claim(self, signal.socket);
    }
}

int verbs_progress(provider::instance* p, int timeout_ms) {
    verbs_instance* self = self_of(p);
    if (self == nullptr) return -EINVAL;
    std::lock_guard progress_lock(self->progress_mutex);
    bool have_work, unarmed;
    {
        std::lock_guard lock(self->mutex);
        have_work = !self->done.empty() || !self->signals.empty();
        unarmed = std::any_of(self->sockets.begin(), self->sockets.end(), [](const auto& e) { return e.first->left_unarmed; });
    }
    int wait_ms = have_work ? 0 : std::max(timeout_ms, 0);
    if (unarmed) wait_ms = std::min(wait_ms, int(unarmed_limit.count()));
    int rc = self->engine->run_once(std::chrono::milliseconds(wait_ms));
    if (rc < 0 && rc != -EINTR && rc != -ETIME) return rc;
    std::vector<finished_op> ops;
    std::vector<pending_upcall> signals;
    {
        std::lock_guard lock(self->mutex);
        reap_closed(*self);
        rearm_abandoned(*self);
        take_deliveries(*self, invalid_socket, ops, signals);
    }
    deliver(*self, ops, signals);
    return static_cast<int>(ops.size() + signals.size());
}

// Busy-poll support: the caller's thread polls the socket's own completion queue and delivers
// what it finds, so a blocked call needs no hand-off from the progress thread.
int verbs_progress_socket(provider::instance* p, socket_handle h, uint32_t flags) {
    verbs_instance* self = self_of(p);
    if (self == nullptr) return -EINVAL;
    if ((flags & ~(poll_start | poll_stop | poll_stay_unarmed | poll_arm)) != 0 ||
        ((flags & poll_arm) && flags != poll_arm))
        return -EINVAL;
    if (flags == poll_arm) {
        std::lock_guard lock(self->mutex);
        vsocket* s = find(*self, h);
        if (s == nullptr) return -ENOTSOCK;
        if (s->busy_pollers == 0) rearm_completions(*self, *s);
        if (!self->done.empty() || !self->signals.empty()) self->engine->wake(); // progress delivers
        return 0;
    }
    std::vector<finished_op> ops;
    std::vector<pending_upcall> signals;
    {
        std::lock_guard lock(self->mutex);
        vsocket* s = find(*self, h);
        if (s == nullptr) return -ENOTSOCK;
        if (flags & poll_start) ++s->busy_pollers;
        if (s->cq) drain_completions(*self, *s);
        if ((flags & poll_stop) && s->busy_pollers > 0 && --s->busy_pollers == 0) {
            if ((flags & poll_stay_unarmed) && !s->cq_armed) {
                s->left_unarmed = true;
                s->unarmed_since = std::chrono::steady_clock::now();
            } else {
                rearm_completions(*self, *s);
            }
        }
        take_deliveries(*self, h, ops, signals);
    }
    deliver(*self, ops, signals);
    return static_cast<int>(ops.size() + signals.size());
}

int verbs_event_fd(provider::instance* p) {
    verbs_instance* self = self_of(p);
    return self == nullptr ? -EINVAL : self->engine->fd();
}

int verbs_wake(provider::instance* p) {
    verbs_instance* self = self_of(p);
    return self == nullptr ? -EINVAL : self->engine->wake();
}

int verbs_query_memory(provider::instance* p, memory_stats* out) {
    verbs_instance* self = self_of(p);
    if (self == nullptr || out == nullptr) return -EINVAL;
    std::lock_guard lock(self->mutex);
    *out = {};
    out->per_connection_bytes = uint64_t(self->settings.slot_size) * (self->settings.send_slots + self->settings.recv_slots);
    for (auto& [s, owned] : self->sockets)
        if (s->mr) {
            out->registered_bytes += s->mr->length;
            ++out->connections;
        }
    out->sockets = self->table.size();
    return 0;
}

} // namespace

// Every entry is set, so the table is constant-initialised (nothing runs when the library is
// loaded); users apply provider::with_defaults like for any provider's table.
constinit const provider::ops verbs_ops = {
    .name = "verbs",
    .create = verbs_create,
    .destroy = verbs_destroy,
    .socket = verbs_socket,
    .bind = verbs_bind,
    .listen = verbs_listen,
    .accept = verbs_accept,
    .connect = verbs_connect,
    .send = verbs_send,
    .recv = verbs_recv,
    .getsockname = verbs_getsockname,
    .getpeername = verbs_getpeername,
    .getsockopt = verbs_getsockopt,
    .setsockopt = verbs_setsockopt,
    .close = verbs_close,
    .progress = verbs_progress,
    .progress_socket = verbs_progress_socket,
    .event_fd = verbs_event_fd,
    .wake = verbs_wake,
    .query_memory = verbs_query_memory,
};

} // namespace sansock::verbs

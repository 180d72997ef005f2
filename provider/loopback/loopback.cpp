// SPDX-License-Identifier: MIT
// The loopback provider: byte streams between instances of one process, with hard close.
#include "provider/loopback/loopback.hpp"

#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

#include "lib/handle_table.hpp"

namespace sansock::loopback {

namespace {

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
    sockaddr_in local{};
    sockaddr_in remote{};
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

    // Listener: connections that arrived and wait for an accept.
    int backlog = 0;
    std::deque<lsock*> arrived;
    lsock* listener = nullptr; // for an arrived socket, its listener

    // delay_completions
    bool holding = false;
    uint32_t hold_countdown = 0;
    op_queue held;
};

struct pending_event {
    socket_handle socket;
    connection_event event;
    int status;
};

} // namespace

// One mutex for the whole fabric: connected instances touch each other's state.
struct fabric {
    std::mutex mutex;
    // Every bound socket by port. A port holds sockets on distinct addresses, or one socket on
    // INADDR_ANY (which conflicts with every address), as on Linux without SO_REUSEADDR.
    std::multimap<uint16_t, lsock*> ports;
    uint16_t next_port = 49152;
    std::vector<loop_instance*> members;
};

namespace {

struct loop_instance {
    fabric* net = nullptr;
    bool owns_fabric = false;
    provider::config settings;
    provider::upcalls calls;
    handle_table<lsock> table;
    op_queue done;                      // completions waiting for progress
    std::deque<pending_event> events;   // up-calls waiting for progress
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

    explicit loop_instance(const provider::config& c) : settings(c), table(c.max_sockets) {}
};

loop_instance* as_loop(provider::instance* self) { return reinterpret_cast<loop_instance*>(self); }
provider::instance* as_instance(loop_instance* self) { return reinterpret_cast<provider::instance*>(self); }

void signal(loop_instance* inst) {
    const uint64_t one = 1;
    // An eventfd write only fails when the counter would overflow, and then it is readable.
    [[maybe_unused]] ssize_t n = ::write(inst->event_fd, &one, sizeof one);
}

// A user-visible socket of `inst` (arrived-but-unaccepted ones are not), or nullptr.
lsock* find(loop_instance* inst, socket_handle s) {
    lsock* sock = inst->table.find(s);
    return sock != nullptr && sock->accepted ? sock : nullptr;
}

size_t window_bytes(const provider::config& c) { return size_t(c.recv_slots) * c.slot_size; }

// Queues op's completion for progress (or holds it for delay_completions).
void complete(lsock* s, operation* op, int64_t result) {
    op->result = result;
    op->provider_word = s->handle;
    if (s->holding) {
        s->held.push(op);
        return;
    }
    s->owner->done.push(op);
    signal(s->owner);
}

// With no memory for the up-call it is dropped: the socket's pending operations have failed
// with the status already, and its later ones fail too (closes and resets never fail).
void post_event(lsock* s, connection_event event, int status) noexcept {
    try {
        s->owner->events.push_back({s->handle, event, status});
    } catch (const std::bad_alloc&) {
        return;
    }
    signal(s->owner);
}

void release_held(lsock* s) {
    s->holding = false;
    s->hold_countdown = 0;
    auto& list = s->owner->holding;
    list.erase(std::remove(list.begin(), list.end(), s), list.end());
    if (s->held.empty()) return;
    s->owner->done.splice(s->held);
    signal(s->owner);
}

void ring_write(lsock* s, const uint8_t* data, size_t n) {
    size_t tail = (s->ring_head + s->ring_count) % s->ring_capacity;
    const size_t first = std::min(n, s->ring_capacity - tail);
    std::memcpy(s->ring.get() + tail, data, first);
    std::memcpy(s->ring.get(), data + first, n - first);
    s->ring_count += n;
}

void ring_read(lsock* s, uint8_t* data, size_t n) {
    const size_t first = std::min(n, s->ring_capacity - s->ring_head);
    std::memcpy(data, s->ring.get() + s->ring_head, first);
    std::memcpy(data + first, s->ring.get(), n - first);
    s->ring_head = (s->ring_head + n) % s->ring_capacity;
    s->ring_count -= n;
}

// Moves bytes from `from`'s pending sends into its peer's window and from there into the
// peer's pending receives, until neither can advance.
void move_bytes(lsock* from) {
    lsock* to = from->peer;
    if (to == nullptr || from->frozen || to->frozen) return;
    for (;;) {
        bool moved = false;
        while (!from->sends.empty() && to->ring_count < to->ring_capacity) {
            operation* op = from->sends.head;
            const size_t done = op->provider_word;
            const size_t n = std::min(op->length - done, to->ring_capacity - to->ring_count);
            ring_write(to, static_cast<const uint8_t*>(op->buffer) + done, n);
            op->provider_word += n;
            moved = true;
            if (op->provider_word == op->length) {
                from->sends.pop();
                complete(from, op, int64_t(op->length));
            }
        }
        while (!to->recvs.empty() && to->ring_count > 0) {
            operation* op = to->recvs.head;
            const size_t done = op->provider_word;
            const size_t n = std::min(op->length - done, to->ring_count);
            ring_read(to, static_cast<uint8_t*>(op->buffer) + done, n);
            op->provider_word += n;
            moved = true;
            if ((op->flags & provider::op_wait_all) == 0 || op->provider_word == op->length) {
                to->recvs.pop();
                complete(to, op, int64_t(op->provider_word));
            }
        }
        if (!moved) return;
    }
}

void complete_all(lsock* s, op_queue& q, int64_t result) {
    while (operation* op = q.pop()) complete(s, op, result);
}

void drop_window(lsock* s) {
    s->ring.reset();
    s->ring_capacity = s->ring_head = s->ring_count = 0;
}

// The connection is gone: pending I/O fails with `status`, later I/O with -ECONNRESET.
void reset_socket(lsock* s, connection_event event, int status) {
    s->state = sock_state::reset;
    s->failure = status;
    s->peer = nullptr;
    drop_window(s); // unread data is discarded, like a TCP RST
    complete_all(s, s->sends, status);
    complete_all(s, s->recvs, status);
    if (s->accepted) post_event(s, event, status);
}

void reset_peer(lsock* s) {
    if (s->peer == nullptr) return;
    lsock* peer = s->peer;
    s->peer = nullptr;
    peer->peer = nullptr;
    reset_socket(peer, connection_event::peer_reset, -ECONNRESET);
}

void release_port(lsock* s) {
    if (!s->owns_port) return;
    auto& ports = s->owner->net->ports;
    auto [first, last] = ports.equal_range(ntohs(s->local.sin_port));
    for (auto it = first; it != last; ++it)
        if (it->second == s) {
            ports.erase(it);
            break;
        }
    s->owns_port = false;
}

// Whether `address`:`port` may be bound: no socket holds the port on the same address, and
// INADDR_ANY on either side conflicts with every address.
bool address_free(const fabric& net, in_addr_t address, uint16_t port) {
    auto [first, last] = net.ports.equal_range(port);
    for (auto it = first; it != last; ++it) {
        const in_addr_t bound = it->second->local.sin_addr.s_addr;
        if (bound == address || bound == htonl(INADDR_ANY) || address == htonl(INADDR_ANY)) return false;
    }
    return true;
}

// Binds `s` to `address`:`port` (checked free).
void take_address(lsock* s, in_addr_t address, uint16_t port) {
    s->owns_port = true;
    s->bound = true;
    s->local = {};
    s->local.sin_family = AF_INET;
    s->local.sin_addr.s_addr = address;
    s->local.sin_port = htons(port);
    s->owner->net->ports.emplace(port, s);
}

// Frees a socket that is in the handle table (arrived or user-visible) after detaching it.
void free_socket(lsock* s) {
    s->owner->table.remove(s->handle);
    delete s;
}

// Cancels the arrivals a listener never accepted: their clients see a reset.
void reset_arrivals(lsock* listener) {
    while (!listener->arrived.empty()) {
        lsock* a = listener->arrived.front();
        listener->arrived.pop_front();
        reset_peer(a);
        free_socket(a);
    }
}

// Blocks until progress on another thread is no longer delivering for `s`.
void wait_not_delivering(loop_instance* inst, socket_handle s, std::unique_lock<std::mutex>& lock) {
    const auto me = std::this_thread::get_id();
    inst->delivered.wait(lock, [&] { return inst->delivering != s || inst->progress_thread == me; });
}

// The hard close under the fabric lock: everything for `s` goes to `out` (pending ops with
// -ECANCELED, queued completions unchanged), the peer is reset, the handle released.
void close_locked(lsock* s, op_queue& out, std::unique_lock<std::mutex>& lock) {
    loop_instance* inst = s->owner;
    const socket_handle h = s->handle;
    for (op_queue* q : {&s->sends, &s->recvs, &s->accepts}) {
        while (operation* op = q->pop()) {
            op->result = -ECANCELED;
            out.push(op);
        }
    }
    inst->done.extract(h, out);
    out.splice(s->held);
    if (s->holding) release_held(s);
    inst->events.erase(std::remove_if(inst->events.begin(), inst->events.end(),
                                      [h](const pending_event& e) { return e.socket == h; }),
                       inst->events.end());
    reset_peer(s);
    reset_arrivals(s);
    release_port(s);
    free_socket(s);
    wait_not_delivering(inst, h, lock);
}

// Runs completion routines with no lock held. Returns how many ran.
int run_completions(op_queue& q) {
    int n = 0;
    while (operation* op = q.pop()) {
        op->complete(*op); // the op may be freed by its routine: nothing after this
        ++n;
    }
    return n;
}

// Parses an AF_INET address: 0, -EINVAL (null, short) or -EAFNOSUPPORT.
int parse_address(const sockaddr* address, socklen_t length, sockaddr_in* out) {
    if (address == nullptr || length < socklen_t(sizeof(sa_family_t))) return -EINVAL;
    if (address->sa_family != AF_INET) return -EAFNOSUPPORT;
    if (length < socklen_t(sizeof(sockaddr_in))) return -EINVAL;
    std::memcpy(out, address, sizeof *out);
    return 0;
}

// Gives `s` an ephemeral port no socket of the fabric holds on any address;
// -EADDRNOTAVAIL when none is left.
int bind_ephemeral(lsock* s, in_addr_t address) {
    fabric* net = s->owner->net;
    for (uint32_t tries = 0; tries < 65536 - 1024; ++tries) {
        const uint16_t port = net->next_port;
        net->next_port = port == 65535 ? 1024 : uint16_t(port + 1);
        if (net->ports.count(port) != 0) continue;
        take_address(s, address, port);
        return 0;
    }
    return -EADDRNOTAVAIL;
}

int check_op(const operation* op, operation_kind kind) {
    if (op == nullptr || op->complete == nullptr || op->kind != kind) return -EINVAL;
    if ((kind == operation_kind::send || kind == operation_kind::recv) &&
        (op->buffer == nullptr || op->length == 0))
        return -EINVAL;
    return 0;
}

bool allocate_window(lsock* s) {
    s->ring_capacity = window_bytes(s->owner->settings);
    s->ring.reset(new (std::nothrow) uint8_t[s->ring_capacity]);
    if (!s->ring) s->ring_capacity = 0;
    return s->ring != nullptr;
}

// Hands an arrived connection to an accept operation.
void give_to_accept(lsock* listener, lsock* arrival, operation* op) {
    arrival->accepted = true;
    arrival->listener = nullptr;
    op->accepted = arrival->handle;
    complete(listener, op, 0);
}

// ---- the ops table ----

int lb_create(const provider::config& settings, const provider::upcalls& calls, provider::instance** out) {
    if (out == nullptr) return -EINVAL;
    *out = nullptr;
    if (int rc = provider::check_config(settings)) return rc; // the same ranges as verbs
    auto inst = std::unique_ptr<loop_instance>(new (std::nothrow) loop_instance(settings));
    if (!inst) return -ENOMEM;
    inst->calls = calls;
    inst->event_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (inst->event_fd < 0) return -errno;
    fabric* net = static_cast<fabric*>(settings.provider_specific);
    if (net == nullptr) {
        net = create_fabric();
        if (net == nullptr) {
            ::close(inst->event_fd);
            return -ENOMEM;
        }
        inst->owns_fabric = true;
    }
    inst->net = net;
    {
        std::lock_guard lock(net->mutex);
        net->members.push_back(inst.get());
    }
    *out = as_instance(inst.release());
    return 0;
}

void lb_destroy(provider::instance* self) {
    loop_instance* inst = as_loop(self);
    if (inst == nullptr) return;
    fabric* net = inst->net;
    op_queue out;
    {
        std::unique_lock lock(net->mutex);
        // One socket at a time, found afresh (close_locked changes the table): nothing is
        // collected, so destroy needs no memory.
        for (;;) {
            lsock* next = nullptr;
            inst->table.for_each([&](uint64_t, lsock* s) {
                if (next == nullptr && s->accepted) next = s;
            });
            if (next == nullptr) break;
            close_locked(next, out, lock);
        }
        // Arrivals whose listener is gone cannot exist; anything left is freed here.
        for (;;) {
            lsock* next = nullptr;
            inst->table.for_each([&](uint64_t, lsock* s) {
                if (next == nullptr) next = s;
            });
            if (next == nullptr) break;
            reset_peer(next);
            release_port(next);
            free_socket(next);
        }
        out.splice(inst->done);
        inst->events.clear();
        net->members.erase(std::remove(net->members.begin(), net->members.end(), inst), net->members.end());
    }
    run_completions(out);
    ::close(inst->event_fd);
    const bool owns = inst->owns_fabric;
    delete inst;
    if (owns) destroy_fabric(net);
}

int lb_socket(provider::instance* self, socket_handle* out) {
    loop_instance* inst = as_loop(self);
    if (inst == nullptr || out == nullptr) return -EINVAL;
    *out = provider::invalid_socket;
    auto s = std::unique_ptr<lsock>(new (std::nothrow) lsock);
    if (!s) return -ENOMEM;
    s->owner = inst;
    std::lock_guard lock(inst->net->mutex);
    if (inst->down) return -ENETDOWN;
    const socket_handle h = inst->table.insert(s.get());
    if (h == provider::invalid_socket) return -EMFILE;
    s->handle = h;
    s.release();
    *out = h;
    return 0;
}

int lb_bind(provider::instance* self, socket_handle h, const sockaddr* address, socklen_t length) {
    loop_instance* inst = as_loop(self);
    if (inst == nullptr) return -EINVAL;
    std::lock_guard lock(inst->net->mutex);
    lsock* s = find(inst, h);
    if (s == nullptr) return -ENOTSOCK;
    if (inst->down) return -ENETDOWN;
    sockaddr_in a{};
    if (int rc = parse_address(address, length, &a); rc < 0) return rc;
    if (s->bound || s->state != sock_state::fresh) return -EINVAL;
    const uint16_t port = ntohs(a.sin_port);
    if (port == 0) return bind_ephemeral(s, a.sin_addr.s_addr);
    if (!address_free(*inst->net, a.sin_addr.s_addr, port)) return -EADDRINUSE;
    take_address(s, a.sin_addr.s_addr, port);
    return 0;
}

int lb_listen(provider::instance* self, socket_handle h, int backlog) {
    loop_instance* inst = as_loop(self);
    if (inst == nullptr) return -EINVAL;
    std::lock_guard lock(inst->net->mutex);
    lsock* s = find(inst, h);
    if (s == nullptr) return -ENOTSOCK;
    if (inst->down) return -ENETDOWN;
    if (s->state != sock_state::fresh) return -EINVAL;
    if (!s->bound)
        if (int rc = bind_ephemeral(s, htonl(INADDR_ANY)); rc < 0) return rc;
    s->state = sock_state::listening;
    s->backlog = std::clamp(backlog, 1, 4096);
    return 0;
}

int lb_accept(provider::instance* self, socket_handle h, operation* op) {
    loop_instance* inst = as_loop(self);
    if (inst == nullptr) return -EINVAL;
    std::lock_guard lock(inst->net->mutex);
    lsock* s = find(inst, h);
    if (s == nullptr) return -ENOTSOCK;
    if (inst->down) return -ENETDOWN;
    if (int rc = check_op(op, operation_kind::accept); rc < 0) return rc;
    if (s->state != sock_state::listening) return -EINVAL;
    op->accepted = provider::invalid_socket;
    if (!s->arrived.empty() && s->accepts.empty()) {
        lsock* a = s->arrived.front();
        s->arrived.pop_front();
        give_to_accept(s, a, op);
    } else {
        s->accepts.push(op);
    }
    return 0;
}

int lb_connect(provider::instance* self, socket_handle h, operation* op) {
    loop_instance* inst = as_loop(self);
    if (inst == nullptr) return -EINVAL;
    std::lock_guard lock(inst->net->mutex);
    lsock* s = find(inst, h);
    if (s == nullptr) return -ENOTSOCK;
    if (inst->down) return -ENETDOWN;
    if (int rc = check_op(op, operation_kind::connect); rc < 0) return rc;
    sockaddr_in target{};
    if (int rc = parse_address(reinterpret_cast<const sockaddr*>(&op->address), op->address_length, &target);
        rc < 0)
        return rc;
    if (s->state == sock_state::connected || s->state == sock_state::reset) return -EISCONN;
    if (s->state != sock_state::fresh) return -EINVAL;
    if (target.sin_port == 0) return -EINVAL;
    if (!s->bound) {
        const in_addr_t local = target.sin_addr.s_addr == htonl(INADDR_ANY) ? htonl(INADDR_LOOPBACK)
                                                                              : target.sin_addr.s_addr;
        if (int rc = bind_ephemeral(s, local); rc < 0) return rc;
    }
    // The socket bound to the target's port on its address or on INADDR_ANY (at most one
    // exists); a listener with room in its backlog takes the connection.
    lsock* listener = nullptr;
    auto [first, last] = inst->net->ports.equal_range(ntohs(target.sin_port));
    for (auto it = first; it != last; ++it) {
        lsock* l = it->second;
        const in_addr_t bound = l->local.sin_addr.s_addr;
        if (bound != htonl(INADDR_ANY) && bound != target.sin_addr.s_addr) continue;
        if (l->state == sock_state::listening && !l->owner->down && l->arrived.size() < size_t(l->backlog))
            listener = l;
        break;
    }
    if (listener == nullptr) {
        s->failure = -ECONNREFUSED;
        complete(s, op, -ECONNREFUSED);
        return 0;
    }
    auto arrival = std::unique_ptr<lsock>(new (std::nothrow) lsock);
    if (!arrival) return -ENOMEM;
    arrival->owner = listener->owner;
    arrival->accepted = false;
    if (!allocate_window(arrival.get()) || !allocate_window(s)) {
        drop_window(s);
        return -ENOMEM;
    }
    const socket_handle ah = listener->owner->table.insert(arrival.get());
    if (ah == provider::invalid_socket) { // the server is out of sockets: it refuses
        drop_window(s);
        s->failure = -ECONNREFUSED;
        complete(s, op, -ECONNREFUSED);
        return 0;
    }
    lsock* a = arrival.release();
    a->handle = ah;
    a->state = sock_state::connected;
    a->bound = true;
    a->local = listener->local;
    a->local.sin_addr = target.sin_addr;
    a->remote = s->local;
    a->peer = s;
    s->state = sock_state::connected;
    s->failure = 0;
    s->remote = target;
    s->peer = a;
    if (!listener->accepts.empty()) {
        give_to_accept(listener, a, listener->accepts.pop());
    } else {
        a->listener = listener;
        listener->arrived.push_back(a);
    }
    complete(s, op, 0);
    return 0;
}

// Common checks of send and recv: the socket, or a negated errno.
int data_socket(loop_instance* inst, socket_handle h, operation* op, operation_kind kind, lsock** out) {
    lsock* s = find(inst, h);
    if (s == nullptr) return -ENOTSOCK;
    if (inst->down) return -ENETDOWN;
    if (int rc = check_op(op, kind); rc < 0) return rc;
    if (s->state == sock_state::reset) return -ECONNRESET;
    if (s->state != sock_state::connected) return -ENOTCONN;
    *out = s;
    return 0;
}

int lb_send(provider::instance* self, socket_handle h, operation* op) {
    loop_instance* inst = as_loop(self);
    if (inst == nullptr) return -EINVAL;
    std::lock_guard lock(inst->net->mutex);
    lsock* s = nullptr;
    if (int rc = data_socket(inst, h, op, operation_kind::send, &s); rc < 0) return rc;
    op->provider_word = 0;
    s->sends.push(op);
    move_bytes(s);
    return 0;
}

int lb_recv(provider::instance* self, socket_handle h, operation* op) {
    loop_instance* inst = as_loop(self);
    if (inst == nullptr) return -EINVAL;
    std::lock_guard lock(inst->net->mutex);
    lsock* s = nullptr;
    if (int rc = data_socket(inst, h, op, operation_kind::recv, &s); rc < 0) return rc;
    op->provider_word = 0;
    s->recvs.push(op);
    if (s->peer != nullptr) move_bytes(s->peer);
    return 0;
}

int copy_name(const sockaddr_in& a, sockaddr* address, socklen_t* length) {
    if (address == nullptr || length == nullptr) return -EINVAL;
    // Like getsockname(2): truncate to the caller's room, report the full length.
    std::memcpy(address, &a, std::min<size_t>(*length, sizeof a));
    *length = sizeof a;
    return 0;
}

int lb_getsockname(provider::instance* self, socket_handle h, sockaddr* address, socklen_t* length) {
    loop_instance* inst = as_loop(self);
    if (inst == nullptr) return -EINVAL;
    std::lock_guard lock(inst->net->mutex);
    lsock* s = find(inst, h);
    if (s == nullptr) return -ENOTSOCK;
    sockaddr_in a = s->local;
    a.sin_family = AF_INET;
    return copy_name(a, address, length);
}

int lb_getpeername(provider::instance* self, socket_handle h, sockaddr* address, socklen_t* length) {
    loop_instance* inst = as_loop(self);
    if (inst == nullptr) return -EINVAL;
    std::lock_guard lock(inst->net->mutex);
    lsock* s = find(inst, h);
    if (s == nullptr) return -ENOTSOCK;
    if (s->state != sock_state::connected) return -ENOTCONN;
    return copy_name(s->remote, address, length);
}

int lb_getsockopt(provider::instance* self, socket_handle h, int level, int name, void* value, socklen_t* length) {
    loop_instance* inst = as_loop(self);
    if (inst == nullptr) return -EINVAL;
    std::lock_guard lock(inst->net->mutex);
    lsock* s = find(inst, h);
    if (s == nullptr) return -ENOTSOCK;
    if (value == nullptr || length == nullptr || *length < socklen_t(sizeof(int))) return -EINVAL;
    if (level != SOL_SOCKET) return -ENOPROTOOPT;
    int v = 0;
    switch (name) {
    case SO_TYPE: v = SOCK_STREAM; break;
    case SO_ERROR: v = -s->failure; break; // not cleared, as verbs (the switch keeps its own)
    case SO_RCVBUF: v = int(std::min<size_t>(window_bytes(inst->settings), INT32_MAX)); break;
    case SO_SNDBUF: v = int(std::min<size_t>(size_t(inst->settings.send_slots) * inst->settings.slot_size, INT32_MAX)); break;
    case SO_ACCEPTCONN: v = s->state == sock_state::listening; break;
    default: return -ENOPROTOOPT;
    }
    std::memcpy(value, &v, sizeof v);
    *length = sizeof v;
    return 0;
}

int lb_setsockopt(provider::instance* self, socket_handle h, int, int, const void* value, socklen_t) {
    loop_instance* inst = as_loop(self);
    if (inst == nullptr) return -EINVAL;
    std::lock_guard lock(inst->net->mutex);
    if (find(inst, h) == nullptr) return -ENOTSOCK;
    if (value == nullptr) return -EINVAL;
    return -ENOPROTOOPT; // nothing is settable on a loopback socket
}

int lb_close(provider::instance* self, socket_handle h) {
    loop_instance* inst = as_loop(self);
    if (inst == nullptr) return -EINVAL;
    op_queue out;
    {
        std::unique_lock lock(inst->net->mutex);
        lsock* s = find(inst, h);
        if (s == nullptr) return -ENOTSOCK;
        close_locked(s, out, lock);
    }
    run_completions(out);
    return 0;
}

// Delivers one completion or up-call, if any; returns whether it did. Called with `lock`
// held; runs the routine with it released.
bool deliver_one(loop_instance* inst, std::unique_lock<std::mutex>& lock) {
    if (operation* op = inst->done.pop()) {
        inst->delivering = op->provider_word;
        lock.unlock();
        op->complete(*op);
    } else if (!inst->events.empty()) {
        const pending_event e = inst->events.front();
        inst->events.pop_front();
        inst->delivering = e.socket;
        lock.unlock();
        if (inst->calls.on_connection_event != nullptr)
            inst->calls.on_connection_event(inst->calls.context, e.socket, e.event, e.status);
    } else {
        return false;
    }
    lock.lock();
    inst->delivering = 0;
    inst->delivered.notify_all();
    return true;
}

void drain_event_fd(loop_instance* inst) {
    uint64_t count;
    [[maybe_unused]] ssize_t n = ::read(inst->event_fd, &count, sizeof count);
}

int lb_progress(provider::instance* self, int timeout_ms) {
    loop_instance* inst = as_loop(self);
    if (inst == nullptr) return -EINVAL;
    using clock = std::chrono::steady_clock;
    const auto deadline = clock::now() + std::chrono::milliseconds(std::max(timeout_ms, 0));
    std::unique_lock lock(inst->net->mutex);
    if (inst->progress_busy && inst->progress_thread == std::this_thread::get_id()) return -EDEADLK;
    if (!inst->delivered.wait_until(lock, deadline, [inst] { return !inst->progress_busy; })) return 0;
    inst->progress_busy = true;
    inst->progress_thread = std::this_thread::get_id();
    // delay_completions counts progress calls.
    for (lsock* s : std::vector<lsock*>(inst->holding))
        if (s->hold_countdown > 0 && --s->hold_countdown == 0) release_held(s);
    int delivered = 0;
    for (;;) {
        lock.unlock();
        drain_event_fd(inst);
        lock.lock();
        // Only what is queued now, so routines that submit more cannot keep us here forever.
        size_t budget = inst->events.size();
        for (operation* op = inst->done.head; op != nullptr; op = op->provider_next) ++budget;
        while (budget-- > 0 && deliver_one(inst, lock)) ++delivered;
        if (delivered > 0 || inst->wake_requested.exchange(false)) break;
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count();
        if (left <= 0) break;
        lock.unlock();
        pollfd p{inst->event_fd, POLLIN, 0};
        ::poll(&p, 1, int(std::min<long long>(left, 1000 * 1000)));
        lock.lock();
    }
    inst->progress_busy = false;
    inst->progress_thread = std::thread::id();
    inst->delivered.notify_all();
    return delivered;
}

int lb_event_fd(provider::instance* self) {
    loop_instance* inst = as_loop(self);
    return inst == nullptr ? -EINVAL : inst->event_fd;
}

int lb_wake(provider::instance* self) {
    loop_instance* inst = as_loop(self);
    if (inst == nullptr) return -EINVAL;
    inst->wake_requested.store(true);
    signal(inst);
    return 0;
}

int lb_query_memory(provider::instance* self, provider::memory_stats* out) {
    loop_instance* inst = as_loop(self);
    if (inst == nullptr || out == nullptr) return -EINVAL;
    std::lock_guard lock(inst->net->mutex);
    *out = {};
    out->per_connection_bytes =
        (uint64_t(inst->settings.send_slots) + inst->settings.recv_slots) * inst->settings.slot_size;
    inst->table.for_each([&](uint64_t, lsock* s) {
        if (s->accepted) ++out->sockets;
        if (s->ring) ++out->connections;
    });
    out->registered_bytes = out->connections * out->per_connection_bytes;
    return 0;
}

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

} // namespace

fabric* create_fabric() { return new (std::nothrow) fabric; }

int destroy_fabric(fabric* f) {
    if (f == nullptr) return 0;
    {
        std::lock_guard lock(f->mutex);
        if (!f->members.empty()) return -EBUSY;
    }
    delete f;
    return 0;
}

int freeze(provider::instance* self, socket_handle h, bool frozen) {
    return with_socket(self, h, [frozen](lsock* s) {
        s->frozen = frozen;
        if (!frozen && s->peer != nullptr) {
            move_bytes(s);
            move_bytes(s->peer);
        }
        return 0;
    });
}

int drop_connection(provider::instance* self, socket_handle h) {
    return with_socket(self, h, [](lsock* s) {
        if (s->peer == nullptr) return -ENOTCONN;
        lsock* peer = s->peer;
        s->peer = nullptr;
        peer->peer = nullptr;
        reset_socket(peer, connection_event::peer_reset, -ECONNRESET);
        reset_socket(s, connection_event::peer_reset, -ECONNRESET);
        return 0;
    });
}

int delay_completions(provider::instance* self, socket_handle h, uint32_t progress_calls) {
    return with_socket(self, h, [progress_calls](lsock* s) {
        if (!s->holding) s->owner->holding.push_back(s);
        s->holding = true;
        s->hold_countdown = progress_calls;
        return 0;
    });
}

int release_completions(provider::instance* self, socket_handle h) {
    return with_socket(self, h, [](lsock* s) {
        if (s->holding) release_held(s);
        return 0;
    });
}

int set_device_down(provider::instance* self) {
    loop_instance* inst = as_loop(self);
    if (inst == nullptr) return -EINVAL;
    std::lock_guard lock(inst->net->mutex);
    if (inst->down) return 0;
    inst->down = true;
    std::vector<lsock*> all;
    inst->table.for_each([&](uint64_t, lsock* s) { all.push_back(s); });
    for (lsock* s : all) {
        reset_peer(s);
        release_port(s);
        drop_window(s);
        s->state = sock_state::down;
        s->failure = -ENETDOWN;
        complete_all(s, s->sends, -ENETDOWN);
        complete_all(s, s->recvs, -ENETDOWN);
        complete_all(s, s->accepts, -ENETDOWN);
        if (s->accepted) post_event(s, connection_event::device_down, -ENETDOWN);
    }
    return 0;
}

} // namespace sansock::loopback

// Constant-initialised, so other static initialisers may use it.
const sansock::provider::ops loopback_ops = {
    .name = "loopback",
    .create = &sansock::loopback::lb_create,
    .destroy = &sansock::loopback::lb_destroy,
    .socket = &sansock::loopback::lb_socket,
    .bind = &sansock::loopback::lb_bind,
    .listen = &sansock::loopback::lb_listen,
    .accept = &sansock::loopback::lb_accept,
    .connect = &sansock::loopback::lb_connect,
    .send = &sansock::loopback::lb_send,
    .recv = &sansock::loopback::lb_recv,
    .getsockname = &sansock::loopback::lb_getsockname,
    .getpeername = &sansock::loopback::lb_getpeername,
    .getsockopt = &sansock::loopback::lb_getsockopt,
    .setsockopt = &sansock::loopback::lb_setsockopt,
    .close = &sansock::loopback::lb_close,
    .progress = &sansock::loopback::lb_progress,
    .event_fd = &sansock::loopback::lb_event_fd,
    .wake = &sansock::loopback::lb_wake,
    .query_memory = &sansock::loopback::lb_query_memory,
};

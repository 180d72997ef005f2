// SPDX-License-Identifier: MIT
// A raw loopback peer speaking session protocol version 3 message by message
// (switch/message_protocol.hpp): its own message-mode loopback instance on the world's fabric,
// one registered region of send and receive buffers, its own progress thread. It keeps the
// credit books as the switch does (credits: the switch's receives it may use; owed: its own
// receives posted and not granted; peer_may_send: its receives the switch may use), so a
// well-behaved exchange is short to write and a malformed one is one call. Also: a context
// whose log the test reads (the reason a connection was reset).
#pragma once

#include <algorithm>
#include <cstdlib>
#include <string>
#include <tuple>

#include "switch/message_protocol.hpp"
#include "tests/switch/switch_test_support.hpp"

namespace sansock::switchtest {

struct message_peer_options {
    // Larger than the switch's buffers (16384 by default), so an oversized message can be sent.
    uint32_t buffer_size = 65536;
    uint32_t recv_buffers = 8;
    uint32_t send_buffers = 16; // more than the switch's receives: a burst can overrun them
};

struct peer_message {
    int64_t result = 0;         // the receive's result: message bytes, a negated errno, 1: time-out
    msg::header h{};            // decoded when the message holds a header
    std::vector<uint8_t> bytes; // the whole message
    std::vector<uint8_t> payload() const {
        return bytes.size() > msg::header_size ? std::vector<uint8_t>(bytes.begin() + msg::header_size, bytes.end())
                                               : std::vector<uint8_t>{};
    }
    bool is(msg::message_type type) const { return result >= int64_t(msg::header_size) && h.type == type; }
};

inline msg::header make_header(msg::message_type type, uint32_t length = 0, uint32_t value = 0, uint16_t credits = 0) {
    msg::header h;
    h.type = type;
    h.length = length;
    h.value = value;
    h.credits = credits;
    return h;
}

class raw_message_peer {
public:
    explicit raw_message_peer(loopback::fabric* net, message_peer_options o = {})
        : options(o), ops(provider::with_defaults(loopback_ops)), total_(o.send_buffers + o.recv_buffers) {
        provider::config c;
        c.messages = true;
        c.slot_size = o.buffer_size;
        c.send_slots = o.send_buffers;
        c.recv_slots = o.recv_buffers;
        c.provider_specific = net;
        provider::upcalls calls{this, &on_event};
        REQUIRE(ops.create(c, calls, &inst) == 0);
        memory_bytes_ = size_t(total_) * o.buffer_size;
        memory_ = static_cast<uint8_t*>(std::aligned_alloc(4096, (memory_bytes_ + 4095) / 4096 * 4096));
        REQUIRE(memory_ != nullptr);
        REQUIRE(ops.register_memory(inst, memory_, memory_bytes_, provider::memory_local, &region_) == 0);
        slots_ = std::make_unique<slot_op[]>(total_);
        busy_.assign(o.send_buffers, false);
        for (uint32_t i = 0; i < total_; ++i) {
            slot_op& op = slots_[i];
            op.owner = this;
            op.slot = i;
            op.memory = region_;
            op.memory_offset = uint64_t(i) * o.buffer_size;
            op.complete = &on_complete;
        }
        progress_ = std::thread([this] {
            while (!stop_.load()) ops.progress(inst, 50);
        });
    }
    ~raw_message_peer() {
        stop_.store(true);
        ops.wake(inst);
        progress_.join();
        ops.destroy(inst); // completes what is pending (-ECANCELED) and drops the region
        std::free(memory_);
    }
    raw_message_peer(const raw_message_peer&) = delete;
    raw_message_peer& operator=(const raw_message_peer&) = delete;

    // ---- connection ----

    // Posts every receive, then connects to kAddress:port (the accepting switch's HELLO must
    // find a receive). The connecting side keeps one receive ungranted for that HELLO.
    int64_t connect(uint16_t port) {
        REQUIRE(ops.socket(inst, &s) == 0);
        accepting = false;
        post_all_receives();
        owed -= 1;
        peer_may_send = 1;
        slot_op connecting;
        connecting.kind = provider::operation_kind::connect;
        connecting.complete = &on_complete;
        connecting.owner = this;
        connecting.slot = UINT32_MAX;
        const sockaddr_in to = ipv4(port);
        std::memcpy(&connecting.address, &to, sizeof to);
        connecting.address_length = sizeof to;
        REQUIRE(ops.connect(inst, s, &connecting) == 0);
        std::unique_lock lock(mutex_);
        if (!changed_.wait_for(lock, 10s, [this] { return control_done_ > 0; })) die("raw message peer connect");
        --control_done_;
        return control_result_;
    }
    uint16_t listen() {
        return listen_raw(ops, inst, &listener);
    }
    // Starts accepting on the listener; accepted() takes the connection and posts the receives
    // (before this side's HELLO, which goes first).
    void start_accept() {
        accept_op_ = slot_op{};
        accept_op_.kind = provider::operation_kind::accept;
        accept_op_.complete = &on_complete;
        accept_op_.owner = this;
        accept_op_.slot = UINT32_MAX;
        REQUIRE(ops.accept(inst, listener, &accept_op_) == 0);
    }
    void accepted() {
        {
            std::unique_lock lock(mutex_);
            if (!changed_.wait_for(lock, 10s, [this] { return control_done_ > 0; })) die("raw message peer accept");
            --control_done_;
            REQUIRE(control_result_ == 0);
        }
        s = accept_op_.accepted;
        accepting = true;
        post_all_receives();
        peer_may_send = 0;
    }

    // ---- sending ----

    // Sends `bytes` as one message from a free send buffer; 0 or the provider's refusal.
    int send_bytes(const std::vector<uint8_t>& bytes) {
        REQUIRE(!bytes.empty());
        REQUIRE(bytes.size() <= options.buffer_size);
        uint32_t slot = 0;
        {
            std::unique_lock lock(mutex_);
            const bool free = changed_.wait_for(lock, 5s, [this] {
                return std::find(busy_.begin(), busy_.end(), false) != busy_.end();
            });
            if (!free) return -ETIMEDOUT;
            slot = uint32_t(std::find(busy_.begin(), busy_.end(), false) - busy_.begin());
            busy_[slot] = true;
        }
        slot_op& op = slots_[slot];
        std::memcpy(buffer(slot), bytes.data(), bytes.size());
        op.kind = provider::operation_kind::send;
        op.length = bytes.size();
        const int rc = ops.send(inst, s, &op);
        if (rc != 0) {
            std::lock_guard lock(mutex_);
            busy_[slot] = false;
        }
        return rc;
    }
    // Sends header `h` as given (credits, length and all) and `payload`; the books follow
    // what the switch will count.
    int send(const msg::header& h, const std::vector<uint8_t>& payload = {}) {
        std::vector<uint8_t> bytes(msg::header_size + payload.size());
        msg::encode(h, bytes.data());
        std::copy(payload.begin(), payload.end(), bytes.begin() + msg::header_size);
        const bool exempt = h.type == msg::message_type::hello && accepting && !hello_sent;
        if (!exempt && credits > 0) --credits;
        owed -= std::min<uint32_t>(owed, h.credits);
        peer_may_send += h.credits;
        if (h.type == msg::message_type::hello) hello_sent = true;
        return send_bytes(bytes);
    }
    // A well-formed message of `type`: grants every receive owed.
    int send_message(msg::message_type type, const std::vector<uint8_t>& payload = {}, uint32_t value = 0) {
        return send(make_header(type, uint32_t(payload.size()), value, uint16_t(owed)), payload);
    }
    int send_hello() { return send_message(msg::message_type::hello, {}, options.buffer_size); }
    // What a well-behaved sender may send now (the switch's rules, message_data.cpp).
    bool may_send_data() const { return credits > msg::control_reserve; }
    bool may_send_control() const { return credits > 1 || (credits == 1 && owed > 0); }

    // Completes the HELLO exchange: the connecting side (which has read the switch's HELLO)
    // answers; the accepting side speaks first, then reads the switch's. Returns the switch's
    // HELLO when read here.
    peer_message handshake() {
        REQUIRE(send_hello() == 0);
        if (!accepting) return {};
        peer_message hello = next();
        REQUIRE(hello.is(msg::message_type::hello));
        return hello;
    }
    // A CREDIT of what is owed, when a well-behaved receiver would send one: half the
    // receives owed, or the switch down to its control reserve (or `force`: anything owed).
    int return_credits(bool force = false) {
        if (owed == 0 || !may_send_control()) return 0;
        if (!force && owed < std::max(1u, options.recv_buffers / 2) && peer_may_send > msg::control_reserve) return 0;
        return send_message(msg::message_type::credit);
    }

    // ---- receiving ----

    // The next message received (bounded wait; result 1 on time-out). Its receive is posted
    // again unless auto_repost is off (then repost_all does it).
    peer_message next(milliseconds timeout = 5s) {
        peer_message m;
        uint32_t slot = 0;
        {
            std::unique_lock lock(mutex_);
            if (!changed_.wait_for(lock, timeout, [this] { return !done_.empty(); })) {
                m.result = 1;
                return m;
            }
            std::tie(slot, m.result) = done_.front();
            done_.pop_front();
        }
        if (m.result <= 0) return m;
        m.bytes.assign(buffer(slot), buffer(slot) + m.result);
        if (m.bytes.size() >= msg::header_size) {
            m.h = msg::decode(m.bytes.data());
            if (peer_may_send > 0) --peer_may_send;
            credits += m.h.credits;
            if (m.h.type == msg::message_type::hello) {
                peer_buffers = m.h.credits;
                peer_buffer_size = m.h.value;
            }
        }
        if (auto_repost) post_error = post_receive(slot);
        else unposted_.push_back(slot);
        return m;
    }
    // Takes messages until none came for `quiet`.
    std::vector<peer_message> drain(milliseconds quiet = 150ms) {
        std::vector<peer_message> out;
        for (;;) {
            peer_message m = next(quiet);
            if (m.result == 1) return out;
            out.push_back(std::move(m));
            if (out.back().result <= 0) return out;
        }
    }
    // Posts the receives taken while auto_repost was off; 0 or the first refusal.
    int repost_all() {
        int rc = 0;
        for (uint32_t slot : unposted_)
            if (int r = post_receive(slot); r != 0 && rc == 0) rc = r;
        unposted_.clear();
        return rc;
    }
    // Waits (bounded) until the connection is reset: a receive fails, or one can no longer be
    // posted. Messages arriving meanwhile are taken. Returns that result (1: time-out).
    int64_t wait_for_reset(milliseconds timeout = 10s) {
        auto_repost = true;
        const auto deadline = steady_clock::now() + timeout;
        if (int rc = repost_all(); rc < 0) return rc;
        while (steady_clock::now() < deadline) {
            const peer_message m = next(std::chrono::duration_cast<milliseconds>(deadline - steady_clock::now()) + 1ms);
            if (m.result <= 0) return m.result == 0 ? -EPIPE : m.result;
            if (post_error < 0) return post_error;
        }
        return 1;
    }
    // Holds this side's messages in the provider (both ways) until unfrozen, which delivers
    // what waited at once.
    int freeze(bool frozen) { return loopback::freeze(inst, s, frozen); }
    int resets() const { return resets_.load(); }
    int close_socket() { return ops.close(inst, s); }

    const message_peer_options options;
    const provider::ops ops;
    provider::instance* inst = nullptr;
    provider::socket_handle s = 0;
    provider::socket_handle listener = 0;
    bool accepting = false;  // this side accepted: its HELLO goes first, without a credit
    bool hello_sent = false;
    bool auto_repost = true;
    int post_error = 0;      // the last repost's refusal
    // The books (test thread only).
    uint32_t credits = 0;       // the switch's receives this side may still use
    uint32_t owed = 0;          // this side's receives posted and not granted
    uint32_t peer_may_send = 0; // this side's receives the switch may still use
    uint32_t peer_buffers = 0, peer_buffer_size = 0; // the switch's HELLO

private:
    struct slot_op : provider::operation {
        raw_message_peer* owner = nullptr;
        uint32_t slot = 0; // UINT32_MAX: connect or accept
    };

    uint8_t* buffer(uint32_t slot) const { return memory_ + size_t(slot) * options.buffer_size; }
    void post_all_receives() {
        for (uint32_t slot = options.send_buffers; slot < total_; ++slot) REQUIRE(post_receive(slot) == 0);
    }
    int post_receive(uint32_t slot) {
        slot_op& op = slots_[slot];
        op.kind = provider::operation_kind::recv;
        op.length = options.buffer_size;
        const int rc = ops.recv(inst, s, &op);
        if (rc == 0) ++owed;
        return rc;
    }
    static void on_complete(provider::operation& o) noexcept {
        auto& op = static_cast<slot_op&>(o);
        raw_message_peer& self = *op.owner;
        {
            std::lock_guard lock(self.mutex_);
            if (op.slot == UINT32_MAX) {
                self.control_result_ = o.result;
                ++self.control_done_;
            } else if (o.kind == provider::operation_kind::send) {
                self.busy_[op.slot] = false;
            } else {
                self.done_.emplace_back(op.slot, o.result);
            }
        }
        self.changed_.notify_all();
    }
    static void on_event(void* context, provider::socket_handle, provider::connection_event, int) noexcept {
        static_cast<raw_message_peer*>(context)->resets_.fetch_add(1);
    }

    const uint32_t total_;
    uint8_t* memory_ = nullptr;
    size_t memory_bytes_ = 0;
    provider::memory_handle region_ = provider::invalid_memory;
    std::unique_ptr<slot_op[]> slots_;
    slot_op accept_op_;
    std::vector<uint32_t> unposted_;
    std::mutex mutex_;
    std::condition_variable changed_;
    std::vector<bool> busy_;                        // send buffers in flight
    std::deque<std::pair<uint32_t, int64_t>> done_; // completed receives, in order
    int control_done_ = 0;
    int64_t control_result_ = 0;
    std::atomic<int> resets_{0};
    std::atomic<bool> stop_{false};
    std::thread progress_;
};

// ---- a context whose log the test reads ----

class log_capture {
public:
    static void record(void* user, int, const char* message) {
        auto* self = static_cast<log_capture*>(user);
        std::lock_guard lock(self->mutex_);
        self->lines_.emplace_back(message);
    }
    bool contains(const std::string& part) {
        std::lock_guard lock(mutex_);
        return std::any_of(lines_.begin(), lines_.end(), [&](const std::string& l) { return l.find(part) != l.npos; });
    }
    std::string all() {
        std::lock_guard lock(mutex_);
        std::string out;
        for (const auto& l : lines_) out += l + "\n";
        return out;
    }

private:
    std::mutex mutex_;
    std::vector<std::string> lines_;
};

// A context on the world's fabric and clock (as world::host), logging at warn into `log`;
// destroyed with this object, which must go before the world.
class logged_host {
public:
    logged_host(world& w, log_capture& log, int version, uint32_t send_slots = 0) {
        sansock_context_attr attr;
        sansock_context_attr_init(&attr);
        attr.provider = SANSOCK_PROVIDER_LOOPBACK;
        attr.log_level = SANSOCK_LOG_WARN;
        attr.log = &log_capture::record;
        attr.log_user = &log;
        attr.send_slots = send_slots;
        context_hooks hooks;
        hooks.provider_specific = w.fabric();
        hooks.session_version = version;
        hooks.now = w.clock.function();
        REQUIRE(create_context(&attr, hooks, &ctx) == 0);
    }
    ~logged_host() {
        const int rc = bounded("sansock_context_destroy", [c = ctx] { return sansock_context_destroy(c); });
        CHECK(rc == 0);
    }
    logged_host(const logged_host&) = delete;
    logged_host& operator=(const logged_host&) = delete;

    sansock_context* ctx = nullptr;
};

inline struct sansock_context_stats stats_of(sansock_context* ctx) {
    struct sansock_context_stats st{};
    st.size = sizeof st;
    REQUIRE(sansock_context_stats(ctx, &st) == 0);
    return st;
}

} // namespace sansock::switchtest

// SPDX-License-Identifier: MIT
// A connection's side of session protocol version 3 (switch/message_protocol.hpp): its pool
// of registered control buffers (send buffers, then receive buffers, in one registration), the
// provider operations that carry them (made with the connection: sending, receiving and
// returning credits never allocate), and its credits. Only switch/*.cpp include this.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "provider/provider.hpp"
#include "switch/message_protocol.hpp"

namespace sansock::sw {

struct context;
struct stream_socket;

// A send or a receive of one control buffer. `slot` is its index: send buffers first.
struct message_op : provider::operation {
    stream_socket* owner = nullptr;
    uint32_t slot = 0;
    uint32_t data_bytes = 0; // a send: stream bytes it carries
};

// A receive buffer holding DATA the user has not read all of: bytes [begin, end) of it.
struct held_buffer {
    uint32_t slot = 0;
    uint32_t begin = 0;
    uint32_t end = 0;
};

// Control messages waiting for a send buffer and a credit (bits of message_session::pending).
enum pending_control : uint32_t {
    pending_hello = 1u << 0,
    pending_fin = 1u << 1,
    pending_fin_ack = 1u << 2,
    pending_probe = 1u << 3,
    pending_reply = 1u << 4,
};

// A connection's pool from the context's attributes (slot_size, send_slots, recv_slots): one
// send buffer is kept for control messages, and the receives are what a header can count. The
// provider's config holds as many (context.cpp).
inline uint32_t send_buffers_for(uint32_t send_slots) { return std::max(send_slots, 2u); }
inline uint32_t recv_buffers_for(uint32_t recv_slots) {
    return std::clamp(recv_slots, msg::min_buffers, msg::max_buffers);
}

struct message_session {
    context* ctx = nullptr;
    uint8_t* memory = nullptr;     // send_buffers + recv_buffers buffers of buffer_size bytes
    size_t memory_bytes = 0;
    provider::memory_handle region = provider::invalid_memory;
    uint32_t buffer_size = 0, send_buffers = 0, recv_buffers = 0;
    std::unique_ptr<message_op[]> ops;  // one per buffer
    std::vector<uint32_t> free_sends;   // send buffers not in flight (capacity send_buffers)
    // Received DATA not read yet, oldest first: a ring of recv_buffers entries.
    std::unique_ptr<held_buffer[]> held;
    uint32_t held_head = 0, held_count = 0;
    msg::credit_state credit;
    uint32_t owed = 0;       // receives posted and not yet granted to the peer
    uint32_t pending = 0;    // pending_control bits
    bool hello_sent = false;
    bool accepting = false;        // the accepting side: its HELLO goes first
    uint32_t peer_buffer_size = 0; // the peer's receive buffers (its HELLO): our largest message
    uint32_t data_in_flight = 0; // send buffers carrying DATA now (one is kept for control)

    uint8_t* buffer(uint32_t slot) const { return memory + size_t(slot) * buffer_size; }
    held_buffer& held_front() { return held[held_head]; }

    message_session() = default;
    message_session(const message_session&) = delete;
    message_session& operator=(const message_session&) = delete;
    // Deregisters the pool and frees it; while the provider may still use it (a cancelled
    // receive's flush), the context keeps it and retries (retire_pool).
    ~message_session();
};

// --- message_data.cpp --------------------------------------------------------------------------
// The pool of a new connection, registered, with every receive posted: 0, -ENOMEM, or the
// provider's refusal. A connecting socket calls it before connect (its receives must be there
// before the accepting side's HELLO); an accepted one at once.
int open_message_session(stream_socket& s, bool accepting);
// The connection is up: the accepting side sends its HELLO; the connecting one waits for it.
void start_message_session(stream_socket& s);
// Control messages, stream bytes and credits out, as the credits and send buffers allow.
void pump_messages(stream_socket& s);
// Queues a KEEPALIVE (probe or reply) for pump_messages; -EINVAL for any other type.
int queue_control_message(stream_socket& s, session::message_type type, uint32_t value);
size_t take_held(stream_socket& s, uint8_t* out, size_t length);
size_t peek_held(const stream_socket& s, uint8_t* out, size_t length); // MSG_PEEK
// Unread data is dropped (shutdown for reading, a close, a failure): its receive buffers go
// back to the peer, unless the connection has failed.
void drop_held(stream_socket& s);

// --- message_pools.cpp --------------------------------------------------------------------------
// Pools kept for reuse (context::idle_pools): at most this many, each for at most this long.
inline constexpr size_t idle_pool_limit = 8;
inline constexpr auto idle_pool_keep = std::chrono::seconds(1);
// Takes an ended session's pool until the next progress: once the provider is done with it
// (memory_idle), it becomes an idle pool if there is room, else it is deregistered and freed
// (freed at destroy). Never allocates: room is reserved with each session.
void retire_pool(context& ctx, provider::memory_handle region, uint8_t* memory, size_t bytes);
// The retired pools the provider is done with, and the idle pools kept past idle_pool_keep
// (all of them when `instance_gone`), released; run by every progress.
void release_pools(context& ctx, bool instance_gone);
// An idle pool of `bytes`, out of the context (false when there is none).
bool take_idle_pool(context& ctx, size_t bytes, provider::memory_handle* region, uint8_t** memory);

} // namespace sansock::sw

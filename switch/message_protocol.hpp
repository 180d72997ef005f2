// SPDX-License-Identifier: MIT
// The session protocol, version 3, between two switches over a message-mode provider
// (docs/protocol.md, part 2): every provider message is one session message, a 16-byte header
// (little-endian) and its payload, sent from and received into the connection's registered
// control buffers. Flow control is by credits, one per receive buffer, granted in every header.
//   u16 magic 0x5353 | u8 version 3 | u8 type | u16 credits | u16 reserved (0) | u32 length | u32 value
#pragma once

#include <cstddef>
#include <cstdint>

#include "switch/session_protocol.hpp"

namespace sansock::msg {

inline constexpr uint16_t magic = 0x5353;
inline constexpr uint8_t version = 3;
inline constexpr size_t header_size = 16;
// A connection's receive buffers: at least min_buffers (two are the control reserve, below),
// and no more than a header's credits field counts.
inline constexpr uint32_t min_buffers = 4;
inline constexpr uint32_t max_buffers = 4096;
// Credits a sender keeps for control messages: DATA goes only while it has more than this.
inline constexpr uint32_t control_reserve = 2;
inline constexpr uint32_t min_buffer_size = 64;          // bytes of a receive buffer, header included
inline constexpr uint32_t max_buffer_size = 1u << 30;

// The types and KEEPALIVE values are version 2's (same numbers, same meaning).
using session::message_type;
using session::keepalive_probe;
using session::keepalive_reply;

struct header {
    uint16_t magic = msg::magic;
    uint8_t version = msg::version;
    message_type type = message_type::data;
    uint16_t credits = 0;  // receives the sender posted for the peer since its previous message
    uint16_t reserved = 0;
    uint32_t length = 0;   // payload bytes after the header: the message is header_size + length
    uint32_t value = 0;
};

void encode(const header& h, uint8_t* out);
header decode(const uint8_t* in);

// A connection's credits, as the receiving side counts them.
struct credit_state {
    uint32_t peer_may_send = 0; // our receives the peer may still use (granted, not used yet)
    uint32_t credits = 0;       // the peer's receives we may still use
    uint32_t peer_buffers = 0;  // the receives the peer said it has (its HELLO): the most credits
};

// Checks the message `h` that arrived as `message_length` bytes against the connection's state
// (`common`: HELLO, FIN, FIN_ACK and KEEPALIVE, kept as for version 2). True when acceptable;
// else false with the reason in problem[0..size) (formatted in place, nothing allocated).
bool validate(const header& h, size_t message_length, const session::receive_state& common,
              const credit_state& state, char* problem, size_t size);

} // namespace sansock::msg

// SPDX-License-Identifier: MIT
// The session protocol between two switches, over a provider byte stream (docs/protocol.md).
//
// Every message is a 16-byte header, little-endian, then `length` payload bytes:
//   u16 magic 0x5353 ("SS") | u8 version | u8 type | u32 length | u32 value | u32 reserved (0)
// HELLO  first message each way; value = the sender's receive window in bytes; length 0
// DATA   length 1..max_data_payload bytes of stream; value 0; at most the window the peer
//        has left us (credit)
// CREDIT value = bytes of window returned (the receiver consumed them); length 0
// FIN    no more DATA in this direction (graceful shutdown of one direction); length 0
// FIN_ACK the receiver's switch has taken the FIN, so every byte before it is in its buffer:
//        only then may the FIN's sender close the connection hard; length 0
// KEEPALIVE value 0: a probe (the sender has heard nothing for a while), which the receiver's
//        switch answers at once with value 1, the reply; length 0; any time after HELLO
//        (version 2: a version 1 switch does not know it, so versions must match exactly)
#pragma once

#include <cstddef>
#include <cstdint>

namespace sansock::session {

inline constexpr uint16_t magic = 0x5353;
inline constexpr uint8_t version = 2; // 2: KEEPALIVE (docs/protocol.md 2.6)
inline constexpr size_t header_size = 16;
inline constexpr uint32_t max_data_payload = 64 * 1024;
inline constexpr uint32_t min_window = 4096;
inline constexpr uint32_t max_window = 64u << 20;

enum class message_type : uint8_t { hello = 1, data = 2, credit = 3, fin = 4, fin_ack = 5, keepalive = 6 };

// The value of a KEEPALIVE.
inline constexpr uint32_t keepalive_probe = 0;
inline constexpr uint32_t keepalive_reply = 1;

struct header {
    uint16_t magic = session::magic;
    uint8_t version = session::version;
    message_type type = message_type::data;
    uint32_t length = 0;
    uint32_t value = 0;
    uint32_t reserved = 0;
};

// Writes `h` into out[0..header_size).
void encode(const header& h, uint8_t* out);
// Reads a header from in[0..header_size), no checks.
header decode(const uint8_t* in);

// What the receiver of a connection knows, to judge the next message.
struct receive_state {
    bool hello_received = false;
    bool fin_received = false;
    uint32_t window_left = 0;   // DATA bytes the peer may still send us
    uint32_t our_window = 0;    // the window we advertised
    uint64_t peer_credit = 0;   // DATA bytes we may still send the peer
    uint32_t peer_window = 0;   // the window the peer advertised
    bool fin_sent = false;      // we sent our FIN
    bool fin_ack_received = false;
    uint32_t probes_outstanding = 0; // KEEPALIVE probes we sent that have not been answered
};

// Checks a received header against the protocol and the connection's state. True when the
// message is acceptable; else false and the reason in problem[0..size), for the log line of
// the reset (formatted in place: nothing is allocated).
bool validate(const header& h, const receive_state& state, char* problem, size_t size);

} // namespace sansock::session

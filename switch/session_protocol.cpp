// SPDX-License-Identifier: MIT
// Encoding and validation of session protocol messages.
#include "switch/session_protocol.hpp"

#include <cstring>

namespace sansock::session {

namespace {
void put16(uint8_t* p, uint16_t v) { p[0] = uint8_t(v); p[1] = uint8_t(v >> 8); }
void put32(uint8_t* p, uint32_t v) {
    for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i));
}
uint16_t get16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
uint32_t get32(const uint8_t* p) {
    return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
} // namespace

void encode(const header& h, uint8_t* out) {
    put16(out, h.magic);
    out[2] = h.version;
    out[3] = static_cast<uint8_t>(h.type);
    put32(out + 4, h.length);
    put32(out + 8, h.value);
    put32(out + 12, h.reserved);
}

header decode(const uint8_t* in) {
    header h;
    h.magic = get16(in);
    h.version = in[2];
    h.type = static_cast<message_type>(in[3]);
    h.length = get32(in + 4);
    h.value = get32(in + 8);
    h.reserved = get32(in + 12);
    return h;
}

std::string validate(const header& h, const receive_state& state) {
    if (h.magic != magic) return "bad magic " + std::to_string(h.magic);
    if (h.version != version) return "unsupported protocol version " + std::to_string(h.version);
    if (h.reserved != 0) return "reserved field not zero";
    switch (h.type) {
    case message_type::hello:
        if (state.hello_received) return "second HELLO";
        if (h.length != 0) return "HELLO with a payload";
        if (h.value < min_window || h.value > max_window)
            return "HELLO window " + std::to_string(h.value) + " out of range";
        return {};
    case message_type::data:
        if (!state.hello_received) return "DATA before HELLO";
        if (state.fin_received) return "DATA after FIN";
        if (h.length == 0 || h.length > max_data_payload) return "DATA length " + std::to_string(h.length) + " out of range";
        if (h.value != 0) return "DATA with a nonzero value";
        if (h.length > state.window_left)
            return "credit overflow: DATA of " + std::to_string(h.length) + " bytes with " +
                   std::to_string(state.window_left) + " bytes of window left";
        return {};
    case message_type::credit:
        if (!state.hello_received) return "CREDIT before HELLO";
        if (h.length != 0) return "CREDIT with a payload";
        if (h.value == 0) return "CREDIT of zero bytes";
        if (state.peer_credit + h.value > state.peer_window)
            return "credit overflow: CREDIT of " + std::to_string(h.value) + " bytes beyond the window of " +
                   std::to_string(state.peer_window);
        return {};
    case message_type::fin:
        if (!state.hello_received) return "FIN before HELLO";
        if (state.fin_received) return "second FIN";
        if (h.length != 0 || h.value != 0) return "FIN with a payload";
        return {};
    case message_type::fin_ack:
        if (!state.fin_sent) return "FIN_ACK before our FIN";
        if (state.fin_ack_received) return "second FIN_ACK";
        if (h.length != 0 || h.value != 0) return "FIN_ACK with a payload";
        return {};
    }
    return "unknown message type " + std::to_string(static_cast<int>(h.type));
}

} // namespace sansock::session

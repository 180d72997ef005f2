// SPDX-License-Identifier: MIT
// Encoding and validation of session protocol messages.
#include "switch/session_protocol.hpp"
#include "switch/wire_bytes.hpp"

#include <cstdio>
#include <cstring>

namespace sansock::session {

using wire::get16;
using wire::get32;
using wire::put16;
using wire::put32;

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

bool validate(const header& h, const receive_state& state, char* problem, size_t size) {
    // The reason, formatted into the caller's buffer: nothing is allocated on this path.
    const auto fail = [&](const char* format, auto... values) {
        std::snprintf(problem, size, format, values...);
        return false;
    };
    if (h.magic != magic) return fail("bad magic %u", unsigned(h.magic));
    if (h.version != version)
        return fail("session protocol version %u: this switch speaks version %u only", unsigned(h.version), unsigned(version));
    if (h.reserved != 0) return fail("reserved field not zero");
    switch (h.type) {
    case message_type::hello:
        if (state.hello_received) return fail("second HELLO");
        if (h.length != 0) return fail("HELLO with a payload");
        if (h.value < min_window || h.value > max_window) return fail("HELLO window %u out of range", h.value);
        return true;
    case message_type::data:
        if (!state.hello_received) return fail("DATA before HELLO");
        if (state.fin_received) return fail("DATA after FIN");
        if (h.length == 0 || h.length > max_data_payload) return fail("DATA length %u out of range", h.length);
        if (h.value != 0) return fail("DATA with a nonzero value");
        if (h.length > state.window_left)
            return fail("credit overflow: DATA of %u bytes with %u bytes of window left", h.length, state.window_left);
        return true;
    case message_type::credit:
        if (!state.hello_received) return fail("CREDIT before HELLO");
        if (h.length != 0) return fail("CREDIT with a payload");
        if (h.value == 0) return fail("CREDIT of zero bytes");
        if (state.peer_credit + h.value > state.peer_window)
            return fail("credit overflow: CREDIT of %u bytes beyond the window of %u", h.value, state.peer_window);
        return true;
    case message_type::fin:
        if (!state.hello_received) return fail("FIN before HELLO");
        if (state.fin_received) return fail("second FIN");
        if (h.length != 0 || h.value != 0) return fail("FIN with a payload");
        return true;
    case message_type::fin_ack:
        if (!state.fin_sent) return fail("FIN_ACK before our FIN");
        if (state.fin_ack_received) return fail("second FIN_ACK");
        if (h.length != 0 || h.value != 0) return fail("FIN_ACK with a payload");
        return true;
    case message_type::keepalive:
        if (!state.hello_received) return fail("KEEPALIVE before HELLO");
        if (h.length != 0) return fail("KEEPALIVE with a payload");
        if (h.value == keepalive_probe) return true;
        if (h.value != keepalive_reply) return fail("KEEPALIVE with value %u", h.value);
        if (state.probes_outstanding == 0) return fail("KEEPALIVE reply without a probe");
        return true;
    }
    return fail("unknown message type %u", unsigned(h.type));
}

} // namespace sansock::session

// SPDX-License-Identifier: MIT
// Encoding and validation of session protocol version 3 messages.
#include "switch/message_protocol.hpp"
#include "switch/wire_bytes.hpp"

#include <cstdio>

namespace sansock::msg {

using wire::get16;
using wire::get32;
using wire::put16;
using wire::put32;

void encode(const header& h, uint8_t* out) {
    put16(out, h.magic);
    out[2] = h.version;
    out[3] = static_cast<uint8_t>(h.type);
    put16(out + 4, h.credits);
    put16(out + 6, h.reserved);
    put32(out + 8, h.length);
    put32(out + 12, h.value);
}

header decode(const uint8_t* in) {
    header h;
    h.magic = get16(in);
    h.version = in[2];
    h.type = static_cast<message_type>(in[3]);
    h.credits = get16(in + 4);
    h.reserved = get16(in + 6);
    h.length = get32(in + 8);
    h.value = get32(in + 12);
    return h;
}

bool validate(const header& h, size_t message_length, const session::receive_state& common, const credit_state& state,
              char* problem, size_t size) {
    const auto fail = [&](const char* format, auto... values) {
        std::snprintf(problem, size, format, values...);
        return false;
    };
    if (message_length < header_size) return fail("a message of %zu bytes, shorter than a header", message_length);
    if (h.magic != magic) return fail("bad magic %u", unsigned(h.magic));
    if (h.version != version)
        return fail("session protocol version %u: this switch speaks version %u only", unsigned(h.version), unsigned(version));
    if (h.reserved != 0) return fail("reserved field not zero");
    if (h.length != message_length - header_size)
        return fail("length %u in a message of %zu bytes", h.length, message_length);
    // Each message uses one of our receives the peer was granted; the acceptor's HELLO uses the
    // one the connecting side keeps for it.
    if (state.peer_may_send == 0) return fail("credit overrun: a message with no credit left");
    if (state.peer_may_send == 1 && h.credits == 0) return fail("the last credit used without granting any");
    if (!common.hello_received) {
        if (h.type != message_type::hello) return fail("message type %u before HELLO", unsigned(h.type));
        if (h.length != 0) return fail("HELLO with a payload");
        if (h.value < min_buffer_size || h.value > max_buffer_size) return fail("HELLO buffer size %u out of range", h.value);
        if (h.credits < min_buffers || h.credits > max_buffers) return fail("HELLO with %u receive buffers", unsigned(h.credits));
        return true;
    }
    if (uint64_t(state.credits) + h.credits > state.peer_buffers)
        return fail("credit overflow: %u credits granted with %u of the peer's %u receives held", unsigned(h.credits),
                    state.credits, state.peer_buffers);
    switch (h.type) {
    case message_type::hello: return fail("second HELLO");
    case message_type::data:
        if (common.fin_received) return fail("DATA after FIN");
        if (h.length == 0) return fail("DATA without a payload");
        if (h.value != 0) return fail("DATA with a nonzero value");
        if (state.peer_may_send <= control_reserve)
            return fail("DATA sent with %u credits, which are kept for control messages", state.peer_may_send);
        return true;
    case message_type::credit:
        if (h.length != 0 || h.value != 0) return fail("CREDIT with a payload");
        if (h.credits == 0) return fail("CREDIT granting nothing");
        return true;
    case message_type::fin:
        if (common.fin_received) return fail("second FIN");
        if (h.length != 0 || h.value != 0) return fail("FIN with a payload");
        return true;
    case message_type::fin_ack:
        if (!common.fin_sent) return fail("FIN_ACK before our FIN");
        if (common.fin_ack_received) return fail("second FIN_ACK");
        if (h.length != 0 || h.value != 0) return fail("FIN_ACK with a payload");
        return true;
    case message_type::keepalive:
        if (h.length != 0) return fail("KEEPALIVE with a payload");
        if (h.value == keepalive_probe) return true;
        if (h.value != keepalive_reply) return fail("KEEPALIVE with value %u", h.value);
        if (common.probes_outstanding == 0) return fail("KEEPALIVE reply without a probe");
        return true;
    }
    return fail("unknown message type %u", unsigned(h.type));
}

} // namespace sansock::msg

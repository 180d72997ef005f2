// SPDX-License-Identifier: MIT
// libFuzzer target: the session protocol decoder, driven through the path a received message
// takes. A switch socket (public API, loopback provider, manual progress) is connected to a raw
// loopback end; the fuzz input is the raw end's byte stream, cut into chunks as the input
// says, mixed with the switch side's calls (recv, send, shutdown, close in each linger mode,
// options, poll, async recv) and progress steps. A model of the protocol, written from
// docs/protocol.md, judges the stream the raw end sent and the one the switch sent back.
//
// Input: byte 0 configures, then each byte is an operation (low nibble) and its argument (high
// nibble), some followed by operands. tests/fuzz/make-corpus writes the seeds in this format.
//   config bit 0: the raw end first sends a valid HELLO (window by bits 4-5: 4096, 65536,
//                 1 MiB, 64 MiB)
//          bit 1: the switch connects to a raw listener (else the raw end connects to a switch
//                 listener, and the switch accepts)
//          bits 2-3: the switch's window: 4096, 8192, 65536, 262144 bytes
//          bit 6: one progress round after every operation
//          bit 7: at the end, close the switch socket with SO_LINGER {1, 0} before destroy
//   op 0  raw end sends the next arg+1 input bytes        op 8  close: arg&3 = SO_DONTLINGER,
//   op 1  raw end sends the next (byte+1) input bytes           {1,0}, {1,n} blocking, {1,n}
//   op 2  raw end sends u16+1 filler bytes                      nonblocking; n = 1 + (arg>>2 & 1)
//   op 3  raw end sends a well-formed frame (arg; 8, 9:   op 9  setsockopt (arg&7)
//         KEEPALIVE probe, reply; 10-15 as arg&7)
//   op 4  arg+1 progress rounds                           op 10 poll, events arg, timeout 0
//   op 5  recv (byte+1) << (arg&7) bytes, arg&8 WAITALL   op 11 getsockopt/getsockname/stats
//   op 6  send u16+1 bytes                                op 12 the clock moves (arg+1)*250 ms
//   op 7  shutdown (SHUT_RD, SHUT_WR, SHUT_RDWR, 99)      op 13 recv_async of (byte+1)*64 bytes
//   op 14 the raw end closes its socket (a reset)         op 15 if it polls readable: a
//                                                               blocking recv (must not wait)
//
// Invariants (each aborts with a message): every call returns within its bound and a result
// sansock.h documents; a reset socket reports -ECONNRESET, and only when the stream broke the
// protocol or the peer went away; what the application reads is exactly a prefix of the
// payload of the DATA the model accepts (all of it, then end of stream, when the connection is
// healthy); the switch's own messages follow the protocol and carry the bytes sent in order;
// each async recv completes once; every KEEPALIVE probe of the raw end is answered; context
// destroy returns 0 and frees everything (ASan's leak check runs after inputs that did not free
// what they allocated). The switch's own keepalive is off: the raw end never answers probes,
// and the fuzz clock moves by hours.
#include <sys/time.h>

#include <memory>
#include <optional>

#include "tests/fuzz/fuzz_support.hpp"

namespace sansock::fuzz {
namespace {

using namespace std::chrono_literals;

uint8_t app_byte(uint64_t i) { return uint8_t((i * 2654435761u) >> 13 ^ (i % 251)); }
uint8_t filler_byte(uint64_t i) { return uint8_t(i * 7 + 3); }

constexpr uint32_t switch_windows[4] = {4096, 8192, 65536, 262144};
constexpr uint32_t hello_windows[4] = {4096, 65536, 1u << 20, 64u << 20};

// What the raw end knew of the switch's messages when it sent a chunk.
struct observed {
    uint64_t switch_credit = 0; // CREDIT values the switch sent
    uint64_t switch_data = 0;   // DATA payload bytes the switch sent
    bool switch_fin = false;
    bool app_closed = false;    // the application had closed the switch socket
};

// The raw end's stream as the switch must judge it (docs/protocol.md 2.3, 2.4). Each header is
// definitely valid, definitely invalid (the switch must reset when it reaches it), or depends on
// timing the raw end cannot see ("maybe": a window, credit or FIN_ACK the switch may already
// allow). Parsing stops at the first invalid header.
struct peer_model {
    uint32_t our_window = 0;
    uint8_t header[header_size]{};
    size_t header_have = 0;
    uint64_t payload_left = 0;
    std::vector<uint8_t> payload;        // the DATA payload being received
    std::vector<uint8_t> valid_payload;  // complete payloads of accepted DATA, in order
    bool hello = false, fin = false, fin_ack = false;
    uint64_t probes = 0;       // KEEPALIVE probes accepted: each must be answered
    uint32_t peer_window = 0;
    uint64_t data_total = 0;   // DATA lengths of accepted headers
    uint64_t credit_total = 0; // CREDIT values of accepted headers
    bool invalid = false;
    const char* why = "";
    bool maybe = false;
    uint64_t sent = 0;

    bool clean() const { return !invalid && !maybe; }

    void reject(const char* reason) {
        invalid = true;
        why = reason;
    }

    void judge(const observed& o) {
        const wire_header h = read_header(header);
        if (h.magic != 0x5353) return reject("bad magic");
        if (h.version != session_version) return reject("bad version");
        if (h.reserved != 0) return reject("reserved field");
        switch (h.type) {
        case t_hello:
            if (hello) return reject("second HELLO");
            if (h.length != 0) return reject("HELLO with a payload");
            if (h.value < 4096 || h.value > (64u << 20)) return reject("HELLO window out of range");
            hello = true;
            peer_window = h.value;
            return;
        case t_data:
            if (!hello) return reject("DATA before HELLO");
            if (fin) return reject("DATA after FIN");
            if (h.length == 0 || h.length > 65536) return reject("DATA length");
            if (h.value != 0) return reject("DATA value");
            if (o.app_closed) return reject("DATA after close");
            if (data_total + h.length > our_window + o.switch_credit) maybe = true; // window
            data_total += h.length;
            payload_left = h.length;
            payload.clear();
            return;
        case t_credit:
            if (!hello) return reject("CREDIT before HELLO");
            if (h.length != 0) return reject("CREDIT with a payload");
            if (h.value == 0) return reject("CREDIT of zero");
            if (h.value > peer_window) return reject("CREDIT beyond the window");
            if (credit_total + h.value > o.switch_data) maybe = true; // more than was sent?
            credit_total += h.value;
            return;
        case t_fin:
            if (!hello) return reject("FIN before HELLO");
            if (fin) return reject("second FIN");
            if (h.length != 0 || h.value != 0) return reject("FIN with a payload");
            fin = true;
            return;
        case t_fin_ack:
            // A second one, or one with a payload, resets whether the switch has sent its FIN
            // or not.
            if (fin_ack) return reject("second FIN_ACK");
            if (h.length != 0 || h.value != 0) return reject("FIN_ACK with a payload");
            if (!o.switch_fin) maybe = true;
            fin_ack = true;
            return;
        case t_keepalive:
            if (!hello) return reject("KEEPALIVE before HELLO");
            if (h.length != 0) return reject("KEEPALIVE with a payload");
            if (h.value == 1) return reject("KEEPALIVE reply without a probe"); // the switch never probes here
            if (h.value != 0) return reject("KEEPALIVE value");
            ++probes;
            return;
        default: return reject("unknown type");
        }
    }

    void feed(const uint8_t* p, size_t n, const observed& o) {
        sent += n;
        size_t i = 0;
        while (i < n && !invalid) {
            if (payload_left > 0) {
                const size_t take = std::min<uint64_t>(payload_left, n - i);
                payload.insert(payload.end(), p + i, p + i + take);
                payload_left -= take;
                i += take;
                if (payload_left == 0) valid_payload.insert(valid_payload.end(), payload.begin(), payload.end());
                continue;
            }
            header[header_have++] = p[i++];
            if (header_have == header_size) {
                header_have = 0;
                judge(o);
            }
        }
    }
};

// The switch's stream as the raw end receives it: every message must follow the protocol.
struct switch_stream {
    uint32_t window = 0;            // the switch must advertise this
    std::vector<uint8_t> pending;   // bytes not parsed yet
    bool hello = false, fin = false;
    int fin_acks = 0;
    uint64_t replies = 0; // KEEPALIVE replies
    uint64_t data = 0, credit = 0;
    uint64_t payload_left = 0;

    void feed(const uint8_t* p, size_t n, const peer_model& peer, uint64_t app_sent, bool write_shut) {
        pending.insert(pending.end(), p, p + n);
        size_t pos = 0;
        for (;;) {
            if (payload_left > 0) {
                const size_t take = std::min<uint64_t>(payload_left, pending.size() - pos);
                for (size_t k = 0; k < take; ++k) {
                    const uint64_t at = data - payload_left + k;
                    if (pending[pos + k] != app_byte(at)) die("switch DATA byte %llu is not the byte sent", (unsigned long long)at);
                }
                payload_left -= take;
                pos += take;
                if (payload_left > 0) break;
                continue;
            }
            if (pending.size() - pos < header_size) break;
            const wire_header h = read_header(pending.data() + pos);
            pos += header_size;
            if (h.magic != 0x5353 || h.version != session_version || h.reserved != 0)
                die("switch sent a bad header (magic %x, version %u, reserved %u)", h.magic, h.version, h.reserved);
            if (!hello && h.type != t_hello) die("switch's first message is type %u, not HELLO", h.type);
            switch (h.type) {
            case t_hello:
                if (hello) die("switch sent a second HELLO");
                if (h.length != 0 || h.value != window) die("switch HELLO length %u window %u (expected %u)", h.length, h.value, window);
                hello = true;
                break;
            case t_data:
                if (!peer.hello) die("switch sent DATA before the raw end's HELLO");
                if (fin) die("switch sent DATA after its FIN");
                if (h.length == 0 || h.length > 65520 || h.value != 0) die("switch DATA length %u value %u", h.length, h.value);
                if (data + h.length > app_sent) die("switch sent %llu bytes, the application %llu", (unsigned long long)(data + h.length), (unsigned long long)app_sent);
                if (data + h.length > uint64_t(peer.peer_window) + peer.credit_total)
                    die("switch DATA beyond the window: %llu bytes, window %u + credit %llu", (unsigned long long)(data + h.length),
                        peer.peer_window, (unsigned long long)peer.credit_total);
                data += h.length;
                payload_left = h.length;
                break;
            case t_credit:
                if (h.length != 0 || h.value == 0) die("switch CREDIT length %u value %u", h.length, h.value);
                credit += h.value;
                if (credit > peer.valid_payload.size())
                    die("switch returned %llu bytes of credit for %zu received", (unsigned long long)credit, peer.valid_payload.size());
                break;
            case t_fin:
                if (fin) die("switch sent a second FIN");
                if (h.length != 0 || h.value != 0) die("switch FIN with a payload");
                if (!write_shut) die("switch sent FIN without shutdown or close");
                if (data != app_sent) die("switch sent FIN after %llu of the %llu bytes sent", (unsigned long long)data, (unsigned long long)app_sent);
                fin = true;
                break;
            case t_fin_ack:
                if (!peer.fin) die("switch sent FIN_ACK without a FIN from the raw end");
                if (++fin_acks > 1) die("switch sent a second FIN_ACK");
                if (h.length != 0 || h.value != 0) die("switch FIN_ACK with a payload");
                break;
            case t_keepalive:
                if (h.length != 0 || h.value != 1) die("switch KEEPALIVE length %u value %u (its keepalive is off)", h.length, h.value);
                if (++replies > peer.probes) die("switch sent %llu KEEPALIVE replies for %llu probes", (unsigned long long)replies,
                                                 (unsigned long long)peer.probes);
                break;
            default: die("switch sent message type %u", h.type);
            }
        }
        pending.erase(pending.begin(), pending.begin() + static_cast<std::ptrdiff_t>(pos));
    }
};

// What the application read, in the order it was taken: sync recvs at their call, async recvs
// at their start (they are served first, in order).
struct read_slot {
    std::vector<uint8_t> bytes;
    int completions = 0;
    int64_t result = 0;
    size_t length = 0;
    bool async = false;
    struct run* owner = nullptr;
};

struct run {
    fuzz_clock clock;
    size_t log_bytes = 0;
    loopback::fabric* net = nullptr;
    sansock_context* ctx = nullptr;
    std::unique_ptr<raw_end> raw;
    sansock_socket_t s = 0;
    bool app_closed = false; // the handle is released
    bool write_shut = false; // shutdown(SHUT_WR or RDWR), or a close that goes on gracefully
    bool read_shut = false;
    bool peer_closed = false;
    bool saw_reset = false;  // a call gave -ECONNRESET
    uint32_t window = 0;
    uint64_t app_sent = 0;
    std::vector<uint8_t> send_buffer;
    std::deque<read_slot> slots;
    read_slot* starting = nullptr; // the async recv whose start call is running
    peer_model peer;
    switch_stream back;
    raw_end::op* raw_recv = nullptr;
    std::vector<raw_end::op*> raw_sends;
    bool raw_saw_reset = false;

    observed now() const { return {back.credit, back.data, back.fin, app_closed}; }

    // Progress on both sides; the raw end takes what the switch sent. Returns the events.
    int round() {
        int events = bounded_call("sansock_progress", {}, [&] { return sansock_progress(ctx, 0); });
        events += raw->progress();
        events += drain_raw();
        return events;
    }

    // The raw end's receive: parse what arrived, post the next.
    int drain_raw() {
        if (peer_closed || raw_saw_reset || raw->s == 0) return 0;
        int events = 0;
        if (raw_recv != nullptr && raw_recv->completions > 0) {
            ++events;
            if (raw_recv->result > 0) {
                back.feed(raw_recv->buffer.data(), size_t(raw_recv->result), peer, app_sent, write_shut);
            } else if (raw_recv->result == -ECONNRESET) {
                raw_saw_reset = true;
            } else {
                die("raw end's receive completed %lld", (long long)raw_recv->result);
            }
            raw_recv = nullptr;
        }
        if (raw_recv == nullptr && !raw_saw_reset) {
            raw_end::op& t = raw->new_op(provider::operation_kind::recv, 65536);
            const int rc = raw->ops.recv(raw->inst, raw->s, &t.o);
            if (rc == 0) raw_recv = &t;
            else if (rc == -ECONNRESET) {
                raw_saw_reset = true;
                t.completions = 1; // refused: never completes
            } else die("raw end's recv refused: %d", rc);
        }
        return events;
    }

    void peer_send(const uint8_t* p, size_t n) {
        if (n == 0 || peer_closed) return;
        trace("  raw end sends %zu bytes", n);
        raw_end::op& t = raw->new_op(provider::operation_kind::send, n);
        std::memcpy(t.buffer.data(), p, n);
        const int rc = raw->ops.send(raw->inst, raw->s, &t.o);
        if (rc != 0) {
            if (rc != -ECONNRESET) die("raw end's send refused: %d", rc);
            t.completions = 1; // refused: never completes, the bytes never went
            raw_saw_reset = true;
            return;
        }
        raw_sends.push_back(&t);
        peer.feed(p, n, now());
    }

    bool all_peer_bytes_delivered() const {
        for (const raw_end::op* t : raw_sends)
            if (t->completions != 1 || t->result != int64_t(t->o.length)) return false;
        return true;
    }

    void note_result(const char* call, int64_t rc) {
        if (rc == -ECONNRESET) {
            saw_reset = true;
            if (peer.clean() && !peer_closed)
                die("%s: -ECONNRESET, but the raw end broke no rule and did not close", call);
        }
    }

    // A call on a released handle must say so, whatever the call.
    void expect_closed(const char* call, int64_t rc) {
        if (app_closed && rc != -ENOTSOCK) die("%s on a closed handle gave %lld, not -ENOTSOCK", call, (long long)rc);
        if (!app_closed && rc == -ENOTSOCK) die("%s on an open handle gave -ENOTSOCK", call);
    }

    void recv_result(const char* call, int64_t rc, const uint8_t* buffer, size_t length) {
        expect_closed(call, rc);
        note_result(call, rc);
        if (rc > int64_t(length)) die("%s returned %lld for %zu bytes", call, (long long)rc, length);
        if (rc < 0 && rc != -EWOULDBLOCK && rc != -ECONNRESET && rc != -ENOTSOCK)
            die("%s gave %lld: a broken connection is -ECONNRESET", call, (long long)rc);
        if (rc > 0) {
            read_slot& slot = slots.emplace_back();
            slot.bytes.assign(buffer, buffer + rc);
            slot.completions = 1;
            slot.result = rc;
        }
    }

    static void on_async_recv(void* user, int64_t result) {
        auto* slot = static_cast<read_slot*>(user);
        if (slot->owner->starting == slot) die("recv_async's callback ran inside the call");
        if (++slot->completions != 1) die("recv_async's callback ran twice");
        check_result("recv_async callback", result, documented::callback);
        if (result > int64_t(slot->length)) die("recv_async completed %lld for %zu", (long long)result, slot->length);
        slot->result = result;
        if (result > 0) slot->bytes.resize(size_t(result));
        else slot->bytes.clear();
    }

    void set_int(int name, int value) {
        const int rc = bounded_call("sansock_setsockopt", documented::setsockopt,
                                    [&] { return sansock_setsockopt(s, SOL_SOCKET, name, &value, sizeof value); });
        expect_closed("sansock_setsockopt", rc);
    }

    void do_close(int mode, int seconds) {
        linger l{};
        switch (mode) {
        case 0: set_int(SO_DONTLINGER, 1); break;
        case 1: l = {1, 0}; break;
        default: l = {1, seconds}; break;
        }
        if (mode != 0)
            expect_closed("sansock_setsockopt", bounded_call("sansock_setsockopt", documented::setsockopt, [&] {
                              return sansock_setsockopt(s, SOL_SOCKET, SO_LINGER, &l, sizeof l);
                          }));
        if (mode == 2) {
            set_int(SANSOCK_SO_NONBLOCK, 0);
            // The linger wait sees time pass: a second a reading, so a wait of n seconds makes
            // at most n - 1 progress calls. A wake makes the first return at once when nothing
            // is pending (manual progress would otherwise wait 10 ms for events).
            clock.step = 1000ms;
            loopback_ops.wake(provider_instance_of(ctx));
        }
        const int rc = bounded_call("sansock_close", documented::close, [&] { return sansock_close(s); });
        clock.step = 0ms;
        expect_closed("sansock_close", rc);
        if (app_closed) return;
        if (rc == -EWOULDBLOCK) {
            if (mode != 3) die("sansock_close gave -EWOULDBLOCK in linger mode %d", mode);
        } else if (rc == -ETIMEDOUT) {
            if (mode != 2) die("sansock_close gave -ETIMEDOUT in linger mode %d", mode);
        } else if (rc == -ECONNRESET) {
            // SO_LINGER {1, n}: the connection failed with data not acknowledged.
            if (mode < 2) die("sansock_close gave -ECONNRESET in linger mode %d", mode);
            note_result("sansock_close", rc);
        } else if (rc != 0) {
            die("sansock_close gave %d", rc);
        }
        if (rc == 0 || rc == -ETIMEDOUT || rc == -ECONNRESET) {
            app_closed = true;
            if (mode != 1 && rc == 0) write_shut = true;
        }
    }

    void operation(uint8_t c, reader& in) {
        const int op = c & 15, arg = c >> 4;
        trace("op %d arg %d (at input byte %zu)", op, arg, in.pos - 1);
        switch (op) {
        case 0:
        case 1: {
            size_t got = 0;
            const uint8_t* p = in.take(op == 0 ? size_t(arg) + 1 : size_t(in.byte()) + 1, &got);
            peer_send(p, got);
            break;
        }
        case 2: {
            std::vector<uint8_t> fill(size_t(in.u16()) + 1);
            for (size_t i = 0; i < fill.size(); ++i) fill[i] = filler_byte(peer.sent + i);
            peer_send(fill.data(), fill.size());
            break;
        }
        case 3: {
            uint8_t type = 0;
            uint32_t length = 0, value = 0;
            size_t payload = 0;
            switch (arg < 8 || arg > 9 ? arg & 7 : arg) {
            case 0: type = t_hello; value = (uint32_t(in.u16()) + 1) * 256; break;
            case 1: type = t_data; length = uint32_t(in.u16()) + 1; payload = length; break;
            case 2: type = t_credit; value = uint32_t(in.u16()) + 1; break;
            case 3: type = t_fin; break;
            case 4: type = t_fin_ack; break;
            case 5: type = t_data; length = uint32_t(in.u16()) + 1; break; // payload left to later chunks
            case 6: type = t_data; length = 65536; payload = length; break;
            case 7: type = t_credit; value = uint32_t(in.u16()) << 16 | in.u16(); break;
            case 8: type = t_keepalive; value = 0; break; // a probe
            case 9: type = t_keepalive; value = 1; break; // a reply (to no probe: invalid)
            }
            std::vector<uint8_t> frame(header_size + payload);
            put_header(frame.data(), type, length, value);
            for (size_t i = 0; i < payload; ++i) frame[header_size + i] = filler_byte(i);
            peer_send(frame.data(), frame.size());
            break;
        }
        case 4:
            for (int i = 0; i <= arg; ++i) round();
            break;
        case 5: {
            const size_t length = (size_t(in.byte()) + 1) << (arg & 7);
            std::vector<uint8_t> buffer(length);
            const int flags = (arg & 8) != 0 ? MSG_WAITALL : 0;
            const ssize_t rc = bounded_call("sansock_recv", documented::recv,
                                            [&] { return sansock_recv(s, buffer.data(), length, flags); });
            recv_result("sansock_recv", rc, buffer.data(), length);
            break;
        }
        case 6: {
            const size_t length = size_t(in.u16()) + 1;
            send_buffer.resize(length);
            for (size_t i = 0; i < length; ++i) send_buffer[i] = app_byte(app_sent + i);
            const ssize_t rc = bounded_call("sansock_send", documented::send,
                                            [&] { return sansock_send(s, send_buffer.data(), length, 0); });
            expect_closed("sansock_send", rc);
            note_result("sansock_send", rc);
            if (rc > ssize_t(length)) die("sansock_send took %zd of %zu", rc, length);
            if (rc == -EPIPE && !write_shut) die("sansock_send gave -EPIPE before shutdown");
            if (rc > 0) app_sent += uint64_t(rc);
            break;
        }
        case 7: {
            const int how[4] = {SHUT_RD, SHUT_WR, SHUT_RDWR, 99};
            const int rc = bounded_call("sansock_shutdown", documented::shutdown,
                                        [&] { return sansock_shutdown(s, how[arg & 3]); });
            expect_closed("sansock_shutdown", rc);
            note_result("sansock_shutdown", rc);
            if ((arg & 3) == 3 && !app_closed && rc != -EINVAL) die("shutdown(99) gave %d, not -EINVAL", rc);
            if (rc == 0 && (arg & 3) != 0) write_shut = true;
            if (rc == 0 && (arg & 3) != 1) read_shut = true;
            break;
        }
        case 8: do_close(arg & 3, 1 + ((arg >> 2) & 1)); break;
        case 9: {
            int rc = 0;
            switch (arg & 7) {
            case 0: set_int(SO_SNDBUF, (int(in.u16()) + 1) * 16); break;
            case 1: set_int(SO_RCVBUF, int(in.u16()) * 1024); break;
            case 2: {
                const linger l{in.byte() & 1, in.byte() % 3};
                rc = bounded_call("sansock_setsockopt", documented::setsockopt,
                                  [&] { return sansock_setsockopt(s, SOL_SOCKET, SO_LINGER, &l, sizeof l); });
                expect_closed("sansock_setsockopt", rc);
                break;
            }
            case 3: set_int(SO_DONTLINGER, in.byte() & 1); break;
            case 4:
            case 5: {
                const timeval tv{0, suseconds_t(in.byte()) * 1000};
                const int name = (arg & 7) == 4 ? SO_RCVTIMEO : SO_SNDTIMEO;
                rc = bounded_call("sansock_setsockopt", documented::setsockopt,
                                  [&] { return sansock_setsockopt(s, SOL_SOCKET, name, &tv, sizeof tv); });
                expect_closed("sansock_setsockopt", rc);
                break;
            }
            case 6:
                rc = bounded_call("sansock_setsockopt", documented::setsockopt,
                                  [&] { return sansock_setsockopt(s, SOL_SOCKET, 0x7777, &rc, sizeof rc); });
                if (!app_closed && rc != -ENOPROTOOPT) die("unknown option gave %d", rc);
                break;
            case 7:
                rc = bounded_call("sansock_setsockopt", documented::setsockopt,
                                  [&] { return sansock_setsockopt(s, IPPROTO_TCP, SO_LINGER, &rc, 1); });
                if (!app_closed && rc != -ENOPROTOOPT) die("another level gave %d", rc);
                break;
            }
            break;
        }
        case 10: {
            sansock_pollfd p{s, short(arg | SANSOCK_POLLIN), 0};
            const int rc = bounded_call("sansock_poll", documented::poll, [&] { return sansock_poll(&p, 1, 0); });
            if (rc != (p.revents != 0 ? 1 : 0)) die("sansock_poll returned %d with revents %x", rc, p.revents);
            if (app_closed && p.revents != SANSOCK_POLLNVAL) die("poll of a closed handle: revents %x", p.revents);
            break;
        }
        case 11: {
            const int names[8] = {SO_ERROR, SO_TYPE, SO_LINGER, SO_RCVBUF, SO_SNDBUF, SANSOCK_SO_NONBLOCK, SO_RCVTIMEO, SO_DONTLINGER};
            if (arg < 8) {
                uint8_t value[32]{};
                socklen_t length = sizeof value;
                const int rc = bounded_call("sansock_getsockopt", documented::getsockopt,
                                            [&] { return sansock_getsockopt(s, SOL_SOCKET, names[arg], value, &length); });
                expect_closed("sansock_getsockopt", rc);
                if (rc == 0 && length > sizeof value) die("getsockopt length %u", unsigned(length));
            } else if (arg < 12) {
                sockaddr_in a{};
                socklen_t length = arg < 10 ? sizeof a : 2; // also too short
                const int rc = bounded_call("sansock_getname", documented::getname, [&] {
                    return arg % 2 == 0 ? sansock_getsockname(s, reinterpret_cast<sockaddr*>(&a), &length)
                                        : sansock_getpeername(s, reinterpret_cast<sockaddr*>(&a), &length);
                });
                expect_closed("sansock_getname", rc);
            } else {
                struct sansock_context_stats stats{};
                stats.size = arg == 12 ? 24 : sizeof stats;
                if (int rc = sansock_context_stats(ctx, &stats)) die("sansock_context_stats %d", rc);
            }
            break;
        }
        case 12: clock.offset += std::chrono::milliseconds(250 * (arg + 1)); break;
        case 13: {
            read_slot& slot = slots.emplace_back();
            slot.async = true;
            slot.owner = this;
            slot.length = (size_t(in.byte()) + 1) * 64;
            slot.bytes.resize(slot.length);
            starting = &slot;
            const int rc = bounded_call("sansock_recv_async", documented::recv_async, [&] {
                return sansock_recv_async(s, slot.bytes.data(), slot.length, &on_async_recv, &slot);
            });
            starting = nullptr;
            expect_closed("sansock_recv_async", rc);
            note_result("sansock_recv_async", rc);
            if (rc != 0) {
                if (slot.completions != 0) die("recv_async refused (%d) and called back", rc);
                slot.completions = 1; // no callback follows
                slot.bytes.clear();
            }
            break;
        }
        case 14:
            if (!peer_closed) {
                if (int rc = raw->ops.close(raw->inst, raw->s)) die("raw end's close: %d", rc);
                peer_closed = true;
                raw_recv = nullptr;
            }
            break;
        case 15: {
            // A blocking recv on a socket that polls readable returns at once (without its
            // time-out, which only keeps a wrong answer from hanging the target).
            sansock_pollfd p{s, SANSOCK_POLLIN, 0};
            if (app_closed || sansock_poll(&p, 1, 0) != 1 || (p.revents & SANSOCK_POLLIN) == 0) break;
            const timeval tv{1, 0};
            sansock_setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            set_int(SANSOCK_SO_NONBLOCK, 0);
            uint8_t buffer[512];
            const ssize_t rc = bounded_call("sansock_recv (blocking, readable)", documented::recv,
                                            [&] { return sansock_recv(s, buffer, sizeof buffer, 0); }, 500ms);
            set_int(SANSOCK_SO_NONBLOCK, 1);
            if (rc == -EWOULDBLOCK) die("the socket polled readable (%x), yet a blocking recv waited", p.revents);
            recv_result("sansock_recv (blocking)", rc, buffer, sizeof buffer);
            break;
        }
        }
    }

    // Progress until neither side has anything left to do.
    void settle() {
        int quiet = 0;
        for (int rounds = 0; quiet < 3; ++rounds) {
            if (rounds > 2000) die("no quiescence after 2000 progress rounds (a livelock)");
            quiet = round() == 0 ? quiet + 1 : 0;
        }
    }

    void connect(bool switch_connects) {
        if (switch_connects) {
            if (raw->ops.socket(raw->inst, &raw->listener) != 0) die("raw socket");
            const sockaddr_in any = ipv4(0);
            if (raw->ops.bind(raw->inst, raw->listener, as_sockaddr(any), sizeof any) != 0) die("raw bind");
            if (raw->ops.listen(raw->inst, raw->listener, 4) != 0) die("raw listen");
            sockaddr_in bound{};
            socklen_t length = sizeof bound;
            raw->ops.getsockname(raw->inst, raw->listener, reinterpret_cast<sockaddr*>(&bound), &length);
            raw_end::op& accepting = raw->new_op(provider::operation_kind::accept, 0);
            if (raw->ops.accept(raw->inst, raw->listener, &accepting.o) != 0) die("raw accept");
            if (sansock_socket(ctx, &s) != 0) die("sansock_socket");
            set_int(SANSOCK_SO_NONBLOCK, 1);
            const sockaddr_in to = ipv4(ntohs(bound.sin_port));
            const int rc = bounded_call("sansock_connect", documented::connect,
                                        [&] { return sansock_connect(s, as_sockaddr(to), sizeof to); });
            if (rc != -EINPROGRESS) die("nonblocking connect gave %d", rc);
            for (int i = 0; i < 8 && accepting.completions == 0; ++i) round();
            if (accepting.completions != 1 || accepting.result != 0) die("raw accept did not complete");
            raw->s = accepting.o.accepted;
            for (int i = 0; i < 4; ++i) round();
            sansock_pollfd p{s, SANSOCK_POLLOUT, 0};
            if (sansock_poll(&p, 1, 0) != 1 || (p.revents & SANSOCK_POLLOUT) == 0) die("connect did not finish: %x", p.revents);
        } else {
            sansock_socket_t l = 0;
            if (sansock_socket(ctx, &l) != 0) die("sansock_socket");
            const sockaddr_in any = ipv4(0);
            if (sansock_bind(l, as_sockaddr(any), sizeof any) != 0) die("sansock_bind");
            if (sansock_listen(l, 4) != 0) die("sansock_listen");
            sockaddr_in bound{};
            socklen_t length = sizeof bound;
            if (sansock_getsockname(l, reinterpret_cast<sockaddr*>(&bound), &length) != 0) die("getsockname");
            if (raw->ops.socket(raw->inst, &raw->s) != 0) die("raw socket");
            raw_end::op& connecting = raw->new_op(provider::operation_kind::connect, 0);
            const sockaddr_in to = ipv4(ntohs(bound.sin_port));
            std::memcpy(&connecting.o.address, &to, sizeof to);
            connecting.o.address_length = sizeof to;
            if (raw->ops.connect(raw->inst, raw->s, &connecting.o) != 0) die("raw connect");
            const int one = 1;
            sansock_setsockopt(l, SOL_SOCKET, SANSOCK_SO_NONBLOCK, &one, sizeof one);
            int rc = -EWOULDBLOCK;
            for (int i = 0; i < 8 && rc == -EWOULDBLOCK; ++i) {
                round();
                rc = bounded_call("sansock_accept", documented::accept, [&] { return sansock_accept(l, &s, nullptr, nullptr); });
            }
            if (rc != 0) die("accept gave %d", rc);
            if (connecting.completions != 1 || connecting.result != 0) die("raw connect did not complete");
            if (sansock_close(l) != 0) die("closing the listener");
            set_int(SANSOCK_SO_NONBLOCK, 1);
        }
    }

    // After the input: settle, read what is left, and judge the whole run.
    void finish(bool abort_at_end) {
        settle();
        std::optional<int64_t> last; // the final recv result, while the handle is open
        if (!app_closed) {
            std::vector<uint8_t> buffer(65536);
            for (int i = 0; i < 10000; ++i) {
                const ssize_t rc = bounded_call("sansock_recv", documented::recv,
                                                [&] { return sansock_recv(s, buffer.data(), buffer.size(), 0); });
                recv_result("sansock_recv", rc, buffer.data(), buffer.size());
                if (rc > 0) continue;
                if (rc == -EWOULDBLOCK && round() > 0) continue;
                last = rc;
                break;
            }
            if (!last) die("the final read did not end");
            settle();
        }
        const bool open = !app_closed;
        const bool healthy_peer = !peer_closed && all_peer_bytes_delivered();
        trace("end: open %d, healthy raw end %d, reset seen %d, last recv %lld; raw stream %s%s (%s), %zu bytes of valid "
              "DATA; switch sent %llu DATA bytes, %llu credit, FIN %d", open, healthy_peer, saw_reset,
              last ? (long long)*last : 0LL, peer.invalid ? "invalid" : "valid", peer.maybe ? ", timing-dependent" : "",
              peer.why, peer.valid_payload.size(), (unsigned long long)back.data, (unsigned long long)back.credit, back.fin);
        if (open && *last == -ECONNRESET) saw_reset = true;
        if (open && peer_closed && *last == -EWOULDBLOCK)
            die("the raw end closed, yet recv still says -EWOULDBLOCK (a blocking reader would hang)");
        if (open && healthy_peer) {
            if (peer.invalid && !saw_reset) die("the raw end broke the protocol (%s) and the switch did not reset", peer.why);
            if (!saw_reset) {
                if (peer.data_total > uint64_t(window) + back.credit)
                    die("switch took %llu DATA bytes with a window of %u + %llu credit", (unsigned long long)peer.data_total,
                        window, (unsigned long long)back.credit);
                if (peer.credit_total > back.data)
                    die("switch took %llu bytes of CREDIT for %llu sent", (unsigned long long)peer.credit_total,
                        (unsigned long long)back.data);
                if (peer.fin_ack && !back.fin) die("switch took a FIN_ACK without having sent FIN");
                if (raw_saw_reset || raw->resets() != 0) die("the raw end saw a reset of a healthy open connection");
                if (peer.fin && !read_shut && *last != 0) die("the raw end sent FIN; the final recv gave %lld", (long long)*last);
                if (back.replies != peer.probes)
                    die("the raw end sent %llu KEEPALIVE probes, the switch answered %llu", (unsigned long long)peer.probes,
                        (unsigned long long)back.replies);
            }
        }
        if (open && abort_at_end) do_close(1, 0);
        if (int rc = sansock_context_destroy(ctx)) die("sansock_context_destroy: %d", rc);
        ctx = nullptr;
        // Every callback has run by now: check what the application read.
        std::vector<uint8_t> got;
        for (const read_slot& slot : slots) {
            if (slot.completions != 1) die("a recv completed %d times", slot.completions);
            got.insert(got.end(), slot.bytes.begin(), slot.bytes.end());
        }
        if (got.size() > peer.valid_payload.size())
            die("the application read %zu bytes; valid DATA carried %zu", got.size(), peer.valid_payload.size());
        for (size_t i = 0; i < got.size(); ++i)
            if (got[i] != peer.valid_payload[i]) die("byte %zu read is not byte %zu of the valid DATA", i, i);
        if (open && healthy_peer && !saw_reset && !read_shut && got.size() != peer.valid_payload.size())
            die("healthy connection: read %zu of %zu bytes of valid DATA", got.size(), peer.valid_payload.size());
    }
};

void one_input(const uint8_t* data, size_t size) {
    reader in{data, size};
    const uint8_t config = in.byte();
    run r;
    r.window = switch_windows[(config >> 2) & 3];
    r.peer.our_window = r.window;
    r.back.window = r.window;
    r.net = loopback::create_fabric();
    if (r.net == nullptr) die("create_fabric");
    r.raw = std::make_unique<raw_end>(r.net);

    sansock_context_attr attr;
    sansock_context_attr_init(&attr);
    attr.provider = SANSOCK_PROVIDER_LOOPBACK;
    attr.progress_mode = SANSOCK_PROGRESS_MANUAL;
    attr.window_bytes = r.window;
    attr.slot_size = 4096;
    attr.recv_slots = 4;
    attr.send_slots = 4;
    attr.graceful_timeout_ms = 1000;
    attr.keepalive = SANSOCK_KEEPALIVE_OFF; // the raw end answers no probe (see the top)
    attr.log_level = SANSOCK_LOG_DEBUG;
    attr.log = &log_sink;
    attr.log_user = &r.log_bytes;
    context_hooks hooks;
    hooks.provider_specific = r.net;
    hooks.now = [clock = &r.clock] { return clock->now(); };
    if (int rc = create_context(&attr, hooks, &r.ctx)) die("create_context: %d", rc);

    r.connect((config & 2) != 0);
    if (config & 1) {
        uint8_t hello[header_size];
        put_header(hello, t_hello, 0, hello_windows[(config >> 4) & 3]);
        r.peer_send(hello, sizeof hello);
    }
    while (!in.done()) {
        r.operation(in.byte(), in);
        if (config & 0x40) r.round();
    }
    r.finish((config & 0x80) != 0);
    r.raw.reset();
    if (int rc = loopback::destroy_fabric(r.net)) die("destroy_fabric: %d", rc);
}

} // namespace
} // namespace sansock::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    sansock::fuzz::one_input(data, size);
    return 0;
}

// SPDX-License-Identifier: MIT
// libFuzzer target: two switch sockets over the loopback provider (two contexts, manual
// progress, one fabric), driven by a sequence of operations from the input: sends and receives
// (plain and async), shutdown, close in each linger mode, options, poll, progress, the clock,
// and the provider's faults (freeze, drop, delayed completions, device down).
//
// Input: byte 0 configures, then each byte is an operation: bits 0-4 the operation, bit 5 the
// side (0: the connecting socket, 1: the accepted one), bits 6-7 an argument; some operations
// read operands after it. tests/fuzz/make-corpus writes the seeds in this format.
//   config bits 0-1, 2-3: the window of side 0, side 1 (4096, 16384, 65536, 262144 bytes)
//          bit 4: SO_SNDBUF 4096 on both sockets    bit 5: one progress round after every op
//          bit 6: accept with sansock_accept_async  bit 7: at the end, close both with {1, 0}
//   op 0  send (byte+1)*64 bytes       op 8  getsockopt (byte%8)  op 16 release_completions
//   op 1  send u16+1 bytes             op 9  poll both, timeout 0 op 17 device down (the side's
//   op 2  recv (byte+1)*64, arg&1 WAITALL op 10 (arg+1) rounds of progress     context)
//   op 3  send_async (byte+1)*32       op 11 progress of the side  op 18 the clock moves
//   op 4  recv_async (byte+1)*32       op 12 freeze                      (arg+1)*400 ms
//   op 5  shutdown (RD, WR, RDWR, 99)  op 13 unfreeze              op 19 blocking send, if it
//   op 6  close: {0}, {1,0}, {1,n} blocking, {1,n} nonblocking; n = 2   polls writable
//   op 7  setsockopt (byte%8)          op 14 drop the connection   op 20 blocking recv, if it
//                                      op 15 delay_completions(byte%4)    polls readable
//   op 21 settle (progress until quiet)   op 22 stats   ops 23-31: 23-25 send, 26-28 recv,
//                                                      29-31 progress (weights)
//
// Invariants (each aborts with a message): every call returns within its bound and a result
// sansock.h documents; bytes arrive in order and intact, with or without faults (what a side
// reads is a prefix of what the other sent; an async send cancelled by close is either wholly
// there or wholly missing); without faults and with both ends healthy, every byte arrives and
// then end of stream (freezes and delayed completions are undone before the end and count as
// no fault); a reset without faults only follows the peer's close; each async
// operation completes exactly once, never inside the call that started it; both contexts'
// destroy returns 0 and frees everything (ASan's leak check).
#include <sys/time.h>

#include <memory>
#include <optional>

#include "tests/fuzz/fuzz_support.hpp"

namespace sansock::fuzz {
namespace {

using namespace std::chrono_literals;

constexpr uint32_t windows[4] = {4096, 16384, 65536, 262144};
constexpr int max_chunks = 255; // per direction: chunk ids (their first bytes) stay distinct

// Byte k of chunk `id`: the first byte names the chunk, so a chunk that close cancelled (and
// that is therefore missing, or there whole) is told from the next one.
uint8_t chunk_byte(int id, size_t k) {
    return k == 0 ? uint8_t(id) : uint8_t(id * 131 + k * 7 + (k >> 8) * 13 + 1);
}

struct chunk {
    int id = 0;
    size_t length = 0;
    bool maybe = false; // an async send whose callback said -ECANCELED: sent whole, or not at all
};

struct async_op {
    struct side_state* owner = nullptr;
    bool send = false;
    std::vector<uint8_t> buffer;
    size_t length = 0;
    int completions = 0;
    int64_t result = 0;
    chunk* sent = nullptr; // send: its chunk
};

// What one side read, in the order the bytes were taken (see session_fuzz.cpp).
struct read_slot {
    std::vector<uint8_t> bytes;
    async_op* op = nullptr; // async: its bytes are in op->buffer once it completes
};

struct run;

struct side_state {
    run* r = nullptr;
    int index = 0;
    sansock_context* ctx = nullptr;
    sansock_socket_t s = 0;
    bool closed = false;        // the handle is released
    bool aborted = false;       // closed with {1, 0}, or a linger close timed out
    bool write_shut = false;    // shutdown(WR/RDWR) succeeded, or a graceful close
    bool read_shut = false;
    bool saw_reset = false;     // a call or callback gave -ECONNRESET or -ENETDOWN
    bool ended = false;         // a recv returned 0
    uint64_t sent_bytes = 0;    // accepted by send and send_async
    uint64_t read_bytes = 0;    // returned by recv and recv_async
    provider::socket_handle ps = 0; // the provider socket, kept to undo faults after a close
    std::deque<chunk> chunks;   // what this side sent, in order
    std::deque<read_slot> reads;
    std::deque<async_op> asyncs;
    size_t log_bytes = 0;
};

struct run {
    fuzz_clock clock;
    loopback::fabric* net = nullptr;
    side_state sides[2];
    bool faults = false;          // a fault was injected
    bool destructive = false;     // a connection was dropped or a device went down (freeze and
                                  // delayed completions are undone before the end: benign)
    bool tick_after_close = false;
    bool destroying = false;      // callbacks may report resets the contexts' destroy caused
    async_op* starting = nullptr; // the async op whose start call is running
    std::vector<uint8_t> buffer;

    side_state& peer_of(side_state& x) { return sides[1 - x.index]; }

    int round() {
        int events = 0;
        for (side_state& x : sides)
            if (x.ctx != nullptr)
                events += bounded_call("sansock_progress", {}, [&] { return sansock_progress(x.ctx, 0); });
        return events;
    }
    void settle() {
        int quiet = 0;
        for (int rounds = 0; quiet < 3; ++rounds) {
            if (rounds > 5000) die("no quiescence after 5000 progress rounds (a livelock)");
            quiet = round() == 0 ? quiet + 1 : 0;
        }
    }

    void expect_handle(side_state& x, const char* call, int64_t rc) {
        if (x.closed && rc != -ENOTSOCK) die("%s on a closed handle gave %lld, not -ENOTSOCK", call, (long long)rc);
        if (!x.closed && rc == -ENOTSOCK) die("%s on an open handle gave -ENOTSOCK", call);
    }

    // An error from a call or callback on a connection: a reset must have a cause.
    void note_error(side_state& x, const char* call, int64_t rc) {
        if (rc == -ENETDOWN && !destructive) die("%s: -ENETDOWN without a device going down", call);
        if (rc == -ECONNRESET || rc == -ENETDOWN) {
            x.saw_reset = true;
            const side_state& other = peer_of(x);
            if (!destructive && !other.closed && !x.closed && !destroying)
                die("%s on side %d: -ECONNRESET without a drop or device down, and the peer never closed", call, x.index);
        }
        if (rc == -ETIMEDOUT && !x.closed) die("%s: -ETIMEDOUT on an open socket", call);
    }

    void set_int(side_state& x, int name, int value) {
        const int rc = bounded_call("sansock_setsockopt", documented::setsockopt,
                                    [&] { return sansock_setsockopt(x.s, SOL_SOCKET, name, &value, sizeof value); });
        expect_handle(x, "sansock_setsockopt", rc);
    }

    chunk* new_chunk(side_state& x) {
        if (int(x.chunks.size()) >= max_chunks) return nullptr;
        chunk& c = x.chunks.emplace_back();
        c.id = int(x.chunks.size()) - 1;
        return &c;
    }

    void send(side_state& x, size_t length, bool blocking) {
        if (int(x.chunks.size()) >= max_chunks) return;
        const int id = int(x.chunks.size());
        buffer.resize(length);
        for (size_t k = 0; k < length; ++k) buffer[k] = chunk_byte(id, k);
        if (blocking) set_int(x, SANSOCK_SO_NONBLOCK, 0);
        const ssize_t rc = bounded_call(blocking ? "sansock_send (blocking, writable)" : "sansock_send", documented::send,
                                        [&] { return sansock_send(x.s, buffer.data(), length, 0); }, blocking ? 500ms : 2000ms);
        if (blocking) set_int(x, SANSOCK_SO_NONBLOCK, 1);
        expect_handle(x, "sansock_send", rc);
        note_error(x, "sansock_send", rc);
        if (rc > ssize_t(length)) die("sansock_send took %zd of %zu", rc, length);
        if (rc == -EPIPE && !x.write_shut) die("sansock_send gave -EPIPE before shutdown");
        if (blocking && rc == -EWOULDBLOCK) die("side %d polled writable, yet a blocking send waited", x.index);
        if (rc > 0) {
            chunk* c = new_chunk(x);
            c->length = size_t(rc);
            x.sent_bytes += uint64_t(rc);
        }
    }

    void recv(side_state& x, size_t length, int flags, bool blocking) {
        buffer.resize(length);
        if (blocking) set_int(x, SANSOCK_SO_NONBLOCK, 0);
        const ssize_t rc = bounded_call(blocking ? "sansock_recv (blocking, readable)" : "sansock_recv", documented::recv,
                                        [&] { return sansock_recv(x.s, buffer.data(), length, flags); }, blocking ? 500ms : 2000ms);
        if (blocking) set_int(x, SANSOCK_SO_NONBLOCK, 1);
        got_recv(x, rc, length, blocking);
    }

    void got_recv(side_state& x, ssize_t rc, size_t length, bool blocking = false) {
        expect_handle(x, "sansock_recv", rc);
        note_error(x, "sansock_recv", rc);
        if (rc > ssize_t(length)) die("sansock_recv returned %zd for %zu", rc, length);
        if (blocking && rc == -EWOULDBLOCK) die("side %d polled readable, yet a blocking recv waited", x.index);
        if (rc == 0) x.ended = true;
        if (rc > 0) {
            x.reads.push_back({std::vector<uint8_t>(buffer.begin(), buffer.begin() + rc), nullptr});
            x.read_bytes += uint64_t(rc);
        }
    }

    static void on_async(void* user, int64_t result) {
        auto* op = static_cast<async_op*>(user);
        side_state& x = *op->owner;
        if (x.r->starting == op) die("an async callback ran inside the call that started it");
        if (++op->completions != 1) die("an async %s completed twice", op->send ? "send" : "recv");
        check_result("async callback", result, documented::callback);
        op->result = result;
        if (result > int64_t(op->length)) die("async op of %zu completed %lld", op->length, (long long)result);
        if (op->send && result >= 0 && result != int64_t(op->length))
            die("send_async of %zu completed %lld", op->length, (long long)result);
        if (result < 0) x.r->note_error(x, "async callback", result);
        if (op->send && result == -ECANCELED) op->sent->maybe = true;
        if (!op->send && result == 0) x.ended = true;
        if (!op->send && result > 0) x.read_bytes += uint64_t(result);
    }

    void start_async(side_state& x, bool is_send, size_t length) {
        if (is_send && int(x.chunks.size()) >= max_chunks) return;
        async_op& op = x.asyncs.emplace_back();
        op.owner = &x;
        op.send = is_send;
        op.length = length;
        op.buffer.resize(length);
        const int id = int(x.chunks.size());
        if (is_send)
            for (size_t k = 0; k < length; ++k) op.buffer[k] = chunk_byte(id, k);
        starting = &op;
        const int rc = bounded_call(is_send ? "sansock_send_async" : "sansock_recv_async", documented::send_async, [&] {
            return is_send ? sansock_send_async(x.s, op.buffer.data(), length, &on_async, &op)
                           : sansock_recv_async(x.s, op.buffer.data(), length, &on_async, &op);
        });
        starting = nullptr;
        expect_handle(x, "async start", rc);
        note_error(x, "async start", rc);
        if (rc != 0) {
            if (op.completions != 0) die("an async start refused (%d) and called back", rc);
            op.completions = 1; // no callback follows
            op.result = rc;
            return;
        }
        if (is_send) {
            if (rc == 0 && x.write_shut) die("send_async accepted after shutdown");
            chunk* c = new_chunk(x);
            c->length = length;
            op.sent = c;
            x.sent_bytes += length;
        } else {
            x.reads.push_back({{}, &op});
        }
    }

    void close(side_state& x, int mode) {
        linger l{};
        if (mode == 0) set_int(x, SO_DONTLINGER, 1);
        else {
            l = {1, mode == 1 ? 0 : 2};
            expect_handle(x, "sansock_setsockopt", bounded_call("sansock_setsockopt", documented::setsockopt, [&] {
                              return sansock_setsockopt(x.s, SOL_SOCKET, SO_LINGER, &l, sizeof l);
                          }));
        }
        if (mode == 2) {
            set_int(x, SANSOCK_SO_NONBLOCK, 0);
            // The linger wait sees time pass: a second a reading, so a wait of n seconds makes
            // at most n - 1 progress calls. A wake makes the first return at once when nothing
            // is pending (manual progress would otherwise wait 10 ms for events).
            clock.step = 1000ms;
            loopback_ops.wake(provider_instance_of(x.ctx));
        }
        const int rc = bounded_call("sansock_close", documented::close, [&] { return sansock_close(x.s); });
        clock.step = 0ms;
        expect_handle(x, "sansock_close", rc);
        if (x.closed) return;
        if (rc == -EWOULDBLOCK && mode != 3) die("sansock_close gave -EWOULDBLOCK in linger mode %d", mode);
        if (rc == -ETIMEDOUT && mode != 2) die("sansock_close gave -ETIMEDOUT in linger mode %d", mode);
        // SO_LINGER {1, n}: the connection had failed with data not acknowledged.
        const bool failed = rc == -ECONNRESET || rc == -ENETDOWN;
        if (failed && mode < 2) die("sansock_close gave %d in linger mode %d", rc, mode);
        if (failed) note_error(x, "sansock_close", rc);
        if (rc == -EWOULDBLOCK) return; // the handle stays valid
        x.closed = true;
        if (mode == 1 || rc == -ETIMEDOUT || failed) x.aborted = true;
        else x.write_shut = true;
    }

    void fault(side_state& x, int what, reader& in) {
        provider::instance* inst = provider_instance_of(x.ctx);
        const provider::socket_handle ps = provider_socket_of(x.s); // 0 once closed
        if (ps != 0) x.ps = ps;
        int rc = 0;
        switch (what) {
        case 12: rc = loopback::freeze(inst, ps, true); break;
        case 13: rc = loopback::freeze(inst, ps, false); break;
        case 14: rc = loopback::drop_connection(inst, ps); break;
        case 15: rc = loopback::delay_completions(inst, ps, in.byte() % 4); break;
        case 16: rc = loopback::release_completions(inst, ps); break;
        case 17: rc = loopback::set_device_down(inst); break;
        }
        if (rc != 0 && rc != -ENOTSOCK && rc != -ENOTCONN) die("fault %d gave %d", what, rc);
        if (rc == 0) faults = true;
        if (rc == 0 && (what == 14 || what == 17)) destructive = true;
    }

    void operation(uint8_t c, reader& in) {
        int op = c & 31;
        side_state& x = sides[(c >> 5) & 1];
        const int arg = c >> 6;
        if (op >= 23) op = op <= 25 ? 0 : op <= 28 ? 2 : 10;
        trace("op %d side %d arg %d (at input byte %zu)", op, x.index, arg, in.pos - 1);
        switch (op) {
        case 0: send(x, (size_t(in.byte()) + 1) * 64, false); break;
        case 1: send(x, size_t(in.u16()) + 1, false); break;
        case 2: recv(x, (size_t(in.byte()) + 1) * 64, (arg & 1) != 0 ? MSG_WAITALL : 0, false); break;
        case 3: start_async(x, true, (size_t(in.byte()) + 1) * 32); break;
        case 4: start_async(x, false, (size_t(in.byte()) + 1) * 32); break;
        case 5: {
            const int how[4] = {SHUT_RD, SHUT_WR, SHUT_RDWR, 99};
            const int rc = bounded_call("sansock_shutdown", documented::shutdown, [&] { return sansock_shutdown(x.s, how[arg]); });
            expect_handle(x, "sansock_shutdown", rc);
            note_error(x, "sansock_shutdown", rc);
            if (arg == 3 && !x.closed && rc != -EINVAL) die("shutdown(99) gave %d, not -EINVAL", rc);
            if (rc == 0 && arg != 0) x.write_shut = true;
            if (rc == 0 && arg != 1) x.read_shut = true;
            break;
        }
        case 6: close(x, arg); break;
        case 7: {
            const uint8_t which = in.byte();
            const uint8_t value = in.byte();
            switch (which % 8) {
            case 0: set_int(x, SO_SNDBUF, (int(value) + 1) * 256); break;
            case 1: set_int(x, SO_RCVBUF, int(value) * 4096); break;
            case 2: {
                const linger l{value & 1, (value >> 1) % 2};
                expect_handle(x, "sansock_setsockopt", bounded_call("sansock_setsockopt", documented::setsockopt, [&] {
                                  return sansock_setsockopt(x.s, SOL_SOCKET, SO_LINGER, &l, sizeof l);
                              }));
                break;
            }
            case 3: set_int(x, SO_DONTLINGER, value & 1); break;
            case 4:
            case 5: {
                const timeval tv{0, suseconds_t(value) * 1000};
                const int name = which % 8 == 4 ? SO_RCVTIMEO : SO_SNDTIMEO;
                expect_handle(x, "sansock_setsockopt", bounded_call("sansock_setsockopt", documented::setsockopt, [&] {
                                  return sansock_setsockopt(x.s, SOL_SOCKET, name, &tv, sizeof tv);
                              }));
                break;
            }
            case 6: {
                const int rc = bounded_call("sansock_setsockopt", documented::setsockopt,
                                            [&] { return sansock_setsockopt(x.s, SOL_SOCKET, 0x7777, &value, 4); });
                if (!x.closed && rc != -ENOPROTOOPT) die("an unknown option gave %d", rc);
                break;
            }
            case 7: { // too short
                const int rc = bounded_call("sansock_setsockopt", documented::setsockopt,
                                            [&] { return sansock_setsockopt(x.s, SOL_SOCKET, SO_SNDBUF, &value, 1); });
                if (!x.closed && rc != -EINVAL) die("a short SO_SNDBUF gave %d", rc);
                break;
            }
            }
            break;
        }
        case 8: {
            const int names[8] = {SO_ERROR, SO_TYPE, SO_LINGER, SO_RCVBUF, SO_SNDBUF, SANSOCK_SO_NONBLOCK, SO_SNDTIMEO, SO_DONTLINGER};
            uint8_t value[32]{};
            socklen_t length = sizeof value;
            const int name = names[in.byte() % 8];
            const int rc = bounded_call("sansock_getsockopt", documented::getsockopt,
                                        [&] { return sansock_getsockopt(x.s, SOL_SOCKET, name, value, &length); });
            expect_handle(x, "sansock_getsockopt", rc);
            if (rc == 0 && name == SANSOCK_SO_NONBLOCK && std::memcmp(value, "\1\0\0\0", 4) != 0)
                die("the socket is no longer nonblocking");
            break;
        }
        case 9: {
            sansock_pollfd p[2] = {{sides[0].s, short(SANSOCK_POLLIN | (arg & 1 ? SANSOCK_POLLOUT : 0)), 0},
                                   {sides[1].s, short(SANSOCK_POLLIN | (arg & 2 ? SANSOCK_POLLOUT : 0)), 0}};
            // Each side's handle belongs to its own context: one at a time (a mix is -EINVAL).
            const bool both = (arg & 1) != 0 && (arg & 2) != 0;
            const int rc = bounded_call("sansock_poll", documented::poll, [&] { return sansock_poll(p, both ? 2 : 1, 0); });
            const bool mixed = both && !sides[0].closed && !sides[1].closed;
            if (mixed && rc != -EINVAL) die("poll of two contexts' sockets gave %d", rc);
            if (!mixed && rc != (p[0].revents != 0 ? 1 : 0) + (both && p[1].revents != 0 ? 1 : 0))
                die("sansock_poll returned %d with revents %x %x", rc, p[0].revents, p[1].revents);
            if (!mixed && sides[0].closed && p[0].revents != SANSOCK_POLLNVAL) die("poll of a closed handle: %x", p[0].revents);
            break;
        }
        case 10:
            for (int i = 0; i <= arg; ++i) round();
            break;
        case 11: bounded_call("sansock_progress", {}, [&] { return sansock_progress(x.ctx, 0); }); break;
        case 12:
        case 13:
        case 14:
        case 15:
        case 16:
        case 17: fault(x, op, in); break;
        case 18:
            clock.offset += std::chrono::milliseconds(400 * (arg + 1));
            if (sides[0].closed || sides[1].closed) tick_after_close = true;
            break;
        case 19:
        case 20: {
            const size_t length = (size_t(in.byte()) + 1) * 64;
            sansock_pollfd p{x.s, short(op == 19 ? SANSOCK_POLLOUT : SANSOCK_POLLIN), 0};
            if (x.closed || sansock_poll(&p, 1, 0) != 1 || (p.revents & p.events) == 0) break;
            const timeval tv{1, 0}; // only keeps a wrong answer from hanging the target
            sansock_setsockopt(x.s, SOL_SOCKET, op == 19 ? SO_SNDTIMEO : SO_RCVTIMEO, &tv, sizeof tv);
            if (op == 19) send(x, length, true);
            else recv(x, length, 0, true);
            break;
        }
        case 21: settle(); break;
        case 22: {
            struct sansock_context_stats stats{};
            stats.size = sizeof stats;
            if (int rc = sansock_context_stats(x.ctx, &stats)) die("sansock_context_stats %d", rc);
            if (stats.bytes_received < x.read_bytes)
                die("side %d read %llu bytes, its context counts %llu received", x.index, (unsigned long long)x.read_bytes,
                    (unsigned long long)stats.bytes_received);
            if (stats.bytes_sent > x.sent_bytes)
                die("side %d's context counts %llu bytes sent, the application sent %llu", x.index,
                    (unsigned long long)stats.bytes_sent, (unsigned long long)x.sent_bytes);
            break;
        }
        }
    }

    void connect(uint8_t config) {
        side_state& a = sides[0];
        side_state& b = sides[1];
        sansock_socket_t l = 0;
        if (sansock_socket(b.ctx, &l) != 0) die("sansock_socket");
        const sockaddr_in any = ipv4(0);
        if (sansock_bind(l, as_sockaddr(any), sizeof any) != 0) die("sansock_bind");
        if (sansock_listen(l, 4) != 0) die("sansock_listen");
        sockaddr_in bound{};
        socklen_t length = sizeof bound;
        if (sansock_getsockname(l, reinterpret_cast<sockaddr*>(&bound), &length) != 0) die("getsockname");
        if (sansock_socket(a.ctx, &a.s) != 0) die("sansock_socket");
        set_int(a, SANSOCK_SO_NONBLOCK, 1);
        const sockaddr_in to = ipv4(ntohs(bound.sin_port));
        int rc = bounded_call("sansock_connect", documented::connect, [&] { return sansock_connect(a.s, as_sockaddr(to), sizeof to); });
        if (rc != -EINPROGRESS) die("nonblocking connect gave %d", rc);
        const int one = 1;
        sansock_setsockopt(l, SOL_SOCKET, SANSOCK_SO_NONBLOCK, &one, sizeof one);
        struct accepted {
            int completions = 0;
            int64_t result = 0;
        } got;
        if (config & 0x40) {
            if (sansock_accept_async(l, [](void* user, int64_t result) {
                    auto* g = static_cast<accepted*>(user);
                    if (++g->completions != 1) die("accept_async completed twice");
                    g->result = result;
                }, &got) != 0)
                die("accept_async");
            for (int i = 0; i < 8 && got.completions == 0; ++i) round();
            if (got.completions != 1 || got.result <= 0) die("accept_async: %d completions, %lld", got.completions, (long long)got.result);
            b.s = sansock_socket_t(got.result);
        } else {
            rc = -EWOULDBLOCK;
            for (int i = 0; i < 8 && rc == -EWOULDBLOCK; ++i) {
                round();
                rc = bounded_call("sansock_accept", documented::accept, [&] { return sansock_accept(l, &b.s, nullptr, nullptr); });
            }
            if (rc != 0) die("accept gave %d", rc);
        }
        if (sansock_close(l) != 0) die("closing the listener");
        for (int i = 0; i < 4; ++i) round();
        sansock_pollfd p{a.s, SANSOCK_POLLOUT, 0};
        if (sansock_poll(&p, 1, 0) != 1 || (p.revents & SANSOCK_POLLOUT) == 0) die("connect did not finish: %x", p.revents);
        set_int(b, SANSOCK_SO_NONBLOCK, 1);
        if (config & 0x10) {
            set_int(a, SO_SNDBUF, 4096);
            set_int(b, SO_SNDBUF, 4096);
        }
    }

    // Reads what is left on both sides, with progress, until nothing moves.
    void drain() {
        for (int pass = 0;; ++pass) {
            if (pass > 10000) die("draining did not end");
            settle();
            bool moved = false;
            for (side_state& x : sides) {
                if (x.closed || x.read_shut) continue;
                for (;;) {
                    buffer.resize(65536);
                    const ssize_t rc = bounded_call("sansock_recv", documented::recv,
                                                    [&] { return sansock_recv(x.s, buffer.data(), buffer.size(), 0); });
                    got_recv(x, rc, 65536);
                    if (rc <= 0) break;
                    moved = true;
                }
            }
            if (!moved) return;
        }
    }

    // Matches what `to` read against the chunks `from` sent.
    void check_stream(side_state& from, side_state& to, bool complete) {
        std::vector<uint8_t> got;
        for (const read_slot& slot : to.reads) {
            if (slot.op == nullptr) {
                got.insert(got.end(), slot.bytes.begin(), slot.bytes.end());
            } else if (slot.op->result > 0) {
                got.insert(got.end(), slot.op->buffer.begin(), slot.op->buffer.begin() + slot.op->result);
            }
        }
        size_t at = 0;
        bool all = true; // every chunk that must be there is there whole
        for (const chunk& c : from.chunks) {
            if (c.maybe && (at >= got.size() || got[at] != uint8_t(c.id))) continue; // cancelled, not sent
            for (size_t k = 0; k < c.length; ++k, ++at) {
                if (at >= got.size()) {
                    all = false;
                    break;
                }
                if (got[at] != chunk_byte(c.id, k))
                    die("side %d read byte %zu wrong: %02x, expected byte %zu of chunk %d (%02x)", to.index, at, got[at], k,
                        c.id, chunk_byte(c.id, k));
            }
            if (!all) break;
        }
        if (at < got.size()) die("side %d read %zu bytes, more than side %d sent (%zu)", to.index, got.size(), from.index, at);
        trace("side %d -> side %d: %zu chunks, %zu bytes read, all there %d, must be complete %d, end of stream %d",
              from.index, to.index, from.chunks.size(), got.size(), all, complete, to.ended);
        if (complete && !all) die("side %d read %zu bytes; side %d sent more, and nothing was lost", to.index, got.size(), from.index);
        if (complete && all && from.write_shut && !to.ended) die("side %d never saw end of stream", to.index);
    }

    void finish(bool abort_at_end) {
        // Benign faults end: frozen connections thaw, held completions are released.
        // (The provider socket may outlive the handle: a graceful close goes on in the background.)
        for (side_state& x : sides) {
            if (x.ps == 0) continue;
            provider::instance* inst = provider_instance_of(x.ctx);
            if (int rc = loopback::freeze(inst, x.ps, false); rc != 0 && rc != -ENOTSOCK) die("unfreeze at the end: %d", rc);
            if (int rc = loopback::release_completions(inst, x.ps); rc != 0 && rc != -ENOTSOCK)
                die("release_completions at the end: %d", rc);
        }
        drain();
        // Every byte must arrive: no fault, the reader open and reading, the writer not reset,
        // and no reason for a reset (data towards a closed writer, a graceful time-out after a
        // close).
        bool complete[2];
        for (side_state& from : sides) {
            const side_state& to = peer_of(from);
            complete[from.index] = !destructive && !to.closed && !to.read_shut && !from.aborted && !to.saw_reset &&
                                   !tick_after_close && !(from.closed && to.sent_bytes > 0);
        }
        for (side_state& x : sides)
            if (abort_at_end && !x.closed) close(x, 1);
        destroying = true;
        for (side_state& x : sides) {
            if (int rc = sansock_context_destroy(x.ctx)) die("sansock_context_destroy: %d", rc);
            x.ctx = nullptr;
        }
        // Every callback has run.
        for (side_state& x : sides)
            for (const async_op& op : x.asyncs)
                if (op.completions != 1) die("an async %s completed %d times", op.send ? "send" : "recv", op.completions);
        for (side_state& from : sides) check_stream(from, peer_of(from), complete[from.index]);
    }
};

void one_input(const uint8_t* data, size_t size) {
    reader in{data, size};
    const uint8_t config = in.byte();
    run r;
    r.net = loopback::create_fabric();
    if (r.net == nullptr) die("create_fabric");
    for (int i = 0; i < 2; ++i) {
        side_state& x = r.sides[i];
        x.r = &r;
        x.index = i;
        sansock_context_attr attr;
        sansock_context_attr_init(&attr);
        attr.provider = SANSOCK_PROVIDER_LOOPBACK;
        attr.progress_mode = SANSOCK_PROGRESS_MANUAL;
        attr.window_bytes = windows[(config >> (2 * i)) & 3];
        attr.slot_size = 4096;
        attr.recv_slots = 4;
        attr.send_slots = 4;
        attr.graceful_timeout_ms = 1000;
        // A freeze with the clock moving for minutes would be a dead peer to keepalive, which
        // this target's model does not know; tests/switch/keepalive_test covers it.
        attr.keepalive = SANSOCK_KEEPALIVE_OFF;
        attr.log_level = SANSOCK_LOG_DEBUG;
        attr.log = &log_sink;
        attr.log_user = &x.log_bytes;
        context_hooks hooks;
        hooks.provider_specific = r.net;
        hooks.now = [clock = &r.clock] { return clock->now(); };
        if (int rc = create_context(&attr, hooks, &x.ctx)) die("create_context: %d", rc);
    }
    r.connect(config);
    while (!in.done()) {
        r.operation(in.byte(), in);
        if (config & 0x20) r.round();
    }
    r.finish((config & 0x80) != 0);
    if (int rc = loopback::destroy_fabric(r.net)) die("destroy_fabric: %d", rc);
}

} // namespace
} // namespace sansock::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    sansock::fuzz::one_input(data, size);
    return 0;
}

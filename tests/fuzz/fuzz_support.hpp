// SPDX-License-Identifier: MIT
// What the libFuzzer targets of tests/fuzz share: reading the input, the checks that abort
// (so that libFuzzer reports the input and the stack), the documented results of each call, a
// bound on every call's time, an injected clock, and a raw loopback provider end driven by
// hand (no thread: the target calls progress itself, so a run is deterministic).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>

#include <chrono>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <initializer_list>
#include <vector>

#include "provider/loopback/loopback.hpp"
#include "provider/provider.hpp"
#include "sansock/sansock.h"
#include "switch/context_hooks.hpp"
#include "tests/support/address.hpp"

namespace sansock::fuzz {

// A violated invariant: says which, and aborts (libFuzzer saves the input as crash-*).
[[noreturn, gnu::format(printf, 1, 2)]] inline void die(const char* format, ...) {
    va_list args;
    va_start(args, format);
    std::fprintf(stderr, "\nFUZZ INVARIANT VIOLATED: ");
    std::vfprintf(stderr, format, args);
    std::fprintf(stderr, "\n");
    va_end(args);
    std::abort();
}

// With SANSOCK_FUZZ_TRACE set, the targets say what each input does (to read a reproducer).
inline bool tracing() {
    static const bool on = std::getenv("SANSOCK_FUZZ_TRACE") != nullptr;
    return on;
}
[[gnu::format(printf, 1, 2)]] inline void trace(const char* format, ...) {
    if (!tracing()) return;
    va_list args;
    va_start(args, format);
    std::vfprintf(stderr, format, args);
    std::fprintf(stderr, "\n");
    va_end(args);
}

// The input, read front to back; past its end every read gives 0.
struct reader {
    const uint8_t* data;
    size_t size;
    size_t pos = 0;

    bool done() const { return pos >= size; }
    size_t left() const { return done() ? 0 : size - pos; }
    uint8_t byte() { return done() ? 0 : data[pos++]; }
    uint16_t u16() { return uint16_t(byte() | (uint16_t(byte()) << 8)); }
    // Up to n bytes from the input (fewer at its end).
    const uint8_t* take(size_t n, size_t* got) {
        *got = n < left() ? n : left();
        const uint8_t* p = data + pos;
        pos += *got;
        return p;
    }
};

// The context's clock (context_hooks::now): moves only when the target says, and by `step`
// on every reading while a blocking call must see time pass (a lingering close).
struct fuzz_clock {
    std::chrono::steady_clock::time_point base = std::chrono::steady_clock::now();
    std::chrono::milliseconds offset{0};
    std::chrono::milliseconds step{0};

    std::chrono::steady_clock::time_point now() {
        offset += step;
        return base + offset;
    }
};

// The negated errnos each call of sansock.h documents (besides -EINVAL for a NULL pointer,
// which every call may give). A result outside its call's list is a finding.
namespace documented {
inline const std::initializer_list<int> socket = {ENOMEM, EMFILE};
inline const std::initializer_list<int> bind = {ENOTSOCK, EAFNOSUPPORT, EINVAL, EADDRINUSE, EADDRNOTAVAIL};
inline const std::initializer_list<int> listen = {ENOTSOCK, EDESTADDRREQ, EINVAL};
inline const std::initializer_list<int> accept = {ENOTSOCK, EWOULDBLOCK, EINVAL, ECANCELED, ENETDOWN};
inline const std::initializer_list<int> connect = {ENOTSOCK,  EINPROGRESS, ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH,
                                                   EISCONN,   EALREADY,    EAFNOSUPPORT, ENETDOWN,  EINVAL};
inline const std::initializer_list<int> send = {ENOTSOCK, EWOULDBLOCK, ENOTCONN, EPIPE, ECONNRESET, ENETDOWN, EINVAL};
inline const std::initializer_list<int> recv = {ENOTSOCK, EWOULDBLOCK, ENOTCONN, ECONNRESET, ENETDOWN, EINVAL};
// The header lists only -ENOTCONN and -EINVAL; a reset socket gives its reset (-ECONNRESET,
// -ENETDOWN), as the other calls do (found by this target; the header does not say so).
inline const std::initializer_list<int> shutdown = {ENOTSOCK, ENOTCONN, EINVAL, ECONNRESET, ENETDOWN};
// The header does not list -EISCONN: SO_RCVBUF on a connected socket (found by this target).
inline const std::initializer_list<int> setsockopt = {ENOTSOCK, ENOPROTOOPT, EINVAL, EISCONN};
inline const std::initializer_list<int> getsockopt = {ENOTSOCK, ENOPROTOOPT, EINVAL};
// getsockname, getpeername: the header lists nothing but -ENOTSOCK; an unconnected or reset
// socket gives -ENOTCONN or its reset (found by this target).
inline const std::initializer_list<int> getname = {ENOTSOCK, EINVAL, ENOTCONN, ECONNRESET, ENETDOWN};
// SO_LINGER {1, n} on a connection that failed with data not acknowledged gives its failure.
inline const std::initializer_list<int> close = {ENOTSOCK, EWOULDBLOCK, ETIMEDOUT, ECONNRESET, ENETDOWN};
inline const std::initializer_list<int> poll = {EINVAL};
// send_async/recv_async: "a negated errno and no callback", the errors of send and recv.
inline const std::initializer_list<int> send_async = send;
inline const std::initializer_list<int> recv_async = recv;
// What a callback may report: the call's errors, and -ECANCELED (closed), -ETIMEDOUT (a linger
// or graceful time-out failed the connection).
inline const std::initializer_list<int> callback = {ECANCELED, ECONNRESET, ENETDOWN, ETIMEDOUT, EPIPE, ENOTCONN};
} // namespace documented

inline void check_result(const char* call, int64_t rc, std::initializer_list<int> allowed) {
    if (rc >= 0) return;
    for (int e : allowed)
        if (rc == -e) return;
    die("%s returned %lld (%s), which sansock.h does not document for it", call, static_cast<long long>(rc),
        sansock_strerror(static_cast<int>(rc)));
}

// Runs one sansock call, checks that it returned within `limit` and a documented result.
template <typename Call>
auto bounded_call(const char* name, std::initializer_list<int> allowed, Call&& call,
                  std::chrono::milliseconds limit = std::chrono::milliseconds(2000)) {
    const auto started = std::chrono::steady_clock::now();
    auto rc = call();
    const auto took = std::chrono::steady_clock::now() - started;
    if (took > limit)
        die("%s took %lld ms (bound %lld ms)", name,
            static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()),
            static_cast<long long>(limit.count()));
    check_result(name, static_cast<int64_t>(rc), allowed);
    return rc;
}

inline sockaddr_in ipv4(uint16_t port, const char* dotted = "10.9.0.1") { return test::ipv4(dotted, port); }
using test::as_sockaddr;

// Every log line the context gives is read (the formatting runs under the sanitizers).
inline void log_sink(void* user, int level, const char* message) {
    if (message == nullptr || level < SANSOCK_LOG_ERROR || level > SANSOCK_LOG_DEBUG)
        die("log call with level %d and message %p", level, static_cast<const void*>(message));
    *static_cast<size_t*>(user) += std::strlen(message);
}

// Little-endian session header fields, read independently of switch/session_protocol.cpp.
struct wire_header {
    uint16_t magic;
    uint8_t version;
    uint8_t type;
    uint32_t length;
    uint32_t value;
    uint32_t reserved;
};
inline uint32_t get32(const uint8_t* p) {
    return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
inline wire_header read_header(const uint8_t* p) {
    return {uint16_t(p[0] | p[1] << 8), p[2], p[3], get32(p + 4), get32(p + 8), get32(p + 12)};
}
inline constexpr uint8_t session_version = 2; // docs/protocol.md 2.6
inline void put_header(uint8_t* out, uint8_t type, uint32_t length, uint32_t value) {
    const uint8_t fixed[4] = {0x53, 0x53, session_version, type};
    std::memcpy(out, fixed, 4);
    for (int i = 0; i < 4; ++i) {
        out[4 + i] = uint8_t(length >> (8 * i));
        out[8 + i] = uint8_t(value >> (8 * i));
        out[12 + i] = 0;
    }
}
inline constexpr size_t header_size = 16;
inline constexpr uint8_t t_hello = 1, t_data = 2, t_credit = 3, t_fin = 4, t_fin_ack = 5, t_keepalive = 6;

// A provider end of its own on the fabric, driven by hand: no progress thread, so completions
// arrive only when the target calls progress().
class raw_end {
public:
    struct op {
        provider::operation o;
        std::vector<uint8_t> buffer;
        int completions = 0;
        int64_t result = 0;
    };

    explicit raw_end(loopback::fabric* net) : ops(provider::with_defaults(loopback_ops)) {
        provider::config c;
        c.provider_specific = net;
        c.slot_size = 4096;
        c.recv_slots = 4;
        provider::upcalls calls{this, &on_event, nullptr};
        if (int rc = ops.create(c, calls, &inst)) die("raw end: create %d", rc);
    }
    ~raw_end() {
        ops.destroy(inst); // completes what is pending (-ECANCELED) before ops_ go
        for (const op& t : ops_)
            if (t.completions != 1) die("raw end: an operation completed %d times", t.completions);
    }
    raw_end(const raw_end&) = delete;
    raw_end& operator=(const raw_end&) = delete;

    op& new_op(provider::operation_kind kind, size_t length) {
        op& t = ops_.emplace_back();
        t.buffer.resize(length);
        t.o.kind = kind;
        t.o.buffer = length != 0 ? t.buffer.data() : nullptr;
        t.o.length = length;
        t.o.complete = &on_complete;
        t.o.user = &t;
        return t;
    }
    int progress() {
        const int n = ops.progress(inst, 0);
        if (n < 0) die("raw end: progress %d", n);
        return n;
    }
    int resets() const { return resets_; }

    const provider::ops ops;
    provider::instance* inst = nullptr;
    provider::socket_handle s = 0;
    provider::socket_handle listener = 0;

private:
    static void on_complete(provider::operation& o) noexcept {
        auto* t = static_cast<op*>(o.user);
        if (++t->completions != 1) die("raw end: an operation completed twice");
        t->result = o.result;
    }
    static void on_event(void* context, provider::socket_handle, provider::connection_event, int) noexcept {
        ++static_cast<raw_end*>(context)->resets_;
    }

    int resets_ = 0;
    std::deque<op> ops_; // stable addresses until the instance is gone
};

} // namespace sansock::fuzz

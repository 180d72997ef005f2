// SPDX-License-Identifier: MIT
// The switch (the public socket API of include/sansock/sansock.h) over the verbs provider on a
// real device, with the other end of every connection in a separate process (this binary run
// again in a peer role): a 1 GiB stream checked at both ends and closed in each graceful mode,
// LINGER 0 resetting the peer, a stopped peer (every close mode and timed call still returns
// within its bound), a killed peer (the blocked receive fails -ECONNRESET), asynchronous
// callbacks, and SHUT_WR followed by a reply.
//
// The test process always listens (on test_address(), port 0) and passes the port to its peer.
// Every blocking call is bounded by SO_RCVTIMEO / SO_SNDTIMEO, and every case by a watchdog
// that ends the process (peers die with it: PR_SET_PDEATHSIG).
//
// SANSOCK_TEST_STREAM_MIB overrides the size of the big stream (default 1024) for quick runs.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "sansock/sansock.h"
#include "tests/support/bounded_time.hpp"
#include "tests/support/peer_process.hpp"
#include "tests/support/rdma_test_env.hpp"
#include "tests/support/address.hpp"
#include "tests/support/socket_options.hpp"

using namespace std::chrono_literals;
using namespace sansock::test;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

namespace {

// ---- bounds ---------------------------------------------------------------------------------

constexpr auto report_timeout = 120s;  // waiting for a peer's report line
constexpr int call_timeout_ms = 60000; // SO_RCVTIMEO / SO_SNDTIMEO of every blocking call
constexpr auto at_once = 1s;           // "returns at once" (the VM is an emulator: generous)

double seconds_since(steady_clock::time_point start) {
    return std::chrono::duration<double>(steady_clock::now() - start).count();
}

// ---- the data -------------------------------------------------------------------------------

// Byte `offset` of a stream: deterministic pseudo-random (splitmix64 of the 8-byte word
// index), the same however the stream is cut into pieces.
uint64_t mix(uint64_t k) {
    k += 0x9E3779B97F4A7C15ull;
    k = (k ^ (k >> 30)) * 0xBF58476D1CE4E5B9ull;
    k = (k ^ (k >> 27)) * 0x94D049BB133111EBull;
    return k ^ (k >> 31);
}

void fill_stream(uint8_t* out, uint64_t offset, size_t n, uint64_t seed = 0) {
    size_t i = 0;
    while (i < n) {
        const uint64_t position = offset + i;
        const uint64_t word = mix((position / 8) ^ seed);
        uint8_t bytes[8];
        std::memcpy(bytes, &word, sizeof bytes);
        const size_t first = position % 8;
        const size_t take = std::min<size_t>(8 - first, n - i);
        std::memcpy(out + i, bytes + first, take);
        i += take;
    }
}

std::vector<uint8_t> stream_bytes(uint64_t offset, size_t n, uint64_t seed = 0) {
    std::vector<uint8_t> v(n);
    fill_stream(v.data(), offset, n, seed);
    return v;
}

constexpr uint64_t fnv_basis = 0xcbf29ce484222325ull;
uint64_t fnv1a(uint64_t h, const uint8_t* p, size_t n) {
    for (size_t i = 0; i < n; ++i) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

constexpr uint64_t reply_seed = 0x5eed;   // the stream a peer sends back
constexpr size_t async_peer_bytes = 128 * 1024;

// ---- socket helpers (both sides) ------------------------------------------------------------

using sansock::test::ipv4;

using sansock::test::set_int_option;
using sansock::test::set_linger;
using sansock::test::set_nonblocking;
using sansock::test::set_timeout;
std::string text(long code) { return code < 0 ? sansock_strerror(static_cast<int>(code)) : std::to_string(code); }

// ---- the peer roles (child processes: no doctest assertions here) ---------------------------

// A peer's context and its connected socket.
struct peer_connection {
    sansock_context* ctx = nullptr;
    sansock_socket_t s = 0;

    ~peer_connection() {
        if (ctx != nullptr) sansock_context_destroy(ctx);
    }
    // Creates a verbs context and connects to args[0]:args[1]; reports `connected` or `error`.
    bool open(const std::vector<std::string>& args) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); // never outlive the test
        if (args.size() < 2) return fail("usage: ADDRESS PORT ...", 0);
        sansock_context_attr attr;
        sansock_context_attr_init(&attr);
        if (int rc = sansock_context_create(&attr, &ctx); rc < 0) {
            ctx = nullptr;
            return fail("context_create", rc);
        }
        if (int rc = sansock_socket(ctx, &s); rc < 0) return fail("socket", rc);
        const sockaddr_in to = ipv4(args[0], static_cast<uint16_t>(std::stoul(args[1])));
        if (int rc = sansock_connect(s, reinterpret_cast<const sockaddr*>(&to), sizeof to); rc < 0)
            return fail("connect", rc);
        set_timeout(s, SO_RCVTIMEO, 120000);
        set_timeout(s, SO_SNDTIMEO, 120000);
        report("connected", 1);
        return true;
    }
    static bool fail(const std::string& what, long rc) {
        report("error", what + ": " + text(rc));
        return false;
    }
    // After a graceful close: waits (bounded) until the connection is finished and its QP
    // gone, since destroying the context would reset a connection still closing (reported as
    // `qp_gone_ms`, -1 if it did not go), then destroys the context.
    int destroy_when_closed() {
        const auto started = steady_clock::now();
        while (rdma_resource_count_of_pid("qp", getpid()) != 0 && seconds_since(started) < 30)
            std::this_thread::sleep_for(20ms);
        report("qp_gone_ms", rdma_resource_count_of_pid("qp", getpid()) == 0
                                 ? static_cast<long>(seconds_since(started) * 1000) : -1L);
        return destroy();
    }
    int destroy() {
        const int rc = sansock_context_destroy(ctx);
        ctx = nullptr;
        return rc;
    }
};

struct drained {
    uint64_t bytes = 0;
    uint64_t fnv = fnv_basis;
    ssize_t last = 0;
};

// Receives until end of stream or an error, checksumming.
drained drain(sansock_socket_t s, size_t buffer_size = 1 << 20) {
    drained d;
    std::vector<uint8_t> buffer(buffer_size);
    for (;;) {
        const ssize_t r = sansock_recv(s, buffer.data(), buffer.size(), 0);
        d.last = r;
        if (r <= 0) return d;
        d.fnv = fnv1a(d.fnv, buffer.data(), static_cast<size_t>(r));
        d.bytes += static_cast<uint64_t>(r);
    }
}

ssize_t send_all(sansock_socket_t s, const uint8_t* data, size_t n) {
    size_t done = 0;
    while (done < n) {
        const ssize_t r = sansock_send(s, data + done, n - done, 0);
        if (r <= 0) return r < 0 ? r : -EIO;
        done += static_cast<size_t>(r);
    }
    return 0;
}

void report_drained(const std::string& prefix, const drained& d) {
    report(prefix + "bytes", std::to_string(d.bytes));
    report(prefix + "fnv", std::to_string(d.fnv));
    report(prefix + "last", static_cast<long>(d.last));
}

// Reads the stream to its end, reports what it got, then closes.
int stream_receiver(const std::vector<std::string>& args) {
    peer_connection c;
    if (!c.open(args)) return 1;
    const auto started = steady_clock::now();
    const drained d = drain(c.s);
    const double seconds = seconds_since(started);
    report_drained("", d);
    std::fprintf(stderr, "receiver: %.1f MiB in %.1f s (%.1f MB/s), then %s\n", d.bytes / 1048576.0, seconds,
                 d.bytes / 1e6 / seconds, d.last == 0 ? "end of stream" : sansock_strerror(static_cast<int>(d.last)));
    report("close", sansock_close(c.s));
    report("destroy", c.destroy_when_closed());
    return 0;
}

// Waits for one byte, then closes with SO_LINGER 0; stays alive (until killed) so the reset the
// test sees comes from the close, not from the process ending.
int linger0_closer(const std::vector<std::string>& args) {
    peer_connection c;
    if (!c.open(args)) return 1;
    uint8_t byte = 0;
    const ssize_t r = sansock_recv(c.s, &byte, 1, 0);
    if (r != 1) return peer_connection::fail("recv of the go byte", r), 1;
    if (int rc = set_linger(c.s, 1, 0); rc < 0) return peer_connection::fail("SO_LINGER", rc), 1;
    const auto started = steady_clock::now();
    const int rc = sansock_close(c.s);
    const auto took = std::chrono::duration_cast<std::chrono::microseconds>(steady_clock::now() - started);
    report("close_us", static_cast<long>(took.count()));
    report("close", rc);
    std::this_thread::sleep_for(300s);
    return 0;
}

// Connects, sends one byte, then does not touch the connection for args[2] ms (the test stops
// or kills it meanwhile); then reads what there is and reports how the connection ended.
int idle_peer(const std::vector<std::string>& args) {
    peer_connection c;
    if (!c.open(args) || args.size() < 3) return 1;
    const uint8_t ready = 'R';
    if (ssize_t r = sansock_send(c.s, &ready, 1, 0); r != 1) return peer_connection::fail("send", r), 1;
    report("ready", 1);
    std::this_thread::sleep_for(milliseconds(std::stol(args[2]))); // counts stopped time too
    set_timeout(c.s, SO_RCVTIMEO, 20000);
    const drained d = drain(c.s);
    report_drained("drain_", d);
    return 0;
}

// Waits for one byte, sends async_peer_bytes of the reply stream, reads to the end, closes.
int async_peer(const std::vector<std::string>& args) {
    peer_connection c;
    if (!c.open(args)) return 1;
    uint8_t byte = 0;
    if (ssize_t r = sansock_recv(c.s, &byte, 1, 0); r != 1) return peer_connection::fail("recv of the go byte", r), 1;
    const auto data = stream_bytes(0, async_peer_bytes, reply_seed);
    if (ssize_t r = send_all(c.s, data.data(), data.size()); r < 0) return peer_connection::fail("send", r), 1;
    const drained d = drain(c.s);
    report_drained("", d);
    report("close", sansock_close(c.s));
    report("destroy", c.destroy_when_closed());
    return 0;
}

// Reads to the end, then sends a reply of args[2] bytes, then closes.
int shutdown_peer(const std::vector<std::string>& args) {
    peer_connection c;
    if (!c.open(args) || args.size() < 3) return 1;
    const drained d = drain(c.s);
    report_drained("", d);
    const auto reply = stream_bytes(0, std::stoul(args[2]), reply_seed);
    report("reply", static_cast<long>(send_all(c.s, reply.data(), reply.size())));
    report("close", sansock_close(c.s));
    report("destroy", c.destroy_when_closed());
    return 0;
}

peer_role_registrar register_stream_receiver("switch-stream-receiver", stream_receiver);
peer_role_registrar register_linger0_closer("switch-linger0-closer", linger0_closer);
peer_role_registrar register_idle_peer("switch-idle-peer", idle_peer);
peer_role_registrar register_async_peer("switch-async-peer", async_peer);
peer_role_registrar register_shutdown_peer("switch-shutdown-peer", shutdown_peer);

// ---- the test side --------------------------------------------------------------------------

class verbs_context {
public:
    explicit verbs_context(uint32_t graceful_timeout_ms = 0) {
        sansock_context_attr attr;
        sansock_context_attr_init(&attr);
        REQUIRE(attr.provider == SANSOCK_PROVIDER_VERBS);
        if (graceful_timeout_ms != 0) attr.graceful_timeout_ms = graceful_timeout_ms;
        const int rc = sansock_context_create(&attr, &ctx_);
        INFO("sansock_context_create: " << text(rc));
        REQUIRE(rc == 0);
    }
    ~verbs_context() {
        if (ctx_ != nullptr) sansock_context_destroy(ctx_);
    }
    verbs_context(const verbs_context&) = delete;
    verbs_context& operator=(const verbs_context&) = delete;

    sansock_context* get() const { return ctx_; }
    int destroy() {
        const int rc = sansock_context_destroy(ctx_);
        ctx_ = nullptr;
        return rc;
    }

private:
    sansock_context* ctx_ = nullptr;
};

struct listening {
    sansock_socket_t s = 0;
    std::string port;
};

listening listen_on(sansock_context* ctx, const std::string& address) {
    listening l;
    REQUIRE(sansock_socket(ctx, &l.s) == 0);
    sockaddr_in a = ipv4(address, 0);
    REQUIRE(sansock_bind(l.s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(sansock_listen(l.s, 4) == 0);
    socklen_t length = sizeof a;
    REQUIRE(sansock_getsockname(l.s, reinterpret_cast<sockaddr*>(&a), &length) == 0);
    REQUIRE(ntohs(a.sin_port) != 0);
    l.port = std::to_string(ntohs(a.sin_port));
    REQUIRE(set_timeout(l.s, SO_RCVTIMEO, call_timeout_ms) == 0); // bounds accept
    return l;
}

std::string reported(const peer_process& p, const std::string& key) {
    auto it = p.reports().find(key);
    return it == p.reports().end() ? "(not reported)" : it->second;
}

// Accepts the peer's connection (bounded) and bounds the socket's blocking calls.
sansock_socket_t accept_peer(const listening& l, peer_process& peer) {
    REQUIRE(peer.started());
    sansock_socket_t s = 0;
    const int rc = sansock_accept(l.s, &s, nullptr, nullptr);
    INFO("accept: " << text(rc) << "; peer error: " << reported(peer, "error"));
    REQUIRE(rc == 0);
    REQUIRE(set_timeout(s, SO_RCVTIMEO, call_timeout_ms) == 0);
    REQUIRE(set_timeout(s, SO_SNDTIMEO, call_timeout_ms) == 0);
    return s;
}

long reported_number(peer_process& p, const std::string& key, milliseconds timeout = report_timeout) {
    auto value = p.wait_for(key, timeout);
    INFO("peer report " << key << " (peer error: " << reported(p, "error") << ")");
    REQUIRE(value.has_value());
    return std::stol(*value);
}

uint64_t stream_mib() {
    const char* v = std::getenv("SANSOCK_TEST_STREAM_MIB");
    return v != nullptr && std::atol(v) > 0 ? static_cast<uint64_t>(std::atol(v)) : 1024;
}

// Waits (bounded) until /proc says the process is stopped.
bool wait_stopped(pid_t pid, milliseconds limit) {
    const auto deadline = steady_clock::now() + limit;
    while (steady_clock::now() < deadline) {
        std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
        std::string line;
        std::getline(stat, line);
        const auto paren = line.rfind(')');
        if (paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'T') return true;
        std::this_thread::sleep_for(10ms);
    }
    return false;
}

// Sends with a nonblocking socket until -EWOULDBLOCK (the peer takes nothing); returns the bytes
// queued. Leaves the socket blocking.
uint64_t fill_until_full(sansock_socket_t s, uint64_t limit) {
    REQUIRE(set_nonblocking(s, true) == 0);
    std::vector<uint8_t> chunk(64 * 1024);
    uint64_t queued = 0;
    ssize_t r = 0;
    while (queued < limit) {
        fill_stream(chunk.data(), queued, chunk.size());
        r = sansock_send(s, chunk.data(), chunk.size(), 0);
        if (r <= 0) break;
        queued += static_cast<uint64_t>(r);
    }
    INFO("last send: " << text(r) << " after " << queued << " bytes");
    CHECK(r == SANSOCK_E_WOULDBLOCK);
    CHECK(queued < limit); // the send side pushes back when the peer does not read
    REQUIRE(set_nonblocking(s, false) == 0);
    return queued;
}

enum class close_mode { dontlinger, linger0, linger_blocking };

} // namespace

// SoftRoCE under the VM's emulator moves 4-8 MB/s with both ends checksumming, so 1 GiB takes
// 2-5 minutes: the full gibibyte runs once (DONTLINGER), the LINGER close follows 64 MiB.
TEST_CASE("A 1 GiB stream to another process arrives intact with equal checksums, and each graceful "
          "close mode then ends it cleanly") {
    const std::string address = test_address();
    close_mode mode = close_mode::dontlinger;
    uint64_t total = 0;
    SUBCASE("SO_DONTLINGER (the default), after 1 GiB: close returns 0 at once, the data still arrives") {
        mode = close_mode::dontlinger;
        total = stream_mib() << 20;
    }
    SUBCASE("SO_LINGER {1, 60} on a blocking socket, after 64 MiB: close returns 0 once everything is "
            "acknowledged") {
        mode = close_mode::linger_blocking;
        total = std::min<uint64_t>(stream_mib(), 64) << 20;
    }
    watchdog guard("the 1 GiB stream case", 8min); // 1 GiB took 290 s at 3.7 MB/s on a loaded host
    verbs_context ctx;
    listening l = listen_on(ctx.get(), address);
    peer_process peer("switch-stream-receiver", {address, l.port});
    sansock_socket_t s = accept_peer(l, peer);

    const auto started = steady_clock::now();
    std::vector<uint8_t> chunk(1 << 20);
    uint64_t fnv = fnv_basis, sent = 0;
    while (sent < total) {
        fill_stream(chunk.data(), sent, chunk.size());
        fnv = fnv1a(fnv, chunk.data(), chunk.size());
        const ssize_t r = send_all(s, chunk.data(), chunk.size());
        INFO("send at " << sent << ": " << text(r) << "; peer error: " << reported(peer, "error"));
        REQUIRE(r == 0);
        sent += chunk.size();
    }
    const double send_seconds = seconds_since(started);

    if (mode == close_mode::dontlinger) {
        int dontlinger = 0;
        socklen_t length = sizeof dontlinger;
        REQUIRE(sansock_getsockopt(s, SOL_SOCKET, SO_DONTLINGER, &dontlinger, &length) == 0);
        CHECK(dontlinger == 1); // the default
    } else {
        REQUIRE(set_linger(s, 1, 60) == 0);
    }
    const auto closing = steady_clock::now();
    const int closed = sansock_close(s);
    const double close_seconds = seconds_since(closing);
    CHECK(closed == 0);
    if (mode == close_mode::dontlinger) CHECK(close_seconds < std::chrono::duration<double>(at_once).count());
    else CHECK(close_seconds < 60.0);
    CHECK(sansock_send(s, chunk.data(), 1, 0) == SANSOCK_E_NOTSOCK);

    // The receiver reads everything, then end of stream, then closes.
    const int status = peer.wait_exit(report_timeout);
    const double total_seconds = seconds_since(started);
    MESSAGE((sent >> 20) << " MiB sent in " << send_seconds << " s (" << sent / 1e6 / send_seconds
                           << " MB/s); close took " << close_seconds << " s; the receiver done after "
                           << total_seconds << " s");
    INFO("peer error: " << reported(peer, "error"));
    CHECK(status == 0);
    CHECK(reported(peer, "bytes") == std::to_string(sent));
    CHECK(reported(peer, "fnv") == std::to_string(fnv));
    CHECK(reported(peer, "last") == "0");
    CHECK(reported(peer, "close") == "0");
    CHECK(reported(peer, "destroy") == "0");
    CHECK(reported(peer, "qp_gone_ms") != "-1"); // its graceful close finished
    // And ours, in the background: the connection's QP goes away.
    const auto waiting = steady_clock::now();
    while (rdma_resource_count_of_pid("qp", getpid()) != 0 && seconds_since(waiting) < 30)
        std::this_thread::sleep_for(50ms);
    CHECK(rdma_resource_count_of_pid("qp", getpid()) == 0);
    CHECK(sansock_close(l.s) == 0);
    CHECK(ctx.destroy() == 0);
}

TEST_CASE("SO_LINGER 0 in the other process: its close returns 0 at once, and our pending blocking "
          "receive, then our next send and receive, fail -ECONNRESET") {
    watchdog guard("the LINGER 0 case", 3min);
    const std::string address = test_address();
    verbs_context ctx;
    listening l = listen_on(ctx.get(), address);
    peer_process peer("switch-linger0-closer", {address, l.port});
    sansock_socket_t s = accept_peer(l, peer);
    REQUIRE(set_timeout(s, SO_RCVTIMEO, 30000) == 0);

    std::atomic<ssize_t> pending_result{1};
    std::atomic<bool> receiving{false};
    steady_clock::time_point returned_at;
    std::thread receiver([&] {
        uint8_t byte;
        receiving = true;
        pending_result = sansock_recv(s, &byte, 1, 0);
        returned_at = steady_clock::now();
    });
    while (!receiving) std::this_thread::sleep_for(1ms);
    std::this_thread::sleep_for(300ms); // the receive is blocked in the switch now
    CHECK(pending_result == 1);
    const uint8_t go = 'G';
    const auto sent_at = steady_clock::now();
    CHECK(sansock_send(s, &go, 1, 0) == 1);
    receiver.join(); // bounded by SO_RCVTIMEO
    const double reset_seconds = std::chrono::duration<double>(returned_at - sent_at).count();

    const long peer_closed = reported_number(peer, "close");
    CHECK(peer_closed == 0);
    const long close_us = std::stol(reported(peer, "close_us"));
    MESSAGE("the peer's LINGER 0 close took " << close_us << " us; our pending receive failed "
                                              << reset_seconds << " s after the go byte was sent");
    CHECK(close_us < std::chrono::duration_cast<std::chrono::microseconds>(at_once).count());
    INFO("pending receive: " << text(pending_result));
    CHECK(pending_result == SANSOCK_E_CONNRESET);
    uint8_t byte = 0;
    CHECK(sansock_send(s, &byte, 1, 0) == SANSOCK_E_CONNRESET);
    CHECK(sansock_recv(s, &byte, 1, 0) == SANSOCK_E_CONNRESET);
    CHECK(sansock_close(s) == 0);
    CHECK(sansock_close(l.s) == 0);
}

TEST_CASE("A stopped peer: every close mode and every timed call returns within its bound") {
    watchdog guard("the stopped-peer case", 3min);
    const std::string address = test_address();
    verbs_context ctx(2000); // graceful time-out 2 s
    listening l = listen_on(ctx.get(), address);
    peer_process peer("switch-idle-peer", {address, l.port, "5000"});
    sansock_socket_t s = accept_peer(l, peer);
    uint8_t ready = 0;
    REQUIRE(sansock_recv(s, &ready, 1, 0) == 1); // the peer's session is up
    REQUIRE(ready == 'R');
    REQUIRE(kill(peer.pid(), SIGSTOP) == 0);
    struct continue_at_end {
        pid_t pid;
        ~continue_at_end() { kill(pid, SIGCONT); }
    } resume{peer.pid()};
    REQUIRE(wait_stopped(peer.pid(), 5s));

    // After a reset the peer, continued, reads whatever had arrived and then -ECONNRESET.
    auto peer_sees_reset = [&] {
        REQUIRE(kill(peer.pid(), SIGCONT) == 0);
        const long last = reported_number(peer, "drain_last", 60s);
        INFO("the peer's last receive: " << text(last) << " after " << reported(peer, "drain_bytes") << " bytes");
        CHECK(last == SANSOCK_E_CONNRESET);
    };

    SUBCASE("SO_DONTLINGER: close returns 0 at once; the graceful time-out resets the connection later") {
        const uint64_t queued = fill_until_full(s, 8 << 20);
        REQUIRE(rdma_resource_count_of_pid("qp", getpid()) == 1);
        const auto closing = steady_clock::now();
        CHECK(sansock_close(s) == 0);
        const double close_seconds = seconds_since(closing);
        CHECK(close_seconds < std::chrono::duration<double>(at_once).count());
        // The connection lives on in the background until the graceful time-out ends it hard:
        // then its QP goes away.
        while (rdma_resource_count_of_pid("qp", getpid()) != 0 && seconds_since(closing) < 30)
            std::this_thread::sleep_for(100ms);
        const double gone_seconds = seconds_since(closing);
        MESSAGE(queued << " bytes queued; close took " << close_seconds << " s; the QP was gone after "
                       << gone_seconds << " s (graceful time-out 2 s)");
        CHECK(rdma_resource_count_of_pid("qp", getpid()) == 0);
        CHECK(gone_seconds >= 1.5);
        CHECK(gone_seconds < 30);
        peer_sees_reset();
        CHECK(sansock_close(l.s) == 0);
        const auto destroying = steady_clock::now();
        CHECK(ctx.destroy() == 0);
        CHECK(seconds_since(destroying) < 10);
    }
    SUBCASE("SO_LINGER 0: close returns 0 at once and resets the connection") {
        fill_until_full(s, 8 << 20);
        REQUIRE(set_linger(s, 1, 0) == 0);
        const auto closing = steady_clock::now();
        CHECK(sansock_close(s) == 0);
        CHECK(seconds_since(closing) < std::chrono::duration<double>(at_once).count());
        peer_sees_reset();
    }
    SUBCASE("SO_LINGER {1, 2}, blocking, data unsent: close returns -ETIMEDOUT after about 2 s") {
        const uint64_t queued = fill_until_full(s, 8 << 20);
        REQUIRE(set_linger(s, 1, 2) == 0);
        const auto closing = steady_clock::now();
        const int rc = sansock_close(s);
        const double close_seconds = seconds_since(closing);
        MESSAGE(queued << " bytes queued; close returned " << text(rc) << " after " << close_seconds << " s");
        CHECK(rc == SANSOCK_E_TIMED_OUT);
        CHECK(close_seconds >= 1.5);
        CHECK(close_seconds < 30);
        CHECK(sansock_close(s) == SANSOCK_E_NOTSOCK); // released either way
        peer_sees_reset();
    }
    SUBCASE("A blocked receive with SO_RCVTIMEO 2 s returns -EWOULDBLOCK") {
        REQUIRE(set_timeout(s, SO_RCVTIMEO, 2000) == 0);
        uint8_t byte;
        const auto receiving = steady_clock::now();
        const ssize_t r = sansock_recv(s, &byte, 1, 0);
        const double seconds = seconds_since(receiving);
        MESSAGE("recv returned " << text(r) << " after " << seconds << " s");
        CHECK(r == SANSOCK_E_WOULDBLOCK);
        CHECK(seconds >= 1.5);
        CHECK(seconds < 30);
    }
    SUBCASE("A blocked send with SO_SNDTIMEO 2 s returns -EWOULDBLOCK or a partial count") {
        fill_until_full(s, 8 << 20);
        REQUIRE(set_timeout(s, SO_SNDTIMEO, 2000) == 0);
        const auto more = stream_bytes(0, 1 << 20);
        const auto sending = steady_clock::now();
        const ssize_t r = sansock_send(s, more.data(), more.size(), 0);
        const double seconds = seconds_since(sending);
        MESSAGE("send returned " << text(r) << " after " << seconds << " s");
        CHECK((r == SANSOCK_E_WOULDBLOCK || (r > 0 && r < static_cast<ssize_t>(more.size()))));
        if (r == SANSOCK_E_WOULDBLOCK) CHECK(seconds >= 1.5);
        CHECK(seconds < 30);
    }
}

TEST_CASE("A killed peer: our blocked receive fails -ECONNRESET, then every close mode returns promptly") {
    watchdog guard("the killed-peer case", 3min);
    const std::string address = test_address();
    close_mode mode = close_mode::dontlinger;
    SUBCASE("SO_DONTLINGER: close returns 0") { mode = close_mode::dontlinger; }
    SUBCASE("SO_LINGER 0: close returns 0") { mode = close_mode::linger0; }
    SUBCASE("SO_LINGER {1, 5}, blocking, nothing unsent: close returns 0") { mode = close_mode::linger_blocking; }

    verbs_context ctx;
    listening l = listen_on(ctx.get(), address);
    peer_process peer("switch-idle-peer", {address, l.port, "600000"});
    sansock_socket_t s = accept_peer(l, peer);
    uint8_t byte = 0;
    REQUIRE(sansock_recv(s, &byte, 1, 0) == 1);

    const pid_t pid = peer.pid();
    std::thread killer([pid] {
        std::this_thread::sleep_for(500ms);
        kill(pid, SIGKILL);
    });
    const auto receiving = steady_clock::now();
    const ssize_t r = sansock_recv(s, &byte, 1, 0); // bounded: SO_RCVTIMEO 60 s
    const double seconds = seconds_since(receiving) - 0.5;
    killer.join();
    MESSAGE("the blocked receive returned " << text(r) << " " << seconds << " s after the SIGKILL");
    CHECK(r == SANSOCK_E_CONNRESET);
    CHECK(seconds < 30);
    CHECK(peer.wait_exit(10s) == 128 + SIGKILL);
    CHECK(sansock_recv(s, &byte, 1, 0) == SANSOCK_E_CONNRESET);

    if (mode == close_mode::linger0) REQUIRE(set_linger(s, 1, 0) == 0);
    if (mode == close_mode::linger_blocking) REQUIRE(set_linger(s, 1, 5) == 0);
    const auto closing = steady_clock::now();
    CHECK(sansock_close(s) == 0);
    CHECK(seconds_since(closing) < std::chrono::duration<double>(at_once).count());
    CHECK(sansock_close(l.s) == 0);
    const auto destroying = steady_clock::now();
    CHECK(ctx.destroy() == 0);
    CHECK(seconds_since(destroying) < 10);
}

namespace {

// One asynchronous operation's callbacks: how many, what result, and on which thread.
struct async_probe {
    std::thread::id caller = std::this_thread::get_id();
    std::atomic<int> calls{0};
    std::atomic<int64_t> result{0};
    std::atomic<bool> on_caller_thread{false};
    std::mutex mutex;
    std::condition_variable changed;

    static void callback(void* user, int64_t result) {
        auto* p = static_cast<async_probe*>(user);
        if (std::this_thread::get_id() == p->caller) p->on_caller_thread = true;
        {
            std::lock_guard lock(p->mutex);
            p->result = result;
            ++p->calls;
        }
        p->changed.notify_all();
    }
    bool wait(milliseconds timeout) {
        std::unique_lock lock(mutex);
        return changed.wait_for(lock, timeout, [this] { return calls.load() > 0; });
    }
};

} // namespace

TEST_CASE("Asynchronous receive and send over verbs: each calls back exactly once, never on the calling "
          "thread") {
    watchdog guard("the async case", 3min);
    const std::string address = test_address();
    verbs_context ctx;
    listening l = listen_on(ctx.get(), address);
    peer_process peer("switch-async-peer", {address, l.port});
    sansock_socket_t s = accept_peer(l, peer);
    std::vector<std::unique_ptr<async_probe>> probes;

    // A receive posted before anything can arrive (the peer waits for our go byte).
    std::vector<uint8_t> received(async_peer_bytes);
    size_t got = 0;
    {
        auto& p = *probes.emplace_back(std::make_unique<async_probe>());
        REQUIRE(sansock_recv_async(s, received.data(), 64 * 1024, async_probe::callback, &p) == 0);
        CHECK(p.calls == 0);
        const uint8_t go = 'G';
        REQUIRE(sansock_send(s, &go, 1, 0) == 1);
        REQUIRE(p.wait(60s));
        INFO("first receive: " << text(p.result));
        REQUIRE(p.result > 0);
        got += static_cast<size_t>(p.result.load());
    }
    // Receives satisfied at once from data already there: still called back from progress.
    int immediate = 0;
    while (got < received.size()) {
        sansock_pollfd pfd{s, SANSOCK_POLLIN, 0};
        REQUIRE(sansock_poll(&pfd, 1, 60000) == 1);
        std::this_thread::sleep_for(200ms); // let more arrive
        auto& p = *probes.emplace_back(std::make_unique<async_probe>());
        REQUIRE(sansock_recv_async(s, received.data() + got, received.size() - got, async_probe::callback, &p) == 0);
        REQUIRE(p.wait(60s));
        INFO("receive at " << got << ": " << text(p.result));
        REQUIRE(p.result > 0);
        got += static_cast<size_t>(p.result.load());
        ++immediate;
    }
    CHECK(got == received.size());
    CHECK(received == stream_bytes(0, received.size(), reply_seed));

    // Two sends queued back to back.
    const size_t send_size = 1 << 20;
    const auto out = stream_bytes(0, 2 * send_size);
    auto& first = *probes.emplace_back(std::make_unique<async_probe>());
    auto& second = *probes.emplace_back(std::make_unique<async_probe>());
    REQUIRE(sansock_send_async(s, out.data(), send_size, async_probe::callback, &first) == 0);
    REQUIRE(sansock_send_async(s, out.data() + send_size, send_size, async_probe::callback, &second) == 0);
    REQUIRE(first.wait(60s));
    REQUIRE(second.wait(60s));
    CHECK(first.result == static_cast<int64_t>(send_size));
    CHECK(second.result == static_cast<int64_t>(send_size));
    REQUIRE(sansock_shutdown(s, SHUT_WR) == 0);

    // The peer reads it all and closes: a receive then calls back with 0 (end of stream).
    const long peer_closed = reported_number(peer, "close");
    CHECK(peer_closed == 0);
    CHECK(reported(peer, "bytes") == std::to_string(2 * send_size));
    CHECK(reported(peer, "fnv") == std::to_string(fnv1a(fnv_basis, out.data(), out.size())));
    CHECK(reported(peer, "last") == "0");
    uint8_t byte;
    auto& end = *probes.emplace_back(std::make_unique<async_probe>());
    REQUIRE(sansock_recv_async(s, &byte, 1, async_probe::callback, &end) == 0);
    REQUIRE(end.wait(60s));
    const int64_t end_result = end.result;
    INFO("the last receive: " << text(end_result));
    CHECK(end_result == 0);

    std::this_thread::sleep_for(500ms); // a second callback would come by now
    MESSAGE(probes.size() << " asynchronous operations (" << immediate << " receives of data already there)");
    for (size_t i = 0; i < probes.size(); ++i) {
        INFO("operation " << i);
        CHECK(probes[i]->calls == 1);
        CHECK_FALSE(probes[i]->on_caller_thread);
    }
    CHECK(sansock_close(s) == 0);
    CHECK(sansock_close(l.s) == 0);
    CHECK(peer.wait_exit(60s) == 0);
    CHECK(reported(peer, "qp_gone_ms") != "-1"); // its graceful close finished
}

TEST_CASE("SHUT_WR over verbs: the peer reads everything then end of stream, then its reply arrives") {
    watchdog guard("the shutdown case", 3min);
    const std::string address = test_address();
    constexpr size_t request_size = 16 << 20, reply_size = 256 * 1024 + 17;
    verbs_context ctx;
    listening l = listen_on(ctx.get(), address);
    peer_process peer("switch-shutdown-peer", {address, l.port, std::to_string(reply_size)});
    sansock_socket_t s = accept_peer(l, peer);

    const auto request = stream_bytes(0, request_size);
    REQUIRE(send_all(s, request.data(), request.size()) == 0);
    REQUIRE(sansock_shutdown(s, SHUT_WR) == 0);
    CHECK(sansock_shutdown(s, SHUT_WR) == 0); // harmless
    CHECK(sansock_send(s, request.data(), 1, 0) == -EPIPE);

    std::vector<uint8_t> reply;
    std::vector<uint8_t> buffer(100000);
    ssize_t r;
    while ((r = sansock_recv(s, buffer.data(), buffer.size(), 0)) > 0) // bounded: SO_RCVTIMEO
        reply.insert(reply.end(), buffer.data(), buffer.data() + r);
    INFO("last receive: " << text(r) << "; peer error: " << reported(peer, "error"));
    CHECK(r == 0);
    CHECK(reply.size() == reply_size);
    CHECK(reply == stream_bytes(0, reply_size, reply_seed));

    CHECK(peer.wait_exit(60s) == 0);
    CHECK(reported(peer, "bytes") == std::to_string(request_size));
    CHECK(reported(peer, "fnv") == std::to_string(fnv1a(fnv_basis, request.data(), request.size())));
    CHECK(reported(peer, "last") == "0");
    CHECK(reported(peer, "reply") == "0");
    CHECK(reported(peer, "close") == "0");
    CHECK(reported(peer, "qp_gone_ms") != "-1"); // its graceful close finished
    CHECK(sansock_close(s) == 0);
    CHECK(sansock_close(l.s) == 0);
}

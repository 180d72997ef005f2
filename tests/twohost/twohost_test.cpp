// SPDX-License-Identifier: MIT
// Two hosts: sansock's public API between two QEMU guests, each its own kernel with SoftRoCE
// (rxe0 on eth0), joined by an emulated link (tests/vm/run-two-guests). The test cases run on
// the host as drivers: they start this same binary in a role (`--peer ROLE key=value...`) in
// host A (10.1.0.1, always the listening side and the survivor) and host B (10.1.0.2), through
// tests/vm/guest-ctl, and check the `key=value` lines the roles print. A driver can kill host B
// outright (its QEMU: host death, nothing reaches A any more), cut the link or make it lossy
// and slow (netem in both guests).
//
// Without SANSOCK_TWOHOST_CTL (the runner's control directory) the binary exits 77 (SKIP).
// SANSOCK_TWOHOST_MIB sets the size of the checksummed transfer each way (default 64),
// SANSOCK_TWOHOST_LOSS_MIB that of the lossy one (default 1). docs/testing.md, "Two hosts",
// says what each case shows.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <sstream>
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

double seconds_since(steady_clock::time_point start) {
    return std::chrono::duration<double>(steady_clock::now() - start).count();
}
long ms_since(steady_clock::time_point start) { return static_cast<long>(seconds_since(start) * 1000); }
std::string text(long code) { return code < 0 ? sansock_strerror(static_cast<int>(code)) : std::to_string(code); }

// ---- the data: a deterministic stream per direction, and a running checksum ------------------

uint64_t mix(uint64_t k) {
    k += 0x9E3779B97F4A7C15ull;
    k = (k ^ (k >> 30)) * 0xBF58476D1CE4E5B9ull;
    k = (k ^ (k >> 27)) * 0x94D049BB133111EBull;
    return k ^ (k >> 31);
}

// Byte `offset` of the stream `seed`, however the stream is cut into pieces.
void fill_stream(uint8_t* out, uint64_t offset, size_t n, uint64_t seed) {
    size_t i = 0;
    while (i < n) {
        const uint64_t position = offset + i;
        const uint64_t word = mix((position / 8) ^ (seed << 48));
        const size_t first = position % 8;
        const size_t take = std::min<size_t>(8 - first, n - i);
        std::memcpy(out + i, reinterpret_cast<const uint8_t*>(&word) + first, take);
        i += take;
    }
}

constexpr uint64_t fnv_basis = 0xcbf29ce484222325ull;
uint64_t fnv1a(uint64_t h, const uint8_t* p, size_t n) {
    for (size_t i = 0; i < n; ++i) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

constexpr uint64_t seed_a = 0xA, seed_b = 0xB; // what A sends, what B sends
constexpr size_t chunk_size = 256 * 1024;

// =============================================================================================
// The guest side: roles. No doctest here; every outcome is reported, the driver judges.
// =============================================================================================

// key=value arguments.
class role_args {
public:
    explicit role_args(const std::vector<std::string>& args) {
        for (const auto& a : args)
            if (auto eq = a.find('='); eq != std::string::npos) values_[a.substr(0, eq)] = a.substr(eq + 1);
    }
    std::string str(const std::string& key, const std::string& otherwise = "") const {
        auto it = values_.find(key);
        return it == values_.end() ? otherwise : it->second;
    }
    long num(const std::string& key, long otherwise = 0) const {
        auto it = values_.find(key);
        return it == values_.end() ? otherwise : std::stol(it->second);
    }

private:
    std::map<std::string, std::string> values_;
};

// A set-up step failed: the role reports `error=` and exits 1.
struct role_failure {
    std::string what;
};
void must(long rc, const std::string& what) {
    if (rc < 0) throw role_failure{what + ": " + text(rc)};
}

using sansock::test::set_int_option;
using sansock::test::set_linger;
using sansock::test::set_timeout;
void set_call_timeouts(sansock_socket_t s, long ms) {
    must(set_timeout(s, SO_RCVTIMEO, ms), "SO_RCVTIMEO");
    must(set_timeout(s, SO_SNDTIMEO, ms), "SO_SNDTIMEO");
}
using sansock::test::ipv4;
std::string env(const char* name) {
    const char* v = std::getenv(name);
    return v != nullptr ? v : "";
}

// What this process holds on the device, and what its context has registered.
struct resources {
    long qp = 0, cq = 0, mr = 0, cm_id = 0;
    uint64_t registered = 0;
    bool operator==(const resources&) const = default;
    std::string describe() const {
        std::ostringstream o;
        o << "qp " << qp << " cq " << cq << " mr " << mr << " cm_id " << cm_id << " registered " << registered;
        return o.str();
    }
};

struct sansock_context_stats stats_of(sansock_context* ctx) {
    struct sansock_context_stats st{};
    st.size = sizeof st;
    sansock_context_stats(ctx, &st);
    return st;
}

// The objects of `type` that this process's threads created, from `rdma resource show TYPE`.
// A listing that fails (the tool's dump can be interrupted while objects come and go) is tried
// again; -1 if it keeps failing, which no comparison takes for a count.
long device_objects(const std::string& type) {
    std::vector<std::string> needles{" pid " + std::to_string(getpid()) + " "};
    const std::string tasks = "/proc/self/task";
    if (DIR* dir = opendir(tasks.c_str())) {
        while (dirent* entry = readdir(dir))
            if (entry->d_name[0] != '.') needles.push_back(std::string(" pid ") + entry->d_name + " ");
        closedir(dir);
    }
    for (int attempt = 0; attempt < 5; ++attempt) {
        FILE* pipe = popen(("rdma resource show " + type + " 2>/dev/null").c_str(), "r");
        if (pipe == nullptr) continue;
        std::string listing;
        char buffer[4096];
        size_t n;
        while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) listing.append(buffer, n);
        if (pclose(pipe) != 0) {
            std::this_thread::sleep_for(100ms);
            continue;
        }
        std::istringstream lines(listing);
        std::string line;
        long count = 0;
        while (std::getline(lines, line)) {
            line += " ";
            for (const auto& needle : needles)
                if (line.find(needle) != std::string::npos) {
                    ++count;
                    break;
                }
        }
        return count;
    }
    return -1;
}

resources resources_now(sansock_context* ctx) {
    resources r;
    r.qp = device_objects("qp");
    r.cq = device_objects("cq");
    r.mr = device_objects("mr");
    r.cm_id = device_objects("cm_id");
    if (ctx != nullptr) r.registered = stats_of(ctx).registered_bytes;
    return r;
}

// The RC transport's retries on this guest's rxe0 so far (device-wide counters): timeouts
// retried (completer_retry_err) and requests failed for running out of them
// (retry_exceeded_err).
struct transport_retries {
    long retried = 0, exceeded = 0;
};
transport_retries transport_retries_now() {
    std::istringstream words(command_output("rdma statistic show link rxe0/1 2>/dev/null"));
    transport_retries t;
    std::string word, previous;
    while (words >> word) {
        if (previous == "completer_retry_err") t.retried = std::stol(word);
        if (previous == "retry_exceeded_err") t.exceeded = std::stol(word);
        previous = word;
    }
    return t;
}

// A role's context, on the guest's own address.
class endpoint {
public:
    explicit endpoint(uint32_t graceful_timeout_ms = 0) {
        sansock_context_attr attr;
        sansock_context_attr_init(&attr);
        if (graceful_timeout_ms != 0) attr.graceful_timeout_ms = graceful_timeout_ms;
        must(sansock_context_create(&attr, &ctx), "sansock_context_create");
    }
    ~endpoint() {
        if (ctx != nullptr) sansock_context_destroy(ctx);
    }
    endpoint(const endpoint&) = delete;
    endpoint& operator=(const endpoint&) = delete;

    // Listens on this guest's address, port 0; announce() then reports `port=` (the driver
    // starts host B's side once it has the port).
    void listen() {
        must(sansock_socket(ctx, &listener), "socket");
        sockaddr_in a = ipv4(env("SANSOCK_TWOHOST_SELF"), 0);
        must(sansock_bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof a), "bind");
        must(sansock_listen(listener, 8), "listen");
        socklen_t length = sizeof a;
        must(sansock_getsockname(listener, reinterpret_cast<sockaddr*>(&a), &length), "getsockname");
        must(set_timeout(listener, SO_RCVTIMEO, 180000), "SO_RCVTIMEO on the listener"); // bounds accept
        port = ntohs(a.sin_port);
    }
    void announce() const { report("port", port); }
    sansock_socket_t accept(long call_ms) {
        sansock_socket_t s = 0;
        must(sansock_accept(listener, &s, nullptr, nullptr), "accept");
        set_call_timeouts(s, call_ms);
        return s;
    }
    // Connects to the other guest's `port`.
    sansock_socket_t connect(long port, long call_ms) {
        sansock_socket_t s = 0;
        must(sansock_socket(ctx, &s), "socket");
        const sockaddr_in to = ipv4(env("SANSOCK_TWOHOST_PEER"), static_cast<uint16_t>(port));
        must(sansock_connect(s, reinterpret_cast<const sockaddr*>(&to), sizeof to), "connect");
        set_call_timeouts(s, call_ms);
        return s;
    }
    // Waits (bounded) until what the process holds equals `target`; reports `PREFIX_ms` (-1:
    // not within `limit`) and `PREFIX` (what it holds then).
    bool wait_resources(const resources& target, const std::string& prefix, milliseconds limit) {
        const auto start = steady_clock::now();
        resources now = resources_now(ctx);
        while (!(now == target) && steady_clock::now() - start < limit) {
            std::this_thread::sleep_for(100ms);
            now = resources_now(ctx);
        }
        const bool back = now == target;
        report(prefix + "_ms", back ? ms_since(start) : -1L);
        report(prefix, now.describe());
        return back;
    }
    // Closes the listener, destroys the context and reports how long that took and what the
    // process still holds on the device afterwards (`after_destroy`).
    void destroy() {
        if (listener != 0) sansock_close(listener);
        const auto start = steady_clock::now();
        const int rc = sansock_context_destroy(ctx);
        ctx = nullptr;
        report("destroy", rc);
        report("destroy_ms", ms_since(start));
        report("after_destroy", resources_now(nullptr).describe());
    }

    sansock_context* ctx = nullptr;
    sansock_socket_t listener = 0;
    long port = 0;
};

// Receives until end of stream or an error, checking every byte against stream `seed`.
struct received {
    uint64_t bytes = 0;
    uint64_t fnv = fnv_basis;
    long first_bad = -1;   // offset of the first byte that differs from the stream
    long last = 0;         // the receive that ended it: 0 (end of stream) or an error
    double last_call_s = 0; // how long that receive took
    steady_clock::time_point ended;
};
received receive_stream(sansock_socket_t s, uint64_t seed, uint64_t mark = 0, uint64_t limit = UINT64_MAX) {
    received d;
    std::vector<uint8_t> buffer(chunk_size), expected(chunk_size);
    bool marked = false;
    while (d.bytes < limit) {
        const auto call = steady_clock::now();
        const ssize_t r = sansock_recv(s, buffer.data(), std::min<uint64_t>(buffer.size(), limit - d.bytes), 0);
        if (r <= 0) {
            d.last = r;
            d.last_call_s = seconds_since(call);
            break;
        }
        fill_stream(expected.data(), d.bytes, static_cast<size_t>(r), seed);
        if (d.first_bad < 0 && std::memcmp(buffer.data(), expected.data(), static_cast<size_t>(r)) != 0)
            for (ssize_t i = 0; i < r; ++i)
                if (buffer[i] != expected[i]) {
                    d.first_bad = static_cast<long>(d.bytes) + i;
                    break;
                }
        d.fnv = fnv1a(d.fnv, buffer.data(), static_cast<size_t>(r));
        d.bytes += static_cast<uint64_t>(r);
        if (mark != 0 && !marked && d.bytes >= mark) {
            report("mark", 1);
            marked = true;
        }
    }
    d.ended = steady_clock::now();
    return d;
}
void report_received(const std::string& prefix, const received& d) {
    report(prefix + "bytes", std::to_string(d.bytes));
    report(prefix + "fnv", std::to_string(d.fnv));
    report(prefix + "first_bad", d.first_bad);
    report(prefix + "last", d.last);
    report(prefix + "last_call_ms", static_cast<long>(d.last_call_s * 1000));
}

// Sends `total` bytes of stream `seed` (UINT64_MAX: until an error), with a running checksum;
// at most `pace` bytes a second if it is not 0.
struct sent {
    uint64_t bytes = 0;
    uint64_t fnv = fnv_basis;
    long rc = 0;            // 0, or the send that failed
    double last_call_s = 0; // how long that send took
    steady_clock::time_point ended;
};
sent send_stream(sansock_socket_t s, uint64_t seed, uint64_t total, uint64_t pace = 0) {
    sent d;
    std::vector<uint8_t> buffer(chunk_size);
    const auto start = steady_clock::now();
    while (d.bytes < total) {
        if (pace != 0)
            std::this_thread::sleep_until(start + std::chrono::microseconds(d.bytes * 1000000 / pace));
        const size_t n = static_cast<size_t>(std::min<uint64_t>(buffer.size(), total - d.bytes));
        fill_stream(buffer.data(), d.bytes, n, seed);
        size_t done = 0;
        while (done < n) {
            const auto call = steady_clock::now();
            const ssize_t r = sansock_send(s, buffer.data() + done, n - done, 0);
            if (r <= 0) {
                d.rc = r < 0 ? r : -EIO;
                d.last_call_s = seconds_since(call);
                d.ended = steady_clock::now();
                return d;
            }
            d.fnv = fnv1a(d.fnv, buffer.data() + done, static_cast<size_t>(r));
            done += static_cast<size_t>(r);
            d.bytes += static_cast<uint64_t>(r);
        }
    }
    d.ended = steady_clock::now();
    return d;
}
void report_sent(const std::string& prefix, const sent& d) {
    report(prefix + "bytes", std::to_string(d.bytes));
    report(prefix + "fnv", std::to_string(d.fnv));
    report(prefix + "rc", d.rc);
    report(prefix + "last_call_ms", static_cast<long>(d.last_call_s * 1000));
}

// Queues stream `seed` with a nonblocking socket until -EWOULDBLOCK (the peer does not read);
// returns the bytes queued and leaves the socket blocking.
uint64_t fill_until_full(sansock_socket_t s, uint64_t seed) {
    must(set_int_option(s, SANSOCK_SO_NONBLOCK, 1), "nonblocking");
    std::vector<uint8_t> chunk(64 * 1024);
    uint64_t queued = 0;
    ssize_t r = 0;
    const auto start = steady_clock::now();
    while (queued < (64u << 20) && seconds_since(start) < 60) {
        fill_stream(chunk.data(), queued, chunk.size(), seed);
        r = sansock_send(s, chunk.data(), chunk.size(), 0);
        if (r == SANSOCK_E_WOULDBLOCK) {
            // Let the credits in flight settle, then check that it is really full.
            std::this_thread::sleep_for(200ms);
            fill_stream(chunk.data(), queued, chunk.size(), seed);
            r = sansock_send(s, chunk.data(), chunk.size(), 0);
            if (r == SANSOCK_E_WOULDBLOCK) break;
        }
        if (r <= 0) must(r < 0 ? r : -EIO, "filling the send buffer");
        // A partial send took the first r bytes of the chunk: the stream stays contiguous.
        queued += static_cast<uint64_t>(r);
    }
    must(set_int_option(s, SANSOCK_SO_NONBLOCK, 0), "blocking");
    return queued;
}

uint8_t recv_byte(sansock_socket_t s) {
    uint8_t b = 0;
    const ssize_t r = sansock_recv(s, &b, 1, 0);
    must(r == 1 ? 0 : (r < 0 ? r : -EIO), "receiving the ready byte");
    return b;
}
void send_byte(sansock_socket_t s, uint8_t b) {
    const ssize_t r = sansock_send(s, &b, 1, 0);
    must(r == 1 ? 0 : (r < 0 ? r : -EIO), "sending the ready byte");
}

[[noreturn]] void sleep_forever() {
    for (;;) std::this_thread::sleep_for(1h);
}

// ---- the roles -------------------------------------------------------------------------------

// Both directions at once: `bytes` of stream A->B and B->A, each checked byte by byte with a
// running checksum, then SHUT_WR after the last byte, end of stream, a graceful close.
// side=server (host A: listens, reports port=) or side=client port=N (host B). call_ms bounds
// every call (SO_RCVTIMEO/SO_SNDTIMEO); mark=N reports mark=1 once N bytes have arrived;
// pace=N sends at most N bytes a second (so that a fault the driver injects after the mark
// meets the streams still running, however fast the machine is).
int role_stream(const role_args& a) {
    watchdog guard("the stream role", std::chrono::seconds(a.num("limit_s", 1200)));
    const bool server = a.str("side") == "server";
    const uint64_t bytes = static_cast<uint64_t>(a.num("bytes"));
    const long call_ms = a.num("call_ms", 60000);
    endpoint e;
    if (server) {
        e.listen();
        e.announce();
    }
    const sansock_socket_t s = server ? e.accept(call_ms) : e.connect(a.num("port"), call_ms);
    report("connected", 1);
    const auto start = steady_clock::now();
    sent out;
    std::thread sender([&] {
        out = send_stream(s, server ? seed_a : seed_b, bytes, static_cast<uint64_t>(a.num("pace", 0)));
        if (out.rc == 0) out.rc = sansock_shutdown(s, SHUT_WR);
    });
    const received in = receive_stream(s, server ? seed_b : seed_a, static_cast<uint64_t>(a.num("mark", 0)));
    sender.join();
    const double seconds = seconds_since(start);
    report_sent("sent_", out);
    report_received("recv_", in);
    report("seconds", std::to_string(seconds));
    report("send_ended_ms", static_cast<long>(std::chrono::duration<double>(out.ended - start).count() * 1000));
    report("recv_ended_ms", static_cast<long>(std::chrono::duration<double>(in.ended - start).count() * 1000));
    std::fprintf(stderr, "stream (%s): sent %.1f MiB (%s), received %.1f MiB (%s) in %.1f s: %.2f MB/s each way\n",
                 server ? "A" : "B", out.bytes / 1048576.0, text(out.rc).c_str(), in.bytes / 1048576.0,
                 in.last == 0 ? "end of stream" : text(in.last).c_str(), seconds,
                 std::min(out.bytes, in.bytes) / 1e6 / seconds);
    report("close", sansock_close(s));
    e.wait_resources(resources{0, 0, 0, server ? 1 : 0, 0}, "closed", 30s);
    e.destroy();
    return 0;
}

// Reads stream A (after pause_ms), checking it, to the end; then closes.
int role_sink(const role_args& a) {
    watchdog guard("the sink role", 10min);
    endpoint e;
    const sansock_socket_t s = e.connect(a.num("port"), a.num("call_ms", 60000));
    report("connected", 1);
    std::this_thread::sleep_for(milliseconds(a.num("pause_ms", 0)));
    const received in = receive_stream(s, seed_a);
    report_received("", in);
    report("close", sansock_close(s));
    e.wait_resources(resources{}, "closed", 30s);
    e.destroy();
    return 0;
}

// Host A's side of each close mode across hosts (mode=dontlinger|linger0|linger).
//   dontlinger: sends `bytes` of stream A, closes at once (SO_DONTLINGER).
//   linger0: waits for B's ready byte, then hold_ms, then closes with SO_LINGER {1, 0}; stays
//            alive for hold_ms more, so B's reset comes from the close.
//   linger: queues stream A until B's window and our send buffer are full (B is not reading
//           yet), then closes with SO_LINGER {1, linger_s}, blocking.
int role_closer(const role_args& a) {
    watchdog guard("the closer role", 10min);
    const std::string mode = a.str("mode");
    endpoint e;
    e.listen();
    // Measured before B can connect (it starts once it has the port).
    const resources baseline = resources_now(e.ctx);
    report("baseline", baseline.describe());
    e.announce();
    const sansock_socket_t s = e.accept(60000);
    report("connected", 1);
    if (mode == "dontlinger") {
        const sent out = send_stream(s, seed_a, static_cast<uint64_t>(a.num("bytes")));
        report_sent("sent_", out);
    } else if (mode == "linger0") {
        recv_byte(s);
        std::this_thread::sleep_for(milliseconds(a.num("hold_ms", 2000)));
        must(set_linger(s, 1, 0), "SO_LINGER {1, 0}");
    } else if (mode == "linger") {
        report("queued", std::to_string(fill_until_full(s, seed_a)));
        must(set_linger(s, 1, static_cast<int>(a.num("linger_s", 60))), "SO_LINGER {1, n}");
    } else {
        throw role_failure{"unknown mode " + mode};
    }
    const auto closing = steady_clock::now();
    const int rc = sansock_close(s);
    report("close_us", static_cast<long>(seconds_since(closing) * 1e6));
    report("close", rc);
    e.wait_resources(baseline, "closed", 60s);
    const struct sansock_context_stats st = stats_of(e.ctx);
    report("graceful_completed", static_cast<long>(st.graceful_completed));
    report("resets_sent", static_cast<long>(st.resets_sent[SANSOCK_RESET_ABORTIVE_CLOSE] +
                                            st.resets_sent[SANSOCK_RESET_LINGER_TIMEOUT] +
                                            st.resets_sent[SANSOCK_RESET_GRACEFUL_TIMEOUT]));
    if (mode == "linger0") std::this_thread::sleep_for(milliseconds(a.num("hold_ms", 2000)));
    e.destroy();
    return 0;
}

// Host B's side of the LINGER 0 case: sends the ready byte and waits in a receive; reports what
// it returned and how long it waited, then what a send and a receive return after it.
int role_reset_watcher(const role_args& a) {
    watchdog guard("the reset-watcher role", 5min);
    endpoint e;
    const sansock_socket_t s = e.connect(a.num("port"), a.num("call_ms", 60000));
    send_byte(s, 'R');
    const auto receiving = steady_clock::now();
    uint8_t b = 0;
    const ssize_t r = sansock_recv(s, &b, 1, 0);
    report("recv_ms", ms_since(receiving));
    report("recv", static_cast<long>(r));
    report("send_after", static_cast<long>(sansock_send(s, &b, 1, 0)));
    report("recv_after", static_cast<long>(sansock_recv(s, &b, 1, 0)));
    report("close", sansock_close(s));
    e.wait_resources(resources{}, "closed", 30s);
    e.destroy();
    return 0;
}

// Host B in the host-death cases: connections=N connections to A. Each sends the ready byte
// 'R'; then with traffic=1 the first is read to nowhere and the second carries stream B to A
// forever, else nothing is read or sent. Runs until its host is killed.
int role_doomed(const role_args& a) {
    endpoint e;
    std::vector<sansock_socket_t> sockets;
    for (long i = 0; i < a.num("connections", 1); ++i) {
        sockets.push_back(e.connect(a.num("port"), 600000));
        send_byte(sockets.back(), 'R');
    }
    if (a.num("traffic", 0) != 0 && sockets.size() >= 2) {
        std::thread([s = sockets[0]] { receive_stream(s, seed_a); }).detach();
        std::thread([s = sockets[1]] { send_stream(s, seed_b, UINT64_MAX); }).detach();
    }
    report("connected", static_cast<long>(sockets.size()));
    sleep_forever();
}

// Host A, the survivor, in the host-death cases (case=transfer|idle|close). Every call it makes
// after host B dies is bounded: by SO_RCVTIMEO/SO_SNDTIMEO (call_ms), the linger interval, or
// the context's graceful time-out; each reports what it returned and how long it took. At the
// end the process must hold on the device what it held before its connections (the listener's
// cm_id), and registered_bytes must be back to its value then.
//
//   transfer: two connections, stream A->B on the first and B->A on the second, both moving
//     when it reports flowing=1 (B is killed then); each direction's failing call, then a
//     probe (one byte sent, a receive) on each.
//   idle: one connection, quiet; reports idle=1 and waits in a receive (the wait named by
//     wait=, see idle_waits), which host B's death ends; then the probe.
//   close: four connections, B reading nothing. 1: queued full, closed SO_DONTLINGER (the
//     graceful close goes on in the background); 2: queued full, closed SO_LINGER {1,
//     linger_s}, blocking, on its own thread. It reports closing=1 with both under way (B is
//     killed then), and waits for SIGUSR1 (the driver's word that B is dead): 3 is closed with
//     SO_LINGER {1, 0}, 4 (idle) with SO_DONTLINGER.
int role_survivor(const role_args& a) {
    watchdog guard("the survivor role", 10min);
    // SIGUSR1 is taken with sigtimedwait: block it before the context starts its threads.
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &usr1, nullptr);

    const std::string test = a.str("case");
    const long call_ms = a.num("call_ms", 20000);
    endpoint e(static_cast<uint32_t>(a.num("graceful_ms", 0)));
    e.listen();
    // Measured before B can connect (it starts once it has the port).
    const resources baseline = resources_now(e.ctx);
    report("baseline", baseline.describe());
    transport_retries retries_before = transport_retries_now();
    e.announce();
    const long count = test == "transfer" ? 2 : test == "idle" ? 1 : 4;
    std::vector<sansock_socket_t> s;
    for (long i = 0; i < count; ++i) s.push_back(e.accept(call_ms));
    for (auto c : s) recv_byte(c);

    // After B's death: a byte sent and a receive, on a connection that has not failed yet: the
    // send gives the RC transport something to retry, so the connection must fail.
    auto probe = [&](const std::string& prefix, sansock_socket_t c) {
        uint8_t b = 'P';
        report(prefix + "probe_send", static_cast<long>(sansock_send(c, &b, 1, 0)));
        const auto receiving = steady_clock::now();
        report(prefix + "probe_recv", static_cast<long>(sansock_recv(c, &b, 1, 0)));
        report(prefix + "probe_recv_ms", ms_since(receiving));
    };

    if (test == "transfer") {
        sent out;
        received in;
        std::atomic<uint64_t> moved_out{0};
        std::thread sender([&] {
            // Counted in pieces so that `flowing` can be told.
            std::vector<uint8_t> buffer(chunk_size);
            for (;;) {
                fill_stream(buffer.data(), out.bytes, buffer.size(), seed_a);
                const auto call = steady_clock::now();
                const ssize_t r = sansock_send(s[0], buffer.data(), buffer.size(), 0);
                if (r <= 0) {
                    out.rc = r < 0 ? r : -EIO;
                    out.last_call_s = seconds_since(call);
                    break;
                }
                out.fnv = fnv1a(out.fnv, buffer.data(), static_cast<size_t>(r));
                out.bytes += static_cast<uint64_t>(r);
                moved_out = out.bytes;
            }
        });
        std::thread receiver([&] { in = receive_stream(s[1], seed_b, 1 << 20); });
        // receive_stream reports mark=1 after 1 MiB; flowing once 1 MiB has gone out as well.
        const auto start = steady_clock::now();
        while (moved_out < (1u << 20) && seconds_since(start) < 180) std::this_thread::sleep_for(50ms);
        report("flowing", moved_out >= (1u << 20) ? 1 : 0);
        sender.join();
        receiver.join();
        report_sent("out_", out);
        report_received("in_", in);
        std::thread probing([&] { probe("out_", s[0]); });
        probe("in_", s[1]);
        probing.join();
    } else if (test == "idle") {
        const std::string wait = a.str("wait", "rcvtimeo");
        report("idle", 1);
        uint8_t b = 0;
        const auto receiving = steady_clock::now();
        ssize_t r = 0;
        // The waits an idle connection can end by, once its peer's host is dead: with
        // SO_RCVTIMEO (wait=rcvtimeo) the receive returns -EWOULDBLOCK after idle_ms. A wait
        // without a time-out that a keepalive ends belongs here as another wait= value.
        if (wait == "rcvtimeo") {
            must(set_timeout(s[0], SO_RCVTIMEO, a.num("idle_ms", 15000)), "SO_RCVTIMEO");
            r = sansock_recv(s[0], &b, 1, 0);
        } else {
            throw role_failure{"unknown wait " + wait};
        }
        report("idle_recv_ms", ms_since(receiving));
        report("idle_recv", static_cast<long>(r));
        must(set_timeout(s[0], SO_RCVTIMEO, call_ms), "SO_RCVTIMEO");
        probe("", s[0]);
    } else if (test == "close") {
        report("queued1", std::to_string(fill_until_full(s[0], seed_a)));
        report("queued2", std::to_string(fill_until_full(s[1], seed_a)));
        auto closing = steady_clock::now();
        report("close1", sansock_close(s[0]));
        report("close1_us", static_cast<long>(seconds_since(closing) * 1e6));
        must(set_linger(s[1], 1, static_cast<int>(a.num("linger_s", 10))), "SO_LINGER {1, n}");
        std::thread lingering([&] {
            const auto started = steady_clock::now();
            const int rc = sansock_close(s[1]);
            report("close2_ms", ms_since(started));
            report("close2", rc);
        });
        std::this_thread::sleep_for(300ms);
        report("closing", 1);
        timespec limit{180, 0};
        const int got = sigtimedwait(&usr1, nullptr, &limit);
        report("told_dead", got == SIGUSR1 ? 1 : 0);
        // Retries count from here: filling the buffers before may have met a slow ACK.
        retries_before = transport_retries_now();
        must(set_linger(s[2], 1, 0), "SO_LINGER {1, 0}");
        closing = steady_clock::now();
        report("close3", sansock_close(s[2]));
        report("close3_us", static_cast<long>(seconds_since(closing) * 1e6));
        closing = steady_clock::now();
        report("close4", sansock_close(s[3]));
        report("close4_us", static_cast<long>(seconds_since(closing) * 1e6));
        lingering.join();
    } else {
        throw role_failure{"unknown case " + test};
    }
    if (test != "close") {
        const auto closing = steady_clock::now();
        for (auto c : s) sansock_close(c);
        report("close_ms", ms_since(closing));
    }
    e.wait_resources(baseline, "back", 120s);
    const transport_retries retries_after = transport_retries_now();
    report("transport_retried", retries_after.retried - retries_before.retried);
    report("transport_retries_exceeded", retries_after.exceeded - retries_before.exceeded);
    const struct sansock_context_stats st = stats_of(e.ctx);
    std::ostringstream resets;
    for (int i = 0; i < SANSOCK_RESET_REASONS; ++i) resets << (i ? " " : "") << st.resets_sent[i];
    report("resets_sent", resets.str());
    report("graceful_timed_out", static_cast<long>(st.graceful_timed_out));
    e.destroy();
    return 0;
}

// Every role reports a failed set-up step as `error=` and exits 1.
template <int (*Role)(const role_args&)>
int guarded(const std::vector<std::string>& args) {
    try {
        return Role(role_args(args));
    } catch (const role_failure& f) {
        report("error", f.what);
        return 1;
    }
}

peer_role_registrar register_stream("stream", guarded<role_stream>);
peer_role_registrar register_sink("sink", guarded<role_sink>);
peer_role_registrar register_closer("closer", guarded<role_closer>);
peer_role_registrar register_reset_watcher("reset-watcher", guarded<role_reset_watcher>);
peer_role_registrar register_doomed("doomed", guarded<role_doomed>);
peer_role_registrar register_survivor("survivor", guarded<role_survivor>);

// =============================================================================================
// The host side: drivers.
// =============================================================================================

std::string quote(const std::string& s) {
    std::string q = "'";
    for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
}

// Runs tests/vm/guest-ctl GUEST ARGS...: its status and stdout (stderr goes to ours).
struct ctl_result {
    int status = -1;
    std::string out;
};
ctl_result guest_ctl(const std::string& guest, const std::vector<std::string>& args, bool stderr_too = true) {
    std::string command = quote(env("SANSOCK_GUEST_CTL")) + " " + guest;
    for (const auto& a : args) command += " " + quote(a);
    if (!stderr_too) command += " 2>/dev/null";
    ctl_result r;
    FILE* pipe = popen(command.c_str(), "r");
    if (pipe == nullptr) return r;
    char buffer[4096];
    size_t n;
    while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) r.out.append(buffer, n);
    const int status = pclose(pipe);
    r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    while (!r.out.empty() && r.out.back() == '\n') r.out.pop_back();
    return r;
}

std::string self_exe() {
    char path[4096];
    const ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
    return n > 0 ? std::string(path, static_cast<size_t>(n)) : std::string();
}

// A role running in a guest. Killed (if still running) when it goes out of scope.
class remote_job {
public:
    remote_job(std::string guest, const std::string& role, const std::vector<std::string>& args)
        : guest_(std::move(guest)) {
        static int counter = 0;
        name_ = role + "-" + std::to_string(getpid()) + "-" + std::to_string(++counter);
        const std::string log = env("SANSOCK_LOG").empty() ? "info" : env("SANSOCK_LOG");
        std::string command = "SANSOCK_LOG=" + quote(log) + " exec " + quote(self_exe()) + " --peer " + quote(role);
        for (const auto& a : args) command += " " + quote(a);
        const ctl_result r = guest_ctl(guest_, {"start", name_, command});
        INFO("starting " << role << " on host " << guest_);
        REQUIRE(r.status == 0);
    }
    ~remote_job() {
        if (!ended_ && guest_ctl(guest_, {"alive"}).status == 0) {
            guest_ctl(guest_, {"signal", name_, "KILL"});
            guest_ctl(guest_, {"wait", name_, "30"});
        }
    }
    remote_job(const remote_job&) = delete;
    remote_job& operator=(const remote_job&) = delete;

    // The value of the job's report `key`, waiting at most `seconds`.
    std::optional<std::string> get(const std::string& key, int seconds) {
        const ctl_result r = guest_ctl(guest_, {"get", name_, key, std::to_string(seconds)});
        if (r.status != 0) return std::nullopt;
        return r.out;
    }
    std::string need(const std::string& key, int seconds) {
        auto v = get(key, seconds);
        INFO("host " << guest_ << ", " << name_ << ": waiting for " << key << "\n" << output());
        REQUIRE(v.has_value());
        return *v;
    }
    // The job's exit status, waiting at most `seconds` (124: still running).
    int wait(int seconds) {
        const int status = guest_ctl(guest_, {"wait", name_, std::to_string(seconds)}).status;
        if (status != 124) ended_ = true;
        if (ended_) read_reports();
        return status;
    }
    void signal(const std::string& sig) { guest_ctl(guest_, {"signal", name_, sig}); }
    void host_died() { ended_ = true; }
    std::string output() {
        return "--- " + name_ + " on host " + guest_ + ": stdout\n" + guest_ctl(guest_, {"output", name_}, false).out +
               "\n(its stderr is in the test's log)";
    }
    // A report of the ended job ("(none)" if it made none).
    std::string operator[](const std::string& key) const {
        auto it = reports_.find(key);
        return it == reports_.end() ? "(none)" : it->second;
    }
    long number(const std::string& key) const {
        auto it = reports_.find(key);
        return it == reports_.end() ? -999999 : std::stol(it->second);
    }

private:
    // Once, when the job has ended: its stderr goes to the test's log here.
    void read_reports() {
        std::fprintf(stderr, "--- %s on host %s: stderr\n", name_.c_str(), guest_.c_str());
        std::istringstream lines(guest_ctl(guest_, {"output", name_}).out);
        std::string line;
        while (std::getline(lines, line))
            if (auto eq = line.find('='); eq != std::string::npos) reports_[line.substr(0, eq)] = line.substr(eq + 1);
    }
    std::string guest_, name_;
    bool ended_ = false;
    std::map<std::string, std::string> reports_;
};

// A shell command in a guest, bounded; REQUIREs success.
std::string in_guest(const std::string& guest, const std::string& command, int seconds = 60) {
    const ctl_result r = guest_ctl(guest, {"run", std::to_string(seconds), command});
    INFO("host " << guest << ": " << command << "\n" << r.out);
    REQUIRE(r.status == 0);
    return r.out;
}

// At the start of every case: both hosts up (booted again after a host-death case), the link
// clean (no netem, eth0 up).
void both_hosts_up() {
    for (const char* g : {"A", "B"}) {
        const ctl_result r = guest_ctl(g, {"up", "300"});
        INFO("host " << g << " did not come up");
        REQUIRE(r.status == 0);
    }
    for (const char* g : {"A", "B"}) in_guest(g, "tc qdisc del dev eth0 root 2>/dev/null; ip link set eth0 up");
}

// Netem on eth0 of both guests for the life of the object ("loss 2% delay 2ms", say).
class netem_on_both {
public:
    explicit netem_on_both(const std::string& spec) {
        for (const char* g : {"A", "B"}) in_guest(g, "tc qdisc add dev eth0 root netem " + spec);
        MESSAGE("netem on both hosts' eth0: " << spec);
    }
    ~netem_on_both() {
        for (const char* g : {"A", "B"}) guest_ctl(g, {"run", "60", "tc qdisc del dev eth0 root"});
    }
    netem_on_both(const netem_on_both&) = delete;
    netem_on_both& operator=(const netem_on_both&) = delete;
};

long env_number(const char* name, long otherwise) {
    const std::string v = env(name);
    return v.empty() ? otherwise : std::stol(v);
}

std::string mib(uint64_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }

// The stream role on both hosts: `bytes` each way. `during` runs once A has received `mark`
// bytes (0: no mark). Returns once both have ended (bounded by `limit_s`).
struct stream_run {
    std::unique_ptr<remote_job> a, b;
    int status_a = -1, status_b = -1;
};
template <typename During>
stream_run run_streams(uint64_t bytes, long call_ms, uint64_t mark, int limit_s, During during, uint64_t pace = 0) {
    stream_run run;
    const std::vector<std::string> common{"bytes=" + std::to_string(bytes), "call_ms=" + std::to_string(call_ms),
                                          "mark=" + std::to_string(mark), "limit_s=" + std::to_string(limit_s + 60),
                                          "pace=" + std::to_string(pace)};
    std::vector<std::string> a_args{"side=server"}, b_args{"side=client"};
    a_args.insert(a_args.end(), common.begin(), common.end());
    run.a = std::make_unique<remote_job>("A", "stream", a_args);
    const std::string port = run.a->need("port", 120);
    b_args.insert(b_args.end(), common.begin(), common.end());
    b_args.push_back("port=" + port);
    run.b = std::make_unique<remote_job>("B", "stream", b_args);
    if (mark != 0) {
        run.a->need("mark", limit_s);
        during(*run.a, *run.b);
    }
    run.status_a = run.a->wait(limit_s);
    run.status_b = run.b->wait(60);
    return run;
}

// Both directions arrived whole: every byte as sent, the checksums equal, then end of stream;
// both closed gracefully and let go of everything.
void check_intact(stream_run& r, uint64_t bytes) {
    remote_job &a = *r.a, &b = *r.b;
    INFO(a.output() << "\n" << b.output());
    REQUIRE(r.status_a == 0);
    REQUIRE(r.status_b == 0);
    for (remote_job* receiver : {&a, &b}) {
        remote_job& sender = receiver == &a ? b : a;
        CHECK(sender["sent_rc"] == "0");
        CHECK(sender["sent_bytes"] == std::to_string(bytes));
        CHECK((*receiver)["recv_bytes"] == std::to_string(bytes));
        CHECK((*receiver)["recv_first_bad"] == "-1");
        CHECK((*receiver)["recv_fnv"] == sender["sent_fnv"]);
        CHECK((*receiver)["recv_last"] == "0");
        CHECK((*receiver)["close"] == "0");
        CHECK((*receiver)["closed_ms"] != "-1");
        CHECK((*receiver)["destroy"] == "0");
    }
    MESSAGE(mib(bytes) << " each way in " << a["seconds"] << " s (A) / " << b["seconds"] << " s (B)");
}

} // namespace

// ---- transfers ---------------------------------------------------------------------------------

TEST_CASE("transfer: a checksummed stream each way at once arrives whole, then end of stream") {
    both_hosts_up();
    const uint64_t bytes = static_cast<uint64_t>(env_number("SANSOCK_TWOHOST_MIB", 64)) << 20;
    stream_run r = run_streams(bytes, 60000, 0, 900, [](remote_job&, remote_job&) {});
    check_intact(r, bytes);
}

TEST_CASE("loss: 2% loss and 3 ms delay each way on the link, the streams still arrive whole") {
    both_hosts_up();
    const uint64_t bytes = static_cast<uint64_t>(env_number("SANSOCK_TWOHOST_LOSS_MIB", 1)) << 20;
    netem_on_both netem("loss 2% delay 3ms");
    stream_run r = run_streams(bytes, 60000, 0, 600, [](remote_job&, remote_job&) {});
    check_intact(r, bytes);
}

// ---- close modes across hosts ----------------------------------------------------------------

TEST_CASE("close-dontlinger: SO_DONTLINGER returns at once, the data still arrives, then end of stream") {
    both_hosts_up();
    const uint64_t bytes = 4 << 20;
    remote_job a("A", "closer", {"mode=dontlinger", "bytes=" + std::to_string(bytes)});
    remote_job b("B", "sink", {"port=" + a.need("port", 120)});
    const int status_a = a.wait(300), status_b = b.wait(120);
    INFO(a.output() << "\n" << b.output());
    REQUIRE(status_a == 0);
    REQUIRE(status_b == 0);
    CHECK(a["sent_rc"] == "0");
    CHECK(a["close"] == "0");
    CHECK(a.number("close_us") < 1000000);
    CHECK(b["bytes"] == std::to_string(bytes));
    CHECK(b["first_bad"] == "-1");
    CHECK(b["fnv"] == a["sent_fnv"]);
    CHECK(b["last"] == "0"); // end of stream
    CHECK(a["closed_ms"] != "-1"); // the graceful close finished: everything let go
    CHECK(a["graceful_completed"] == "1");
    CHECK(a["resets_sent"] == "0");
    MESSAGE("close took " << a["close_us"] << " us; the connection was gone " << a["closed_ms"] << " ms later");
}

TEST_CASE("close-linger0: SO_LINGER {1, 0} on host A, host B's blocked receive fails -ECONNRESET") {
    both_hosts_up();
    remote_job a("A", "closer", {"mode=linger0", "hold_ms=2000"});
    remote_job b("B", "reset-watcher", {"port=" + a.need("port", 120)});
    const int status_b = b.wait(180), status_a = a.wait(120);
    INFO(a.output() << "\n" << b.output());
    REQUIRE(status_a == 0);
    REQUIRE(status_b == 0);
    CHECK(a["close"] == "0");
    CHECK(a.number("close_us") < 1000000);
    CHECK(b["recv"] == std::to_string(SANSOCK_E_CONNRESET));
    CHECK(b.number("recv_ms") >= 1500); // it did wait for A's close (A holds 2 s first)
    CHECK(b.number("recv_ms") < 30000);
    CHECK(b["send_after"] == std::to_string(SANSOCK_E_CONNRESET));
    CHECK(b["recv_after"] == std::to_string(SANSOCK_E_CONNRESET));
    CHECK(a["closed_ms"] != "-1");
    CHECK(b["closed_ms"] != "-1");
    CHECK(a["resets_sent"] == "1");
    MESSAGE("B's receive failed " << b["recv_ms"] << " ms after it began (A closed 2 s after B's ready byte)");
}

TEST_CASE("close-linger: SO_LINGER {1, 60} blocking returns 0 once host B has taken everything") {
    both_hosts_up();
    remote_job a("A", "closer", {"mode=linger", "linger_s=60"});
    remote_job b("B", "sink", {"port=" + a.need("port", 120), "pause_ms=6000"});
    const int status_a = a.wait(300), status_b = b.wait(120);
    INFO(a.output() << "\n" << b.output());
    REQUIRE(status_a == 0);
    REQUIRE(status_b == 0);
    CHECK(a["close"] == "0");
    // B reads nothing for its first 6 s: the close had to wait for it.
    CHECK(a.number("close_us") >= 2000000);
    CHECK(a.number("close_us") < 60000000);
    CHECK(b["bytes"] == a["queued"]);
    CHECK(b["first_bad"] == "-1");
    CHECK(b["last"] == "0");
    CHECK(a["resets_sent"] == "0");
    MESSAGE(a["queued"] << " bytes queued; the lingering close returned 0 after " << a.number("close_us") / 1000
                        << " ms");
}

// ---- host death --------------------------------------------------------------------------------

namespace {

// Host B dies: its QEMU is killed (nothing more leaves it), and it is booted again by the next
// case's both_hosts_up.
void kill_host_b(remote_job& doomed) {
    const ctl_result r = guest_ctl("B", {"kill"});
    REQUIRE(r.status == 0);
    REQUIRE(guest_ctl("B", {"alive"}).status != 0);
    doomed.host_died();
}

constexpr long call_ms = 10000; // SO_RCVTIMEO / SO_SNDTIMEO on the survivor
constexpr long slack_ms = 5000; // what an emulated guest on a busy host may add to a bound
const std::string reset = std::to_string(SANSOCK_E_CONNRESET);
const std::string timed_out = std::to_string(SANSOCK_E_WOULDBLOCK);

// A call on the survivor after the death ended within its bound, with a time-out or a reset:
// never success, never end of stream.
void check_ended_in_bound(remote_job& a, const std::string& result, const std::string& took_ms, long bound_ms) {
    INFO(result << " = " << text(a.number(result)) << " after " << a[took_ms] << " ms");
    CHECK((a[result] == timed_out || a[result] == reset));
    CHECK(a.number(took_ms) >= 0);
    CHECK(a.number(took_ms) <= bound_ms + slack_ms);
}

// What every host-death case checks on the survivor at the end: it holds on the device what it
// held before its connections (the listener's cm_id), registered_bytes is back to its value
// then, and the context goes at once.
void check_survivor_recovered(remote_job& a) {
    CHECK(a["back_ms"] != "-1"); // within 120 s
    CHECK(a["back"] == a["baseline"]);
    CHECK(a["destroy"] == "0");
    CHECK(a.number("destroy_ms") < 10000);
    CHECK(a["after_destroy"] == "qp 0 cq 0 mr 0 cm_id 0 registered 0");
}

std::string transport_note(remote_job& a);

// Host B was really gone: something A sent after the death was retried by the RC transport
// (a quiet but living peer would have acknowledged it).
void check_host_b_was_gone(remote_job& a) {
    INFO(transport_note(a));
    CHECK(a.number("transport_retried") >= 1);
}

std::string transport_note(remote_job& a) {
    return "rxe0 on A retried " + a["transport_retried"] + " time-outs, " + a["transport_retries_exceeded"] +
           " requests ran out of retries";
}

} // namespace

TEST_CASE("death-transfer: host B dies mid-transfer both ways; host A's calls return within their bounds") {
    both_hosts_up();
    remote_job a("A", "survivor", {"case=transfer", "call_ms=" + std::to_string(call_ms), "graceful_ms=5000"});
    remote_job b("B", "doomed", {"port=" + a.need("port", 120), "connections=2", "traffic=1"});
    REQUIRE(a.need("flowing", 200) == "1");
    a.need("mark", 60);
    kill_host_b(b);
    const int status = a.wait(300);
    INFO(a.output());
    REQUIRE(status == 0);
    // The blocked send (data in flight, unacknowledged) and the blocked receive.
    check_ended_in_bound(a, "out_rc", "out_last_call_ms", call_ms);
    check_ended_in_bound(a, "in_last", "in_last_call_ms", call_ms);
    CHECK(a["in_first_bad"] == "-1");
    // A further send and receive on each: still bounded.
    check_ended_in_bound(a, "out_probe_recv", "out_probe_recv_ms", call_ms);
    check_ended_in_bound(a, "in_probe_recv", "in_probe_recv_ms", call_ms);
    check_survivor_recovered(a);
    check_host_b_was_gone(a);
    MESSAGE("A's send returned " << text(a.number("out_rc")) << " after " << a["out_last_call_ms"]
                                 << " ms, its receive " << text(a.number("in_last")) << " after "
                                 << a["in_last_call_ms"] << " ms (bounds " << call_ms << " ms); "
                                 << transport_note(a) << "; resources back " << a["back_ms"] << " ms after the closes");
}

TEST_CASE("death-idle: host B dies while the connection is idle; host A's timed receive returns, and so do a "
          "send and a receive after it") {
    both_hosts_up();
    const long idle_ms = 8000;
    remote_job a("A", "survivor", {"case=idle", "wait=rcvtimeo", "idle_ms=" + std::to_string(idle_ms),
                                   "call_ms=" + std::to_string(call_ms), "graceful_ms=5000"});
    remote_job b("B", "doomed", {"port=" + a.need("port", 120), "connections=1"});
    a.need("idle", 120);
    kill_host_b(b);
    const int status = a.wait(300);
    INFO(a.output());
    REQUIRE(status == 0);
    // Nothing is in flight: nothing tells A, and SO_RCVTIMEO ends the receive.
    CHECK(a["idle_recv"] == timed_out);
    CHECK(a.number("idle_recv_ms") >= idle_ms - 1000);
    CHECK(a.number("idle_recv_ms") <= idle_ms + slack_ms);
    // A byte sent then (queued: 1) and a receive: bounded too.
    CHECK(a["probe_send"] == "1");
    check_ended_in_bound(a, "probe_recv", "probe_recv_ms", call_ms);
    check_survivor_recovered(a);
    check_host_b_was_gone(a);
    MESSAGE("the idle receive returned " << text(a.number("idle_recv")) << " after " << a["idle_recv_ms"]
                                         << " ms; after a byte sent, the receive returned "
                                         << text(a.number("probe_recv")) << " after " << a["probe_recv_ms"]
                                         << " ms; " << transport_note(a));
}

TEST_CASE("death-close: host B dies during each close mode on host A; every close returns within its bound and "
          "everything is let go") {
    both_hosts_up();
    const long graceful_ms = 8000, linger_s = 10;
    remote_job a("A", "survivor", {"case=close", "graceful_ms=" + std::to_string(graceful_ms),
                                   "linger_s=" + std::to_string(linger_s), "call_ms=" + std::to_string(call_ms)});
    remote_job b("B", "doomed", {"port=" + a.need("port", 120), "connections=4"});
    a.need("closing", 200);
    kill_host_b(b);
    a.signal("USR1");
    const int status = a.wait(300);
    INFO(a.output());
    REQUIRE(status == 0);
    CHECK(a["told_dead"] == "1");
    // 1: SO_DONTLINGER with data queued: 0 at once; the graceful close goes on in the
    // background until the graceful time-out ends it hard.
    CHECK(a["close1"] == "0");
    CHECK(a.number("close1_us") < 1000000);
    // 2: SO_LINGER {1, 10}, blocking, data unacknowledged: -ETIMEDOUT after the interval.
    CHECK(a["close2"] == std::to_string(SANSOCK_E_TIMED_OUT));
    CHECK(a.number("close2_ms") >= linger_s * 1000 - 1000);
    CHECK(a.number("close2_ms") <= linger_s * 1000 + slack_ms);
    // 3: SO_LINGER {1, 0} after the death: 0 at once.
    CHECK(a["close3"] == "0");
    CHECK(a.number("close3_us") < 1000000);
    // 4: SO_DONTLINGER on the idle connection after the death: 0 at once.
    CHECK(a["close4"] == "0");
    CHECK(a.number("close4_us") < 1000000);
    // Everything let go once the graceful time-out has ended 1 and 4.
    check_survivor_recovered(a);
    CHECK(a.number("back_ms") <= graceful_ms + slack_ms);
    check_host_b_was_gone(a);
    MESSAGE("the lingering close returned " << text(a.number("close2")) << " after " << a["close2_ms"]
                                            << " ms; resources back " << a["back_ms"]
                                            << " ms after the last close; resets sent by reason: " << a["resets_sent"]
                                            << "; " << transport_note(a));
}

// ---- partition -----------------------------------------------------------------------------------

namespace {

// Cuts the link (netem loss 100% on both guests' eth0, so neither direction carries anything)
// for `seconds`, then restores it; returns once both guests have restored it. The streams
// `a` and `b` must still be running once the link is cut (else the case tests nothing).
void cut_link_for(int seconds, remote_job& a, remote_job& b) {
    std::vector<std::pair<std::string, std::string>> cuts;
    static int counter = 0;
    for (const char* g : {"A", "B"}) {
        const std::string name = std::string("cut-") + g + "-" + std::to_string(getpid()) + "-" + std::to_string(++counter);
        const ctl_result r = guest_ctl(g, {"start", name, "tc qdisc add dev eth0 root netem loss 100% && echo cut=1 && sleep " +
                                                              std::to_string(seconds) + "; tc qdisc del dev eth0 root"});
        REQUIRE(r.status == 0);
        cuts.emplace_back(g, name);
    }
    for (const auto& [guest, job] : cuts) {
        INFO("cutting the link on host " << guest);
        CHECK(guest_ctl(guest, {"get", job, "cut", "30"}).status == 0);
    }
    for (remote_job* stream : {&a, &b}) {
        INFO("the stream had ended before the link was cut: " << stream->output());
        CHECK_FALSE(stream->get("recv_last", 0).has_value());
    }
    for (const auto& [guest, job] : cuts) {
        const ctl_result w = guest_ctl(guest, {"wait", job, std::to_string(seconds + 60)});
        INFO("cutting the link on host " << guest);
        CHECK(w.status == 0);
    }
}

} // namespace

TEST_CASE("partition-short: the link cut for 2 s mid-transfer and restored; the RC retries carry the streams "
          "over it and they arrive whole") {
    both_hosts_up();
    const uint64_t bytes = 8 << 20;
    const uint64_t pace = 512 * 1024; // 16 s for the whole stream: the cut comes at about 4 s
    stream_run r = run_streams(
        bytes, 60000, bytes / 4, 600, [](remote_job& a, remote_job& b) { cut_link_for(2, a, b); }, pace);
    check_intact(r, bytes);
}

TEST_CASE("partition-long: the link cut for 20 s mid-transfer; both ends report an error within the bound, "
          "neither a false end of stream nor wrong data") {
    both_hosts_up();
    const uint64_t bytes = 8 << 20;
    const uint64_t pace = 512 * 1024; // 16 s for the whole stream: the cut comes at about 4 s
    const long bound_ms = 10000; // SO_RCVTIMEO / SO_SNDTIMEO at both ends, shorter than the cut
    stream_run r = run_streams(
        bytes, bound_ms, bytes / 4, 600, [](remote_job& a, remote_job& b) { cut_link_for(20, a, b); }, pace);
    remote_job &a = *r.a, &b = *r.b;
    INFO(a.output() << "\n" << b.output());
    REQUIRE(r.status_a == 0);
    REQUIRE(r.status_b == 0);
    for (remote_job* side : {&a, &b}) {
        remote_job& s = *side;
        // Each end's blocked send and receive ended within the bound, by the time-out or a
        // reset; neither end has a complete stream, and what did arrive is right.
        check_ended_in_bound(s, "sent_rc", "sent_last_call_ms", bound_ms);
        check_ended_in_bound(s, "recv_last", "recv_last_call_ms", bound_ms);
        CHECK(s.number("recv_bytes") < static_cast<long>(bytes));
        CHECK(s["recv_first_bad"] == "-1");
        CHECK(s["destroy"] == "0");
        CHECK(s["after_destroy"] == "qp 0 cq 0 mr 0 cm_id 0 registered 0");
    }
    MESSAGE("A: send " << text(a.number("sent_rc")) << " (" << a["sent_last_call_ms"] << " ms), receive "
                       << text(a.number("recv_last")) << " (" << a["recv_last_call_ms"] << " ms); B: send "
                       << text(b.number("sent_rc")) << " (" << b["sent_last_call_ms"] << " ms), receive "
                       << text(b.number("recv_last")) << " (" << b["recv_last_call_ms"] << " ms)");
}

// ---- main ----------------------------------------------------------------------------------------

namespace {
unsigned cases_run = 0;
struct count_cases : doctest::IReporter {
    explicit count_cases(const doctest::ContextOptions&) {}
    void report_query(const doctest::QueryData&) override {}
    void test_run_start() override {}
    void test_run_end(const doctest::TestRunStats& stats) override { cases_run = stats.numTestCasesPassingFilters; }
    void test_case_start(const doctest::TestCaseData&) override {}
    void test_case_reenter(const doctest::TestCaseData&) override {}
    void test_case_end(const doctest::CurrentTestCaseStats&) override {}
    void test_case_exception(const doctest::TestCaseException&) override {}
    void subcase_start(const doctest::SubcaseSignature&) override {}
    void subcase_end() override {}
    void log_assert(const doctest::AssertData&) override {}
    void log_message(const doctest::MessageData&) override {}
    void test_case_skipped(const doctest::TestCaseData&) override {}
};
REGISTER_LISTENER("count_cases", 1, count_cases);
} // namespace

int main(int argc, char** argv) {
    if (argc >= 3 && std::strcmp(argv[1], "--peer") == 0)
        return run_peer_role(argv[2], std::vector<std::string>(argv + 3, argv + argc));
    if (env("SANSOCK_TWOHOST_CTL").empty() || env("SANSOCK_GUEST_CTL").empty()) {
        std::fprintf(stderr, "not under tests/vm/run-two-guests (no SANSOCK_TWOHOST_CTL): skipping (exit 77)\n");
        return 77;
    }
    doctest::Context context(argc, argv);
    const int rc = context.run();
    if (rc == 0 && cases_run == 0 && !context.shouldExit()) {
        std::fprintf(stderr, "no test case matched the filter\n");
        return 2;
    }
    return rc;
}

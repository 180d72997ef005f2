// SPDX-License-Identifier: MIT
// What the roles (guest side) share: the resources a process holds, an endpoint (a role's
// context), checked streams and their reports.
#pragma once

#include "tests/twohost/common.hpp"

namespace twohost {

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

inline struct sansock_context_stats stats_of(sansock_context* ctx) {
    struct sansock_context_stats st{};
    st.size = sizeof st;
    sansock_context_stats(ctx, &st);
    return st;
}

// The objects of `type` that this process's threads created, from `rdma resource show TYPE`.
// A listing that fails (the tool's dump can be interrupted while objects come and go) is tried
// again; -1 if it keeps failing, which no comparison takes for a count.
inline long device_objects(const std::string& type) {
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

inline resources resources_now(sansock_context* ctx) {
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
inline transport_retries transport_retries_now() {
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

// A role's context, on the guest's own address. Its log (from info on) goes to stderr, and the
// longest the verbs provider reported destroying a closed connection took is kept: a thread
// that happens to run progress then waits that long (rxe holds a QP whose peer host is gone).
class endpoint {
public:
    explicit endpoint(uint32_t graceful_timeout_ms = 0) {
        sansock_context_attr attr;
        sansock_context_attr_init(&attr);
        if (graceful_timeout_ms != 0) attr.graceful_timeout_ms = graceful_timeout_ms;
        attr.log_level = SANSOCK_LOG_INFO;
        attr.log = &endpoint::log;
        attr.log_user = this;
        must(sansock_context_create(&attr, &ctx), "sansock_context_create");
    }
    long longest_destroy_ms() const { return longest_destroy_ms_.load(); }
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

private:
    static void log(void* user, int, const char* message) {
        std::fprintf(stderr, "sansock: %s\n", message);
        long took = 0;
        if (std::sscanf(message, "verbs: destroying a closed connection took %ld ms", &took) == 1) {
            auto& longest = static_cast<endpoint*>(user)->longest_destroy_ms_;
            long seen = longest.load();
            while (took > seen && !longest.compare_exchange_weak(seen, took)) {}
        }
    }
    std::atomic<long> longest_destroy_ms_{0};
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
inline received receive_stream(sansock_socket_t s, uint64_t seed, uint64_t mark = 0, uint64_t limit = UINT64_MAX) {
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
inline void report_received(const std::string& prefix, const received& d) {
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
inline sent send_stream(sansock_socket_t s, uint64_t seed, uint64_t total, uint64_t pace = 0) {
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
inline void report_sent(const std::string& prefix, const sent& d) {
    report(prefix + "bytes", std::to_string(d.bytes));
    report(prefix + "fnv", std::to_string(d.fnv));
    report(prefix + "rc", d.rc);
    report(prefix + "last_call_ms", static_cast<long>(d.last_call_s * 1000));
}

// Queues stream `seed` with a nonblocking socket until -EWOULDBLOCK (the peer does not read);
// returns the bytes queued and leaves the socket blocking.
inline uint64_t fill_until_full(sansock_socket_t s, uint64_t seed) {
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

inline uint8_t recv_byte(sansock_socket_t s) {
    uint8_t b = 0;
    const ssize_t r = sansock_recv(s, &b, 1, 0);
    must(r == 1 ? 0 : (r < 0 ? r : -EIO), "receiving the ready byte");
    return b;
}
inline void send_byte(sansock_socket_t s, uint8_t b) {
    const ssize_t r = sansock_send(s, &b, 1, 0);
    must(r == 1 ? 0 : (r < 0 ? r : -EIO), "sending the ready byte");
}

[[noreturn]] inline void sleep_forever() {
    for (;;) std::this_thread::sleep_for(1h);
}


} // namespace twohost

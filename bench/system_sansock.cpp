// SPDX-License-Identifier: MIT
// sansock measured through its public API, over the verbs provider. The measuring half and
// the peer half (bench.hpp) each have their own context.
#include <arpa/inet.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "bench/bench.hpp"
#include "sansock/sansock.hpp"
#include "sansock/service.h"

namespace sansock::bench {

namespace {

struct context {
    context_owner ctx;
    net_address local{}; // this host's address, port 0
    std::string why;

    int open(const std::string& ip) {
        sansock_context_attr attr;
        sansock_context_attr_init(&attr);
        attr.progress_mode = SANSOCK_PROGRESS_THREAD;
        attr.graceful_timeout_ms = 5000;
        if (int rc = context_owner::create(&attr, ctx)) return fail("context", rc);
        if (!parse_address(ip, 0, local)) return fail("address", -EINVAL);
        return 0;
    }
    // How this context's blocking waits ended (SANSOCK_BENCH_WAITS=1: a line on stderr per row).
    void report_waits(const char* side, const request& r) {
        if (std::getenv("SANSOCK_BENCH_WAITS") == nullptr) return;
        struct sansock_context_stats st{};
        st.size = sizeof st;
        if (sansock_context_stats(ctx.get(), &st) != 0) return;
        std::fprintf(stderr, "sansock-bench: %s %s %llu: waits busy-polled %llu, slept %llu\n", side,
                     scenario_name(r.what), static_cast<unsigned long long>(r.param),
                     static_cast<unsigned long long>(st.waits_polled), static_cast<unsigned long long>(st.waits_slept));
    }
    int fail(const char* what, int rc) {
        why = std::string(what) + ": " + sansock_strerror(rc);
        return rc;
    }
    // A listener on this host's address; its port in *bound.
    int listen(sansock_socket_t& l, net_address& bound) {
        bound = local;
        socklen_t length = address_size(bound);
        int rc = sansock_socket(ctx.get(), &l);
        if (rc == 0) rc = sansock_bind(l, &bound.sa, length);
        if (rc == 0) rc = sansock_listen(l, 1024);
        if (rc == 0) rc = sansock_getsockname(l, &bound.sa, &length);
        return rc == 0 ? 0 : fail("listener", rc);
    }
    // Measuring half: a connection to the peer half's listener.
    int connect(control& ctl, sansock_socket_t& s) {
        int rc = sansock_socket(ctx.get(), &s);
        if (rc == 0) rc = sansock_connect(s, &ctl.peer.sa, address_size(ctl.peer));
        return rc == 0 ? 0 : fail("connect", rc);
    }
};

void close_hard(sansock_socket_t s) {
    const linger hard{1, 0};
    sansock_setsockopt(s, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
    sansock_close(s);
}

int set_timeouts(sansock_socket_t s) {
    timeval ten{10, 0};
    sansock_setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &ten, sizeof ten);
    return sansock_setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &ten, sizeof ten);
}

// Peer half: the next connection, waiting at most peer_wait_ms in slices (the listener has a
// 200 ms SO_RCVTIMEO) so that the end of the measurement is seen at once.
int accept_peer(context& c, sansock_socket_t listener, control& ctl, sansock_socket_t& out) {
    for (int waited = 0;; waited += 200) {
        ctl.beat();
        int rc = sansock_accept(listener, &out, nullptr, nullptr); // one already there comes first
        if (rc == 0) return set_timeouts(out) == 0 ? 0 : c.fail("setsockopt", -EINVAL);
        if (rc != -EWOULDBLOCK && rc != -EAGAIN) return c.fail("accept", rc);
        if (ctl.stopping()) return c.fail("accept (the measuring half ended)", -ECANCELED);
        if (waited >= peer_wait_ms) return c.fail("accept", -ETIMEDOUT);
    }
}

// Reads until end of stream (0), or a negated errno.
ssize_t drain(sansock_socket_t s) {
    std::vector<uint8_t> got(64 * 1024);
    ssize_t n;
    while ((n = sansock_recv(s, got.data(), got.size(), 0)) > 0) {
    }
    return n;
}

void count_callback(void* user, int64_t) { static_cast<std::atomic<int>*>(user)->fetch_add(1); }

// sample_loop (bench.hpp) for a `once` that returns a duration in ns or a negated errno.
template <typename Once>
int repeat(const request& r, measurement& out, std::string& why, Once&& once) {
    return sample_loop(r, out, why, [&](double& ns, std::string& w) {
        ns = once();
        if (ns >= 0) return 0;
        if (w.empty()) w = sansock_strerror(static_cast<int>(ns));
        return static_cast<int>(ns);
    });
}

// Peer half: peer_loop (bench.hpp) for a `once` that records its failure in the context.
template <typename Once>
int peer_repeat(const request& r, control& ctl, Once&& once) {
    std::string unused;
    return peer_loop(r, ctl, unused, [&](std::string&) { return once(); });
}

// ---- measuring half ----------------------------------------------------------------------

int run_service_host_close(context& f, const request& r, control& ctl, measurement& out, std::string& why);

int run(const request& r, control& ctl, measurement& out, std::string& why) {
    context f;
    if (int rc = f.open(r.address)) {
        why = f.why;
        return rc;
    }
    switch (r.what) {
    case scenario::hard_close:
        return repeat(r, out, why, [&]() -> double {
            sansock_socket_t client = 0;
            if (int rc = f.connect(ctl, client)) return rc;
            std::atomic<int> cancelled{0};
            std::vector<uint8_t> buffer(64 * std::max<uint64_t>(r.param, 1));
            for (uint64_t i = 0; i < r.param; ++i)
                if (int rc = sansock_recv_async(client, buffer.data() + 64 * i, 64, count_callback, &cancelled)) return rc;
            const linger hard{1, 0};
            sansock_setsockopt(client, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
            const uint64_t t0 = now_ns();
            int rc = sansock_close(client);
            const uint64_t t1 = now_ns();
            if (rc != 0) return rc;
            if (cancelled.load() != static_cast<int>(r.param)) return -EPROTO; // all cancelled inside close
            return double(t1 - t0);
        });
    case scenario::graceful_close:
    case scenario::graceful_to_eof:
        return repeat(r, out, why, [&]() -> double {
            sansock_socket_t client = 0;
            if (int rc = f.connect(ctl, client)) return rc;
            char byte = 1;
            sansock_send(client, &byte, 1, 0);
            std::this_thread::sleep_for(std::chrono::microseconds(200)); // the reader is waiting
            const uint64_t t0 = now_ns();
            int rc = sansock_close(client);
            const uint64_t t1 = now_ns();
            if (rc != 0) return rc;
            uint64_t eof_at = 0;
            if (int e = ctl.wait_mark(eof_at)) return f.fail("waiting for the peer's end of stream", e);
            return double((r.what == scenario::graceful_close ? t1 : std::max(t1, eof_at)) - t0);
        });
    case scenario::linger_close:
        return repeat(r, out, why, [&]() -> double {
            sansock_socket_t client = 0;
            if (int rc = f.connect(ctl, client)) return rc;
            set_timeouts(client);
            std::vector<uint8_t> data(std::max<uint64_t>(r.param, 1), 7);
            size_t sent = 0;
            while (sent < data.size()) {
                ssize_t n = sansock_send(client, data.data() + sent, data.size() - sent, 0);
                if (n <= 0) break;
                sent += static_cast<size_t>(n);
            }
            const linger wait{1, 10};
            sansock_setsockopt(client, SOL_SOCKET, SO_LINGER, &wait, sizeof wait);
            const uint64_t t0 = now_ns();
            int rc = sansock_close(client);
            const uint64_t t1 = now_ns();
            uint64_t eof_at = 0;
            if (int e = ctl.wait_mark(eof_at)) return f.fail("waiting for the peer's end of stream", e);
            return rc != 0 ? double(rc) : double(t1 - t0);
        });
    case scenario::listener_close:
        return repeat(r, out, why, [&]() -> double {
            sansock_socket_t l = 0;
            net_address a{};
            if (int rc = f.listen(l, a)) return rc;
            std::atomic<int> cancelled{0};
            int rc = 0;
            for (uint64_t i = 0; rc == 0 && i < r.param; ++i) rc = sansock_accept_async(l, count_callback, &cancelled);
            if (rc != 0) return rc;
            const uint64_t t0 = now_ns();
            rc = sansock_close(l);
            const uint64_t t1 = now_ns();
            if (rc != 0) return rc;
            if (cancelled.load() != static_cast<int>(r.param)) return -EPROTO;
            return double(t1 - t0);
        });
    case scenario::connect_teardown:
        // Until the peer half has accepted and closed its end (its mark).
        return repeat(r, out, why, [&]() -> double {
            const uint64_t t0 = now_ns();
            sansock_socket_t client = 0;
            if (int rc = f.connect(ctl, client)) return rc;
            sansock_close(client);
            const uint64_t t1 = now_ns();
            uint64_t closed_at = 0;
            if (int e = ctl.wait_mark(closed_at)) return f.fail("waiting for the peer's close", e);
            return double(std::max(t1, closed_at) - t0);
        });
    case scenario::ping_pong: {
        sansock_socket_t client = 0;
        if (int rc = f.connect(ctl, client)) {
            why = f.why;
            return rc;
        }
        set_timeouts(client);
        const size_t size = std::max<uint64_t>(r.param, 1);
        std::vector<uint8_t> b(size, 1);
        int rc = repeat(r, out, why, [&]() -> double {
            const uint64_t t0 = now_ns();
            if (sansock_send(client, b.data(), size, 0) != static_cast<ssize_t>(size)) return -EIO;
            if (sansock_recv(client, b.data(), size, MSG_WAITALL) != static_cast<ssize_t>(size)) return -EIO;
            return double(now_ns() - t0);
        });
        f.report_waits("client", r);
        close_hard(client);
        return rc;
    }
    case scenario::bandwidth: {
        sansock_socket_t client = 0;
        if (int rc = f.connect(ctl, client)) {
            why = f.why;
            return rc;
        }
        set_timeouts(client);
        const size_t size = std::max<uint64_t>(r.param, 1);
        const uint64_t per_sample = std::max<uint64_t>(r.stream_bytes / size, 1) * size;
        std::vector<uint8_t> b(size, 3);
        out.bytes_per_sample = per_sample;
        int rc = repeat(r, out, why, [&]() -> double {
            const uint64_t t0 = now_ns();
            for (uint64_t sent = 0; sent < per_sample;) {
                ssize_t n = sansock_send(client, b.data(), size, 0);
                if (n <= 0) return n < 0 ? double(n) : -EIO;
                sent += static_cast<uint64_t>(n);
            }
            char ack;
            if (sansock_recv(client, &ack, 1, 0) != 1) return -EIO;
            return double(now_ns() - t0);
        });
        close_hard(client);
        return rc;
    }
    case scenario::memory: {
        // Per connection end, on this side: registered by this context (registered_bytes of
        // sansock_context_stats); resident in this process (which holds both ends in
        // one-process mode).
        const uint64_t rss_before = resident_bytes();
        struct sansock_context_stats before{}, after{};
        before.size = after.size = sizeof before;
        int rc = sansock_context_stats(f.ctx.get(), &before);
        if (rc != 0) f.fail("sansock_context_stats", rc);
        std::vector<sansock_socket_t> clients(r.param, 0);
        for (auto& c : clients)
            if (rc == 0) rc = f.connect(ctl, c);
        uint64_t accepted = 0;
        if (rc == 0 && (rc = ctl.wait_mark(accepted)) != 0) f.fail("waiting for the peer to accept", rc);
        if (rc == 0 && (rc = sansock_context_stats(f.ctx.get(), &after)) != 0) f.fail("sansock_context_stats", rc);
        if (rc == 0) {
            const uint64_t rss_after = resident_bytes();
            out.registered_bytes_per_connection = double(after.registered_bytes - before.registered_bytes) / double(r.param);
            out.resident_bytes_per_connection = double(rss_after > rss_before ? rss_after - rss_before : 0) /
                                                (double(r.param) * (ctl.same_process() ? 2 : 1));
            out.samples_ns.push_back(0);
        }
        for (auto c : clients)
            if (c != 0) close_hard(c);
        if (rc != 0) why = f.why;
        return rc;
    }
    case scenario::listener_abort:
        // An open listener with `param` accepts pending (each on its own channel).
        return repeat(r, out, why, [&]() -> double {
            sansock_listener* l = nullptr;
            int rc = sansock_listener_create(f.ctx.get(), nullptr, &l);
            if (rc != 0) return rc;
            rc = sansock_listener_open(l, &f.local.sa, address_size(f.local), nullptr);
            std::vector<sansock_channel*> channels(r.param, nullptr);
            std::atomic<int> cancelled{0};
            const sansock_async_context async{[](int, void* state) { static_cast<std::atomic<int>*>(state)->fetch_add(1); },
                                              &cancelled};
            for (auto& c : channels) {
                if (rc == 0) rc = sansock_channel_create(f.ctx.get(), nullptr, &c);
                if (rc == 0 && sansock_listener_accept(l, c, &async) != -EINPROGRESS) rc = -EPROTO;
            }
            const uint64_t t0 = now_ns();
            const int aborted = rc == 0 ? sansock_listener_abort(l) : rc;
            const uint64_t t1 = now_ns();
            // Every pending accept reports its cancellation (bounded) before the objects go.
            for (int i = 0; i < 2000 && cancelled.load() < static_cast<int>(r.param); ++i)
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
            sansock_listener_close(l, nullptr);
            sansock_listener_free(l);
            for (auto* c : channels)
                if (c != nullptr) sansock_channel_free(c);
            if (aborted != 0) return aborted;
            if (cancelled.load() != static_cast<int>(r.param)) return -EPROTO;
            return double(t1 - t0);
        });
    case scenario::service_host_close: return run_service_host_close(f, r, ctl, out, why);
    }
    return -EINVAL;
}

// A host here with one non-session endpoint and `param` channels that the peer half opens to
// it: its close closes the listener and every channel (session endpoints would also wait for
// each client to end its session, which measures the clients, not the host).
int run_service_host_close(context& f, const request& r, control& ctl, measurement& out, std::string& why) {
    return repeat(r, out, why, [&]() -> double {
        sansock_service_endpoint endpoint{&f.local.sa, address_size(f.local), SANSOCK_CHANNEL_NONSESSION};
        std::atomic<int> accepted{0};
        sansock_service_host_attr attr{};
        attr.size = sizeof attr;
        attr.close_timeout_ms = 30000;
        attr.on_channel = [](sansock_service_host*, size_t, sansock_channel*, void* state) {
            static_cast<std::atomic<int>*>(state)->fetch_add(1);
        };
        attr.state = &accepted;
        sansock_service_host* host = nullptr;
        int rc = sansock_service_host_create(f.ctx.get(), &endpoint, 1, &attr, &host);
        if (rc != 0) return rc;
        rc = sansock_service_host_open(host, nullptr);
        net_address bound{};
        socklen_t length = sizeof bound;
        if (rc == 0) rc = sansock_service_host_endpoint_address(host, 0, &bound.sa, &length);
        if (rc == 0) rc = ctl.send("host " + address_text(bound) + " " + std::to_string(address_port(bound)));
        std::string rest;
        if (rc == 0 && (rc = ctl.expect("opened", rest, peer_wait_ms)) != 0) why = "the peer's channels: " + rest;
        for (int i = 0; rc == 0 && i < 30000 && accepted.load() < static_cast<int>(r.param); ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        if (rc == 0 && accepted.load() != static_cast<int>(r.param)) rc = -ETIMEDOUT;
        uint64_t t0 = now_ns(), t1 = t0;
        if (rc == 0) {
            rc = sansock_service_host_close(host, nullptr);
            t1 = now_ns();
        } else {
            sansock_service_host_abort(host);
            sansock_service_host_close(host, nullptr);
        }
        sansock_service_host_free(host);
        if (int e = ctl.send("closed")) return e;
        return rc != 0 ? double(rc) : double(t1 - t0);
    });
}

// ---- peer half -----------------------------------------------------------------------------

// service_host_close: for each sample, `param` channels opened to the measuring half's host,
// kept until it has closed the host.
int serve_service_host_close(context& f, const request& r, control& ctl) {
    return peer_repeat(r, ctl, [&]() -> int {
        std::string rest;
        if (int rc = ctl.expect("host", rest, peer_wait_ms)) return f.fail("waiting for the host's address", rc);
        net_address host{};
        const std::string ip = rest.substr(0, rest.find(' '));
        if (!parse_address(ip, static_cast<uint16_t>(std::stoi(rest.substr(ip.size()))), host))
            return f.fail("host address", -EINVAL);
        std::vector<sansock_channel*> clients(r.param, nullptr);
        sansock_channel_attr client_attr{};
        client_attr.size = sizeof client_attr;
        client_attr.kind = SANSOCK_CHANNEL_NONSESSION;
        int rc = 0;
        for (auto& c : clients) {
            if (rc == 0) rc = sansock_channel_create(f.ctx.get(), &client_attr, &c);
            if (rc == 0) rc = sansock_channel_open(c, &host.sa, address_size(host), nullptr);
        }
        ctl.send(rc == 0 ? "opened" : std::string("fail channel open: ") + sansock_strerror(rc));
        if (rc == 0 && (rc = ctl.expect("closed", rest, peer_wait_ms)) != 0) f.fail("waiting for the host's close", rc);
        else if (rc != 0) f.fail("channel open", rc);
        for (auto* c : clients)
            if (c != nullptr) {
                sansock_channel_abort(c);
                sansock_channel_close(c, nullptr);
                sansock_channel_free(c);
            }
        return rc;
    });
}

int serve_scenario(context& f, sansock_socket_t listener, const request& r, control& ctl) {
    switch (r.what) {
    case scenario::hard_close:
        // The client's hard close resets the connection: the read ends, then this end closes.
        return peer_repeat(r, ctl, [&]() -> int {
            sansock_socket_t s = 0;
            if (int rc = accept_peer(f, listener, ctl, s)) return rc;
            drain(s);
            close_hard(s);
            return 0;
        });
    case scenario::graceful_close:
    case scenario::graceful_to_eof:
    case scenario::linger_close:
        return peer_repeat(r, ctl, [&]() -> int {
            sansock_socket_t s = 0;
            if (int rc = accept_peer(f, listener, ctl, s)) return rc;
            const ssize_t n = drain(s);
            ctl.mark();
            sansock_close(s);
            return n == 0 ? 0 : f.fail("peer reading to end of stream", n < 0 ? int(n) : -ECONNRESET);
        });
    case scenario::connect_teardown:
        return peer_repeat(r, ctl, [&]() -> int {
            sansock_socket_t s = 0;
            if (int rc = accept_peer(f, listener, ctl, s)) return rc;
            sansock_close(s);
            ctl.mark();
            return 0;
        });
    case scenario::ping_pong: {
        sansock_socket_t s = 0;
        if (int rc = accept_peer(f, listener, ctl, s)) return rc;
        const size_t size = std::max<uint64_t>(r.param, 1);
        std::vector<uint8_t> b(size);
        int rc = peer_repeat(r, ctl, [&]() -> int {
            if (sansock_recv(s, b.data(), size, MSG_WAITALL) != static_cast<ssize_t>(size)) return f.fail("echo receive", -EIO);
            if (sansock_send(s, b.data(), size, 0) != static_cast<ssize_t>(size)) return f.fail("echo send", -EIO);
            return 0;
        });
        f.report_waits("peer", r);
        drain(s);
        close_hard(s);
        return rc;
    }
    case scenario::bandwidth: {
        sansock_socket_t s = 0;
        if (int rc = accept_peer(f, listener, ctl, s)) return rc;
        const size_t size = std::max<uint64_t>(r.param, 1);
        const uint64_t per_sample = std::max<uint64_t>(r.stream_bytes / size, 1) * size;
        std::vector<uint8_t> b(1 << 20);
        int rc = peer_repeat(r, ctl, [&]() -> int {
            uint64_t got = 0;
            while (got < per_sample) {
                ssize_t n = sansock_recv(s, b.data(), std::min<uint64_t>(b.size(), per_sample - got), 0);
                if (n <= 0) return f.fail("sink", n < 0 ? int(n) : -ECONNRESET);
                got += static_cast<uint64_t>(n);
            }
            if (sansock_send(s, b.data(), 1, 0) != 1) return f.fail("sink acknowledgement", -EIO); // the sample's end
            return 0;
        });
        drain(s);
        close_hard(s);
        return rc;
    }
    case scenario::memory: {
        std::vector<sansock_socket_t> accepted(r.param, 0);
        int rc = 0;
        for (auto& s : accepted)
            if (rc == 0) rc = accept_peer(f, listener, ctl, s);
        if (rc == 0) ctl.mark();
        for (auto s : accepted)
            if (s != 0) {
                drain(s); // until the client's hard close
                close_hard(s);
            }
        return rc;
    }
    case scenario::service_host_close: return serve_service_host_close(f, r, ctl);
    case scenario::listener_close:
    case scenario::listener_abort: return 0; // the measuring half's own listeners
    }
    return -EINVAL;
}

int serve(const request& r, control& ctl, std::string& why) {
    context f;
    if (int rc = f.open(r.address)) {
        why = f.why;
        return rc;
    }
    sansock_socket_t listener = 0;
    net_address bound{};
    const bool listens = r.what != scenario::listener_close && r.what != scenario::listener_abort &&
                         r.what != scenario::service_host_close;
    if (listens) {
        if (int rc = f.listen(listener, bound)) {
            why = f.why;
            return rc;
        }
        const timeval slice{0, 200000};
        sansock_setsockopt(listener, SOL_SOCKET, SO_RCVTIMEO, &slice, sizeof slice);
    }
    int rc = ctl.ready(r.address, listens ? address_port(bound) : 0);
    if (rc == 0) rc = serve_scenario(f, listener, r, ctl);
    if (listener != 0) sansock_close(listener);
    if (rc != 0) why = f.why.empty() ? sansock_strerror(rc) : f.why;
    return rc;
}

const char* not_available(const request&) { return nullptr; }

} // namespace

const system sansock_system{"sansock", not_available, run, serve};

} // namespace sansock::bench

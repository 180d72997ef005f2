// SPDX-License-Identifier: MIT
// sansock measured through its public API, over the verbs provider, both ends in one context.
#include <arpa/inet.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "bench/bench.hpp"
#include "provider/verbs/verbs_provider.hpp"
#include "sansock/sansock.hpp"
#include "sansock/service.h"
#include "switch/context_hooks.hpp"

namespace sansock::bench {

namespace {

struct pair {
    sansock_socket_t client = 0, server = 0;
};

struct fixture {
    context_owner ctx;
    sansock_socket_t listener = 0;
    sockaddr_in address{};
    std::string why;

    int open(const std::string& ip, uint32_t progress_mode = SANSOCK_PROGRESS_THREAD) {
        sansock_context_attr attr;
        sansock_context_attr_init(&attr);
        attr.progress_mode = progress_mode;
        attr.graceful_timeout_ms = 5000;
        if (int rc = context_owner::create(&attr, ctx)) return fail("context", rc);
        address.sin_family = AF_INET;
        if (inet_pton(AF_INET, ip.c_str(), &address.sin_addr) != 1) return fail("address", -EINVAL);
        socklen_t length = sizeof address;
        int rc = sansock_socket(ctx.get(), &listener);
        if (rc == 0) rc = sansock_bind(listener, reinterpret_cast<sockaddr*>(&address), length);
        if (rc == 0) rc = sansock_listen(listener, 1024);
        if (rc == 0) rc = sansock_getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length);
        return rc == 0 ? 0 : fail("listener", rc);
    }
    int fail(const char* what, int rc) {
        why = std::string(what) + ": " + sansock_strerror(rc);
        return rc;
    }
    int connect(pair& p) {
        int rc = sansock_socket(ctx.get(), &p.client);
        if (rc == 0) rc = sansock_connect(p.client, reinterpret_cast<sockaddr*>(&address), sizeof address);
        if (rc == 0) rc = sansock_accept(listener, &p.server, nullptr, nullptr);
        return rc == 0 ? 0 : fail("connect", rc);
    }
    void close_hard(sansock_socket_t s) {
        const linger hard{1, 0};
        sansock_setsockopt(s, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
        sansock_close(s);
    }
};

int set_timeouts(sansock_socket_t s) {
    timeval ten{10, 0};
    sansock_setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &ten, sizeof ten);
    return sansock_setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &ten, sizeof ten);
}

void count_callback(void* user, int64_t) { static_cast<std::atomic<int>*>(user)->fetch_add(1); }

// Runs `once` warm-up + iterations times; `once` returns a duration in ns or a negated errno.
template <typename Once>
int repeat(const request& r, measurement& out, std::string& why, Once&& once) {
    for (int i = 0; i < r.warmup + r.iterations; ++i) {
        double ns = once();
        if (ns < 0) {
            if (why.empty()) why = sansock_strerror(static_cast<int>(ns));
            return static_cast<int>(ns);
        }
        if (i >= r.warmup) out.samples_ns.push_back(ns);
    }
    return 0;
}

int run(const request& r, measurement& out, std::string& why) {
    fixture f;
    if (int rc = f.open(r.address)) {
        why = f.why;
        return rc;
    }
    switch (r.what) {
    case scenario::hard_close:
        return repeat(r, out, why, [&]() -> double {
            pair p;
            if (int rc = f.connect(p)) return rc;
            std::atomic<int> cancelled{0};
            std::vector<uint8_t> buffer(64 * std::max<uint64_t>(r.param, 1));
            for (uint64_t i = 0; i < r.param; ++i)
                if (int rc = sansock_recv_async(p.client, buffer.data() + 64 * i, 64, count_callback, &cancelled)) return rc;
            const linger hard{1, 0};
            sansock_setsockopt(p.client, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
            const uint64_t t0 = now_ns();
            int rc = sansock_close(p.client);
            const uint64_t t1 = now_ns();
            f.close_hard(p.server);
            if (rc != 0) return rc;
            if (cancelled.load() != static_cast<int>(r.param)) return -EPROTO; // all cancelled inside close
            return double(t1 - t0);
        });
    case scenario::graceful_close:
    case scenario::graceful_to_eof:
        return repeat(r, out, why, [&]() -> double {
            pair p;
            if (int rc = f.connect(p)) return rc;
            set_timeouts(p.server);
            char byte = 1;
            sansock_send(p.client, &byte, 1, 0);
            std::atomic<uint64_t> eof_at{0};
            std::thread reader([&] {
                char got[64];
                ssize_t n;
                while ((n = sansock_recv(p.server, got, sizeof got, 0)) > 0) {
                }
                if (n == 0) eof_at = now_ns();
            });
            std::this_thread::sleep_for(std::chrono::microseconds(200)); // the reader is waiting
            const uint64_t t0 = now_ns();
            int rc = sansock_close(p.client);
            const uint64_t t1 = now_ns();
            reader.join();
            sansock_close(p.server);
            if (rc != 0) return rc;
            if (eof_at.load() == 0) return -ECONNRESET;
            return double((r.what == scenario::graceful_close ? t1 : eof_at.load()) - t0);
        });
    case scenario::linger_close:
        return repeat(r, out, why, [&]() -> double {
            pair p;
            if (int rc = f.connect(p)) return rc;
            set_timeouts(p.server);
            std::vector<uint8_t> data(std::max<uint64_t>(r.param, 1), 7);
            std::thread reader([&] {
                std::vector<uint8_t> got(64 * 1024);
                while (sansock_recv(p.server, got.data(), got.size(), 0) > 0) {
                }
            });
            size_t sent = 0;
            while (sent < data.size()) {
                ssize_t n = sansock_send(p.client, data.data() + sent, data.size() - sent, 0);
                if (n <= 0) break;
                sent += static_cast<size_t>(n);
            }
            const linger wait{1, 10};
            sansock_setsockopt(p.client, SOL_SOCKET, SO_LINGER, &wait, sizeof wait);
            const uint64_t t0 = now_ns();
            int rc = sansock_close(p.client);
            const uint64_t t1 = now_ns();
            reader.join();
            sansock_close(p.server);
            return rc != 0 ? double(rc) : double(t1 - t0);
        });
    case scenario::listener_close:
        return repeat(r, out, why, [&]() -> double {
            sansock_socket_t l = 0;
            sockaddr_in a = f.address;
            a.sin_port = 0;
            int rc = sansock_socket(f.ctx.get(), &l);
            if (rc == 0) rc = sansock_bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a);
            if (rc == 0) rc = sansock_listen(l, 1024);
            std::atomic<int> cancelled{0};
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
        return repeat(r, out, why, [&]() -> double {
            const uint64_t t0 = now_ns();
            pair p;
            if (int rc = f.connect(p)) return rc;
            sansock_close(p.client);
            sansock_close(p.server);
            return double(now_ns() - t0);
        });
    case scenario::ping_pong: {
        pair p;
        if (int rc = f.connect(p)) {
            why = f.why;
            return rc;
        }
        set_timeouts(p.client);
        set_timeouts(p.server);
        const size_t size = std::max<uint64_t>(r.param, 1);
        const int total = r.warmup + r.iterations;
        std::thread echo([&] {
            std::vector<uint8_t> b(size);
            for (int i = 0; i < total; ++i) {
                if (sansock_recv(p.server, b.data(), size, MSG_WAITALL) != static_cast<ssize_t>(size)) return;
                if (sansock_send(p.server, b.data(), size, 0) != static_cast<ssize_t>(size)) return;
            }
        });
        std::vector<uint8_t> b(size, 1);
        int rc = repeat(r, out, why, [&]() -> double {
            const uint64_t t0 = now_ns();
            if (sansock_send(p.client, b.data(), size, 0) != static_cast<ssize_t>(size)) return -EIO;
            if (sansock_recv(p.client, b.data(), size, MSG_WAITALL) != static_cast<ssize_t>(size)) return -EIO;
            return double(now_ns() - t0);
        });
        echo.join();
        f.close_hard(p.client);
        f.close_hard(p.server);
        return rc;
    }
    case scenario::bandwidth: {
        pair p;
        if (int rc = f.connect(p)) {
            why = f.why;
            return rc;
        }
        set_timeouts(p.client);
        set_timeouts(p.server);
        const size_t size = std::max<uint64_t>(r.param, 1);
        const uint64_t per_sample = std::max<uint64_t>(r.stream_bytes / size, 1) * size;
        const int total = r.warmup + r.iterations;
        std::atomic<int> samples_read{0};
        std::thread sink([&] {
            std::vector<uint8_t> b(1 << 20);
            for (int i = 0; i < total; ++i) {
                uint64_t got = 0;
                while (got < per_sample) {
                    ssize_t n = sansock_recv(p.server, b.data(), std::min<uint64_t>(b.size(), per_sample - got), 0);
                    if (n <= 0) return;
                    got += static_cast<uint64_t>(n);
                }
                samples_read.fetch_add(1);
                if (sansock_send(p.server, b.data(), 1, 0) != 1) return; // the sample's end
            }
        });
        std::vector<uint8_t> b(size, 3);
        out.bytes_per_sample = per_sample;
        int rc = repeat(r, out, why, [&]() -> double {
            const uint64_t t0 = now_ns();
            for (uint64_t sent = 0; sent < per_sample;) {
                ssize_t n = sansock_send(p.client, b.data(), size, 0);
                if (n <= 0) return n < 0 ? double(n) : -EIO;
                sent += static_cast<uint64_t>(n);
            }
            char ack;
            if (sansock_recv(p.client, &ack, 1, 0) != 1) return -EIO;
            return double(now_ns() - t0);
        });
        sink.join();
        f.close_hard(p.client);
        f.close_hard(p.server);
        return rc;
    }
    case scenario::memory: {
        const uint64_t rss_before = resident_bytes();
        provider::memory_stats before{};
        verbs::verbs_ops.query_memory(provider_instance_of(f.ctx.get()), &before);
        std::vector<pair> pairs(r.param);
        for (pair& p : pairs)
            if (int rc = f.connect(p)) {
                why = f.why;
                return rc;
            }
        provider::memory_stats after{};
        verbs::verbs_ops.query_memory(provider_instance_of(f.ctx.get()), &after);
        const double connections = 2.0 * double(r.param); // both ends live in this process
        out.registered_bytes_per_connection = double(after.registered_bytes - before.registered_bytes) / connections;
        out.resident_bytes_per_connection = double(resident_bytes() - rss_before) / connections;
        for (pair& p : pairs) {
            f.close_hard(p.client);
            f.close_hard(p.server);
        }
        out.samples_ns.push_back(0);
        return 0;
    }
    case scenario::listener_abort:
        // An open listener with `param` accepts pending (each on its own channel).
        return repeat(r, out, why, [&]() -> double {
            sansock_listener* l = nullptr;
            int rc = sansock_listener_create(f.ctx.get(), nullptr, &l);
            if (rc != 0) return rc;
            sockaddr_in a = f.address;
            a.sin_port = 0;
            rc = sansock_listener_open(l, reinterpret_cast<sockaddr*>(&a), sizeof a, nullptr);
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
    case scenario::service_host_close:
        // A host with one non-session endpoint and `param` accepted channels: its close
        // closes the listener and every channel (session endpoints would also wait for each
        // client to end its session, which measures the clients, not the host).
        return repeat(r, out, why, [&]() -> double {
            sockaddr_in a = f.address;
            a.sin_port = 0;
            sansock_service_endpoint endpoint{reinterpret_cast<sockaddr*>(&a), sizeof a, SANSOCK_CHANNEL_NONSESSION};
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
            sockaddr_in bound{};
            socklen_t length = sizeof bound;
            if (rc == 0) rc = sansock_service_host_endpoint_address(host, 0, reinterpret_cast<sockaddr*>(&bound), &length);
            std::vector<sansock_channel*> clients(r.param, nullptr);
            sansock_channel_attr client_attr{};
            client_attr.size = sizeof client_attr;
            client_attr.kind = SANSOCK_CHANNEL_NONSESSION;
            for (auto& c : clients) {
                if (rc == 0) rc = sansock_channel_create(f.ctx.get(), &client_attr, &c);
                if (rc == 0) rc = sansock_channel_open(c, reinterpret_cast<sockaddr*>(&bound), length, nullptr);
            }
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
            for (auto* c : clients)
                if (c != nullptr) {
                    sansock_channel_abort(c);
                    sansock_channel_close(c, nullptr);
                    sansock_channel_free(c);
                }
            sansock_service_host_free(host);
            return rc != 0 ? double(rc) : double(t1 - t0);
        });
    }
    return -EINVAL;
}

} // namespace

const system sansock_system{"sansock", run};

} // namespace sansock::bench

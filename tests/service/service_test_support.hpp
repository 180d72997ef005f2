// SPDX-License-Identifier: MIT
// Helpers of the service tests: loopback contexts on one fabric, a provider with gates (hold a
// listen, a connect or a close, so OPENING and CLOSING can be observed), async-callback
// recorders; watchdogs and bounded waits come from tests/support/bounded_time.hpp.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

#include "provider/loopback/loopback.hpp"
#include "provider/provider.hpp"
#include "sansock/sansock.h"
#include "sansock/service.h"
#include "switch/context_hooks.hpp"
#include "tests/support/bounded_time.hpp"
#include "tests/support/address.hpp"

namespace sansock::svctest {

using namespace std::chrono_literals;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

using sansock::test::background;
using sansock::test::bounded;
using sansock::test::die;
using sansock::test::eventually;
using sansock::test::watchdog;


inline void settle(milliseconds d = 100ms) { std::this_thread::sleep_for(d); }

inline const char* kAddress = "10.9.0.1";

inline sockaddr_in ipv4(uint16_t port, const char* dotted = kAddress) { return test::ipv4(dotted, port); }
using test::as_sockaddr;

// ---- a provider with gates --------------------------------------------------------------------

struct gates {
    std::mutex mutex;
    std::condition_variable changed;
    provider::ops base{};
    bool hold_listen = false;
    int listens_held = 0;
    bool hold_close = false;
    int closes_held = 0;
    bool hold_connect = false;
    struct held_connect {
        provider::instance* inst;
        provider::socket_handle s;
        provider::operation* op;
    };
    std::vector<held_connect> connects;

    void set_listen(bool on) {
        std::lock_guard lock(mutex);
        hold_listen = on;
        changed.notify_all();
    }
    void set_close(bool on) {
        std::lock_guard lock(mutex);
        hold_close = on;
        changed.notify_all();
    }
    bool wait_listen_held() {
        std::unique_lock lock(mutex);
        return changed.wait_for(lock, 10s, [this] { return listens_held > 0; });
    }
    bool wait_close_held() {
        std::unique_lock lock(mutex);
        return changed.wait_for(lock, 10s, [this] { return closes_held > 0; });
    }
    void set_connect(bool on) {
        std::vector<held_connect> release;
        {
            std::lock_guard lock(mutex);
            hold_connect = on;
            if (!on) release.swap(connects);
        }
        for (auto& h : release) {
            const int rc = base.connect(h.inst, h.s, h.op);
            if (rc != 0) {
                h.op->result = rc;
                h.op->complete(*h.op);
            }
        }
    }
    size_t connects_held() {
        std::lock_guard lock(mutex);
        return connects.size();
    }
};

inline gates& gate() {
    static gates g;
    return g;
}

inline int gated_listen(provider::instance* self, provider::socket_handle s, int backlog) {
    {
        gates& g = gate();
        std::unique_lock lock(g.mutex);
        if (g.hold_listen) {
            ++g.listens_held;
            g.changed.notify_all();
            g.changed.wait(lock, [&] { return !g.hold_listen; });
            --g.listens_held;
        }
    }
    return gate().base.listen(self, s, backlog);
}

inline int gated_connect(provider::instance* self, provider::socket_handle s, provider::operation* op) {
    gates& g = gate();
    {
        std::lock_guard lock(g.mutex);
        if (g.hold_connect) {
            g.connects.push_back({self, s, op});
            g.changed.notify_all();
            return 0;
        }
    }
    return g.base.connect(self, s, op);
}

inline int gated_close(provider::instance* self, provider::socket_handle s) {
    gates& g = gate();
    provider::operation* held = nullptr;
    {
        std::unique_lock lock(g.mutex);
        for (auto it = g.connects.begin(); it != g.connects.end(); ++it)
            if (it->inst == self && it->s == s) {
                held = it->op;
                g.connects.erase(it);
                break;
            }
        if (g.hold_close) {
            ++g.closes_held;
            g.changed.notify_all();
            g.changed.wait(lock, [&] { return !g.hold_close; });
            --g.closes_held;
        }
    }
    const int rc = g.base.close(self, s);
    if (held != nullptr) { // a held connect completes, cancelled, inside close
        held->result = -ECANCELED;
        held->complete(*held);
    }
    return rc;
}

inline const provider::ops* gated_ops() {
    static const provider::ops table = [] {
        provider::ops o = provider::with_defaults(loopback_ops);
        gate().base = o;
        o.listen = gated_listen;
        o.connect = gated_connect;
        o.close = gated_close;
        return o;
    }();
    return &table;
}

// ---- contexts --------------------------------------------------------------------------------

// A loopback fabric and the contexts on it; destroys them in order.
class world {
public:
    world() : net_(loopback::create_fabric()) { REQUIRE(net_ != nullptr); }
    ~world() {
        for (auto it = contexts_.rbegin(); it != contexts_.rend(); ++it) {
            const int rc = bounded("sansock_context_destroy", [c = *it] { return sansock_context_destroy(c); });
            CHECK(rc == 0);
        }
        CHECK(loopback::destroy_fabric(net_) == 0);
    }
    world(const world&) = delete;
    world& operator=(const world&) = delete;

    // gated: the context's provider is the gated loopback (the gates start open).
    sansock_context* host(bool gated = false, uint32_t slot_size = 0) {
        sansock_context_attr attr;
        sansock_context_attr_init(&attr);
        attr.provider = SANSOCK_PROVIDER_LOOPBACK;
        if (slot_size != 0) attr.slot_size = slot_size;
        context_hooks hooks;
        hooks.provider_specific = net_;
        if (gated) hooks.provider_ops = gated_ops();
        sansock_context* ctx = nullptr;
        REQUIRE(create_context(&attr, hooks, &ctx) == 0);
        contexts_.push_back(ctx);
        return ctx;
    }

private:
    loopback::fabric* net_;
    std::vector<sansock_context*> contexts_;
};

// ---- async recorder -----------------------------------------------------------------------------

struct async_record {
    std::mutex mutex;
    std::condition_variable changed;
    int calls = 0;
    int result = 0;
    std::thread::id thread;

    sansock_async_context context() { return {&on_done, this}; }
    static void on_done(int result, void* state) {
        auto* r = static_cast<async_record*>(state);
        std::lock_guard lock(r->mutex);
        ++r->calls;
        r->result = result;
        r->thread = std::this_thread::get_id();
        r->changed.notify_all();
    }
    bool wait(milliseconds timeout = 10s) {
        std::unique_lock lock(mutex);
        return changed.wait_for(lock, timeout, [this] { return calls > 0; });
    }
    int count() {
        std::lock_guard lock(mutex);
        return calls;
    }
    int get() {
        std::lock_guard lock(mutex);
        return result;
    }
    std::thread::id where() {
        std::lock_guard lock(mutex);
        return thread;
    }
};

// The final result of an async call: either its immediate return (and no callback ever) or
// -EINPROGRESS and exactly one callback, on another thread.
inline int async_outcome(int returned, async_record& r, milliseconds limit = 10s) {
    if (returned != -EINPROGRESS) {
        settle(50ms);
        CHECK(r.count() == 0);
        return returned;
    }
    if (!r.wait(limit)) die("async callback never came");
    settle(50ms);
    CHECK(r.count() == 1);
    CHECK(r.where() != std::this_thread::get_id());
    return r.get();
}

// ---- object helpers -----------------------------------------------------------------------------

inline sansock_listener* new_listener(sansock_context* ctx) {
    sansock_listener* l = nullptr;
    REQUIRE(sansock_listener_create(ctx, nullptr, &l) == 0);
    REQUIRE(l != nullptr);
    return l;
}

inline sansock_channel* new_channel(sansock_context* ctx, uint32_t kind = SANSOCK_CHANNEL_SESSION,
                                    uint32_t close_timeout_ms = 0) {
    sansock_channel_attr attr{sizeof(sansock_channel_attr), kind, close_timeout_ms, 0};
    sansock_channel* c = nullptr;
    REQUIRE(sansock_channel_create(ctx, &attr, &c) == 0);
    REQUIRE(c != nullptr);
    return c;
}

inline int open_listener(sansock_listener* l) {
    const sockaddr_in any = ipv4(0);
    return sansock_listener_open(l, as_sockaddr(any), sizeof any, nullptr);
}

inline sockaddr_in address_of(sansock_listener* l) {
    sockaddr_in a{};
    socklen_t n = sizeof a;
    REQUIRE(sansock_listener_address(l, reinterpret_cast<sockaddr*>(&a), &n) == 0);
    return a;
}

inline int open_channel(sansock_channel* c, const sockaddr_in& to) {
    return bounded("sansock_channel_open", [c, to] { return sansock_channel_open(c, as_sockaddr(to), sizeof to, nullptr); });
}

inline int lstate(sansock_listener* l) { return sansock_listener_get_state(l); }
inline int cstate(sansock_channel* c) { return sansock_channel_get_state(c); }

inline int send_text(sansock_channel* c, const std::string& text) {
    return bounded("sansock_channel_send", [c, text] { return sansock_channel_send(c, text.data(), text.size()); });
}

struct received {
    int rc = 0;
    std::string text;
};
inline received receive_text(sansock_channel* c, milliseconds limit = 30s) {
    return bounded("sansock_channel_receive", [c] {
        received r;
        std::vector<char> buffer(65536);
        size_t size = 0;
        r.rc = sansock_channel_receive(c, buffer.data(), buffer.size(), &size);
        if (r.rc == 0) r.text.assign(buffer.data(), size);
        return r;
    }, limit);
}

// Closes (bounded) and frees a channel whatever its state (abort first).
inline void dispose(sansock_channel* c) {
    if (c == nullptr) return;
    sansock_channel_abort(c);
    const int st = cstate(c);
    if (st != SANSOCK_CHANNEL_CREATED && st != SANSOCK_CHANNEL_CLOSED) {
        REQUIRE(eventually([&] { return cstate(c) != SANSOCK_CHANNEL_OPENING && cstate(c) != SANSOCK_CHANNEL_ACCEPTING && cstate(c) != SANSOCK_CHANNEL_CLOSING; }));
        if (cstate(c) != SANSOCK_CHANNEL_CREATED) bounded("channel close", [c] { return sansock_channel_close(c, nullptr); });
    }
    CHECK(bounded("channel free", [c] { return sansock_channel_free(c); }) == 0);
}

inline void dispose(sansock_listener* l) {
    if (l == nullptr) return;
    sansock_listener_abort(l);
    REQUIRE(eventually([&] { return lstate(l) != SANSOCK_LISTENER_OPENING && lstate(l) != SANSOCK_LISTENER_CLOSING; }));
    if (lstate(l) != SANSOCK_LISTENER_CREATED) bounded("listener close", [l] { return sansock_listener_close(l, nullptr); });
    CHECK(bounded("listener free", [l] { return sansock_listener_free(l); }) == 0);
}

// A connected pair of channels: client (on client_ctx) opened to a listener on server_ctx,
// server accepted from it.
struct channel_pair {
    sansock_listener* listener = nullptr;
    sansock_channel* client = nullptr;
    sansock_channel* server = nullptr;
};
inline channel_pair connect_pair(sansock_context* client_ctx, sansock_context* server_ctx,
                                 uint32_t kind = SANSOCK_CHANNEL_SESSION, uint32_t close_timeout_ms = 0) {
    channel_pair p;
    p.listener = new_listener(server_ctx);
    REQUIRE(open_listener(p.listener) == 0);
    p.client = new_channel(client_ctx, kind, close_timeout_ms);
    p.server = new_channel(server_ctx, kind, close_timeout_ms);
    background<int> accepting("accept", [&] { return sansock_listener_accept(p.listener, p.server, nullptr); });
    REQUIRE(open_channel(p.client, address_of(p.listener)) == 0);
    REQUIRE(accepting.result() == 0);
    REQUIRE(cstate(p.client) == SANSOCK_CHANNEL_OPEN);
    REQUIRE(cstate(p.server) == SANSOCK_CHANNEL_OPEN);
    return p;
}
inline void dispose(channel_pair& p) {
    dispose(p.client);
    dispose(p.server);
    dispose(p.listener);
}

} // namespace sansock::svctest

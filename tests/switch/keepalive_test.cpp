// SPDX-License-Identifier: MIT
// Dead-peer detection (SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT; docs/semantics.md,
// "Keepalive"): with the peer's connection frozen (a vanished host: nothing arrives, nothing
// fails), a blocked recv, a blocked send, sansock_poll, a lingering close and a background
// graceful close each end with -ETIMEDOUT exactly when idle + count x interval seconds of the
// context's clock have passed without a byte from the peer, after `count` probes; a live idle
// peer answers every probe and is never timed out, with a full window too; data flows
// unchanged while probes interleave with it; a raw peer sees the probes and replies on the
// wire; the options round-trip, pass from a listener to its connections, take the context's
// defaults, and refuse bad values.
#include <netinet/tcp.h>

#include "tests/switch/switch_test_support.hpp"

namespace sansock::switchtest {
namespace {

constexpr int idle_s = 10, interval_s = 5, count = 3;
constexpr milliseconds dead_after{(idle_s + interval_s * count) * 1000}; // 25 s

int set_tcp(sansock_socket_t s, int name, int value) { return sansock_setsockopt(s, IPPROTO_TCP, name, &value, sizeof value); }
int get_option(sansock_socket_t s, int level, int name) {
    int value = -12345;
    socklen_t length = sizeof value;
    REQUIRE(sansock_getsockopt(s, level, name, &value, &length) == 0);
    CHECK(length == sizeof value);
    return value;
}

void keepalive(sansock_socket_t s, int idle = idle_s, int interval = interval_s, int probes = count) {
    REQUIRE(set_int_option(s, SO_KEEPALIVE, 1) == 0);
    REQUIRE(set_tcp(s, TCP_KEEPIDLE, idle) == 0);
    REQUIRE(set_tcp(s, TCP_KEEPINTVL, interval) == 0);
    REQUIRE(set_tcp(s, TCP_KEEPCNT, probes) == 0);
}

struct sansock_context_stats stats_of(sansock_context* ctx) {
    struct sansock_context_stats st{};
    st.size = sizeof st;
    REQUIRE(sansock_context_stats(ctx, &st) == 0);
    return st;
}

// Collects a context's log lines.
struct log_sink {
    std::mutex mutex;
    std::vector<std::pair<int, std::string>> lines;
    static void receive(void* user, int level, const char* message) {
        auto* self = static_cast<log_sink*>(user);
        std::lock_guard lock(self->mutex);
        self->lines.emplace_back(level, message);
    }
    std::vector<std::pair<int, std::string>> matching(const std::string& a, const std::string& b) {
        std::lock_guard lock(mutex);
        std::vector<std::pair<int, std::string>> found;
        for (const auto& l : lines)
            if (l.second.find(a) != std::string::npos && l.second.find(b) != std::string::npos) found.push_back(l);
        return found;
    }
};

// A context on the world's fabric and clock whose attributes a test sets; destroyed before
// the world.
class host {
public:
    host(world& w, const std::function<void(sansock_context_attr&)>& edit = {}) {
        sansock_context_attr attr;
        sansock_context_attr_init(&attr);
        attr.provider = SANSOCK_PROVIDER_LOOPBACK;
        attr.graceful_timeout_ms = 600000; // out of the way: keepalive ends what hangs
        attr.log_level = SANSOCK_LOG_INFO;
        attr.log = &log_sink::receive;
        attr.log_user = &log;
        if (edit) edit(attr);
        context_hooks hooks;
        hooks.provider_specific = w.fabric();
        hooks.now = w.clock.function();
        hooks.session_version = w.session_version;
        REQUIRE(create_context(&attr, hooks, &ctx) == 0);
    }
    ~host() { CHECK(bounded("sansock_context_destroy", [c = ctx] { return sansock_context_destroy(c); }) == 0); }
    host(const host&) = delete;
    host& operator=(const host&) = delete;
    sansock_context* get() const { return ctx; }

    log_sink log;

private:
    sansock_context* ctx = nullptr;
};

// Moves the clock by `d` and waits until the socket has sent `probes` probes in all.
void advance_expecting(world& w, sansock_socket_t s, milliseconds d, uint64_t probes) {
    w.clock.advance(d);
    CHECK(eventually([&] { return internals_of(s).probes_sent == probes; }));
}

enum class wait_kind { recv, send, poll, linger_close, background_close };

const char* name_of(wait_kind k) {
    switch (k) {
    case wait_kind::recv: return "a blocked recv";
    case wait_kind::send: return "a blocked send";
    case wait_kind::poll: return "sansock_poll";
    case wait_kind::linger_close: return "a SO_LINGER {1, 60} close";
    case wait_kind::background_close: return "a background graceful close";
    }
    return "?";
}

void check_wait_ends_on_time(wait_kind kind) {
    CAPTURE(name_of(kind));
    world w;
    host a(w), b(w);
    const connection c = connect_pair(a.get(), b.get());
    keepalive(c.client);
    REQUIRE(freeze(b.get(), c.server, true) == 0); // b vanished: nothing moves, nothing fails

    std::optional<background<int64_t>> waiting;
    sansock_pollfd polled{c.client, SANSOCK_POLLIN, 0};
    switch (kind) {
    case wait_kind::recv:
        waiting.emplace("recv", [s = c.client] {
            char byte = 0;
            return int64_t(sansock_recv(s, &byte, 1, 0));
        }, 60s);
        break;
    case wait_kind::send: {
        fill_until_full(c.client, false); // nothing is acknowledged: the send buffer fills
        waiting.emplace("send", [s = c.client] {
            const std::vector<uint8_t> more = pattern_bytes(0, 65536);
            return int64_t(sansock_send(s, more.data(), more.size(), 0));
        }, 60s);
        break;
    }
    case wait_kind::poll:
        waiting.emplace("poll", [&polled] { return int64_t(sansock_poll(&polled, 1, -1)); }, 60s);
        break;
    case wait_kind::linger_close: {
        const auto data = pattern_bytes(0, 1000);
        REQUIRE(send_all(c.client, data.data(), data.size()) == 0); // never acknowledged
        REQUIRE(set_linger(c.client, 1, 60) == 0);
        waiting.emplace("close", [s = c.client] { return int64_t(sansock_close(s)); }, 60s);
        break;
    }
    case wait_kind::background_close: {
        const auto data = pattern_bytes(0, 1000);
        REQUIRE(send_all(c.client, data.data(), data.size()) == 0);
        REQUIRE(sansock_close(c.client) == 0); // SO_DONTLINGER: goes on in the background
        break;
    }
    }
    const bool closed = kind == wait_kind::background_close;
    auto ended = [&] {
        if (closed) return stats_of(a.get()).resets_sent[SANSOCK_RESET_KEEPALIVE_TIMEOUT] == 1;
        return waiting->finished();
    };
    // The probes the background close sends are not visible through its handle: count them
    // through the stats instead, and the end through the reset.
    settle(300ms);
    CHECK_FALSE(ended());
    if (!closed) {
        w.clock.advance(milliseconds(idle_s * 1000 - 500)); // 9.5 s: no probe yet
        settle(200ms);
        CHECK(internals_of(c.client).probes_sent == 0);
        w.clock.advance(500ms); // 10 s: the first probe
        CHECK(eventually([&] { return internals_of(c.client).probes_sent == 1; }));
        advance_expecting(w, c.client, milliseconds(interval_s * 1000), 2); // 15 s
        advance_expecting(w, c.client, milliseconds(interval_s * 1000), 3); // 20 s
        w.clock.advance(milliseconds(interval_s * 1000 - 100)); // 24.9 s: still waiting
    } else {
        w.clock.advance(dead_after - 100ms);
    }
    settle(300ms);
    CHECK_FALSE(ended());
    if (!closed) CHECK(internals_of(c.client).probes_sent == count); // no more than count probes
    CHECK(stats_of(a.get()).resets_sent[SANSOCK_RESET_KEEPALIVE_TIMEOUT] == 0);
    w.clock.advance(100ms); // 25 s = idle + count x interval (well within its 10 %)
    CHECK(eventually(ended));

    switch (kind) {
    case wait_kind::recv:
    case wait_kind::send:
    case wait_kind::linger_close: CHECK(waiting->result() == -ETIMEDOUT); break;
    case wait_kind::poll:
        CHECK(waiting->result() == 1);
        CHECK((polled.revents & SANSOCK_POLLERR) != 0);
        CHECK((polled.revents & SANSOCK_POLLHUP) != 0);
        CHECK(get_option(c.client, SOL_SOCKET, SO_ERROR) == ETIMEDOUT);
        break;
    case wait_kind::background_close: break;
    }
    if (kind == wait_kind::recv || kind == wait_kind::send || kind == wait_kind::poll) {
        // The socket stays failed with -ETIMEDOUT.
        char byte = 0;
        CHECK(sansock_recv(c.client, &byte, 1, 0) == -ETIMEDOUT);
        CHECK(sansock_send(c.client, "x", 1, 0) == -ETIMEDOUT);
        CHECK(sansock_close(c.client) == 0);
    }
    const struct sansock_context_stats st = stats_of(a.get());
    CHECK(st.resets_sent[SANSOCK_RESET_KEEPALIVE_TIMEOUT] == 1);
    CHECK(st.graceful_timed_out == 0);
    CHECK(st.graceful_completed == 0);
    const auto said = a.log.matching("reset sent: keepalive time-out", "nothing received for 25 s, 3 probes 5 s apart unanswered");
    CHECK(said.size() == 1);
    if (!said.empty()) CHECK(said.front().first == SANSOCK_LOG_INFO);
    if (closed && !said.empty()) CHECK(said.front().second.find("closed by the user") != std::string::npos);
    // The connection was reset: once b is back it sees that.
    REQUIRE(freeze(b.get(), c.server, false) == 0);
    CHECK(wait_for_recv_error(c.server) == -ECONNRESET);
    CHECK(sansock_close(c.server) == 0);
    CHECK(sansock_close(c.listener) == 0);
}

TEST_CASE("A vanished peer: a blocked recv ends with -ETIMEDOUT after idle + count x interval, count probes sent") {
    watchdog guard("keepalive, recv");
    check_wait_ends_on_time(wait_kind::recv);
}

TEST_CASE("A vanished peer: a blocked send ends with -ETIMEDOUT after idle + count x interval") {
    watchdog guard("keepalive, send");
    check_wait_ends_on_time(wait_kind::send);
}

TEST_CASE("A vanished peer: sansock_poll (no time-out) ends with SANSOCK_POLLERR, SO_ERROR ETIMEDOUT, after idle + count x interval") {
    watchdog guard("keepalive, poll");
    check_wait_ends_on_time(wait_kind::poll);
}

TEST_CASE("A vanished peer: a background graceful close is reset after idle + count x interval, before its own time-out") {
    watchdog guard("keepalive, background close");
    check_wait_ends_on_time(wait_kind::background_close);
}

TEST_CASE("A vanished peer: a blocking SO_LINGER {1, 60} close returns -ETIMEDOUT after idle + count x interval") {
    watchdog guard("keepalive, linger close");
    check_wait_ends_on_time(wait_kind::linger_close);
}

TEST_CASE("A live idle peer answers every probe and is never timed out, also with a full window") {
    watchdog guard("keepalive, live peer");
    world w;
    host a(w), b(w);
    const connection c = connect_pair(a.get(), b.get());
    keepalive(c.client);
    bool full_window = false;
    SUBCASE("nothing in flight") {}
    SUBCASE("the peer's application reads nothing: the window is full") {
        full_window = true;
        fill_until_full(c.client, true);
    }
    CAPTURE(full_window);
    // 200 s of silence but for the probes, in steps of half the idle time, each longer than
    // the progress thread's 100 ms between timer checks: a probe every other step, answered
    // before the next.
    for (int step = 0; step < 40; ++step) {
        w.clock.advance(milliseconds(idle_s * 500));
        settle(150ms);
        CHECK(eventually([&] { return internals_of(c.client).probes_unanswered == 0; }));
    }
    const socket_internals k = internals_of(c.client);
    CAPTURE(k.probes_sent);
    CHECK(k.probes_sent >= 10);
    CHECK(k.probe_replies == k.probes_sent);
    for (sansock_context* ctx : {a.get(), b.get()}) {
        const struct sansock_context_stats st = stats_of(ctx);
        for (int r = 0; r < SANSOCK_RESET_REASONS; ++r) {
            CAPTURE(r);
            CHECK(st.resets_sent[r] == 0);
            CHECK(st.resets_received[r] == 0);
        }
    }
    if (full_window) {
        const read_outcome got = bounded("drain", [&] {
            read_outcome out;
            REQUIRE(set_nonblocking(c.server, true) == 0);
            std::vector<uint8_t> buffer(65536);
            for (int quiet = 0; quiet < 20;) {
                const ssize_t r = sansock_recv(c.server, buffer.data(), buffer.size(), 0);
                if (r == -EWOULDBLOCK) {
                    ++quiet;
                    settle(10ms);
                    continue;
                }
                REQUIRE(r > 0);
                quiet = 0;
                for (ssize_t i = 0; i < r; ++i)
                    if (buffer[size_t(i)] != pattern(out.bytes + uint64_t(i))) out.in_order = false;
                out.bytes += uint64_t(r);
            }
            REQUIRE(set_nonblocking(c.server, false) == 0);
            return out;
        });
        CHECK(got.bytes > 0);
        CHECK(got.in_order);
        REQUIRE(set_nonblocking(c.client, false) == 0);
    }
    check_healthy(c);
    CHECK(sansock_close(c.client) == 0);
    CHECK(sansock_close(c.server) == 0);
    CHECK(sansock_close(c.listener) == 0);
}

TEST_CASE("Data flows unchanged both ways while probes interleave with it") {
    watchdog guard("keepalive, data");
    world w;
    host a(w), b(w);
    const connection c = connect_pair(a.get(), b.get());
    // A probe whenever a side has heard nothing for a second of the clock, which moves 1 s
    // every 20 ms: probes go out between DATA, CREDIT and each other all the time. Dead only
    // after 128 s of the clock (2.5 s) without a byte.
    keepalive(c.client, 1, 1, 127);
    keepalive(c.server, 1, 1, 127);
    std::atomic<bool> done{false};
    std::thread ticking([&] {
        while (!done.load()) {
            w.clock.advance(1s);
            std::this_thread::sleep_for(20ms);
        }
    });
    constexpr size_t forward = size_t(8) << 20, back = size_t(2) << 20;
    const auto out = pattern_bytes(0, forward);
    const auto in = pattern_bytes(12345, back);
    background<ssize_t> sending("send forward", [&] { return send_all(c.client, out.data(), out.size()); }, 120s);
    background<ssize_t> replying("send back", [&] { return send_all(c.server, in.data(), in.size()); }, 120s);
    std::vector<uint8_t> got_back(back);
    background<ssize_t> reading_back("read back", [&]() -> ssize_t {
        for (size_t done = 0; done < back;) {
            const ssize_t r = sansock_recv(c.client, got_back.data() + done, back - done, 0);
            if (r <= 0) return r < 0 ? r : -EPIPE;
            done += size_t(r);
        }
        return 0;
    }, 120s);
    const std::vector<uint8_t> got_forward = recv_exact(c.server, forward);
    CHECK(reading_back.result() == 0);
    CHECK(sending.result() == 0);
    CHECK(replying.result() == 0);
    // Idle for a few seconds of the clock: probes alone.
    settle(200ms);
    done.store(true);
    ticking.join();
    CHECK(got_forward == out);
    CHECK(got_back == in);
    const socket_internals ka = internals_of(c.client), kb = internals_of(c.server);
    CAPTURE(ka.probes_sent);
    CAPTURE(kb.probes_sent);
    CHECK(ka.probes_sent + kb.probes_sent > 0);
    for (sansock_context* ctx : {a.get(), b.get()}) {
        const struct sansock_context_stats st = stats_of(ctx);
        CHECK(st.resets_sent[SANSOCK_RESET_KEEPALIVE_TIMEOUT] == 0);
        CHECK(st.resets_received[SANSOCK_RESET_PEER] == 0);
        CHECK(st.bytes_received == (ctx == a.get() ? back : forward)); // probes are not payload
    }
    check_healthy(c);
    CHECK(sansock_close(c.client) == 0);
    CHECK(bounded("end of stream", [&] {
        char byte = 0;
        return sansock_recv(c.server, &byte, 1, 0);
    }) == 0);
    CHECK(sansock_close(c.server) == 0);
    CHECK(sansock_close(c.listener) == 0);
}

TEST_CASE("With SO_KEEPALIVE off a vanished peer is never detected; turned on, silence counts from then") {
    watchdog guard("keepalive off");
    world w;
    const auto off = [](sansock_context_attr& attr) { attr.keepalive = SANSOCK_KEEPALIVE_OFF; };
    host a(w, off), b(w, off); // b, frozen too, must not find a dead either
    const connection c = connect_pair(a.get(), b.get());
    CHECK(get_option(c.client, SOL_SOCKET, SO_KEEPALIVE) == 0);
    REQUIRE(set_tcp(c.client, TCP_KEEPIDLE, idle_s) == 0);
    REQUIRE(set_tcp(c.client, TCP_KEEPINTVL, interval_s) == 0);
    REQUIRE(set_tcp(c.client, TCP_KEEPCNT, count) == 0);
    REQUIRE(freeze(b.get(), c.server, true) == 0);
    background<ssize_t> receiving("recv", [s = c.client] {
        char byte = 0;
        return sansock_recv(s, &byte, 1, 0);
    }, 60s);
    for (int i = 0; i < 10; ++i) {
        w.clock.advance(100s);
        settle(30ms);
    }
    settle(200ms);
    CHECK_FALSE(receiving.finished());
    CHECK(internals_of(c.client).probes_sent == 0);
    // On now, after 1000 s of silence: the first probe comes idle seconds later, the end at
    // idle + count x interval from now.
    REQUIRE(set_int_option(c.client, SO_KEEPALIVE, 1) == 0);
    settle(200ms);
    CHECK_FALSE(receiving.finished());
    w.clock.advance(milliseconds(idle_s * 1000));
    CHECK(eventually([&] { return internals_of(c.client).probes_sent == 1; }));
    w.clock.advance(dead_after - milliseconds(idle_s * 1000) - 100ms);
    settle(300ms);
    CHECK_FALSE(receiving.finished());
    w.clock.advance(100ms);
    CHECK(receiving.result() == -ETIMEDOUT);
    REQUIRE(freeze(b.get(), c.server, false) == 0);
    CHECK(sansock_close(c.client) == 0);
    CHECK(sansock_close(c.server) == 0);
    CHECK(sansock_close(c.listener) == 0);
}

// A raw peer: reads the switch's messages until one of `type` (skipping CREDIT).
session::header read_message(raw_peer& raw, session::message_type type) {
    for (int i = 0; i < 100; ++i) {
        auto [rc, bytes] = raw.recv_exact(session::header_size);
        REQUIRE(rc == int64_t(session::header_size));
        const session::header h = session::decode(bytes.data());
        REQUIRE(h.magic == session::magic);
        REQUIRE(h.version == session::version);
        if (h.type == type) return h;
        REQUIRE(h.length == 0); // no DATA expected here
    }
    FAIL("no such message");
    return {};
}

TEST_CASE("On the wire: the switch probes with KEEPALIVE 0 after idle seconds, and answers a probe with KEEPALIVE 1") {
    watchdog guard("keepalive, raw peer");
    world w;
    w.session_version = 2; // the raw peer speaks version 2
    host a(w);
    raw_peer& raw = w.keep(std::make_unique<raw_peer>(w.fabric()));
    uint16_t port = 0;
    const sansock_socket_t l = listen_on(a.get(), &port);
    keepalive(l); // accepted connections take the listener's options
    REQUIRE(raw.connect(port) == 0);
    const sansock_socket_t s = accept_one(l);
    CHECK(get_option(s, SOL_SOCKET, SO_KEEPALIVE) == 1);
    CHECK(get_option(s, IPPROTO_TCP, TCP_KEEPIDLE) == idle_s);
    CHECK(get_option(s, IPPROTO_TCP, TCP_KEEPINTVL) == interval_s);
    CHECK(get_option(s, IPPROTO_TCP, TCP_KEEPCNT) == count);
    raw.read_hello();
    REQUIRE(raw.send_hello().wait(5s));

    // The raw peer probes: the switch replies at once.
    session::header probe;
    probe.type = session::message_type::keepalive;
    probe.value = session::keepalive_probe;
    raw.send_header(probe);
    const session::header reply = read_message(raw, session::message_type::keepalive);
    CHECK(reply.value == session::keepalive_reply);
    CHECK(reply.length == 0);
    CHECK(reply.reserved == 0);

    // The switch probes after idle seconds; answered, it probes again only after idle more.
    // The reply counts as life (any bytes do), so the connection lives on.
    for (int round = 0; round < 3; ++round) {
        CAPTURE(round);
        w.clock.advance(milliseconds(idle_s * 1000));
        const session::header h = read_message(raw, session::message_type::keepalive);
        CHECK(h.value == session::keepalive_probe);
        CHECK(h.length == 0);
        session::header answer;
        answer.type = session::message_type::keepalive;
        answer.value = session::keepalive_reply;
        raw.send_header(answer);
        CHECK(eventually([&] { return internals_of(s).probe_replies == uint64_t(round + 1); }));
    }
    // Any other message counts as life too: DATA instead of a reply.
    w.clock.advance(milliseconds(idle_s * 1000));
    read_message(raw, session::message_type::keepalive);
    session::header data;
    data.type = session::message_type::data;
    data.length = 3;
    raw.send_header(data, 3, 'k');
    CHECK(recv_exact(s, 3) == std::vector<uint8_t>{'k', 'k', 'k'});
    CHECK(internals_of(s).probes_unanswered == 0);
    // Then silence: count probes interval seconds apart, then the reset.
    w.clock.advance(milliseconds(idle_s * 1000));
    for (int i = 0; i < count; ++i) {
        CAPTURE(i);
        const session::header h = read_message(raw, session::message_type::keepalive);
        CHECK(h.value == session::keepalive_probe);
        if (i + 1 < count) w.clock.advance(milliseconds(interval_s * 1000));
    }
    w.clock.advance(milliseconds(interval_s * 1000));
    CHECK(raw.wait_for_reset() == -ECONNRESET);
    char byte = 0;
    CHECK(sansock_recv(s, &byte, 1, 0) == -ETIMEDOUT);
    CHECK(sansock_close(s) == 0);
    CHECK(sansock_close(l) == 0);
}

TEST_CASE("Options: defaults from the context, round-trip, bad values -EINVAL, unknown ones -ENOPROTOOPT") {
    watchdog guard("keepalive options");
    world w;
    SUBCASE("sansock_context_attr_init: on, 30 s, 10 s, 6") {
        sansock_context_attr attr;
        sansock_context_attr_init(&attr);
        CHECK(attr.keepalive == SANSOCK_KEEPALIVE_ON);
        CHECK(attr.keepalive_idle_s == 30);
        CHECK(attr.keepalive_interval_s == 10);
        CHECK(attr.keepalive_count == 6);
    }
    SUBCASE("zeroed attributes mean the defaults") {
        host h(w, [](sansock_context_attr& attr) {
            attr.keepalive = 0;
            attr.keepalive_idle_s = attr.keepalive_interval_s = attr.keepalive_count = 0;
        });
        sansock_socket_t s = 0;
        REQUIRE(sansock_socket(h.get(), &s) == 0);
        CHECK(get_option(s, SOL_SOCKET, SO_KEEPALIVE) == 1);
        CHECK(get_option(s, IPPROTO_TCP, TCP_KEEPIDLE) == 30);
        CHECK(get_option(s, IPPROTO_TCP, TCP_KEEPINTVL) == 10);
        CHECK(get_option(s, IPPROTO_TCP, TCP_KEEPCNT) == 6);
        CHECK(sansock_close(s) == 0);
    }
    SUBCASE("a program built before the keepalive attributes gets the defaults") {
        sansock_context_attr attr;
        sansock_context_attr_init(&attr);
        attr.provider = SANSOCK_PROVIDER_LOOPBACK;
        attr.size = offsetof(sansock_context_attr, keepalive);
        attr.keepalive = SANSOCK_KEEPALIVE_OFF; // beyond its size: not read
        context_hooks hooks;
        hooks.provider_specific = w.fabric();
        sansock_context* ctx = nullptr;
        REQUIRE(create_context(&attr, hooks, &ctx) == 0);
        sansock_socket_t s = 0;
        REQUIRE(sansock_socket(ctx, &s) == 0);
        CHECK(get_option(s, SOL_SOCKET, SO_KEEPALIVE) == 1);
        CHECK(get_option(s, IPPROTO_TCP, TCP_KEEPIDLE) == 30);
        CHECK(sansock_close(s) == 0);
        CHECK(sansock_context_destroy(ctx) == 0);
    }
    SUBCASE("the context's values become the sockets' defaults") {
        host h(w, [](sansock_context_attr& attr) {
            attr.keepalive = SANSOCK_KEEPALIVE_OFF;
            attr.keepalive_idle_s = 32767;
            attr.keepalive_interval_s = 1;
            attr.keepalive_count = 127;
        });
        sansock_socket_t s = 0;
        REQUIRE(sansock_socket(h.get(), &s) == 0);
        CHECK(get_option(s, SOL_SOCKET, SO_KEEPALIVE) == 0);
        CHECK(get_option(s, IPPROTO_TCP, TCP_KEEPIDLE) == 32767);
        CHECK(get_option(s, IPPROTO_TCP, TCP_KEEPINTVL) == 1);
        CHECK(get_option(s, IPPROTO_TCP, TCP_KEEPCNT) == 127);
        CHECK(sansock_close(s) == 0);
    }
    SUBCASE("bad context values: -EINVAL") {
        const std::function<void(sansock_context_attr&)> bad[] = {
            [](sansock_context_attr& a) { a.keepalive = 3; },
            [](sansock_context_attr& a) { a.keepalive_idle_s = 32768; },
            [](sansock_context_attr& a) { a.keepalive_interval_s = 32768; },
            [](sansock_context_attr& a) { a.keepalive_count = 128; },
        };
        for (const auto& edit : bad) {
            sansock_context_attr attr;
            sansock_context_attr_init(&attr);
            attr.provider = SANSOCK_PROVIDER_LOOPBACK;
            edit(attr);
            context_hooks hooks;
            hooks.provider_specific = w.fabric();
            sansock_context* ctx = nullptr;
            CHECK(create_context(&attr, hooks, &ctx) == -EINVAL);
            CHECK(ctx == nullptr);
        }
    }
    SUBCASE("set and get on a socket, as on Linux") {
        host h(w);
        sansock_socket_t s = 0;
        REQUIRE(sansock_socket(h.get(), &s) == 0);
        CHECK(get_option(s, SOL_SOCKET, SO_KEEPALIVE) == 1); // on by default
        CHECK(set_int_option(s, SO_KEEPALIVE, 0) == 0);
        CHECK(get_option(s, SOL_SOCKET, SO_KEEPALIVE) == 0);
        CHECK(set_int_option(s, SO_KEEPALIVE, 7) == 0);
        CHECK(get_option(s, SOL_SOCKET, SO_KEEPALIVE) == 1);
        for (int name : {TCP_KEEPIDLE, TCP_KEEPINTVL}) {
            CAPTURE(name);
            for (int v : {1, 2, 600, 32767}) {
                CHECK(set_tcp(s, name, v) == 0);
                CHECK(get_option(s, IPPROTO_TCP, name) == v);
            }
            for (int v : {0, -1, 32768, INT32_MAX, INT32_MIN}) CHECK(set_tcp(s, name, v) == -EINVAL);
            CHECK(get_option(s, IPPROTO_TCP, name) == 32767); // unchanged
        }
        for (int v : {1, 9, 127}) {
            CHECK(set_tcp(s, TCP_KEEPCNT, v) == 0);
            CHECK(get_option(s, IPPROTO_TCP, TCP_KEEPCNT) == v);
        }
        for (int v : {0, -1, 128, 255, 256}) CHECK(set_tcp(s, TCP_KEEPCNT, v) == -EINVAL);
        CHECK(get_option(s, IPPROTO_TCP, TCP_KEEPCNT) == 127);
        // Short lengths, NULL, unknown options of the level.
        int v = 5;
        char small = 1;
        socklen_t short_length = 1;
        CHECK(sansock_setsockopt(s, IPPROTO_TCP, TCP_KEEPIDLE, &v, 1) == -EINVAL);
        CHECK(sansock_setsockopt(s, SOL_SOCKET, SO_KEEPALIVE, &small, 1) == -EINVAL);
        CHECK(sansock_setsockopt(s, IPPROTO_TCP, TCP_KEEPCNT, nullptr, sizeof v) == -EINVAL);
        CHECK(sansock_getsockopt(s, IPPROTO_TCP, TCP_KEEPINTVL, &v, &short_length) == -EINVAL);
        CHECK(sansock_setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &v, sizeof v) == -ENOPROTOOPT);
        socklen_t length = sizeof v;
        CHECK(sansock_getsockopt(s, IPPROTO_TCP, TCP_NODELAY, &v, &length) == -ENOPROTOOPT);
        CHECK(sansock_setsockopt(s, IPPROTO_UDP, TCP_KEEPIDLE, &v, sizeof v) == -ENOPROTOOPT);
        CHECK(sansock_close(s) == 0);
    }
}

} // namespace
} // namespace sansock::switchtest

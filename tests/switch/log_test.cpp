// SPDX-License-Identifier: MIT
// The context's log (attr.log_level, log, log_user; SANSOCK_LOG): reset messages name the
// connection (both addresses, the handle it was) and the reason at its level, level off gives
// nothing, the environment variable is honoured (a bad value is said, then warn is used), the
// default sink writes "sansock: " lines to standard error, and bad attributes are refused.
#include <fcntl.h>

#include <cstdlib>

#include "tests/switch/switch_test_support.hpp"

namespace sansock::switchtest {
namespace {

// Collects what a context logs (the callback may run on any thread of the context).
struct log_sink {
    struct line {
        int level;
        std::string text;
    };
    std::mutex mutex;
    std::vector<line> lines;

    static void receive(void* user, int level, const char* message) {
        auto* self = static_cast<log_sink*>(user);
        std::lock_guard lock(self->mutex);
        self->lines.push_back({level, message});
    }
    std::vector<line> snapshot() {
        std::lock_guard lock(mutex);
        return lines;
    }
    // The lines containing every one of `parts`.
    std::vector<line> matching(std::initializer_list<std::string> parts) {
        std::vector<line> found;
        for (const line& l : snapshot()) {
            bool all = true;
            for (const std::string& p : parts) all = all && l.text.find(p) != std::string::npos;
            if (all) found.push_back(l);
        }
        return found;
    }
    // Waits (bounded) for a line containing every one of `parts`; returns it.
    std::optional<line> wait_for(std::initializer_list<std::string> parts, milliseconds timeout = 10s) {
        const auto deadline = steady_clock::now() + timeout;
        do {
            auto found = matching(parts);
            if (!found.empty()) return found.front();
            std::this_thread::sleep_for(5ms);
        } while (steady_clock::now() < deadline);
        return std::nullopt;
    }
    std::string dump() {
        std::string all;
        for (const line& l : snapshot()) all += std::to_string(l.level) + " " + l.text + "\n";
        return all;
    }
};

struct log_options {
    uint32_t level = SANSOCK_LOG_DEBUG;
    log_sink* sink = nullptr; // null: the default sink (standard error)
    uint32_t graceful_timeout_ms = 0;
};

// A context on the world's fabric and clock with log attributes; destroyed before the world.
class logged_host {
public:
    logged_host(world& w, const log_options& o) {
        sansock_context_attr attr;
        sansock_context_attr_init(&attr);
        attr.provider = SANSOCK_PROVIDER_LOOPBACK;
        attr.log_level = o.level;
        if (o.sink != nullptr) {
            attr.log = &log_sink::receive;
            attr.log_user = o.sink;
        }
        if (o.graceful_timeout_ms != 0) attr.graceful_timeout_ms = o.graceful_timeout_ms;
        context_hooks hooks;
        hooks.provider_specific = w.fabric();
        hooks.now = w.clock.function();
        hooks.session_version = w.session_version;
        REQUIRE(create_context(&attr, hooks, &ctx_) == 0);
    }
    ~logged_host() { CHECK(bounded("sansock_context_destroy", [c = ctx_] { return sansock_context_destroy(c); }) == 0); }
    logged_host(const logged_host&) = delete;
    logged_host& operator=(const logged_host&) = delete;
    sansock_context* get() const { return ctx_; }

private:
    sansock_context* ctx_ = nullptr;
};

std::string endpoint(const sockaddr_in& a) {
    char ip[INET_ADDRSTRLEN] = {};
    inet_ntop(AF_INET, &a.sin_addr, ip, sizeof ip);
    return std::string(ip) + ":" + std::to_string(ntohs(a.sin_port));
}

// "local -> peer" of a connected socket, as the log names it.
std::string addresses(sansock_socket_t s) {
    sockaddr_in local{}, peer{};
    socklen_t length = sizeof local;
    REQUIRE(sansock_getsockname(s, reinterpret_cast<sockaddr*>(&local), &length) == 0);
    length = sizeof peer;
    REQUIRE(sansock_getpeername(s, reinterpret_cast<sockaddr*>(&peer), &length) == 0);
    return endpoint(local) + " -> " + endpoint(peer);
}

std::string socket_text(sansock_socket_t s) { return "(socket " + std::to_string(s); }

// Sets an environment variable for the scope, then restores it.
class scoped_environment {
public:
    scoped_environment(const char* name, const char* value) : name_(name) {
        if (const char* old = std::getenv(name)) old_ = old;
        if (value != nullptr) setenv(name, value, 1);
        else unsetenv(name);
    }
    ~scoped_environment() {
        if (old_) setenv(name_, old_->c_str(), 1);
        else unsetenv(name_);
    }
    scoped_environment(const scoped_environment&) = delete;
    scoped_environment& operator=(const scoped_environment&) = delete;

private:
    const char* name_;
    std::optional<std::string> old_;
};

TEST_CASE("A reset is logged once, naming both addresses, the handle it was and the reason, at the reason's level") {
    watchdog guard("reset messages");
    scoped_environment no_environment("SANSOCK_LOG", nullptr);
    world w;
    log_sink client_log, server_log;
    logged_host a(w, {SANSOCK_LOG_DEBUG, &client_log, 3000});
    logged_host b(w, {SANSOCK_LOG_DEBUG, &server_log, 3000});
    const connection c = connect_pair(a.get(), b.get());
    const std::string client_addresses = addresses(c.client);
    const std::string server_addresses = addresses(c.server);
    INFO("client log:\n" << client_log.dump() << "server log:\n" << server_log.dump());
    // Routine events are debug.
    const auto connected = client_log.wait_for({client_addresses, socket_text(c.client) + ")", "connected"});
    REQUIRE(connected);
    CHECK(connected->level == SANSOCK_LOG_DEBUG);
    const auto accepted = server_log.wait_for({server_addresses, socket_text(c.server) + ")", "accepted"});
    REQUIRE(accepted);
    CHECK(accepted->level == SANSOCK_LOG_DEBUG);

    SUBCASE("LINGER 0: sent (debug, closed by the user), received by the peer (info)") {
        REQUIRE(set_linger(c.client, 1, 0) == 0);
        REQUIRE(sansock_close(c.client) == 0);
        const auto sent = client_log.wait_for({"reset sent", "abortive close"});
        REQUIRE(sent);
        CHECK(sent->level == SANSOCK_LOG_DEBUG);
        CHECK(sent->text.find(client_addresses) != std::string::npos);
        CHECK(sent->text.find(socket_text(c.client) + ", closed by the user)") != std::string::npos);
        const auto received = server_log.wait_for({"reset received", "the peer reset the connection"});
        REQUIRE(received);
        CHECK(received->level == SANSOCK_LOG_INFO);
        CHECK(received->text.find(server_addresses) != std::string::npos);
        CHECK(received->text.find(socket_text(c.server) + ")") != std::string::npos); // not closed by its user
        CHECK(wait_for_recv_error(c.server) == -ECONNRESET);
        settle(100ms);
        CHECK(server_log.matching({"reset"}).size() == 1); // once, though every call meets it
        CHECK(sansock_close(c.server) == 0);
    }
    SUBCASE("graceful time-out (info), after the user let go of the handle") {
        REQUIRE(sansock_close(c.client) == 0);
        char byte = 0;
        CHECK(bounded("recv end", [&] { return sansock_recv(c.server, &byte, 1, 0); }) == 0);
        settle(100ms);
        w.clock.advance(3500ms);
        const auto timed_out = client_log.wait_for({"reset sent", "graceful disconnect time-out", "3000 ms"});
        REQUIRE(timed_out);
        CHECK(timed_out->level == SANSOCK_LOG_INFO);
        CHECK(timed_out->text.find(client_addresses) != std::string::npos);
        CHECK(timed_out->text.find(socket_text(c.client) + ", closed by the user)") != std::string::npos);
        CHECK(timed_out->text.find("socket 0") == std::string::npos);
        CHECK(sansock_close(c.server) == 0);
    }
    SUBCASE("linger time-out (info)") {
        REQUIRE(freeze(b.get(), c.server, true) == 0);
        REQUIRE(send_all(c.client, "0123456789", 10) == 0);
        REQUIRE(set_linger(c.client, 1, 2) == 0);
        background<int> closing("LINGER 2 close", [s = c.client] { return sansock_close(s); });
        settle(200ms);
        w.clock.advance(2500ms);
        CHECK(closing.result() == -ETIMEDOUT);
        const auto timed_out = client_log.wait_for({"reset sent", "linger time-out", "after 2 s"});
        REQUIRE(timed_out);
        CHECK(timed_out->level == SANSOCK_LOG_INFO);
        CHECK(timed_out->text.find(client_addresses) != std::string::npos);
        CHECK(timed_out->text.find(socket_text(c.client) + ", closed by the user)") != std::string::npos);
        REQUIRE(freeze(b.get(), c.server, false) == 0);
        CHECK(sansock_close(c.server) == 0);
    }
    SUBCASE("the device goes away (error)") {
        REQUIRE(loopback::set_device_down(provider_instance_of(a.get())) == 0);
        const auto down = client_log.wait_for({"reset received", "the network device went away"});
        REQUIRE(down);
        CHECK(down->level == SANSOCK_LOG_ERROR);
        CHECK(down->text.find(client_addresses) != std::string::npos);
        CHECK(down->text.find(socket_text(c.client) + ")") != std::string::npos);
        CHECK(sansock_close(c.client) == 0);
        CHECK(sansock_close(c.server) == 0);
    }
    SUBCASE("the context is destroyed with the connection open (debug)") {
        log_sink third_log;
        sansock_socket_t s = 0, third_peer = 0;
        std::string third_addresses;
        {
            logged_host third(w, {SANSOCK_LOG_DEBUG, &third_log});
            uint16_t port = 0;
            const sansock_socket_t l = listen_on(b.get(), &port);
            REQUIRE(sansock_socket(third.get(), &s) == 0);
            REQUIRE(connect_to(s, port) == 0);
            third_addresses = addresses(s);
            const sansock_socket_t peer = accept_one(l);
            CHECK(sansock_close(l) == 0);
            settle(100ms);
            CHECK(third_log.matching({"reset"}).empty());
            // Destroyed with s open: its connection is reset (peer on b sees it).
            third_peer = peer;
        }
        CHECK(wait_for_recv_error(third_peer) == -ECONNRESET);
        CHECK(sansock_close(third_peer) == 0);
        const auto destroyed = third_log.matching({"reset sent", "context destroyed", third_addresses, socket_text(s) + ")"});
        CHECK(destroyed.size() == 1);
        if (!destroyed.empty()) CHECK(destroyed.front().level == SANSOCK_LOG_DEBUG);
        CHECK(sansock_close(c.client) == 0);
        CHECK(sansock_close(c.server) == 0);
    }
    CHECK(sansock_close(c.listener) == 0);
}

TEST_CASE("A protocol violation by the peer is a warning naming the connection and the violation") {
    watchdog guard("protocol violation message");
    world w;
    w.session_version = 2; // the raw peer speaks version 2
    log_sink sink;
    logged_host a(w, {SANSOCK_LOG_WARN, &sink});
    raw_peer raw(w.fabric());
    uint16_t port = 0;
    const sansock_socket_t l = listen_on(a.get(), &port);
    REQUIRE(raw.connect(port) == 0);
    const sansock_socket_t s = accept_one(l);
    const std::string names = addresses(s);
    raw.read_hello();
    session::header h;
    h.type = session::message_type::hello;
    h.value = 65536;
    h.magic = 0x5354;
    raw.send_header(h);
    CHECK(wait_for_recv_error(s) == -ECONNRESET);
    INFO(sink.dump());
    const auto warned = sink.wait_for({"reset sent", "protocol error by the peer", "bad magic 21332"});
    REQUIRE(warned);
    CHECK(warned->level == SANSOCK_LOG_WARN);
    CHECK(warned->text.find(names) != std::string::npos);
    CHECK(warned->text.find(socket_text(s) + ")") != std::string::npos);
    CHECK(sink.snapshot().size() == 1); // at warn, the debug and info lines are left out
    CHECK(sansock_close(s) == 0);
    CHECK(sansock_close(l) == 0);
}

TEST_CASE("At level off nothing is logged; at info, debug lines are left out") {
    watchdog guard("log levels");
    scoped_environment debug_environment("SANSOCK_LOG", "debug"); // an explicit level wins
    world w;
    log_sink off_log, info_log;
    logged_host a(w, {SANSOCK_LOG_OFF, &off_log});
    logged_host b(w, {SANSOCK_LOG_INFO, &info_log});
    const connection c = connect_pair(a.get(), b.get());  // debug on both
    const connection d = connect_pair(a.get(), b.get());
    REQUIRE(set_linger(c.client, 1, 0) == 0);
    REQUIRE(sansock_close(c.client) == 0);                // debug on a, info on b
    CHECK(info_log.wait_for({"reset received"}));
    REQUIRE(loopback::set_device_down(provider_instance_of(a.get())) == 0); // error on a, info on b
    CHECK(wait_for_recv_error(d.client) == -ENETDOWN);
    CHECK(wait_for_recv_error(d.server) == -ECONNRESET);
    settle(100ms);
    CHECK(off_log.snapshot().empty());
    INFO(info_log.dump());
    CHECK(info_log.snapshot().size() == 2);
    for (const auto& l : info_log.snapshot()) CHECK(l.level == SANSOCK_LOG_INFO);
    for (sansock_socket_t s : {c.server, c.listener, d.client, d.server, d.listener}) CHECK(sansock_close(s) == 0);
}

TEST_CASE("log_level 0 takes SANSOCK_LOG; a value that names no level is said once per context, and warn is used") {
    watchdog guard("SANSOCK_LOG");
    world w;
    SUBCASE("SANSOCK_LOG=debug") {
        scoped_environment environment("SANSOCK_LOG", "debug");
        log_sink sink;
        logged_host a(w, {SANSOCK_LOG_DEFAULT, &sink});
        logged_host b(w, {SANSOCK_LOG_OFF, nullptr});
        const connection c = connect_pair(a.get(), b.get());
        CHECK(sink.wait_for({"connected"}));
        for (const auto& l : sink.snapshot()) CHECK(l.level == SANSOCK_LOG_DEBUG);
        CHECK(sansock_close(c.client) == 0);
        CHECK(sansock_close(c.server) == 0);
        CHECK(sansock_close(c.listener) == 0);
    }
    SUBCASE("SANSOCK_LOG=Off (any case)") {
        scoped_environment environment("SANSOCK_LOG", "Off");
        log_sink sink;
        logged_host a(w, {SANSOCK_LOG_DEFAULT, &sink});
        logged_host b(w, {SANSOCK_LOG_OFF, nullptr});
        const connection c = connect_pair(a.get(), b.get());
        REQUIRE(loopback::set_device_down(provider_instance_of(a.get())) == 0); // an error
        CHECK(wait_for_recv_error(c.client) == -ENETDOWN);
        settle(100ms);
        CHECK(sink.snapshot().empty());
        CHECK(sansock_close(c.client) == 0);
        CHECK(sansock_close(c.server) == 0);
        CHECK(sansock_close(c.listener) == 0);
    }
    SUBCASE("SANSOCK_LOG=loud") {
        scoped_environment environment("SANSOCK_LOG", "loud");
        log_sink sink, other;
        logged_host a(w, {SANSOCK_LOG_DEFAULT, &sink});
        logged_host b(w, {SANSOCK_LOG_DEFAULT, &other});
        INFO(sink.dump());
        const auto said = sink.matching({"SANSOCK_LOG=loud", "using warn"});
        REQUIRE(said.size() == 1);
        CHECK(said.front().level == SANSOCK_LOG_WARN);
        CHECK(other.matching({"SANSOCK_LOG=loud"}).size() == 1); // each context says it
        // The level is warn: debug (connected) and info (a peer's reset) are left out.
        const connection c = connect_pair(a.get(), b.get());
        REQUIRE(set_linger(c.server, 1, 0) == 0);
        REQUIRE(sansock_close(c.server) == 0);
        CHECK(wait_for_recv_error(c.client) == -ECONNRESET);
        settle(100ms);
        CHECK(sink.snapshot().size() == 1);
        CHECK(sansock_close(c.client) == 0);
        CHECK(sansock_close(c.listener) == 0);
    }
    SUBCASE("SANSOCK_LOG unset or empty: warn") {
        scoped_environment environment("SANSOCK_LOG", "");
        log_sink sink;
        logged_host a(w, {SANSOCK_LOG_DEFAULT, &sink});
        logged_host b(w, {SANSOCK_LOG_DEFAULT, nullptr});
        const connection c = connect_pair(a.get(), b.get());
        REQUIRE(set_linger(c.server, 1, 0) == 0);
        REQUIRE(sansock_close(c.server) == 0);
        CHECK(wait_for_recv_error(c.client) == -ECONNRESET);
        settle(100ms);
        CHECK(sink.snapshot().empty()); // neither debug nor info at warn
        CHECK(sansock_close(c.client) == 0);
        CHECK(sansock_close(c.listener) == 0);
    }
}

// Redirects file descriptor 2 into a pipe for the scope; text() reads what was written.
class stderr_capture {
public:
    stderr_capture() {
        REQUIRE(pipe2(pipe_, O_CLOEXEC | O_NONBLOCK) == 0);
        std::fflush(stderr);
        saved_ = dup(STDERR_FILENO);
        REQUIRE(saved_ >= 0);
        REQUIRE(dup2(pipe_[1], STDERR_FILENO) == STDERR_FILENO);
    }
    ~stderr_capture() {
        restore();
        close(pipe_[0]);
    }
    void restore() {
        if (saved_ < 0) return;
        std::fflush(stderr);
        dup2(saved_, STDERR_FILENO);
        close(saved_);
        close(pipe_[1]);
        saved_ = -1;
    }
    std::string text() {
        std::string out;
        char buffer[4096];
        ssize_t n;
        while ((n = read(pipe_[0], buffer, sizeof buffer)) > 0) out.append(buffer, size_t(n));
        return out;
    }
    stderr_capture(const stderr_capture&) = delete;
    stderr_capture& operator=(const stderr_capture&) = delete;

private:
    int pipe_[2] = {-1, -1};
    int saved_ = -1;
};

TEST_CASE("Without a log callback, messages go to standard error, one line each, prefixed \"sansock: \"") {
    watchdog guard("stderr sink");
    world w;
    std::string names, captured;
    sansock_socket_t client = 0;
    {
        stderr_capture capture;
        {
            logged_host a(w, {SANSOCK_LOG_INFO, nullptr});
            logged_host b(w, {SANSOCK_LOG_OFF, nullptr});
            const connection c = connect_pair(a.get(), b.get());
            client = c.client;
            names = addresses(c.client);
            REQUIRE(set_linger(c.server, 1, 0) == 0);
            REQUIRE(sansock_close(c.server) == 0);
            const bool reset = wait_for_recv_error(c.client) == -ECONNRESET;
            settle(100ms);
            CHECK(sansock_close(c.client) == 0);
            CHECK(sansock_close(c.listener) == 0);
            CHECK(reset);
        }
        capture.restore();
        captured = capture.text();
    }
    INFO(captured);
    const std::string expected = "sansock: connection " + names + " " + socket_text(client) +
                                 "): reset received: the peer reset the connection\n";
    CHECK(captured == expected);
}

TEST_CASE("Bad log attributes are refused: a level above debug, reserved0 not 0") {
    sansock_context_attr attr;
    sansock_context_attr_init(&attr);
    attr.provider = SANSOCK_PROVIDER_LOOPBACK;
    sansock_context* ctx = nullptr;
    SUBCASE("log_level") { attr.log_level = SANSOCK_LOG_DEBUG + 1; }
    SUBCASE("log_level far out") { attr.log_level = 0xffffffffu; }
    SUBCASE("reserved0") { attr.reserved0 = 1; }
    CHECK(sansock_context_create(&attr, &ctx) == -EINVAL);
    CHECK(ctx == nullptr);
}

TEST_CASE("Every level is accepted, and attr_init leaves the log to the defaults") {
    sansock_context_attr attr;
    sansock_context_attr_init(&attr);
    CHECK(attr.log_level == SANSOCK_LOG_DEFAULT);
    CHECK(attr.reserved0 == 0);
    CHECK(!attr.log);
    CHECK(attr.log_user == nullptr);
    attr.provider = SANSOCK_PROVIDER_LOOPBACK;
    for (uint32_t level = SANSOCK_LOG_DEFAULT; level <= SANSOCK_LOG_DEBUG; ++level) {
        CAPTURE(level);
        attr.log_level = level;
        sansock_context* ctx = nullptr;
        REQUIRE(sansock_context_create(&attr, &ctx) == 0);
        CHECK(sansock_context_destroy(ctx) == 0);
    }
}

} // namespace
} // namespace sansock::switchtest

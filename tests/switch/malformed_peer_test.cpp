// SPDX-License-Identifier: MIT
// A raw loopback peer speaking the session protocol byte by byte: a well-behaved one talks to
// the switch; each malformed message resets that connection only (the switch socket's
// receives fail -ECONNRESET, the raw peer's provider socket is reset), and another connection
// on the same context keeps carrying data.
#include "tests/switch/switch_test_support.hpp"

namespace sansock::switchtest {
namespace {

using session::header;
using session::message_type;

constexpr uint32_t switch_window = 8192; // attr.window_bytes of the attacked context

header make(message_type type, uint32_t length = 0, uint32_t value = 0) {
    header h;
    h.type = type;
    h.length = length;
    h.value = value;
    return h;
}

// What a malformed peer sends after reading the switch's HELLO.
struct attack {
    const char* name;
    // Sends the bytes; true when the raw peer closed its socket itself.
    std::function<bool(raw_peer&)> act;
    uint64_t max_data_delivered = 0; // stream bytes the switch may hand the application first
};

std::vector<attack> attacks() {
    std::vector<attack> list;
    list.push_back({"garbage bytes", [](raw_peer& raw) {
                        std::vector<uint8_t> junk(64);
                        for (size_t i = 0; i < junk.size(); ++i) junk[i] = uint8_t(0xA5 ^ (i * 37));
                        raw.send_bytes(junk);
                        return false;
                    }});
    list.push_back({"a truncated header, then the peer closes", [](raw_peer& raw) {
                        raw.send_hello();
                        std::vector<uint8_t> bytes(session::header_size);
                        session::encode(make(message_type::data, 10), bytes.data());
                        bytes.resize(8);
                        raw_peer::op& sent = raw.send_bytes(bytes);
                        sent.wait(5s);
                        settle(100ms);
                        CHECK(raw.close_socket() == 0);
                        return true;
                    }});
    list.push_back({"a bad magic", [](raw_peer& raw) {
                        header h = make(message_type::hello, 0, 65536);
                        h.magic = 0x5354;
                        raw.send_header(h);
                        return false;
                    }});
    list.push_back({"a bad version in HELLO", [](raw_peer& raw) {
                        header h = make(message_type::hello, 0, 65536);
                        h.version = session::version + 1;
                        raw.send_header(h);
                        return false;
                    }});
    list.push_back({"a version 1 peer (no KEEPALIVE): refused at its HELLO", [](raw_peer& raw) {
                        header h = make(message_type::hello, 0, 65536);
                        h.version = 1;
                        raw.send_header(h);
                        return false;
                    }});
    list.push_back({"KEEPALIVE before HELLO", [](raw_peer& raw) {
                        raw.send_header(make(message_type::keepalive, 0, session::keepalive_probe));
                        return false;
                    }});
    list.push_back({"KEEPALIVE with a payload", [](raw_peer& raw) {
                        raw.send_hello();
                        raw.send_header(make(message_type::keepalive, 4, session::keepalive_probe), 4);
                        return false;
                    }});
    list.push_back({"KEEPALIVE with a value neither probe nor reply", [](raw_peer& raw) {
                        raw.send_hello();
                        raw.send_header(make(message_type::keepalive, 0, 2));
                        return false;
                    }});
    list.push_back({"a KEEPALIVE reply to no probe", [](raw_peer& raw) {
                        raw.send_hello();
                        raw.send_header(make(message_type::keepalive, 0, session::keepalive_reply));
                        return false;
                    }});
    list.push_back({"an unknown message type", [](raw_peer& raw) {
                        raw.send_hello();
                        raw.send_header(make(static_cast<message_type>(9)));
                        return false;
                    }});
    list.push_back({"a nonzero reserved field", [](raw_peer& raw) {
                        raw.send_hello();
                        header h = make(message_type::data, 10);
                        h.reserved = 1;
                        raw.send_header(h, 10);
                        return false;
                    }});
    list.push_back({"a FIN_ACK for a FIN the switch never sent", [](raw_peer& raw) {
                        raw.send_hello();
                        raw.send_header(make(message_type::fin_ack));
                        return false;
                    }});
    list.push_back({"DATA before HELLO", [](raw_peer& raw) {
                        raw.send_header(make(message_type::data, 10), 10);
                        return false;
                    }});
    list.push_back({"DATA larger than max_data_payload", [](raw_peer& raw) {
                        raw.send_hello();
                        raw.send_header(make(message_type::data, session::max_data_payload + 1),
                                        session::max_data_payload + 1);
                        return false;
                    }});
    list.push_back({"DATA beyond the window the switch advertised", [](raw_peer& raw) {
                        raw.send_hello();
                        raw.send_header(make(message_type::data, switch_window), switch_window);
                        raw_peer::op& last = raw.send_header(make(message_type::data, 1), 1);
                        // All of it must reach the switch before its application reads (and
                        // so returns credit): only then is the last byte beyond the window.
                        last.wait(5s);
                        settle(200ms);
                        return false;
                    },
                    switch_window});
    list.push_back({"a CREDIT beyond the window the peer advertised", [](raw_peer& raw) {
                        raw.send_hello(65536);
                        raw.send_header(make(message_type::credit, 0, 1));
                        return false;
                    }});
    list.push_back({"DATA after FIN", [](raw_peer& raw) {
                        raw.send_hello();
                        raw.send_header(make(message_type::fin));
                        raw.send_header(make(message_type::data, 5), 5);
                        return false;
                    }});
    return list;
}

TEST_CASE("A well-behaved raw peer exchanges HELLO, DATA and FIN with the switch") {
    watchdog guard("raw peer, well-behaved");
    world w;
    w.session_version = 2; // the raw peer speaks version 2
    host_options o;
    o.window_bytes = switch_window;
    sansock_context* a = w.host(o);
    raw_peer raw(w.fabric());
    uint16_t port = 0;
    const sansock_socket_t l = listen_on(a, &port);
    REQUIRE(raw.connect(port) == 0);
    const sansock_socket_t s = accept_one(l);
    const header hello = raw.read_hello();
    CHECK(hello.value == switch_window);
    raw.send_hello(65536);
    raw.send_header(make(message_type::data, 5), 5, 'h');
    CHECK(recv_exact(s, 5) == std::vector<uint8_t>(5, 'h'));

    REQUIRE(send_all(s, "world", 5) == 0);
    // Skip CREDITs until the DATA.
    for (int i = 0; i < 8; ++i) {
        auto [rc, bytes] = raw.recv_exact(session::header_size);
        REQUIRE(rc == int64_t(session::header_size));
        const header h = session::decode(bytes.data());
        REQUIRE(h.magic == session::magic);
        if (h.type == message_type::credit) {
            CHECK(h.length == 0);
            continue;
        }
        REQUIRE(h.type == message_type::data);
        CHECK(h.length == 5);
        CHECK(h.value == 0);
        auto [prc, payload] = raw.recv_exact(5);
        REQUIRE(prc == 5);
        CHECK(std::string(payload.begin(), payload.end()) == "world");
        break;
    }
    raw.send_header(make(message_type::fin));
    char byte = 0;
    CHECK(bounded("recv end", [&] { return sansock_recv(s, &byte, 1, 0); }) == 0);
    // The switch confirms it took the FIN (FIN_ACK), and its own end of stream reaches the raw
    // peer as a FIN, which the raw peer confirms in turn.
    REQUIRE(sansock_shutdown(s, SHUT_WR) == 0);
    bool fin_ack_seen = false, fin_seen = false;
    for (int i = 0; i < 8 && !(fin_ack_seen && fin_seen); ++i) {
        auto [rc, bytes] = raw.recv_exact(session::header_size);
        REQUIRE(rc == int64_t(session::header_size));
        const header h = session::decode(bytes.data());
        CHECK(h.length == 0);
        if (h.type == message_type::credit) continue;
        if (h.type == message_type::fin_ack) fin_ack_seen = true;
        else if (h.type == message_type::fin) fin_seen = true;
        else FAIL_CHECK("unexpected message type " << int(h.type));
    }
    CHECK(fin_ack_seen);
    CHECK(fin_seen);
    raw.send_header(make(message_type::fin_ack));
    CHECK(raw.resets() == 0);
    CHECK(sansock_close(s) == 0);
}

TEST_CASE("A malformed message resets that connection only") {
    watchdog guard("malformed peer", 90s);
    const std::vector<attack> list = attacks();
    bool raw_connects = true;
    const attack& chosen = list[pick_attack(list, &raw_connects)];
    CAPTURE(raw_connects);
    CAPTURE(chosen.name);

    world w;
    w.session_version = 2; // the raw peer speaks version 2
    host_options o;
    o.window_bytes = switch_window;
    sansock_context* a = w.host(o);
    sansock_context* b = w.host();
    // A healthy connection on the same context, open all along.
    const connection healthy = connect_pair(b, a);
    check_healthy(healthy, 20000);

    raw_peer raw(w.fabric());
    uint16_t port = 0;
    sansock_socket_t l = 0;
    sansock_socket_t s = 0;
    std::unique_ptr<background<int>> pending; // the switch's accept or connect
    sansock_socket_t accepted = 0;
    if (raw_connects) {
        l = listen_on(a, &port);
        REQUIRE(raw.connect(port) == 0);
        pending = std::make_unique<background<int>>("switch accept", [l, &accepted] {
            return sansock_accept(l, &accepted, nullptr, nullptr);
        });
    } else {
        port = raw.listen();
        raw_peer::op& accepting = raw.start_accept();
        REQUIRE(sansock_socket(a, &s) == 0);
        pending = std::make_unique<background<int>>("switch connect", [s, port] {
            const sockaddr_in to = ipv4(port);
            return sansock_connect(s, as_sockaddr(to), sizeof to);
        });
        raw.accepted(accepting);
    }
    const header hello = raw.read_hello();
    CHECK(hello.value == switch_window);
    const bool raw_closed = chosen.act(raw);

    // The switch's call finishes: the accept hands out the socket (or the connection is
    // dropped before it is handed out), the connect succeeds or fails.
    if (!pending->wait(5s) && raw_connects) {
        // Never handed out: the listener's close cancels the accept.
        CHECK(sansock_close(l) == 0);
        l = 0;
    }
    const int call = pending->result();
    if (raw_connects) {
        if (call == 0) s = accepted;
        else CHECK(call == -ECANCELED);
    } else {
        CHECK((call == 0 || call == -ECONNRESET));
    }
    if (s != 0 && call == 0) {
        uint64_t delivered = 0;
        CHECK(wait_for_recv_error(s, 10s, &delivered) == -ECONNRESET);
        CHECK(delivered <= chosen.max_data_delivered);
        CHECK(sansock_send(s, "x", 1, 0) == -ECONNRESET);
    }
    if (!raw_closed) CHECK(raw.wait_for_reset() == -ECONNRESET);

    // The other connection on the same context is unaffected.
    check_healthy(healthy);
    if (s != 0) CHECK(sansock_close(s) == 0);
    if (l != 0) CHECK(sansock_close(l) == 0);
    CHECK(sansock_close(healthy.client) == 0);
    CHECK(sansock_close(healthy.server) == 0);
}

} // namespace
} // namespace sansock::switchtest

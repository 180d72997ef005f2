// SPDX-License-Identifier: MIT
// Channel: every cell of the state table (semantics.md section 5), framing, session shutdown,
// graceful close, faults, time-outs and abort during close, on loopback.
#include <memory>

#include "tests/service/service_test_support.hpp"

using namespace sansock::svctest;

namespace {

// A channel `c` (on the client context) brought to a state. Its peer is `peer` (server side)
// once connected. OPENING is held at the gated connect; CLOSING waits for the peer's end of
// session.
struct channel_in {
    world w;
    sansock_context* server = w.host();
    sansock_context* client = w.host(true);
    sansock_listener* l = new_listener(server);
    sansock_channel* c = new_channel(client);
    sansock_channel* peer = nullptr;
    std::unique_ptr<background<int>> held; // open, accept or close in progress
    watchdog guard{"channel table cell"};

    explicit channel_in(int state) {
        REQUIRE(open_listener(l) == 0);
        switch (state) {
        case SANSOCK_CHANNEL_CREATED: break;
        case SANSOCK_CHANNEL_OPENING:
            gate().set_connect(true);
            held = std::make_unique<background<int>>("open", [this] {
                const sockaddr_in to = address_of(l);
                return sansock_channel_open(c, as_sockaddr(to), sizeof to, nullptr);
            });
            REQUIRE(eventually([] { return gate().connects_held() > 0; }));
            break;
        case SANSOCK_CHANNEL_ACCEPTING: {
            // c accepts on a listener of its own context
            sansock_listener* own = new_listener(client);
            REQUIRE(open_listener(own) == 0);
            accept_listener = own;
            held = std::make_unique<background<int>>("accept", [this] { return sansock_listener_accept(accept_listener, c, nullptr); });
            REQUIRE(eventually([this] { return cstate(c) == SANSOCK_CHANNEL_ACCEPTING; }));
            break;
        }
        case SANSOCK_CHANNEL_OPEN: connect(); break;
        case SANSOCK_CHANNEL_FAULTED:
            connect();
            REQUIRE(sansock_channel_abort(c) == 0);
            break;
        case SANSOCK_CHANNEL_CLOSING:
            connect();
            held = std::make_unique<background<int>>("close", [this] { return sansock_channel_close(c, nullptr); });
            REQUIRE(eventually([this] { return cstate(c) == SANSOCK_CHANNEL_CLOSING; }));
            settle(20ms);
            break;
        case SANSOCK_CHANNEL_CLOSED:
            connect();
            REQUIRE(sansock_channel_abort(c) == 0);
            REQUIRE(sansock_channel_close(c, nullptr) == 0);
            break;
        }
        REQUIRE(cstate(c) == state);
    }
    void connect() {
        peer = new_channel(server);
        background<int> accepting("accept", [this] { return sansock_listener_accept(l, peer, nullptr); });
        REQUIRE(open_channel(c, address_of(l)) == 0);
        REQUIRE(accepting.result() == 0);
    }
    // Lets the held call finish (the peer ends its session, the connect goes through).
    int release() {
        gate().set_connect(false);
        if (peer != nullptr && cstate(peer) == SANSOCK_CHANNEL_OPEN) sansock_channel_shutdown(peer, nullptr);
        return held ? held->result() : 0;
    }
    ~channel_in() {
        if (held && !held->finished()) {
            gate().set_connect(false);
            sansock_channel_abort(c);
        }
        held.reset();
        dispose(c);
        dispose(peer);
        dispose(accept_listener);
        dispose(l);
    }
    sansock_listener* accept_listener = nullptr;
};

int try_open(channel_in& t) {
    const sockaddr_in to = address_of(t.l);
    return sansock_channel_open(t.c, as_sockaddr(to), sizeof to, nullptr);
}
int try_accept(channel_in& t) {
    // accept into t.c on a listener of its own context (nothing connects: only the state check)
    sansock_listener* own = new_listener(t.client);
    REQUIRE(open_listener(own) == 0);
    async_record r;
    const sansock_async_context a = r.context();
    int rc = sansock_listener_accept(own, t.c, &a);
    if (rc == -EINPROGRESS) {
        sansock_channel_abort(t.c);
        rc = async_outcome(rc, r);
    }
    dispose(own);
    return rc;
}
int try_send(channel_in& t) { return bounded("send", [&] { return sansock_channel_send(t.c, "m", 1); }, 5s); }
int try_receive(channel_in& t) {
    char buffer[16];
    size_t size = 0;
    return bounded("receive", [&] { return sansock_channel_receive(t.c, buffer, sizeof buffer, &size); }, 5s);
}

} // namespace

TEST_CASE("Channel table, CREATED") {
    channel_in t(SANSOCK_CHANNEL_CREATED);
    SUBCASE("open goes to OPEN") {
        CHECK(try_open(t) == 0);
        CHECK(cstate(t.c) == SANSOCK_CHANNEL_OPEN);
    }
    SUBCASE("open that fails goes back to CREATED") {
        const sockaddr_in nobody = ipv4(1);
        CHECK(open_channel(t.c, nobody) == -ECONNREFUSED);
        CHECK(cstate(t.c) == SANSOCK_CHANNEL_CREATED);
        CHECK(try_open(t) == 0);
    }
    SUBCASE("accept goes to ACCEPTING, then OPEN") {
        sansock_listener* own = new_listener(t.client);
        REQUIRE(open_listener(own) == 0);
        async_record r;
        const sansock_async_context a = r.context();
        const int rc = sansock_listener_accept(own, t.c, &a);
        CHECK(rc == -EINPROGRESS);
        CHECK(cstate(t.c) == SANSOCK_CHANNEL_ACCEPTING);
        sansock_channel* other = new_channel(t.server);
        CHECK(open_channel(other, address_of(own)) == 0);
        CHECK(async_outcome(rc, r) == 0);
        CHECK(cstate(t.c) == SANSOCK_CHANNEL_OPEN);
        dispose(other);
        dispose(t.c);
        t.c = new_channel(t.client);
        dispose(own);
    }
    SUBCASE("send, receive, shutdown are -EBADFD") {
        CHECK(try_send(t) == -EBADFD);
        CHECK(try_receive(t) == -EBADFD);
        CHECK(sansock_channel_shutdown(t.c, nullptr) == -EBADFD);
        CHECK(cstate(t.c) == SANSOCK_CHANNEL_CREATED);
    }
    SUBCASE("close is 0 and goes to CLOSED") {
        CHECK(sansock_channel_close(t.c, nullptr) == 0);
        CHECK(cstate(t.c) == SANSOCK_CHANNEL_CLOSED);
    }
    SUBCASE("abort is 0 and stays CREATED") {
        CHECK(sansock_channel_abort(t.c) == 0);
        CHECK(cstate(t.c) == SANSOCK_CHANNEL_CREATED);
    }
    SUBCASE("reset is 0 and stays CREATED") {
        CHECK(sansock_channel_reset(t.c) == 0);
        CHECK(cstate(t.c) == SANSOCK_CHANNEL_CREATED);
    }
    SUBCASE("free is allowed") {
        CHECK(sansock_channel_free(t.c) == 0);
        t.c = new_channel(t.client);
    }
}

TEST_CASE("Channel table, OPENING") {
    channel_in t(SANSOCK_CHANNEL_OPENING);
    SUBCASE("open, accept, send, receive, shutdown, close, reset, free are -EBADFD") {
        CHECK(try_open(t) == -EBADFD);
        CHECK(try_accept(t) == -EBADFD);
        CHECK(try_send(t) == -EBADFD);
        CHECK(try_receive(t) == -EBADFD);
        CHECK(sansock_channel_shutdown(t.c, nullptr) == -EBADFD);
        CHECK(sansock_channel_close(t.c, nullptr) == -EBADFD);
        CHECK(sansock_channel_reset(t.c) == -EBADFD);
        CHECK(sansock_channel_free(t.c) == -EBADFD);
        CHECK(cstate(t.c) == SANSOCK_CHANNEL_OPENING);
        CHECK(t.release() == 0);
        CHECK(cstate(t.c) == SANSOCK_CHANNEL_OPEN);
    }
    SUBCASE("abort makes the open fail -ECANCELED and goes back to CREATED") {
        CHECK(sansock_channel_abort(t.c) == 0);
        CHECK(t.held->result() == -ECANCELED);
        CHECK(cstate(t.c) == SANSOCK_CHANNEL_CREATED);
        gate().set_connect(false);
        CHECK(try_open(t) == 0);
    }
    SUBCASE("abort of an asynchronous open: the callback comes once with -ECANCELED") {
        CHECK(t.release() == 0);
        dispose(t.c);
        t.c = new_channel(t.client);
        gate().set_connect(true);
        async_record r;
        const sansock_async_context a = r.context();
        const sockaddr_in to = address_of(t.l);
        const int rc = sansock_channel_open(t.c, as_sockaddr(to), sizeof to, &a);
        CHECK(rc == -EINPROGRESS);
        REQUIRE(eventually([] { return gate().connects_held() > 0; }));
        CHECK(cstate(t.c) == SANSOCK_CHANNEL_OPENING);
        CHECK(sansock_channel_abort(t.c) == 0);
        CHECK(async_outcome(rc, r) == -ECANCELED);
        CHECK(cstate(t.c) == SANSOCK_CHANNEL_CREATED);
        gate().set_connect(false);
    }
}

TEST_CASE("Channel table, ACCEPTING") {
    channel_in t(SANSOCK_CHANNEL_ACCEPTING);
    SUBCASE("open, a second accept, send, receive, shutdown, close, reset, free are -EBADFD") {
        CHECK(try_open(t) == -EBADFD);
        CHECK(sansock_listener_accept(t.accept_listener, t.c, nullptr) == -EBADFD); // Wine: second accept
        CHECK(try_send(t) == -EBADFD);
        CHECK(try_receive(t) == -EBADFD);
        CHECK(sansock_channel_shutdown(t.c, nullptr) == -EBADFD);
        CHECK(sansock_channel_close(t.c, nullptr) == -EBADFD);
        CHECK(sansock_channel_reset(t.c) == -EBADFD);
        CHECK(sansock_channel_free(t.c) == -EBADFD);
        CHECK(cstate(t.c) == SANSOCK_CHANNEL_ACCEPTING);
    }
    SUBCASE("abort makes the accept fail -ECANCELED and goes back to CREATED") {
        CHECK(sansock_channel_abort(t.c) == 0);
        CHECK(t.held->result() == -ECANCELED);
        CHECK(cstate(t.c) == SANSOCK_CHANNEL_CREATED);
        CHECK(lstate(t.accept_listener) == SANSOCK_LISTENER_OPEN); // the listener is not affected
    }
}

TEST_CASE("Channel table, OPEN") {
    channel_in t(SANSOCK_CHANNEL_OPEN);
    SUBCASE("open and accept are -EBADFD") {
        CHECK(try_open(t) == -EBADFD);
        CHECK(try_accept(t) == -EBADFD);
        CHECK(cstate(t.c) == SANSOCK_CHANNEL_OPEN);
    }
    SUBCASE("send and receive carry messages") {
        CHECK(send_text(t.c, "ping") == 0);
        received r = receive_text(t.peer);
        CHECK(r.rc == 0);
        CHECK(r.text == "ping");
        CHECK(send_text(t.peer, "") == 0); // an empty message
        r = receive_text(t.c);
        CHECK(r.rc == 0);
        CHECK(r.text.empty());
        CHECK(cstate(t.c) == SANSOCK_CHANNEL_OPEN);
    }
    SUBCASE("shutdown ends the session; a second shutdown is -EBADFD") {
        CHECK(send_text(t.c, "last") == 0);
        CHECK(sansock_channel_shutdown(t.c, nullptr) == 0);
        CHECK(sansock_channel_shutdown(t.c, nullptr) == -EBADFD);
        CHECK(try_send(t) == -EBADFD);
        CHECK(receive_text(t.peer).text == "last");
        CHECK(receive_text(t.peer).rc == SANSOCK_S_END);
        CHECK(receive_text(t.peer).rc == SANSOCK_S_END);
        CHECK(send_text(t.peer, "reply") == 0); // the other direction still works
        CHECK(receive_text(t.c).text == "reply");
        CHECK(cstate(t.c) == SANSOCK_CHANNEL_OPEN);
    }
    SUBCASE("close goes through CLOSING to CLOSED once the peer ends its session") {
        CHECK(t.release() == 0); // the peer shuts down its session
        CHECK(bounded("close", [&] { return sansock_channel_close(t.c, nullptr); }) == 0);
        CHECK(cstate(t.c) == SANSOCK_CHANNEL_CLOSED);
    }
    SUBCASE("abort goes to FAULTED") {
        CHECK(sansock_channel_abort(t.c) == 0);
        CHECK(cstate(t.c) == SANSOCK_CHANNEL_FAULTED);
        CHECK(receive_text(t.peer).rc == -ECONNRESET); // the peer sees a reset
    }
    SUBCASE("reset and free are -EBADFD") {
        CHECK(sansock_channel_reset(t.c) == -EBADFD);
        CHECK(sansock_channel_free(t.c) == -EBADFD);
        CHECK(cstate(t.c) == SANSOCK_CHANNEL_OPEN);
    }
}

TEST_CASE("Channel table, FAULTED") {
    channel_in t(SANSOCK_CHANNEL_FAULTED);
    SUBCASE("open and accept are -EBADFD") {
        CHECK(try_open(t) == -EBADFD);
        CHECK(try_accept(t) == -EBADFD);
    }
    SUBCASE("send, receive, shutdown are -ENOTRECOVERABLE") {
        CHECK(try_send(t) == -ENOTRECOVERABLE);
        CHECK(try_receive(t) == -ENOTRECOVERABLE);
        CHECK(sansock_channel_shutdown(t.c, nullptr) == -ENOTRECOVERABLE);
        CHECK(cstate(t.c) == SANSOCK_CHANNEL_FAULTED);
    }
    SUBCASE("close is 0 and goes to CLOSED") {
        CHECK(bounded("close", [&] { return sansock_channel_close(t.c, nullptr); }) == 0);
        CHECK(cstate(t.c) == SANSOCK_CHANNEL_CLOSED);
    }
    SUBCASE("abort stays FAULTED") {
        CHECK(sansock_channel_abort(t.c) == 0);
        CHECK(cstate(t.c) == SANSOCK_CHANNEL_FAULTED);
    }
    SUBCASE("reset and free are -EBADFD") {
        CHECK(sansock_channel_reset(t.c) == -EBADFD);
        CHECK(sansock_channel_free(t.c) == -EBADFD);
    }
}

TEST_CASE("Channel table, CLOSING") {
    channel_in t(SANSOCK_CHANNEL_CLOSING);
    SUBCASE("open, accept, send, receive, shutdown, close, reset, free are -EBADFD") {
        CHECK(try_open(t) == -EBADFD);
        CHECK(try_accept(t) == -EBADFD);
        CHECK(try_send(t) == -EBADFD);
        CHECK(try_receive(t) == -EBADFD);
        CHECK(sansock_channel_shutdown(t.c, nullptr) == -EBADFD);
        CHECK(sansock_channel_close(t.c, nullptr) == -EBADFD);
        CHECK(sansock_channel_reset(t.c) == -EBADFD);
        CHECK(sansock_channel_free(t.c) == -EBADFD);
        CHECK(cstate(t.c) == SANSOCK_CHANNEL_CLOSING);
        CHECK(t.release() == 0);
        CHECK(cstate(t.c) == SANSOCK_CHANNEL_CLOSED);
    }
    SUBCASE("abort makes the close return -ECANCELED; it ends CLOSED") {
        CHECK(sansock_channel_abort(t.c) == 0);
        CHECK(t.held->result() == -ECANCELED);
        CHECK(cstate(t.c) == SANSOCK_CHANNEL_CLOSED);
        // The close had already sent end of session; the reset follows it.
        const int rc = receive_text(t.peer).rc;
        CHECK((rc == -ECONNRESET || rc == SANSOCK_S_END));
    }
}

TEST_CASE("Channel table, CLOSED") {
    channel_in t(SANSOCK_CHANNEL_CLOSED);
    SUBCASE("open, accept, send, receive, shutdown are -EBADFD") {
        CHECK(try_open(t) == -EBADFD);
        CHECK(try_accept(t) == -EBADFD);
        CHECK(try_send(t) == -EBADFD);
        CHECK(try_receive(t) == -EBADFD);
        CHECK(sansock_channel_shutdown(t.c, nullptr) == -EBADFD);
    }
    SUBCASE("close is 0, abort is 0, both stay CLOSED") {
        CHECK(sansock_channel_close(t.c, nullptr) == 0);
        CHECK(sansock_channel_abort(t.c) == 0);
        CHECK(cstate(t.c) == SANSOCK_CHANNEL_CLOSED);
    }
    SUBCASE("reset goes to CREATED and the channel opens again") {
        CHECK(sansock_channel_reset(t.c) == 0);
        CHECK(cstate(t.c) == SANSOCK_CHANNEL_CREATED);
        sansock_channel* again = new_channel(t.server);
        background<int> accepting("accept", [&] { return sansock_listener_accept(t.l, again, nullptr); });
        CHECK(try_open(t) == 0);
        CHECK(accepting.result() == 0);
        dispose(again);
    }
    SUBCASE("free is allowed") {
        CHECK(sansock_channel_free(t.c) == 0);
        t.c = new_channel(t.client);
    }
}

TEST_CASE("A channel faults on an I/O error: a pending receive fails -ECONNRESET when the peer resets") {
    watchdog guard("fault on reset");
    world w;
    channel_pair p = connect_pair(w.host(), w.host());
    background<received> receiving("receive", [&] { return receive_text(p.server); });
    settle(50ms);
    CHECK(sansock_channel_abort(p.client) == 0); // linger {1,0}: a reset
    CHECK(receiving.result().rc == -ECONNRESET);
    CHECK(cstate(p.server) == SANSOCK_CHANNEL_FAULTED);
    CHECK(bounded("send", [&] { return sansock_channel_send(p.server, "x", 1); }) == -ENOTRECOVERABLE);
    CHECK(receive_text(p.server).rc == -ENOTRECOVERABLE);
    CHECK(sansock_channel_shutdown(p.server, nullptr) == -ENOTRECOVERABLE);
    CHECK(bounded("close", [&] { return sansock_channel_close(p.server, nullptr); }) == 0);
    dispose(p);
}

TEST_CASE("Abort cancels a pending receive with -ECANCELED") {
    watchdog guard("abort cancels receive");
    world w;
    channel_pair p = connect_pair(w.host(), w.host());
    background<received> receiving("receive", [&] { return receive_text(p.server); });
    settle(50ms);
    CHECK(sansock_channel_abort(p.server) == 0);
    CHECK(receiving.result().rc == -ECANCELED);
    CHECK(cstate(p.server) == SANSOCK_CHANNEL_FAULTED);
    dispose(p);
}

TEST_CASE("A message longer than the buffer is -EMSGSIZE and the channel stays OPEN; over max_message it is refused") {
    watchdog guard("message size");
    world w;
    channel_pair p = connect_pair(w.host(), w.host());
    const std::string big(100000, 'b');
    CHECK(send_text(p.client, big) == 0);
    CHECK(send_text(p.client, "after") == 0);
    char small[10];
    size_t size = 0;
    CHECK(bounded("receive", [&] { return sansock_channel_receive(p.server, small, sizeof small, &size); }) == -EMSGSIZE);
    CHECK(size == big.size());
    CHECK(receive_text(p.server).text == "after");
    CHECK(cstate(p.server) == SANSOCK_CHANNEL_OPEN);
    std::vector<char> huge((16u << 20) + 1);
    CHECK(sansock_channel_send(p.client, huge.data(), huge.size()) == -EMSGSIZE);
    dispose(p);
}

TEST_CASE("Close is graceful: it waits for a pending receive, which completes with the peer's message") {
    watchdog guard("close waits for pending I/O");
    world w;
    channel_pair p = connect_pair(w.host(), w.host());
    background<received> receiving("receive", [&] { return receive_text(p.server); });
    settle(50ms);
    async_record r;
    const sansock_async_context a = r.context();
    const int rc = sansock_channel_close(p.server, &a);
    CHECK(rc == -EINPROGRESS);
    settle(200ms);
    CHECK(r.count() == 0);
    CHECK(cstate(p.server) == SANSOCK_CHANNEL_CLOSING);
    CHECK(send_text(p.client, "in time") == 0);
    CHECK(receiving.result().text == "in time");
    CHECK(receive_text(p.client).rc == SANSOCK_S_END); // the server's close ended its session
    settle(100ms);
    CHECK(r.count() == 0); // still waits for the client's end of session
    CHECK(bounded("client close", [&] { return sansock_channel_close(p.client, nullptr); }) == 0);
    CHECK(async_outcome(rc, r) == 0);
    CHECK(cstate(p.server) == SANSOCK_CHANNEL_CLOSED);
    dispose(p);
}

TEST_CASE("Close times out with -ETIMEDOUT when the peer never ends its session, and ends CLOSED") {
    watchdog guard("close time-out");
    world w;
    channel_pair p = connect_pair(w.host(), w.host(), SANSOCK_CHANNEL_SESSION, 300);
    const auto start = steady_clock::now();
    CHECK(bounded("close", [&] { return sansock_channel_close(p.server, nullptr); }) == -ETIMEDOUT);
    CHECK(steady_clock::now() - start >= 250ms);
    CHECK(cstate(p.server) == SANSOCK_CHANNEL_CLOSED);
    const int rc = receive_text(p.client).rc; // the reset overtakes the end of session not read yet
    CHECK((rc == -ECONNRESET || rc == SANSOCK_S_END));
    dispose(p);
}

TEST_CASE("Shutdown with a send in progress completes after the send, exactly once") {
    watchdog guard("shutdown after send");
    world w;
    channel_pair p = connect_pair(w.host(), w.host());
    const std::string big(4u << 20, 's');
    background<int> sending("send", [&] { return sansock_channel_send(p.client, big.data(), big.size()); });
    settle(20ms);
    async_record r;
    const sansock_async_context a = r.context();
    const int rc = sansock_channel_shutdown(p.client, &a);
    background<received> reading("receive", [&] {
        std::vector<char> buffer(big.size());
        received out;
        size_t size = 0;
        out.rc = sansock_channel_receive(p.server, buffer.data(), buffer.size(), &size);
        out.text.assign(buffer.data(), out.rc == 0 ? size : 0);
        return out;
    });
    CHECK(sending.result() == 0);
    CHECK(async_outcome(rc, r) == 0);
    CHECK(reading.result().text == big);
    CHECK(receive_text(p.server).rc == SANSOCK_S_END);
    dispose(p);
}

TEST_CASE("Non-session channels: shutdown is -EBADFD and close does not wait for the peer") {
    watchdog guard("non-session channel");
    world w;
    channel_pair p = connect_pair(w.host(), w.host(), SANSOCK_CHANNEL_NONSESSION);
    CHECK(sansock_channel_shutdown(p.client, nullptr) == -EBADFD);
    CHECK(send_text(p.client, "one") == 0);
    CHECK(bounded("close", [&] { return sansock_channel_close(p.client, nullptr); }, 5s) == 0);
    CHECK(receive_text(p.server).text == "one");
    CHECK(receive_text(p.server).rc == SANSOCK_S_END);
    dispose(p);
}

TEST_CASE("Wine: async calls either complete at once without a callback or call back exactly once") {
    watchdog guard("async contexts");
    world w;
    sansock_context* server = w.host();
    sansock_context* client = w.host();
    sansock_listener* l = new_listener(server);
    async_record ro;
    const sansock_async_context ao = ro.context();
    const sockaddr_in any = ipv4(0);
    CHECK(async_outcome(sansock_listener_open(l, as_sockaddr(any), sizeof any, &ao), ro) == 0);
    sansock_channel* s = new_channel(server);
    sansock_channel* c = new_channel(client);
    async_record ra, rc;
    const sansock_async_context aa = ra.context(), ac = rc.context();
    const int accept_rc = sansock_listener_accept(l, s, &aa);
    const sockaddr_in to = address_of(l);
    CHECK(async_outcome(sansock_channel_open(c, as_sockaddr(to), sizeof to, &ac), rc) == 0);
    CHECK(async_outcome(accept_rc, ra) == 0);
    async_record r1, r2, r3;
    const sansock_async_context a1 = r1.context(), a2 = r2.context(), a3 = r3.context();
    const int close_c = sansock_channel_close(c, &a1);
    const int close_s = sansock_channel_close(s, &a2);
    CHECK(async_outcome(close_c, r1) == 0);
    CHECK(async_outcome(close_s, r2) == 0);
    CHECK(async_outcome(sansock_listener_close(l, &a3), r3) == 0);
    sansock_async_context no_callback{nullptr, nullptr};
    CHECK(sansock_listener_close(l, &no_callback) == -EINVAL);
    dispose(c);
    dispose(s);
    dispose(l);
}

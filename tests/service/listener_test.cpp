// SPDX-License-Identifier: MIT
// Listener: every cell of the state table (semantics.md section 4), close and abort
// behaviour, Wine's cases (section 8), and races, on loopback.
#include <memory>

#include "tests/service/service_test_support.hpp"

using namespace sansock::svctest;

namespace {

// A listener brought to a state; OPENING and CLOSING are held at the gated provider.
struct listener_in {
    world w;
    sansock_context* server = w.host(true);
    sansock_context* client = w.host();
    sansock_listener* l = new_listener(server);
    std::unique_ptr<background<int>> held; // the open or close held at a gate
    watchdog guard{"listener table cell"};

    explicit listener_in(int state) {
        switch (state) {
        case SANSOCK_LISTENER_CREATED: break;
        case SANSOCK_LISTENER_OPENING:
            gate().set_listen(true);
            held = std::make_unique<background<int>>("open", [this] { return open_listener(l); });
            REQUIRE(gate().wait_listen_held());
            break;
        case SANSOCK_LISTENER_OPEN: REQUIRE(open_listener(l) == 0); break;
        case SANSOCK_LISTENER_FAULTED:
            REQUIRE(open_listener(l) == 0);
            REQUIRE(sansock_listener_abort(l) == 0);
            break;
        case SANSOCK_LISTENER_CLOSING:
            REQUIRE(open_listener(l) == 0);
            gate().set_close(true);
            held = std::make_unique<background<int>>("close", [this] { return sansock_listener_close(l, nullptr); });
            REQUIRE(gate().wait_close_held());
            break;
        case SANSOCK_LISTENER_CLOSED:
            REQUIRE(open_listener(l) == 0);
            REQUIRE(sansock_listener_close(l, nullptr) == 0);
            break;
        }
        REQUIRE(lstate(l) == state);
    }
    // The held call's result once the gates open.
    int release() {
        gate().set_listen(false);
        gate().set_close(false);
        return held ? held->result() : 0;
    }
    ~listener_in() {
        release();
        held.reset();
        dispose(l);
    }
};

sockaddr_in any_address() { return ipv4(0); }

int try_open(sansock_listener* l) {
    const sockaddr_in a = any_address();
    return sansock_listener_open(l, as_sockaddr(a), sizeof a, nullptr);
}

} // namespace

TEST_CASE("Listener table, CREATED") {
    listener_in t(SANSOCK_LISTENER_CREATED);
    SUBCASE("open goes to OPEN") {
        CHECK(try_open(t.l) == 0);
        CHECK(lstate(t.l) == SANSOCK_LISTENER_OPEN);
    }
    SUBCASE("open that fails goes back to CREATED") {
        sansock_listener* other = new_listener(t.server);
        REQUIRE(open_listener(other) == 0);
        const sockaddr_in taken = address_of(other);
        CHECK(sansock_listener_open(t.l, as_sockaddr(taken), sizeof taken, nullptr) == -EADDRINUSE);
        CHECK(lstate(t.l) == SANSOCK_LISTENER_CREATED);
        dispose(other);
    }
    SUBCASE("open with a bad address is -EINVAL/-EAFNOSUPPORT and stays CREATED") {
        sockaddr_in6 six{};
        six.sin6_family = AF_INET6; // AF_INET6 is taken, but needs all of sockaddr_in6
        CHECK(sansock_listener_open(t.l, reinterpret_cast<sockaddr*>(&six), sizeof(sockaddr_in), nullptr) == -EINVAL);
        sockaddr_storage other{};
        other.ss_family = AF_UNIX;
        CHECK(sansock_listener_open(t.l, reinterpret_cast<sockaddr*>(&other), sizeof other, nullptr) == -EAFNOSUPPORT);
        CHECK(sansock_listener_open(t.l, nullptr, 0, nullptr) == -EINVAL);
        CHECK(lstate(t.l) == SANSOCK_LISTENER_CREATED);
    }
    SUBCASE("accept is -EBADFD") {
        sansock_channel* c = new_channel(t.server);
        CHECK(sansock_listener_accept(t.l, c, nullptr) == -EBADFD);
        CHECK(cstate(c) == SANSOCK_CHANNEL_CREATED);
        dispose(c);
        CHECK(lstate(t.l) == SANSOCK_LISTENER_CREATED);
    }
    SUBCASE("close is 0 and goes to CLOSED") {
        CHECK(sansock_listener_close(t.l, nullptr) == 0);
        CHECK(lstate(t.l) == SANSOCK_LISTENER_CLOSED);
    }
    SUBCASE("abort is 0 and stays CREATED") {
        CHECK(sansock_listener_abort(t.l) == 0);
        CHECK(lstate(t.l) == SANSOCK_LISTENER_CREATED);
    }
    SUBCASE("reset is 0 and stays CREATED") {
        CHECK(sansock_listener_reset(t.l) == 0);
        CHECK(lstate(t.l) == SANSOCK_LISTENER_CREATED);
    }
    SUBCASE("free is allowed") {
        CHECK(sansock_listener_free(t.l) == 0);
        t.l = new_listener(t.server); // for the destructor
    }
}

TEST_CASE("Listener table, OPENING") {
    listener_in t(SANSOCK_LISTENER_OPENING);
    SUBCASE("open is -EBADFD") {
        CHECK(try_open(t.l) == -EBADFD);
        CHECK(lstate(t.l) == SANSOCK_LISTENER_OPENING);
        CHECK(t.release() == 0);
        CHECK(lstate(t.l) == SANSOCK_LISTENER_OPEN);
    }
    SUBCASE("accept is -EBADFD") {
        sansock_channel* c = new_channel(t.server);
        CHECK(sansock_listener_accept(t.l, c, nullptr) == -EBADFD);
        CHECK(lstate(t.l) == SANSOCK_LISTENER_OPENING);
        CHECK(t.release() == 0);
        dispose(c);
    }
    SUBCASE("close is -EBADFD (close during open)") {
        CHECK(sansock_listener_close(t.l, nullptr) == -EBADFD);
        CHECK(lstate(t.l) == SANSOCK_LISTENER_OPENING);
        CHECK(t.release() == 0);
        CHECK(lstate(t.l) == SANSOCK_LISTENER_OPEN);
    }
    SUBCASE("abort makes the open fail -ECANCELED and goes back to CREATED") {
        CHECK(sansock_listener_abort(t.l) == 0);
        CHECK(t.release() == -ECANCELED);
        CHECK(lstate(t.l) == SANSOCK_LISTENER_CREATED);
        CHECK(try_open(t.l) == 0); // usable again
    }
    SUBCASE("reset is -EBADFD") {
        CHECK(sansock_listener_reset(t.l) == -EBADFD);
        CHECK(lstate(t.l) == SANSOCK_LISTENER_OPENING);
        CHECK(t.release() == 0);
    }
    SUBCASE("free is not allowed") {
        CHECK(sansock_listener_free(t.l) == -EBADFD);
        CHECK(t.release() == 0);
    }
}

TEST_CASE("Listener table, OPEN") {
    listener_in t(SANSOCK_LISTENER_OPEN);
    SUBCASE("open is -EBADFD") {
        CHECK(try_open(t.l) == -EBADFD);
        CHECK(lstate(t.l) == SANSOCK_LISTENER_OPEN);
    }
    SUBCASE("accept accepts and stays OPEN") {
        sansock_channel* server = new_channel(t.server);
        sansock_channel* client = new_channel(t.client);
        background<int> accepting("accept", [&] { return sansock_listener_accept(t.l, server, nullptr); });
        CHECK(open_channel(client, address_of(t.l)) == 0);
        CHECK(accepting.result() == 0);
        CHECK(cstate(server) == SANSOCK_CHANNEL_OPEN);
        CHECK(lstate(t.l) == SANSOCK_LISTENER_OPEN);
        CHECK(send_text(client, "hello") == 0);
        const received r = receive_text(server);
        CHECK(r.rc == 0);
        CHECK(r.text == "hello");
        dispose(client);
        dispose(server);
    }
    SUBCASE("close goes through CLOSING to CLOSED") {
        CHECK(sansock_listener_close(t.l, nullptr) == 0);
        CHECK(lstate(t.l) == SANSOCK_LISTENER_CLOSED);
    }
    SUBCASE("abort goes to FAULTED") {
        CHECK(sansock_listener_abort(t.l) == 0);
        CHECK(lstate(t.l) == SANSOCK_LISTENER_FAULTED);
    }
    SUBCASE("reset is -EBADFD") {
        CHECK(sansock_listener_reset(t.l) == -EBADFD);
        CHECK(lstate(t.l) == SANSOCK_LISTENER_OPEN);
    }
    SUBCASE("free is not allowed") {
        CHECK(sansock_listener_free(t.l) == -EBADFD);
        CHECK(lstate(t.l) == SANSOCK_LISTENER_OPEN);
    }
}

TEST_CASE("Listener table, FAULTED") {
    listener_in t(SANSOCK_LISTENER_FAULTED);
    SUBCASE("open is -EBADFD") {
        CHECK(try_open(t.l) == -EBADFD);
        CHECK(lstate(t.l) == SANSOCK_LISTENER_FAULTED);
    }
    SUBCASE("accept fails -ENOTRECOVERABLE at once, sync and async") {
        sansock_channel* c = new_channel(t.server);
        CHECK(bounded("accept", [&] { return sansock_listener_accept(t.l, c, nullptr); }, 2s) == -ENOTRECOVERABLE);
        async_record r;
        const sansock_async_context a = r.context();
        CHECK(async_outcome(sansock_listener_accept(t.l, c, &a), r) == -ENOTRECOVERABLE);
        CHECK(r.count() == 0);
        CHECK(cstate(c) == SANSOCK_CHANNEL_CREATED);
        CHECK(lstate(t.l) == SANSOCK_LISTENER_FAULTED);
        dispose(c);
    }
    SUBCASE("close goes through CLOSING to CLOSED") {
        CHECK(sansock_listener_close(t.l, nullptr) == 0);
        CHECK(lstate(t.l) == SANSOCK_LISTENER_CLOSED);
    }
    SUBCASE("abort stays FAULTED") {
        CHECK(sansock_listener_abort(t.l) == 0);
        CHECK(lstate(t.l) == SANSOCK_LISTENER_FAULTED);
    }
    SUBCASE("reset is -EBADFD") { CHECK(sansock_listener_reset(t.l) == -EBADFD); }
    SUBCASE("free is not allowed") { CHECK(sansock_listener_free(t.l) == -EBADFD); }
}

TEST_CASE("Listener table, CLOSING") {
    listener_in t(SANSOCK_LISTENER_CLOSING);
    SUBCASE("open is -EBADFD") {
        CHECK(try_open(t.l) == -EBADFD);
        CHECK(lstate(t.l) == SANSOCK_LISTENER_CLOSING);
        CHECK(t.release() == 0);
    }
    SUBCASE("accept is -EBADFD") {
        sansock_channel* c = new_channel(t.server);
        CHECK(sansock_listener_accept(t.l, c, nullptr) == -EBADFD);
        CHECK(t.release() == 0);
        dispose(c);
    }
    SUBCASE("close is -EBADFD") {
        CHECK(sansock_listener_close(t.l, nullptr) == -EBADFD);
        CHECK(lstate(t.l) == SANSOCK_LISTENER_CLOSING);
        CHECK(t.release() == 0);
        CHECK(lstate(t.l) == SANSOCK_LISTENER_CLOSED);
    }
    SUBCASE("abort makes the close return -ECANCELED; it ends CLOSED") {
        CHECK(sansock_listener_abort(t.l) == 0);
        CHECK(t.release() == -ECANCELED);
        CHECK(lstate(t.l) == SANSOCK_LISTENER_CLOSED);
    }
    SUBCASE("reset is -EBADFD") {
        CHECK(sansock_listener_reset(t.l) == -EBADFD);
        CHECK(t.release() == 0);
    }
    SUBCASE("free is not allowed") {
        CHECK(sansock_listener_free(t.l) == -EBADFD);
        CHECK(t.release() == 0);
    }
}

TEST_CASE("Listener table, CLOSED") {
    listener_in t(SANSOCK_LISTENER_CLOSED);
    SUBCASE("open is -EBADFD") {
        CHECK(try_open(t.l) == -EBADFD);
        CHECK(lstate(t.l) == SANSOCK_LISTENER_CLOSED);
    }
    SUBCASE("accept is -EBADFD") {
        sansock_channel* c = new_channel(t.server);
        CHECK(sansock_listener_accept(t.l, c, nullptr) == -EBADFD);
        dispose(c);
    }
    SUBCASE("close is 0 and stays CLOSED") {
        CHECK(sansock_listener_close(t.l, nullptr) == 0);
        CHECK(lstate(t.l) == SANSOCK_LISTENER_CLOSED);
    }
    SUBCASE("abort is 0 and stays CLOSED") {
        CHECK(sansock_listener_abort(t.l) == 0);
        CHECK(lstate(t.l) == SANSOCK_LISTENER_CLOSED);
    }
    SUBCASE("reset goes to CREATED and the listener opens again") {
        CHECK(sansock_listener_reset(t.l) == 0);
        CHECK(lstate(t.l) == SANSOCK_LISTENER_CREATED);
        CHECK(try_open(t.l) == 0);
    }
    SUBCASE("free is allowed") {
        CHECK(sansock_listener_free(t.l) == 0);
        t.l = new_listener(t.server);
    }
}

TEST_CASE("Listener close aborts pending accepts with -ECANCELED and resets unaccepted connections") {
    watchdog guard("listener close");
    world w;
    sansock_context* server = w.host();
    sansock_context* client = w.host();
    sansock_listener* l = new_listener(server);
    REQUIRE(open_listener(l) == 0);
    const sockaddr_in to = address_of(l);

    // Two clients connect but are never accepted.
    sansock_channel* early[2] = {new_channel(client), new_channel(client)};
    for (auto* c : early) REQUIRE(open_channel(c, to) == 0);
    // Then accepts wait (sync and async); the switch hands them the two connections first...
    sansock_channel* a1 = new_channel(server);
    sansock_channel* a2 = new_channel(server);
    sansock_channel* a3 = new_channel(server);
    async_record r1, r2;
    const sansock_async_context c1 = r1.context(), c2 = r2.context();
    CHECK(async_outcome(sansock_listener_accept(l, a1, &c1), r1) == 0);
    CHECK(async_outcome(sansock_listener_accept(l, a2, &c2), r2) == 0);
    // ...a third client arrives but nobody accepts it; a sync accept is waiting too.
    sansock_channel* late = new_channel(client);
    REQUIRE(open_channel(late, to) == 0);
    settle(100ms);
    // (the sync accept takes the late connection or waits; close decides the rest)
    background<int> waiting("sync accept", [&] { return sansock_listener_accept(l, a3, nullptr); });
    settle(100ms);
    sansock_channel* pending = new_channel(server);
    async_record rp;
    const sansock_async_context cp = rp.context();
    const int pending_rc = sansock_listener_accept(l, pending, &cp);
    CHECK(sansock_listener_close(l, nullptr) == 0);
    CHECK(lstate(l) == SANSOCK_LISTENER_CLOSED);
    const int sync_rc = waiting.result();
    const int async_rc = async_outcome(pending_rc, rp);
    // Exactly one of them got the late connection; the other was cancelled.
    CHECK(((sync_rc == 0 && async_rc == -ECANCELED) || (sync_rc == -ECANCELED && async_rc == 0)));
    CHECK(cstate(sync_rc == 0 ? pending : a3) == SANSOCK_CHANNEL_CREATED);
    dispose(a1);
    dispose(a2);
    dispose(a3);
    dispose(pending);
    for (auto* c : early) dispose(c);
    dispose(late);
    dispose(l);
}

TEST_CASE("Listener close resets the clients that arrived but were never accepted") {
    watchdog guard("listener close resets");
    world w;
    sansock_context* server = w.host();
    sansock_context* client = w.host();
    sansock_listener* l = new_listener(server);
    REQUIRE(open_listener(l) == 0);
    sansock_channel* c = new_channel(client);
    REQUIRE(open_channel(c, address_of(l)) == 0);
    background<received> receiving("receive", [c] { return receive_text(c); });
    settle(100ms);
    CHECK(sansock_listener_close(l, nullptr) == 0);
    const received r = receiving.result();
    CHECK(r.rc == -ECONNRESET);
    CHECK(cstate(c) == SANSOCK_CHANNEL_FAULTED);
    CHECK(send_text(c, "x") == -ENOTRECOVERABLE);
    CHECK(sansock_channel_close(c, nullptr) == 0);
    dispose(c);
    dispose(l);
}

TEST_CASE("Listener abort while an accept is pending: the accept is cancelled, later ones fail at once") {
    watchdog guard("abort with accept pending");
    world w;
    sansock_context* server = w.host();
    for (int round = 0; round < 20; ++round) {
        sansock_listener* l = new_listener(server);
        REQUIRE(open_listener(l) == 0);
        sansock_channel* c = new_channel(server);
        async_record r;
        const sansock_async_context a = r.context();
        sansock_channel* s = new_channel(server);
        background<int> sync_accept("sync accept", [&] { return sansock_listener_accept(l, s, nullptr); });
        const int rc = sansock_listener_accept(l, c, &a);
        if (round % 2 == 0) REQUIRE(eventually([&] { return cstate(s) == SANSOCK_CHANNEL_ACCEPTING; }));
        CHECK(sansock_listener_abort(l) == 0);
        CHECK(lstate(l) == SANSOCK_LISTENER_FAULTED);
        CHECK(async_outcome(rc, r) == -ECANCELED);
        const int sync_rc = sync_accept.result();
        if (round % 2 == 0)
            CHECK(sync_rc == -ECANCELED);
        else // the thread may have come after the abort
            CHECK((sync_rc == -ECANCELED || sync_rc == -ENOTRECOVERABLE));
        CHECK(cstate(s) == SANSOCK_CHANNEL_CREATED);
        dispose(s);
        CHECK(cstate(c) == SANSOCK_CHANNEL_CREATED);
        CHECK(sansock_listener_accept(l, c, nullptr) == -ENOTRECOVERABLE);
        dispose(c);
        dispose(l);
    }
}

TEST_CASE("Listener abort during an asynchronous close makes it complete -ECANCELED, CLOSED") {
    watchdog guard("abort during close");
    world w;
    sansock_context* server = w.host(true);
    sansock_listener* l = new_listener(server);
    REQUIRE(open_listener(l) == 0);
    gate().set_close(true);
    async_record r;
    const sansock_async_context a = r.context();
    background<int> closing("async close", [&] { return sansock_listener_close(l, &a); });
    REQUIRE(gate().wait_close_held());
    CHECK(lstate(l) == SANSOCK_LISTENER_CLOSING);
    CHECK(sansock_listener_abort(l) == 0);
    gate().set_close(false);
    CHECK(async_outcome(closing.result(), r) == -ECANCELED);
    CHECK(lstate(l) == SANSOCK_LISTENER_CLOSED);
    dispose(l);
}

TEST_CASE("Listener close racing with open, and abort racing with close, stay consistent") {
    watchdog guard("open/close races");
    world w;
    sansock_context* server = w.host();
    for (int round = 0; round < 50; ++round) {
        sansock_listener* l = new_listener(server);
        background<int> opening("open", [l] { return open_listener(l); });
        int closed = -1;
        while (closed != 0) { // close is -EBADFD while OPENING, then 0
            closed = sansock_listener_close(l, nullptr);
            REQUIRE((closed == 0 || closed == -EBADFD));
            if (closed != 0) std::this_thread::yield();
        }
        const int opened = opening.result();
        CHECK((opened == 0 || opened == -EBADFD || opened == -ECANCELED));
        CHECK(lstate(l) == SANSOCK_LISTENER_CLOSED);
        dispose(l);

        sansock_listener* m = new_listener(server);
        REQUIRE(open_listener(m) == 0);
        async_record r;
        const sansock_async_context a = r.context();
        background<int> aborting("abort", [m] { return sansock_listener_abort(m); });
        const int rc = async_outcome(sansock_listener_close(m, &a), r);
        CHECK(aborting.result() == 0);
        CHECK((rc == 0 || rc == -ECANCELED));
        CHECK(lstate(m) == SANSOCK_LISTENER_CLOSED);
        dispose(m);
    }
}

TEST_CASE("Many threads accepting while one closes: every accept completes once") {
    watchdog guard("many accepts and close");
    world w;
    sansock_context* server = w.host();
    sansock_context* client = w.host();
    sansock_listener* l = new_listener(server);
    REQUIRE(open_listener(l) == 0);
    const sockaddr_in to = address_of(l);
    constexpr int threads = 8, clients = 3;
    std::vector<sansock_channel*> accepted(threads);
    for (auto& c : accepted) c = new_channel(server);
    std::vector<std::unique_ptr<background<int>>> accepting;
    for (int i = 0; i < threads; ++i)
        accepting.push_back(std::make_unique<background<int>>("accept", [&, i] { return sansock_listener_accept(l, accepted[i], nullptr); }));
    std::vector<sansock_channel*> connected(clients);
    for (auto& c : connected) {
        c = new_channel(client);
        REQUIRE(open_channel(c, to) == 0);
    }
    REQUIRE(eventually([&] {
        int open = 0;
        for (auto* c : accepted) open += cstate(c) == SANSOCK_CHANNEL_OPEN;
        return open == clients;
    }));
    CHECK(bounded("close", [l] { return sansock_listener_close(l, nullptr); }) == 0);
    int ok = 0, cancelled = 0;
    for (auto& a : accepting) {
        const int rc = a->result();
        ok += rc == 0;
        cancelled += rc == -ECANCELED;
    }
    CHECK(ok == clients);
    CHECK(cancelled == threads - clients);
    CHECK(lstate(l) == SANSOCK_LISTENER_CLOSED);
    for (auto* c : accepted) dispose(c);
    for (auto* c : connected) dispose(c);
    dispose(l);
}

TEST_CASE("Wine: close of a never-opened listener is 0; open twice is invalid; reset rules; accept unopened invalid") {
    watchdog guard("wine listener cases");
    world w;
    sansock_context* server = w.host();
    sansock_listener* l = new_listener(server);
    CHECK(sansock_listener_close(l, nullptr) == 0);
    CHECK(sansock_listener_reset(l) == 0);
    sansock_channel* c = new_channel(server);
    CHECK(sansock_listener_accept(l, c, nullptr) == -EBADFD);
    CHECK(sansock_listener_reset(l) == 0);
    CHECK(open_listener(l) == 0);
    CHECK(open_listener(l) == -EBADFD);
    CHECK(sansock_listener_reset(l) == -EBADFD);
    CHECK(sansock_listener_close(l, nullptr) == 0);
    CHECK(sansock_listener_reset(l) == 0);
    CHECK(lstate(l) == SANSOCK_LISTENER_CREATED);
    CHECK(open_listener(l) == 0);
    dispose(c);
    dispose(l);
}

TEST_CASE("Listener with attributes keeps them across reset") {
    watchdog guard("attributes");
    world w;
    sansock_context* server = w.host();
    sansock_listener_attr attr{sizeof(sansock_listener_attr), 2};
    sansock_listener* l = nullptr;
    REQUIRE(sansock_listener_create(server, &attr, &l) == 0);
    attr.size = 1;
    sansock_listener* bad = nullptr;
    CHECK(sansock_listener_create(server, &attr, &bad) == -EINVAL);
    CHECK(open_listener(l) == 0);
    CHECK(sansock_listener_close(l, nullptr) == 0);
    CHECK(sansock_listener_reset(l) == 0);
    CHECK(open_listener(l) == 0);
    CHECK(sansock_listener_get_state(nullptr) == -EINVAL);
    CHECK(sansock_listener_abort(nullptr) == -EINVAL);
    dispose(l);
}

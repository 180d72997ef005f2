// SPDX-License-Identifier: MIT
// sansock_socket_fd: a kernel descriptor per socket that poll, select and epoll (level- and
// edge-triggered) see readable on data, end of stream, an error and a pending connection, and
// writable while a send would not block, in both progress modes; closed by sansock_close.
#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/select.h>

#include <algorithm>

#include "tests/switch/switch_test_support.hpp"

namespace sansock::switchtest {
namespace {

constexpr short in_out = POLLIN | POLLOUT;

// What the descriptor shows now, of POLLIN and POLLOUT (and anything else it shows).
short shows(int fd) {
    pollfd p{fd, in_out, 0};
    REQUIRE(::poll(&p, 1, 0) >= 0);
    return p.revents;
}

// What select says of it: bit 0 readable, bit 1 writable.
int selects(int fd) {
    REQUIRE(fd < FD_SETSIZE);
    fd_set r, w;
    FD_ZERO(&r);
    FD_ZERO(&w);
    FD_SET(fd, &r);
    FD_SET(fd, &w);
    timeval none{0, 0};
    REQUIRE(::select(fd + 1, &r, &w, nullptr, &none) >= 0);
    return (FD_ISSET(fd, &r) ? 1 : 0) | (FD_ISSET(fd, &w) ? 2 : 0);
}

// An epoll set holding descriptors; wait() gives the events reported for `fd`, 0 for none.
class epoll_set {
public:
    epoll_set() : fd_(::epoll_create1(EPOLL_CLOEXEC)) { REQUIRE(fd_ >= 0); }
    ~epoll_set() { ::close(fd_); }
    epoll_set(const epoll_set&) = delete;
    epoll_set& operator=(const epoll_set&) = delete;
    void add(int fd, uint32_t events) {
        epoll_event e{};
        e.events = events;
        e.data.fd = fd;
        REQUIRE(::epoll_ctl(fd_, EPOLL_CTL_ADD, fd, &e) == 0);
    }
    uint32_t wait(int fd, int timeout_ms = 0) {
        for (const epoll_event& e : wait_all(timeout_ms))
            if (e.data.fd == fd) return e.events;
        return 0;
    }
    std::vector<epoll_event> wait_all(int timeout_ms = 0) {
        std::vector<epoll_event> events(1024);
        const int n = ::epoll_wait(fd_, events.data(), int(events.size()), timeout_ms);
        REQUIRE(n >= 0);
        events.resize(size_t(n));
        return events;
    }
    int fd() const { return fd_; }

private:
    int fd_;
};

// A context in either progress mode, and how an application waits on a socket's descriptor
// there: with manual progress it polls the context's descriptor too and calls sansock_progress
// whenever that is readable (nothing else moves the socket's descriptor).
struct side {
    sansock_context* ctx = nullptr;
    bool manual = false;

    // Waits until what `fd` shows, masked by POLLIN | POLLOUT, is `want`; false after `limit`.
    bool until(int fd, short want, milliseconds limit = 10s) const {
        const auto deadline = steady_clock::now() + limit;
        while (steady_clock::now() < deadline) {
            if ((shows(fd) & in_out) == want) return true;
            if (!manual) {
                pollfd p{fd, in_out, 0};
                ::poll(&p, 1, 5);
                continue;
            }
            pollfd p[2] = {{sansock_context_fd(ctx), POLLIN, 0}, {fd, in_out, 0}};
            REQUIRE(p[0].fd >= 0);
            if (::poll(p, 2, 10) > 0 && (p[0].revents & POLLIN) != 0) REQUIRE(sansock_progress(ctx, 0) >= 0);
        }
        return false;
    }
};

// What sansock_poll says of `s` (without waiting), as the descriptor should show it: readable
// for POLLIN, POLLERR, POLLHUP; writable for POLLOUT, POLLERR.
short as_poll_says(sansock_socket_t s) {
    sansock_pollfd p{s, SANSOCK_POLLIN | SANSOCK_POLLOUT, 0};
    REQUIRE(sansock_poll(&p, 1, 0) >= 0);
    short want = 0;
    if ((p.revents & (SANSOCK_POLLIN | SANSOCK_POLLERR | SANSOCK_POLLHUP)) != 0) want |= POLLIN;
    if ((p.revents & (SANSOCK_POLLOUT | SANSOCK_POLLERR)) != 0) want |= POLLOUT;
    return want;
}

const char* mode_name(bool manual) { return manual ? "manual progress" : "thread progress"; }

// The client side in the mode under test, the server side always with its own thread; both on
// the real clock (the waits here are real ones).
struct pair_world {
    world w;
    side client_side, server_side;
    explicit pair_world(bool manual) {
        host_options o;
        o.use_manual_clock = false;
        o.progress_mode = manual ? SANSOCK_PROGRESS_MANUAL : SANSOCK_PROGRESS_THREAD;
        client_side = {w.host(o), manual};
        o.progress_mode = SANSOCK_PROGRESS_THREAD;
        server_side = {w.host(o), false};
    }
};

int fd_of(sansock_socket_t s) {
    const int fd = sansock_socket_fd(s);
    REQUIRE(fd >= 0);
    return fd;
}

TEST_CASE("One descriptor per socket: the same number every time, O_CLOEXEC, -ENOTSOCK after close") {
    watchdog guard("basics");
    pair_world p(false);
    sansock_socket_t s = 0, t = 0;
    REQUIRE(sansock_socket(p.client_side.ctx, &s) == 0);
    REQUIRE(sansock_socket(p.client_side.ctx, &t) == 0);
    const int fd = fd_of(s);
    CHECK(sansock_socket_fd(s) == fd);
    CHECK(fd_of(t) != fd);
    CHECK((::fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0);
    CHECK(shows(fd) == 0); // a fresh socket: neither readable nor writable, as sansock_poll
    CHECK(selects(fd) == 0);
    CHECK(sansock_close(s) == 0);
    CHECK(sansock_socket_fd(s) == -ENOTSOCK);
    CHECK(sansock_socket_fd(0) == -ENOTSOCK);
    CHECK(::fcntl(fd, F_GETFD) == -1); // closed with the handle
}

TEST_CASE("Data arrival: POLLIN for poll, select, epoll level- and edge-triggered; gone once read") {
    for (bool manual : {false, true}) {
        CAPTURE(mode_name(manual));
        watchdog guard("data arrival");
        pair_world p(manual);
        const connection c = connect_pair(p.client_side.ctx, p.server_side.ctx);
        const int fd = fd_of(c.client);
        CHECK(p.client_side.until(fd, POLLOUT));
        epoll_set level, edge;
        level.add(fd, EPOLLIN);
        edge.add(fd, EPOLLIN | EPOLLET);
        CHECK(level.wait(fd) == 0);
        CHECK(edge.wait(fd) == 0);
        CHECK(selects(fd) == 2);
        for (int round = 0; round < 3; ++round) {
            CAPTURE(round);
            REQUIRE(send_all(c.server, "xy", 2) == 0);
            REQUIRE(p.client_side.until(fd, POLLIN | POLLOUT));
            CHECK(selects(fd) == 3);
            CHECK(as_poll_says(c.client) == shows(fd));
            CHECK(level.wait(fd) == EPOLLIN);
            CHECK(level.wait(fd) == EPOLLIN); // level: again and again
            CHECK(edge.wait(fd) == EPOLLIN);
            CHECK(edge.wait(fd) == 0);        // edge: once per change
            CHECK(recv_exact(c.client, 1) == std::vector<uint8_t>{'x'});
            CHECK(shows(fd) == (POLLIN | POLLOUT)); // one byte still unread
            CHECK(recv_exact(c.client, 1) == std::vector<uint8_t>{'y'});
            CHECK(shows(fd) == POLLOUT);
            CHECK(as_poll_says(c.client) == shows(fd));
            CHECK(selects(fd) == 2);
            CHECK(level.wait(fd) == 0);
            CHECK(edge.wait(fd) == 0);
        }
    }
}

TEST_CASE("A thread blocked in poll, select or epoll_wait on the descriptor wakes when data comes") {
    watchdog guard("blocked waiters");
    pair_world p(false);
    const connection c = connect_pair(p.client_side.ctx, p.server_side.ctx);
    const int fd = fd_of(c.client);
    epoll_set edge;
    edge.add(fd, EPOLLIN | EPOLLET);
    background<int> polling("poll", [fd] {
        pollfd q{fd, POLLIN, 0};
        return ::poll(&q, 1, 10000) == 1 ? q.revents : -1;
    });
    background<int> selecting("select", [fd] {
        fd_set r;
        FD_ZERO(&r);
        FD_SET(fd, &r);
        timeval limit{10, 0};
        return ::select(fd + 1, &r, nullptr, nullptr, &limit) == 1 && FD_ISSET(fd, &r) ? 1 : -1;
    });
    background<uint32_t> epolling("epoll_wait", [&edge, fd] { return edge.wait(fd, 10000); });
    CHECK_FALSE(polling.wait(200ms));
    REQUIRE(send_all(c.server, "z", 1) == 0);
    CHECK(polling.result() == POLLIN);
    CHECK(selecting.result() == 1);
    CHECK(epolling.result() == EPOLLIN);
}

TEST_CASE("End of stream makes the descriptor readable, and it stays so") {
    for (auto [manual, by_close] : {std::pair{false, false}, {false, true}, {true, false}, {true, true}}) {
        CAPTURE(mode_name(manual));
        CAPTURE(by_close);
        watchdog guard("end of stream");
        pair_world p(manual);
        const connection c = connect_pair(p.client_side.ctx, p.server_side.ctx);
        const int fd = fd_of(c.client);
        epoll_set edge;
        edge.add(fd, EPOLLIN | EPOLLET);
        CHECK(p.client_side.until(fd, POLLOUT));
        if (by_close) REQUIRE(sansock_close(c.server) == 0);
        else REQUIRE(sansock_shutdown(c.server, SHUT_WR) == 0);
        REQUIRE(p.client_side.until(fd, POLLIN | POLLOUT));
        CHECK(edge.wait(fd) == EPOLLIN);
        REQUIRE(set_nonblocking(c.client, true) == 0);
        char byte = 0;
        CHECK(sansock_recv(c.client, &byte, 1, 0) == 0);
        CHECK((shows(fd) & POLLIN) != 0);
        // Our own SHUT_WR: nothing more to send, so not writable (as sansock_poll).
        REQUIRE(sansock_shutdown(c.client, SHUT_WR) == 0);
        CHECK(shows(fd) == POLLIN);
    }
}

TEST_CASE("A reset makes the descriptor readable and writable; SO_ERROR says why") {
    for (auto [manual, lost] : {std::pair{false, false}, {false, true}, {true, false}, {true, true}}) {
        CAPTURE(mode_name(manual));
        CAPTURE(lost);
        watchdog guard("reset");
        pair_world p(manual);
        const connection c = connect_pair(p.client_side.ctx, p.server_side.ctx);
        const int fd = fd_of(c.client);
        epoll_set edge;
        edge.add(fd, EPOLLIN | EPOLLOUT | EPOLLET);
        CHECK(p.client_side.until(fd, POLLOUT));
        CHECK(edge.wait(fd) == EPOLLOUT);
        if (lost) {
            REQUIRE(loopback::drop_connection(provider_instance_of(p.server_side.ctx), provider_socket_of(c.server)) == 0);
        } else { // SO_LINGER {1, 0}
            REQUIRE(set_linger(c.server, 1, 0) == 0);
            REQUIRE(sansock_close(c.server) == 0);
        }
        REQUIRE(p.client_side.until(fd, POLLIN | POLLOUT));
        CHECK(edge.wait(fd) == (EPOLLIN | EPOLLOUT)); // the edge of POLLIN
        CHECK((shows(fd) & (POLLERR | POLLHUP)) == 0); // the descriptor cannot say these
        CHECK(as_poll_says(c.client) == shows(fd));
        int error = 0;
        socklen_t length = sizeof error;
        CHECK(sansock_getsockopt(c.client, SOL_SOCKET, SO_ERROR, &error, &length) == 0);
        CHECK(error == ECONNRESET);
        CHECK(shows(fd) == (POLLIN | POLLOUT)); // still failed: every call gives the failure
        CHECK(sansock_recv(c.client, &error, 1, MSG_DONTWAIT) == -ECONNRESET);
    }
}

TEST_CASE("A listener's descriptor is readable while a connection waits to be accepted") {
    for (bool manual : {false, true}) {
        CAPTURE(mode_name(manual));
        watchdog guard("listener");
        pair_world p(manual);
        uint16_t port = 0;
        const sansock_socket_t l = listen_on(p.client_side.ctx, &port); // the side under test listens
        const int fd = fd_of(l);
        epoll_set level, edge;
        level.add(fd, EPOLLIN);
        edge.add(fd, EPOLLIN | EPOLLET);
        CHECK(shows(fd) == 0);
        for (int round = 0; round < 2; ++round) {
            CAPTURE(round);
            sansock_socket_t client = 0;
            REQUIRE(sansock_socket(p.server_side.ctx, &client) == 0);
            REQUIRE(set_nonblocking(client, true) == 0);
            const sockaddr_in to = ipv4(port);
            const int rc = sansock_connect(client, as_sockaddr(to), sizeof to);
            CHECK((rc == -EINPROGRESS || rc == 0));
            REQUIRE(p.client_side.until(fd, POLLIN));
            CHECK(level.wait(fd) == EPOLLIN);
            CHECK(edge.wait(fd) == EPOLLIN);
            CHECK(edge.wait(fd) == 0);
            CHECK(selects(fd) == 1);
            CHECK(as_poll_says(l) == POLLIN);
            REQUIRE(set_nonblocking(l, true) == 0);
            sansock_socket_t accepted = 0;
            CHECK(sansock_accept(l, &accepted, nullptr, nullptr) == 0);
            CHECK(shows(fd) == 0);
            CHECK(level.wait(fd) == 0);
            CHECK(sansock_close(accepted) == 0);
            CHECK(sansock_close(client) == 0);
        }
    }
}

TEST_CASE("A full send buffer takes POLLOUT away; the peer reading gives it back (an edge)") {
    for (bool manual : {false, true}) {
        CAPTURE(mode_name(manual));
        watchdog guard("send buffer full", 120s);
        pair_world p(manual);
        const connection c = connect_pair(p.client_side.ctx, p.server_side.ctx);
        const int fd = fd_of(c.client);
        CHECK(p.client_side.until(fd, POLLOUT));
        epoll_set level, edge;
        level.add(fd, EPOLLOUT);
        edge.add(fd, EPOLLOUT | EPOLLET);
        CHECK(edge.wait(fd) == EPOLLOUT);
        CHECK(edge.wait(fd) == 0);
        const uint64_t queued = fill_until_full(c.client, true);
        CHECK(shows(fd) == 0);
        CHECK(as_poll_says(c.client) == 0);
        CHECK(selects(fd) == 0);
        CHECK(level.wait(fd) == 0);
        CHECK(edge.wait(fd) == 0);
        // A send the descriptor calls blocked is one: -EWOULDBLOCK.
        CHECK(sansock_send(c.client, "w", 1, 0) == -EWOULDBLOCK);
        background<uint64_t> draining("drain", [&] {
            uint64_t bytes = 0;
            std::vector<uint8_t> buffer(65536);
            while (bytes < queued) {
                const ssize_t r = sansock_recv(c.server, buffer.data(), buffer.size(), 0);
                if (r <= 0) break;
                bytes += uint64_t(r);
            }
            return bytes;
        });
        REQUIRE(p.client_side.until(fd, POLLOUT));
        // The rest goes out as the client's progress hands it on (manual: ours).
        while (!draining.wait(10ms))
            if (manual) REQUIRE(sansock_progress(p.client_side.ctx, 0) >= 0);
        CHECK(draining.result() == queued);
        CHECK(p.client_side.until(fd, POLLOUT));
        CHECK(level.wait(fd) == EPOLLOUT);
        CHECK(edge.wait(fd) == EPOLLOUT);
        CHECK(edge.wait(fd) == 0);
        CHECK(sansock_send(c.client, "w", 1, 0) == 1);
    }
}

TEST_CASE("A nonblocking connect: writable once connected; readable and writable once refused") {
    for (auto [manual, refused] : {std::pair{false, false}, {false, true}, {true, false}, {true, true}}) {
        CAPTURE(mode_name(manual));
        CAPTURE(refused);
        watchdog guard("nonblocking connect");
        pair_world p(manual);
        uint16_t port = 0;
        const sansock_socket_t l = listen_on(p.server_side.ctx, &port);
        if (!refused) {
            sansock_socket_t s = 0;
            REQUIRE(sansock_socket(p.client_side.ctx, &s) == 0);
            REQUIRE(set_nonblocking(s, true) == 0);
            const int fd = fd_of(s);
            epoll_set edge;
            edge.add(fd, EPOLLOUT | EPOLLET);
            const sockaddr_in to = ipv4(port);
            CHECK(sansock_connect(s, as_sockaddr(to), sizeof to) == -EINPROGRESS);
            REQUIRE(p.client_side.until(fd, POLLOUT));
            CHECK(edge.wait(fd) == EPOLLOUT);
            int error = -1;
            socklen_t length = sizeof error;
            CHECK(sansock_getsockopt(s, SOL_SOCKET, SO_ERROR, &error, &length) == 0);
            CHECK(error == 0);
            const sansock_socket_t server = accept_one(l);
            CHECK(sansock_send(s, "q", 1, 0) == 1);
            background<std::vector<uint8_t>> receiving("recv", [server] { return recv_exact(server, 1); });
            while (!receiving.wait(10ms)) // manual: the byte goes out in the client's progress
                if (manual) REQUIRE(sansock_progress(p.client_side.ctx, 0) >= 0);
            CHECK(receiving.result() == std::vector<uint8_t>{'q'});
        } else {
            REQUIRE(sansock_close(l) == 0); // nobody listens there any more
            sansock_socket_t s = 0;
            REQUIRE(sansock_socket(p.client_side.ctx, &s) == 0);
            REQUIRE(set_nonblocking(s, true) == 0);
            const int fd = fd_of(s);
            const sockaddr_in to = ipv4(port);
            const int rc = sansock_connect(s, as_sockaddr(to), sizeof to);
            CHECK((rc == -EINPROGRESS || rc == -ECONNREFUSED));
            REQUIRE(p.client_side.until(fd, POLLIN | POLLOUT));
            int error = 0;
            socklen_t length = sizeof error;
            CHECK(sansock_getsockopt(s, SOL_SOCKET, SO_ERROR, &error, &length) == 0);
            if (rc == -EINPROGRESS) CHECK(error == ECONNREFUSED);
        }
    }
}

TEST_CASE("With manual progress the descriptor changes in the context's calls; the context fd says when") {
    watchdog guard("manual progress");
    pair_world p(true);
    const connection c = connect_pair(p.client_side.ctx, p.server_side.ctx);
    const int fd = fd_of(c.client);
    const int context_fd = sansock_context_fd(p.client_side.ctx);
    REQUIRE(context_fd >= 0);
    while (sansock_progress(p.client_side.ctx, 0) > 0) {
    }
    REQUIRE(shows(fd) == POLLOUT);
    REQUIRE(send_all(c.server, "m", 1) == 0);
    settle(100ms);
    CHECK(shows(fd) == POLLOUT); // nobody made progress: the data has not been delivered
    pollfd q{context_fd, POLLIN, 0};
    CHECK(::poll(&q, 1, 5000) == 1); // but the context says there is work
    CHECK(eventually([&] {
        sansock_progress(p.client_side.ctx, 0);
        return shows(fd) == (POLLIN | POLLOUT);
    }));
    CHECK(recv_exact(c.client, 1) == std::vector<uint8_t>{'m'});
    CHECK(shows(fd) == POLLOUT);
}

TEST_CASE("Closing a socket closes its descriptor: out of epoll sets, pollers wake with POLLHUP") {
    for (bool manual : {false, true}) {
        CAPTURE(mode_name(manual));
        watchdog guard("close");
        pair_world p(manual);
        const connection c = connect_pair(p.client_side.ctx, p.server_side.ctx);
        const int fd = fd_of(c.client);
        const int other = fd_of(c.listener);
        epoll_set set;
        set.add(fd, EPOLLIN | EPOLLOUT);
        set.add(other, EPOLLIN);
        CHECK(p.client_side.until(fd, POLLOUT));
        background<int> polling("poll during close", [fd] {
            pollfd q{fd, POLLIN, 0};
            return ::poll(&q, 1, 10000) == 1 ? q.revents : -1;
        });
        CHECK_FALSE(polling.wait(100ms));
        REQUIRE(sansock_close(c.client) == 0);
        // Woken by the hang-up of our end; by the time it looks again the number may be closed.
        const int woke = polling.result();
        CAPTURE(woke);
        CHECK(woke > 0);
        CHECK((woke & (POLLHUP | POLLNVAL)) != 0);
        CHECK(::fcntl(fd, F_GETFD) == -1);
        CHECK(set.wait_all().empty()); // gone from the set, nothing reported for it
        epoll_event e{};
        CHECK(::epoll_ctl(set.fd(), EPOLL_CTL_DEL, fd, &e) == -1);
        // The number is free again; whatever takes it is the application's.
        int pipe_fds[2];
        REQUIRE(::pipe2(pipe_fds, O_CLOEXEC) == 0);
        CHECK(set.wait_all().empty());
        ::close(pipe_fds[0]);
        ::close(pipe_fds[1]);
    }
}

TEST_CASE("An application that closes the number itself: sansock never touches what takes it next") {
    watchdog guard("closed by the application");
    pair_world p(false);
    const connection c = connect_pair(p.client_side.ctx, p.server_side.ctx);
    const int fd = fd_of(c.client);
    REQUIRE(::close(fd) == 0); // forbidden, but must not harm the application's next descriptor
    const int reused = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    REQUIRE(reused == fd);
    REQUIRE(send_all(c.server, "a", 1) == 0); // readiness changes: sansock works on its own end
    CHECK(recv_exact(c.client, 1) == std::vector<uint8_t>{'a'});
    CHECK(sansock_close(c.client) == 0);
    CHECK(::fcntl(reused, F_GETFD) != -1); // not closed by sansock
    ::close(reused);
}

TEST_CASE("No descriptor left: -EMFILE, and the socket works on") {
    watchdog guard("EMFILE");
    pair_world p(false);
    const connection c = connect_pair(p.client_side.ctx, p.server_side.ctx);
    rlimit old{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &old) == 0);
    const int lowest = ::open("/dev/null", O_RDONLY | O_CLOEXEC); // the next number the kernel gives
    REQUIRE(lowest >= 0);
    ::close(lowest);
    rlimit tight = old;
    tight.rlim_cur = rlim_t(lowest);
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &tight) == 0);
    const int rc = sansock_socket_fd(c.client);
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &old) == 0);
    CHECK(rc == -EMFILE);
    REQUIRE(send_all(c.server, "b", 1) == 0);
    CHECK(recv_exact(c.client, 1) == std::vector<uint8_t>{'b'});
    const int fd = fd_of(c.client); // a later call can make it
    CHECK(shows(fd) == POLLOUT);
}

TEST_CASE("Many sockets in one epoll set: exactly the ones with data are reported") {
    for (bool manual : {false, true}) {
        CAPTURE(mode_name(manual));
        watchdog guard("many sockets", 120s);
        pair_world p(manual);
        constexpr int count = 64;
        uint16_t port = 0;
        const sansock_socket_t l = listen_on(p.server_side.ctx, &port, count);
        std::vector<sansock_socket_t> clients(count), servers(count);
        std::vector<int> fds(count);
        epoll_set level, edge;
        for (int i = 0; i < count; ++i) {
            REQUIRE(sansock_socket(p.client_side.ctx, &clients[size_t(i)]) == 0);
            REQUIRE(connect_to(clients[size_t(i)], port) == 0);
            servers[size_t(i)] = accept_one(l);
            fds[size_t(i)] = fd_of(clients[size_t(i)]);
            level.add(fds[size_t(i)], EPOLLIN);
            edge.add(fds[size_t(i)], EPOLLIN | EPOLLET);
        }
        for (int i = 0; i < count; i += 3) REQUIRE(send_all(servers[size_t(i)], "n", 1) == 0);
        for (int i = 0; i < count; i += 3) REQUIRE(p.client_side.until(fds[size_t(i)], POLLIN | POLLOUT));
        std::vector<int> reported_level, reported_edge;
        for (const epoll_event& e : level.wait_all()) reported_level.push_back(e.data.fd);
        for (const epoll_event& e : edge.wait_all()) reported_edge.push_back(e.data.fd);
        std::vector<int> expected;
        for (int i = 0; i < count; i += 3) expected.push_back(fds[size_t(i)]);
        std::sort(reported_level.begin(), reported_level.end());
        std::sort(reported_edge.begin(), reported_edge.end());
        std::sort(expected.begin(), expected.end());
        CHECK(reported_level == expected);
        CHECK(reported_edge == expected);
        CHECK(edge.wait_all().empty());
        for (int i = 0; i < count; ++i) CHECK(sansock_close(clients[size_t(i)]) == 0);
        CHECK(level.wait_all().empty());
    }
}

} // namespace
} // namespace sansock::switchtest

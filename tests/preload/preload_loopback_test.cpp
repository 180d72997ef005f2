// SPDX-License-Identifier: MIT
// libsansock-preload.so on the loopback provider, in one process: a program written against
// plain POSIX sockets (this one) gets sansock connections through its ordinary calls, with real
// descriptors that poll, select, epoll, dup and fcntl keep working on; a kernel client and a
// peer that is not on the list still get the kernel; linger, SIGPIPE and fork behave as
// docs/transparent-mode.md says. Runs with LD_PRELOAD set by meson (tests/preload/meson.build).
#include <arpa/inet.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "preload/sansock_preload.h"

namespace {

int fd_kind(int fd) {
    static auto query = reinterpret_cast<sansock_preload_fd_kind_fn>(dlsym(RTLD_DEFAULT, "sansock_preload_fd_kind"));
    REQUIRE_MESSAGE(bool(query), "libsansock-preload.so is not loaded (LD_PRELOAD)");
    return query(fd);
}

struct sansock_context_stats preload_stats() {
    static auto query = reinterpret_cast<sansock_preload_stats_fn>(dlsym(RTLD_DEFAULT, "sansock_preload_stats"));
    REQUIRE(bool(query));
    struct sansock_context_stats s{};
    s.size = sizeof s;
    const int rc = query(&s);
    REQUIRE((rc == 0 || rc == -ENODEV)); // -ENODEV: no sansock context yet, all counters 0
    return s;
}

sockaddr_in local(uint16_t port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

uint16_t port_of(int fd) {
    sockaddr_in a{};
    socklen_t size = sizeof a;
    REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&a), &size) == 0);
    return ntohs(a.sin_port);
}

int listener() {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    const sockaddr_in a = local(0);
    REQUIRE(bind(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(listen(fd, 16) == 0);
    return fd;
}

int connect_to(uint16_t port) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    const sockaddr_in a = local(port);
    REQUIRE(connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0);
    return fd;
}

// A client and its accepted peer.
struct pair {
    int listener = -1, client = -1, server = -1;
    pair() {
        listener = ::listener();
        client = connect_to(port_of(listener));
        server = accept(listener, nullptr, nullptr);
        REQUIRE(server >= 0);
    }
    ~pair() {
        for (int fd : {client, server, listener})
            if (fd >= 0) close(fd);
    }
};

bool readable_within(int fd, int ms) {
    pollfd p{fd, POLLIN, 0};
    return poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

std::string read_n(int fd, size_t n) {
    std::string out(n, '\0');
    size_t got = 0;
    while (got < n) {
        const ssize_t r = read(fd, out.data() + got, n - got);
        REQUIRE(r > 0);
        got += size_t(r);
    }
    return out;
}

std::atomic<int> sigpipes{0};

} // namespace

TEST_CASE("connect and accept go over sansock, data goes both ways through every call") {
    const auto before = preload_stats();
    pair p;
    CHECK(fd_kind(p.listener) == 2);
    CHECK(fd_kind(p.client) == 1);
    CHECK(fd_kind(p.server) == 1);
    const auto after = preload_stats();
    CHECK(after.connections_opened == before.connections_opened + 1);
    CHECK(after.connections_accepted == before.connections_accepted + 1);

    CHECK(write(p.client, "hello", 5) == 5);
    CHECK(read_n(p.server, 5) == "hello");
    CHECK(send(p.server, "ok", 2, 0) == 2);
    char two[2];
    CHECK(recv(p.client, two, 2, MSG_WAITALL) == 2);
    CHECK(std::memcmp(two, "ok", 2) == 0);

    char a[] = "abc", b[] = "defg";
    iovec out[2] = {{a, 3}, {b, 4}};
    CHECK(writev(p.client, out, 2) == 7);
    char x[3], y[4];
    iovec in[2] = {{x, 3}, {y, 4}};
    CHECK(readv(p.server, in, 2) >= 3);
    msghdr m{};
    m.msg_iov = out;
    m.msg_iovlen = 2;
    CHECK(sendmsg(p.server, &m, 0) == 7);
    char back[7];
    CHECK(recv(p.client, back, 7, MSG_WAITALL) == 7);
    CHECK(std::memcmp(back, "abcdefg", 7) == 0);

    sockaddr_in peer{}, self{};
    socklen_t ps = sizeof peer, ss = sizeof self;
    CHECK(getpeername(p.client, reinterpret_cast<sockaddr*>(&peer), &ps) == 0);
    CHECK(getsockname(p.server, reinterpret_cast<sockaddr*>(&self), &ss) == 0);
    CHECK(peer.sin_port == self.sin_port);
    int type = 0;
    socklen_t ts = sizeof type;
    CHECK(getsockopt(p.client, SOL_SOCKET, SO_TYPE, &type, &ts) == 0);
    CHECK(type == SOCK_STREAM);
    tcp_info info{};
    socklen_t is = sizeof info;
    CHECK(getsockopt(p.client, IPPROTO_TCP, TCP_INFO, &info, &is) == 0);
    CHECK(info.tcpi_state == TCP_ESTABLISHED);
    const int on = 1;
    CHECK(setsockopt(p.client, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on) == 0);
    int nodelay = 0;
    socklen_t ns = sizeof nodelay;
    CHECK(getsockopt(p.client, IPPROTO_TCP, TCP_NODELAY, &nodelay, &ns) == 0);
    CHECK(nodelay == 1);
    CHECK(setsockopt(p.client, IPPROTO_TCP, TCP_USER_TIMEOUT, &on, sizeof on) == -1);
    CHECK(errno == ENOPROTOOPT);
}

TEST_CASE("poll, select and epoll see a waiting connection and data on the real descriptors") {
    const int l = listener();
    CHECK_FALSE(readable_within(l, 0));
    const int c = connect_to(port_of(l));
    CHECK(readable_within(l, 2000)); // the listener's number polls readable for a sansock client
    const int s = accept(l, nullptr, nullptr);
    REQUIRE(s >= 0);
    CHECK_FALSE(readable_within(s, 0));

    const int ep = epoll_create1(0);
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLET;
    ev.data.fd = s;
    REQUIRE(epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev) == 0);
    CHECK(write(c, "x", 1) == 1);
    epoll_event got{};
    CHECK(epoll_wait(ep, &got, 1, 2000) == 1);
    const int ready_fd = got.data.fd;
    CHECK(ready_fd == s);
    fd_set readers;
    FD_ZERO(&readers);
    FD_SET(s, &readers);
    timeval t{2, 0};
    CHECK(select(s + 1, &readers, nullptr, nullptr, &t) == 1);
    char one;
    CHECK(read(s, &one, 1) == 1);
    CHECK_FALSE(readable_within(s, 0));
    pollfd w{c, POLLOUT, 0};
    CHECK(poll(&w, 1, 2000) == 1);
    ::close(ep);
    close(c);
    CHECK(readable_within(s, 2000)); // end of stream
    CHECK(read(s, &one, 1) == 0);
    close(s);
    close(l);
}

TEST_CASE("a kernel client reaches the same listener and gets a kernel connection") {
    const int l = listener();
    // Raw system calls: a client the preload does not see, as a program without it would be.
    const int k = int(syscall(SYS_socket, AF_INET, SOCK_STREAM, 0));
    REQUIRE(k >= 0);
    const sockaddr_in a = local(port_of(l));
    REQUIRE(syscall(SYS_connect, k, &a, sizeof a) == 0);
    CHECK(readable_within(l, 2000));
    const int s = accept(l, nullptr, nullptr);
    REQUIRE(s >= 0);
    CHECK(fd_kind(s) == 0);
    CHECK(syscall(SYS_write, k, "kern", 4) == 4);
    CHECK(read_n(s, 4) == "kern");
    syscall(SYS_close, k);
    close(s);
    close(l);
}

TEST_CASE("a connect to a peer that does not speak sansock falls back to the kernel") {
    // A kernel-only listener, made without the preload.
    const int k = int(syscall(SYS_socket, AF_INET, SOCK_STREAM, 0));
    sockaddr_in a = local(0);
    REQUIRE(syscall(SYS_bind, k, &a, sizeof a) == 0);
    REQUIRE(syscall(SYS_listen, k, 4) == 0);
    socklen_t size = sizeof a;
    REQUIRE(syscall(SYS_getsockname, k, &a, &size) == 0);
    const int c = connect_to(ntohs(a.sin_port));
    CHECK(fd_kind(c) == 0);
    const int s = int(syscall(SYS_accept4, k, nullptr, nullptr, 0));
    REQUIRE(s >= 0);
    CHECK(write(c, "tcp", 3) == 3);
    char got[3];
    CHECK(syscall(SYS_read, s, got, 3) == 3);
    syscall(SYS_close, s);
    syscall(SYS_close, k);
    close(c);
}

TEST_CASE("dup, dup2 and F_DUPFD share the connection, which closes with its last number") {
    pair p;
    const int copy = dup(p.client);
    const int other = fcntl(p.client, F_DUPFD_CLOEXEC, 100);
    REQUIRE(copy >= 0);
    REQUIRE(other >= 100);
    CHECK(fd_kind(copy) == 1);
    CHECK(fd_kind(other) == 1);
    const int spare = socket(AF_INET, SOCK_DGRAM, 0);
    REQUIRE(dup2(p.client, spare) == spare);
    CHECK(fd_kind(spare) == 1);
    CHECK(close(p.client) == 0);
    p.client = -1;
    CHECK(write(copy, "1", 1) == 1);
    CHECK(write(other, "2", 1) == 1);
    CHECK(write(spare, "3", 1) == 1);
    CHECK(read_n(p.server, 3) == "123");
    CHECK(close(copy) == 0);
    CHECK(close(other) == 0);
    CHECK_FALSE(readable_within(p.server, 100)); // one number is left
    CHECK(close(spare) == 0);
    CHECK(readable_within(p.server, 2000));
    char c;
    CHECK(read(p.server, &c, 1) == 0);
}

TEST_CASE("O_NONBLOCK, FIONBIO, MSG_DONTWAIT and FIONREAD") {
    pair p;
    char c;
    REQUIRE(fcntl(p.server, F_SETFL, fcntl(p.server, F_GETFL) | O_NONBLOCK) == 0);
    CHECK((fcntl(p.server, F_GETFL) & O_NONBLOCK) != 0);
    CHECK(read(p.server, &c, 1) == -1);
    CHECK(errno == EAGAIN);
    int off = 0;
    REQUIRE(ioctl(p.server, FIONBIO, &off) == 0);
    CHECK(recv(p.server, &c, 1, MSG_DONTWAIT) == -1);
    CHECK(errno == EAGAIN);
    CHECK(write(p.client, "12345", 5) == 5);
    int n = 0;
    for (int k = 0; k < 200 && n < 5; ++k) {
        REQUIRE(ioctl(p.server, FIONREAD, &n) == 0);
        if (n < 5) usleep(10000);
    }
    CHECK(n == 5);
    CHECK(read_n(p.server, 5) == "12345");
    const int on = 1;
    REQUIRE(ioctl(p.listener, FIONBIO, &on) == 0);
    CHECK(accept(p.listener, nullptr, nullptr) == -1);
    CHECK(errno == EAGAIN);
}

TEST_CASE("SO_LINGER {1, 0} resets; the default close delivers the data, then end of stream") {
    {
        pair p;
        const linger hard{1, 0};
        REQUIRE(setsockopt(p.client, SOL_SOCKET, SO_LINGER, &hard, sizeof hard) == 0);
        CHECK(write(p.client, "lost?", 5) == 5);
        CHECK(close(p.client) == 0);
        p.client = -1;
        char buffer[8];
        ssize_t r = 0;
        for (int k = 0; k < 10 && r >= 0; ++k) r = read(p.server, buffer, sizeof buffer); // maybe the data, then the reset
        CHECK(r == -1);
        CHECK(errno == ECONNRESET);
    }
    {
        pair p;
        std::vector<char> data(1 << 20, 'd');
        std::thread reader([&] { CHECK(read_n(p.server, data.size()) == std::string(data.begin(), data.end())); });
        size_t sent = 0;
        while (sent < data.size()) {
            const ssize_t w = write(p.client, data.data() + sent, data.size() - sent);
            REQUIRE(w > 0);
            sent += size_t(w);
        }
        CHECK(close(p.client) == 0);
        p.client = -1;
        reader.join();
        char c;
        CHECK(read(p.server, &c, 1) == 0);
    }
    {
        pair p;
        const linger wait{1, 5};
        REQUIRE(setsockopt(p.client, SOL_SOCKET, SO_LINGER, &wait, sizeof wait) == 0);
        REQUIRE(fcntl(p.client, F_SETFL, O_NONBLOCK) == 0); // Linux waits even so
        CHECK(write(p.client, "lingered", 8) == 8);
        CHECK(close(p.client) == 0);
        p.client = -1;
        CHECK(read_n(p.server, 8) == "lingered");
    }
}

TEST_CASE("a send after SHUT_WR raises SIGPIPE unless MSG_NOSIGNAL, as on Linux") {
    struct sigaction count{}, old{};
    count.sa_handler = [](int) { ++sigpipes; };
    sigaction(SIGPIPE, &count, &old);
    pair p;
    REQUIRE(shutdown(p.client, SHUT_WR) == 0);
    const int before = sigpipes.load();
    CHECK(send(p.client, "x", 1, MSG_NOSIGNAL) == -1);
    CHECK(errno == EPIPE);
    CHECK(sigpipes.load() == before);
    CHECK(write(p.client, "x", 1) == -1);
    CHECK(errno == EPIPE);
    CHECK(sigpipes.load() == before + 1);
    char c;
    CHECK(read(p.server, &c, 1) == 0); // the peer saw end of stream
    sigaction(SIGPIPE, &old, nullptr);
}

TEST_CASE("a forked child cannot use an inherited connection, and cannot harm the parent's") {
    pair p;
    const pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        char c;
        const bool refused = read(p.client, &c, 1) == -1 && errno == EOPNOTSUPP && write(p.client, "x", 1) == -1 &&
                             errno == EOPNOTSUPP && fd_kind(p.client) == 3;
        const bool closed = close(p.client) == 0 && close(p.server) == 0;
        _exit(refused && closed ? 0 : 1);
    }
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(write(p.client, "still", 5) == 5);
    CHECK(read_n(p.server, 5) == "still");
}

TEST_CASE("sendfile sends a file's bytes over a sansock connection") {
    pair p;
    char path[] = "/tmp/sansock-preload-XXXXXX";
    const int file = mkstemp(path);
    REQUIRE(file >= 0);
    unlink(path);
    std::string content(200000, '\0');
    for (size_t k = 0; k < content.size(); ++k) content[k] = char('a' + k % 23);
    REQUIRE(write(file, content.data(), content.size()) == ssize_t(content.size()));
    off_t offset = 0;
    std::thread reader([&] { CHECK(read_n(p.server, content.size()) == content); });
    size_t sent = 0;
    while (sent < content.size()) {
        const ssize_t n = sendfile(p.client, file, &offset, content.size() - sent);
        REQUIRE(n > 0);
        sent += size_t(n);
    }
    reader.join();
    CHECK(offset == off_t(content.size()));
    close(file);
}

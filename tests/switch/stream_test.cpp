// SPDX-License-Identifier: MIT
// A 64 MiB stream with FNV-1a checksums at both ends, then each graceful close mode: nothing
// is lost, nothing reordered, and the receiver sees end of stream.
#include "tests/switch/switch_test_support.hpp"

namespace sansock::switchtest {
namespace {

struct fnv1a {
    uint64_t h = 0xcbf29ce484222325ull;
    uint64_t total = 0;
    void update(const uint8_t* p, size_t n) {
        total += n;
        for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
    }
};

TEST_CASE("A blocking send keeps its own copy of what could not go yet: the caller reuses its buffer at once") {
    watchdog guard("send buffer reuse");
    world w;
    const connection c = connect_pair(w.host(), w.host());
    // The first send fills the peer's whole window (framed from the caller's buffer at once);
    // the second finds no credit, so all of it waits in the switch.
    constexpr size_t window = 256 * 1024;
    const std::vector<uint8_t> first = pattern_bytes(0, window);
    const std::vector<uint8_t> second_original = pattern_bytes(window, 64 * 1024);
    REQUIRE(sansock_send(c.client, first.data(), first.size(), 0) == static_cast<ssize_t>(first.size()));
    std::vector<uint8_t> second = second_original;
    REQUIRE(sansock_send(c.client, second.data(), second.size(), 0) == static_cast<ssize_t>(second.size()));
    std::fill(second.begin(), second.end(), uint8_t(0xEE)); // the caller's buffer is its own again
    CHECK(recv_exact(c.server, first.size()) == first);
    CHECK(recv_exact(c.server, second_original.size()) == second_original);
}

TEST_CASE("A 64 MiB stream arrives intact with equal checksums, then a graceful close ends it") {
    watchdog guard("64 MiB stream", 240s);
    constexpr uint64_t total = uint64_t(64) << 20;
    enum { dontlinger, linger_n, shut_wr_then_close } mode = dontlinger;
    SUBCASE("DONTLINGER") { mode = dontlinger; }
    SUBCASE("LINGER 30, blocking") { mode = linger_n; }
    SUBCASE("SHUT_WR, then DONTLINGER") { mode = shut_wr_then_close; }
    CAPTURE(int(mode));

    world w;
    sansock_context* a = w.host();
    sansock_context* b = w.host();
    const connection c = connect_pair(a, b);
    if (mode == linger_n) REQUIRE(set_linger(c.client, 1, 30) == 0);

    // The source: 1 MiB + 4099 random bytes taken cyclically, sent in varying chunk sizes.
    std::vector<uint8_t> source((size_t(1) << 20) + 4099);
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (auto& byte : source) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        byte = uint8_t(x);
    }
    struct send_outcome {
        ssize_t error = 0;
        int close_rc = 1;
        fnv1a hash;
    };
    background<send_outcome> sender("sender", [&] {
        send_outcome out;
        static constexpr size_t sizes[] = {65536, 1, 4093, 131079, 300000, 16384, 777};
        uint64_t sent = 0;
        unsigned k = 0;
        while (sent < total) {
            const size_t at = size_t(sent % source.size());
            const size_t n = size_t(std::min<uint64_t>({sizes[k++ % std::size(sizes)], source.size() - at, total - sent}));
            const ssize_t r = sansock_send(c.client, source.data() + at, n, 0);
            if (r <= 0) {
                out.error = r < 0 ? r : -EIO;
                return out;
            }
            out.hash.update(source.data() + at, size_t(r));
            sent += uint64_t(r);
        }
        if (mode == shut_wr_then_close) {
            const int rc = sansock_shutdown(c.client, SHUT_WR);
            if (rc != 0) out.error = rc;
        }
        out.close_rc = sansock_close(c.client);
        return out;
    }, 200s);

    fnv1a received;
    ssize_t last = 1;
    std::vector<uint8_t> buffer(200000);
    const ssize_t rc = bounded("receiver", [&]() -> ssize_t {
        for (;;) {
            last = sansock_recv(c.server, buffer.data(), buffer.size(), 0);
            if (last <= 0) return last;
            received.update(buffer.data(), size_t(last));
        }
    }, 200s);
    const send_outcome sent = sender.result();
    CHECK(sent.error == 0);
    CHECK(sent.close_rc == 0);
    CHECK(rc == 0);
    CHECK(received.total == total);
    CHECK(sent.hash.total == total);
    CHECK(received.h == sent.hash.h);
    CHECK(sansock_close(c.server) == 0);
}

} // namespace
} // namespace sansock::switchtest

namespace sansock::switchtest {
namespace {

int bytes_readable(sansock_socket_t s) {
    int n = -1;
    socklen_t size = sizeof n;
    REQUIRE(sansock_getsockopt(s, SOL_SOCKET, SANSOCK_SO_NREAD, &n, &size) == 0);
    return n;
}

TEST_CASE("SANSOCK_SO_NREAD gives the bytes a recv could take now; it cannot be set") {
    world w;
    connection c = connect_pair(w.host(), w.host());
    CHECK(bytes_readable(c.server) == 0);
    const std::vector<uint8_t> data = pattern_bytes(0, 3000);
    REQUIRE(send_all(c.client, data.data(), data.size()) == 0);
    eventually([&] { return bytes_readable(c.server) == 3000; });
    CHECK(recv_exact(c.server, 1000) == pattern_bytes(0, 1000));
    CHECK(bytes_readable(c.server) == 2000);
    const int one = 1;
    CHECK(sansock_setsockopt(c.server, SOL_SOCKET, SANSOCK_SO_NREAD, &one, sizeof one) == -ENOPROTOOPT);
    CHECK(bytes_readable(c.listener) == 0);
}

} // namespace
} // namespace sansock::switchtest

// SPDX-License-Identifier: MIT
// Conformance of memory registration and RDMA (provider.hpp, "memory registration and RDMA"):
// round trips, refused remote access, -EBUSY, hard close with RDMA in flight, counted bytes.
#include <random>

#include "tests/conformance/conformance_support.hpp"

namespace sansock::conformance {
namespace {

using provider::memory_handle;
using provider::remote_memory;


tracked& rdma_op(two_hosts& hosts, operation_kind kind, memory_handle local, uint64_t offset, size_t length,
                 const remote_memory& remote, uint64_t remote_offset) {
    tracked& t = hosts.new_op(kind);
    t.op.length = length;
    t.op.memory = local;
    t.op.memory_offset = offset;
    t.op.remote_address = remote.address + remote_offset;
    t.op.remote_key = remote.key;
    return t;
}

bool completed(tracked& t, int timeout_ms) {
    return wait_until([&] { return t.completions.load() == 1; }, timeout_ms);
}

constexpr uint32_t remote_rw = provider::memory_remote_read | provider::memory_remote_write;

TEST_CASE("RDMA write and read round trips keep the data intact at every size") {
    two_hosts hosts;
    const auto c = hosts.connect();
    constexpr size_t room = (size_t(1) << 20) + 64;
    uint8_t* source = hosts.new_buffer(room);
    uint8_t* back = hosts.new_buffer(room);
    uint8_t* target = hosts.new_buffer(room); // on b, written and read by a
    const memory_handle ms = register_on(hosts, hosts.a(), source, room, provider::memory_local);
    const memory_handle mb = register_on(hosts, hosts.a(), back, room, provider::memory_local);
    const memory_handle mt = register_on(hosts, hosts.b(), target, room, remote_rw);
    remote_memory remote{};
    REQUIRE(hosts.ops.describe_memory(hosts.b(), mt, c.server, &remote) == 0);
    CHECK(remote.address == reinterpret_cast<uintptr_t>(target));
    CHECK(remote.length == room);

    uint32_t seed = 1;
    for (size_t size : {size_t(1), size_t(4095), size_t(4096), size_t(65536), size_t(1) << 20}) {
        CAPTURE(size);
        const uint64_t offset = size % 7, remote_offset = size % 13; // unaligned on purpose
        fill_random(source + offset, size, seed++);
        const uint64_t sum = checksum(source + offset, size);
        tracked& w = rdma_op(hosts, provider::rdma_write, ms, offset, size, remote, remote_offset);
        REQUIRE(hosts.ops.rdma(hosts.a(), c.client, &w.op) == 0);
        REQUIRE(completed(w, hosts.timeout()));
        REQUIRE(w.result.load() == int64_t(size));
        CHECK(checksum(target + remote_offset, size) == sum);

        std::memset(back, 0, room);
        tracked& r = rdma_op(hosts, provider::rdma_read, mb, offset + 1, size, remote, remote_offset);
        REQUIRE(hosts.ops.rdma(hosts.a(), c.client, &r.op) == 0);
        REQUIRE(completed(r, hosts.timeout()));
        REQUIRE(r.result.load() == int64_t(size));
        CHECK(checksum(back + offset + 1, size) == sum);
    }
    settle(50);
    CHECK(hosts.side_a.count_for(c.client) == 0); // the connection is still healthy
    CHECK(hosts.side_b.count_for(c.server) == 0);
    for (auto [inst, m] : {std::pair{hosts.a(), ms}, {hosts.a(), mb}, {hosts.b(), mt}})
        CHECK(hosts.ops.deregister_memory(inst, m) == 0);
}

// The refused access fails its operation -EACCES, and the connection is reset at both ends
// (on verbs both QPs go to the error state).
void check_refused(two_hosts& hosts, const two_hosts::connection& c, tracked& t) {
    REQUIRE(hosts.ops.rdma(hosts.a(), c.client, &t.op) == 0);
    REQUIRE(completed(t, hosts.timeout()));
    CHECK(t.result.load() == -EACCES);
    REQUIRE(wait_until([&] { return hosts.side_a.count(c.client, connection_event::peer_reset) == 1; }, hosts.timeout()));
    REQUIRE(wait_until([&] { return hosts.side_b.count(c.server, connection_event::peer_reset) == 1; }, hosts.timeout()));
    uint8_t byte = 0;
    tracked& s = hosts.new_op(operation_kind::send, &byte, 1);
    CHECK(hosts.ops.send(hosts.a(), c.client, &s.op) == -ECONNRESET);
    tracked& again = hosts.new_op(t.op.kind);
    again.op = t.op;
    again.op.user = &again;
    CHECK(hosts.ops.rdma(hosts.a(), c.client, &again.op) == -ECONNRESET);
    settle(50);
    CHECK(t.completions.load() == 1);
    CHECK(hosts.side_a.count_for(c.client) == 1);
}

TEST_CASE("A remote access outside the region, with a bad key or without the access fails and resets the connection") {
    two_hosts hosts;
    const auto c = hosts.connect();
    constexpr size_t n = 8192;
    uint8_t* local = hosts.new_buffer(n);
    uint8_t* region = hosts.new_buffer(n + 4096);
    const memory_handle ml = register_on(hosts, hosts.a(), local, n, provider::memory_local);
    SUBCASE("a write past the end") {
        const memory_handle mr = register_on(hosts, hosts.b(), region, n, remote_rw);
        remote_memory remote{};
        REQUIRE(hosts.ops.describe_memory(hosts.b(), mr, c.server, &remote) == 0);
        std::memset(region + n, 0x5a, 4096);
        check_refused(hosts, c, rdma_op(hosts, provider::rdma_write, ml, 0, 2, remote, n - 1));
        for (size_t i = n; i < n + 4096; ++i) REQUIRE(region[i] == 0x5a); // nothing past the end
    }
    SUBCASE("a read before the start") {
        const memory_handle mr = register_on(hosts, hosts.b(), region + 4096, n, remote_rw);
        remote_memory remote{};
        REQUIRE(hosts.ops.describe_memory(hosts.b(), mr, c.server, &remote) == 0);
        remote.address -= 64;
        check_refused(hosts, c, rdma_op(hosts, provider::rdma_read, ml, 0, 128, remote, 0));
    }
    SUBCASE("a bad key") {
        const memory_handle mr = register_on(hosts, hosts.b(), region, n, remote_rw);
        remote_memory remote{};
        REQUIRE(hosts.ops.describe_memory(hosts.b(), mr, c.server, &remote) == 0);
        remote.key ^= 0x00a5a500u;
        check_refused(hosts, c, rdma_op(hosts, provider::rdma_read, ml, 0, 64, remote, 0));
    }
    SUBCASE("a write into a region the peer registered for remote reads only") {
        const memory_handle mr = register_on(hosts, hosts.b(), region, n, provider::memory_remote_read);
        remote_memory remote{};
        REQUIRE(hosts.ops.describe_memory(hosts.b(), mr, c.server, &remote) == 0);
        std::memset(region, 0x11, n);
        check_refused(hosts, c, rdma_op(hosts, provider::rdma_write, ml, 0, 64, remote, 0));
        for (size_t i = 0; i < n; ++i) REQUIRE(region[i] == 0x11);
    }
}

TEST_CASE("Remote access to deregistered memory fails and resets the connection") {
    two_hosts hosts;
    const auto c = hosts.connect();
    constexpr size_t n = 4096;
    uint8_t* local = hosts.new_buffer(n);
    uint8_t* region = hosts.new_buffer(n);
    std::memset(region, 0x22, n);
    const memory_handle ml = register_on(hosts, hosts.a(), local, n, provider::memory_local);
    const memory_handle mr = register_on(hosts, hosts.b(), region, n, remote_rw);
    remote_memory remote{};
    REQUIRE(hosts.ops.describe_memory(hosts.b(), mr, c.server, &remote) == 0);
    // It works before the deregistration.
    tracked& ok = rdma_op(hosts, provider::rdma_read, ml, 0, n, remote, 0);
    REQUIRE(hosts.ops.rdma(hosts.a(), c.client, &ok.op) == 0);
    REQUIRE(completed(ok, hosts.timeout()));
    REQUIRE(ok.result.load() == int64_t(n));
    REQUIRE(hosts.ops.deregister_memory(hosts.b(), mr) == 0);
    CHECK(hosts.ops.describe_memory(hosts.b(), mr, c.server, &remote) == -ENOENT);
    CHECK(hosts.ops.deregister_memory(hosts.b(), mr) == -ENOENT);
    check_refused(hosts, c, rdma_op(hosts, provider::rdma_write, ml, 0, n, remote, 0));
    for (size_t i = 0; i < n; ++i) REQUIRE(region[i] == 0x22);
}

TEST_CASE("Deregistering memory while an RDMA operation on it has not completed is -EBUSY") {
    two_hosts hosts;
    const auto c = hosts.connect();
    constexpr size_t n = size_t(1) << 20;
    uint8_t* local = hosts.new_buffer(n);
    uint8_t* region = hosts.new_buffer(n);
    const memory_handle ml = register_on(hosts, hosts.a(), local, n, provider::memory_local);
    const memory_handle mr = register_on(hosts, hosts.b(), region, n, remote_rw);
    remote_memory remote{};
    REQUIRE(hosts.ops.describe_memory(hosts.b(), mr, c.server, &remote) == 0);
    hosts.stop_progress(0); // nothing delivers a's completions: the read stays pending
    tracked& r = rdma_op(hosts, provider::rdma_read, ml, 0, n, remote, 0);
    REQUIRE(hosts.ops.rdma(hosts.a(), c.client, &r.op) == 0);
    CHECK(hosts.ops.deregister_memory(hosts.a(), ml) == -EBUSY);
    hosts.start_progress(0);
    REQUIRE(completed(r, hosts.timeout()));
    CHECK(r.result.load() == int64_t(n));
    CHECK(hosts.ops.deregister_memory(hosts.a(), ml) == 0);
    CHECK(hosts.ops.deregister_memory(hosts.a(), ml) == -ENOENT);
    tracked& stale = rdma_op(hosts, provider::rdma_read, ml, 0, n, remote, 0);
    CHECK(hosts.ops.rdma(hosts.a(), c.client, &stale.op) == -ENOENT);
    CHECK(hosts.ops.deregister_memory(hosts.b(), mr) == 0);
    settle(20);
    CHECK(stale.completions.load() == 0);
}

TEST_CASE("A hard close with many RDMA operations in flight on both sides completes each once") {
    two_hosts hosts;
    const auto c = hosts.connect();
    constexpr size_t chunk = 256 * 1024;
    constexpr int per_side = 24;
    struct side {
        provider::instance* inst = nullptr;
        socket_handle s = 0;
        uint8_t* local = nullptr;
        uint8_t* region = nullptr;
        memory_handle ml = 0, mr = 0;
        remote_memory peer{};
        std::vector<tracked*> ops;
        std::atomic<bool> closed{false};
    };
    side sides[2];
    sides[0].inst = hosts.a(), sides[0].s = c.client;
    sides[1].inst = hosts.b(), sides[1].s = c.server;
    for (side& x : sides) {
        x.local = hosts.new_buffer(chunk * per_side);
        x.region = hosts.new_buffer(chunk * per_side);
        x.ml = register_on(hosts, x.inst, x.local, chunk * per_side, provider::memory_local);
        x.mr = register_on(hosts, x.inst, x.region, chunk * per_side, remote_rw);
        std::memset(x.region, 0x33, chunk * per_side);
    }
    REQUIRE(hosts.ops.describe_memory(hosts.b(), sides[1].mr, c.server, &sides[0].peer) == 0);
    REQUIRE(hosts.ops.describe_memory(hosts.a(), sides[0].mr, c.client, &sides[1].peer) == 0);
    // With no progress nothing is delivered or polled: on verbs every request is still on its
    // QP (done or not) when close comes, so close has to flush and cancel them.
    hosts.stop_progress(0);
    hosts.stop_progress(1);
    for (side& x : sides)
        for (int i = 0; i < per_side; ++i) {
            const operation_kind kind = i % 2 == 0 ? provider::rdma_read : provider::rdma_write;
            tracked& t = rdma_op(hosts, kind, x.ml, chunk * i, chunk, x.peer, chunk * i);
            t.socket_closed = &x.closed;
            REQUIRE(hosts.ops.rdma(x.inst, x.s, &t.op) == 0);
            x.ops.push_back(&t);
        }
    std::thread other([&] {
        CHECK(hosts.ops.close(hosts.b(), c.server) == 0);
        sides[1].closed.store(true);
    });
    CHECK(hosts.ops.close(hosts.a(), c.client) == 0);
    sides[0].closed.store(true);
    other.join();
    hosts.start_progress(0);
    hosts.start_progress(1);
    int cancelled = 0, succeeded = 0, reset = 0;
    for (side& x : sides)
        for (tracked* t : x.ops) {
            REQUIRE(t->completions.load() == 1); // all of them before close returned
            CHECK(t->late.load() == 0);
            const int64_t r = t->result.load();
            cancelled += r == -ECANCELED;
            succeeded += r == int64_t(chunk);
            reset += r == -ECONNRESET; // the other end's close came first
            CHECK((r == -ECANCELED || r == int64_t(chunk) || r == -ECONNRESET));
        }
    MESSAGE(std::string(hosts.fx.name) << ": " << succeeded << " succeeded, " << cancelled << " cancelled, " << reset << " reset");
    // Nothing lands in a local buffer once its operation completed.
    std::vector<uint8_t> before[2] = {{sides[0].local, sides[0].local + chunk * per_side},
                                      {sides[1].local, sides[1].local + chunk * per_side}};
    settle(200);
    for (int i = 0; i < 2; ++i) CHECK(std::memcmp(before[i].data(), sides[i].local, chunk * per_side) == 0);
    for (side& x : sides) {
        for (tracked* t : x.ops) CHECK(t->completions.load() == 1);
        CHECK(hosts.ops.deregister_memory(x.inst, x.ml) == 0);
        CHECK(hosts.ops.deregister_memory(x.inst, x.mr) == 0);
    }
    CHECK(hosts.side_a.late_upcalls() == 0);
}

TEST_CASE("query_memory counts registered regions, and the bytes return to the start when they are released") {
    two_hosts hosts;
    const auto c = hosts.connect();
    provider::memory_stats start{};
    REQUIRE(hosts.ops.query_memory(hosts.a(), &start) == 0);
    const size_t sizes[3] = {4096, 65536 + 17, 1 << 20};
    memory_handle m[3];
    for (int i = 0; i < 3; ++i)
        m[i] = register_on(hosts, hosts.a(), hosts.new_buffer(sizes[i]), sizes[i], i == 0 ? provider::memory_local : remote_rw);
    provider::memory_stats now{};
    REQUIRE(hosts.ops.query_memory(hosts.a(), &now) == 0);
    CHECK(now.regions == start.regions + 3);
    CHECK(now.region_bytes == start.region_bytes + sizes[0] + sizes[1] + sizes[2]);
    CHECK(now.registered_bytes == start.registered_bytes + sizes[0] + sizes[1] + sizes[2]);
    for (int i = 0; i < 3; ++i) REQUIRE(hosts.ops.deregister_memory(hosts.a(), m[i]) == 0);
    REQUIRE(hosts.ops.query_memory(hosts.a(), &now) == 0);
    CHECK(now.regions == start.regions);
    CHECK(now.region_bytes == start.region_bytes);
    CHECK(now.registered_bytes == start.registered_bytes);
    // One left registered: destroy releases it (ASan and the device's destroys check it).
    register_on(hosts, hosts.b(), hosts.new_buffer(4096), 4096, remote_rw);
    (void)c;
}

TEST_CASE("Bad RDMA input is refused with the documented errno and no completion") {
    two_hosts hosts;
    const auto c = hosts.connect();
    uint8_t* buffer = hosts.new_buffer(8192);
    memory_handle m = provider::invalid_memory;
    CHECK(hosts.ops.register_memory(hosts.a(), nullptr, 4096, 0, &m) == -EINVAL);
    CHECK(hosts.ops.register_memory(hosts.a(), buffer, 0, 0, &m) == -EINVAL);
    CHECK(hosts.ops.register_memory(hosts.a(), buffer, 4096, 1u << 7, &m) == -EINVAL);
    CHECK(hosts.ops.register_memory(hosts.a(), buffer, 4096, 0, nullptr) == -EINVAL);
    const memory_handle local = register_on(hosts, hosts.a(), buffer, 4096, provider::memory_local);
    const memory_handle remote = register_on(hosts, hosts.b(), buffer + 4096, 4096, remote_rw);
    remote_memory r{};
    CHECK(hosts.ops.describe_memory(hosts.a(), local, c.client, &r) == -EINVAL); // local only
    CHECK(hosts.ops.describe_memory(hosts.b(), remote, c.listener, &r) == -ENOTCONN);
    CHECK(hosts.ops.describe_memory(hosts.b(), remote + (uint64_t(1) << 32), c.server, &r) == -ENOENT);
    CHECK(hosts.ops.describe_memory(hosts.b(), remote, c.server + (uint64_t(1) << 32), &r) == -ENOTSOCK);
    REQUIRE(hosts.ops.describe_memory(hosts.b(), remote, c.server, &r) == 0);
    std::vector<tracked*> refused;
    auto expect = [&](tracked& t, socket_handle s, int rc) {
        CHECK(hosts.ops.rdma(hosts.a(), s, &t.op) == rc);
        refused.push_back(&t);
    };
    expect(rdma_op(hosts, provider::rdma_write, local, 0, 0, r, 0), c.client, -EINVAL);       // length 0
    expect(rdma_op(hosts, provider::rdma_write, local, 1, 4096, r, 0), c.client, -EINVAL);    // past the region
    expect(rdma_op(hosts, provider::rdma_read, local, ~uint64_t(0), 2, r, 0), c.client, -EINVAL); // offset overflow
    expect(rdma_op(hosts, provider::rdma_read, 0, 0, 16, r, 0), c.client, -ENOENT);
    expect(rdma_op(hosts, operation_kind::send, local, 0, 16, r, 0), c.client, -EINVAL);      // not an rdma kind
    socket_handle fresh = 0;
    REQUIRE(hosts.ops.socket(hosts.a(), &fresh) == 0);
    expect(rdma_op(hosts, provider::rdma_read, local, 0, 16, r, 0), fresh, -ENOTCONN);
    expect(rdma_op(hosts, provider::rdma_read, local, 0, 16, r, 0), c.client + (uint64_t(1) << 32), -ENOTSOCK);
    tracked& as_send = rdma_op(hosts, provider::rdma_write, local, 0, 16, r, 0);
    as_send.op.buffer = buffer;
    CHECK(hosts.ops.send(hosts.a(), c.client, &as_send.op) == -EINVAL); // send takes only its own kind
    refused.push_back(&as_send);
    settle(50);
    for (tracked* t : refused) CHECK(t->completions.load() == 0);
    CHECK(hosts.ops.close(hosts.a(), fresh) == 0);
    CHECK(hosts.ops.deregister_memory(hosts.a(), local) == 0);
    CHECK(hosts.ops.deregister_memory(hosts.b(), remote) == 0);
}

} // namespace
} // namespace sansock::conformance

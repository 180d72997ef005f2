// SPDX-License-Identifier: MIT
// The loopback provider's RDMA with faults: a frozen connection holds its RDMA operations,
// so a hard close meets them pending (the shared suite cannot hold them on a device).
#include "provider/loopback/loopback.hpp"
#include "tests/conformance/conformance_support.hpp"

namespace sansock::conformance {
namespace {

namespace lb = sansock::loopback;
using provider::memory_handle;
using provider::remote_memory;

constexpr uint32_t remote_rw = provider::memory_remote_read | provider::memory_remote_write;

struct rdma_pair {
    explicit rdma_pair(two_hosts& h) : hosts(h), c(h.connect()) {
        local = hosts.new_buffer(bytes);
        region = hosts.new_buffer(bytes);
        std::memset(local, 0x44, bytes);
        std::memset(region, 0x55, bytes);
        REQUIRE(hosts.ops.register_memory(hosts.a(), local, bytes, provider::memory_local, &ml) == 0);
        REQUIRE(hosts.ops.register_memory(hosts.b(), region, bytes, remote_rw, &mr) == 0);
        REQUIRE(hosts.ops.describe_memory(hosts.b(), mr, c.server, &remote) == 0);
    }
    tracked& op(operation_kind kind, size_t at, size_t length) {
        tracked& t = hosts.new_op(kind);
        t.op.length = length;
        t.op.memory = ml;
        t.op.memory_offset = at;
        t.op.remote_address = remote.address + at;
        t.op.remote_key = remote.key;
        return t;
    }
    static constexpr size_t bytes = 64 * 1024;
    two_hosts& hosts;
    two_hosts::connection c;
    uint8_t* local = nullptr;
    uint8_t* region = nullptr;
    memory_handle ml = 0, mr = 0;
    remote_memory remote{};
};

TEST_CASE("loopback: a frozen connection holds RDMA operations; unfreezing runs them") {
    two_hosts hosts;
    rdma_pair p(hosts);
    REQUIRE(lb::freeze(hosts.b(), p.c.server, true) == 0);
    tracked& w = p.op(provider::rdma_write, 0, 1024);
    tracked& r = p.op(provider::rdma_read, 4096, 1024);
    REQUIRE(hosts.ops.rdma(hosts.a(), p.c.client, &w.op) == 0);
    REQUIRE(hosts.ops.rdma(hosts.a(), p.c.client, &r.op) == 0);
    settle(50);
    CHECK(w.completions.load() + r.completions.load() == 0);
    CHECK(p.region[0] == 0x55);
    REQUIRE(lb::freeze(hosts.b(), p.c.server, false) == 0);
    REQUIRE(wait_until([&] { return w.completions.load() == 1 && r.completions.load() == 1; }, hosts.timeout()));
    CHECK(w.result.load() == 1024);
    CHECK(r.result.load() == 1024);
    CHECK(p.region[1023] == 0x44);
    CHECK(p.local[4096] == 0x55);
}

TEST_CASE("loopback: a hard close cancels every pending RDMA operation once, and none touches memory") {
    two_hosts hosts;
    rdma_pair p(hosts);
    REQUIRE(lb::freeze(hosts.a(), p.c.client, true) == 0);
    std::atomic<bool> closed{false};
    std::vector<tracked*> ops;
    for (int i = 0; i < 32; ++i) {
        tracked& t = p.op(i % 2 ? provider::rdma_write : provider::rdma_read, size_t(i) * 2048, 2048);
        t.socket_closed = &closed;
        REQUIRE(hosts.ops.rdma(hosts.a(), p.c.client, &t.op) == 0);
        ops.push_back(&t);
    }
    CHECK(hosts.ops.deregister_memory(hosts.a(), p.ml) == -EBUSY);
    REQUIRE(hosts.ops.close(hosts.a(), p.c.client) == 0);
    closed.store(true);
    for (tracked* t : ops) {
        CHECK(t->completions.load() == 1);
        CHECK(t->result.load() == -ECANCELED);
    }
    settle(50);
    for (tracked* t : ops) CHECK(t->late.load() == 0);
    for (size_t i = 0; i < p.bytes; ++i) {
        REQUIRE(p.local[i] == 0x44);
        REQUIRE(p.region[i] == 0x55);
    }
    CHECK(hosts.ops.deregister_memory(hosts.a(), p.ml) == 0);
    REQUIRE(wait_until([&] { return hosts.side_b.count(p.c.server, connection_event::peer_reset) == 1; }, hosts.timeout()));
}

TEST_CASE("loopback: a region deregistered while the peer's operation was held is refused when it runs") {
    two_hosts hosts;
    rdma_pair p(hosts);
    REQUIRE(lb::freeze(hosts.a(), p.c.client, true) == 0);
    tracked& w = p.op(provider::rdma_write, 0, 512);
    REQUIRE(hosts.ops.rdma(hosts.a(), p.c.client, &w.op) == 0);
    REQUIRE(hosts.ops.deregister_memory(hosts.b(), p.mr) == 0); // the peer's op names only the key
    REQUIRE(lb::freeze(hosts.a(), p.c.client, false) == 0);
    REQUIRE(wait_until([&] { return w.completions.load() == 1; }, hosts.timeout()));
    CHECK(w.result.load() == -EACCES);
    CHECK(p.region[0] == 0x55);
    REQUIRE(wait_until([&] { return hosts.side_a.count(p.c.client, connection_event::peer_reset) == 1 &&
                                    hosts.side_b.count(p.c.server, connection_event::peer_reset) == 1; },
                       hosts.timeout()));
}

TEST_CASE("loopback: device down fails pending RDMA operations -ENETDOWN; destroy releases regions") {
    two_hosts hosts;
    rdma_pair p(hosts);
    REQUIRE(lb::freeze(hosts.a(), p.c.client, true) == 0);
    tracked& r = p.op(provider::rdma_read, 0, 512);
    REQUIRE(hosts.ops.rdma(hosts.a(), p.c.client, &r.op) == 0);
    REQUIRE(lb::set_device_down(hosts.a()) == 0);
    REQUIRE(wait_until([&] { return r.completions.load() == 1; }, hosts.timeout()));
    CHECK(r.result.load() == -ENETDOWN);
    CHECK(p.local[0] == 0x44);
    memory_handle m = 0;
    CHECK(hosts.ops.register_memory(hosts.a(), p.local, 16, 0, &m) == -ENETDOWN);
    // p.ml and p.mr stay registered: the instances' destroy frees them (ASan would say).
}

} // namespace
} // namespace sansock::conformance

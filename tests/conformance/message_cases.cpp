// SPDX-License-Identifier: MIT
// Conformance of message mode (config::messages, provider.hpp "operation"): one message per
// send and recv of registered memory, receives before connect, -EMSGSIZE, -ENOBUFS, a message
// without a receive resets, the hard close and deregistration, order with RDMA writes.
#include <random>

#include "tests/conformance/conformance_support.hpp"

namespace sansock::conformance {
namespace {

using provider::memory_handle;
using provider::remote_memory;

provider::config message_config(uint32_t send_slots = 4, uint32_t recv_slots = 4) {
    provider::config c = small_config(); // 4 KiB messages
    c.send_slots = send_slots;
    c.recv_slots = recv_slots;
    c.messages = true;
    return c;
}

// A registered buffer of one host.
struct region {
    provider::instance* inst = nullptr;
    uint8_t* data = nullptr;
    size_t length = 0;
    memory_handle handle = provider::invalid_memory;
};

region make_region(two_hosts& hosts, provider::instance* inst, size_t length, uint32_t access = provider::memory_local) {
    region r{inst, hosts.new_buffer(length), length};
    r.handle = register_on(hosts, inst, r.data, length, access);
    return r;
}

tracked& message(two_hosts& hosts, operation_kind kind, const region& r, uint64_t offset, size_t length) {
    tracked& t = hosts.new_op(kind);
    t.op.length = length;
    t.op.memory = r.handle;
    t.op.memory_offset = offset;
    return t;
}

bool completed(tracked& t, int timeout_ms) {
    return wait_until([&] { return t.completions.load() == 1; }, timeout_ms);
}

// deregister_memory, tried every 10 ms for at most 10 s while it says -EBUSY.
int deregister_within(two_hosts& hosts, const region& r) {
    int rc = -EBUSY;
    for (int i = 0; i < 1000 && (rc = hosts.ops.deregister_memory(r.inst, r.handle)) == -EBUSY; ++i) settle(10);
    return rc;
}

// Both ends reset: one peer_reset each, and later sends refused -ECONNRESET.
void check_reset_at_both_ends(two_hosts& hosts, const two_hosts::connection& c, const region& ra, const region& rb) {
    REQUIRE(wait_until([&] { return hosts.side_a.count(c.client, connection_event::peer_reset) == 1; }, hosts.timeout()));
    REQUIRE(wait_until([&] { return hosts.side_b.count(c.server, connection_event::peer_reset) == 1; }, hosts.timeout()));
    CHECK(hosts.ops.send(hosts.a(), c.client, &message(hosts, operation_kind::send, ra, 0, 1).op) == -ECONNRESET);
    CHECK(hosts.ops.send(hosts.b(), c.server, &message(hosts, operation_kind::send, rb, 0, 1).op) == -ECONNRESET);
}

TEST_CASE("message mode: a message each way, of 1 byte and of slot_size bytes; slot_size + 1 is -EMSGSIZE") {
    two_hosts hosts(message_config());
    const auto c = hosts.connect();
    const size_t slot = hosts.settings.slot_size;
    const region ra = make_region(hosts, hosts.a(), 2 * slot + 1);
    const region rb = make_region(hosts, hosts.b(), 2 * slot + 1);
    for (size_t size : {size_t(1), slot}) {
        CAPTURE(size);
        for (int way = 0; way < 2; ++way) {
            const region& from = way == 0 ? ra : rb;
            const region& to = way == 0 ? rb : ra;
            const socket_handle sender = way == 0 ? c.client : c.server, receiver = way == 0 ? c.server : c.client;
            tracked& r = message(hosts, operation_kind::recv, to, slot + 1, slot); // room for slot_size
            REQUIRE(hosts.ops.recv(to.inst, receiver, &r.op) == 0);
            fill_random(from.data + 3, size, uint32_t(size) + way);
            tracked& s = message(hosts, operation_kind::send, from, 3, size);
            REQUIRE(hosts.ops.send(from.inst, sender, &s.op) == 0);
            REQUIRE(completed(r, hosts.timeout()));
            REQUIRE(completed(s, hosts.timeout()));
            CHECK(s.result.load() == int64_t(size));
            REQUIRE(r.result.load() == int64_t(size));
            CHECK(checksum(to.data + slot + 1, size) == checksum(from.data + 3, size));
        }
    }
    tracked& too_big = message(hosts, operation_kind::send, ra, 0, slot + 1);
    CHECK(hosts.ops.send(hosts.a(), c.client, &too_big.op) == -EMSGSIZE);
    provider::memory_stats stats{};
    REQUIRE(hosts.ops.query_memory(hosts.a(), &stats) == 0);
    CHECK(stats.per_connection_bytes == 0); // nothing registered per connection
    CHECK(stats.registered_bytes == stats.region_bytes);
    settle(50);
    CHECK(too_big.completions.load() == 0);
    CHECK(hosts.side_a.count_for(c.client) == 0);
    CHECK(hosts.side_b.count_for(c.server) == 0);
    CHECK(hosts.ops.deregister_memory(hosts.a(), ra.handle) == 0);
    CHECK(hosts.ops.deregister_memory(hosts.b(), rb.handle) == 0);
}

// Sends `count` messages of random sizes from `from` to `to`, never more than the receives the
// receiver has posted (a credit per receive, returned when it is posted again), and checks
// each one's size, order and checksum as it arrives.
void stream_messages(two_hosts& hosts, provider::instance* from_inst, socket_handle from, provider::instance* to_inst,
                     socket_handle to, int count, uint32_t seed) {
    const size_t slot = hosts.settings.slot_size;
    const uint32_t posted = hosts.settings.recv_slots;
    std::mt19937 gen(seed);
    std::vector<size_t> sizes(count), offsets(count);
    size_t total = 0;
    for (int i = 0; i < count; ++i) {
        sizes[i] = i % 7 == 0 ? slot : 1 + gen() % slot;
        offsets[i] = total;
        total += sizes[i];
    }
    const region source = make_region(hosts, from_inst, total);
    fill_random(source.data, total, seed);
    for (int i = 0; i < count; ++i)
        if (sizes[i] >= 4) std::memcpy(source.data + offsets[i], &i, 4); // its number, so order shows
    const region sink = make_region(hosts, to_inst, slot * posted);
    std::deque<std::pair<tracked*, uint32_t>> receives; // in the order posted
    auto post = [&](uint32_t s) {
        tracked& r = message(hosts, operation_kind::recv, sink, uint64_t(s) * slot, slot);
        REQUIRE(hosts.ops.recv(to_inst, to, &r.op) == 0);
        receives.emplace_back(&r, s);
    };
    for (uint32_t s = 0; s < posted; ++s) post(s);
    uint32_t credits = posted;
    std::vector<tracked*> sends;
    int sent = 0;
    for (int received = 0; received < count; ++received) {
        for (; sent < count && credits > 0; ++sent, --credits) {
            tracked& s = message(hosts, operation_kind::send, source, offsets[sent], sizes[sent]);
            REQUIRE(hosts.ops.send(from_inst, from, &s.op) == 0);
            sends.push_back(&s);
        }
        auto [r, s] = receives.front();
        receives.pop_front();
        REQUIRE(completed(*r, hosts.timeout()));
        CAPTURE(received);
        REQUIRE(r->result.load() == int64_t(sizes[received]));
        REQUIRE(checksum(sink.data + size_t(s) * slot, sizes[received]) == checksum(source.data + offsets[received], sizes[received]));
        post(s);
        ++credits;
    }
    for (tracked* s : sends) {
        REQUIRE(completed(*s, hosts.timeout()));
        CHECK(s->result.load() == int64_t(s->op.length));
    }
    (void)to;
}

TEST_CASE("message mode: many messages arrive in order and intact, both ways") {
    two_hosts hosts(message_config(4, 8));
    const auto c = hosts.connect();
    stream_messages(hosts, hosts.a(), c.client, hosts.b(), c.server, 2000, 11);
    stream_messages(hosts, hosts.b(), c.server, hosts.a(), c.client, 2000, 12);
    settle(50);
    CHECK(hosts.side_a.count_for(c.client) == 0);
    CHECK(hosts.side_b.count_for(c.server) == 0);
}

// Set by the receive's completion routine (after its completion is counted: wait for `seen`).
struct arrival {
    tracked* connect = nullptr;
    std::atomic<bool> connected_first{false};
    std::atomic<bool> seen{false};
};

TEST_CASE("message mode: receives posted before connect take the accepting side's first message") {
    two_hosts hosts(message_config());
    uint16_t port = 0;
    const socket_handle listener = hosts.listen_on_b(&port);
    socket_handle client = 0;
    REQUIRE(hosts.ops.socket(hosts.a(), &client) == 0);
    const region ra = make_region(hosts, hosts.a(), 4096);
    const region rb = make_region(hosts, hosts.b(), 4096);
    tracked& connect_op = hosts.new_op(operation_kind::connect);
    set_address(connect_op.op, ipv4(hosts.fx.listen_address, port));
    tracked& r = message(hosts, operation_kind::recv, ra, 0, 4096);
    arrival seen{&connect_op};
    r.context = &seen;
    r.then = [](tracked& t) noexcept {
        auto* a = static_cast<arrival*>(t.context);
        a->connected_first.store(a->connect->completions.load() == 1);
        a->seen.store(true);
    };
    auto post_recv = [&] { REQUIRE(hosts.ops.recv(hosts.a(), client, &r.op) == 0); };
    SUBCASE("on a fresh socket") { post_recv(); }
    SUBCASE("on a bound socket") {
        const sockaddr_in any_port = ipv4(hosts.fx.listen_address, 0);
        REQUIRE(hosts.ops.bind(hosts.a(), client, reinterpret_cast<const sockaddr*>(&any_port), sizeof any_port) == 0);
        post_recv();
    }
    tracked& accept_op = hosts.new_op(operation_kind::accept);
    REQUIRE(hosts.ops.accept(hosts.b(), listener, &accept_op.op) == 0);
    REQUIRE(hosts.ops.connect(hosts.a(), client, &connect_op.op) == 0);
    SUBCASE("on a connecting socket") { post_recv(); }
    REQUIRE(completed(accept_op, hosts.timeout()));
    REQUIRE(accept_op.result.load() == 0);
    std::memcpy(rb.data, "first", 5);
    tracked& s = message(hosts, operation_kind::send, rb, 0, 5);
    REQUIRE(hosts.ops.send(hosts.b(), accept_op.op.accepted, &s.op) == 0);
    REQUIRE(wait_until([&] { return seen.seen.load(); }, hosts.timeout()));
    CHECK(connect_op.result.load() == 0);
    CHECK(seen.connected_first.load()); // the connect's completion comes before the message's
    REQUIRE(r.result.load() == 5);
    CHECK(std::memcmp(ra.data, "first", 5) == 0);
    REQUIRE(completed(s, hosts.timeout()));
    CHECK(s.result.load() == 5);
}

TEST_CASE("message mode: a message longer than the receive's room fails that receive -EMSGSIZE and resets both ends") {
    two_hosts hosts(message_config());
    const auto c = hosts.connect();
    const region ra = make_region(hosts, hosts.a(), 4096);
    const region rb = make_region(hosts, hosts.b(), 4096);
    tracked& pending = message(hosts, operation_kind::recv, ra, 2048, 64); // a's, pending
    REQUIRE(hosts.ops.recv(hosts.a(), c.client, &pending.op) == 0);
    tracked& r = message(hosts, operation_kind::recv, rb, 0, 100);
    REQUIRE(hosts.ops.recv(hosts.b(), c.server, &r.op) == 0);
    tracked& s = message(hosts, operation_kind::send, ra, 0, 101);
    REQUIRE(hosts.ops.send(hosts.a(), c.client, &s.op) == 0);
    REQUIRE(completed(r, hosts.timeout()));
    CHECK(r.result.load() == -EMSGSIZE);
    REQUIRE(completed(s, hosts.timeout()));
    CHECK(s.result.load() == -ECONNRESET);
    REQUIRE(completed(pending, hosts.timeout()));
    CHECK(pending.result.load() == -ECONNRESET);
    check_reset_at_both_ends(hosts, c, ra, rb);
    CHECK(deregister_within(hosts, ra) == 0);
    CHECK(deregister_within(hosts, rb) == 0);
}

TEST_CASE("message mode: a message that finds no receive posted resets the connection at both ends") {
    two_hosts hosts(message_config());
    const auto c = hosts.connect();
    const region ra = make_region(hosts, hosts.a(), 4096);
    const region rb = make_region(hosts, hosts.b(), 4096);
    tracked& pending = message(hosts, operation_kind::recv, ra, 0, 64);
    REQUIRE(hosts.ops.recv(hosts.a(), c.client, &pending.op) == 0);
    tracked& s = message(hosts, operation_kind::send, ra, 1024, 16);
    REQUIRE(hosts.ops.send(hosts.a(), c.client, &s.op) == 0); // b has posted nothing
    REQUIRE(completed(s, hosts.timeout()));
    CHECK(s.result.load() == -ECONNRESET);
    REQUIRE(completed(pending, hosts.timeout()));
    CHECK(pending.result.load() == -ECONNRESET);
    check_reset_at_both_ends(hosts, c, ra, rb);
    tracked& later = message(hosts, operation_kind::recv, rb, 0, 64);
    CHECK(hosts.ops.recv(hosts.b(), c.server, &later.op) == -ECONNRESET);
}

TEST_CASE("message mode: more than recv_slots receives are refused -ENOBUFS") {
    two_hosts hosts(message_config());
    const uint32_t n = hosts.settings.recv_slots;
    const region ra = make_region(hosts, hosts.a(), 64 * (n + 1));
    std::vector<tracked*> refused;
    auto fill = [&](socket_handle s) {
        for (uint32_t i = 0; i < n; ++i) REQUIRE(hosts.ops.recv(hosts.a(), s, &message(hosts, operation_kind::recv, ra, 64 * i, 64).op) == 0);
        tracked& one_more = message(hosts, operation_kind::recv, ra, 64 * n, 64);
        CHECK(hosts.ops.recv(hosts.a(), s, &one_more.op) == -ENOBUFS);
        refused.push_back(&one_more);
    };
    SUBCASE("on a connection") { fill(hosts.connect().client); }
    SUBCASE("before connect") {
        socket_handle fresh = 0;
        REQUIRE(hosts.ops.socket(hosts.a(), &fresh) == 0);
        fill(fresh);
        CHECK(hosts.ops.close(hosts.a(), fresh) == 0);
    }
    settle(50);
    for (tracked* t : refused) CHECK(t->completions.load() == 0);
}

TEST_CASE("message mode: bad input is refused with the documented errno and no completion") {
    two_hosts hosts(message_config());
    const auto c = hosts.connect();
    const region ra = make_region(hosts, hosts.a(), 4096);
    region gone = make_region(hosts, hosts.a(), 4096);
    REQUIRE(hosts.ops.deregister_memory(hosts.a(), gone.handle) == 0);
    std::vector<tracked*> refused;
    auto expect = [&](tracked& t, socket_handle s, int rc) {
        CHECK((t.op.kind == operation_kind::send ? hosts.ops.send : hosts.ops.recv)(hosts.a(), s, &t.op) == rc);
        refused.push_back(&t);
    };
    tracked& wait_all = message(hosts, operation_kind::recv, ra, 0, 64);
    wait_all.op.flags = provider::op_wait_all;
    expect(wait_all, c.client, -EINVAL);
    expect(message(hosts, operation_kind::recv, gone, 0, 64), c.client, -ENOENT);
    expect(message(hosts, operation_kind::send, gone, 0, 64), c.client, -ENOENT);
    expect(message(hosts, operation_kind::recv, ra, 4000, 97), c.client, -EINVAL);  // past the region
    expect(message(hosts, operation_kind::send, ra, 1, 4096), c.client, -EINVAL);   // past the region
    expect(message(hosts, operation_kind::send, ra, ~uint64_t(0), 2), c.client, -EINVAL); // offset overflow
    expect(message(hosts, operation_kind::send, ra, 0, 0), c.client, -EINVAL);      // empty
    expect(message(hosts, operation_kind::recv, ra, 0, 0), c.client, -EINVAL);
    socket_handle fresh = 0;
    REQUIRE(hosts.ops.socket(hosts.a(), &fresh) == 0);
    expect(message(hosts, operation_kind::send, ra, 0, 64), fresh, -ENOTCONN);
    expect(message(hosts, operation_kind::send, ra, 0, 64), c.client + (uint64_t(1) << 32), -ENOTSOCK);
    settle(50);
    for (tracked* t : refused) CHECK(t->completions.load() == 0);
    CHECK(hosts.ops.close(hosts.a(), fresh) == 0);
    CHECK(hosts.ops.deregister_memory(hosts.a(), ra.handle) == 0);
}

TEST_CASE("message mode: a hard close with sends and receives pending cancels each once; the regions are released later") {
    two_hosts hosts(message_config(2, 8));
    const auto c = hosts.connect();
    const region ra = make_region(hosts, hosts.a(), 64 * 1024);
    const region rb = make_region(hosts, hosts.b(), 64 * 1024);
    std::vector<tracked*> peer_recvs;
    for (int i = 0; i < 8; ++i) { // room for every send of a: none finds no receive
        tracked& r = message(hosts, operation_kind::recv, rb, 4096 * i, 4096);
        REQUIRE(hosts.ops.recv(hosts.b(), c.server, &r.op) == 0);
        peer_recvs.push_back(&r);
    }
    // a's completions are not taken (no progress): its sends stay pending, the two on the QP
    // and the four waiting behind them; and four receives.
    hosts.stop_progress(0);
    std::atomic<bool> closed{false};
    std::vector<tracked*> pending;
    for (int i = 0; i < 6; ++i) {
        tracked& s = message(hosts, operation_kind::send, ra, 4096 * i, 1000 + i);
        s.socket_closed = &closed;
        REQUIRE(hosts.ops.send(hosts.a(), c.client, &s.op) == 0);
        pending.push_back(&s);
    }
    for (int i = 0; i < 4; ++i) {
        tracked& r = message(hosts, operation_kind::recv, ra, 32768 + 4096 * i, 4096);
        r.socket_closed = &closed;
        REQUIRE(hosts.ops.recv(hosts.a(), c.client, &r.op) == 0);
        pending.push_back(&r);
    }
    CHECK(hosts.ops.deregister_memory(hosts.a(), ra.handle) == -EBUSY); // receives on a live connection
    REQUIRE(hosts.ops.close(hosts.a(), c.client) == 0);
    closed.store(true);
    for (tracked* t : pending) {
        CHECK(t->completions.load() == 1); // before close returned
        // A send the peer had already taken (loopback moves it at once) completed before the
        // close, and its completion, waiting for progress, is delivered by the close as it was.
        const bool taken = t->op.kind == operation_kind::send && t->result.load() == int64_t(t->op.length);
        if (!taken) CHECK(t->result.load() == -ECANCELED);
    }
    const int busy = hosts.ops.deregister_memory(hosts.a(), ra.handle);
    MESSAGE(std::string(hosts.fx.name) << ": deregister_memory right after the close: " << busy);
    // On verbs the requests are still on the QP: with a's progress stopped no flush is reaped.
    if (std::string(hosts.fx.name) == "verbs") CHECK(busy == -EBUSY);
    if (busy == -EBUSY) {
        hosts.start_progress(0); // the background teardown reaps the flushes
        CHECK(deregister_within(hosts, ra) == 0);
    } else {
        CHECK(busy == 0);
        hosts.start_progress(0);
    }
    CHECK(hosts.ops.send(hosts.a(), c.client, &message(hosts, operation_kind::send, rb, 0, 1).op) == -ENOTSOCK);
    // The peer: what arrived completed, the rest is reset.
    for (tracked* r : peer_recvs) REQUIRE(completed(*r, hosts.timeout()));
    int arrived = 0;
    for (tracked* r : peer_recvs) {
        const int64_t result = r->result.load();
        arrived += result > 0;
        CHECK((result == -ECONNRESET || (result >= 1000 && result < 1006)));
    }
    CHECK(arrived <= 6);
    CHECK(peer_recvs.back()->result.load() == -ECONNRESET);
    REQUIRE(wait_until([&] { return hosts.side_b.count(c.server, connection_event::peer_reset) == 1; }, hosts.timeout()));
    CHECK(deregister_within(hosts, rb) == 0);
    settle(50);
    for (tracked* t : pending) CHECK(t->completions.load() == 1);
    CHECK(hosts.side_a.late_upcalls() == 0);
}

struct arrival_check {
    const uint8_t* target = nullptr;
    size_t length = 0;
    std::atomic<uint64_t> sum{0};
    std::atomic<bool> seen{false}; // set after the completion is counted: wait for it
};

TEST_CASE("message mode: a send after RDMA writes on the same socket arrives after their data is in place") {
    two_hosts hosts(message_config());
    const auto c = hosts.connect();
    constexpr int writes = 24; // more than a provider posts at once: some wait in software
    constexpr size_t chunk = 64 * 1024;
    const region source = make_region(hosts, hosts.a(), writes * chunk + 64);
    const region target = make_region(hosts, hosts.b(), writes * chunk, provider::memory_remote_write);
    const region rb = make_region(hosts, hosts.b(), 4096);
    remote_memory remote{};
    REQUIRE(hosts.ops.describe_memory(hosts.b(), target.handle, c.server, &remote) == 0);
    fill_random(source.data, writes * chunk, 7);
    const uint64_t expected = checksum(source.data, writes * chunk);
    arrival_check check{target.data, writes * chunk};
    tracked& r = message(hosts, operation_kind::recv, rb, 0, 64);
    r.context = &check;
    r.then = [](tracked& t) noexcept {
        auto* a = static_cast<arrival_check*>(t.context);
        a->sum.store(checksum(a->target, a->length)); // the target as the message arrives
        a->seen.store(true);
    };
    REQUIRE(hosts.ops.recv(hosts.b(), c.server, &r.op) == 0);
    // Without a's progress the writes that wait are not started (on verbs none of the first
    // completes), so a send that overtook them would arrive before their data.
    hosts.stop_progress(0);
    std::vector<tracked*> ops;
    for (int i = 0; i < writes; ++i) {
        tracked& w = hosts.new_op(provider::rdma_write);
        w.op.length = chunk;
        w.op.memory = source.handle;
        w.op.memory_offset = chunk * i;
        w.op.remote_address = remote.address + chunk * i;
        w.op.remote_key = remote.key;
        REQUIRE(hosts.ops.rdma(hosts.a(), c.client, &w.op) == 0);
        ops.push_back(&w);
    }
    tracked& s = message(hosts, operation_kind::send, source, writes * chunk, 8);
    REQUIRE(hosts.ops.send(hosts.a(), c.client, &s.op) == 0);
    ops.push_back(&s);
    settle(200);
    hosts.start_progress(0);
    REQUIRE(wait_until([&] { return check.seen.load(); }, hosts.timeout()));
    CHECK(r.result.load() == 8);
    CHECK(check.sum.load() == expected);
    for (tracked* t : ops) {
        REQUIRE(completed(*t, hosts.timeout()));
        CHECK(t->result.load() == int64_t(t->op.length));
    }
}

TEST_CASE("message mode: a peer in stream mode is refused, both ways") {
    two_hosts messages(message_config());
    two_hosts stream(small_config());
    for (int way = 0; way < 2; ++way) {
        CAPTURE(way);
        two_hosts& listening = way == 0 ? messages : stream;
        two_hosts& connecting = way == 0 ? stream : messages;
        uint16_t port = 0;
        const socket_handle listener = listening.listen_on_b(&port);
        tracked& accept_op = listening.new_op(operation_kind::accept);
        REQUIRE(listening.ops.accept(listening.b(), listener, &accept_op.op) == 0);
        socket_handle client = 0;
        REQUIRE(connecting.ops.socket(connecting.a(), &client) == 0);
        tracked& connect_op = connecting.new_op(operation_kind::connect);
        set_address(connect_op.op, ipv4(connecting.fx.listen_address, port));
        REQUIRE(connecting.ops.connect(connecting.a(), client, &connect_op.op) == 0);
        REQUIRE(completed(connect_op, connecting.timeout()));
        CHECK((connect_op.result.load() == -EPROTO || connect_op.result.load() == -ECONNREFUSED));
        settle(100);
        CHECK(accept_op.completions.load() == 0);
        CHECK(listening.ops.close(listening.b(), listener) == 0);
        REQUIRE(accept_op.completions.load() == 1);
        CHECK(accept_op.result.load() == -ECANCELED);
    }
}

} // namespace
} // namespace sansock::conformance

// SPDX-License-Identifier: MIT
// sansock-bench: the raw-verbs floor. RC queue pairs made with rdma_cm, send/receive only;
// each half (bench.hpp) drives its end from one thread (nonblocking event channel, busy-polled
// CQs).
//
// The figures are the least any socket layer over the same device can do: hard close is
// QP to error plus draining the flushes, graceful close is rdma_disconnect, the data path is
// ib_send_lat / ib_send_bw shaped. Every wait is bounded (poll on the event channel with a
// time-out, CQ polling against a deadline); every object has one RAII owner.
//
// This file: the measuring half and verbs_system; the peer half is in system_verbs_peer.cpp,
// the connection helpers in verbs_connection.hpp.
#include <algorithm>
#include <cerrno>
#include <string>
#include <vector>

#include "bench/bench.hpp"
#include "bench/verbs_connection.hpp"

namespace sansock::bench {
namespace raw_verbs {
namespace {

// ---- measuring half ----------------------------------------------------------------------

endpoint_config hard_close_config(const request& r) {
    endpoint_config cc;
    cc.recv_depth = std::max<uint32_t>(uint32_t(r.param), 1);
    return cc;
}

constexpr uint32_t bandwidth_window = 128;   // sends posted at once (ib_send_bw's default tx depth)

int run_hard_close(fixture& fx, const request& r, measurement& out, std::string& why) {
    const uint32_t outstanding = uint32_t(r.param);
    const endpoint_config cc = hard_close_config(r);
    return sample_loop(r, out, why, [&](double& ns, std::string& w) {
        end_ptr c;
        if (int rc = connect(fx, cc, c, w)) return rc;
        for (uint32_t i = 0; i < outstanding; ++i) {
            if (int rc = c->post_recv(i, 0, 64)) {
                destroy(fx, c);
                return fail(w, rc, "ibv_post_recv");
            }
        }
        const uint64_t t0 = now_ns();
        ibv_qp_attr attr{};
        attr.qp_state = IBV_QPS_ERR;
        int rc = checked(ibv_modify_qp(c->qp.get(), &attr, IBV_QP_STATE));
        if (rc == 0) rc = poll_for(c->cq.get(), int(outstanding), true, w, true);
        else rc = fail(w, rc, "ibv_modify_qp to ERR");
        const uint64_t t1 = now_ns();
        destroy(fx, c); // rdma_destroy_id sends the DREQ
        ns = double(t1 - t0);
        return rc;
    });
}

// graceful_close: until rdma_disconnect returns; graceful_to_eof: until the peer half has
// its DISCONNECTED event (its mark).
int run_graceful(fixture& fx, control& ctl, const request& r, measurement& out, std::string& why) {
    const endpoint_config config;
    return sample_loop(r, out, why, [&](double& ns, std::string& w) {
        end_ptr c;
        if (int rc = connect(fx, config, c, w)) return rc;
        const uint64_t t0 = now_ns();
        int rc = checked(rdma_disconnect(c->id.get()));
        const uint64_t t1 = now_ns();
        if (rc) {
            destroy(fx, c);
            return fail(w, rc, "rdma_disconnect");
        }
        uint64_t t2 = 0;
        rc = ctl.wait_mark(t2);
        destroy(fx, c);
        if (rc) return fail(w, rc, "waiting for the peer's DISCONNECTED");
        ns = double((r.what == scenario::graceful_to_eof ? std::max(t1, t2) : t1) - t0);
        return 0;
    });
}

// Until the peer half has its DISCONNECTED event and has destroyed its end (its mark).
int run_connect_teardown(fixture& fx, control& ctl, const request& r, measurement& out, std::string& why) {
    const endpoint_config config;
    return sample_loop(r, out, why, [&](double& ns, std::string& w) {
        const uint64_t t0 = now_ns();
        end_ptr c;
        if (int rc = connect(fx, config, c, w)) return rc;
        if (int rc = disconnect_and_destroy(fx, c, w)) return rc;
        const uint64_t t1 = now_ns();
        uint64_t t2 = 0;
        if (int rc = ctl.wait_mark(t2)) return fail(w, rc, "waiting for the peer's teardown");
        ns = double(std::max(t1, t2) - t0);
        return 0;
    });
}

int run_ping_pong(fixture& fx, const request& r, measurement& out, std::string& why) {
    const uint32_t size = uint32_t(r.param);
    end_ptr c;
    if (int rc = connect(fx, ping_pong_config(r), c, why)) return rc;
    endpoint& client = *c;
    if (int rc = client.post_recv(1, 0, size)) {
        destroy(fx, c);
        return fail(why, rc, "ibv_post_recv");
    }
    int rc = sample_loop(r, out, why, [&](double& ns, std::string& w) {
        const uint64_t t0 = now_ns();
        if (int e = client.post_send(2, size, size)) return fail(w, e, "ibv_post_send ping");
        if (int e = poll_for(client.cq.get(), 1, true, w)) return e;
        ns = double(now_ns() - t0);
        if (int e = client.post_recv(1, 0, size)) return fail(w, e, "ibv_post_recv");
        return 0;
    });
    if (rc == 0) rc = disconnect_and_destroy(fx, c, why);
    else destroy(fx, c);
    return rc;
}

// A sample ends when every send has completed: on RC a send completes once the peer has
// acknowledged it, so the data is in the peer's receive buffer.
int run_bandwidth(fixture& fx, const request& r, measurement& out, std::string& why) {
    const uint32_t size = uint32_t(r.param);
    const uint64_t messages = (r.stream_bytes + size - 1) / size;
    endpoint_config cc;
    cc.send_depth = bandwidth_window;
    cc.buffer_bytes = size;
    end_ptr c;
    if (int rc = connect(fx, cc, c, why)) return rc;
    endpoint& client = *c;
    int rc = sample_loop(r, out, why, [&](double& ns, std::string& w) {
        uint64_t posted = 0, sent = 0;
        deadline dl;
        ibv_wc wc[64];
        const uint64_t t0 = now_ns();
        while (sent < messages) {
            while (posted < messages && posted - sent < bandwidth_window) {
                if (int e = client.post_send(2, 0, size)) return fail(w, e, "ibv_post_send");
                ++posted;
            }
            int n = ibv_poll_cq(client.cq.get(), 64, wc);
            if (n < 0) return fail(w, -EIO, "ibv_poll_cq");
            for (int i = 0; i < n; ++i) {
                if (wc[i].status != IBV_WC_SUCCESS)
                    return fail(w, -EIO, std::string("send: ") + ibv_wc_status_str(wc[i].status));
                ++sent;
            }
            if (n == 0 && dl.passed()) return fail(w, -ETIMEDOUT, "streaming");
        }
        ns = double(now_ns() - t0);
        return 0;
    });
    out.bytes_per_sample = messages * size;
    if (rc == 0) rc = disconnect_and_destroy(fx, c, why);
    else destroy(fx, c);
    return rc;
}

// Per connection end on this side: registered bytes of this side's ends; resident bytes of
// this process (which holds both ends in one-process mode), once the peer half has accepted
// them all.
int run_memory(fixture& fx, control& ctl, const request& r, measurement& out, std::string& why) {
    const endpoint_config config = memory_config();
    const double ends = double(r.param) * (ctl.same_process() ? 2 : 1);
    double registered = 0, resident = 0;
    int rc = sample_loop(r, out, why, [&](double& ns, std::string& w) {
        std::vector<end_ptr> open;
        open.reserve(r.param);
        auto close_all = [&] {
            for (auto& c : open) destroy(fx, c);
        };
        const uint64_t rss0 = resident_bytes();
        const uint64_t t0 = now_ns();
        uint64_t bytes = 0;
        for (uint64_t i = 0; i < r.param; ++i) {
            end_ptr c;
            if (int e = connect(fx, config, c, w)) {
                close_all();
                return e;
            }
            if (int p = post_memory_receives(*c, config)) {
                destroy(fx, c);
                close_all();
                return fail(w, p, "ibv_post_recv");
            }
            bytes += c->mr->length;
            open.push_back(std::move(c));
        }
        uint64_t accepted = 0;
        if (int e = ctl.wait_mark(accepted)) {
            close_all();
            return fail(w, e, "waiting for the peer to accept");
        }
        ns = double(now_ns() - t0);
        const uint64_t rss1 = resident_bytes();
        registered = double(bytes) / double(r.param);
        resident = std::max(resident, double(rss1 > rss0 ? rss1 - rss0 : 0) / ends);
        close_all();
        return 0;
    });
    out.registered_bytes_per_connection = registered;
    out.resident_bytes_per_connection = resident;
    return rc;
}

const char* not_available(const request& r) {
    switch (r.what) {
    case scenario::linger_close: return "raw verbs have no linger: a graceful close is rdma_disconnect (graceful_close)";
    case scenario::listener_close: return "raw verbs have no pending accept operations (rdma_cm only queues requests)";
    case scenario::listener_abort: return "raw verbs have no listener abort distinct from rdma_destroy_id";
    case scenario::service_host_close: return "raw verbs have no service host";
    default: return nullptr;
    }
}

int run(const request& r, control& ctl, measurement& out, std::string& why) {
    out = measurement{};
    if (int rc = check(r, why)) return rc;
    fixture fx;
    if (int rc = fx.open_client(ctl.peer, why)) return rc;
    switch (r.what) {
    case scenario::hard_close: return run_hard_close(fx, r, out, why);
    case scenario::graceful_close:
    case scenario::graceful_to_eof: return run_graceful(fx, ctl, r, out, why);
    case scenario::connect_teardown: return run_connect_teardown(fx, ctl, r, out, why);
    case scenario::ping_pong: return run_ping_pong(fx, r, out, why);
    case scenario::bandwidth: return run_bandwidth(fx, r, out, why);
    case scenario::memory: return run_memory(fx, ctl, r, out, why);
    default: break;
    }
    why = "raw-verbs: unknown scenario";
    return -EINVAL;
}

} // namespace
} // namespace raw_verbs

const system verbs_system{"raw-verbs", raw_verbs::not_available, raw_verbs::run, raw_verbs::serve};

} // namespace sansock::bench

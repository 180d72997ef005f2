// SPDX-License-Identifier: MIT
// sansock-bench: the raw-verbs peer half (accepts, echoes, drains; see system_verbs.cpp).
#include <arpa/inet.h>

#include <chrono>
#include <cerrno>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench.hpp"
#include "bench/verbs_connection.hpp"

namespace sansock::bench::raw_verbs {
namespace {

constexpr uint32_t bandwidth_receives = 256; // receives kept posted at the peer

// ---- peer half -----------------------------------------------------------------------------

int serve_scenario(fixture& fx, control& ctl, const request& r, std::string& why) {
    switch (r.what) {
    case scenario::hard_close:
        // The client's end goes to error, then is destroyed (its DREQ): this end is destroyed
        // on its DISCONNECTED, before the client's next connection is accepted. (Destroyed at
        // the next accept instead, its teardown overlapped the client's measured close and
        // made the floor 5 to 10 times slower in the VM.)
        return peer_loop(r, ctl, why, [&](std::string& w) {
            end_ptr c;
            if (int e = accept_peer(fx, ctl, endpoint_config{}, c, w)) return e;
            const int e = fx.wait(c->id.get(), RDMA_CM_EVENT_DISCONNECTED, w);
            destroy(fx, c);
            return e;
        });
    case scenario::graceful_close:
    case scenario::graceful_to_eof:
    case scenario::connect_teardown:
        return peer_loop(r, ctl, why, [&](std::string& w) {
            end_ptr c;
            if (int e = accept_peer(fx, ctl, endpoint_config{}, c, w)) return e;
            int e = fx.wait(c->id.get(), RDMA_CM_EVENT_DISCONNECTED, w);
            if (r.what == scenario::connect_teardown) destroy(fx, c);
            ctl.mark();
            destroy(fx, c);
            return e;
        });
    case scenario::ping_pong: {
        const uint32_t size = uint32_t(r.param);
        end_ptr c;
        if (int rc = accept_peer(fx, ctl, ping_pong_config(r), c, why,
                                 [&](endpoint& e) { return e.post_recv(1, 0, size); }))
            return rc;
        endpoint& server = *c;
        int rc = peer_loop(r, ctl, why, [&](std::string& w) {
            if (int e = poll_for(server.cq.get(), 1, true, w)) return e;
            if (int e = server.post_recv(1, 0, size)) return fail(w, e, "ibv_post_recv");
            if (int e = server.post_send(2, size, size)) return fail(w, e, "ibv_post_send pong");
            return 0;
        });
        if (rc == 0) return await_disconnect(fx, c, why);
        destroy(fx, c);
        return rc;
    }
    case scenario::bandwidth: {
        const uint32_t size = uint32_t(r.param);
        const uint64_t messages = (r.stream_bytes + size - 1) / size;
        endpoint_config sc;
        sc.recv_depth = bandwidth_receives;
        sc.buffer_bytes = size; // every receive lands in the same buffer, as in ib_send_bw
        end_ptr c;
        if (int rc = accept_peer(fx, ctl, sc, c, why, [&](endpoint& e) {
                for (uint32_t i = 0; i < bandwidth_receives; ++i)
                    if (int p = e.post_recv(1, 0, size)) return p;
                return 0;
            }))
            return rc;
        endpoint& server = *c;
        const uint64_t expected = messages * uint64_t(r.warmup + r.iterations);
        const uint64_t counted_from = messages * uint64_t(r.warmup); // as peer_loop: CPU of counted samples
        uint64_t received = 0, idle_since = 0, idle_polls = 0;
        int64_t cpu0 = -1;
        ibv_wc wc[64];
        int rc = 0;
        while (received < expected && rc == 0) {
            if (cpu0 < 0 && received >= counted_from) cpu0 = process_cpu_ns();
            int m = ibv_poll_cq(server.cq.get(), 64, wc);
            if (m < 0) rc = fail(why, -EIO, "ibv_poll_cq");
            for (int i = 0; i < m && rc == 0; ++i) {
                if (wc[i].status != IBV_WC_SUCCESS)
                    rc = fail(why, -EIO, std::string("receive: ") + ibv_wc_status_str(wc[i].status));
                else if (int e = server.post_recv(1, 0, size)) rc = fail(why, e, "ibv_post_recv");
                if ((++received & 4095) == 0) ctl.beat();
            }
            if (m > 0) {
                idle_since = 0;
                continue;
            }
            // Idle: bounded by wait_ns without a completion (the clock read only now and then).
            if (idle_since == 0) idle_since = now_ns();
            if (++idle_polls % 1024 == 0) {
                ctl.beat();
                if (now_ns() - idle_since > wait_ns) rc = fail(why, -ETIMEDOUT, "streaming");
            }
        }
        if (rc == 0 && cpu0 >= 0) ctl.cpu_ns = process_cpu_ns() - cpu0;
        if (rc == 0) return await_disconnect(fx, c, why);
        destroy(fx, c);
        return rc;
    }
    case scenario::memory: {
        const endpoint_config config = memory_config();
        std::vector<end_ptr> open;
        int rc = 0;
        for (uint64_t i = 0; rc == 0 && i < r.param; ++i) {
            end_ptr c;
            rc = accept_peer(fx, ctl, config, c, why, [&](endpoint& e) { return post_memory_receives(e, config); });
            if (rc == 0) open.push_back(std::move(c));
        }
        if (rc == 0) {
            ctl.mark();
            // Kept until the measuring half has measured and ended the measurement.
            for (int waited = 0; !ctl.stopping() && waited < 10 * peer_wait_ms; waited += 100) {
                ctl.beat();
                std::this_thread::sleep_for(std::chrono::milliseconds(100));
            }
        }
        for (auto& c : open) destroy(fx, c);
        return rc;
    }
    default: break;
    }
    why = "raw-verbs: unknown scenario";
    return -EINVAL;
}

} // namespace

int serve(const request& r, control& ctl, std::string& why) {
    if (int rc = check(r, why)) return rc;
    fixture fx;
    if (int rc = fx.open(r.address, why)) return rc;
    if (int rc = ctl.ready(r.address, address_port(fx.address()))) return fail(why, rc, "control channel");
    return serve_scenario(fx, ctl, r, why);
}

} // namespace sansock::bench::raw_verbs

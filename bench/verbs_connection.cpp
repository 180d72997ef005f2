// SPDX-License-Identifier: MIT
// sansock-bench: the raw-verbs connection helpers (verbs_connection.hpp) and the settings both
// halves of a scenario share.
#include "bench/verbs_connection.hpp"

#include <algorithm>

namespace sansock::bench::raw_verbs {

int fail(std::string& why, int rc, const std::string& what) {
    why = "raw-verbs: " + what + ": " + std::strerror(rc < 0 ? -rc : rc);
    return rc < 0 ? rc : -EIO;
}

// Destroys one end now (QP, CQ, MR, id), forgetting its kept events.
void destroy(fixture& fx, end_ptr& e) {
    if (e) fx.forget(e->id.get());
    e.reset();
}

// Measuring half: full rdma_cm connect to the peer half's listener: resolve address and
// route, build the QP, connect, ESTABLISHED. No receives are posted.
int connect(fixture& fx, const endpoint_config& cc, end_ptr& out, std::string& why) {
    end_ptr c = std::make_unique<endpoint>();
    rdma_cm_id* cid = fx.new_id(why);
    if (cid == nullptr) return -EIO;
    c->id.reset(cid);
    auto bail = [&](int rc) {
        destroy(fx, c);
        return rc;
    };
    if (int rc = checked(rdma_resolve_addr(cid, nullptr, reinterpret_cast<sockaddr*>(&fx.address()),
                                           wait_ms)))
        return bail(fail(why, rc, "rdma_resolve_addr"));
    if (int rc = fx.wait(cid, RDMA_CM_EVENT_ADDR_RESOLVED, why)) return bail(rc);
    if (int rc = checked(rdma_resolve_route(cid, wait_ms)))
        return bail(fail(why, rc, "rdma_resolve_route"));
    if (int rc = fx.wait(cid, RDMA_CM_EVENT_ROUTE_RESOLVED, why)) return bail(rc);
    if (int rc = c->build(fx.pd(cid->verbs, why), cc, why)) return bail(rc);
    rdma_conn_param param{};
    param.retry_count = 7;
    param.rnr_retry_count = 7;
    if (int rc = checked(rdma_connect(cid, &param))) return bail(fail(why, rc, "rdma_connect"));
    if (int rc = fx.wait(cid, RDMA_CM_EVENT_ESTABLISHED, why)) return bail(rc);
    out = std::move(c);
    return 0;
}

int accept_peer(fixture& fx, control& ctl, const endpoint_config& sc, end_ptr& out, std::string& why) {
    return accept_peer(fx, ctl, sc, out, why, [](endpoint&) { return 0; });
}

// Measuring half: graceful end of a connection (rdma_disconnect), then destroy.
int disconnect_and_destroy(fixture& fx, end_ptr& c, std::string& why) {
    int rc = checked(rdma_disconnect(c->id.get()));
    if (rc) rc = fail(why, rc, "rdma_disconnect");
    destroy(fx, c);
    return rc;
}

// Peer half: waits for the measuring half's disconnect, then destroys this end.
int await_disconnect(fixture& fx, end_ptr& c, std::string& why) {
    int rc = fx.wait(c->id.get(), RDMA_CM_EVENT_DISCONNECTED, why);
    destroy(fx, c);
    return rc;
}

// Polls `cq` until `want` completions matching `is_recv` (receive or send) are seen; other
// completions are counted into *other. Any error status fails unless flushes are expected.
int poll_for(ibv_cq* cq, int want, bool want_recv, std::string& why, bool flushes_ok) {
    deadline dl;
    int got = 0;
    ibv_wc wc[32];
    while (got < want) {
        int n = ibv_poll_cq(cq, 32, wc);
        if (n < 0) return fail(why, -EIO, "ibv_poll_cq");
        for (int i = 0; i < n; ++i) {
            if (wc[i].status != IBV_WC_SUCCESS &&
                !(flushes_ok && wc[i].status == IBV_WC_WR_FLUSH_ERR))
                return fail(why, -EIO, std::string("completion: ") + ibv_wc_status_str(wc[i].status));
            const bool recv = (wc[i].opcode & IBV_WC_RECV) != 0 || flushes_ok;
            if (recv == want_recv) ++got;
        }
        if (n == 0 && dl.passed()) return fail(why, -ETIMEDOUT, "waiting for completions");
    }
    return 0;
}

endpoint_config ping_pong_config(const request& r) {
    endpoint_config config;
    config.buffer_bytes = 2 * size_t(r.param); // [receive | send]
    config.inline_bytes = 64;
    return config;
}

// Per endpoint: 128 KiB send + 128 KiB receive buffer in one MR, 16 receives posted, a
// 16-deep send queue.
endpoint_config memory_config() {
    endpoint_config config;
    config.buffer_bytes = 256u << 10;
    return config;
}

int post_memory_receives(endpoint& e, const endpoint_config& config) {
    for (uint32_t k = 0; k < config.recv_depth; ++k)
        if (int p = e.post_recv(k, (128u << 10) + k * 8192u, 8192)) return p;
    return 0;
}

int check(const request& r, std::string& why) {
    if (r.what == scenario::hard_close && r.param > 16384) return fail(why, -EINVAL, "too many outstanding receives");
    if ((r.what == scenario::ping_pong || r.what == scenario::bandwidth) && (r.param == 0 || r.param > (1u << 30)))
        return fail(why, -EINVAL, "bad message size");
    if (r.what == scenario::bandwidth && r.stream_bytes == 0) return fail(why, -EINVAL, "bad stream size");
    if (r.what == scenario::memory && r.param == 0) return fail(why, -EINVAL, "memory needs a connection count");
    return 0;
}

} // namespace sansock::bench::raw_verbs

// SPDX-License-Identifier: MIT
// sansock-bench: the raw-verbs floor. RC queue pairs made with rdma_cm, send/receive only,
// both ends driven from this one thread (nonblocking event channel, busy-polled CQs).
//
// The figures are the least any socket layer over the same device can do: hard close is
// QP to error plus draining the flushes, graceful close is rdma_disconnect, the data path is
// ib_send_lat / ib_send_bw shaped. Every wait is bounded (poll on the event channel with a
// time-out, CQ polling against a deadline); every object has one RAII owner.
#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench.hpp"
#include "provider/verbs/verbs_call.hpp"
#include "provider/verbs/verbs_objects.hpp"

namespace sansock::bench {
namespace {

using verbs::checked;
using verbs::checked_pointer;

constexpr int wait_ms = 10000;                        // bound on every CM wait
constexpr uint64_t wait_ns = uint64_t(wait_ms) * 1'000'000; // and on every CQ wait

int fail(std::string& why, int rc, const std::string& what) {
    why = "raw-verbs: " + what + ": " + std::strerror(rc < 0 ? -rc : rc);
    return rc < 0 ? rc : -EIO;
}

// What one endpoint needs: queue depths and one registered buffer.
struct endpoint_config {
    uint32_t send_depth = 16;
    uint32_t recv_depth = 16;
    size_t buffer_bytes = 4096;
    uint32_t inline_bytes = 0;
};

// One end of an RC connection. Members are declared parent first, so the QP is destroyed
// first, then the CQ, the MR, the buffer, and the cm_id last.
struct endpoint {
    verbs::cm_id id;
    std::vector<uint8_t> buffer;
    verbs::memory_region mr;
    verbs::completion_queue cq;
    verbs::queue_pair qp;
    uint32_t max_inline = 0;

    int build(ibv_pd* pd, const endpoint_config& c, std::string& why) {
        if (id->verbs != pd->context)
            return fail(why, -EXDEV, "connection on another device than the listener");
        buffer.assign(c.buffer_bytes, 0);
        mr.reset(ibv_reg_mr(pd, buffer.data(), buffer.size(), IBV_ACCESS_LOCAL_WRITE));
        if (int rc = checked_pointer(mr.get())) return fail(why, rc, "ibv_reg_mr");
        cq.reset(ibv_create_cq(id->verbs, int(c.send_depth + c.recv_depth), nullptr, nullptr, 0));
        if (int rc = checked_pointer(cq.get())) return fail(why, rc, "ibv_create_cq");
        ibv_qp_init_attr attr{};
        attr.send_cq = cq.get();
        attr.recv_cq = cq.get();
        attr.qp_type = IBV_QPT_RC;
        attr.cap.max_send_wr = c.send_depth;
        attr.cap.max_recv_wr = c.recv_depth;
        attr.cap.max_send_sge = 1;
        attr.cap.max_recv_sge = 1;
        attr.cap.max_inline_data = c.inline_bytes;
        attr.sq_sig_all = 1;
        if (int rc = checked(rdma_create_qp(id.get(), pd, &attr)))
            return fail(why, rc, "rdma_create_qp");
        qp = verbs::queue_pair(id.get());
        max_inline = attr.cap.max_inline_data;
        return 0;
    }

    int post_recv(uint64_t wr_id, size_t offset, uint32_t length) {
        ibv_sge sge{reinterpret_cast<uintptr_t>(buffer.data() + offset), length, mr->lkey};
        ibv_recv_wr wr{};
        wr.wr_id = wr_id;
        wr.sg_list = &sge;
        wr.num_sge = 1;
        ibv_recv_wr* bad = nullptr;
        return checked(ibv_post_recv(qp.get(), &wr, &bad));
    }

    int post_send(uint64_t wr_id, size_t offset, uint32_t length) {
        ibv_sge sge{reinterpret_cast<uintptr_t>(buffer.data() + offset), length, mr->lkey};
        ibv_send_wr wr{};
        wr.wr_id = wr_id;
        wr.sg_list = &sge;
        wr.num_sge = 1;
        wr.opcode = IBV_WR_SEND;
        wr.send_flags = IBV_SEND_SIGNALED | (length <= max_inline ? IBV_SEND_INLINE : 0);
        ibv_send_wr* bad = nullptr;
        return checked(ibv_post_send(qp.get(), &wr, &bad));
    }
};

// A deadline checked cheaply inside busy-poll loops.
class deadline {
public:
    deadline() : end_(now_ns() + wait_ns) {}
    bool passed() {
        if (++spins_ % 1024 != 0) return false;
        return now_ns() > end_;
    }

private:
    uint64_t end_;
    uint64_t spins_ = 0;
};

// The listener, the event channel every id shares, and the protection domain.
// Declared channel, listener, PD: destroyed PD, listener, channel.
class fixture {
public:
    int open(const std::string& address, std::string& why) {
        addr_ = {};
        addr_.sin_family = AF_INET;
        if (inet_pton(AF_INET, address.c_str(), &addr_.sin_addr) != 1)
            return fail(why, -EINVAL, "bad IPv4 address '" + address + "'");
        channel_.reset(rdma_create_event_channel());
        if (int rc = checked_pointer(channel_.get())) return fail(why, rc, "rdma_create_event_channel");
        int flags = fcntl(channel_->fd, F_GETFL);
        if (flags < 0 || fcntl(channel_->fd, F_SETFL, flags | O_NONBLOCK) < 0)
            return fail(why, -errno, "fcntl");
        rdma_cm_id* id = nullptr;
        if (int rc = checked(rdma_create_id(channel_.get(), &id, nullptr, RDMA_PS_TCP)))
            return fail(why, rc, "rdma_create_id");
        listener_.reset(id);
        if (int rc = checked(rdma_bind_addr(id, reinterpret_cast<sockaddr*>(&addr_))))
            return fail(why, rc, "rdma_bind_addr " + address);
        if (id->verbs == nullptr) return fail(why, -ENODEV, "no RDMA device has " + address);
        if (int rc = checked(rdma_listen(id, 1024))) return fail(why, rc, "rdma_listen");
        addr_.sin_port = rdma_get_src_port(id);
        pd_.reset(ibv_alloc_pd(id->verbs));
        if (int rc = checked_pointer(pd_.get())) return fail(why, rc, "ibv_alloc_pd");
        return 0;
    }

    ibv_pd* pd() const { return pd_.get(); }

    // Waits for `type` on `id` (for a connect request: on the listener; *out gets the new
    // id). Events for other ids are kept for later; every event is acknowledged at once.
    int wait(rdma_cm_id* id, rdma_cm_event_type type, std::string& why, rdma_cm_id** out = nullptr) {
        const uint64_t end = now_ns() + wait_ns;
        for (;;) {
            for (size_t i = 0; i < pending_.size(); ++i) {
                const record e = pending_[i];
                const bool mine = type == RDMA_CM_EVENT_CONNECT_REQUEST ? e.listen_id == id : e.id == id;
                if (!mine) continue;
                if (e.type == type) {
                    pending_.erase(pending_.begin() + long(i));
                    if (out) *out = e.id;
                    return 0;
                }
                if (is_failure(e.type)) {
                    pending_.erase(pending_.begin() + long(i));
                    why = std::string("raw-verbs: waiting for ") + rdma_event_str(type) + ", got " +
                          rdma_event_str(e.type) + " (status " + std::to_string(e.status) + ")";
                    return -ECONNREFUSED;
                }
            }
            const uint64_t now = now_ns();
            if (now >= end)
                return fail(why, -ETIMEDOUT, std::string("waiting for ") + rdma_event_str(type));
            pollfd pfd{channel_->fd, POLLIN, 0};
            int n = poll(&pfd, 1, int((end - now) / 1'000'000) + 1);
            if (n < 0 && errno != EINTR) return fail(why, -errno, "poll on the event channel");
            if (n <= 0) continue;
            rdma_cm_event* event = nullptr;
            while (rdma_get_cm_event(channel_.get(), &event) == 0) {
                pending_.push_back({event->id, event->listen_id, event->event, event->status});
                rdma_ack_cm_event(event);
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                return fail(why, -errno, "rdma_get_cm_event");
        }
    }

    // Drops kept events of an id about to be destroyed (its address may be reused).
    void forget(rdma_cm_id* id) {
        std::erase_if(pending_, [id](const record& e) { return e.id == id; });
    }

    rdma_cm_id* new_id(std::string& why) {
        rdma_cm_id* id = nullptr;
        if (int rc = checked(rdma_create_id(channel_.get(), &id, nullptr, RDMA_PS_TCP))) {
            fail(why, rc, "rdma_create_id");
            return nullptr;
        }
        return id;
    }

    sockaddr_in& address() { return addr_; }
    rdma_cm_id* listener() const { return listener_.get(); }

private:
    struct record {
        rdma_cm_id* id;
        rdma_cm_id* listen_id;
        rdma_cm_event_type type;
        int status;
    };
    static bool is_failure(rdma_cm_event_type t) {
        return t == RDMA_CM_EVENT_ADDR_ERROR || t == RDMA_CM_EVENT_ROUTE_ERROR ||
               t == RDMA_CM_EVENT_CONNECT_ERROR || t == RDMA_CM_EVENT_UNREACHABLE ||
               t == RDMA_CM_EVENT_REJECTED || t == RDMA_CM_EVENT_DEVICE_REMOVAL;
    }

    sockaddr_in addr_{};
    verbs::event_channel channel_;
    verbs::cm_id listener_;
    verbs::protection_domain pd_;
    std::vector<record> pending_;
};

struct connection {
    std::unique_ptr<endpoint> client;
    std::unique_ptr<endpoint> server;
};

// Destroys both ends now (QP, CQ, MR, id), forgetting their kept events.
void destroy(fixture& fx, connection& c) {
    if (c.client) fx.forget(c.client->id.get());
    if (c.server) fx.forget(c.server->id.get());
    c.client.reset();
    c.server.reset();
}

// Full rdma_cm connect: resolve address and route, build both QPs, connect, accept,
// ESTABLISHED on both sides. No receives are posted.
int connect(fixture& fx, const endpoint_config& cc, const endpoint_config& sc, connection& out,
            std::string& why) {
    connection c;
    c.client = std::make_unique<endpoint>();
    rdma_cm_id* cid = fx.new_id(why);
    if (cid == nullptr) return -EIO;
    c.client->id.reset(cid);
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
    if (int rc = c.client->build(fx.pd(), cc, why)) return bail(rc);
    rdma_conn_param param{};
    param.retry_count = 7;
    param.rnr_retry_count = 7;
    if (int rc = checked(rdma_connect(cid, &param))) return bail(fail(why, rc, "rdma_connect"));

    rdma_cm_id* sid = nullptr;
    if (int rc = fx.wait(fx.listener(), RDMA_CM_EVENT_CONNECT_REQUEST, why, &sid)) return bail(rc);
    c.server = std::make_unique<endpoint>();
    c.server->id.reset(sid);
    if (int rc = c.server->build(fx.pd(), sc, why)) return bail(rc);
    rdma_conn_param accept{};
    accept.rnr_retry_count = 7;
    if (int rc = checked(rdma_accept(sid, &accept))) return bail(fail(why, rc, "rdma_accept"));
    if (int rc = fx.wait(sid, RDMA_CM_EVENT_ESTABLISHED, why)) return bail(rc);
    if (int rc = fx.wait(cid, RDMA_CM_EVENT_ESTABLISHED, why)) return bail(rc);
    out = std::move(c);
    return 0;
}

// Graceful end of a connection: the client disconnects, the server reads DISCONNECTED,
// both are destroyed.
int disconnect_and_destroy(fixture& fx, connection& c, std::string& why) {
    int rc = checked(rdma_disconnect(c.client->id.get()));
    if (rc) rc = fail(why, rc, "rdma_disconnect");
    else rc = fx.wait(c.server->id.get(), RDMA_CM_EVENT_DISCONNECTED, why);
    destroy(fx, c);
    return rc;
}

// Polls `cq` until `want` completions matching `is_recv` (receive or send) are seen; other
// completions are counted into *other. Any error status fails unless flushes are expected.
int poll_for(ibv_cq* cq, int want, bool want_recv, std::string& why, bool flushes_ok = false) {
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

template <typename Sample>
int sample_loop(const request& r, measurement& out, std::string& why, Sample&& one) {
    out.samples_ns.clear();
    out.samples_ns.reserve(size_t(std::max(r.iterations, 0)));
    for (int i = 0; i < r.warmup + r.iterations; ++i) {
        double ns = 0;
        if (int rc = one(ns, why)) return rc;
        if (i >= r.warmup) out.samples_ns.push_back(ns);
    }
    return 0;
}

int run_hard_close(fixture& fx, const request& r, measurement& out, std::string& why) {
    if (r.param > 16384) return fail(why, -EINVAL, "too many outstanding receives");
    const uint32_t outstanding = uint32_t(r.param);
    endpoint_config cc;
    cc.recv_depth = std::max<uint32_t>(outstanding, 1);
    const endpoint_config sc;
    return sample_loop(r, out, why, [&](double& ns, std::string& w) {
        connection c;
        if (int rc = connect(fx, cc, sc, c, w)) return rc;
        for (uint32_t i = 0; i < outstanding; ++i) {
            if (int rc = c.client->post_recv(i, 0, 64)) {
                destroy(fx, c);
                return fail(w, rc, "ibv_post_recv");
            }
        }
        const uint64_t t0 = now_ns();
        ibv_qp_attr attr{};
        attr.qp_state = IBV_QPS_ERR;
        int rc = checked(ibv_modify_qp(c.client->qp.get(), &attr, IBV_QP_STATE));
        if (rc == 0) rc = poll_for(c.client->cq.get(), int(outstanding), true, w, true);
        else rc = fail(w, rc, "ibv_modify_qp to ERR");
        const uint64_t t1 = now_ns();
        destroy(fx, c); // rdma_destroy_id sends the DREQ; the peer's id goes with it
        ns = double(t1 - t0);
        return rc;
    });
}

int run_graceful(fixture& fx, const request& r, measurement& out, std::string& why) {
    const endpoint_config config;
    return sample_loop(r, out, why, [&](double& ns, std::string& w) {
        connection c;
        if (int rc = connect(fx, config, config, c, w)) return rc;
        const uint64_t t0 = now_ns();
        int rc = checked(rdma_disconnect(c.client->id.get()));
        const uint64_t t1 = now_ns();
        if (rc) {
            destroy(fx, c);
            return fail(w, rc, "rdma_disconnect");
        }
        rc = fx.wait(c.server->id.get(), RDMA_CM_EVENT_DISCONNECTED, w);
        const uint64_t t2 = now_ns();
        destroy(fx, c);
        ns = double((r.what == scenario::graceful_to_eof ? t2 : t1) - t0);
        return rc;
    });
}

int run_connect_teardown(fixture& fx, const request& r, measurement& out, std::string& why) {
    const endpoint_config config;
    return sample_loop(r, out, why, [&](double& ns, std::string& w) {
        const uint64_t t0 = now_ns();
        connection c;
        if (int rc = connect(fx, config, config, c, w)) return rc;
        if (int rc = disconnect_and_destroy(fx, c, w)) return rc;
        ns = double(now_ns() - t0);
        return 0;
    });
}

int run_ping_pong(fixture& fx, const request& r, measurement& out, std::string& why) {
    if (r.param == 0 || r.param > (1u << 30)) return fail(why, -EINVAL, "bad message size");
    const uint32_t size = uint32_t(r.param);
    endpoint_config config;
    config.buffer_bytes = 2 * size_t(size); // [receive | send]
    config.inline_bytes = 64;
    connection c;
    if (int rc = connect(fx, config, config, c, why)) return rc;
    endpoint& client = *c.client;
    endpoint& server = *c.server;
    int rc = client.post_recv(1, 0, size);
    if (rc == 0) rc = server.post_recv(1, 0, size);
    if (rc) {
        destroy(fx, c);
        return fail(why, rc, "ibv_post_recv");
    }
    rc = sample_loop(r, out, why, [&](double& ns, std::string& w) {
        const uint64_t t0 = now_ns();
        if (int e = client.post_send(2, size, size)) return fail(w, e, "ibv_post_send ping");
        if (int e = poll_for(server.cq.get(), 1, true, w)) return e;
        if (int e = server.post_recv(1, 0, size)) return fail(w, e, "ibv_post_recv");
        if (int e = server.post_send(2, size, size)) return fail(w, e, "ibv_post_send pong");
        if (int e = poll_for(client.cq.get(), 1, true, w)) return e;
        ns = double(now_ns() - t0);
        if (int e = client.post_recv(1, 0, size)) return fail(w, e, "ibv_post_recv");
        return 0;
    });
    if (rc == 0) rc = disconnect_and_destroy(fx, c, why);
    else destroy(fx, c);
    return rc;
}

int run_bandwidth(fixture& fx, const request& r, measurement& out, std::string& why) {
    if (r.param == 0 || r.param > (1u << 30) || r.stream_bytes == 0)
        return fail(why, -EINVAL, "bad message or stream size");
    const uint32_t size = uint32_t(r.param);
    const uint64_t messages = (r.stream_bytes + size - 1) / size;
    constexpr uint32_t window = 128;      // sends posted at once (ib_send_bw's default tx depth)
    constexpr uint32_t receives = 256;    // receives kept posted at the server
    endpoint_config cc;
    cc.send_depth = window;
    cc.buffer_bytes = size;
    endpoint_config sc;
    sc.recv_depth = receives;
    sc.buffer_bytes = size; // every receive lands in the same buffer, as in ib_send_bw
    connection c;
    if (int rc = connect(fx, cc, sc, c, why)) return rc;
    endpoint& client = *c.client;
    endpoint& server = *c.server;
    for (uint32_t i = 0; i < receives; ++i) {
        if (int rc = server.post_recv(1, 0, size)) {
            destroy(fx, c);
            return fail(why, rc, "ibv_post_recv");
        }
    }
    int rc = sample_loop(r, out, why, [&](double& ns, std::string& w) {
        uint64_t posted = 0, sent = 0, received = 0;
        deadline dl;
        ibv_wc wc[64];
        const uint64_t t0 = now_ns();
        while (received < messages || sent < messages) {
            while (posted < messages && posted - sent < window) {
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
            int m = ibv_poll_cq(server.cq.get(), 64, wc);
            if (m < 0) return fail(w, -EIO, "ibv_poll_cq");
            for (int i = 0; i < m; ++i) {
                if (wc[i].status != IBV_WC_SUCCESS)
                    return fail(w, -EIO, std::string("receive: ") + ibv_wc_status_str(wc[i].status));
                ++received;
                if (int e = server.post_recv(1, 0, size)) return fail(w, e, "ibv_post_recv");
            }
            if (n == 0 && m == 0 && dl.passed()) return fail(w, -ETIMEDOUT, "streaming");
        }
        ns = double(now_ns() - t0);
        return 0;
    });
    out.bytes_per_sample = messages * size;
    if (rc == 0) rc = disconnect_and_destroy(fx, c, why);
    else destroy(fx, c);
    return rc;
}

// Per endpoint (two per connection, both here): 128 KiB send + 128 KiB receive buffer in one
// MR, 16 receives posted, a 16-deep send queue.
int run_memory(fixture& fx, const request& r, measurement& out, std::string& why) {
    if (r.param == 0) return fail(why, -EINVAL, "memory needs a connection count");
    endpoint_config config;
    config.buffer_bytes = 256u << 10;
    double registered = 0, resident = 0;
    int rc = sample_loop(r, out, why, [&](double& ns, std::string& w) {
        std::vector<connection> open;
        open.reserve(r.param);
        auto close_all = [&] {
            for (auto& c : open) destroy(fx, c);
        };
        const uint64_t rss0 = resident_bytes();
        const uint64_t t0 = now_ns();
        uint64_t bytes = 0;
        for (uint64_t i = 0; i < r.param; ++i) {
            connection c;
            if (int e = connect(fx, config, config, c, w)) {
                close_all();
                return e;
            }
            for (endpoint* e : {c.client.get(), c.server.get()}) {
                for (uint32_t k = 0; k < config.recv_depth; ++k) {
                    if (int p = e->post_recv(k, (128u << 10) + k * 8192u, 8192)) {
                        destroy(fx, c);
                        close_all();
                        return fail(w, p, "ibv_post_recv");
                    }
                }
                bytes += e->mr->length;
            }
            open.push_back(std::move(c));
        }
        ns = double(now_ns() - t0);
        const uint64_t rss1 = resident_bytes();
        registered = double(bytes) / double(2 * r.param);
        resident = std::max(resident, double(rss1 > rss0 ? rss1 - rss0 : 0) / double(2 * r.param));
        close_all();
        return 0;
    });
    out.registered_bytes_per_connection = registered;
    out.resident_bytes_per_connection = resident;
    return rc;
}

int run(const request& r, measurement& out, std::string& why) {
    out = measurement{};
    switch (r.what) {
    case scenario::linger_close:
        why = "raw verbs have no linger: a graceful close is rdma_disconnect (graceful_close)";
        return -EOPNOTSUPP;
    case scenario::listener_close:
        why = "raw verbs have no pending accept operations (rdma_cm only queues requests)";
        return -EOPNOTSUPP;
    case scenario::listener_abort:
        why = "raw verbs have no listener abort distinct from rdma_destroy_id";
        return -EOPNOTSUPP;
    case scenario::service_host_close:
        why = "raw verbs have no service host";
        return -EOPNOTSUPP;
    default:
        break;
    }
    fixture fx;
    if (int rc = fx.open(r.address, why)) return rc;
    switch (r.what) {
    case scenario::hard_close: return run_hard_close(fx, r, out, why);
    case scenario::graceful_close:
    case scenario::graceful_to_eof: return run_graceful(fx, r, out, why);
    case scenario::connect_teardown: return run_connect_teardown(fx, r, out, why);
    case scenario::ping_pong: return run_ping_pong(fx, r, out, why);
    case scenario::bandwidth: return run_bandwidth(fx, r, out, why);
    case scenario::memory: return run_memory(fx, r, out, why);
    default: break;
    }
    why = "raw-verbs: unknown scenario";
    return -EINVAL;
}

} // namespace

const system verbs_system{"raw-verbs", run};

} // namespace sansock::bench

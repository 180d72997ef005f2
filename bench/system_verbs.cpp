// SPDX-License-Identifier: MIT
// sansock-bench: the raw-verbs floor. RC queue pairs made with rdma_cm, send/receive only;
// each half (bench.hpp) drives its end from one thread (nonblocking event channel, busy-polled
// CQs).
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
#include <thread>
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
        if (pd == nullptr) return -EIO;
        if (id->verbs != pd->context)
            return fail(why, -EXDEV, "connection on another device than the first");
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

// The event channel every id of one half shares, the peer half's listener, and the
// protection domain (the listener's device, or the first connection's).
// Declared channel, listener, PD: destroyed PD, listener, channel.
class fixture {
public:
    // The measuring half: no listener; connections go to `peer`.
    int open_client(const sockaddr_in& peer, std::string& why) {
        addr_ = peer;
        channel_.reset(rdma_create_event_channel());
        if (int rc = checked_pointer(channel_.get())) return fail(why, rc, "rdma_create_event_channel");
        int flags = fcntl(channel_->fd, F_GETFL);
        if (flags < 0 || fcntl(channel_->fd, F_SETFL, flags | O_NONBLOCK) < 0)
            return fail(why, -errno, "fcntl");
        return 0;
    }

    // The peer half: a listener on `address`.
    int open(const std::string& address, std::string& why) {
        sockaddr_in a{};
        a.sin_family = AF_INET;
        if (inet_pton(AF_INET, address.c_str(), &a.sin_addr) != 1)
            return fail(why, -EINVAL, "bad IPv4 address '" + address + "'");
        if (int rc = open_client(a, why)) return rc;
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

    // The protection domain on `device` (allocated with the first connection's device).
    ibv_pd* pd(ibv_context* device, std::string& why) {
        if (!pd_) {
            pd_.reset(ibv_alloc_pd(device));
            if (int rc = checked_pointer(pd_.get())) {
                fail(why, rc, "ibv_alloc_pd");
                return nullptr;
            }
        }
        return pd_.get();
    }

    // Waits for `type` on `id` (for a connect request: on the listener; *out gets the new
    // id). Events for other ids are kept for later; every event is acknowledged at once.
    int wait(rdma_cm_id* id, rdma_cm_event_type type, std::string& why, rdma_cm_id** out = nullptr,
             uint64_t timeout_ns = wait_ns) {
        const uint64_t end = now_ns() + timeout_ns;
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

// One end of a connection (the measuring half's, or the peer half's).
using end_ptr = std::unique_ptr<endpoint>;

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

// Peer half: the next connect request (waiting at most peer_wait_ms, in slices that watch
// the control channel), accepted with `sc`; ESTABLISHED. `before_accept` may post receives.
template <typename Before>
int accept_peer(fixture& fx, control& ctl, const endpoint_config& sc, end_ptr& out, std::string& why,
                Before&& before_accept) {
    rdma_cm_id* sid = nullptr;
    for (int waited = 0;; waited += 200) {
        ctl.beat();
        std::string w;
        int rc = fx.wait(fx.listener(), RDMA_CM_EVENT_CONNECT_REQUEST, w, &sid, 200'000'000); // first
        if (rc == 0) break;
        if (rc != -ETIMEDOUT) {
            why = w;
            return rc;
        }
        if (ctl.stopping()) return fail(why, -ECANCELED, "accept (the measuring half ended)");
        if (waited >= peer_wait_ms) return fail(why, -ETIMEDOUT, "waiting for a connect request");
    }
    end_ptr c = std::make_unique<endpoint>();
    c->id.reset(sid);
    if (int rc = c->build(fx.pd(sid->verbs, why), sc, why)) {
        destroy(fx, c);
        return rc;
    }
    if (int rc = before_accept(*c)) {
        destroy(fx, c);
        return fail(why, rc, "ibv_post_recv");
    }
    rdma_conn_param accept{};
    accept.rnr_retry_count = 7;
    if (int rc = checked(rdma_accept(sid, &accept))) {
        destroy(fx, c);
        return fail(why, rc, "rdma_accept");
    }
    if (int rc = fx.wait(sid, RDMA_CM_EVENT_ESTABLISHED, why)) {
        destroy(fx, c);
        return rc;
    }
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



endpoint_config hard_close_config(const request& r) {
    endpoint_config cc;
    cc.recv_depth = std::max<uint32_t>(uint32_t(r.param), 1);
    return cc;
}

endpoint_config ping_pong_config(const request& r) {
    endpoint_config config;
    config.buffer_bytes = 2 * size_t(r.param); // [receive | send]
    config.inline_bytes = 64;
    return config;
}

constexpr uint32_t bandwidth_window = 128;   // sends posted at once (ib_send_bw's default tx depth)
constexpr uint32_t bandwidth_receives = 256; // receives kept posted at the peer

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

// ---- measuring half ----------------------------------------------------------------------

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

int check(const request& r, std::string& why) {
    if (r.what == scenario::hard_close && r.param > 16384) return fail(why, -EINVAL, "too many outstanding receives");
    if ((r.what == scenario::ping_pong || r.what == scenario::bandwidth) && (r.param == 0 || r.param > (1u << 30)))
        return fail(why, -EINVAL, "bad message size");
    if (r.what == scenario::bandwidth && r.stream_bytes == 0) return fail(why, -EINVAL, "bad stream size");
    if (r.what == scenario::memory && r.param == 0) return fail(why, -EINVAL, "memory needs a connection count");
    return 0;
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
        uint64_t received = 0, idle_since = 0, idle_polls = 0;
        ibv_wc wc[64];
        int rc = 0;
        while (received < expected && rc == 0) {
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

int serve(const request& r, control& ctl, std::string& why) {
    if (int rc = check(r, why)) return rc;
    fixture fx;
    if (int rc = fx.open(r.address, why)) return rc;
    if (int rc = ctl.ready(r.address, ntohs(fx.address().sin_port))) return fail(why, rc, "control channel");
    return serve_scenario(fx, ctl, r, why);
}

} // namespace

const system verbs_system{"raw-verbs", not_available, run, serve};

} // namespace sansock::bench

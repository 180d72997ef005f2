// SPDX-License-Identifier: MIT
// sansock-bench: the raw-verbs connection helpers both halves use (system_verbs.cpp measures,
// system_verbs_peer.cpp serves): RAII endpoints, the shared event channel, bounded waits.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench.hpp"
#include "provider/verbs/verbs_call.hpp"
#include "provider/verbs/verbs_objects.hpp"

namespace sansock::bench::raw_verbs {

using verbs::checked;
using verbs::checked_pointer;

constexpr int wait_ms = 10000;                        // bound on every CM wait
constexpr uint64_t wait_ns = uint64_t(wait_ms) * 1'000'000; // and on every CQ wait

// `why` gets "raw-verbs: what: error"; returns rc if negative, else -EIO.
int fail(std::string& why, int rc, const std::string& what);

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
    int open_client(const net_address& peer, std::string& why) {
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
        net_address a{};
        if (!parse_address(address, 0, a)) return fail(why, -EINVAL, "bad IPv4 or IPv6 address '" + address + "'");
        if (int rc = open_client(a, why)) return rc;
        rdma_cm_id* id = nullptr;
        if (int rc = checked(rdma_create_id(channel_.get(), &id, nullptr, RDMA_PS_TCP)))
            return fail(why, rc, "rdma_create_id");
        listener_.reset(id);
        if (int rc = checked(rdma_bind_addr(id, &addr_.sa)))
            return fail(why, rc, "rdma_bind_addr " + address);
        if (id->verbs == nullptr) return fail(why, -ENODEV, "no RDMA device has " + address);
        if (int rc = checked(rdma_listen(id, 1024))) return fail(why, rc, "rdma_listen");
        set_port(addr_, ntohs(rdma_get_src_port(id)));
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

    net_address& address() { return addr_; }
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

    net_address addr_{};
    verbs::event_channel channel_;
    verbs::cm_id listener_;
    verbs::protection_domain pd_;
    std::vector<record> pending_;
};

// One end of a connection (the measuring half's, or the peer half's).
using end_ptr = std::unique_ptr<endpoint>;

// Destroys one end now (QP, CQ, MR, id), forgetting its kept events.
void destroy(fixture& fx, end_ptr& e);

// Measuring half: full rdma_cm connect to the peer half's listener: resolve address and
// route, build the QP, connect, ESTABLISHED. No receives are posted.
int connect(fixture& fx, const endpoint_config& cc, end_ptr& out, std::string& why);

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

int accept_peer(fixture& fx, control& ctl, const endpoint_config& sc, end_ptr& out, std::string& why);

// Measuring half: graceful end of a connection (rdma_disconnect), then destroy.
int disconnect_and_destroy(fixture& fx, end_ptr& c, std::string& why);

// Peer half: waits for the measuring half's disconnect, then destroys this end.
int await_disconnect(fixture& fx, end_ptr& c, std::string& why);

// Polls `cq` until `want` completions matching `is_recv` (receive or send) are seen; other
// completions are counted into *other. Any error status fails unless flushes are expected.
int poll_for(ibv_cq* cq, int want, bool want_recv, std::string& why, bool flushes_ok = false);

// ---- what both halves of a scenario agree on ------------------------------------------------

endpoint_config ping_pong_config(const request& r);

// Per endpoint: 128 KiB send + 128 KiB receive buffer in one MR, 16 receives posted, a
// 16-deep send queue.
endpoint_config memory_config();
int post_memory_receives(endpoint& e, const endpoint_config& config);

// The request's parameters within what the scenarios can do (0, or a negated errno with `why`).
int check(const request& r, std::string& why);

// The peer half (system_verbs_peer.cpp).
int serve(const request& r, control& ctl, std::string& why);

} // namespace sansock::bench::raw_verbs

// SPDX-License-Identifier: MIT
// rdma_cm RC endpoint for the rxe substrate tests.
#include "tests/rxe/rc_endpoint.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>

#include <cerrno>
#include <cstring>

#include "provider/verbs/verbs_call.hpp"

namespace sansock::test {

using verbs::checked;
using verbs::checked_pointer;

namespace {

int wait_readable(int fd, std::chrono::milliseconds timeout) {
    pollfd pfd{fd, POLLIN, 0};
    for (;;) {
        int ready = poll(&pfd, 1, static_cast<int>(timeout.count()));
        if (ready > 0) return 0;
        if (ready == 0) return -ETIMEDOUT;
        if (errno != EINTR) return -errno;
    }
}

int set_nonblocking(int fd) {
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) return -errno;
    return 0;
}

int parse_ipv4(const std::string& address, uint16_t port, sockaddr_in& out) {
    out = {};
    out.sin_family = AF_INET;
    out.sin_port = htons(port);
    return inet_pton(AF_INET, address.c_str(), &out.sin_addr) == 1 ? 0 : -EINVAL;
}

} // namespace

rc_endpoint::rc_endpoint(rc_endpoint_config config)
    : config_(config),
      buffer_(size_t(config.slot_size) * (config.recv_slots + config.send_slots)) {}

rc_endpoint::~rc_endpoint() = default;

int rc_endpoint::next_cm_event(std::chrono::milliseconds timeout, rdma_cm_id** event_id) {
    if (int rc = wait_readable(events_->fd, timeout)) return rc;
    rdma_cm_event* event = nullptr;
    if (int rc = checked(rdma_get_cm_event(events_.get(), &event))) return rc;
    const int type = event->event;
    if (event_id) *event_id = event->id;
    rdma_ack_cm_event(event);
    return type;
}

int rc_endpoint::wait_for_event(rdma_cm_event_type expected, rdma_cm_id** event_id) {
    int type = next_cm_event(config_.timeout, event_id);
    if (type < 0) return type;
    if (type != expected) {
        std::fprintf(stderr, "rc_endpoint: expected %s, got %s\n", rdma_event_str(expected),
                     rdma_event_str(static_cast<rdma_cm_event_type>(type)));
        return -EPROTO;
    }
    return 0;
}

int rc_endpoint::listen(const std::string& address) {
    events_.reset(rdma_create_event_channel());
    if (int rc = checked_pointer(events_.get())) return rc;
    if (int rc = set_nonblocking(events_->fd)) return rc;
    rdma_cm_id* id = nullptr;
    if (int rc = checked(rdma_create_id(events_.get(), &id, nullptr, RDMA_PS_TCP))) return rc;
    listen_id_.reset(id);
    sockaddr_in addr;
    if (int rc = parse_ipv4(address, 0, addr)) return rc;
    if (int rc = checked(rdma_bind_addr(id, reinterpret_cast<sockaddr*>(&addr)))) return rc;
    if (int rc = checked(rdma_listen(id, 8))) return rc;
    return ntohs(rdma_get_src_port(id));
}

int rc_endpoint::build_queue_pair(rdma_cm_id* id) {
    pd_.reset(ibv_alloc_pd(id->verbs));
    if (int rc = checked_pointer(pd_.get())) return rc;
    mr_.reset(ibv_reg_mr(pd_.get(), buffer_.data(), buffer_.size(), IBV_ACCESS_LOCAL_WRITE));
    if (int rc = checked_pointer(mr_.get())) return rc;
    completion_channel_.reset(ibv_create_comp_channel(id->verbs));
    if (int rc = checked_pointer(completion_channel_.get())) return rc;
    if (int rc = set_nonblocking(completion_channel_->fd)) return rc;
    const int cq_depth = static_cast<int>(config_.recv_slots + config_.send_slots);
    cq_.reset(ibv_create_cq(id->verbs, cq_depth, nullptr, completion_channel_.get(), 0));
    if (int rc = checked_pointer(cq_.get())) return rc;

    ibv_qp_init_attr attr{};
    attr.send_cq = cq_.get();
    attr.recv_cq = cq_.get();
    attr.qp_type = IBV_QPT_RC;
    attr.cap.max_send_wr = config_.send_slots;
    attr.cap.max_recv_wr = config_.recv_slots;
    attr.cap.max_send_sge = 1;
    attr.cap.max_recv_sge = 1;
    attr.sq_sig_all = 1;
    if (int rc = checked(rdma_create_qp(id, pd_.get(), &attr))) return rc;
    qp_ = verbs::queue_pair(id);
    return 0;
}

int rc_endpoint::accept(uint32_t initial_receives) {
    rdma_cm_id* id = nullptr;
    if (int rc = wait_for_event(RDMA_CM_EVENT_CONNECT_REQUEST, &id)) return rc;
    id_.reset(id);
    if (int rc = build_queue_pair(id)) return rc;
    for (uint32_t slot = 0; slot < initial_receives; ++slot)
        if (int rc = post_receive(slot)) return rc;
    rdma_conn_param param{};
    param.responder_resources = 1;
    param.initiator_depth = 1;
    param.rnr_retry_count = 7; // the sender retries for ever on receiver-not-ready
    if (int rc = checked(rdma_accept(id, &param))) return rc;
    return wait_for_event(RDMA_CM_EVENT_ESTABLISHED);
}

int rc_endpoint::connect(const std::string& address, uint16_t port, uint32_t initial_receives) {
    events_.reset(rdma_create_event_channel());
    if (int rc = checked_pointer(events_.get())) return rc;
    if (int rc = set_nonblocking(events_->fd)) return rc;
    rdma_cm_id* id = nullptr;
    if (int rc = checked(rdma_create_id(events_.get(), &id, nullptr, RDMA_PS_TCP))) return rc;
    id_.reset(id);
    sockaddr_in addr;
    if (int rc = parse_ipv4(address, port, addr)) return rc;
    const int resolve_ms = static_cast<int>(config_.timeout.count());
    if (int rc = checked(rdma_resolve_addr(id, nullptr, reinterpret_cast<sockaddr*>(&addr), resolve_ms)))
        return rc;
    if (int rc = wait_for_event(RDMA_CM_EVENT_ADDR_RESOLVED)) return rc;
    if (int rc = checked(rdma_resolve_route(id, resolve_ms))) return rc;
    if (int rc = wait_for_event(RDMA_CM_EVENT_ROUTE_RESOLVED)) return rc;
    if (int rc = build_queue_pair(id)) return rc;
    for (uint32_t slot = 0; slot < initial_receives; ++slot)
        if (int rc = post_receive(slot)) return rc;
    rdma_conn_param param{};
    param.responder_resources = 1;
    param.initiator_depth = 1;
    param.retry_count = 7;
    param.rnr_retry_count = 7;
    if (int rc = checked(rdma_connect(id, &param))) return rc;
    return wait_for_event(RDMA_CM_EVENT_ESTABLISHED);
}

int rc_endpoint::post_receive(uint32_t slot) {
    ibv_sge sge{reinterpret_cast<uintptr_t>(recv_buffer(slot)), config_.slot_size, mr_->lkey};
    ibv_recv_wr wr{};
    wr.wr_id = recv_wr_base + slot;
    wr.sg_list = &sge;
    wr.num_sge = 1;
    ibv_recv_wr* bad = nullptr;
    return checked(ibv_post_recv(qp_.get(), &wr, &bad));
}

int rc_endpoint::post_send(uint32_t slot, uint32_t length) {
    ibv_sge sge{reinterpret_cast<uintptr_t>(send_buffer(slot)), length, mr_->lkey};
    ibv_send_wr wr{};
    wr.wr_id = slot;
    wr.sg_list = &sge;
    wr.num_sge = 1;
    wr.opcode = IBV_WR_SEND;
    wr.send_flags = IBV_SEND_SIGNALED;
    ibv_send_wr* bad = nullptr;
    return checked(ibv_post_send(qp_.get(), &wr, &bad));
}

int rc_endpoint::wait_completions(std::vector<ibv_wc>& out, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        ibv_wc batch[32];
        int n = ibv_poll_cq(cq_.get(), 32, batch);
        if (n < 0) return -EIO;
        if (n > 0) {
            out.insert(out.end(), batch, batch + n);
            return n;
        }
        if (!cq_armed_) {
            // Arm, then poll again: a completion that landed before arming is not lost.
            if (int rc = checked(ibv_req_notify_cq(cq_.get(), 0))) return rc;
            cq_armed_ = true;
            continue;
        }
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return 0;
        int rc = wait_readable(completion_channel_->fd, left);
        if (rc == -ETIMEDOUT) return 0;
        if (rc < 0) return rc;
        ibv_cq* cq = nullptr;
        void* context = nullptr;
        if (ibv_get_cq_event(completion_channel_.get(), &cq, &context) == 0) {
            ibv_ack_cq_events(cq, 1);
            cq_armed_ = false;
        }
    }
}

int rc_endpoint::move_qp_to_error() {
    ibv_qp_attr attr{};
    attr.qp_state = IBV_QPS_ERR;
    return checked(ibv_modify_qp(qp_.get(), &attr, IBV_QP_STATE));
}

int rc_endpoint::disconnect() { return checked(rdma_disconnect(id_.get())); }

int rc_endpoint::teardown() {
    int first_error = 0;
    auto keep = [&](int rc) {
        if (rc != 0 && first_error == 0) first_error = rc;
    };
    if (qp_) {
        keep(checked(ibv_destroy_qp(qp_.get())));
        if (id_) id_->qp = nullptr;
        qp_ = verbs::queue_pair();
    }
    if (cq_) keep(checked(ibv_destroy_cq(cq_.release())));
    if (completion_channel_) keep(checked(ibv_destroy_comp_channel(completion_channel_.release())));
    if (mr_) keep(checked(ibv_dereg_mr(mr_.release())));
    if (pd_) keep(checked(ibv_dealloc_pd(pd_.release())));
    if (id_) keep(checked(rdma_destroy_id(id_.release())));
    if (listen_id_) keep(checked(rdma_destroy_id(listen_id_.release())));
    events_.reset();
    return first_error;
}

} // namespace sansock::test

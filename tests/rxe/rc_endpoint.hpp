// SPDX-License-Identifier: MIT
// One end of an RC connection made with rdma_cm, built from the provider's RAII owners: used
// by the rxe tests to check the substrate directly, below the provider.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "provider/verbs/verbs_objects.hpp"

namespace sansock::test {

struct rc_endpoint_config {
    uint32_t slot_size = 32 * 1024; // bytes per send or receive buffer slot
    uint32_t recv_slots = 64;
    uint32_t send_slots = 64;
    std::chrono::milliseconds timeout{30000}; // bound on every wait
};

class rc_endpoint {
public:
    explicit rc_endpoint(rc_endpoint_config config = {});
    ~rc_endpoint();
    rc_endpoint(const rc_endpoint&) = delete;
    rc_endpoint& operator=(const rc_endpoint&) = delete;

    // Passive side: bind and listen on address:0; returns the port (> 0) or a negated errno.
    int listen(const std::string& address);
    // Passive side: wait for a connect request, build the QP, post `initial_receives`
    // receives, accept, and wait until established. 0 or a negated errno.
    int accept(uint32_t initial_receives);
    // Active side: resolve, build the QP, post `initial_receives`, connect, wait established.
    int connect(const std::string& address, uint16_t port, uint32_t initial_receives);

    // Posting; wr_id is the slot number, receives offset by `recv_wr_base`.
    static constexpr uint64_t recv_wr_base = 1u << 20;
    int post_receive(uint32_t slot);
    int post_send(uint32_t slot, uint32_t length);
    uint8_t* send_buffer(uint32_t slot) { return buffer_.data() + (config_.recv_slots + slot) * size_t(config_.slot_size); }
    uint8_t* recv_buffer(uint32_t slot) { return buffer_.data() + slot * size_t(config_.slot_size); }

    // Waits (on the completion channel, not spinning) for at least one completion or until
    // `timeout`; appends what it polled. Returns the count, 0 on time-out, or a negated errno.
    int wait_completions(std::vector<ibv_wc>& out, std::chrono::milliseconds timeout);

    // The next rdma_cm event's type, acknowledged; -ETIMEDOUT if none came in `timeout`.
    int next_cm_event(std::chrono::milliseconds timeout, rdma_cm_id** event_id = nullptr);

    int move_qp_to_error();
    int disconnect();
    // Destroys everything in child-to-parent order, checking each destroy; 0 or the first error.
    int teardown();

    ibv_qp* qp() const { return qp_.get(); }

private:
    int build_queue_pair(rdma_cm_id* id);
    int wait_for_event(rdma_cm_event_type expected, rdma_cm_id** event_id = nullptr);

    rc_endpoint_config config_;
    std::vector<uint8_t> buffer_;
    verbs::event_channel events_;
    verbs::cm_id listen_id_;
    verbs::cm_id id_;
    verbs::protection_domain pd_;
    verbs::memory_region mr_;
    verbs::completion_channel completion_channel_;
    verbs::completion_queue cq_;
    verbs::queue_pair qp_;
    bool cq_armed_ = false;
};

} // namespace sansock::test

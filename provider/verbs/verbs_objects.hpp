// SPDX-License-Identifier: MIT
// Move-only RAII owners for every rdma-core object sansock creates.
//
// Declare children after parents (QP after CQ after PD after cm_id) so destruction runs in
// the right order. Destructors never throw and never wait on the network: a failed destroy is
// logged (it means a leak, not a crash). rdma_destroy_id waits only for unacknowledged CM
// events, and every CM event is acknowledged as soon as it is read.
#pragma once

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include <memory>
#include <utility>

namespace sansock::verbs {

// Logs a failed destroy to stderr; never throws. `what` is a static string.
void report_destroy_failure(const char* what, int rc) noexcept;

namespace detail {
struct event_channel_deleter {
    void operator()(rdma_event_channel* channel) const noexcept { rdma_destroy_event_channel(channel); }
};
struct cm_id_deleter {
    void operator()(rdma_cm_id* id) const noexcept {
        if (int rc = rdma_destroy_id(id)) report_destroy_failure("rdma_destroy_id", rc);
    }
};
struct pd_deleter {
    void operator()(ibv_pd* pd) const noexcept {
        if (int rc = ibv_dealloc_pd(pd)) report_destroy_failure("ibv_dealloc_pd", rc);
    }
};
struct comp_channel_deleter {
    void operator()(ibv_comp_channel* channel) const noexcept {
        if (int rc = ibv_destroy_comp_channel(channel))
            report_destroy_failure("ibv_destroy_comp_channel", rc);
    }
};
struct cq_deleter {
    void operator()(ibv_cq* cq) const noexcept {
        if (int rc = ibv_destroy_cq(cq)) report_destroy_failure("ibv_destroy_cq", rc);
    }
};
struct mr_deleter {
    void operator()(ibv_mr* mr) const noexcept {
        if (int rc = ibv_dereg_mr(mr)) report_destroy_failure("ibv_dereg_mr", rc);
    }
};
struct device_list_deleter {
    void operator()(ibv_device** list) const noexcept { ibv_free_device_list(list); }
};
struct context_deleter {
    void operator()(ibv_context* context) const noexcept {
        if (int rc = ibv_close_device(context)) report_destroy_failure("ibv_close_device", rc);
    }
};
} // namespace detail

using event_channel = std::unique_ptr<rdma_event_channel, detail::event_channel_deleter>;
using cm_id = std::unique_ptr<rdma_cm_id, detail::cm_id_deleter>;
using protection_domain = std::unique_ptr<ibv_pd, detail::pd_deleter>;
using completion_channel = std::unique_ptr<ibv_comp_channel, detail::comp_channel_deleter>;
using completion_queue = std::unique_ptr<ibv_cq, detail::cq_deleter>;
using memory_region = std::unique_ptr<ibv_mr, detail::mr_deleter>;
using device_list = std::unique_ptr<ibv_device*, detail::device_list_deleter>;
using device_context = std::unique_ptr<ibv_context, detail::context_deleter>;

// The QP of an rdma_cm id (rdma_create_qp / rdma_destroy_qp). It does not own the id: declare
// it after the cm_id owner so it is destroyed first.
class queue_pair {
public:
    queue_pair() = default;
    explicit queue_pair(rdma_cm_id* id) noexcept : id_(id) {}
    queue_pair(queue_pair&& other) noexcept : id_(std::exchange(other.id_, nullptr)) {}
    queue_pair& operator=(queue_pair&& other) noexcept {
        if (this != &other) {
            reset();
            id_ = std::exchange(other.id_, nullptr);
        }
        return *this;
    }
    queue_pair(const queue_pair&) = delete;
    queue_pair& operator=(const queue_pair&) = delete;
    ~queue_pair() { reset(); }

    ibv_qp* get() const noexcept { return id_ != nullptr ? id_->qp : nullptr; }
    explicit operator bool() const noexcept { return get() != nullptr; }
    void reset() noexcept {
        if (id_ != nullptr && id_->qp != nullptr) rdma_destroy_qp(id_);
        id_ = nullptr;
    }

private:
    rdma_cm_id* id_ = nullptr;
};

} // namespace sansock::verbs

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

#include "provider/provider.hpp"

namespace sansock::verbs {

// Where an owner reports a failed destroy: the log up-call of the provider instance it belongs
// to (provider::upcalls::log), which outlives it. An owner made outside an instance (tests)
// has none. Construct an owner with its deleter to set it: cm_id id{nullptr, {&log}}; reset()
// keeps it.
struct destroy_log {
    void (*log)(void* context, provider::log_level level, const char* message) noexcept = nullptr;
    void* context = nullptr;
};

// Reports a failed destroy at level error, to `log` or, when it is null or has no function,
// to standard error. Never throws, never allocates. `what` is a static string.
void report_destroy_failure(const destroy_log* log, const char* what, int rc) noexcept;

namespace detail {
struct event_channel_deleter {
    void operator()(rdma_event_channel* channel) const noexcept { rdma_destroy_event_channel(channel); }
};
struct cm_id_deleter {
    const destroy_log* log = nullptr;
    void operator()(rdma_cm_id* id) const noexcept {
        if (int rc = rdma_destroy_id(id)) report_destroy_failure(log, "rdma_destroy_id", rc);
    }
};
struct pd_deleter {
    const destroy_log* log = nullptr;
    void operator()(ibv_pd* pd) const noexcept {
        if (int rc = ibv_dealloc_pd(pd)) report_destroy_failure(log, "ibv_dealloc_pd", rc);
    }
};
struct comp_channel_deleter {
    const destroy_log* log = nullptr;
    void operator()(ibv_comp_channel* channel) const noexcept {
        if (int rc = ibv_destroy_comp_channel(channel))
            report_destroy_failure(log, "ibv_destroy_comp_channel", rc);
    }
};
struct cq_deleter {
    const destroy_log* log = nullptr;
    void operator()(ibv_cq* cq) const noexcept {
        if (int rc = ibv_destroy_cq(cq)) report_destroy_failure(log, "ibv_destroy_cq", rc);
    }
};
struct mr_deleter {
    const destroy_log* log = nullptr;
    void operator()(ibv_mr* mr) const noexcept {
        if (int rc = ibv_dereg_mr(mr)) report_destroy_failure(log, "ibv_dereg_mr", rc);
    }
};
struct device_list_deleter {
    void operator()(ibv_device** list) const noexcept { ibv_free_device_list(list); }
};
struct context_deleter {
    const destroy_log* log = nullptr;
    void operator()(ibv_context* context) const noexcept {
        if (int rc = ibv_close_device(context)) report_destroy_failure(log, "ibv_close_device", rc);
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

// SPDX-License-Identifier: MIT
// The verbs provider's memory: device PDs, each connection's registered buffer, CQ, QP.
#include "provider/verbs/verbs_call.hpp"
#include "provider/verbs/verbs_internal.hpp"

namespace sansock::verbs::detail {

static device_resources* device_for(verbs_instance& self, ibv_context* context, int* error) {
    auto found = self.devices.find(context);
    if (found != self.devices.end()) return found->second.get();
    auto device = std::make_unique<device_resources>(&self.destroy_logging);
    device->owner = &self;
    device->context = context;
    device->pd.reset(ibv_alloc_pd(context));
    if ((*error = checked_pointer(device->pd.get())) != 0) return nullptr;
    device->channel.reset(ibv_create_comp_channel(context));
    if ((*error = checked_pointer(device->channel.get())) != 0) return nullptr;
    if ((*error = set_nonblocking(device->channel->fd)) != 0) return nullptr;
    if ((*error = self.engine->watch(device->channel->fd, on_device_completions, device.get(), &device->watch)) != 0)
        return nullptr;
    return self.devices.emplace(context, std::move(device)).first->second.get();
}

// The QP, CQ and registered buffer of a connection, with every receive posted.
int build_connection(verbs_instance& self, vsocket& s, rdma_cm_id* id) {
    int rc = 0;
    s.device = device_for(self, id->verbs, &rc);
    if (s.device == nullptr) return rc;
    s.slot_size = self.settings.slot_size;
    s.send_slots = self.settings.send_slots;
    s.recv_slots = self.settings.recv_slots;
    s.buffer_bytes = size_t(s.slot_size) * (s.send_slots + s.recv_slots);
    s.buffer.reset(static_cast<uint8_t*>(std::aligned_alloc(4096, (s.buffer_bytes + 4095) / 4096 * 4096)));
    if (!s.buffer) return -ENOMEM;
    // (ibv_reg_mr): the function, not verbs.h's macro, whose test of IBV_ACCESS_OPTIONAL_RANGE
    // mixes two enumerations (deprecated in C++20: clang warns); for these flags it calls the same.
    s.mr.reset((ibv_reg_mr)(s.device->pd.get(), s.buffer.get(), s.buffer_bytes, IBV_ACCESS_LOCAL_WRITE));
    if ((rc = checked_pointer(s.mr.get())) != 0) return rc;
    const int depth = static_cast<int>(s.send_slots + s.recv_slots);
    s.cq.reset(ibv_create_cq(id->verbs, depth, &s, s.device->channel.get(), 0));
    if ((rc = checked_pointer(s.cq.get())) != 0) return rc;
    if ((rc = checked(ibv_req_notify_cq(s.cq.get(), 0))) != 0) return rc;
    ibv_qp_init_attr attr{};
    attr.send_cq = s.cq.get();
    attr.recv_cq = s.cq.get();
    attr.qp_type = IBV_QPT_RC;
    attr.sq_sig_all = 1;
    attr.cap.max_send_wr = s.send_slots;
    attr.cap.max_recv_wr = s.recv_slots;
    attr.cap.max_send_sge = 1;
    attr.cap.max_recv_sge = 1;
    if ((rc = checked(rdma_create_qp(id, s.device->pd.get(), &attr))) != 0) return rc;
    s.qp = queue_pair(id);
    s.send_slot_uses.assign(s.send_slots, {});
    s.free_send_slots.clear();
    for (uint32_t slot = s.send_slots; slot-- > 0;) s.free_send_slots.push_back(slot);
    for (uint32_t slot = 0; slot < s.recv_slots; ++slot)
        if ((rc = post_receive(s, slot)) != 0) return rc;
    return 0;
}

int verbs_query_memory(provider::instance* p, memory_stats* out) {
    verbs_instance* self = self_of(p);
    if (self == nullptr || out == nullptr) return -EINVAL;
    std::lock_guard lock(self->mutex);
    *out = {};
    out->per_connection_bytes = uint64_t(self->settings.slot_size) * (self->settings.send_slots + self->settings.recv_slots);
    for (auto& [s, owned] : self->sockets)
        if (s->mr) {
            out->registered_bytes += s->mr->length;
            ++out->connections;
        }
    out->sockets = self->table.size();
    return 0;
}

} // namespace sansock::verbs::detail

// SPDX-License-Identifier: MIT
// The verbs provider's memory: device PDs, each connection's registered buffer, CQ, QP.
#include <algorithm>

#include "provider/verbs/verbs_call.hpp"
#include "provider/verbs/verbs_internal.hpp"

namespace sansock::verbs::detail {

// A device that is not kept after all: the regions' memory regions on it go before its PD.
static void release_region_mrs_of(verbs_instance& self, const device_resources* device) {
    self.regions.for_each([&](uint64_t, vregion* r) {
        std::erase_if(r->mrs, [device](const region_mr& m) { return m.device == device; });
    });
}

// Allocates nothrow (-ENOMEM in *error): it runs inside the progress callbacks too.
device_resources* device_for(verbs_instance& self, ibv_context* context, int* error) {
    auto found = self.devices.find(context);
    if (found != self.devices.end()) return found->second.get();
    std::unique_ptr<device_resources> device(new (std::nothrow) device_resources(&self.destroy_logging));
    if (!device) {
        *error = -ENOMEM;
        return nullptr;
    }
    device->owner = &self;
    device->context = context;
    device->pd.reset(ibv_alloc_pd(context));
    if ((*error = checked_pointer(device->pd.get())) != 0) return nullptr;
    device->channel.reset(ibv_create_comp_channel(context));
    if ((*error = checked_pointer(device->channel.get())) != 0) return nullptr;
    if ((*error = set_nonblocking(device->channel->fd)) != 0) return nullptr;
    // Outstanding RDMA reads per connection, within what the device takes.
    ibv_device_attr attr{};
    if (ibv_query_device(context, &attr) == 0) {
        device->responder_resources = uint8_t(std::clamp(attr.max_qp_rd_atom, 1, 16));
        device->initiator_depth = uint8_t(std::clamp(attr.max_qp_init_rd_atom, 1, 16));
    }
    // The user's regions are registered on every device of the instance.
    bool registered = true;
    self.regions.for_each([&](uint64_t, vregion* r) {
        if (registered && (*error = register_on_device(self, *r, *device)) != 0) registered = false;
    });
    if (!registered) {
        release_region_mrs_of(self, device.get());
        return nullptr;
    }
    device_resources* made = device.get();
    try {
        self.devices.emplace(context, std::move(device)); // before the watch, which names it
    } catch (const std::bad_alloc&) {
        release_region_mrs_of(self, made);
        *error = -ENOMEM;
        return nullptr;
    }
    if ((*error = self.engine->watch(made->channel->fd, on_device_completions, made, &made->watch)) != 0) {
        release_region_mrs_of(self, made);
        self.devices.erase(context);
        return nullptr;
    }
    return made;
}

// A connection's own registered buffer (stream mode): send and receive slots, the ring of
// received fragments.
static int build_stream_buffer(vsocket& s) {
    try {
        s.send_slot_uses.assign(s.send_slots, {});
        s.free_send_slots.clear();
        s.free_send_slots.reserve(s.send_slots); // completions push slots back within it
    } catch (const std::bad_alloc&) {
        return -ENOMEM;
    }
    if (!s.received.allocate(s.recv_slots)) return -ENOMEM;
    s.buffer_bytes = size_t(s.slot_size) * (s.send_slots + s.recv_slots);
    s.buffer.reset(static_cast<uint8_t*>(std::aligned_alloc(4096, (s.buffer_bytes + 4095) / 4096 * 4096)));
    if (!s.buffer) return -ENOMEM;
    // (ibv_reg_mr): the function, not verbs.h's macro, whose test of IBV_ACCESS_OPTIONAL_RANGE
    // mixes two enumerations (deprecated in C++20: clang warns); for these flags it calls the same.
    s.mr.reset((ibv_reg_mr)(s.device->pd.get(), s.buffer.get(), s.buffer_bytes, IBV_ACCESS_LOCAL_WRITE));
    return checked_pointer(s.mr.get());
}

// The QP and CQ of a connection, with every receive posted: in stream mode its registered
// buffer's, in message mode those the user posted before (the connecting side). Everything the
// connection's data path, failure and close use is allocated here, nothrow (-ENOMEM): the
// slot lists at their full size, the ring of received fragments.
int build_connection(verbs_instance& self, vsocket& s, rdma_cm_id* id) {
    int rc = 0;
    s.device = device_for(self, id->verbs, &rc);
    if (s.device == nullptr) return rc;
    s.slot_size = self.settings.slot_size;
    s.send_slots = self.settings.send_slots;
    s.recv_slots = self.settings.recv_slots;
    rc = self.settings.messages ? build_message_slots(s) : build_stream_buffer(s);
    if (rc != 0) return rc;
    s.rdma_slots.reset(new (std::nothrow) operation*[rdma_depth]());
    if (!s.rdma_slots) return -ENOMEM;
    const int depth = static_cast<int>(s.send_slots + s.recv_slots + rdma_depth);
    s.cq.reset(ibv_create_cq(id->verbs, depth, &s, s.device->channel.get(), 0));
    if ((rc = checked_pointer(s.cq.get())) != 0) return rc;
    if ((rc = checked(ibv_req_notify_cq(s.cq.get(), 0))) != 0) return rc;
    ibv_qp_init_attr attr{};
    attr.send_cq = s.cq.get();
    attr.recv_cq = s.cq.get();
    attr.qp_type = IBV_QPT_RC;
    attr.sq_sig_all = 1;
    attr.cap.max_send_wr = s.send_slots + rdma_depth;
    attr.cap.max_recv_wr = s.recv_slots;
    attr.cap.max_send_sge = 1;
    attr.cap.max_recv_sge = 1;
    attr.cap.max_inline_data = self.settings.messages ? wanted_inline : 0;
    rc = checked(rdma_create_qp(id, s.device->pd.get(), &attr));
    if (rc != 0 && attr.cap.max_inline_data != 0) { // a device with less (or no) inline data
        attr.cap.max_inline_data = 0;
        rc = checked(rdma_create_qp(id, s.device->pd.get(), &attr));
    }
    if (rc != 0) return rc;
    s.qp = queue_pair(id);
    s.max_inline = attr.cap.max_inline_data; // what the device granted
    for (uint32_t slot = s.send_slots; slot-- > 0;) s.free_send_slots.push_back(slot);
    if (self.settings.messages) {
        if ((rc = post_early_receives(self, s)) != 0) { // the connect fails: no QP, regions released
            release_message_slots(self, s);
            s.qp.reset();
        }
        return rc;
    }
    for (uint32_t slot = 0; slot < s.recv_slots; ++slot)
        if ((rc = post_receive(s, slot)) != 0) return rc;
    return 0;
}

int verbs_query_memory(provider::instance* p, memory_stats* out) {
    verbs_instance* self = self_of(p);
    if (self == nullptr || out == nullptr) return -EINVAL;
    std::lock_guard lock(self->mutex);
    *out = {};
    // Message mode registers nothing per connection: sends and receives name the user's regions.
    if (!self->settings.messages)
        out->per_connection_bytes = uint64_t(self->settings.slot_size) * (self->settings.send_slots + self->settings.recv_slots);
    for (auto& [s, owned] : self->sockets)
        if (s->mr) {
            out->registered_bytes += s->mr->length;
            ++out->connections;
        }
    self->regions.for_each([&](uint64_t, vregion* r) {
        ++out->regions;
        out->region_bytes += r->length; // once, however many devices it is registered on
    });
    out->registered_bytes += out->region_bytes;
    out->sockets = self->table.size();
    return 0;
}

} // namespace sansock::verbs::detail

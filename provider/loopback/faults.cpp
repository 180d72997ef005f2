// SPDX-License-Identifier: MIT
// Loopback fault injection: freeze, drop a connection, delay completions, device down.
#include <cerrno>
#include <mutex>
#include <vector>

#include "provider/loopback/loopback_internal.hpp"

namespace sansock::loopback {

using namespace detail;

int freeze(provider::instance* self, socket_handle h, bool frozen) {
    return with_socket(self, h, [frozen](lsock* s) {
        s->frozen = frozen;
        if (!frozen && s->peer != nullptr) {
            move_bytes(s);
            if (s->peer != nullptr) move_bytes(s->peer); // the first may have reset the connection
            if (s->peer != nullptr) run_rdma(s->peer);
            run_rdma(s); // may reset the connection (a refused access)
        }
        return 0;
    });
}

int drop_connection(provider::instance* self, socket_handle h) {
    return with_socket(self, h, [](lsock* s) {
        if (s->peer == nullptr) return -ENOTCONN;
        lsock* peer = s->peer;
        s->peer = nullptr;
        peer->peer = nullptr;
        reset_socket(peer, connection_event::peer_reset, -ECONNRESET);
        reset_socket(s, connection_event::peer_reset, -ECONNRESET);
        return 0;
    });
}

int delay_completions(provider::instance* self, socket_handle h, uint32_t progress_calls) {
    return with_socket(self, h, [progress_calls](lsock* s) {
        if (!s->holding) s->owner->holding.push_back(s);
        s->holding = true;
        s->hold_countdown = progress_calls;
        return 0;
    });
}

int release_completions(provider::instance* self, socket_handle h) {
    return with_socket(self, h, [](lsock* s) {
        if (s->holding) release_held(s);
        return 0;
    });
}

int set_device_down(provider::instance* self) {
    loop_instance* inst = as_loop(self);
    if (inst == nullptr) return -EINVAL;
    std::lock_guard lock(inst->net->mutex);
    if (inst->down) return 0;
    inst->down = true;
    std::vector<lsock*> all;
    inst->table.for_each([&](uint64_t, lsock* s) { all.push_back(s); });
    for (lsock* s : all) {
        reset_peer(s);
        release_port(s);
        drop_window(s);
        s->state = sock_state::down;
        s->failure = -ENETDOWN;
        complete_all(s, s->sends, -ENETDOWN);
        complete_all(s, s->recvs, -ENETDOWN);
        complete_all(s, s->accepts, -ENETDOWN);
        complete_all(s, s->rdmas, -ENETDOWN);
        if (s->accepted) post_event(s, connection_event::device_down, -ENETDOWN);
    }
    return 0;
}

} // namespace sansock::loopback

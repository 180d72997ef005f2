// SPDX-License-Identifier: MIT
// The loopback provider: byte streams between instances of one process, with hard close.
// This file holds the instance lifecycle (create, destroy, progress) and the ops table.
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

#include "provider/loopback/loopback_internal.hpp"

namespace sansock::loopback::detail {

namespace {

int lb_create(const provider::config& settings, const provider::upcalls& calls, provider::instance** out) {
    if (out == nullptr) return -EINVAL;
    *out = nullptr;
    if (int rc = provider::check_config(settings)) return rc; // the same ranges as verbs
    auto inst = std::unique_ptr<loop_instance>(new (std::nothrow) loop_instance(settings));
    if (!inst) return -ENOMEM;
    inst->calls = calls;
    inst->event_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (inst->event_fd < 0) return -errno;
    fabric* net = static_cast<fabric*>(settings.provider_specific);
    if (net == nullptr) {
        net = create_fabric();
        if (net == nullptr) {
            ::close(inst->event_fd);
            return -ENOMEM;
        }
        inst->owns_fabric = true;
    }
    inst->net = net;
    {
        std::lock_guard lock(net->mutex);
        net->members.push_back(inst.get());
    }
    *out = as_instance(inst.release());
    return 0;
}

void lb_destroy(provider::instance* self) {
    loop_instance* inst = as_loop(self);
    if (inst == nullptr) return;
    fabric* net = inst->net;
    op_queue out;
    {
        std::unique_lock lock(net->mutex);
        // One socket at a time, found afresh (close_locked changes the table): nothing is
        // collected, so destroy needs no memory.
        for (;;) {
            lsock* next = nullptr;
            inst->table.for_each([&](uint64_t, lsock* s) {
                if (next == nullptr && s->accepted) next = s;
            });
            if (next == nullptr) break;
            close_locked(next, out, lock);
        }
        // Arrivals whose listener is gone cannot exist; anything left is freed here.
        for (;;) {
            lsock* next = nullptr;
            inst->table.for_each([&](uint64_t, lsock* s) {
                if (next == nullptr) next = s;
            });
            if (next == nullptr) break;
            reset_peer(next);
            release_port(next);
            free_socket(next);
        }
        out.splice(inst->done);
        inst->events.clear();
        free_regions(inst); // after the sockets: nothing names a region any more
        net->members.erase(std::remove(net->members.begin(), net->members.end(), inst), net->members.end());
    }
    run_completions(out);
    ::close(inst->event_fd);
    const bool owns = inst->owns_fabric;
    delete inst;
    if (owns) destroy_fabric(net);
}

// Delivers one completion or up-call, if any; returns whether it did. Called with `lock`
// held; runs the routine with it released.
bool deliver_one(loop_instance* inst, std::unique_lock<std::mutex>& lock) {
    if (operation* op = inst->done.pop()) {
        inst->delivering = op->provider_word;
        note_delivered(inst, op);
        lock.unlock();
        op->complete(*op);
    } else if (pending_event e{}; inst->events.pop(e)) {
        inst->delivering = e.socket;
        lock.unlock();
        if (inst->calls.on_connection_event != nullptr)
            inst->calls.on_connection_event(inst->calls.context, e.socket, e.event, e.status);
    } else {
        return false;
    }
    lock.lock();
    inst->delivering = 0;
    inst->delivered.notify_all();
    return true;
}

void drain_event_fd(loop_instance* inst) {
    uint64_t count;
    [[maybe_unused]] ssize_t n = ::read(inst->event_fd, &count, sizeof count);
}

int lb_progress(provider::instance* self, int timeout_ms) {
    loop_instance* inst = as_loop(self);
    if (inst == nullptr) return -EINVAL;
    using clock = std::chrono::steady_clock;
    const auto deadline = clock::now() + std::chrono::milliseconds(std::max(timeout_ms, 0));
    std::unique_lock lock(inst->net->mutex);
    if (inst->progress_busy && inst->progress_thread == std::this_thread::get_id()) return -EDEADLK;
    if (!inst->delivered.wait_until(lock, deadline, [inst] { return !inst->progress_busy; })) return 0;
    inst->progress_busy = true;
    inst->progress_thread = std::this_thread::get_id();
    // delay_completions counts progress calls.
    for (lsock* s : std::vector<lsock*>(inst->holding))
        if (s->hold_countdown > 0 && --s->hold_countdown == 0) release_held(s);
    int delivered = 0;
    for (;;) {
        lock.unlock();
        drain_event_fd(inst);
        lock.lock();
        // Only what is queued now, so routines that submit more cannot keep us here forever.
        size_t budget = inst->events.size();
        for (operation* op = inst->done.head; op != nullptr; op = op->provider_next) ++budget;
        while (budget-- > 0 && deliver_one(inst, lock)) ++delivered;
        if (delivered > 0 || inst->wake_requested.exchange(false)) break;
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count();
        if (left <= 0) break;
        lock.unlock();
        pollfd p{inst->event_fd, POLLIN, 0};
        ::poll(&p, 1, int(std::min<long long>(left, 1000 * 1000)));
        lock.lock();
    }
    inst->progress_busy = false;
    inst->progress_thread = std::thread::id();
    inst->delivered.notify_all();
    return delivered;
}

int lb_event_fd(provider::instance* self) {
    loop_instance* inst = as_loop(self);
    return inst == nullptr ? -EINVAL : inst->event_fd;
}

int lb_wake(provider::instance* self) {
    loop_instance* inst = as_loop(self);
    if (inst == nullptr) return -EINVAL;
    inst->wake_requested.store(true);
    signal(inst);
    return 0;
}

int lb_query_memory(provider::instance* self, provider::memory_stats* out) {
    loop_instance* inst = as_loop(self);
    if (inst == nullptr || out == nullptr) return -EINVAL;
    std::lock_guard lock(inst->net->mutex);
    *out = {};
    // Message mode registers nothing per connection: the switch's own regions count instead.
    out->per_connection_bytes = inst->settings.messages ? 0 :
        (uint64_t(inst->settings.send_slots) + inst->settings.recv_slots) * inst->settings.slot_size;
    inst->table.for_each([&](uint64_t, lsock* s) {
        if (s->accepted) ++out->sockets;
        if (s->ring) ++out->connections;
    });
    inst->regions.for_each([&](uint64_t, lregion* r) {
        ++out->regions;
        out->region_bytes += r->length;
    });
    out->registered_bytes = out->connections * out->per_connection_bytes + out->region_bytes;
    return 0;
}

} // namespace

} // namespace sansock::loopback::detail

// Constant-initialised, so other static initialisers may use it.
const sansock::provider::ops loopback_ops = {
    .name = "loopback",
    .create = &sansock::loopback::detail::lb_create,
    .destroy = &sansock::loopback::detail::lb_destroy,
    .socket = &sansock::loopback::detail::lb_socket,
    .bind = &sansock::loopback::detail::lb_bind,
    .listen = &sansock::loopback::detail::lb_listen,
    .accept = &sansock::loopback::detail::lb_accept,
    .connect = &sansock::loopback::detail::lb_connect,
    .send = &sansock::loopback::detail::lb_send,
    .recv = &sansock::loopback::detail::lb_recv,
    .getsockname = &sansock::loopback::detail::lb_getsockname,
    .getpeername = &sansock::loopback::detail::lb_getpeername,
    .getsockopt = &sansock::loopback::detail::lb_getsockopt,
    .setsockopt = &sansock::loopback::detail::lb_setsockopt,
    .close = &sansock::loopback::detail::lb_close,
    .progress = &sansock::loopback::detail::lb_progress,
    .event_fd = &sansock::loopback::detail::lb_event_fd,
    .wake = &sansock::loopback::detail::lb_wake,
    .query_memory = &sansock::loopback::detail::lb_query_memory,
    .register_memory = &sansock::loopback::detail::lb_register_memory,
    .deregister_memory = &sansock::loopback::detail::lb_deregister_memory,
    .memory_idle = &sansock::loopback::detail::lb_memory_idle,
    .describe_memory = &sansock::loopback::detail::lb_describe_memory,
    .rdma = &sansock::loopback::detail::lb_rdma,
};

// SPDX-License-Identifier: MIT
// The verbs provider: byte-stream sockets over RC queue pairs, credit flow control, hard close.
//
// Each connection owns one registered buffer split into send slots and receive slots, an RC
// QP and a CQ; all CQs of a device share one completion channel, and all rdma_cm ids of an
// instance one event channel, both watched by the io_uring event engine. A send is copied into
// send slots (split when larger than a slot) and posted as SEND_WITH_IMM; the immediate data
// returns credits (receives reposted since the last message), so a sender only ever consumes
// receives its peer has posted and never provokes receiver-not-ready retries. In message mode
// (config::messages, verbs_messages.cpp) there is no buffer or credit: a send is one SEND of
// the user's registered memory, a recv one posted receive of it.
//
// This file: the ops table, the instance (create, destroy), socket creation and options.
#include "provider/verbs/verbs_provider.hpp"

#include <fcntl.h>

#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "provider/verbs/verbs_call.hpp"
#include "provider/verbs/verbs_internal.hpp"

namespace sansock::verbs {
namespace detail {

const char* describe(int code) {
    const char* text = strerrordesc_np(code < 0 ? -code : code);
    return text != nullptr ? text : "unknown error";
}

// A message for the context's log (upcalls::log), formatted on the stack: callable on any
// failure path, with the instance lock held.
[[gnu::format(printf, 3, 4)]] void log(const verbs_instance& self, provider::log_level level, const char* format, ...) {
    char message[320];
    va_list args;
    va_start(args, format);
    std::vsnprintf(message, sizeof message, format, args);
    va_end(args);
    if (self.calls.log != nullptr) self.calls.log(self.calls.context, level, message);
    else std::fprintf(stderr, "sansock: %s\n", message);
}

// --- helpers, called with the instance mutex held --------------------------------------------

int validate_op(const operation* op, operation_kind kind) {
    if (op == nullptr || op->complete == nullptr || op->kind != kind) return -EINVAL;
    if ((kind == operation_kind::send || kind == operation_kind::recv) && (op->buffer == nullptr || op->length == 0))
        return -EINVAL;
    return 0;
}

// An entry for `s` in the socket list, its owner still empty (the caller moves it in), made
// before anything that cannot be undone: 0 or -ENOMEM.
int reserve_socket(verbs_instance& self, vsocket* s, socket_list::iterator* out) noexcept {
    try {
        *out = self.sockets.emplace(s, nullptr).first;
        return 0;
    } catch (const std::bad_alloc&) {
        return -ENOMEM;
    }
}

// O_NONBLOCK on a channel's descriptor, for the event engine; 0 or a negated errno.
int set_nonblocking(int fd) {
    const int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) return -errno;
    return 0;
}

// --- the ops ------------------------------------------------------------------------------

int verbs_create(const config& settings, const upcalls& calls, provider::instance** out) try {
    if (out == nullptr) return -EINVAL;
    if (int rc = provider::check_config(settings)) return rc; // the same ranges as loopback
    auto self = std::make_unique<verbs_instance>(settings, calls);
    if (int rc = event_engine::create(self->engine)) return rc;
    self->events.reset(rdma_create_event_channel());
    if (int rc = checked_pointer(self->events.get())) return rc == -ENOENT || rc == -ENODEV ? -ENETDOWN : rc;
    if (int rc = set_nonblocking(self->events->fd)) return rc;
    if (int rc = self->engine->watch(self->events->fd, on_cm_events, self.get(), &self->events_watch)) return rc;
    *out = reinterpret_cast<provider::instance*>(self.release());
    return 0;
} catch (const std::bad_alloc&) {
    return -ENOMEM; // what was made is freed by its owners
}

// Needs no memory (docs/semantics.md, "Out of memory"): the handles are removed through the
// socket list, what is cancelled or finished is linked through the operations, and the
// owners' destructors only call rdma-core's destroys (which free; none allocates).
void verbs_destroy(provider::instance* p) {
    verbs_instance* self = self_of(p);
    if (self == nullptr) return;
    op_queue cancelled;
    op_queue posted_rdma; // complete once their QPs are destroyed: none can move memory then
    {
        std::lock_guard lock(self->mutex);
        for (auto& [s, owned] : self->sockets) {
            if (s->handle != invalid_socket) self->table.remove(s->handle);
            take_pending(*s, cancelled);
            if (s->state != socket_state::closed) take_posted_rdma(*s, posted_rdma); // a closed one's close took them
            stop_connection(*s);
        }
        for (operation* op = cancelled.front(); op != nullptr; op = op->provider_next) op->result = -ECANCELED;
        while (operation* op = self->done.pop()) cancelled.push(op); // finished: their results stay
        self->signals = 0;
        self->engine->unwatch(self->events_watch);
        for (auto& [context, device] : self->devices) self->engine->unwatch(device->watch);
    }
    while (operation* op = cancelled.pop()) op->complete(*op);
    self->sockets.clear();
    free_regions(*self); // before the PDs they were registered in
    self->devices.clear();
    while (operation* op = posted_rdma.pop()) {
        op->result = -ECANCELED;
        op->complete(*op);
    }
    delete self;
}

// Everything a socket needs for its hard close is made here (the vsocket and its place in the
// socket list), before the handle is handed out: -ENOMEM instead of a close that needs memory.
int verbs_socket(provider::instance* p, socket_handle* out) {
    verbs_instance* self = self_of(p);
    if (self == nullptr || out == nullptr) return -EINVAL;
    std::lock_guard lock(self->mutex);
    std::unique_ptr<vsocket> owned(new (std::nothrow) vsocket(&self->destroy_logging));
    if (!owned) return -ENOMEM;
    rdma_cm_id* id = nullptr;
    if (int rc = checked(rdma_create_id(self->events.get(), &id, owned.get(), RDMA_PS_TCP))) return rc;
    owned->id.reset(id);
    vsocket* s = owned.get();
    socket_list::iterator kept;
    if (int rc = reserve_socket(*self, s, &kept)) return rc;
    const socket_handle handle = self->table.insert(s); // 0 when full, or without memory
    if (handle == invalid_socket) {
        self->sockets.erase(kept);
        return self->table.size() >= self->settings.max_sockets ? -EMFILE : -ENOMEM;
    }
    kept->second = std::move(owned);
    s->handle = handle;
    *out = handle;
    return 0;
}

int verbs_getsockopt(provider::instance* p, socket_handle h, int level, int name, void* value, socklen_t* length) {
    verbs_instance* self = self_of(p);
    std::lock_guard lock(self->mutex);
    vsocket* s = find(*self, h);
    if (s == nullptr) return -ENOTSOCK;
    if (value == nullptr || length == nullptr || *length < static_cast<socklen_t>(sizeof(int))) return -EINVAL;
    if (level != SOL_SOCKET) return -ENOPROTOOPT;
    int result;
    switch (name) {
    case SO_TYPE: result = SOCK_STREAM; break;
    case SO_SNDBUF: result = static_cast<int>(self->settings.slot_size * self->settings.send_slots); break;
    case SO_RCVBUF: result = static_cast<int>(self->settings.slot_size * self->settings.recv_slots); break;
    case SO_ERROR: result = -s->failure; break;
    default: return -ENOPROTOOPT;
    }
    std::memcpy(value, &result, sizeof result);
    *length = sizeof result;
    return 0;
}

int verbs_setsockopt(provider::instance* p, socket_handle h, int level, int name, const void* value, socklen_t length) {
    verbs_instance* self = self_of(p);
    std::lock_guard lock(self->mutex);
    vsocket* s = find(*self, h);
    if (s == nullptr) return -ENOTSOCK;
    // Only IPV6_V6ONLY, before bind (as Linux); buffer sizes are per instance (config).
    if (level != IPPROTO_IPV6 || name != IPV6_V6ONLY) return -ENOPROTOOPT;
    if (value == nullptr || length < static_cast<socklen_t>(sizeof(int))) return -EINVAL;
    if (s->state != socket_state::fresh) return -EINVAL;
    int v = 0;
    std::memcpy(&v, value, sizeof v);
    s->v6only = v != 0;
    return 0;
}

} // namespace detail

// Every entry is set, so the table is constant-initialised (nothing runs when the library is
// loaded); users apply provider::with_defaults like for any provider's table.
constinit const provider::ops verbs_ops = {
    .name = "verbs",
    .create = detail::verbs_create,
    .destroy = detail::verbs_destroy,
    .socket = detail::verbs_socket,
    .bind = detail::verbs_bind,
    .listen = detail::verbs_listen,
    .accept = detail::verbs_accept,
    .connect = detail::verbs_connect,
    .send = detail::verbs_send,
    .recv = detail::verbs_recv,
    .getsockname = detail::verbs_getsockname,
    .getpeername = detail::verbs_getpeername,
    .getsockopt = detail::verbs_getsockopt,
    .setsockopt = detail::verbs_setsockopt,
    .close = detail::verbs_close,
    .progress = detail::verbs_progress,
    .progress_socket = detail::verbs_progress_socket,
    .event_fd = detail::verbs_event_fd,
    .wake = detail::verbs_wake,
    .query_memory = detail::verbs_query_memory,
    .register_memory = detail::verbs_register_memory,
    .deregister_memory = detail::verbs_deregister_memory,
    .memory_idle = detail::verbs_memory_idle,
    .describe_memory = detail::verbs_describe_memory,
    .rdma = detail::verbs_rdma,
};

} // namespace sansock::verbs

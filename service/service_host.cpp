// SPDX-License-Identifier: MIT
// Service hosts (docs/service.md, host table): a listener per endpoint, accepted channels
// handed to the application, close that waits for each client to end its session.
#include <cstring>
#include <memory>
#include <new>
#include <utility>

#include "service/service_internal.hpp"

using namespace sansock::svc;

namespace sansock::svc {

namespace {

bool all_closed(const sansock_service_host& h) {
    for (const auto& ep : h.endpoints)
        if (ep.accepting != nullptr) return false;
    for (const sansock_channel* c : h.channels)
        if (c->state != SANSOCK_CHANNEL_CLOSED && c->state != SANSOCK_CHANNEL_CREATED) return false;
    return true;
}

void on_host_timer(timer& t) {
    auto& h = *static_cast<sansock_service_host*>(t.owner);
    if (h.state != SANSOCK_HOST_CLOSING) return;
    h.close_result = -ETIMEDOUT;
    for (sansock_channel* c : h.channels) channel_force_hard(*c, -ETIMEDOUT);
}

void on_accepted(completion& done, int result);

// Accepts the next channel on endpoint i (lock held; allocates).
void start_accept(sansock_service_host& h, size_t i) {
    auto& ep = h.endpoints[i];
    if (ep.listener == nullptr || ep.accepting != nullptr || ep.spare != nullptr) return;
    sansock_channel* c = nullptr;
    try {
        c = channel_new(*h.engine, h.ctx, ep.kind);
        h.channels.reserve(h.channels.size() + 1); // so that on_accepted need not allocate
    } catch (const std::bad_alloc&) {
        delete c;
        return;
    }
    c->host = &h;
    c->endpoint = i;
    c->accept_done.internal = on_accepted;
    c->accept_done.internal_owner = c;
    ep.accepting = c;
    const int rc = listener_accept_locked(*ep.listener, *c, nullptr);
    if (rc != -EINPROGRESS) { // refused at once (the listener faulted): keep it to free later
        ep.accepting = nullptr;
        ep.spare = c;
    }
}

// A host channel's accept finished (lock held; the failure path does not allocate, as it
// runs inside listener abort).
void on_accepted(completion& done, int result) {
    auto* c = static_cast<sansock_channel*>(done.internal_owner);
    auto& h = *c->host;
    auto& ep = h.endpoints[c->endpoint];
    ep.accepting = nullptr;
    if (result != 0) {
        ep.spare = c;
        host_channel_changed(h);
        return;
    }
    h.channels.push_back(c); // capacity reserved in start_accept
    switch (h.state) {
    case SANSOCK_HOST_OPEN:
        post_callback(*h.engine, c->deliver);
        start_accept(h, c->endpoint);
        break;
    case SANSOCK_HOST_CLOSING: channel_start_close(*c, false, std::nullopt); break;
    default: channel_abort_locked(*c); break;
    }
    host_channel_changed(h);
}

// Frees the listeners and channels of the last open (lock held, dropped meanwhile).
void release_parts(sansock_service_host& h, lock_t& lock) {
    // Nothing is collected (no memory needed): the host is CREATED or CLOSED, so nobody else
    // changes its endpoints meanwhile.
    std::vector<sansock_channel*> channels = std::move(h.channels);
    h.channels.clear();
    for (sansock_channel* c : channels) channel_delete(c, lock);
    for (auto& ep : h.endpoints) {
        if (sansock_channel* spare = std::exchange(ep.spare, nullptr)) channel_delete(spare, lock);
        if (sansock_listener* l = std::exchange(ep.listener, nullptr)) {
            lock.unlock();
            sansock_listener_close(l, nullptr); // CLOSED already; harmless
            sansock_listener_free(l);
            lock.lock();
        }
    }
}

int validate_endpoint(const sansock_service_endpoint& e) {
    if (int rc = sansock::address::validate(e.address, e.address_length)) return rc;
    if (e.kind != SANSOCK_CHANNEL_SESSION && e.kind != SANSOCK_CHANNEL_NONSESSION) return -EINVAL;
    return 0;
}

} // namespace

void host_channel_changed(sansock_service_host& h) {
    if (h.state != SANSOCK_HOST_CLOSING || h.close_in_call || !all_closed(h)) return;
    disarm_timer(*h.engine, h.close_timer);
    h.state = SANSOCK_HOST_CLOSED;
    finish(*h.engine, h.close_done, h.close_result);
}

} // namespace sansock::svc

extern "C" int sansock_service_host_create(sansock_context* ctx, const struct sansock_service_endpoint* endpoints,
                                           size_t count, const struct sansock_service_host_attr* attr,
                                           sansock_service_host** out) try {
    if (ctx == nullptr || endpoints == nullptr || count == 0 || attr == nullptr || out == nullptr) return -EINVAL;
    if (attr->size < sizeof(sansock_service_host_attr) || attr->on_channel == nullptr) return -EINVAL;
    for (size_t i = 0; i < count; ++i)
        if (int rc = validate_endpoint(endpoints[i])) return rc;
    if (!has_progress_thread(ctx)) return -EINVAL;
    service_engine* e = nullptr;
    if (int rc = engine_acquire(ctx, &e)) return rc;
    try {
        auto h = std::make_unique<sansock_service_host>();
        h->ctx = ctx;
        h->engine = e;
        h->close_timeout_ms = attr->close_timeout_ms;
        h->on_channel = attr->on_channel;
        h->user_state = attr->state;
        h->endpoints.resize(count);
        for (size_t i = 0; i < count; ++i) {
            take_address(endpoints[i].address, endpoints[i].address_length, &h->endpoints[i].address); // checked above
            h->endpoints[i].kind = static_cast<sansock_channel_kind>(endpoints[i].kind);
        }
        h->close_timer.fire = on_host_timer;
        h->close_timer.owner = h.get();
        *out = h.release();
        return 0;
    } catch (const std::bad_alloc&) {
        engine_release(ctx);
        return -ENOMEM;
    }
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_service_host_open(sansock_service_host* h, const struct sansock_async_context* async) try {
    if (h == nullptr || (async != nullptr && async->callback == nullptr)) return -EINVAL;
    lock_t lock(h->engine->mutex);
    if (h->state != SANSOCK_HOST_CREATED) return -EBADFD;
    // Allocated before the state changes: -ENOMEM leaves the host CREATED.
    std::vector<sansock_listener*> opened(h->endpoints.size(), nullptr);
    std::vector<sansock::socket_address> bound(h->endpoints.size());
    h->state = SANSOCK_HOST_OPENING;
    h->abort_requested = false;
    h->engine->changed.notify_all();
    lock.unlock();

    // Every listener opens before any channel is accepted.
    int rc = 0;
    for (size_t i = 0; i < h->endpoints.size() && rc == 0; ++i) {
        rc = sansock_listener_create(h->ctx, nullptr, &opened[i]);
        if (rc == 0)
            rc = sansock_listener_open(opened[i], &h->endpoints[i].address.sa,
                                       sansock::address::size_of(h->endpoints[i].address.sa.sa_family), nullptr);
        if (rc == 0) {
            socklen_t n = sizeof bound[i];
            rc = sansock_listener_address(opened[i], &bound[i].sa, &n);
        }
    }
    lock.lock();
    if (rc == 0 && h->abort_requested) rc = -ECANCELED;
    if (rc != 0) {
        lock.unlock();
        for (sansock_listener* l : opened)
            if (l != nullptr) {
                sansock_listener_close(l, nullptr);
                sansock_listener_free(l);
            }
        lock.lock();
        h->state = SANSOCK_HOST_CREATED;
        h->abort_requested = false;
        h->engine->changed.notify_all();
        return rc;
    }
    for (size_t i = 0; i < h->endpoints.size(); ++i) {
        h->endpoints[i].listener = opened[i];
        h->endpoints[i].bound = bound[i];
        h->endpoints[i].bound_known = true;
    }
    h->state = SANSOCK_HOST_OPEN;
    for (size_t i = 0; i < h->endpoints.size(); ++i) start_accept(*h, i);
    h->engine->changed.notify_all();
    return 0;
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_service_host_close(sansock_service_host* h, const struct sansock_async_context* async) try {
    if (h == nullptr || (async != nullptr && async->callback == nullptr)) return -EINVAL;
    lock_t lock(h->engine->mutex);
    switch (h->state) {
    case SANSOCK_HOST_CREATED:
        h->state = SANSOCK_HOST_CLOSED;
        h->engine->changed.notify_all();
        return 0;
    case SANSOCK_HOST_CLOSED: return 0;
    case SANSOCK_HOST_OPENING:
    case SANSOCK_HOST_CLOSING: return -EBADFD;
    case SANSOCK_HOST_OPEN:
    case SANSOCK_HOST_FAULTED: break;
    }
    h->state = SANSOCK_HOST_CLOSING;
    h->close_result = 0;
    h->close_in_call = true;
    begin(h->close_done, async);
    if (h->close_timeout_ms != 0)
        arm_timer(*h->engine, h->close_timer, clock::now() + std::chrono::milliseconds(h->close_timeout_ms));
    // The listeners first: no new channel; their pending accepts fail -ECANCELED.
    // Not collected (no memory needed): the listeners stay while the host is CLOSING.
    lock.unlock();
    for (auto& ep : h->endpoints)
        if (ep.listener != nullptr) sansock_listener_close(ep.listener, nullptr);
    lock.lock();
    // Then every accepted channel, gracefully; session channels finish when their client ends
    // the session (the host's timer bounds them all).
    for (sansock_channel* c : h->channels) {
        if (c->state == SANSOCK_CHANNEL_OPEN || c->state == SANSOCK_CHANNEL_FAULTED) channel_start_close(*c, false, std::nullopt);
        if (h->close_result != 0) channel_force_hard(*c, h->close_result);
    }
    h->close_in_call = false;
    if (all_closed(*h)) {
        disarm_timer(*h->engine, h->close_timer);
        h->state = SANSOCK_HOST_CLOSED;
        h->engine->changed.notify_all();
        return finish_at_once(h->close_done, h->close_result);
    }
    return wait_or_async(*h->engine, h->close_done, lock);
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_service_host_abort(sansock_service_host* h) try {
    if (h == nullptr) return -EINVAL;
    lock_t lock(h->engine->mutex);
    switch (h->state) {
    case SANSOCK_HOST_CREATED:
    case SANSOCK_HOST_CLOSED:
    case SANSOCK_HOST_FAULTED: break;
    case SANSOCK_HOST_OPENING: h->abort_requested = true; break;
    case SANSOCK_HOST_OPEN:
        h->state = SANSOCK_HOST_FAULTED;
        for (auto& ep : h->endpoints)
            if (ep.listener != nullptr) listener_abort_locked(*ep.listener);
        for (sansock_channel* c : h->channels) channel_abort_locked(*c);
        break;
    case SANSOCK_HOST_CLOSING:
        h->close_result = -ECANCELED;
        for (auto& ep : h->endpoints)
            if (ep.listener != nullptr) listener_abort_locked(*ep.listener);
        for (sansock_channel* c : h->channels) channel_abort_locked(*c);
        host_channel_changed(*h);
        break;
    }
    h->engine->changed.notify_all();
    return 0;
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_service_host_reset(sansock_service_host* h) try {
    if (h == nullptr) return -EINVAL;
    lock_t lock(h->engine->mutex);
    switch (h->state) {
    case SANSOCK_HOST_CREATED: return 0;
    case SANSOCK_HOST_CLOSED:
        release_parts(*h, lock);
        h->state = SANSOCK_HOST_CREATED;
        h->close_result = 0;
        for (auto& ep : h->endpoints) ep.bound_known = false;
        h->engine->changed.notify_all();
        return 0;
    default: return -EBADFD;
    }
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_service_host_free(sansock_service_host* h) try {
    if (h == nullptr) return -EINVAL;
    lock_t lock(h->engine->mutex);
    if (h->state != SANSOCK_HOST_CREATED && h->state != SANSOCK_HOST_CLOSED) return -EBADFD;
    release_parts(*h, lock);
    h->engine->changed.wait(lock, [&] { return task_idle(h->close_done.deliver) && !h->close_timer.armed; });
    lock.unlock();
    sansock_context* ctx = h->ctx;
    delete h;
    engine_release(ctx);
    return 0;
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_service_host_get_state(sansock_service_host* h) try {
    if (h == nullptr) return -EINVAL;
    lock_t lock(h->engine->mutex);
    return static_cast<int>(h->state);
} catch (...) {
    return sansock::c_error();
}

extern "C" int sansock_service_host_endpoint_address(sansock_service_host* h, size_t endpoint, struct sockaddr* address,
                                                     socklen_t* length) try {
    if (h == nullptr || address == nullptr || length == nullptr) return -EINVAL;
    lock_t lock(h->engine->mutex);
    if (endpoint >= h->endpoints.size()) return -EINVAL;
    if (!h->endpoints[endpoint].bound_known) return -EBADFD;
    return give_address(h->endpoints[endpoint].bound, address, length);
} catch (...) {
    return sansock::c_error();
}

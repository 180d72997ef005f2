// SPDX-License-Identifier: MIT
// The public poll call: readiness of many sockets of one context.
#include "switch/api_internal.hpp"

using namespace sansock;
using namespace sansock::sw;
using namespace sansock::sw::api;

// Also what a socket's descriptor shows (switch/socket_fd.cpp).
short sansock::sw::readiness(const stream_socket& s) {
    short events = 0;
    switch (s.state) {
    case socket_state::listening:
        if (!s.ready.empty()) events |= SANSOCK_POLLIN;
        break;
    case socket_state::connected:
        if (s.received_bytes > 0 || s.session.fin_received || s.shut_read) events |= SANSOCK_POLLIN;
        if (!s.shut_write && s.send_queued < s.send_buffer_limit) events |= SANSOCK_POLLOUT;
        if (s.session.fin_received && s.shut_write) events |= SANSOCK_POLLHUP;
        break;
    case socket_state::failed:
        events |= SANSOCK_POLLERR | SANSOCK_POLLHUP | SANSOCK_POLLIN;
        break;
    default: break;
    }
    if (s.pending_error != 0) events |= SANSOCK_POLLERR;
    return events;
}

extern "C" int sansock_poll(struct sansock_pollfd* fds, size_t count, int timeout_ms) try {
    if (fds == nullptr || count == 0) return -EINVAL;
    socket_call lock;
    stream_socket* first = nullptr;
    for (size_t i = 0; i < count && first == nullptr; ++i) first = lock_socket(fds[i].socket, lock);
    if (first == nullptr) {
        for (size_t i = 0; i < count; ++i) fds[i].revents = SANSOCK_POLLNVAL;
        return static_cast<int>(count);
    }
    context& ctx = *first->ctx;
    int ready_count = 0;
    auto scan = [&] {
        ready_count = 0;
        for (size_t i = 0; i < count; ++i) {
            stream_socket* s = find_registered(fds[i].socket);
            if (s != nullptr && s->ctx != &ctx) return false;
            const short mask = fds[i].events | SANSOCK_POLLERR | SANSOCK_POLLHUP | SANSOCK_POLLNVAL;
            fds[i].revents = s == nullptr ? SANSOCK_POLLNVAL : static_cast<short>(readiness(*s) & mask);
            if (fds[i].revents != 0) ++ready_count;
        }
        return ready_count > 0;
    };
    for (size_t i = 0; i < count; ++i) {
        stream_socket* s = find_registered(fds[i].socket);
        if (s != nullptr && s->ctx != &ctx) return -EINVAL;
    }
    for (size_t i = 0; i < count; ++i)
        if (stream_socket* s = find_registered(fds[i].socket)) arm_notifications(*s); // poll sleeps on progress
    std::optional<time_point> deadline;
    if (timeout_ms >= 0) deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    wait_until(ctx, lock, scan, deadline);
    return ready_count;
} catch (...) {
    return sansock::c_error();
}

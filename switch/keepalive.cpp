// SPDX-License-Identifier: MIT
// Dead-peer detection, the options and the context's defaults: SO_KEEPALIVE (SOL_SOCKET) and
// TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT (IPPROTO_TCP), as on Linux. The probes themselves
// are the session protocol's KEEPALIVE (switch/stream_socket.cpp, docs/protocol.md 2.3).
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <cstring>

#include "switch/switch_internal.hpp"

namespace sansock::sw {

namespace {
// Linux's limits (MAX_TCP_KEEPIDLE, MAX_TCP_KEEPINTVL, MAX_TCP_KEEPCNT).
constexpr uint32_t max_idle_s = 32767, max_interval_s = 32767, max_count = 127;
} // namespace

int resolve_keepalive_attributes(sansock_context_attr& attr) {
    sansock_context_attr defaults;
    sansock_context_attr_init(&defaults);
    if (attr.keepalive == SANSOCK_KEEPALIVE_DEFAULT) attr.keepalive = defaults.keepalive;
    if (attr.keepalive_idle_s == 0) attr.keepalive_idle_s = defaults.keepalive_idle_s;
    if (attr.keepalive_interval_s == 0) attr.keepalive_interval_s = defaults.keepalive_interval_s;
    if (attr.keepalive_count == 0) attr.keepalive_count = defaults.keepalive_count;
    if (attr.keepalive > SANSOCK_KEEPALIVE_OFF || attr.keepalive_idle_s > max_idle_s ||
        attr.keepalive_interval_s > max_interval_s || attr.keepalive_count > max_count)
        return -EINVAL;
    return 0;
}

keepalive_settings keepalive_of(const stream_socket& s) {
    const sansock_context_attr& attr = s.ctx->attr;
    keepalive_settings k;
    k.on = s.keepalive >= 0 ? s.keepalive != 0 : attr.keepalive == SANSOCK_KEEPALIVE_ON;
    k.idle_s = s.keepalive_idle_s != 0 ? s.keepalive_idle_s : attr.keepalive_idle_s;
    k.interval_s = s.keepalive_interval_s != 0 ? s.keepalive_interval_s : attr.keepalive_interval_s;
    k.count = s.keepalive_count != 0 ? s.keepalive_count : attr.keepalive_count;
    return k;
}

int set_keepalive_option(stream_socket& s, int level, int name, const void* value, socklen_t length) {
    const bool ours = (level == SOL_SOCKET && name == SO_KEEPALIVE) ||
                      (level == IPPROTO_TCP && (name == TCP_KEEPIDLE || name == TCP_KEEPINTVL || name == TCP_KEEPCNT));
    if (!ours) return not_a_keepalive_option;
    if (length < static_cast<socklen_t>(sizeof(int))) return -EINVAL;
    int v = 0;
    std::memcpy(&v, value, sizeof v);
    switch (name) {
    case SO_KEEPALIVE: {
        const bool was_on = keepalive_of(s).on;
        s.keepalive = v != 0 ? 1 : 0;
        // Turned on: silence counts from now. Turned off: no probe is owed.
        if (!was_on && v != 0) s.heard_from = s.ctx->now();
        if (!was_on || v == 0) s.probes_unanswered = 0;
        return 0;
    }
    case TCP_KEEPIDLE:
        if (v < 1 || uint32_t(v) > max_idle_s) return -EINVAL;
        s.keepalive_idle_s = static_cast<uint16_t>(v);
        return 0;
    case TCP_KEEPINTVL:
        if (v < 1 || uint32_t(v) > max_interval_s) return -EINVAL;
        s.keepalive_interval_s = static_cast<uint16_t>(v);
        return 0;
    default: // TCP_KEEPCNT
        if (v < 1 || uint32_t(v) > max_count) return -EINVAL;
        s.keepalive_count = static_cast<uint8_t>(v);
        return 0;
    }
}

int get_keepalive_option(const stream_socket& s, int level, int name, void* value, socklen_t* length) {
    const bool ours = (level == SOL_SOCKET && name == SO_KEEPALIVE) ||
                      (level == IPPROTO_TCP && (name == TCP_KEEPIDLE || name == TCP_KEEPINTVL || name == TCP_KEEPCNT));
    if (!ours) return not_a_keepalive_option;
    if (*length < static_cast<socklen_t>(sizeof(int))) return -EINVAL;
    const keepalive_settings k = keepalive_of(s);
    int v = 0;
    switch (name) {
    case SO_KEEPALIVE: v = k.on ? 1 : 0; break;
    case TCP_KEEPIDLE: v = int(k.idle_s); break;
    case TCP_KEEPINTVL: v = int(k.interval_s); break;
    default: v = int(k.count); break;
    }
    std::memcpy(value, &v, sizeof v);
    *length = sizeof v;
    return 0;
}

} // namespace sansock::sw

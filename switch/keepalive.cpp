// SPDX-License-Identifier: MIT
// Dead-peer detection, the options and the context's defaults: SO_KEEPALIVE (SOL_SOCKET) and
// TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT (IPPROTO_TCP), as on Linux; the probes (the
// session protocol's KEEPALIVE, docs/protocol.md 2.3) and the context's timers (keepalive and
// the graceful time-out, check_timers).
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <cstdio>
#include <cstring>
#include <utility>
#include <vector>

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

namespace {

// Keepalive (docs/semantics.md, "Keepalive"): after `idle` seconds with nothing received, a
// probe; one more every `interval` seconds while nothing comes; dead once `idle + count x
// interval` seconds have passed without a byte from the peer, the probes unanswered. Measured
// from the last bytes received, so a late check sends one probe for those it missed and the
// connection ends on time whatever the checks' rhythm.
struct keepalive_due {
    enum { none, probe, dead } what = none;
    uint32_t probes = 0; // probes that should have gone by now
};

keepalive_due keepalive_check(const stream_socket& s, time_point now) {
    // Both FINs exchanged: nothing is left to wait for on either side (the close that follows
    // has its own time-out).
    if (s.state != socket_state::connected || s.ps == 0 || (s.session.fin_sent && s.session.fin_received)) return {};
    const keepalive_settings k = keepalive_of(s);
    if (!k.on) return {};
    const auto silent = now - s.heard_from;
    const auto idle = std::chrono::seconds(k.idle_s), interval = std::chrono::seconds(k.interval_s);
    if (silent < idle) return {};
    if (silent >= idle + interval * k.count) return {keepalive_due::dead, k.count};
    const auto probes = static_cast<uint32_t>(1 + (silent - idle) / interval);
    if (probes <= s.probes_unanswered) return {};
    return {keepalive_due::probe, probes};
}

void send_probe(stream_socket& s, uint32_t probes) {
    s.probes_unanswered = probes;
    // Our HELLO went first, so the peer may be probed before its own HELLO has come.
    if (int rc = send_control(s, session::message_type::keepalive, session::keepalive_probe)) {
        // Refused: the provider has lost the connection. (Out of memory: this probe is lost;
        // the next goes on time, and the end comes on time in any case.)
        if (rc != -ENOMEM) on_reset(s, rc == -ENETDOWN ? rc : -ECONNRESET);
        return;
    }
    ++s.session.probes_outstanding;
    ++s.probes_sent;
}

// The peer answered none of the probes: the connection is dead (as TCP, it is reset).
void keepalive_expired(stream_socket& s) {
    const keepalive_settings k = keepalive_of(s);
    char detail[160];
    std::snprintf(detail, sizeof detail,
                  "nothing received for %u s, %u probes %u s apart unanswered", k.idle_s + k.count * k.interval_s,
                  s.probes_unanswered, k.interval_s);
    report_reset(s, true, SANSOCK_RESET_KEEPALIVE_TIMEOUT, detail);
    if (s.closing) s.finished = true;
    fail_socket(s, -ETIMEDOUT);
    hard_close(s);
}

} // namespace

void check_timers(context& ctx) {
    const time_point now = ctx.now();
    std::vector<stream_socket*> expired;
    std::vector<std::pair<stream_socket*, keepalive_due>> silent;
    for (auto& [s, owned] : ctx.sockets) {
        if (s->closing && !s->finished && s->ps != 0 && now >= s->graceful_deadline) expired.push_back(s);
        else if (const keepalive_due due = keepalive_check(*s, now); due.what != keepalive_due::none)
            silent.emplace_back(s, due);
    }
    for (auto& [s, due] : silent) {
        if (due.what == keepalive_due::probe) send_probe(*s, due.probes);
        else keepalive_expired(*s);
        maybe_free(*s);
    }
    for (stream_socket* s : expired) {
        char detail[64];
        std::snprintf(detail, sizeof detail, "not finished within %u ms", ctx.attr.graceful_timeout_ms);
        report_reset(*s, true, SANSOCK_RESET_GRACEFUL_TIMEOUT, detail);
        ++ctx.stats.graceful_timed_out;
        s->finished = true;
        fail_socket(*s, -ETIMEDOUT);
        hard_close(*s);
        maybe_free(*s);
    }
}

} // namespace sansock::sw

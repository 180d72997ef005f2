// SPDX-License-Identifier: MIT
// The context's log: attr.log_level (0: SANSOCK_LOG), attr.log (NULL: standard error) and the
// reset messages. Nothing is kept: every message is formatted into a buffer on the stack and
// handed on at once, so logging never allocates, also on the failure paths that log.
#include <arpa/inet.h>
#include <strings.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "switch/switch_internal.hpp"

namespace sansock::sw {

static_assert(int(provider::log_level::error) == SANSOCK_LOG_ERROR && int(provider::log_level::warn) == SANSOCK_LOG_WARN &&
              int(provider::log_level::info) == SANSOCK_LOG_INFO && int(provider::log_level::debug) == SANSOCK_LOG_DEBUG);

namespace {

constexpr char prefix[] = "sansock: ";
constexpr size_t line_size = 512; // prefix, message, newline

// The attribute sink: the line goes to attr.log, or to stderr in one write.
void emit(const sansock_context_attr& attr, int level, const char* format, va_list args) noexcept {
    char line[line_size];
    constexpr size_t start = sizeof prefix - 1;
    std::memcpy(line, prefix, start);
    const int n = std::vsnprintf(line + start, sizeof line - start - 1, format, args); // room for '\n'
    if (n < 0) return;
    const size_t length = start + std::min<size_t>(size_t(n), sizeof line - start - 2);
    if (attr.log != nullptr) {
        attr.log(attr.log_user, level, line + start);
        return;
    }
    line[length] = '\n';
    std::fwrite(line, 1, length + 1, stderr);
}

[[gnu::format(printf, 3, 4)]] void log_to(const sansock_context_attr& attr, int level, const char* format, ...) noexcept {
    va_list args;
    va_start(args, format);
    emit(attr, level, format, args);
    va_end(args);
}

// The level SANSOCK_LOG names, 0 if it is unset or empty, -1 if it names none.
int environment_level(const char* value) {
    if (value == nullptr || *value == '\0') return 0;
    static constexpr struct {
        const char* name;
        int level;
    } names[] = {{"off", SANSOCK_LOG_OFF},   {"error", SANSOCK_LOG_ERROR}, {"warn", SANSOCK_LOG_WARN},
                 {"info", SANSOCK_LOG_INFO}, {"debug", SANSOCK_LOG_DEBUG}};
    for (const auto& n : names)
        if (strcasecmp(value, n.name) == 0) return n.level;
    return -1;
}

const char* reason_name(sansock_reset_reason reason) {
    switch (reason) {
    case SANSOCK_RESET_ABORTIVE_CLOSE: return "abortive close";
    case SANSOCK_RESET_LINGER_TIMEOUT: return "linger time-out";
    case SANSOCK_RESET_GRACEFUL_TIMEOUT: return "graceful disconnect time-out";
    case SANSOCK_RESET_PROTOCOL_ERROR: return "protocol error by the peer";
    case SANSOCK_RESET_CONTEXT_DESTROY: return "context destroyed";
    case SANSOCK_RESET_PEER: return "the peer reset the connection";
    case SANSOCK_RESET_NETWORK_DOWN: return "the network device went away";
    case SANSOCK_RESET_KEEPALIVE_TIMEOUT: return "keepalive time-out, the peer is dead";
    default: return "unknown reason";
    }
}

// Protocol violations by the peer warn; resets from the peer and time-outs are connection
// events (info); a device failure is an error; the user's own resets are routine (debug).
int reason_level(sansock_reset_reason reason) {
    switch (reason) {
    case SANSOCK_RESET_PROTOCOL_ERROR: return SANSOCK_LOG_WARN;
    case SANSOCK_RESET_NETWORK_DOWN: return SANSOCK_LOG_ERROR;
    case SANSOCK_RESET_LINGER_TIMEOUT:
    case SANSOCK_RESET_GRACEFUL_TIMEOUT:
    case SANSOCK_RESET_KEEPALIVE_TIMEOUT:
    case SANSOCK_RESET_PEER: return SANSOCK_LOG_INFO;
    default: return SANSOCK_LOG_DEBUG;
    }
}

} // namespace

int resolve_log_attributes(sansock_context_attr& attr) {
    if (attr.log_level > SANSOCK_LOG_DEBUG || attr.reserved0 != 0) return -EINVAL;
    if (attr.log_level != SANSOCK_LOG_DEFAULT) return 0;
    const char* value = std::getenv("SANSOCK_LOG");
    const int level = environment_level(value);
    attr.log_level = level > 0 ? uint32_t(level) : uint32_t(SANSOCK_LOG_WARN);
    // Not silently ignored: said once per context created, through the context's own sink.
    if (level < 0)
        log_to(attr, SANSOCK_LOG_WARN, "SANSOCK_LOG=%.64s is not one of off, error, warn, info, debug: using warn", value);
    return 0;
}

bool log_enabled(const context& ctx, int level) {
    return level >= SANSOCK_LOG_ERROR && level <= int(ctx.attr.log_level);
}

void log_message(const context& ctx, int level, const char* format, ...) noexcept {
    if (!log_enabled(ctx, level)) return;
    va_list args;
    va_start(args, format);
    emit(ctx.attr, level, format, args);
    va_end(args);
}

void provider_log(void* c, provider::log_level level, const char* message) noexcept {
    log_message(*static_cast<const context*>(c), int(level), "%s", message);
}

void describe_connection(const stream_socket& s, char* out, size_t size) noexcept {
    char local[address::format_size], peer[address::format_size];
    address::format(s.local_address, local, sizeof local);
    address::format(s.peer_address, peer, sizeof peer);
    if (s.named == 0) std::snprintf(out, size, "%s -> %s (not accepted yet)", local, peer);
    else
        std::snprintf(out, size, "%s -> %s (socket %llu%s)", local, peer, static_cast<unsigned long long>(s.named),
                      s.handle == 0 ? ", closed by the user" : "");
}

void report_reset(stream_socket& s, bool sent, sansock_reset_reason reason, const char* detail) noexcept {
    if (s.reset_counted || s.state != socket_state::connected) return;
    s.reset_counted = true;
    context& ctx = *s.ctx;
    (sent ? ctx.stats.resets_sent : ctx.stats.resets_received)[reason] += 1;
    const int level = reason_level(reason);
    if (!log_enabled(ctx, level)) return;
    char connection[connection_text_size];
    describe_connection(s, connection, sizeof connection);
    log_message(ctx, level, "connection %s: reset %s: %s%s%s", connection, sent ? "sent" : "received",
                reason_name(reason), detail != nullptr ? ": " : "", detail != nullptr ? detail : "");
}

} // namespace sansock::sw

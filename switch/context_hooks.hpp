// SPDX-License-Identifier: MIT
// What tests (and embedders with special needs) may inject into a context: another provider
// ops table, the loopback fabric to join, and a clock, so time-outs fire without waiting.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>

#include "provider/provider.hpp"
#include "sansock/sansock.h"

namespace sansock {

struct context_hooks {
    // Used instead of the provider named in the attributes (e.g. a wrapper that counts calls).
    const provider::ops* provider_ops = nullptr;
    // Passed to the provider as config.provider_specific (the loopback fabric to join; null:
    // loopback contexts share one fabric per process).
    void* provider_specific = nullptr;
    // The time every time-out of the context is measured in; null: std::chrono::steady_clock.
    // With an injected clock, time-outs are checked whenever the context makes progress.
    std::function<std::chrono::steady_clock::time_point()> now;
    // The session protocol version the context speaks: 2 (over the provider's byte stream) or
    // 3 (over a message-mode provider); 0: the environment's SANSOCK_SESSION_PROTOCOL, else 2.
    int session_version = 0;
};

int create_context(const sansock_context_attr* attr, const context_hooks& hooks, sansock_context** out);

// The most a connection's buffers for received data hold beyond its advertised window, whatever
// the sizes of the peer's DATA frames (docs/protocol.md 2.2; the reckoning is in
// switch/stream_socket.cpp).
inline constexpr size_t receive_memory_slack = 288 * 1024;

// What a switch socket holds (tests). All 0 for an unknown handle.
struct socket_internals {
    uint32_t window = 0;         // the receive window it advertised
    size_t unread = 0;           // bytes received and not read
    size_t buffer_bytes = 0;     // capacity of its buffers for received data: staging, spares, blocks
    size_t bookkeeping_bytes = 0; // the blocks' descriptors
    uint64_t probes_sent = 0;    // keepalive probes sent, in all
    uint64_t probe_replies = 0;  // their replies received
    uint32_t probes_unanswered = 0; // probes since the peer was last heard from
};
// The socket must stay open during the call (no other thread closes it).
socket_internals internals_of(sansock_socket_t s);

// The provider socket behind a switch socket (tests use it to inject loopback faults).
// 0 for an unknown handle.
provider::socket_handle provider_socket_of(sansock_socket_t s);
provider::instance* provider_instance_of(sansock_context* ctx);

} // namespace sansock

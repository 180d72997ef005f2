// SPDX-License-Identifier: MIT
// What tests (and embedders with special needs) may inject into a context: another provider
// ops table, the loopback fabric to join, and a clock, so time-outs fire without waiting.
#pragma once

#include <chrono>
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
};

int create_context(const sansock_context_attr* attr, const context_hooks& hooks, sansock_context** out);

// The provider socket behind a switch socket (tests use it to inject loopback faults).
// 0 for an unknown handle.
provider::socket_handle provider_socket_of(sansock_socket_t s);
provider::instance* provider_instance_of(sansock_context* ctx);

} // namespace sansock

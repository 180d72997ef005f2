// SPDX-License-Identifier: MIT
// Drives a provider instance for a test: a progress thread, operations a test can wait on,
// and up-calls recorded for inspection.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "provider/provider.hpp"

namespace sansock::test {

// An operation whose completion a test can wait for, counting how often it completed.
struct waitable_operation : provider::operation {
    std::mutex mutex;
    std::condition_variable changed;
    int completions = 0;

    explicit waitable_operation(provider::operation_kind k);
    // True once completed (at least once) within `timeout`.
    bool wait(std::chrono::milliseconds timeout);
    int completed() {
        std::lock_guard lock(mutex);
        return completions;
    }
};

struct recorded_event {
    provider::socket_handle socket;
    provider::connection_event event;
    int status;
};

class provider_harness {
public:
    provider_harness(const provider::ops& table, const provider::config& settings);
    ~provider_harness();
    provider_harness(const provider_harness&) = delete;
    provider_harness& operator=(const provider_harness&) = delete;

    int status() const { return create_status_; } // 0, or why create failed
    provider::instance* instance() const { return instance_; }
    const provider::ops& ops() const { return ops_; }
    std::vector<recorded_event> events();

private:
    static void on_event(void* context, provider::socket_handle s, provider::connection_event e, int status) noexcept;

    provider::ops ops_;
    provider::instance* instance_ = nullptr;
    int create_status_ = 0;
    std::atomic<bool> stop_{false};
    std::mutex events_mutex_;
    std::vector<recorded_event> events_;
    std::thread progress_thread_;
};

} // namespace sansock::test

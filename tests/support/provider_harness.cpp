// SPDX-License-Identifier: MIT
// A progress thread and waitable operations for provider tests.
#include "tests/support/provider_harness.hpp"

#include <new>

namespace sansock::test {

namespace {
void wake_waiter(provider::operation& op) noexcept {
    auto& waitable = static_cast<waitable_operation&>(op);
    std::lock_guard lock(waitable.mutex);
    ++waitable.completions;
    waitable.changed.notify_all();
}
} // namespace

waitable_operation::waitable_operation(provider::operation_kind k) {
    kind = k;
    complete = wake_waiter;
}

bool waitable_operation::wait(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex);
    return changed.wait_for(lock, timeout, [&] { return completions > 0; });
}

provider_harness::provider_harness(const provider::ops& table, const provider::config& settings)
    : ops_(provider::with_defaults(table)) {
    events_.reserve(64); // up-calls are recorded with no memory too (tests/rxe/verbs_alloc_test)
    provider::upcalls calls;
    calls.context = this;
    calls.on_connection_event = &provider_harness::on_event;
    create_status_ = ops_.create(settings, calls, &instance_);
    if (create_status_ == 0)
        progress_thread_ = std::thread([this] {
            while (!stop_.load()) ops_.progress(instance_, 100);
        });
}

provider_harness::~provider_harness() {
    stop_ = true;
    if (progress_thread_.joinable()) {
        ops_.wake(instance_);
        progress_thread_.join();
    }
    if (instance_ != nullptr) ops_.destroy(instance_);
}

std::vector<recorded_event> provider_harness::events() {
    std::lock_guard lock(events_mutex_);
    return events_;
}

void provider_harness::on_event(void* context, provider::socket_handle s, provider::connection_event e,
                                int status) noexcept {
    auto* self = static_cast<provider_harness*>(context);
    std::lock_guard lock(self->events_mutex_);
    try {
        self->events_.push_back({s, e, status});
    } catch (const std::bad_alloc&) {
        // More than reserved, with no memory: not recorded (an up-call must not throw).
    }
}

} // namespace sansock::test

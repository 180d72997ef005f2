// SPDX-License-Identifier: MIT
// Bounded time for tests: a watchdog that ends the process instead of letting a test hang, calls
// run on their own thread with a bound, and bounded polling. Shared by every test suite.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

namespace sansock::test {

using namespace std::chrono_literals;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

// Ends the process (the test fails, meson reports it) when a test step does not finish in
// time: a wrong implementation must never hang the suite.
[[noreturn]] inline void die(const std::string& what) {
    std::fprintf(stderr, "\nFATAL (bounded-time guard): %s\n", what.c_str());
    std::fflush(stderr);
    std::_Exit(3);
}

// Arms on construction; if not destroyed within `limit`, ends the process with `what`.
class watchdog {
public:
    explicit watchdog(std::string what, milliseconds limit = 60s) : what_(std::move(what)) {
        thread_ = std::thread([this, limit] {
            std::unique_lock lock(mutex_);
            if (!changed_.wait_for(lock, limit, [this] { return disarmed_; }))
                die(what_ + ": did not finish within " + std::to_string(limit.count()) + " ms");
        });
    }
    ~watchdog() {
        {
            std::lock_guard lock(mutex_);
            disarmed_ = true;
        }
        changed_.notify_all();
        thread_.join();
    }
    watchdog(const watchdog&) = delete;
    watchdog& operator=(const watchdog&) = delete;

private:
    std::string what_;
    std::mutex mutex_;
    std::condition_variable changed_;
    bool disarmed_ = false;
    std::thread thread_;
};

// A call running on its own thread, so a test can check that it blocks, unblock it, and wait
// for it with a bound. If it has not returned by the destructor (after `limit`), the process
// ends: a thread stuck in the library cannot be joined.
template <typename R>
class background {
public:
    template <typename F>
    background(std::string what, F&& call, milliseconds limit = 30s) : what_(std::move(what)), limit_(limit) {
        thread_ = std::thread([this, call = std::forward<F>(call)]() mutable {
            R r = call();
            {
                std::lock_guard lock(mutex_);
                result_ = r;
                finished_ = true;
            }
            changed_.notify_all();
        });
    }
    ~background() {
        wait_or_die(limit_);
        thread_.join();
    }
    background(const background&) = delete;
    background& operator=(const background&) = delete;

    bool finished() {
        std::lock_guard lock(mutex_);
        return finished_;
    }
    // True when the call has returned within `timeout`.
    bool wait(milliseconds timeout) {
        std::unique_lock lock(mutex_);
        return changed_.wait_for(lock, timeout, [this] { return finished_; });
    }
    // The call's result; ends the process if it does not return within the bound.
    R result() {
        wait_or_die(limit_);
        std::lock_guard lock(mutex_);
        return result_;
    }
    std::thread::id id() const { return thread_.get_id(); }

private:
    void wait_or_die(milliseconds timeout) {
        if (!wait(timeout)) die(what_ + ": blocked for more than " + std::to_string(timeout.count()) + " ms");
    }
    std::string what_;
    milliseconds limit_;
    std::mutex mutex_;
    std::condition_variable changed_;
    bool finished_ = false;
    R result_{};
    std::thread thread_;
};

// Runs a blocking call with a bound (the process ends if it does not return).
template <typename F>
auto bounded(const std::string& what, F&& call, milliseconds limit = 30s) {
    using R = decltype(call());
    background<R> b(what, std::forward<F>(call), limit);
    return b.result();
}

// Waits (polling every 5 ms) at most `timeout` for `done()`; returns its final value.
template <typename Predicate>
bool eventually(Predicate done, milliseconds timeout = 10s) {
    const auto deadline = steady_clock::now() + timeout;
    while (!done()) {
        if (steady_clock::now() >= deadline) return done();
        std::this_thread::sleep_for(5ms);
    }
    return true;
}

} // namespace sansock::test

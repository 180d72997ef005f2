// SPDX-License-Identifier: MIT
// The io_uring event engine of lib/event_engine.hpp: watches, timers, wake-ups, fd(), threads.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "lib/event_engine.hpp"

using namespace std::chrono_literals;
using sansock::event_engine;
using steady = std::chrono::steady_clock;

namespace {

std::unique_ptr<event_engine> make_engine(unsigned queue_depth = 256) {
    std::unique_ptr<event_engine> engine;
    const int ret = event_engine::create(engine, queue_depth);
    REQUIRE_MESSAGE(ret == 0, "event_engine::create failed: " << ret);
    REQUIRE(engine != nullptr);
    return engine;
}

// A non-blocking pipe, closed on destruction.
struct test_pipe {
    int read_end = -1;
    int write_end = -1;
    test_pipe() {
        int fds[2];
        REQUIRE(::pipe2(fds, O_NONBLOCK | O_CLOEXEC) == 0);
        read_end = fds[0];
        write_end = fds[1];
    }
    ~test_pipe() {
        if (read_end >= 0) ::close(read_end);
        if (write_end >= 0) ::close(write_end);
    }
    test_pipe(const test_pipe&) = delete;
    test_pipe& operator=(const test_pipe&) = delete;
    void put() const { REQUIRE(::write(write_end, "x", 1) == 1); }
    void drain() const {
        char buffer[256];
        while (::read(read_end, buffer, sizeof buffer) > 0) {
        }
    }
};

// Runs the engine until `done` holds or `limit` passes; false on timeout.
template <typename Done>
bool run_until(event_engine& engine, Done&& done, std::chrono::milliseconds limit = 10s) {
    const auto deadline = steady::now() + limit;
    while (!done()) {
        if (steady::now() > deadline) return false;
        const int ret = engine.run_once(50ms);
        REQUIRE(ret >= 0);
    }
    return true;
}

// What an fd callback saw.
struct fd_record {
    std::atomic<int> calls{0};
    std::atomic<int> last_fd{-1};
    std::atomic<uint32_t> last_revents{0};
    bool drain = false;
};

void record_fd(void* context, int fd, uint32_t revents) noexcept {
    auto* record = static_cast<fd_record*>(context);
    record->last_fd = fd;
    record->last_revents = revents;
    if (record->drain) {
        char buffer[256];
        while (::read(fd, buffer, sizeof buffer) > 0) {
        }
    }
    ++record->calls;
}

void count_timer(void* context) noexcept { ++*static_cast<std::atomic<int>*>(context); }

} // namespace

TEST_CASE("Creating an engine with a queue depth of 0 fails with -EINVAL") {
    std::unique_ptr<event_engine> engine;
    CHECK(event_engine::create(engine, 0) == -EINVAL);
    CHECK(engine == nullptr);
}

TEST_CASE("A watched pipe with data fires its callback with POLLIN and its descriptor") {
    auto engine = make_engine();
    test_pipe pipe;
    pipe.put();
    fd_record record;
    event_engine::watch_id id = 0;
    REQUIRE(engine->watch(pipe.read_end, record_fd, &record, &id) == 0);
    CHECK(id != 0);
    CHECK(run_until(*engine, [&] { return record.calls > 0; }));
    CHECK(record.last_fd == pipe.read_end);
    CHECK((record.last_revents & POLLIN) != 0);
    CHECK(engine->unwatch(id) == 0);
}

TEST_CASE("A watched eventfd that the callback drains fires once per write") {
    auto engine = make_engine();
    const int efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    REQUIRE(efd >= 0);
    fd_record record;
    record.drain = true;
    event_engine::watch_id id = 0;
    REQUIRE(engine->watch(efd, record_fd, &record, &id) == 0);

    // Nothing to read yet: no callback.
    CHECK(engine->run_once(100ms) == 0);
    CHECK(record.calls == 0);

    const uint64_t one = 1;
    REQUIRE(::write(efd, &one, sizeof one) == sizeof one);
    CHECK(run_until(*engine, [&] { return record.calls > 0; }));
    CHECK(record.calls == 1);
    CHECK((record.last_revents & POLLIN) != 0);

    // Drained: not reported again.
    for (int i = 0; i < 3; ++i) CHECK(engine->run_once(50ms) == 0);
    CHECK(record.calls == 1);

    REQUIRE(::write(efd, &one, sizeof one) == sizeof one);
    CHECK(run_until(*engine, [&] { return record.calls > 1; }));
    CHECK(record.calls == 2);
    CHECK(engine->unwatch(id) == 0);
    ::close(efd);
}

TEST_CASE("A descriptor the callback does not drain is reported again on every run_once") {
    auto engine = make_engine();
    test_pipe pipe;
    pipe.put();
    fd_record record; // does not drain
    event_engine::watch_id id = 0;
    REQUIRE(engine->watch(pipe.read_end, record_fd, &record, &id) == 0);
    CHECK(run_until(*engine, [&] { return record.calls > 0; }));
    // Each following run_once delivers it once more (the timeout is only an upper bound).
    for (int i = 0; i < 5; ++i) {
        const int before = record.calls;
        CHECK(engine->run_once(5s) == 1);
        CHECK(record.calls == before + 1);
    }
    CHECK(engine->unwatch(id) == 0);
}

TEST_CASE("A hang-up of the writer is reported in revents") {
    auto engine = make_engine();
    test_pipe pipe;
    fd_record record;
    event_engine::watch_id id = 0;
    REQUIRE(engine->watch(pipe.read_end, record_fd, &record, &id) == 0);
    ::close(pipe.write_end);
    pipe.write_end = -1;
    CHECK(run_until(*engine, [&] { return record.calls > 0; }));
    CHECK((record.last_revents & POLLHUP) != 0);
    CHECK(engine->unwatch(id) == 0);
}

TEST_CASE("watch rejects a bad descriptor and a missing callback") {
    auto engine = make_engine();
    fd_record record;
    event_engine::watch_id id = 0;
    CHECK(engine->watch(-1, record_fd, &record, &id) == -EBADF);
    test_pipe pipe;
    const int closed = ::dup(pipe.read_end);
    REQUIRE(closed >= 0);
    ::close(closed);
    CHECK(engine->watch(closed, record_fd, &record, &id) == -EBADF);
    CHECK(engine->watch(pipe.read_end, nullptr, &record, &id) == -EINVAL);
}

TEST_CASE("After unwatch the callback is not called again, and a second unwatch gives -ENOENT") {
    auto engine = make_engine();
    test_pipe pipe;
    pipe.put();
    fd_record record; // does not drain: it would fire on every run_once
    event_engine::watch_id id = 0;
    REQUIRE(engine->watch(pipe.read_end, record_fd, &record, &id) == 0);
    CHECK(run_until(*engine, [&] { return record.calls > 0; }));
    CHECK(engine->unwatch(id) == 0);
    const int calls = record.calls;
    for (int i = 0; i < 3; ++i) CHECK(engine->run_once(50ms) == 0);
    CHECK(record.calls == calls);
    CHECK(engine->unwatch(id) == -ENOENT);
    CHECK(engine->unwatch(0) == -ENOENT);
    CHECK(engine->unwatch(0x12345678) == -ENOENT);
}

TEST_CASE("unwatch before any delivery means the callback never runs") {
    auto engine = make_engine();
    test_pipe pipe;
    pipe.put();
    fd_record record;
    event_engine::watch_id id = 0;
    REQUIRE(engine->watch(pipe.read_end, record_fd, &record, &id) == 0);
    // The poll has most likely completed already; its completion must be ignored.
    std::this_thread::sleep_for(20ms);
    CHECK(engine->unwatch(id) == 0);
    for (int i = 0; i < 3; ++i) CHECK(engine->run_once(50ms) == 0);
    CHECK(record.calls == 0);
}

namespace {

struct self_unwatch {
    event_engine* engine = nullptr;
    event_engine::watch_id id = 0;
    int calls = 0;
    int unwatch_result = 1;
};

void unwatch_self(void* context, int, uint32_t) noexcept {
    auto* s = static_cast<self_unwatch*>(context);
    ++s->calls;
    s->unwatch_result = s->engine->unwatch(s->id);
}

} // namespace

TEST_CASE("unwatch from inside the descriptor's own callback stops delivery") {
    auto engine = make_engine();
    test_pipe pipe;
    pipe.put();
    self_unwatch s;
    s.engine = engine.get();
    REQUIRE(engine->watch(pipe.read_end, unwatch_self, &s, &s.id) == 0);
    CHECK(run_until(*engine, [&] { return s.calls > 0; }));
    CHECK(s.unwatch_result == 0);
    for (int i = 0; i < 3; ++i) CHECK(engine->run_once(50ms) == 0);
    CHECK(s.calls == 1);
}

namespace {

struct cross_unwatch {
    event_engine* engine = nullptr;
    event_engine::watch_id ids[2] = {0, 0};
    int calls[2] = {0, 0};
    int first = -1; // the one whose callback ran first
    int unwatch_result = 1;
};

template <int Self>
void unwatch_other(void* context, int, uint32_t) noexcept {
    auto* c = static_cast<cross_unwatch*>(context);
    ++c->calls[Self];
    if (c->first < 0) {
        c->first = Self;
        c->unwatch_result = c->engine->unwatch(c->ids[1 - Self]);
    }
}

} // namespace

TEST_CASE("unwatch from inside the callback of another descriptor stops delivery") {
    auto engine = make_engine();
    test_pipe a, b;
    a.put();
    b.put();
    cross_unwatch c;
    c.engine = engine.get();
    REQUIRE(engine->watch(a.read_end, unwatch_other<0>, &c, &c.ids[0]) == 0);
    REQUIRE(engine->watch(b.read_end, unwatch_other<1>, &c, &c.ids[1]) == 0);
    // Both polls complete before the first run_once, so both are in one batch and the second
    // one's completion is already harvested when the first callback unwatches it.
    std::this_thread::sleep_for(20ms);
    CHECK(run_until(*engine, [&] { return c.first >= 0; }));
    REQUIRE(c.first >= 0);
    CHECK(c.unwatch_result == 0);
    const int survivor = c.first, removed = 1 - c.first;
    // The survivor is not drained, so it keeps firing; the removed one never does.
    for (int i = 0; i < 5; ++i) CHECK(engine->run_once(1s) == 1);
    CHECK(c.calls[removed] == 0);
    CHECK(c.calls[survivor] == 6);
    CHECK(engine->unwatch(c.ids[survivor]) == 0);
}

TEST_CASE("A timer fires after its delay and not before") {
    auto engine = make_engine();
    std::atomic<int> fired{0};
    const auto start = steady::now();
    event_engine::timer_id id = 0;
    REQUIRE(engine->add_timer(200ms, count_timer, &fired, &id) == 0);
    CHECK(id != 0);
    CHECK(engine->run_once(0ms) == 0);
    CHECK(fired == 0);
    CHECK(run_until(*engine, [&] { return fired > 0; }));
    const auto elapsed = steady::now() - start;
    CHECK(elapsed >= 200ms);
    CHECK(elapsed < 5s);
    CHECK(fired == 1);
    // One-shot.
    for (int i = 0; i < 3; ++i) CHECK(engine->run_once(50ms) == 0);
    CHECK(fired == 1);
    // Already run.
    CHECK(engine->cancel_timer(id) == -ENOENT);
}

TEST_CASE("A timer with a zero or negative delay fires on the next run_once") {
    auto engine = make_engine();
    std::atomic<int> fired{0};
    REQUIRE(engine->add_timer(0ns, count_timer, &fired, nullptr) == 0);
    REQUIRE(engine->add_timer(-5ms, count_timer, &fired, nullptr) == 0);
    CHECK(run_until(*engine, [&] { return fired == 2; }, 5s));
}

TEST_CASE("Timers of different delays fire in the order of their delays") {
    auto engine = make_engine();
    struct order {
        std::vector<int> seen;
    } o;
    struct entry {
        order* o;
        int value;
    };
    entry entries[3] = {{&o, 3}, {&o, 1}, {&o, 2}};
    auto push = [](void* context) noexcept {
        auto* e = static_cast<entry*>(context);
        e->o->seen.push_back(e->value);
    };
    REQUIRE(engine->add_timer(300ms, push, &entries[0], nullptr) == 0);
    REQUIRE(engine->add_timer(20ms, push, &entries[1], nullptr) == 0);
    REQUIRE(engine->add_timer(150ms, push, &entries[2], nullptr) == 0);
    CHECK(run_until(*engine, [&] { return o.seen.size() == 3; }));
    CHECK(o.seen == std::vector<int>{1, 2, 3});
}

TEST_CASE("cancel_timer prevents the callback and returns -ENOENT afterwards") {
    auto engine = make_engine();
    std::atomic<int> fired{0};
    event_engine::timer_id id = 0;
    REQUIRE(engine->add_timer(100ms, count_timer, &fired, &id) == 0);
    CHECK(engine->cancel_timer(id) == 0);
    CHECK(engine->cancel_timer(id) == -ENOENT);
    const auto deadline = steady::now() + 400ms;
    while (steady::now() < deadline) CHECK(engine->run_once(50ms) == 0);
    CHECK(fired == 0);
    CHECK(engine->cancel_timer(id) == -ENOENT);
    CHECK(engine->cancel_timer(0) == -ENOENT);
}

TEST_CASE("A due timer cancelled before run_once does not run") {
    auto engine = make_engine();
    std::atomic<int> fired{0};
    event_engine::timer_id id = 0;
    REQUIRE(engine->add_timer(1ms, count_timer, &fired, &id) == 0);
    // Expired in the kernel, completion not yet harvested.
    std::this_thread::sleep_for(50ms);
    CHECK(engine->cancel_timer(id) == 0);
    for (int i = 0; i < 3; ++i) CHECK(engine->run_once(50ms) == 0);
    CHECK(fired == 0);
}

TEST_CASE("Timer and watch ids are not interchangeable") {
    auto engine = make_engine();
    std::atomic<int> fired{0};
    event_engine::timer_id timer = 0;
    REQUIRE(engine->add_timer(10s, count_timer, &fired, &timer) == 0);
    test_pipe pipe;
    fd_record record;
    event_engine::watch_id watch = 0;
    REQUIRE(engine->watch(pipe.read_end, record_fd, &record, &watch) == 0);
    CHECK(engine->unwatch(timer) == -ENOENT);
    CHECK(engine->cancel_timer(watch) == -ENOENT);
    CHECK(engine->cancel_timer(timer) == 0);
    CHECK(engine->unwatch(watch) == 0);
}

namespace {

struct timer_pair {
    event_engine* engine = nullptr;
    event_engine::timer_id ids[2] = {0, 0};
    int calls[2] = {0, 0};
    int cancel_result = 1;
};

template <int Self>
void cancel_other(void* context) noexcept {
    auto* p = static_cast<timer_pair*>(context);
    ++p->calls[Self];
    if (p->cancel_result == 1) p->cancel_result = p->engine->cancel_timer(p->ids[1 - Self]);
}

} // namespace

TEST_CASE("cancel_timer from inside another callback prevents the cancelled timer's callback") {
    auto engine = make_engine();
    timer_pair p;
    p.engine = engine.get();
    REQUIRE(engine->add_timer(10ms, cancel_other<0>, &p, &p.ids[0]) == 0);
    REQUIRE(engine->add_timer(10ms, cancel_other<1>, &p, &p.ids[1]) == 0);
    // Both expire before the first run_once, so both completions are in one batch.
    std::this_thread::sleep_for(50ms);
    CHECK(run_until(*engine, [&] { return p.calls[0] + p.calls[1] > 0; }));
    for (int i = 0; i < 3; ++i) CHECK(engine->run_once(50ms) == 0);
    CHECK(p.calls[0] + p.calls[1] == 1);
    CHECK(p.cancel_result == 0);
}

TEST_CASE("run_once(0) does not block") {
    auto engine = make_engine();
    test_pipe pipe; // watched but idle
    fd_record record;
    REQUIRE(engine->watch(pipe.read_end, record_fd, &record, nullptr) == 0);
    const auto start = steady::now();
    for (int i = 0; i < 100; ++i) CHECK(engine->run_once(0ms) == 0);
    CHECK(steady::now() - start < 2s);
}

TEST_CASE("run_once with a timeout returns 0 after about the timeout when idle") {
    auto engine = make_engine();
    const auto start = steady::now();
    CHECK(engine->run_once(200ms) == 0);
    const auto elapsed = steady::now() - start;
    CHECK(elapsed >= 150ms);
    CHECK(elapsed < 5s);
}

TEST_CASE("wake from another thread makes a blocked run_once return early") {
    auto engine = make_engine();
    std::thread waker([&] {
        std::this_thread::sleep_for(100ms);
        CHECK(engine->wake() == 0);
    });
    const auto start = steady::now();
    CHECK(engine->run_once(20s) == 0);
    CHECK(steady::now() - start < 10s);
    waker.join();
}

TEST_CASE("A wake before run_once makes it return at once, and is consumed") {
    auto engine = make_engine();
    for (int i = 0; i < 3; ++i) CHECK(engine->wake() == 0);
    auto start = steady::now();
    CHECK(engine->run_once(20s) == 0);
    CHECK(steady::now() - start < 10s);
    // The wake-ups were drained: the next run_once sleeps its timeout again.
    start = steady::now();
    CHECK(engine->run_once(200ms) == 0);
    CHECK(steady::now() - start >= 150ms);
}

TEST_CASE("fd() polls readable exactly when run_once has something to do") {
    auto engine = make_engine();
    pollfd p{engine->fd(), POLLIN, 0};
    REQUIRE(p.fd >= 0);
    CHECK(::poll(&p, 1, 0) == 0);

    // A timer.
    std::atomic<int> fired{0};
    REQUIRE(engine->add_timer(50ms, count_timer, &fired, nullptr) == 0);
    CHECK(::poll(&p, 1, 0) == 0);
    CHECK(::poll(&p, 1, 10000) == 1);
    CHECK((p.revents & POLLIN) != 0);
    CHECK(engine->run_once(0ms) == 1);
    CHECK(fired == 1);
    CHECK(::poll(&p, 1, 0) == 0);

    // A watched descriptor becoming readable, written by another thread.
    test_pipe pipe;
    fd_record record;
    record.drain = true;
    event_engine::watch_id id = 0;
    REQUIRE(engine->watch(pipe.read_end, record_fd, &record, &id) == 0);
    CHECK(::poll(&p, 1, 0) == 0);
    std::thread writer([&] {
        std::this_thread::sleep_for(50ms);
        CHECK(::write(pipe.write_end, "x", 1) == 1);
    });
    CHECK(::poll(&p, 1, 10000) == 1);
    writer.join();
    CHECK(engine->run_once(0ms) == 1);
    CHECK(record.calls == 1);

    // A wake-up.
    CHECK(::poll(&p, 1, 0) == 0);
    CHECK(engine->wake() == 0);
    CHECK(::poll(&p, 1, 10000) == 1);
    CHECK(engine->run_once(0ms) == 0);
    CHECK(::poll(&p, 1, 0) == 0);
    CHECK(engine->unwatch(id) == 0);
}

TEST_CASE("500 watched pipes are all delivered") {
    constexpr int count = 500;
    rlimit limit{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &limit) == 0);
    if (limit.rlim_cur < 2 * count + 100) {
        limit.rlim_cur = limit.rlim_max == RLIM_INFINITY ? 4096 : std::min<rlim_t>(limit.rlim_max, 4096);
        ::setrlimit(RLIMIT_NOFILE, &limit);
        REQUIRE(::getrlimit(RLIMIT_NOFILE, &limit) == 0);
        REQUIRE_MESSAGE(limit.rlim_cur >= 2 * count + 100, "too few descriptors allowed");
    }
    // A queue smaller than the number of watches, so that submission has to flush.
    auto engine = make_engine(64);
    std::vector<std::unique_ptr<test_pipe>> pipes;
    std::vector<std::unique_ptr<fd_record>> records;
    std::vector<event_engine::watch_id> ids(count);
    for (int i = 0; i < count; ++i) {
        pipes.push_back(std::make_unique<test_pipe>());
        records.push_back(std::make_unique<fd_record>());
        records.back()->drain = true;
        REQUIRE(engine->watch(pipes.back()->read_end, record_fd, records.back().get(), &ids[i]) == 0);
    }
    for (auto& pipe : pipes) pipe->put();
    auto all_seen = [&] {
        for (auto& record : records)
            if (record->calls == 0) return false;
        return true;
    };
    CHECK(run_until(*engine, all_seen));
    for (int i = 0; i < 3; ++i) engine->run_once(10ms);
    int exactly_once = 0;
    for (int i = 0; i < count; ++i) {
        exactly_once += records[i]->calls == 1;
        CHECK(records[i]->last_fd == pipes[i]->read_end);
    }
    CHECK(exactly_once == count);
    for (auto id : ids) CHECK(engine->unwatch(id) == 0);
}

TEST_CASE("Watches and timers added by a thread that has exited still fire") {
    auto engine = make_engine();
    test_pipe pipe;
    fd_record record;
    std::atomic<int> fired{0};
    event_engine::watch_id id = 0;
    // Set before the thread starts, read by callbacks on this thread.
    record.drain = true;
    std::thread adder([&] {
        CHECK(engine->watch(pipe.read_end, record_fd, &record, &id) == 0);
        CHECK(engine->add_timer(100ms, count_timer, &fired, nullptr) == 0);
    });
    adder.join();
    pipe.put();
    CHECK(run_until(*engine, [&] { return record.calls == 1 && fired == 1; }));
    // Re-armed by run_once: a second write is seen too.
    pipe.put();
    CHECK(run_until(*engine, [&] { return record.calls == 2; }));
    CHECK(engine->unwatch(id) == 0);
}

TEST_CASE("Destroying an engine with watches and timers outstanding does not block") {
    test_pipe pipe;
    pipe.put();
    fd_record record;
    std::atomic<int> fired{0};
    const auto start = steady::now();
    {
        auto engine = make_engine();
        REQUIRE(engine->watch(pipe.read_end, record_fd, &record, nullptr) == 0);
        REQUIRE(engine->add_timer(1h, count_timer, &fired, nullptr) == 0);
        CHECK(run_until(*engine, [&] { return record.calls > 0; }));
    }
    CHECK(steady::now() - start < 5s);
    CHECK(fired == 0);
}

namespace {

// The context of one watch of the concurrency test: the callback checks that it is never
// called once unwatch has returned (and ASan that the context is still alive).
struct guarded {
    std::atomic<bool> unwatched{false};
    std::atomic<int> calls{0};
    std::atomic<int>* violations = nullptr;
};

void guarded_callback(void* context, int, uint32_t) noexcept {
    auto* g = static_cast<guarded*>(context);
    if (g->unwatched.load()) ++*g->violations;
    ++g->calls;
    // Not drained: it keeps firing until unwatched, so unwatch often races a callback.
}

void guarded_timer(void* context) noexcept {
    auto* g = static_cast<guarded*>(context);
    if (g->unwatched.load()) ++*g->violations;
    ++g->calls;
}

} // namespace

TEST_CASE("Watches, unwatches, timers and wake-ups from other threads are safe while run_once loops") {
    auto engine = make_engine();
    std::atomic<bool> stop{false};
    std::atomic<int> violations{0};
    std::atomic<int> runs{0};
    std::thread runner([&] {
        while (!stop.load()) {
            const int ret = engine->run_once(5ms);
            if (ret < 0) ++violations;
            ++runs;
        }
    });

    auto churn = [&](int seed) {
        for (int i = 0; i < 150; ++i) {
            test_pipe pipe;
            pipe.put();
            auto g = std::make_unique<guarded>();
            g->violations = &violations;
            event_engine::watch_id id = 0;
            if (engine->watch(pipe.read_end, guarded_callback, g.get(), &id) != 0) {
                ++violations;
                continue;
            }
            auto t = std::make_unique<guarded>();
            t->violations = &violations;
            event_engine::timer_id timer = 0;
            if (engine->add_timer(std::chrono::microseconds((i * 37 + seed) % 3000), guarded_timer, t.get(),
                                  &timer) != 0)
                ++violations;
            // Sometimes unwatch before any delivery, sometimes after a few.
            if ((i + seed) % 3 != 0) {
                const auto deadline = steady::now() + 5s;
                while (g->calls < 2 && steady::now() < deadline) std::this_thread::sleep_for(100us);
                if (g->calls < 2) ++violations;
            }
            if (engine->unwatch(id) != 0) ++violations;
            g->unwatched = true;
            const int cancelled = engine->cancel_timer(timer);
            if (cancelled != 0 && cancelled != -ENOENT) ++violations;
            t->unwatched = true;
            if (i % 10 == 0) engine->wake();
            // g, t and the pipe are freed here: a late callback would be a use after free.
        }
    };
    std::thread other(churn, 1);
    churn(2);
    other.join();
    stop = true;
    engine->wake();
    runner.join();
    CHECK(violations == 0);
    CHECK(runs > 0);
}

TEST_CASE("run_once called from two threads at once runs each callback once") {
    auto engine = make_engine();
    std::atomic<int> fired{0};
    constexpr int timers = 200;
    for (int i = 0; i < timers; ++i)
        REQUIRE(engine->add_timer(std::chrono::microseconds(i * 50), count_timer, &fired, nullptr) == 0);
    std::atomic<int> ran{0};
    auto loop = [&] {
        const auto deadline = steady::now() + 10s;
        while (fired < timers && steady::now() < deadline) {
            const int ret = engine->run_once(10ms);
            if (ret > 0) ran += ret;
        }
    };
    std::thread other(loop);
    loop();
    other.join();
    CHECK(fired == timers);
    CHECK(ran == timers);
}

// SPDX-License-Identifier: MIT
// The io_uring event engine: one-shot POLL_ADD watches re-armed after each callback, TIMEOUT timers.
#include "lib/event_engine.hpp"

#include <liburing.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <fcntl.h>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

#include "lib/handle_table.hpp"

namespace sansock {

namespace {

// The user_data of removal requests: their own completions carry nothing we need, and handles
// are never 0, so they cannot be mistaken for a registration.
constexpr uint64_t no_registration = 0;
// Plenty for every descriptor and timer of a process; bounds the handle table.
constexpr uint32_t max_registrations = 1u << 20;

enum class kind : uint8_t { watch, timer, wake };

// One watch or timer. It stays in the table (so its handle is not reused) until the
// completion of its last request has been harvested, so a completion's user_data always
// names either this registration or nothing.
struct registration {
    kind what;
    // False once unwatched / cancelled / fired: no callback may start any more.
    bool active = true;
    // A POLL_ADD or TIMEOUT request is queued or in the kernel and its completion not harvested.
    bool in_flight = false;
    // Arming or cancelling found the submission queue full; run_once tries again.
    bool retry = false;
    int fd = -1;
    event_engine::fd_callback on_fd = nullptr;
    event_engine::timer_callback on_timer = nullptr;
    void* context = nullptr;
    // Read by the kernel when the TIMEOUT request is submitted, which may be after the call
    // that queued it if that submission failed, so it lives as long as the registration.
    __kernel_timespec delay{};
};

struct harvested {
    uint64_t user_data;
    int32_t res;
};

} // namespace

struct event_engine::state {
    io_uring ring{};
    int wake_fd = -1;
    uint64_t wake_handle = 0;

    // Guards the submission queue, the table and the dispatch bookkeeping; never held
    // while a callback runs.
    std::mutex mutex;
    handle_table<registration> table{max_registrations};
    unsigned retries = 0; // registrations with retry set
    // The registration whose callback run_once is running (0: none), so that unwatch and
    // cancel_timer from another thread can wait for it to return.
    uint64_t dispatching = 0;
    std::thread::id runner;
    std::condition_variable dispatch_done;

    // Serialises run_once; only its holder consumes the completion queue.
    std::mutex run_mutex;
    std::vector<harvested> batch;
    std::vector<io_uring_cqe*> peeked;

    ~state() {
        // Closing the ring cancels every request in the kernel and does not wait for them.
        if (ring.ring_fd >= 0) io_uring_queue_exit(&ring);
        if (wake_fd >= 0) ::close(wake_fd);
        table.for_each([](uint64_t, registration* r) { delete r; });
    }

    // A free submission queue entry, flushing the queue to the kernel once if it is full.
    io_uring_sqe* get_sqe() {
        io_uring_sqe* sqe = io_uring_get_sqe(&ring);
        if (sqe == nullptr) {
            io_uring_submit(&ring);
            sqe = io_uring_get_sqe(&ring);
        }
        return sqe;
    }

    // Queued entries stay in the queue when the kernel refuses them for now (-EBUSY,
    // -EAGAIN, -EINTR); the next submit, at the latest the next run_once, hands them over.
    void submit() {
        if (io_uring_sq_ready(&ring) > 0) io_uring_submit(&ring);
    }

    void set_retry(registration* r) {
        if (!r->retry) {
            r->retry = true;
            ++retries;
        }
    }

    // Queues the POLL_ADD (watch) or TIMEOUT (timer) request of `r`; false if the queue is full.
    bool arm(uint64_t handle, registration* r) {
        io_uring_sqe* sqe = get_sqe();
        if (sqe == nullptr) return false;
        if (r->what == kind::timer) {
            io_uring_prep_timeout(sqe, &r->delay, 0, 0);
        } else {
            // One-shot on purpose: a fresh poll after every callback reports a descriptor that
            // is still readable at once, which is level-triggered delivery.
            io_uring_prep_poll_add(sqe, r->fd, POLLIN);
        }
        io_uring_sqe_set_data64(sqe, handle);
        r->in_flight = true;
        return true;
    }

    // Asks the kernel to drop the request of `r`; its completion (-ECANCELED, or the normal
    // one if it raced) then frees the registration.
    bool cancel(uint64_t handle, registration* r) {
        io_uring_sqe* sqe = get_sqe();
        if (sqe == nullptr) return false;
        if (r->what == kind::timer)
            io_uring_prep_timeout_remove(sqe, handle, 0);
        else
            io_uring_prep_poll_remove(sqe, handle);
        io_uring_sqe_set_data64(sqe, no_registration);
        return true;
    }

    void release(uint64_t handle, registration* r) {
        if (r->retry) --retries;
        table.remove(handle);
        delete r;
    }

    // Re-arms or cancels what could not be queued before.
    void run_retries() {
        if (retries == 0) return;
        table.for_each([this](uint64_t handle, registration* r) {
            if (!r->retry) return;
            const bool done = r->active ? (r->in_flight || arm(handle, r)) : (!r->in_flight || cancel(handle, r));
            if (done) {
                r->retry = false;
                --retries;
            }
        });
    }

    // Unless called from the callback itself, waits until a running callback of `handle`
    // has returned, so that the caller may free its context afterwards.
    void wait_for_dispatch(std::unique_lock<std::mutex>& lock, uint64_t handle) {
        if (dispatching != handle || runner == std::this_thread::get_id()) return;
        dispatch_done.wait(lock, [&] { return dispatching != handle; });
    }

    // Common part of watch and add_timer.
    int add(registration* r, uint64_t* out) {
        std::lock_guard lock(mutex);
        uint64_t handle = 0;
        try {
            handle = table.insert(r);
        } catch (const std::bad_alloc&) {
        }
        if (handle == 0) {
            delete r;
            return -ENOMEM;
        }
        if (!arm(handle, r)) {
            table.remove(handle);
            delete r;
            return -EBUSY;
        }
        submit();
        if (out != nullptr) *out = handle;
        return 0;
    }

    // Common part of unwatch and cancel_timer.
    int remove(uint64_t handle, kind what) {
        std::unique_lock lock(mutex);
        wait_for_dispatch(lock, handle);
        registration* r = table.find(handle);
        if (r == nullptr || r->what != what || !r->active) return -ENOENT;
        r->active = false;
        if (!r->in_flight) {
            release(handle, r);
        } else if (cancel(handle, r)) {
            submit();
        } else {
            // The request stays in the kernel a little longer; its completion is ignored.
            set_retry(r);
        }
        return 0;
    }

    // Handles one completion; returns 1 if a user callback ran.
    int dispatch(const harvested& c) {
        if (c.user_data == no_registration) return 0;
        std::unique_lock lock(mutex);
        registration* r = table.find(c.user_data);
        if (r == nullptr) return 0;
        r->in_flight = false;
        if (!r->active) {
            // Its last completion: unwatched or cancelled while the request was in the kernel.
            release(c.user_data, r);
            return 0;
        }
        if (r->what == kind::wake) {
            uint64_t count;
            // Drains the eventfd so its poll does not fire again until the next wake().
            while (::read(wake_fd, &count, sizeof count) > 0) {
            }
            if (!arm(c.user_data, r)) set_retry(r);
            return 0;
        }
        if (r->what == kind::timer) {
            if (c.res == -ECANCELED) {
                // Not asked for by cancel_timer (that clears active first): put it back.
                if (!arm(c.user_data, r)) set_retry(r);
                return 0;
            }
            const timer_callback callback = r->on_timer;
            void* const context = r->context;
            release(c.user_data, r);
            run_callback(lock, c.user_data, [&] { callback(context); });
            return 1;
        }
        if (c.res == -ECANCELED) {
            if (!arm(c.user_data, r)) set_retry(r);
            return 0;
        }
        const fd_callback callback = r->on_fd;
        void* const context = r->context;
        const int fd = r->fd;
        uint32_t revents;
        if (c.res >= 0)
            revents = static_cast<uint32_t>(c.res);
        else
            revents = c.res == -EBADF ? POLLNVAL : POLLERR;
        run_callback(lock, c.user_data, [&] { callback(context, fd, revents); });
        // Looked up again: the callback may have unwatched it, and then it may be gone.
        r = table.find(c.user_data);
        if (r != nullptr && r->active && !r->in_flight && !arm(c.user_data, r)) set_retry(r);
        return 1;
    }

    template <typename Call>
    void run_callback(std::unique_lock<std::mutex>& lock, uint64_t handle, Call&& call) {
        dispatching = handle;
        lock.unlock();
        call();
        lock.lock();
        dispatching = 0;
        dispatch_done.notify_all();
    }
};

event_engine::event_engine(std::unique_ptr<state> s) : state_(std::move(s)) {}

event_engine::~event_engine() = default;

int event_engine::create(std::unique_ptr<event_engine>& out, unsigned queue_depth) {
    if (queue_depth == 0) return -EINVAL;
    std::unique_ptr<state> s(new (std::nothrow) state);
    if (s == nullptr) return -ENOMEM;
    s->ring.ring_fd = -1;

    io_uring_params params{};
    // A roomy completion queue: every watch and timer has a request outstanding, and there
    // may be many more of them than submission entries.
    params.flags = IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP;
    params.cq_entries = queue_depth > (1u << 20) ? (1u << 22) : queue_depth * 4;
    int ret = io_uring_queue_init_params(queue_depth, &s->ring, &params);
    if (ret < 0) {
        s->ring.ring_fd = -1;
        return ret;
    }
    // Waiting with a timeout without touching the submission queue (which other threads
    // fill) needs EXT_ARG (5.11); NODROP (5.5) keeps completions beyond the queue size.
    if ((s->ring.features & IORING_FEAT_EXT_ARG) == 0 || (s->ring.features & IORING_FEAT_NODROP) == 0)
        return -ENOSYS;

    try {
        s->batch.resize(s->ring.cq.ring_entries);
        s->peeked.resize(s->ring.cq.ring_entries);
    } catch (const std::bad_alloc&) {
        return -ENOMEM;
    }

    s->wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->wake_fd < 0) return -errno;
    registration* wake = new (std::nothrow) registration{kind::wake};
    if (wake == nullptr) return -ENOMEM;
    wake->fd = s->wake_fd;
    ret = s->add(wake, &s->wake_handle);
    if (ret < 0) return ret;

    out.reset(new (std::nothrow) event_engine(std::move(s)));
    return out == nullptr ? -ENOMEM : 0;
}

int event_engine::fd() const { return state_->ring.ring_fd; }

int event_engine::watch(int fd, fd_callback callback, void* context, watch_id* out) {
    if (callback == nullptr || fd < 0) return fd < 0 ? -EBADF : -EINVAL;
    // A bad descriptor would otherwise only show up later as a POLLNVAL callback.
    if (::fcntl(fd, F_GETFD) < 0) return -errno;
    registration* r = new (std::nothrow) registration{kind::watch};
    if (r == nullptr) return -ENOMEM;
    r->fd = fd;
    r->on_fd = callback;
    r->context = context;
    return state_->add(r, out);
}

int event_engine::unwatch(watch_id id) { return state_->remove(id, kind::watch); }

int event_engine::add_timer(std::chrono::nanoseconds delay, timer_callback callback, void* context,
                            timer_id* out) {
    if (callback == nullptr) return -EINVAL;
    registration* r = new (std::nothrow) registration{kind::timer};
    if (r == nullptr) return -ENOMEM;
    const int64_t ns = delay.count() < 0 ? 0 : delay.count();
    r->delay.tv_sec = ns / 1'000'000'000;
    r->delay.tv_nsec = ns % 1'000'000'000;
    r->on_timer = callback;
    r->context = context;
    return state_->add(r, out);
}

int event_engine::cancel_timer(timer_id id) { return state_->remove(id, kind::timer); }

int event_engine::run_once(std::chrono::milliseconds timeout) {
    state& s = *state_;
    std::lock_guard run(s.run_mutex);
    bool pending_retries;
    {
        std::lock_guard lock(s.mutex);
        s.runner = std::this_thread::get_id();
        s.run_retries();
        s.submit();
        pending_retries = s.retries > 0;
    }

    if (timeout.count() > 0 && io_uring_cq_ready(&s.ring) == 0) {
        // Requests that could not be queued are retried soon rather than after a long sleep.
        const int64_t ms = pending_retries ? 1 : timeout.count();
        __kernel_timespec ts{};
        ts.tv_sec = ms / 1000;
        ts.tv_nsec = (ms % 1000) * 1'000'000;
        io_uring_cqe* cqe = nullptr;
        // Sleeps in the kernel; with EXT_ARG it submits nothing, so the submission lock is
        // not needed. A timeout or a signal just means there is nothing to run yet.
        const int ret = io_uring_wait_cqe_timeout(&s.ring, &cqe, &ts);
        if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) return ret;
    }

    // Takes what is due now, once: callbacks that re-arm a still-readable descriptor are
    // run again on the next run_once, not in a loop here.
    size_t count = 0;
    while (count < s.batch.size()) {
        const unsigned n = io_uring_peek_batch_cqe(&s.ring, s.peeked.data(),
                                                   static_cast<unsigned>(s.batch.size() - count));
        if (n == 0) break;
        for (unsigned i = 0; i < n; ++i)
            s.batch[count++] = {s.peeked[i]->user_data, s.peeked[i]->res};
        io_uring_cq_advance(&s.ring, n);
    }

    int ran = 0;
    for (size_t i = 0; i < count; ++i) ran += s.dispatch(s.batch[i]);

    std::lock_guard lock(s.mutex);
    s.submit();
    return ran;
}

int event_engine::wake() {
    const uint64_t one = 1;
    if (::write(state_->wake_fd, &one, sizeof one) < 0 && errno != EAGAIN) return -errno;
    // EAGAIN: the counter is saturated, so a wake-up is already pending.
    return 0;
}

} // namespace sansock

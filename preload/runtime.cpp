// SPDX-License-Identifier: MIT
#include "preload/runtime.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "preload/options.hpp"
#include "preload/real_calls.hpp"

namespace sansock::preload {

thread_local int own_calls::depth_ = 0;

namespace {

// Everything below is process state of the preload library (docs/transparent-mode.md names
// it): the program has no context to hang it on.
struct process_state {
    config settings = read_config();
    std::mutex mutex; // the context's creation, the listeners and the number counts
    sansock_context* ctx = nullptr;
    bool tried = false;
    pid_t owner = 0; // the process that made ctx (a forked child must not use it)
    bool forked = false;
    uint64_t next_listener = 1;
    std::unordered_map<uint64_t, std::shared_ptr<dual_listener>> listeners;
    std::unordered_map<uint64_t, unsigned> numbers; // key_of(entry) -> descriptor numbers
    std::atomic<uint64_t> fallbacks{0};
};

process_state& state() {
    static process_state* s = new process_state; // never freed: used until the very exit
    return *s;
}

uint64_t key_of(const fd_entry& e) { return e.kind == fd_kind::listener ? e.value | uint64_t(1) << 63 : e.value; }

void write_line(const char* format, va_list args) {
    char line[512];
    int n = std::snprintf(line, sizeof line, "sansock-preload: ");
    n += std::vsnprintf(line + n, sizeof line - size_t(n) - 1, format, args);
    if (n > int(sizeof line) - 2) n = int(sizeof line) - 2;
    line[n++] = '\n';
    [[maybe_unused]] ssize_t w = ::syscall(SYS_write, 2, line, size_t(n));
}

void write_report(sansock_context* ctx) {
    const std::string& path = state().settings.report_path;
    if (path.empty() || ctx == nullptr) return;
    struct sansock_context_stats s{};
    s.size = sizeof s;
    if (sansock_context_stats(ctx, &s) != 0) return;
    FILE* out = std::fopen(path.c_str(), "a");
    if (out == nullptr) {
        warn("SANSOCK_PRELOAD_REPORT: cannot open %s: %s", path.c_str(), std::strerror(errno));
        return;
    }
    std::fprintf(out,
                 "pid %d\nconnections_opened %llu\nconnections_accepted %llu\nbytes_sent %llu\n"
                 "bytes_received %llu\nfallbacks %llu\nresets_sent %llu\nresets_received %llu\n",
                 int(::getpid()), (unsigned long long)s.connections_opened,
                 (unsigned long long)s.connections_accepted, (unsigned long long)s.bytes_sent,
                 (unsigned long long)s.bytes_received, (unsigned long long)state().fallbacks.load(),
                 [&] { unsigned long long t = 0; for (uint64_t r : s.resets_sent) t += r; return t; }(),
                 [&] { unsigned long long t = 0; for (uint64_t r : s.resets_received) t += r; return t; }());
    std::fclose(out);
}

// At exit the program's open connections close as the kernel closes a TCP socket at exit
// (gracefully, lingering in the background), then the closes are given the context's
// graceful time-out to finish before the context goes.
void at_exit() {
    process_state& st = state();
    sansock_context* ctx = nullptr;
    {
        std::lock_guard lock(st.mutex);
        if (st.forked || st.owner != ::getpid()) return;
        ctx = st.ctx;
    }
    if (ctx == nullptr) return;
    own_calls own;
    for_each_entry([](int fd, const fd_entry& e) {
        if (e.kind == fd_kind::stream) {
            // A lingering close lingers in the background at exit, as in the kernel.
            struct linger l{};
            socklen_t size = sizeof l;
            if (sansock_getsockopt(e.value, SOL_SOCKET, SO_LINGER, &l, &size) == 0 && l.l_onoff && l.l_linger > 0) {
                const int off = 1;
                sansock_setsockopt(e.value, SOL_SOCKET, SO_DONTLINGER, &off, sizeof off);
            }
            sansock_close(e.value);
        } else if (e.kind == fd_kind::listener) {
            drop_listener(e.value);
        }
        clear(fd);
    });
    {
        std::lock_guard lock(st.mutex);
        st.listeners.clear();
    }
    const int drained = sansock_context_drain(ctx, -1);
    if (drained != 0) warn("at exit: connections still closing were reset (%s)", sansock_strerror(drained));
    write_report(ctx);
    sansock_context_destroy(ctx);
    std::lock_guard lock(st.mutex);
    st.ctx = nullptr;
}

void before_fork() { state().mutex.lock(); }
void after_fork_parent() { state().mutex.unlock(); }
void after_fork_child() {
    process_state& st = state();
    // The parent's sockets stay the parent's: their numbers fail here, and nothing of the
    // parent's context is touched (its threads are not in this process). New sockets get a
    // context of the child's own.
    st.forked = st.ctx != nullptr || !st.listeners.empty();
    st.ctx = nullptr;
    st.tried = false;
    new (&st.listeners) decltype(st.listeners)(); // the parent's objects are left as they are
    new (&st.numbers) decltype(st.numbers)();
    st.mutex.unlock();
    for_each_entry([](int fd, const fd_entry& e) {
        if (e.kind == fd_kind::stream || e.kind == fd_kind::listener) store(fd, {fd_kind::inherited, 0, e.value});
    });
}

[[gnu::constructor]] void on_load() {
    real();
    process_state& st = state();
    ::pthread_atfork(before_fork, after_fork_parent, after_fork_child);
    if (!st.settings.problem.empty()) warn("%s; every socket stays on the kernel", st.settings.problem.c_str());
    else if (st.settings.verbose)
        say("%s (provider %s, peers %s)", st.settings.enabled ? "on" : "off",
            st.settings.loopback_provider ? "loopback" : "verbs",
            st.settings.all_peers ? "all" : st.settings.peers.empty() ? "all but loopback" : "SANSOCK_PRELOAD_PEERS");
}

} // namespace

const config& settings() { return state().settings; }

bool in_forked_child() { return state().forked; }

sansock_context* existing_context() {
    process_state& st = state();
    std::lock_guard lock(st.mutex);
    return st.ctx;
}

sansock_context* context() {
    process_state& st = state();
    if (!st.settings.enabled) return nullptr;
    std::lock_guard lock(st.mutex);
    if (st.tried) return st.ctx;
    st.tried = true;
    own_calls own;
    sansock_context_attr attr;
    sansock_context_attr_init(&attr);
    attr.provider = st.settings.loopback_provider ? SANSOCK_PROVIDER_LOOPBACK : SANSOCK_PROVIDER_VERBS;
    const int rc = sansock_context_create(&attr, &st.ctx);
    if (rc != 0) {
        st.ctx = nullptr;
        say("no sansock context (%s): every socket stays on the kernel", sansock_strerror(rc));
        return nullptr;
    }
    if (st.owner == 0 || st.owner != ::getpid()) std::atexit(at_exit);
    st.owner = ::getpid();
    return st.ctx;
}

dual_listener::~dual_listener() {
    own_calls own;
    if (socket != 0) sansock_close(socket);
    for (int fd : {kernel_fd, epoll_fd, wake_fd})
        if (fd >= 0) real().close(fd);
}

uint64_t add_listener(std::shared_ptr<dual_listener> listener) {
    process_state& st = state();
    std::lock_guard lock(st.mutex);
    const uint64_t id = st.next_listener++;
    st.listeners.emplace(id, std::move(listener));
    return id;
}

std::shared_ptr<dual_listener> find_listener(uint64_t id) {
    process_state& st = state();
    std::lock_guard lock(st.mutex);
    const auto it = st.listeners.find(id);
    return it == st.listeners.end() ? nullptr : it->second;
}

void drop_listener(uint64_t id) {
    std::shared_ptr<dual_listener> gone;
    {
        process_state& st = state();
        std::lock_guard lock(st.mutex);
        const auto it = st.listeners.find(id);
        if (it == st.listeners.end()) return;
        gone = std::move(it->second);
        st.listeners.erase(it);
    }
    gone->closing.store(true);
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = real().write(gone->wake_fd, &one, sizeof one);
    // The last holder (this, or an accept still inside) frees it, without the lock.
}

void add_number(const fd_entry& e) {
    process_state& st = state();
    std::lock_guard lock(st.mutex);
    ++st.numbers[key_of(e)];
}

bool release_number(const fd_entry& e) {
    process_state& st = state();
    std::lock_guard lock(st.mutex);
    const auto it = st.numbers.find(key_of(e));
    if (it == st.numbers.end()) return true;
    if (--it->second > 0) return false;
    st.numbers.erase(it);
    return true;
}

int close_stream(sansock_socket_t s) {
    own_calls own;
    struct linger l{};
    socklen_t size = sizeof l;
    int nonblocking = 0;
    socklen_t nsize = sizeof nonblocking;
    if (sansock_getsockopt(s, SOL_SOCKET, SO_LINGER, &l, &size) == 0 && l.l_onoff && l.l_linger > 0 &&
        sansock_getsockopt(s, SOL_SOCKET, SANSOCK_SO_NONBLOCK, &nonblocking, &nsize) == 0 && nonblocking) {
        const int off = 0;
        sansock_setsockopt(s, SOL_SOCKET, SANSOCK_SO_NONBLOCK, &off, sizeof off);
    }
    forget_options(s);
    const int rc = sansock_close(s);
    return rc == -ENOTSOCK ? 0 : rc;
}

void count_fallback() { state().fallbacks.fetch_add(1, std::memory_order_relaxed); }

void say(const char* format, ...) {
    if (!state().settings.verbose) return;
    va_list args;
    va_start(args, format);
    write_line(format, args);
    va_end(args);
}

void warn(const char* format, ...) {
    va_list args;
    va_start(args, format);
    write_line(format, args);
    va_end(args);
}

} // namespace sansock::preload

// What a program or a test may ask of the preload (found with dlsym; preload/sansock_preload.h).
extern "C" [[gnu::visibility("default")]] int sansock_preload_fd_kind(int fd) {
    using namespace sansock::preload;
    switch (lookup(fd).kind) {
    case fd_kind::stream: return 1;
    case fd_kind::listener: return 2;
    case fd_kind::inherited: return 3;
    default: return 0;
    }
}

extern "C" [[gnu::visibility("default")]] int sansock_preload_stats(struct sansock_context_stats* out) {
    using namespace sansock::preload;
    sansock_context* ctx = existing_context(); // none: nothing was carried
    if (ctx == nullptr) return -ENODEV;
    return sansock_context_stats(ctx, out);
}

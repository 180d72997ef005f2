// SPDX-License-Identifier: MIT
// Memory bounded by the window: whatever the sizes of the peer's DATA frames, what a switch
// socket holds for data it received and the application has not read is at most the window it
// advertised plus receive_memory_slack (switch/context_hooks.hpp, docs/protocol.md 2.2). A
// raw loopback peer sends a whole window in 1-byte, 4 KiB or full frames, each alone (the next
// one goes only once the switch has taken the previous: the gaps that make every frame a
// receive of its own), and the application reads nothing until the window is full. Measured
// two ways: the capacity of the socket's buffers (internals_of) and the heap the process
// gained meanwhile (operator new and delete are replaced below: they count what malloc really
// holds for each block, malloc_usable_size plus its chunk header).
#include <malloc.h>

#include <new>

#include "tests/switch/switch_test_support.hpp"

namespace {
std::atomic<int64_t> heap_in_use{0};
constexpr int64_t chunk_header = 8; // glibc's size field before each chunk in use

void* counted(void* p) {
    if (p != nullptr) heap_in_use.fetch_add(int64_t(malloc_usable_size(p)) + chunk_header, std::memory_order_relaxed);
    return p;
}
void uncount(void* p) {
    if (p != nullptr) heap_in_use.fetch_sub(int64_t(malloc_usable_size(p)) + chunk_header, std::memory_order_relaxed);
}
} // namespace

// These are the allocation functions: free() here gets what malloc() gave operator new.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void* operator new(std::size_t n) {
    void* p = counted(std::malloc(n == 0 ? 1 : n));
    if (p == nullptr) throw std::bad_alloc();
    return p;
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return counted(std::malloc(n == 0 ? 1 : n)); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return counted(std::malloc(n == 0 ? 1 : n)); }
void operator delete(void* p) noexcept {
    uncount(p);
    std::free(p);
}
void operator delete[](void* p) noexcept { operator delete(p); }
void operator delete(void* p, std::size_t) noexcept { operator delete(p); }
void operator delete[](void* p, std::size_t) noexcept { operator delete(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { operator delete(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { operator delete(p); }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace sansock::switchtest {
namespace {

// Sends through the raw peer's provider socket with one operation and one buffer, reused, so
// that the sending side allocates nothing while the heap is measured.
class frame_sender {
public:
    explicit frame_sender(raw_peer& raw, size_t largest) : raw_(raw), bytes_(largest) {}

    // Sends one DATA frame of `n` pattern bytes (stream offset `from`) and waits until the
    // switch's provider has taken it.
    void send_data(uint64_t from, size_t n) {
        session::header h;
        h.type = session::message_type::data;
        h.length = uint32_t(n);
        session::encode(h, bytes_.data());
        for (size_t k = 0; k < n; ++k) bytes_[session::header_size + k] = pattern(from + k);
        std::unique_lock lock(mutex_);
        done_ = false;
        op_ = provider::operation{};
        op_.kind = provider::operation_kind::send;
        op_.buffer = bytes_.data();
        op_.length = session::header_size + n;
        op_.complete = &on_complete;
        op_.user = this;
        if (raw_.ops.send(raw_.inst, raw_.s, &op_) != 0) die("raw send refused");
        if (!changed_.wait_for(lock, 10s, [this] { return done_; })) die("raw send did not complete");
        if (result_ != int64_t(op_.length)) die("raw send failed");
    }

private:
    static void on_complete(provider::operation& o) noexcept {
        auto* self = static_cast<frame_sender*>(o.user);
        {
            std::lock_guard lock(self->mutex_);
            self->result_ = o.result;
            self->done_ = true;
        }
        self->changed_.notify_all();
    }

    raw_peer& raw_;
    std::vector<uint8_t> bytes_;
    provider::operation op_{};
    std::mutex mutex_;
    std::condition_variable changed_;
    bool done_ = false;
    int64_t result_ = 0;
};

// Spins (bounded) until the switch socket has `unread` bytes unread: the frame was parsed.
socket_internals wait_unread(sansock_socket_t s, size_t unread) {
    const auto deadline = steady_clock::now() + 20s;
    for (;;) {
        const socket_internals now = internals_of(s);
        if (now.unread == unread) return now;
        if (steady_clock::now() >= deadline) die("the switch did not take the frame");
        std::this_thread::yield();
    }
}

struct measured {
    socket_internals full;  // the window full of unread data
    int64_t heap_gained = 0; // heap in use then, minus before the first frame
    socket_internals before;
};

// A switch socket advertising `window` receives a window's worth of `frame`-byte DATA frames,
// one at a time, from a raw peer, unread; then the application reads it all and checks it.
measured fill_window(uint32_t window, size_t frame) {
    world w;
    w.session_version = 2; // the raw peer speaks version 2
    host_options o;
    o.window_bytes = window;
    sansock_context* a = w.host(o);
    raw_peer& raw = w.keep(std::make_unique<raw_peer>(w.fabric()));
    uint16_t port = 0;
    const sansock_socket_t l = listen_on(a, &port);
    REQUIRE(raw.connect(port) == 0);
    const sansock_socket_t s = accept_one(l);
    CHECK(raw.read_hello().value == window);
    REQUIRE(raw.send_hello().wait(5s));
    frame_sender sender(raw, session::header_size + frame);
    settle(100ms); // the switch has taken the HELLO

    measured m;
    m.before = internals_of(s);
    REQUIRE(m.before.window == window);
    REQUIRE(m.before.unread == 0);
    const int64_t heap_before = heap_in_use.load();
    const size_t frames = window / frame;
    for (size_t i = 0; i < frames; ++i) {
        sender.send_data(uint64_t(i) * frame, frame);
        wait_unread(s, (i + 1) * frame);
    }
    m.full = internals_of(s);
    m.heap_gained = heap_in_use.load() - heap_before;

    // Everything arrived intact and in order, and once read the buffers go back to at most
    // the slack.
    const std::vector<uint8_t> got = recv_exact(s, frames * frame);
    CHECK(got == pattern_bytes(0, frames * frame));
    const socket_internals read = internals_of(s);
    CHECK(read.unread == 0);
    CHECK(read.buffer_bytes <= receive_memory_slack);
    CHECK(sansock_close(s) == 0);
    CHECK(sansock_close(l) == 0);
    return m;
}

void check_bounded(uint32_t window, size_t frame) {
    CAPTURE(window);
    CAPTURE(frame);
    const measured m = fill_window(window, frame);
    const size_t unread = window / frame * frame;
    CAPTURE(m.full.buffer_bytes);
    CAPTURE(m.full.bookkeeping_bytes);
    CAPTURE(m.heap_gained);
    MESSAGE("window " << window << ", " << frame << "-byte frames: buffers " << m.full.buffer_bytes << " bytes, heap +"
                      << m.heap_gained << " bytes (limit: window + " << receive_memory_slack << ")");
    CHECK(m.full.unread == unread);
    // The socket's buffers: the window plus the slack.
    CHECK(m.full.buffer_bytes <= size_t(window) + receive_memory_slack);
    // What the process really gained: those buffers, their bookkeeping, malloc's headers.
    CHECK(m.heap_gained + int64_t(m.before.buffer_bytes) <= int64_t(window) + int64_t(receive_memory_slack));
}

TEST_CASE("1-byte DATA frames: the receiver holds at most the window plus the slack") {
    watchdog guard("1-byte frames");
    check_bounded(16384, 1);
}

TEST_CASE("4 KiB DATA frames, each received alone: at most the window plus the slack") {
    watchdog guard("4 KiB frames");
    check_bounded(256 * 1024, 4096);
    check_bounded(1024 * 1024, 4096);
}

TEST_CASE("Full DATA frames (65,520 bytes, as a switch sends; 65,536, the most allowed): at most the window plus the slack") {
    watchdog guard("full frames");
    check_bounded(256 * 1024, session::max_data_payload - session::header_size);
    check_bounded(256 * 1024, session::max_data_payload);
    check_bounded(1024 * 1024, session::max_data_payload - session::header_size);
}

TEST_CASE("Mixed: a 1-byte frame between full frames does not leave a block half empty") {
    watchdog guard("mixed frames");
    // Alternating 1-byte and full frames: each small one would otherwise start a block of its
    // own that the next full frame leaves behind.
    world w;
    w.session_version = 2; // the raw peer speaks version 2
    host_options o;
    o.window_bytes = 1024 * 1024;
    sansock_context* a = w.host(o);
    raw_peer& raw = w.keep(std::make_unique<raw_peer>(w.fabric()));
    uint16_t port = 0;
    const sansock_socket_t l = listen_on(a, &port);
    REQUIRE(raw.connect(port) == 0);
    const sansock_socket_t s = accept_one(l);
    raw.read_hello();
    REQUIRE(raw.send_hello().wait(5s));
    constexpr size_t full = session::max_data_payload - session::header_size;
    frame_sender sender(raw, session::header_size + full);
    settle(100ms);
    uint64_t sent = 0;
    while (sent + 1 + full <= o.window_bytes) {
        sender.send_data(sent, 1);
        wait_unread(s, size_t(sent += 1));
        sender.send_data(sent, full);
        wait_unread(s, size_t(sent += full));
    }
    const socket_internals full_window = internals_of(s);
    CAPTURE(full_window.buffer_bytes);
    CHECK(full_window.buffer_bytes <= size_t(o.window_bytes) + receive_memory_slack);
    CHECK(recv_exact(s, size_t(sent)) == pattern_bytes(0, size_t(sent)));
    CHECK(sansock_close(s) == 0);
    CHECK(sansock_close(l) == 0);
}

} // namespace
} // namespace sansock::switchtest

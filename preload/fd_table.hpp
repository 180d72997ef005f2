// SPDX-License-Identifier: MIT
// What the preload knows of each descriptor number, read without a lock on every intercepted
// call: most calls are on descriptors that are not sockets of ours and must stay cheap.
#pragma once

#include <atomic>
#include <cstdint>

namespace sansock::preload {

enum class fd_kind : uint8_t {
    kernel = 0,    // not ours: every call goes to the C library
    candidate = 1, // a kernel TCP socket that may still move to sansock at connect or listen
    stream = 2,    // a connection carried by sansock (value: its sansock_socket_t)
    listener = 3,  // a listener for kernel and sansock clients (value: its listener id)
    inherited = 4, // a stream or listener a forked child inherited: it fails cleanly
};

// Options a program set on a candidate, to be given to the sansock socket too (the kernel
// socket holds their values until then).
enum option_bit : uint8_t {
    set_linger = 1u << 0,
    set_keepalive = 1u << 1,  // SO_KEEPALIVE or one of TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT
    set_rcvtimeo = 1u << 2,
    set_sndtimeo = 1u << 3,
    set_rcvbuf = 1u << 4,
    set_sndbuf = 1u << 5,
    set_v6only = 1u << 6,
};

struct fd_entry {
    fd_kind kind = fd_kind::kernel;
    uint8_t options = 0;
    uint64_t value = 0;
};

// Descriptors up to max_tracked_fd are tracked (a larger one always stays on the kernel).
inline constexpr int max_tracked_fd = 1 << 20;

fd_entry lookup(int fd) noexcept;
// Sets the entry; false if the number cannot be tracked (too large, or no memory for its part
// of the table): the descriptor then stays on the kernel.
bool store(int fd, const fd_entry& entry) noexcept;
void clear(int fd) noexcept;
// Clears the entry only if it still holds `expected` (a close racing with a new socket that
// got the same number).
void clear_if(int fd, const fd_entry& expected) noexcept;
void add_options(int fd, uint8_t bits) noexcept;
// Calls visit(fd, entry) for every entry that is not kernel (fork and exit handlers).
template <typename F>
void for_each_entry(F&& visit);

namespace detail {
inline constexpr int chunk_bits = 10;
inline constexpr int chunk_size = 1 << chunk_bits;
struct slot {
    std::atomic<uint64_t> head{0}; // kind | options << 8
    std::atomic<uint64_t> value{0};
};
extern std::atomic<slot*> chunks[max_tracked_fd / chunk_size];
} // namespace detail

template <typename F>
void for_each_entry(F&& visit) {
    for (int c = 0; c < max_tracked_fd / detail::chunk_size; ++c) {
        detail::slot* chunk = detail::chunks[c].load(std::memory_order_acquire);
        if (chunk == nullptr) continue;
        for (int k = 0; k < detail::chunk_size; ++k) {
            const int fd = c * detail::chunk_size + k;
            const fd_entry e = lookup(fd);
            if (e.kind != fd_kind::kernel) visit(fd, e);
        }
    }
}

} // namespace sansock::preload

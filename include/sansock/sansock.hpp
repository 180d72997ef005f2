// SPDX-License-Identifier: MIT
// A thin RAII layer over sansock.h: owners for contexts and sockets. Errors stay negated
// errnos (no exceptions); destructors never block and never throw.
// Needs C++17 or later (the library itself is C++20; its C API works from any C++).
#pragma once

#if !defined(__cplusplus) || __cplusplus < 201703L
#error "sansock/sansock.hpp needs C++17 or later (-std=c++17); from older C++ use sansock/sansock.h"
#endif

#include <utility>

#include "sansock/sansock.h"

namespace sansock {

// Owns a context; destroys it (hard-closing what is left) when it goes.
class context_owner {
public:
    context_owner() = default;
    explicit context_owner(sansock_context* ctx) noexcept : ctx_(ctx) {}
    context_owner(context_owner&& other) noexcept : ctx_(std::exchange(other.ctx_, nullptr)) {}
    context_owner& operator=(context_owner&& other) noexcept {
        if (this != &other) {
            reset();
            ctx_ = std::exchange(other.ctx_, nullptr);
        }
        return *this;
    }
    context_owner(const context_owner&) = delete;
    context_owner& operator=(const context_owner&) = delete;
    ~context_owner() { reset(); }

    // 0 and a new context in `out`, or a negated errno.
    [[nodiscard]] static int create(const sansock_context_attr* attr, context_owner& out) noexcept {
        sansock_context* ctx = nullptr;
        int rc = sansock_context_create(attr, &ctx);
        if (rc == 0) out = context_owner(ctx);
        return rc;
    }

    sansock_context* get() const noexcept { return ctx_; }
    explicit operator bool() const noexcept { return ctx_ != nullptr; }
    void reset() noexcept {
        if (ctx_ != nullptr) sansock_context_destroy(ctx_);
        ctx_ = nullptr;
    }

private:
    sansock_context* ctx_ = nullptr;
};

// Owns a socket handle. The destructor closes it in the background, as SO_DONTLINGER does,
// whatever linger option was set, so that it never blocks; call close() to get linger's
// behaviour and its result.
class socket_owner {
public:
    socket_owner() = default;
    explicit socket_owner(sansock_socket_t s) noexcept : socket_(s) {}
    socket_owner(socket_owner&& other) noexcept : socket_(std::exchange(other.socket_, 0)) {}
    socket_owner& operator=(socket_owner&& other) noexcept {
        if (this != &other) {
            reset();
            socket_ = std::exchange(other.socket_, 0);
        }
        return *this;
    }
    socket_owner(const socket_owner&) = delete;
    socket_owner& operator=(const socket_owner&) = delete;
    ~socket_owner() { reset(); }

    [[nodiscard]] static int open(sansock_context* ctx, socket_owner& out) noexcept {
        sansock_socket_t s = 0;
        int rc = sansock_socket(ctx, &s);
        if (rc == 0) out = socket_owner(s);
        return rc;
    }

    sansock_socket_t get() const noexcept { return socket_; }
    explicit operator bool() const noexcept { return socket_ != 0; }
    // Gives up ownership without closing.
    sansock_socket_t release() noexcept { return std::exchange(socket_, 0); }

    // sansock_close with the socket's own linger option. On -EWOULDBLOCK (nonblocking
    // linger) the socket is still owned; otherwise it is gone.
    [[nodiscard]] int close() noexcept {
        if (socket_ == 0) return -ENOTSOCK;
        int rc = sansock_close(socket_);
        if (rc != -EWOULDBLOCK) socket_ = 0;
        return rc;
    }

    void reset() noexcept {
        if (socket_ == 0) return;
        const int background = 1;
        sansock_setsockopt(socket_, SOL_SOCKET, SO_DONTLINGER, &background, sizeof background);
        sansock_close(socket_);
        socket_ = 0;
    }

private:
    sansock_socket_t socket_ = 0;
};

} // namespace sansock

// SPDX-License-Identifier: MIT
// A socket's pollable kernel descriptor (sansock_socket_fd): an AF_UNIX socketpair whose user
// end reads readable and writable as the socket does. docs/semantics.md, "A descriptor per
// socket", says why this construction and what it costs.
#pragma once

namespace sansock::sw {

// The user end `user` polls POLLIN while a byte sits in its receive queue (written by `inner`)
// and POLLOUT while its send buffer, kept at the kernel's minimum, is not filled (by sends
// from `ours`, a duplicate of `user`, into `inner`). Every change is one or two nonblocking
// syscalls, made only when the readiness changes. Operations on the user end go through
// `ours`, never through the number handed out, so an application that closes that number
// (which it must not) cannot make sansock write into whatever descriptor reuses it.
class pollable_fd {
public:
    pollable_fd() = default;
    pollable_fd(const pollable_fd&) = delete;
    pollable_fd& operator=(const pollable_fd&) = delete;
    ~pollable_fd() { close(); }

    // Makes the descriptors, neither readable nor writable yet: 0, -EMFILE, -ENFILE, -ENOMEM.
    int open() noexcept;
    bool is_open() const noexcept { return user_ >= 0; }
    int user() const noexcept { return user_; }
    // Makes the user end poll as given (syscalls only for what changes).
    void show(bool readable, bool writable) noexcept;
    // Closes all three (inner first: a thread polling the user end wakes with POLLHUP). The
    // number handed out is closed only while it is still this socket's.
    void close() noexcept;

private:
    int user_ = -1, ours_ = -1, inner_ = -1;
    bool readable_ = false, writable_ = true; // what the user end shows now
};

} // namespace sansock::sw

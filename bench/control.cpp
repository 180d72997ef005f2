// SPDX-License-Identifier: MIT
// sansock-bench: the control channel between the measuring half and the peer half of one
// measurement (bench.hpp). Lines of text; every wait has a time-out.
#include <arpa/inet.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "bench/bench.hpp"

namespace sansock::bench {

namespace {
std::atomic<bool> beat_lines{false};
std::atomic<uint64_t> last_beat_ns{0};
} // namespace

control::control(int fd, bool same_process) : fd_(fd), same_process_(same_process) {}

control::~control() {
    if (fd_ >= 0) ::close(fd_);
}

void control::beats_to_stdout(bool on) { beat_lines = on; }

int control::send(const std::string& line) {
    std::string data = line + "\n";
    size_t done = 0;
    const uint64_t end = now_ns() + 10'000'000'000ull;
    while (done < data.size()) {
        ssize_t n = ::send(fd_, data.data() + done, data.size() - done, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            done += size_t(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            const uint64_t now = now_ns();
            if (now >= end) return -ETIMEDOUT;
            pollfd p{fd_, POLLOUT, 0};
            poll(&p, 1, int((end - now) / 1'000'000) + 1);
            continue;
        }
        return n < 0 ? -errno : -EPIPE;
    }
    return 0;
}

// Reads what is there (waiting at most timeout_ms for something): 0, -ETIMEDOUT, -ECONNRESET.
int control::fill(int timeout_ms) {
    if (closed_) return -ECONNRESET;
    pollfd p{fd_, POLLIN, 0};
    int n = poll(&p, 1, timeout_ms);
    if (n < 0) return errno == EINTR ? -ETIMEDOUT : -errno;
    if (n == 0) return -ETIMEDOUT;
    char chunk[4096];
    ssize_t k = ::recv(fd_, chunk, sizeof chunk, MSG_DONTWAIT);
    if (k > 0) {
        buffer_.append(chunk, size_t(k));
        return 0;
    }
    if (k < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
    closed_ = true;
    return -ECONNRESET;
}

int control::receive(std::string& line, int timeout_ms) {
    const uint64_t end = now_ns() + uint64_t(timeout_ms) * 1'000'000;
    for (;;) {
        const size_t eol = buffer_.find('\n');
        if (eol != std::string::npos) {
            line = buffer_.substr(0, eol);
            buffer_.erase(0, eol + 1);
            return 0;
        }
        const uint64_t now = now_ns();
        if (now >= end) return -ETIMEDOUT;
        int rc = fill(int((end - now) / 1'000'000) + 1);
        if (rc == -ECONNRESET || (rc < 0 && rc != -ETIMEDOUT)) return rc;
    }
}

int control::expect(const std::string& word, std::string& rest, int timeout_ms) {
    const uint64_t end = now_ns() + uint64_t(timeout_ms) * 1'000'000;
    for (;;) {
        const uint64_t now = now_ns();
        if (now >= end) return -ETIMEDOUT;
        std::string line;
        if (int rc = receive(line, int((end - now) / 1'000'000) + 1)) return rc;
        const std::string first = line.substr(0, line.find_first_of(" \t"));
        rest = line.size() > first.size() ? line.substr(first.size() + 1) : std::string();
        if (first == word) return 0;
        if (first == "fail") return -EPROTO;
    }
}

int control::ready(const std::string& address, uint16_t port) {
    ready_sent_ = true;
    return send("ready " + address + " " + std::to_string(port));
}

void control::mark() { send("mark " + std::to_string(now_ns())); }

bool control::stopping() {
    if (buffer_.find('\n') != std::string::npos) return true;
    while (fill(0) == 0) {
    }
    return closed_ || buffer_.find('\n') != std::string::npos;
}

void control::beat() {
    if (!beat_lines) return;
    const uint64_t now = now_ns();
    if (now - last_beat_ns.load() < 1'000'000'000ull) return;
    last_beat_ns = now;
    std::printf("beat=%llu\n", static_cast<unsigned long long>(now / 1'000'000'000ull));
    std::fflush(stdout);
}

int control::wait_mark(uint64_t& at_ns, int timeout_ms) {
    std::string rest;
    if (int rc = expect("mark", rest, timeout_ms)) return rc;
    at_ns = same_process_ ? std::strtoull(rest.c_str(), nullptr, 10) : now_ns();
    return 0;
}

} // namespace sansock::bench

// SPDX-License-Identifier: MIT
// Child processes for two-process rxe tests.
#include "tests/support/peer_process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <thread>

extern char** environ;

namespace sansock::test {

namespace {
std::map<std::string, peer_role>& roles() {
    static std::map<std::string, peer_role> registry;
    return registry;
}
} // namespace

peer_role_registrar::peer_role_registrar(const char* name, peer_role role) {
    roles().emplace(name, std::move(role));
}

int run_peer_role(const std::string& name, const std::vector<std::string>& args) {
    auto role = roles().find(name);
    if (role == roles().end()) {
        std::fprintf(stderr, "unknown peer role '%s'\n", name.c_str());
        return 2;
    }
    return role->second(args);
}

void report(const std::string& key, const std::string& value) {
    std::printf("%s=%s\n", key.c_str(), value.c_str());
    std::fflush(stdout);
}
void report(const std::string& key, long value) { report(key, std::to_string(value)); }

peer_process::peer_process(const std::string& role, const std::vector<std::string>& args) {
    int pipe_fds[2];
    if (pipe2(pipe_fds, O_CLOEXEC) != 0) return;
    std::vector<std::string> argv_strings{"/proc/self/exe", "--peer", role};
    argv_strings.insert(argv_strings.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& s : argv_strings) argv.push_back(s.data());
    argv.push_back(nullptr);

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
    pid_t pid = -1;
    if (posix_spawn(&pid, "/proc/self/exe", &actions, nullptr, argv.data(), environ) == 0) pid_ = pid;
    posix_spawn_file_actions_destroy(&actions);
    close(pipe_fds[1]);
    stdout_fd_ = pipe_fds[0];
}

peer_process::~peer_process() {
    if (pid_ > 0) {
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
    }
    if (stdout_fd_ >= 0) close(stdout_fd_);
}

std::optional<std::string> peer_process::read_line(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        if (auto newline = pending_.find('\n'); newline != std::string::npos) {
            std::string line = pending_.substr(0, newline);
            pending_.erase(0, newline + 1);
            if (auto eq = line.find('='); eq != std::string::npos)
                reports_[line.substr(0, eq)] = line.substr(eq + 1);
            return line;
        }
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (stdout_fd_ < 0) return std::nullopt;
        // A zero or spent timeout still takes what is already in the pipe.
        pollfd pfd{stdout_fd_, POLLIN, 0};
        int ready = poll(&pfd, 1, static_cast<int>(std::max<long>(left.count(), 0)));
        if (ready < 0 && errno == EINTR) continue;
        if (ready <= 0) return std::nullopt;
        char buffer[1024];
        ssize_t n = read(stdout_fd_, buffer, sizeof buffer);
        if (n <= 0) return std::nullopt;
        pending_.append(buffer, static_cast<size_t>(n));
    }
}

std::optional<std::string> peer_process::wait_for(const std::string& key,
                                                  std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    const std::string prefix = key + "=";
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        auto line = read_line(left);
        if (!line) return std::nullopt;
        if (line->rfind(prefix, 0) == 0) return line->substr(prefix.size());
    }
}

int peer_process::wait_exit(std::chrono::milliseconds timeout) {
    if (pid_ <= 0) return -1;
    // Keep reading reports while waiting so a chatty child never blocks on a full pipe.
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        int status = 0;
        pid_t done = waitpid(pid_, &status, WNOHANG);
        if (done == pid_) {
            pid_ = -1;
            while (read_line(std::chrono::milliseconds(0))) {
            }
            if (WIFEXITED(status)) return WEXITSTATUS(status);
            if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
            return -1;
        }
        if (std::chrono::steady_clock::now() >= deadline) {
            kill(pid_, SIGKILL);
            waitpid(pid_, nullptr, 0);
            pid_ = -1;
            return -1;
        }
        if (!read_line(std::chrono::milliseconds(20)))
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
}

} // namespace sansock::test

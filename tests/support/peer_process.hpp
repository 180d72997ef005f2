// SPDX-License-Identifier: MIT
// A test's peer: this same test binary started again in a role (`--peer ROLE ARGS...`), so a
// connection's two ends live in two processes, each with its own verbs and rdma_cm state.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace sansock::test {

using peer_role = std::function<int(const std::vector<std::string>& args)>;

// Registers a role at static-initialisation time; the rxe main dispatches `--peer NAME`.
struct peer_role_registrar {
    peer_role_registrar(const char* name, peer_role role);
};
int run_peer_role(const std::string& name, const std::vector<std::string>& args);

// A child process running `/proc/self/exe --peer ROLE ARGS...`. Its stdout comes back
// through a pipe as lines of `key=value` reports; stderr is inherited. The destructor kills
// and reaps a child that is still running, so a failed test never leaves one behind.
class peer_process {
public:
    peer_process(const std::string& role, const std::vector<std::string>& args);
    peer_process(const peer_process&) = delete;
    peer_process& operator=(const peer_process&) = delete;
    ~peer_process();

    bool started() const { return pid_ > 0; }
    pid_t pid() const { return pid_; }

    // The next line the child printed, or nothing if `timeout` passed or it closed stdout.
    std::optional<std::string> read_line(std::chrono::milliseconds timeout);
    // Reads lines until one is `key=...`; returns its value.
    std::optional<std::string> wait_for(const std::string& key, std::chrono::milliseconds timeout);
    // Every `key=value` line read so far.
    const std::map<std::string, std::string>& reports() const { return reports_; }

    // The exit status (0..255), 128+signal if killed by one, or -1 if it did not end in time
    // (it is then killed).
    int wait_exit(std::chrono::milliseconds timeout);

private:
    pid_t pid_ = -1;
    int stdout_fd_ = -1;
    std::string pending_;
    std::map<std::string, std::string> reports_;
};

// Reporting from inside a role: prints `key=value` and flushes.
void report(const std::string& key, const std::string& value);
void report(const std::string& key, long value);

} // namespace sansock::test

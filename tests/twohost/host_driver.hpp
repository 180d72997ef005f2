// SPDX-License-Identifier: MIT
// The host side of the twohost suite: guest control (tests/vm/guest-ctl), a role running
// in a guest, netem, and the stream runs several cases share.
#pragma once

#include <doctest/doctest.h>

#include <memory>

#include "tests/twohost/common.hpp"

namespace twohost {


inline std::string quote(const std::string& s) {
    std::string q = "'";
    for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
}

// Runs tests/vm/guest-ctl GUEST ARGS...: its status and stdout (stderr goes to ours).
struct ctl_result {
    int status = -1;
    std::string out;
};
inline ctl_result guest_ctl(const std::string& guest, const std::vector<std::string>& args, bool stderr_too = true) {
    std::string command = quote(env("SANSOCK_GUEST_CTL")) + " " + guest;
    for (const auto& a : args) command += " " + quote(a);
    if (!stderr_too) command += " 2>/dev/null";
    ctl_result r;
    FILE* pipe = popen(command.c_str(), "r");
    if (pipe == nullptr) return r;
    char buffer[4096];
    size_t n;
    while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) r.out.append(buffer, n);
    const int status = pclose(pipe);
    r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    while (!r.out.empty() && r.out.back() == '\n') r.out.pop_back();
    return r;
}

inline std::string self_exe() {
    char path[4096];
    const ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
    return n > 0 ? std::string(path, static_cast<size_t>(n)) : std::string();
}

// A role running in a guest. Killed (if still running) when it goes out of scope.
class remote_job {
public:
    remote_job(std::string guest, const std::string& role, const std::vector<std::string>& args)
        : guest_(std::move(guest)) {
        static int counter = 0;
        name_ = role + "-" + std::to_string(getpid()) + "-" + std::to_string(++counter);
        const std::string log = env("SANSOCK_LOG").empty() ? "info" : env("SANSOCK_LOG");
        std::string command = "SANSOCK_LOG=" + quote(log) + " exec " + quote(self_exe()) + " --peer " + quote(role);
        for (const auto& a : args) command += " " + quote(a);
        const ctl_result r = guest_ctl(guest_, {"start", name_, command});
        INFO("starting " << role << " on host " << guest_);
        REQUIRE(r.status == 0);
    }
    ~remote_job() {
        if (!ended_ && guest_ctl(guest_, {"alive"}).status == 0) {
            guest_ctl(guest_, {"signal", name_, "KILL"});
            guest_ctl(guest_, {"wait", name_, "30"});
        }
    }
    remote_job(const remote_job&) = delete;
    remote_job& operator=(const remote_job&) = delete;

    // The value of the job's report `key`, waiting at most `seconds`.
    std::optional<std::string> get(const std::string& key, int seconds) {
        const ctl_result r = guest_ctl(guest_, {"get", name_, key, std::to_string(seconds)});
        if (r.status != 0) return std::nullopt;
        return r.out;
    }
    std::string need(const std::string& key, int seconds) {
        auto v = get(key, seconds);
        INFO("host " << guest_ << ", " << name_ << ": waiting for " << key << "\n" << output());
        REQUIRE(v.has_value());
        return *v;
    }
    // The job's exit status, waiting at most `seconds` (124: still running).
    int wait(int seconds) {
        const int status = guest_ctl(guest_, {"wait", name_, std::to_string(seconds)}).status;
        if (status != 124) ended_ = true;
        if (ended_) read_reports();
        return status;
    }
    void signal(const std::string& sig) { guest_ctl(guest_, {"signal", name_, sig}); }
    void host_died() { ended_ = true; }
    std::string output() {
        return "--- " + name_ + " on host " + guest_ + ": stdout\n" + guest_ctl(guest_, {"output", name_}, false).out +
               "\n(its stderr is in the test's log)";
    }
    // A report of the ended job ("(none)" if it made none).
    std::string operator[](const std::string& key) const {
        auto it = reports_.find(key);
        return it == reports_.end() ? "(none)" : it->second;
    }
    long number(const std::string& key) const {
        auto it = reports_.find(key);
        return it == reports_.end() ? -999999 : std::stol(it->second);
    }

private:
    // Once, when the job has ended: its stderr goes to the test's log here.
    void read_reports() {
        std::fprintf(stderr, "--- %s on host %s: stderr\n", name_.c_str(), guest_.c_str());
        std::istringstream lines(guest_ctl(guest_, {"output", name_}).out);
        std::string line;
        while (std::getline(lines, line))
            if (auto eq = line.find('='); eq != std::string::npos) reports_[line.substr(0, eq)] = line.substr(eq + 1);
    }
    std::string guest_, name_;
    bool ended_ = false;
    std::map<std::string, std::string> reports_;
};

// A shell command in a guest, bounded; REQUIREs success.
inline std::string in_guest(const std::string& guest, const std::string& command, int seconds = 60) {
    const ctl_result r = guest_ctl(guest, {"run", std::to_string(seconds), command});
    INFO("host " << guest << ": " << command << "\n" << r.out);
    REQUIRE(r.status == 0);
    return r.out;
}

// At the start of every case: both hosts up (booted again after a host-death case), the link
// clean (no netem, eth0 up).
inline void both_hosts_up() {
    for (const char* g : {"A", "B"}) {
        const ctl_result r = guest_ctl(g, {"up", "300"});
        INFO("host " << g << " did not come up");
        REQUIRE(r.status == 0);
    }
    for (const char* g : {"A", "B"}) in_guest(g, "tc qdisc del dev eth0 root 2>/dev/null; ip link set eth0 up");
}

// Netem on eth0 of both guests for the life of the object ("loss 2% delay 2ms", say).
class netem_on_both {
public:
    explicit netem_on_both(const std::string& spec) {
        for (const char* g : {"A", "B"}) in_guest(g, "tc qdisc add dev eth0 root netem " + spec);
        MESSAGE("netem on both hosts' eth0: " << spec);
    }
    ~netem_on_both() {
        for (const char* g : {"A", "B"}) guest_ctl(g, {"run", "60", "tc qdisc del dev eth0 root"});
    }
    netem_on_both(const netem_on_both&) = delete;
    netem_on_both& operator=(const netem_on_both&) = delete;
};

inline long env_number(const char* name, long otherwise) {
    const std::string v = env(name);
    return v.empty() ? otherwise : std::stol(v);
}

inline std::string mib(uint64_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }

// The stream role on both hosts: `bytes` each way. `during` runs once A has received `mark`
// bytes (0: no mark). Returns once both have ended (bounded by `limit_s`).
struct stream_run {
    std::unique_ptr<remote_job> a, b;
    int status_a = -1, status_b = -1;
};
template <typename During>
inline stream_run run_streams(uint64_t bytes, long call_ms, uint64_t mark, int limit_s, During during, uint64_t pace = 0) {
    stream_run run;
    const std::vector<std::string> common{"bytes=" + std::to_string(bytes), "call_ms=" + std::to_string(call_ms),
                                          "mark=" + std::to_string(mark), "limit_s=" + std::to_string(limit_s + 60),
                                          "pace=" + std::to_string(pace)};
    std::vector<std::string> a_args{"side=server"}, b_args{"side=client"};
    a_args.insert(a_args.end(), common.begin(), common.end());
    run.a = std::make_unique<remote_job>("A", "stream", a_args);
    const std::string port = run.a->need("port", 120);
    b_args.insert(b_args.end(), common.begin(), common.end());
    b_args.push_back("port=" + port);
    run.b = std::make_unique<remote_job>("B", "stream", b_args);
    if (mark != 0) {
        run.a->need("mark", limit_s);
        during(*run.a, *run.b);
    }
    run.status_a = run.a->wait(limit_s);
    run.status_b = run.b->wait(60);
    return run;
}

// Both directions arrived whole: every byte as sent, the checksums equal, then end of stream;
// both closed gracefully and let go of everything.
inline void check_intact(stream_run& r, uint64_t bytes) {
    remote_job &a = *r.a, &b = *r.b;
    INFO(a.output() << "\n" << b.output());
    REQUIRE(r.status_a == 0);
    REQUIRE(r.status_b == 0);
    for (remote_job* receiver : {&a, &b}) {
        remote_job& sender = receiver == &a ? b : a;
        CHECK(sender["sent_rc"] == "0");
        CHECK(sender["sent_bytes"] == std::to_string(bytes));
        CHECK((*receiver)["recv_bytes"] == std::to_string(bytes));
        CHECK((*receiver)["recv_first_bad"] == "-1");
        CHECK((*receiver)["recv_fnv"] == sender["sent_fnv"]);
        CHECK((*receiver)["recv_last"] == "0");
        CHECK((*receiver)["close"] == "0");
        CHECK((*receiver)["closed_ms"] != "-1");
        CHECK((*receiver)["destroy"] == "0");
    }
    MESSAGE(mib(bytes) << " each way in " << a["seconds"] << " s (A) / " << b["seconds"] << " s (B)");
}


constexpr long slack_ms = 5000; // what an emulated guest on a busy host may add to a bound

// A call on the survivor after the death ended within its bound, with a time-out or a reset:
// never success, never end of stream.
inline void check_ended_in_bound(remote_job& a, const std::string& result, const std::string& took_ms, long bound_ms) {
    INFO(result << " = " << text(a.number(result)) << " after " << a[took_ms] << " ms");
    CHECK((a.number(result) == SANSOCK_E_WOULDBLOCK || a.number(result) == SANSOCK_E_CONNRESET));
    CHECK(a.number(took_ms) >= 0);
    CHECK(a.number(took_ms) <= bound_ms + slack_ms);
}

} // namespace twohost

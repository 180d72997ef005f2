// SPDX-License-Identifier: MIT
// The two-process test harness itself: reports, exit codes and bounded waits.
#include <doctest/doctest.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "tests/support/peer_process.hpp"

using namespace std::chrono_literals;
using sansock::test::peer_process;
using sansock::test::peer_role_registrar;
using sansock::test::report;

namespace {
peer_role_registrar reporter("reporter", [](const std::vector<std::string>& args) {
    for (size_t i = 0; i < args.size(); ++i) report("arg" + std::to_string(i), args[i]);
    report("pid", static_cast<long>(getpid()));
    return static_cast<int>(args.size());
});
peer_role_registrar sleeper("sleeper", [](const std::vector<std::string>&) {
    std::this_thread::sleep_for(60s);
    return 0;
});
} // namespace

TEST_CASE("A peer role runs in its own process and reports key=value lines") {
    peer_process peer("reporter", {"alpha", "beta gamma"});
    REQUIRE(peer.started());
    auto pid = peer.wait_for("pid", 10s);
    REQUIRE(pid.has_value());
    CHECK(std::stol(*pid) != getpid());
    CHECK(peer.wait_exit(10s) == 2);
    CHECK(peer.reports().at("arg0") == "alpha");
    CHECK(peer.reports().at("arg1") == "beta gamma");
}

TEST_CASE("Waiting on a peer is bounded: a stuck peer is killed and reported as such") {
    peer_process peer("sleeper", {});
    REQUIRE(peer.started());
    const auto started = std::chrono::steady_clock::now();
    CHECK_FALSE(peer.wait_for("never", 100ms).has_value());
    CHECK(peer.wait_exit(200ms) == -1);
    CHECK(std::chrono::steady_clock::now() - started < 10s);
}

TEST_CASE("An unknown peer role fails with a clear exit status") {
    peer_process peer("no-such-role", {});
    REQUIRE(peer.started());
    CHECK(peer.wait_exit(10s) == 2);
}

TEST_CASE("Reports written just before a peer exits are all collected") {
    std::vector<std::string> args;
    for (int i = 0; i < 200; ++i) args.push_back("value" + std::to_string(i));
    peer_process peer("reporter", args);
    REQUIRE(peer.started());
    std::this_thread::sleep_for(200ms); // let it finish before anything is read
    CHECK(peer.wait_exit(10s) == 200);
    CHECK(peer.reports().size() == 201);
    CHECK(peer.reports().at("arg199") == "value199");
}

// SPDX-License-Identifier: MIT
// Two hosts: sansock's public API between two QEMU guests, each its own kernel with SoftRoCE
// (rxe0 on eth0), joined by an emulated link (tests/vm/run-two-guests). The test cases run on
// the host as drivers: they start this same binary in a role (`--peer ROLE key=value...`) in
// host A (10.1.0.1, always the listening side and the survivor) and host B (10.1.0.2), through
// tests/vm/guest-ctl, and check the `key=value` lines the roles print. A driver can kill host B
// outright (its QEMU: host death, nothing reaches A any more), cut the link or make it lossy
// and slow (netem in both guests).
//
// Without SANSOCK_TWOHOST_CTL (the runner's control directory) the binary exits 77 (SKIP).
// SANSOCK_TWOHOST_MIB sets the size of the checksummed transfer each way (default 64),
// SANSOCK_TWOHOST_LOSS_MIB that of the lossy one (default 1). docs/testing.md, "Two hosts",
// says what each case shows.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <cstring>

#include "tests/twohost/common.hpp"

using namespace twohost;

namespace {
unsigned cases_run = 0;
struct count_cases : doctest::IReporter {
    explicit count_cases(const doctest::ContextOptions&) {}
    void report_query(const doctest::QueryData&) override {}
    void test_run_start() override {}
    void test_run_end(const doctest::TestRunStats& stats) override { cases_run = stats.numTestCasesPassingFilters; }
    void test_case_start(const doctest::TestCaseData&) override {}
    void test_case_reenter(const doctest::TestCaseData&) override {}
    void test_case_end(const doctest::CurrentTestCaseStats&) override {}
    void test_case_exception(const doctest::TestCaseException&) override {}
    void subcase_start(const doctest::SubcaseSignature&) override {}
    void subcase_end() override {}
    void log_assert(const doctest::AssertData&) override {}
    void log_message(const doctest::MessageData&) override {}
    void test_case_skipped(const doctest::TestCaseData&) override {}
};
REGISTER_LISTENER("count_cases", 1, count_cases);
} // namespace

int main(int argc, char** argv) {
    if (argc >= 3 && std::strcmp(argv[1], "--peer") == 0)
        return run_peer_role(argv[2], std::vector<std::string>(argv + 3, argv + argc));
    if (env("SANSOCK_TWOHOST_CTL").empty() || env("SANSOCK_GUEST_CTL").empty()) {
        std::fprintf(stderr, "not under tests/vm/run-two-guests (no SANSOCK_TWOHOST_CTL): skipping (exit 77)\n");
        return 77;
    }
    doctest::Context context(argc, argv);
    const int rc = context.run();
    if (rc == 0 && cases_run == 0 && !context.shouldExit()) {
        std::fprintf(stderr, "no test case matched the filter\n");
        return 2;
    }
    return rc;
}

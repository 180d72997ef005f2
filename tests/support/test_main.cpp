// SPDX-License-Identifier: MIT
// main() of every test binary: run a peer role when started as one, else the doctest cases.
// Built with SANSOCK_TEST_NEEDS_DEVICE for the rxe suite, where it skips (exit 77, meson's
// SKIP) on a machine without an RDMA device.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "tests/support/peer_process.hpp"
#include "tests/support/rdma_test_env.hpp"

int main(int argc, char** argv) {
    if (argc >= 3 && std::strcmp(argv[1], "--peer") == 0)
        return sansock::test::run_peer_role(argv[2], std::vector<std::string>(argv + 3, argv + argc));
#ifdef SANSOCK_TEST_NEEDS_DEVICE
    if (!sansock::test::rdma_device_present()) {
        std::fprintf(stderr, "no RDMA device with an active port: skipping (exit 77). "
                             "Run the suite in the SoftRoCE VM: scripts/test\n");
        return 77;
    }
    if (sansock::test::test_address().empty()) {
        std::fprintf(stderr, "an RDMA device is present but no IPv4 address was found for it: "
                             "set SANSOCK_TEST_ADDR (skipping, exit 77)\n");
        return 77;
    }
#endif
#ifdef SANSOCK_TEST_NEEDS_REMOVABLE_DEVICE
    if (std::getenv("SANSOCK_TEST_REMOVABLE_DEVICE") == nullptr) {
        std::fprintf(stderr, "no device declared removable (SANSOCK_TEST_REMOVABLE_DEVICE): skipping (exit 77)\n");
        return 77;
    }
#endif
    doctest::Context context(argc, argv);
    return context.run();
}

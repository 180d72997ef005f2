// SPDX-License-Identifier: MIT
// The conformance fixture for the verbs provider: two instances on the same RDMA device.
#include <cstdlib>

#include "provider/verbs/verbs_provider.hpp"
#include "tests/conformance/conformance_fixture.hpp"
#include "tests/support/rdma_test_env.hpp"

namespace sansock::conformance {

namespace {

int create_verbs_hosts(const provider::config& settings, const provider::upcalls& a_calls,
                       const provider::upcalls& b_calls, hosts* out) {
    hosts h;
    int rc = verbs::verbs_ops.create(settings, a_calls, &h.a);
    if (rc != 0) return rc;
    rc = verbs::verbs_ops.create(settings, b_calls, &h.b);
    if (rc != 0) {
        verbs::verbs_ops.destroy(h.a);
        return rc;
    }
    *out = h;
    return 0;
}

void destroy_verbs_hosts(hosts& h) {
    if (h.a != nullptr) verbs::verbs_ops.destroy(h.a);
    if (h.b != nullptr) verbs::verbs_ops.destroy(h.b);
    h = {};
}

} // namespace

const fixture& the_fixture() {
    static const fixture f = [] {
        fixture x;
        x.name = "verbs";
        x.table = &verbs::verbs_ops;
        x.listen_address = test::test_address(); // $SANSOCK_TEST_ADDR or the device's IPv4 GID
        // SoftRoCE under emulation moves about 50 MB/s: 256 MiB is kept for real hardware
        // (SANSOCK_CONFORMANCE_LARGEST_MIB overrides).
        const char* cap = std::getenv("SANSOCK_CONFORMANCE_LARGEST_MIB");
        x.largest_transfer = uint64_t(cap != nullptr ? std::strtoull(cap, nullptr, 10) : 64) << 20;
        x.timeout_ms = 120000;
        x.create_hosts = &create_verbs_hosts;
        x.destroy_hosts = &destroy_verbs_hosts;
        return x;
    }();
    return f;
}

} // namespace sansock::conformance

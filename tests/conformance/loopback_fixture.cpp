// SPDX-License-Identifier: MIT
// The conformance fixture for the loopback provider: two instances on one private fabric.
#include <cerrno>

#include "provider/loopback/loopback.hpp"
#include "tests/conformance/conformance_fixture.hpp"

namespace sansock::conformance {

namespace {

int create_loopback_hosts(const provider::config& settings, const provider::upcalls& a_calls,
                          const provider::upcalls& b_calls, hosts* out) {
    loopback::fabric* net = loopback::create_fabric();
    if (net == nullptr) return -ENOMEM;
    provider::config c = settings;
    c.provider_specific = net;
    hosts h;
    h.state = net;
    int rc = loopback_ops.create(c, a_calls, &h.a);
    if (rc == 0) {
        rc = loopback_ops.create(c, b_calls, &h.b);
        if (rc != 0) loopback_ops.destroy(h.a);
    }
    if (rc != 0) {
        loopback::destroy_fabric(net);
        return rc;
    }
    *out = h;
    return 0;
}

void destroy_loopback_hosts(hosts& h) {
    if (h.a != nullptr) loopback_ops.destroy(h.a);
    if (h.b != nullptr) loopback_ops.destroy(h.b);
    loopback::destroy_fabric(static_cast<loopback::fabric*>(h.state));
    h = {};
}

} // namespace

const fixture& the_fixture() {
    static const fixture f = [] {
        fixture x;
        x.name = "loopback";
        x.table = &loopback_ops;
        x.listen_address = "127.0.0.1";
        x.largest_transfer = uint64_t(256) << 20;
        x.timeout_ms = 60000;
        x.create_hosts = &create_loopback_hosts;
        x.destroy_hosts = &destroy_loopback_hosts;
        return x;
    }();
    return f;
}

} // namespace sansock::conformance

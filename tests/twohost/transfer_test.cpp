// SPDX-License-Identifier: MIT
// twohost cases: checksummed transfers, loss and delay, each close mode across hosts.
#include <doctest/doctest.h>

#include "tests/twohost/host_driver.hpp"

using namespace twohost;


// ---- transfers ---------------------------------------------------------------------------------

TEST_CASE("transfer: a checksummed stream each way at once arrives whole, then end of stream") {
    both_hosts_up();
    const uint64_t bytes = static_cast<uint64_t>(env_number("SANSOCK_TWOHOST_MIB", 64)) << 20;
    stream_run r = run_streams(bytes, 60000, 0, 900, [](remote_job&, remote_job&) {});
    check_intact(r, bytes);
}

TEST_CASE("loss: 2% loss and 3 ms delay each way on the link, the streams still arrive whole") {
    both_hosts_up();
    const uint64_t bytes = static_cast<uint64_t>(env_number("SANSOCK_TWOHOST_LOSS_MIB", 1)) << 20;
    netem_on_both netem("loss 2% delay 3ms");
    stream_run r = run_streams(bytes, 60000, 0, 600, [](remote_job&, remote_job&) {});
    check_intact(r, bytes);
}

// ---- close modes across hosts ----------------------------------------------------------------

TEST_CASE("close-dontlinger: SO_DONTLINGER returns at once, the data still arrives, then end of stream") {
    both_hosts_up();
    const uint64_t bytes = 4 << 20;
    remote_job a("A", "closer", {"mode=dontlinger", "bytes=" + std::to_string(bytes)});
    remote_job b("B", "sink", {"port=" + a.need("port", 120)});
    const int status_a = a.wait(300), status_b = b.wait(120);
    INFO(a.output() << "\n" << b.output());
    REQUIRE(status_a == 0);
    REQUIRE(status_b == 0);
    CHECK(a["sent_rc"] == "0");
    CHECK(a["close"] == "0");
    CHECK(a.number("close_us") < 1000000);
    CHECK(b["bytes"] == std::to_string(bytes));
    CHECK(b["first_bad"] == "-1");
    CHECK(b["fnv"] == a["sent_fnv"]);
    CHECK(b["last"] == "0"); // end of stream
    CHECK(a["closed_ms"] != "-1"); // the graceful close finished: everything let go
    CHECK(a["graceful_completed"] == "1");
    CHECK(a["resets_sent"] == "0");
    MESSAGE("close took " << a["close_us"] << " us; the connection was gone " << a["closed_ms"] << " ms later");
}

TEST_CASE("close-linger0: SO_LINGER {1, 0} on host A, host B's blocked receive fails -ECONNRESET") {
    both_hosts_up();
    remote_job a("A", "closer", {"mode=linger0", "hold_ms=2000"});
    remote_job b("B", "reset-watcher", {"port=" + a.need("port", 120)});
    const int status_b = b.wait(180), status_a = a.wait(120);
    INFO(a.output() << "\n" << b.output());
    REQUIRE(status_a == 0);
    REQUIRE(status_b == 0);
    CHECK(a["close"] == "0");
    CHECK(a.number("close_us") < 1000000);
    CHECK(b["recv"] == std::to_string(SANSOCK_E_CONNRESET));
    CHECK(b.number("recv_ms") >= 1500); // it did wait for A's close (A holds 2 s first)
    CHECK(b.number("recv_ms") < 30000);
    CHECK(b["send_after"] == std::to_string(SANSOCK_E_CONNRESET));
    CHECK(b["recv_after"] == std::to_string(SANSOCK_E_CONNRESET));
    CHECK(a["closed_ms"] != "-1");
    CHECK(b["closed_ms"] != "-1");
    CHECK(a["resets_sent"] == "1");
    MESSAGE("B's receive failed " << b["recv_ms"] << " ms after it began (A closed 2 s after B's ready byte)");
}

TEST_CASE("close-linger: SO_LINGER {1, 60} blocking returns 0 once host B has taken everything") {
    both_hosts_up();
    remote_job a("A", "closer", {"mode=linger", "linger_s=60"});
    remote_job b("B", "sink", {"port=" + a.need("port", 120), "pause_ms=6000"});
    const int status_a = a.wait(300), status_b = b.wait(120);
    INFO(a.output() << "\n" << b.output());
    REQUIRE(status_a == 0);
    REQUIRE(status_b == 0);
    CHECK(a["close"] == "0");
    // B reads nothing for its first 6 s: the close had to wait for it.
    CHECK(a.number("close_us") >= 2000000);
    CHECK(a.number("close_us") < 60000000);
    CHECK(b["bytes"] == a["queued"]);
    CHECK(b["first_bad"] == "-1");
    CHECK(b["last"] == "0");
    CHECK(a["resets_sent"] == "0");
    MESSAGE(a["queued"] << " bytes queued; the lingering close returned 0 after " << a.number("close_us") / 1000
                        << " ms");
}

// ---- host death --------------------------------------------------------------------------------


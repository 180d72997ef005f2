// SPDX-License-Identifier: MIT
// What a test needs to know about the RDMA devices of the machine it runs on.
#pragma once

#include <map>
#include <string>

namespace sansock::test {

// True when at least one RDMA device has an ACTIVE port. With $SANSOCK_TEST_DEVICE set, only
// that device is considered (here and in test_address).
bool rdma_device_present();

// The IPv4 address rdma_cm tests bind and connect to: $SANSOCK_TEST_ADDR if set, else the
// first IPv4-mapped GID of an active RoCE port (on SoftRoCE, the address of its netdev).
// Empty when there is none.
std::string test_address();

// Object counts (pd, cq, qp, cm_id, mr, ctx, ...) from `rdma resource show`, summed over all
// devices.
// rdma_resource_count_of_pid: the objects of one type that any thread of `pid` created.
// Empty map when the rdma tool cannot be run.
std::map<std::string, long> rdma_resource_counts();
long rdma_resource_count_of_pid(const std::string& type, int pid);

// Runs a shell command, returning its standard output (empty on failure).
std::string command_output(const std::string& command);

} // namespace sansock::test

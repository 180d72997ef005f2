#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs a program given the RDMA test address, or exits 77 (SKIP) when there is no device.
# usage: run-with-device.sh PROGRAM [ARG...]   (the address is added as the first argument)
set -u
if ! ibv_devinfo 2>/dev/null | grep -q PORT_ACTIVE; then
  echo "no RDMA device with an active port: skipping (exit 77)" >&2
  exit 77
fi
address=${SANSOCK_TEST_ADDR:-}
if [ -z "$address" ]; then
  # The first IPv4 address of a netdev under an RDMA link (rxe0 over veth0, say).
  netdev=$(rdma link show | sed -n 's/.*state ACTIVE.*netdev \([^ ]*\).*/\1/p' | head -n1)
  address=$(ip -4 -o addr show dev "$netdev" 2>/dev/null | awk '{ sub(/\/.*/, "", $4); print $4; exit }')
fi
[ -n "$address" ] || { echo "no IPv4 address for the RDMA device: set SANSOCK_TEST_ADDR" >&2; exit 77; }
program=$1; shift
exec "$program" "$address" "$@"

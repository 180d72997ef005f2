#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs every sansock-bench scenario (the --short plan) with tiny iteration counts, so it cannot
# silently break: every scenario must give a row per system, measured or n/a with a reason,
# and none may fail. SKIP (77) without an RDMA device.
# usage: bench-smoke.sh PATH/TO/sansock-bench
set -u
bench=$1
if ! ibv_devinfo 2>/dev/null | grep -q PORT_ACTIVE; then
  echo "no RDMA device with an active port: skipping (exit 77)" >&2
  exit 77
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$bench" --short --iterations 2 --warmup 1 --stream-bytes 1048576 --json "$out/r.json" --csv "$out/r.csv"
status=$?
"$(dirname "$0")/check-bench-json" bench-smoke "$out/r.json" || status=1
[ -s "$out/r.csv" ] || { echo "bench-smoke: no CSV written" >&2; status=1; }
exit $status

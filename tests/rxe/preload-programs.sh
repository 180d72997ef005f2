#!/bin/bash
# SPDX-License-Identifier: MIT
# Real programs nobody here wrote (iperf3, sockperf, socat, from Debian) and one plain POSIX
# program of ours run unmodified under sansock-run on the RDMA device. Each check says what it
# expects; a connection counts as carried by sansock only if sansock's own counters (the
# preload's report at exit) say so. SKIP (77) without an RDMA device or a program.
# usage: preload-programs.sh SANSOCK_RUN LINGER_PROGRAM
set -u
run=(sh "$1") # sansock-run (a build tree's copy is not executable)
linger=$2
if ! ibv_devinfo 2>/dev/null | grep -q PORT_ACTIVE; then
  echo "no RDMA device with an active port: skipping (exit 77)" >&2
  exit 77
fi
for program in iperf3 sockperf socat python3; do
  command -v $program >/dev/null || { echo "$program is missing (scripts/install-deps test): skipping (exit 77)" >&2; exit 77; }
done
address=${SANSOCK_TEST_ADDR:-}
if [ -z "$address" ]; then
  netdev=$(rdma link show | sed -n 's/.*state ACTIVE.*netdev \([^ ]*\).*/\1/p' | head -n1)
  address=$(ip -4 -o addr show dev "$netdev" 2>/dev/null | awk '{ sub(/\/.*/, "", $4); print $4; exit }')
fi
[ -n "$address" ] || { echo "no IPv4 address for the RDMA device: set SANSOCK_TEST_ADDR" >&2; exit 77; }

work=$(mktemp -d /tmp/sansock-preload.XXXXXX)
cleanup() {
  jobs -p | xargs -r kill 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
failures=0
check() { # check DESCRIPTION COMMAND...: runs the command, says ok or FAIL
  local what=$1; shift
  if "$@"; then echo "ok    $what"; else echo "FAIL  $what"; failures=$((failures + 1)); fi
}
# The value of one counter in a report file (the sum over the processes that wrote it).
counter() { awk -v k="$2" '$1 == k { t += $2 } END { print t + 0 }' "$1" 2>/dev/null || echo 0; }
at_least() { [ "$(counter "$1" "$2")" -ge "$3" ]; }
exactly() { [ "$(counter "$1" "$2")" -eq "$3" ]; }
# Waits (at most 10 s) until something listens on TCP port $1.
wait_listen() {
  for _ in $(seq 100); do
    ss -ltn 2>/dev/null | grep -q ":$1 " && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1 after 10 s" >&2
  return 1
}

# --- iperf3: both ends preloaded; plain, -R, -P 4 ---------------------------------------------
iperf_case() { # iperf_case NAME PORT CLIENT_ARGS...
  local name=$1 port=$2; shift 2
  rm -f "$work/$name".*
  SANSOCK_PRELOAD_VERBOSE=1 timeout 120 "${run[@]}" --report "$work/$name.server" iperf3 -s -1 -B "$address" -p "$port" --json > "$work/$name.server.json" 2> "$work/$name.server.err" &
  local server=$!
  wait_listen "$port" || return 1
  SANSOCK_PRELOAD_VERBOSE=1 timeout 120 "${run[@]}" --report "$work/$name.client" iperf3 -c "$address" -p "$port" -n 128M --json "$@" > "$work/$name.client.json" 2> "$work/$name.client.err"
  local client=$?
  wait $server
  local served=$?
  # A connection that fell back to TCP says why (with SANSOCK_PRELOAD_VERBOSE=1).
  grep -h "kernel TCP" "$work/$name.client.err" "$work/$name.server.err" 2>/dev/null | sed 's/^/  /'
  [ $client = 0 ] && [ $served = 0 ] || { echo "iperf3 $name: client $client, server $served"; tail -5 "$work/$name.client.json" "$work/$name.client.err" "$work/$name.server.err"; return 1; }
  python3 - "$work/$name" "$*" <<'PY' || return 1
import json, sys
base = sys.argv[1]
client = json.load(open(base + ".client.json"))
sent = client["end"]["sum_sent"]["bytes"]
received = client["end"]["sum_received"]["bytes"]
report = {}
for line in open(base + ".server"):
    k, v = line.split()
    report[k] = report.get(k, 0) + int(v)
print(f"  iperf3: sent {sent} B, received {received} B; server's sansock counters: "
      f"{report['connections_accepted']} accepted, {report['bytes_received']} B in, {report['bytes_sent']} B out")
streams = 4 if "-P 4" in sys.argv[2] else 1
assert sent >= 128 << 20, "iperf3 sent less than it was asked to"
# iperf3's receiver stops reading when the sender's TEST_END comes, so what was still in its
# receive buffer is not counted: up to a window per stream (kernel TCP in this VM: 131,390
# and 262,144 bytes short of 64 MiB in two runs).
assert sent - streams * (1 << 20) <= received <= sent, "iperf3 received more than a window less than it sent"
# Every byte iperf3 counted went through the server's switch (in, or out with -R).
moved = max(report["bytes_received"], report["bytes_sent"])
assert moved >= received, "sansock carried fewer bytes than iperf3 counted: the data went over the kernel"
PY
}
check "iperf3 -n 128M, both ends under sansock-run: byte counts agree, carried by sansock" iperf_case plain 5201
check "  ... 2 connections (control, data) went over sansock" at_least "$work/plain.client" connections_opened 2
check "iperf3 -R (server sends)" iperf_case reverse 5202 -R
check "iperf3 -P 4 (four parallel streams)" iperf_case parallel 5203 -P 4
check "  ... 5 connections (control, 4 data) went over sansock" at_least "$work/parallel.server" connections_accepted 5

# IPv6: the server listens on :: (iperf3's default, both families), the client dials the
# device's IPv6 address (SANSOCK_TEST_ADDR6, default fd00::1 from tests/vm/setup-rxe).
ipv6_case() {
  local port=5204 address6=${SANSOCK_TEST_ADDR6:-fd00::1}
  timeout 120 "${run[@]}" --report "$work/ipv6.server" iperf3 -s -1 -p $port > /dev/null 2> "$work/ipv6.server.err" &
  local server=$!
  wait_listen $port || return 1
  timeout 120 "${run[@]}" --report "$work/ipv6.client" iperf3 -c "$address6" -p $port -n 32M > "$work/ipv6.client.out" 2>&1 \
    || { tail -5 "$work/ipv6.client.out"; return 1; }
  wait $server || return 1
  at_least "$work/ipv6.client" connections_opened 2 && at_least "$work/ipv6.server" connections_accepted 2
}
check "iperf3 over IPv6 to a server on :: (both families), carried by sansock" ipv6_case

# --- sockperf ping-pong ---------------------------------------------------------------------
sockperf_case() {
  timeout 60 "${run[@]}" sockperf sr --tcp -i "$address" -p 11111 > "$work/sockperf.server" 2>&1 &
  local server=$!
  wait_listen 11111 || return 1
  timeout 60 "${run[@]}" --report "$work/sockperf.report" sockperf pp --tcp -i "$address" -p 11111 -t 2 > "$work/sockperf.client" 2>&1
  local rc=$?
  kill $server 2>/dev/null; wait $server 2>/dev/null
  grep -E "avg-(rtt|lat)|Summary: (Latency|RTT)" "$work/sockperf.client" | sed 's/^/  /'
  [ $rc = 0 ] && grep -qE "Summary: (Latency|RTT) is" "$work/sockperf.client" || { tail -20 "$work/sockperf.client"; return 1; }
  at_least "$work/sockperf.report" connections_opened 1
}
check "sockperf ping-pong over TCP under sansock-run completes and reports its latency" sockperf_case

# --- socat: a file copied, then end of stream; the sender exits right after its close ------
socat_case() {
  head -c 33554432 /dev/urandom > "$work/in"
  timeout 60 "${run[@]}" --report "$work/socat.server" socat -u TCP-LISTEN:7001,bind="$address",reuseaddr OPEN:"$work/out",creat,trunc &
  local server=$!
  wait_listen 7001 || return 1
  timeout 60 "${run[@]}" --report "$work/socat.client" socat -u OPEN:"$work/in" TCP:"$address":7001 || return 1
  wait $server || return 1
  [ "$(sha256sum < "$work/in")" = "$(sha256sum < "$work/out")" ] || { echo "  socat: the copy differs"; return 1; }
  at_least "$work/socat.client" connections_opened 1 && at_least "$work/socat.server" connections_accepted 1
}
check "socat copies 32 MiB with the same checksum, then end of stream (carried by sansock)" socat_case

# --- close semantics of a plain program -------------------------------------------------------
close_case() { # close_case MODE DELAY_MS EXPECT_SERVER EXPECT_CLOSE_REGEX
  local mode=$1 delay=$2 expect=$3 closing=$4 port=$((7100 + RANDOM % 500))
  timeout 60 "${run[@]}" "$linger" receive "$address" $port "$delay" > "$work/close.server" 2>&1 &
  local server=$!
  wait_listen $port || return 1
  # More than the peer's receive window, so that close has data to wait for, and less than
  # that and the send buffer together, so that every write returns at once: 300,000 bytes for
  # session protocol 2 (a 262,144-byte window, 256 KiB of send buffer) and 3 (6 DATA messages
  # of 16,368 bytes in the peer's receive buffers, 256 KiB of send buffer) alike.
  timeout 60 "${run[@]}" "$linger" send "$address" $port "$mode" 300000 > "$work/close.client" 2>&1 || return 1
  wait $server
  echo "  $mode: sender '$(cat "$work/close.client")', receiver '$(tail -1 "$work/close.server")'"
  grep -qE "$expect" "$work/close.server" && grep -qE "$closing" "$work/close.client"
}
# "At once" is under a second; the receiver reads after two, so a close that waited shows.
check "SO_LINGER {1, 0}: close returns at once, the peer sees a reset" \
  close_case abort 500 "reset" "^close 0 errno 0 after [0-9]{1,3} ms"
check "SO_LINGER {1, 10} on a blocking socket: close waits for the data (the peer reads after 2 s)" \
  close_case linger 2000 "bytes 300000 end" "^close 0 errno 0 after (1[5-9][0-9][0-9]|[2-9][0-9]{3}|[0-9]{5}) ms"
check "default close returns at once, the program exits, and the data still arrives" \
  close_case default 2000 "bytes 300000 end" "^close 0 errno 0 after [0-9]{1,3} ms"

# --- fallback: one end on the kernel ----------------------------------------------------------
mixed_case() { # mixed_case WHICH_END_PRELOADED PORT
  local preloaded=$1 port=$2 server_run=() client_run=()
  rm -f "$work/mixed".*
  if [ "$preloaded" = client ]; then client_run=("${run[@]}" --report "$work/mixed.report"); else server_run=("${run[@]}" --report "$work/mixed.report"); fi
  timeout 60 ${server_run[@]+"${server_run[@]}"} iperf3 -s -1 -B "$address" -p "$port" > /dev/null 2>&1 &
  local server=$!
  wait_listen "$port" || return 1
  timeout 60 ${client_run[@]+"${client_run[@]}"} iperf3 -c "$address" -p "$port" -n 16M > /dev/null 2>&1 || return 1
  wait $server || return 1
  if [ "$preloaded" = client ]; then
    exactly "$work/mixed.report" connections_opened 0 && at_least "$work/mixed.report" fallbacks 2
  else
    # The report exists only if the server's preload made its dual listener (a context); with
    # no preload there is none, and "0 accepted" would prove nothing.
    [ -s "$work/mixed.report" ] || { echo "  no report: the server ran without the preload"; return 1; }
    exactly "$work/mixed.report" connections_accepted 0
  fi
}
check "a preloaded client against a kernel-only server falls back to TCP" mixed_case client 5301
check "a kernel client against a preloaded server is served over TCP" mixed_case server 5302

echo "preload programs: $failures failed"
[ $failures = 0 ]

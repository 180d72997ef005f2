#!/bin/sh
# SPDX-License-Identifier: MIT
# sansock-bench's two-host mode as two processes: `--server --once` on one address and
# `--client` against it from another (in the VM: 10.0.0.1 on rxe0 and 10.0.0.2 on rxe1), every
# scenario of the --short plan with tiny counts. Every scenario must give a row per system,
# measured or n/a with a reason; no sansock scenario may fail (rsockets may hang in its own
# close: reported, allowed); the server must end by itself after the client's run with status
# 0 (any failed peer half makes it 1). Also: bad arguments and an unreachable server fail fast
# with a message. SKIP (77) without an RDMA device.
# usage: bench-twohost.sh PATH/TO/sansock-bench
set -u
bench=$1
if ! ibv_devinfo 2>/dev/null | grep -q PORT_ACTIVE; then
  echo "no RDMA device with an active port: skipping (exit 77)" >&2
  exit 77
fi
# Two addresses of RDMA netdevs if there are two (server on the first), else one for both.
addresses=$(for netdev in $(rdma link show | sed -n 's/.*state ACTIVE.*netdev \([^ ]*\).*/\1/p'); do
  ip -4 -o addr show dev "$netdev" 2>/dev/null | awk '{ sub(/\/.*/, "", $4); print $4; exit }'
done)
server_addr=${SANSOCK_TEST_ADDR:-$(echo "$addresses" | sed -n 1p)}
client_addr=$(echo "$addresses" | sed -n 2p)
[ -n "$client_addr" ] || client_addr=$server_addr
[ -n "$server_addr" ] || { echo "no IPv4 address for the RDMA device: set SANSOCK_TEST_ADDR" >&2; exit 77; }
port=$((20000 + $$ % 10000))
out=$(mktemp -d)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
  rm -rf "$out"
}
trap cleanup EXIT
fail() { echo "bench-twohost: $*" >&2; exit 1; }

# Bad input: a clear message and a non-zero exit, at once.
"$bench" --server --client "$server_addr" >/dev/null 2>"$out/err" && fail "--server --client was accepted"
grep -q "exclude each other" "$out/err" || fail "no message for --server --client: $(cat "$out/err")"
# Nobody listens on this port: refused at once, the message names the address and the errno.
start=$(date +%s)
timeout 60 "$bench" --client "$server_addr" --port $((port + 1)) --address "$client_addr" --short \
  >/dev/null 2>"$out/err"
status=$?
[ $status -ne 0 ] && [ $status -ne 124 ] || fail "a client without a server: status $status"
grep -q "cannot reach the server at $server_addr:$((port + 1)): .*errno" "$out/err" \
  || fail "unclear message for an unreachable server: $(cat "$out/err")"
[ $(($(date +%s) - start)) -le 15 ] || fail "an unreachable server took more than 15 s to report"

echo "bench-twohost: server on $server_addr:$port, client on $client_addr"
"$bench" --server --once --address "$server_addr" --port "$port" 2>"$out/server.log" &
server_pid=$!
i=0
until grep -q "control channel on TCP port" "$out/server.log" 2>/dev/null; do
  i=$((i + 1)); [ $i -le 100 ] || fail "the server did not start: $(cat "$out/server.log")"
  kill -0 "$server_pid" 2>/dev/null || fail "the server exited: $(cat "$out/server.log")"
  sleep 0.1
done
"$bench" --client "$server_addr" --port "$port" --address "$client_addr" --short --iterations 2 --warmup 1 \
  --stream-bytes 1048576 --json "$out/r.json" --csv "$out/r.csv"
status=$?
# The server ends by itself after the client's run (its `bye`), bounded.
i=0
while kill -0 "$server_pid" 2>/dev/null; do
  i=$((i + 1)); [ $i -le 600 ] || { status=1; echo "bench-twohost: the server did not exit after the run" >&2; break; }
  sleep 0.1
done
wait "$server_pid"
server_status=$?
server_pid=
echo "bench-twohost: server log:" >&2
cat "$out/server.log" >&2
[ $server_status -eq 0 ] || { echo "bench-twohost: the server exited with $server_status (a peer half failed)" >&2; status=1; }
"$(dirname "$0")/check-bench-json" bench-twohost "$out/r.json" --two-host || status=1
[ -s "$out/r.csv" ] || { echo "bench-twohost: no CSV written" >&2; status=1; }
exit $status

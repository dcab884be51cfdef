#!/usr/bin/env bash
# Long run (issue 6): ratesync under a steady load for a long time, watching
# for leaks. api_bench runs a token bucket + max_concurrent limiter (leases,
# releases, renewals) on a redis store with the default pool, 200 callers over
# 10,000 keys, paced at a fixed rate (open loop), against a private
# redis-server. Every INTERVAL seconds it samples the client's RSS, threads
# and open file descriptors, and the server's connected clients, memory and
# lease count. At the end it compares the last sample with the first one after
# warm-up and fails if the client's RSS grew by more than 10 % (and 4 MiB),
# or its connections or descriptors grew at all.
#
# Usage: bench/long_run.sh [--seconds 600] [--rate 5000] [--interval 30]
#   env: BUILD_DIR (default build-bench; api_bench is built if needed)
# Not a test (it takes 10 minutes); docs/reliability.md quotes its output.
set -euo pipefail

SECONDS_TOTAL=600
RATE=5000
INTERVAL=30
while [[ $# -gt 0 ]]; do
  case "$1" in
  --seconds) SECONDS_TOTAL="$2"; shift 2 ;;
  --rate) RATE="$2"; shift 2 ;;
  --interval) INTERVAL="$2"; shift 2 ;;
  -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
  *) echo "long_run.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-bench}"
BENCH="$BUILD_DIR/bench/api_bench"
if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
  cmake -S "$ROOT" -B "$BUILD_DIR" -DRATESYNC_BUILD_BENCH=ON -DCMAKE_BUILD_TYPE=Release \
    -DRATESYNC_BUILD_TESTS=OFF -DRATESYNC_BUILD_EXAMPLES=OFF >/dev/null
fi
cmake --build "$BUILD_DIR" --target api_bench -j2 >/dev/null

# shellcheck source=private_redis.sh
source "$ROOT/bench/private_redis.sh"
start_private_redis long_run.sh

"$BENCH" --engine redis --url "redis://127.0.0.1:$PORT" --strategy token_bucket_concurrent \
  --callers 200 --keys 10000 --pool default --rate "$RATE" --warmup 1 \
  --seconds "$SECONDS_TOTAL" >"$TMP/api_bench.out" 2>&1 &
BENCH_PID=$!

field() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$BENCH_PID/status"; }
info() { cli INFO "$1" | tr -d '\r' | awk -F: -v k="$2" '$1 == k {print $2}'; }
leases() { # every lease set under the bench's prefix
  local n=0 k
  while read -r k; do
    [[ -n "$k" ]] && n=$((n + $(cli ZCARD "$k")))
  done < <(cli --scan --pattern 'rate_limit:*:cc')
  echo "$n"
}

printf '%8s %10s %8s %6s %12s %14s %8s\n' elapsed rss_kib threads fds redis_conns redis_used_kib leases
first_rss="" first_fds="" first_conns=""
last_rss="" last_fds="" last_conns=""
start=$(date +%s)
sleep 5
while kill -0 "$BENCH_PID" 2>/dev/null; do
  rss="$(field VmRSS)"
  threads="$(field Threads)"
  fds="$(ls "/proc/$BENCH_PID/fd" 2>/dev/null | wc -l)"
  conns=$(($(info clients connected_clients) - 1)) # minus redis-cli itself
  used=$(($(info memory used_memory) / 1024))
  [[ -z "$rss" ]] && break
  printf '%8s %10s %8s %6s %12s %14s %8s\n' "$(($(date +%s) - start))s" "$rss" "$threads" "$fds" \
    "$conns" "$used" "$(leases)"
  if [[ -z "$first_rss" ]]; then first_rss="$rss" first_fds="$fds" first_conns="$conns"; fi
  last_rss="$rss" last_fds="$fds" last_conns="$conns"
  sleep "$INTERVAL"
done
wait "$BENCH_PID" || { echo "long_run.sh: api_bench failed:" >&2; cat "$TMP/api_bench.out" >&2; exit 1; }
tail -n 1 "$TMP/api_bench.out"

verdict=0
growth=$((last_rss - first_rss))
if ((growth > 4096 && growth * 10 > first_rss)); then
  echo "RSS grew from $first_rss KiB to $last_rss KiB" >&2
  verdict=1
fi
if ((last_fds > first_fds || last_conns > first_conns)); then
  echo "descriptors $first_fds -> $last_fds, connections $first_conns -> $last_conns" >&2
  verdict=1
fi
echo "RSS $first_rss -> $last_rss KiB, descriptors $first_fds -> $last_fds, connections $first_conns -> $last_conns: $([[ $verdict == 0 ]] && echo flat || echo GROWING)"
exit "$verdict"

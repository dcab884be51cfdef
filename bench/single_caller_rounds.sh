#!/usr/bin/env bash
# A single caller's p50 against redis-benchmark -c 1, in alternating rounds on
# one private redis-server (the same script, key and arguments):
#
#   redis-benchmark -c 1 -P 1 -n 20000 EVALSHA <token_bucket sha> 1 rate_limit:{bench}:tb \
#     10 1000000000 1 -1 10000 0
#   api_bench --engine redis --callers 1 --keys 1 --pool one --seconds 1.5 [flags]
#
# One line per round: the reference's p50, then each client's, in µs.
# Usage: bench/single_caller_rounds.sh [--rounds N] NAME="API_BENCH [FLAGS]"...
#   e.g. bench/single_caller_rounds.sh --rounds 8 default=build-bench/bench/api_bench \
#          io="build-bench/bench/api_bench --io-thread"
# Needs redis-server, redis-cli and redis-benchmark on PATH (Debian/Ubuntu:
# apt-get install redis-server redis-tools), and api_bench built
# (cmake -S . -B build-bench -DRATESYNC_BUILD_BENCH=ON && cmake --build build-bench).
set -euo pipefail
ROUNDS=8
CLIENTS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
  --rounds) ROUNDS="$2"; shift 2 ;;
  -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
  *=*) CLIENTS+=("$1"); shift ;;
  *) echo "single_caller_rounds.sh: expected NAME=COMMAND, got: $1" >&2; exit 2 ;;
  esac
done
[[ ${#CLIENTS[@]} -gt 0 ]] || { echo "single_caller_rounds.sh: no client given (NAME=COMMAND)" >&2; exit 2; }
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/private_redis.sh
source "$ROOT/bench/private_redis.sh"
start_private_redis single_caller_rounds.sh
SHA=$(redis-cli -p "$PORT" -x SCRIPT LOAD <"$ROOT/lua/token_bucket.lua")
for _ in $(seq 1 "$ROUNDS"); do
  ref=$(redis-benchmark -p "$PORT" -c 1 -P 1 -n 20000 --csv EVALSHA "$SHA" 1 'rate_limit:{bench}:tb' \
    10 1000000000 1 -1 10000 0 2>/dev/null | tail -1 | awk -F'","' '{print $3 * 1000}')
  line="ref $ref"
  for c in "${CLIENTS[@]}"; do
    # shellcheck disable=SC2086 # the command's flags split on purpose
    p50=$(${c#*=} --engine redis --url "redis://127.0.0.1:$PORT" --callers 1 --keys 1 --pool one \
      --seconds 1.5 2>&1 | tail -1 | grep -o 'p50 [0-9.]*' | awk '{print $2}')
    line="$line ${c%%=*} $p50"
  done
  echo "$line"
done

#!/usr/bin/env bash
# Server cost of one token-bucket decision: lua/token_bucket.lua against the
# usual HMGET / HSET / PEXPIRE form (bench/reference/token_bucket_hash.lua), in
# the same run, on a redis-server started here (no persistence, loopback, a
# free port, a temp dir; stopped on exit).
#
# For each repetition, scenario and script (the scripts alternate which goes
# first): FLUSHALL, CONFIG RESETSTAT, then
#
#   redis-benchmark -c 8 -P 16 -r 10000 -n N EVALSHA <sha> 1 rl:__rand_int__ <args...>
#
# (8 connections x 16 pipelined, keys spread over 10,000 names), then the
# server's own time per script call: `usec_per_call` of evalsha in
# INFO commandstats. Prints medians with min-max, and the ratio ours /
# reference: of the medians, and the median (min-max) of the per-repetition
# ratios (each repetition runs both scripts back to back, so that one is the
# steadier figure on a shared machine).
#
# Scenarios (ARGV: interval_us burst cost max_wait_us margin_us max_concurrent):
#   admit  1000/s, burst 1000: every decision admits; a key is touched ~10
#          times a second, so its bucket is full again each time
#   live   10/s, burst 1,000,000: every decision admits, each takes 100 ms of
#          the bucket, so keys stay live (read, then overwritten)
#   deny   1 per 10 s, burst 1: each key admits once, then nearly every
#          decision is refused
#   hot    10 keys (-r 10), 100,000/s, burst 1000: every
#          decision admits, each key is touched every ~0.1 ms
# With max_concurrent (a second key, the lease set; ARGV adds lease id and
# lease time to live; not in the default set, and for the token-bucket
# scripts only: the reference has no leases):
#   leases as admit, max_concurrent 1,000,000, leases of 1 ms: the lease set
#          has expired by the next touch, as a set whose leases were released
#   held   the same with leases of 30 s and one lease id: the set stays, with
#          one member
#
# Usage: bench/run_script_bench.sh [--reps N] [--requests N] [--scenarios "admit live deny hot"]
#                                  [--script NAME=PATH]...
#   --script adds a script (same ARGV) to the comparison; the default set is
#   ref=bench/reference/token_bucket_hash.lua ours=lua/token_bucket.lua.
#   The first script given (or ref) is the reference of the ratios.
#   env: RESULTS_DIR (raw outputs; default build-bench/script-bench-results/<timestamp>)
# Needs redis-server, redis-cli and redis-benchmark on PATH (Debian/Ubuntu:
# apt-get install redis-server redis-tools). Builds and installs nothing.
set -euo pipefail

REPS=5
REQUESTS=300000
SCENARIOS="admit live deny hot"
NAMES=()
PATHS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
  --reps) REPS="$2"; shift 2 ;;
  --requests) REQUESTS="$2"; shift 2 ;;
  --scenarios) SCENARIOS="$2"; shift 2 ;;
  --script) NAMES+=("${2%%=*}"); PATHS+=("${2#*=}"); shift 2 ;;
  -h | --help) sed -n '2,36p' "$0"; exit 0 ;;
  *) echo "run_script_bench.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ ${#NAMES[@]} -eq 0 ]]; then
  NAMES=(ref ours)
  PATHS=("$ROOT/bench/reference/token_bucket_hash.lua" "$ROOT/lua/token_bucket.lua")
fi

scenario_args() {
  case "$1" in
  admit) echo "1000 1000 1 0 10000 0" ;;
  live) echo "100000 1000000 1 0 10000 0" ;;
  deny) echo "10000000 1 1 0 10000 0" ;;
  hot) echo "10 1000 1 0 10000 0" ;;
  leases) echo "1000 1000 1 0 0 1000000 lease 1000" ;;
  held) echo "1000 1000 1 0 10000 1000000 lease 30000000" ;;
  *) echo "run_script_bench.sh: unknown scenario: $1" >&2; exit 2 ;;
  esac
}

scenario_keys() { if [[ "$1" == hot ]]; then echo 10; else echo 10000; fi; }
# The script's keys: the bucket, and the lease set where there are leases.
scenario_key_args() {
  case "$1" in
  leases | held) echo "2 rl:{__rand_int__}:tb rl:{__rand_int__}:cc" ;;
  *) echo "1 rl:__rand_int__" ;;
  esac
}


RESULTS_DIR="${RESULTS_DIR:-$ROOT/build-bench/script-bench-results/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$RESULTS_DIR"
# shellcheck source=private_redis.sh
source "$ROOT/bench/private_redis.sh"
start_private_redis run_script_bench.sh
SHAS=()
for i in "${!NAMES[@]}"; do
  sha="$(cli SCRIPT LOAD "$(cat "${PATHS[$i]}")")"
  if [[ ! "$sha" =~ ^[0-9a-f]{40}$ ]]; then
    echo "run_script_bench.sh: SCRIPT LOAD ${PATHS[$i]} failed: $sha" >&2
    exit 1
  fi
  SHAS+=("$sha")
done
REDIS_VERSION="$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')"

# INFO commandstats field $2 of command $1 (0 when absent).
stat() {
  tr -d '\r' <"$3" | awk -F'[:,=]' -v c="cmdstat_$1" -v f="$2" '
    $1 == c { for (i = 2; i < NF; i += 2) if ($i == f) v = $(i + 1) }
    END { print v == "" ? 0 : v }'
}
cpu_line() { awk '/^cpu /{t=0; for (i=2;i<=NF;i++) t+=$i; print $9, t}' /proc/stat; }

ROWS="$RESULTS_DIR/rows.csv"
echo "scenario,script,rep,usec_per_call,rps,calls,failed_calls,writes_per_call,steal_pct" >"$ROWS"
# One measured run: $1 scenario, $2 script index, $3 rep.
measure() {
  local scenario="$1" i="$2" rep="$3"
  local name="${NAMES[$i]}" base="$RESULTS_DIR/$scenario-${NAMES[$i]}-$rep"
  local args keys
  read -r -a args <<<"$(scenario_args "$scenario")"
  read -r -a keys <<<"$(scenario_key_args "$scenario")"
  cli FLUSHALL >/dev/null
  cli CONFIG RESETSTAT >/dev/null
  local c0 c1
  c0="$(cpu_line)"
  redis-benchmark -p "$PORT" -c 8 -P 16 -r "$(scenario_keys "$scenario")" -n "$REQUESTS" --csv \
    EVALSHA "${SHAS[$i]}" "${keys[@]}" "${args[@]}" >"$base.out" 2>"$base.err"
  c1="$(cpu_line)"
  cli INFO commandstats >"$base.stats"
  local upc calls failed rps writes steal
  upc="$(stat evalsha usec_per_call "$base.stats")"
  calls="$(stat evalsha calls "$base.stats")"
  failed="$(stat evalsha failed_calls "$base.stats")"
  rps="$(tail -n 1 "$base.out" | tr -d '"' | awk -F, '{printf "%.0f", $2}')"
  # Writes the script made, per call (SET, HSET; PEXPIRE counted apart).
  writes="$(awk -v a="$(stat set calls "$base.stats")" -v b="$(stat hset calls "$base.stats")" \
    -v c="$calls" 'BEGIN{printf "%.3f", (c > 0 ? (a + b) / c : 0)}')"
  steal="$(awk -v a="$c0" -v b="$c1" 'BEGIN{split(a,x," "); split(b,y," "); d=y[2]-x[2]; v = 0; if (d > 0) v = 100*(y[1]-x[1])/d; printf "%.0f", v}')"
  if [[ "$calls" != "$REQUESTS" || "$failed" != 0 ]]; then
    echo "run_script_bench.sh: $name/$scenario: $calls calls, $failed failed (expected $REQUESTS, 0); see $base.*" >&2
    tr -d '\r' <"$base.stats" | grep -i 'evalsha\|errorstat' >&2 || true
    exit 1
  fi
  echo "$scenario,$name,$rep,$upc,$rps,$calls,$failed,$writes,$steal" >>"$ROWS"
  printf '  %-6s %-8s rep %s: %6s us/call in redis  %7s calls/s  writes/call %s  steal %s%%\n' \
    "$scenario" "$name" "$rep" "$upc" "$rps" "$writes" "$steal"
}

{
  echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), redis-server $REDIS_VERSION, loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
  for i in "${!NAMES[@]}"; do
    echo "script ${NAMES[$i]}: ${PATHS[$i]#"$ROOT"/} (sha ${SHAS[$i]})"
  done
  for s in $SCENARIOS; do
    echo "$s: redis-benchmark -p $PORT -c 8 -P 16 -r $(scenario_keys "$s") -n $REQUESTS EVALSHA <sha> $(scenario_key_args "$s") $(scenario_args "$s")"
  done
  echo "raw results: $RESULTS_DIR"
} | tee "$RESULTS_DIR/header.txt"

for rep in $(seq 1 "$REPS"); do
  for s in $SCENARIOS; do
    order=("${!NAMES[@]}")
    if ((rep % 2 == 0)); then
      rev=()
      for ((k = ${#order[@]} - 1; k >= 0; k--)); do rev+=("${order[$k]}"); done
      order=("${rev[@]}")
    fi
    for i in "${order[@]}"; do measure "$s" "$i" "$rep"; done
  done
done

echo
awk -F, -v names="${NAMES[*]}" -v scen="$SCENARIOS" '
  function sorted(s, a,   n, i, j, v) {
    n = split(s, a, " ")
    for (i = 2; i <= n; i++) { v = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > v; j--) a[j+1] = a[j]; a[j+1] = v }
    return n
  }
  function med(s,   a, n) { n = sorted(s, a); return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2 }
  function lo(s,   a, n) { n = sorted(s, a); return a[1] }
  function hi(s,   a, n) { n = sorted(s, a); return a[n] }
  NR > 1 {
    k = $1 SUBSEP $2
    upc[k] = upc[k] " " $4; rps[k] = rps[k] " " $5; wr[k] = wr[k] " " $8; st[k] = st[k] " " $9
    byrep[$1 SUBSEP $2 SUBSEP $3] = $4; reps[$3] = 1
  }
  END {
    nn = split(names, nm, " "); ns = split(scen, sc, " ")
    printf "| scenario | script | usec_per_call median (min-max) | / %s: of the medians | / %s per rep: median (min-max) | calls/s median | writes/call | steal |\n", nm[1], nm[1]
    printf "|---|---|---|---|---|---|---|---|\n"
    for (s = 1; s <= ns; s++) for (j = 1; j <= nn; j++) {
      k = sc[s] SUBSEP nm[j]; r0 = sc[s] SUBSEP nm[1]
      if (!(k in upc)) continue
      ratio = "-"; paired = "-"
      if (j > 1) {
        r = ""
        for (rep in reps) if (byrep[r0 SUBSEP rep] > 0) r = r " " byrep[k SUBSEP rep] / byrep[r0 SUBSEP rep]
        ratio = sprintf("%.2f", med(upc[k]) / med(upc[r0]))
        paired = sprintf("%.2f (%.2f-%.2f)", med(r), lo(r), hi(r))
      }
      printf "| %s | %s | %.2f (%.2f-%.2f) | %s | %s | %.0f | %.2f | %.0f%% |\n", sc[s], nm[j],
        med(upc[k]), lo(upc[k]), hi(upc[k]), ratio, paired, med(rps[k]), med(wr[k]), med(st[k])
    }
  }' "$ROWS" | tee "$RESULTS_DIR/summary.md"

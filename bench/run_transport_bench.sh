#!/usr/bin/env bash
# ratesync's Redis transport side by side with redis-benchmark, in the same
# run, on the same redis-server (started here, no persistence, loopback, a free
# port, a temp dir; stopped on exit):
#
#   pipelined: redis-benchmark -c 1 -P 64  vs  transport_bench --callers 64
#              (one connection, 64 requests in flight, EVALSHA of `return 1`)
#   latency:   redis-benchmark -c 1 -P 1   vs  transport_bench --callers 1
#
# For each repetition: CONFIG RESETSTAT, then a run of ~SECONDS each; the two
# clients alternate which goes first. Prints medians with min-max and the ratio
# ours / reference, plus server time per call (INFO commandstats), server and
# client CPU (from /proc/<pid>/stat and the shell's `time`) and CPU steal.
#
# Usage: bench/run_transport_bench.sh [--reps N] [--seconds S] [--with-same-thread]
#   --with-same-thread adds a diagnostic row per configuration: transport_bench
#   --same-thread, the callers on the connection's own thread (no thread hop).
#   env: BUILD_DIR (default build-bench), RESULTS_DIR (raw outputs; default
#        BUILD_DIR/transport-bench-results/<timestamp>)
# Needs redis-server, redis-cli and redis-benchmark on PATH (Debian/Ubuntu:
# apt-get install redis-server redis-tools); builds transport_bench with cmake
# if needed (which needs Google Benchmark for the bench directory). Installs
# nothing.
set -euo pipefail

REPS=3
SECONDS_PER_RUN=3
SAME_THREAD=0
while [[ $# -gt 0 ]]; do
  case "$1" in
  --reps) REPS="$2"; shift 2 ;;
  --seconds) SECONDS_PER_RUN="$2"; shift 2 ;;
  --with-same-thread) SAME_THREAD=1; shift ;;
  -h | --help) sed -n '2,26p' "$0"; exit 0 ;;
  *) echo "run_transport_bench.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-bench}"
BENCH="$BUILD_DIR/bench/transport_bench"


# Build (or bring up to date) only the benchmark, two jobs at most.
if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
  cmake -S "$ROOT" -B "$BUILD_DIR" -DRATESYNC_BUILD_BENCH=ON -DCMAKE_BUILD_TYPE=Release \
    -DRATESYNC_BUILD_TESTS=OFF -DRATESYNC_BUILD_EXAMPLES=OFF >/dev/null
fi
echo "building transport_bench in $BUILD_DIR ..."
if ! cmake --build "$BUILD_DIR" --target transport_bench -j2 >"$BUILD_DIR/transport_bench_build.log" 2>&1; then
  tail -n 40 "$BUILD_DIR/transport_bench_build.log" >&2
  echo "run_transport_bench.sh: building transport_bench failed (log: $BUILD_DIR/transport_bench_build.log)" >&2
  exit 1
fi

RESULTS_DIR="${RESULTS_DIR:-$BUILD_DIR/transport-bench-results/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$RESULTS_DIR"
# shellcheck source=private_redis.sh
source "$ROOT/bench/private_redis.sh"
start_private_redis run_transport_bench.sh
SHA="$(cli SCRIPT LOAD "return 1")"
CLK_TCK="$(getconf CLK_TCK)"
REDIS_VERSION="$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')"

# utime + stime of redis-server, in clock ticks (fields 14 and 15 of stat).
server_ticks() { sed 's/.*) //' "/proc/$REDIS_PID/stat" | awk '{print $12 + $13}'; }
# Machine-wide steal and total jiffies (first line of /proc/stat).
cpu_line() { awk '/^cpu /{t=0; for (i=2;i<=NF;i++) t+=$i; print $9, t}' /proc/stat; }
usec_per_call() {
  cli INFO commandstats | tr -d '\r' | sed -n 's/^cmdstat_evalsha:.*usec_per_call=\([0-9.]*\).*/\1/p'
}

# One measured run. $1 kind (ref|ours|same), $2 config (P64|P1), $3 rep, $4.. command.
# Appends a row to $RESULTS_DIR/rows.csv.
ROWS="$RESULTS_DIR/rows.csv"
echo "kind,config,rep,rps,p50_us,p99_us,server_cpu_pct,client_cpu_pct,server_usec_per_call,steal_pct,writes_per_request,server_cpu_us_per_call,client_cpu_us_per_call" >"$ROWS"
measure() {
  local kind="$1" config="$2" rep="$3"
  shift 3
  local base="$RESULTS_DIR/$config-$kind-$rep"
  cli CONFIG RESETSTAT >/dev/null
  local t0 c0 c1 t1
  t0="$(server_ticks)"
  c0="$(cpu_line)"
  local TIMEFORMAT='%R %U %S'
  { time "$@" >"$base.out" 2>"$base.err"; } 2>"$base.time"
  t1="$(server_ticks)"
  c1="$(cpu_line)"
  local upc
  upc="$(usec_per_call)"
  read -r wall user sys <"$base.time"
  local server_pct client_pct steal_pct
  server_pct="$(awk -v a="$t0" -v b="$t1" -v hz="$CLK_TCK" -v w="$wall" 'BEGIN{printf "%.0f", 100*(b-a)/hz/w}')"
  client_pct="$(awk -v u="$user" -v s="$sys" -v w="$wall" 'BEGIN{printf "%.0f", 100*(u+s)/w}')"
  steal_pct="$(awk -v a="$c0" -v b="$c1" 'BEGIN{split(a,x," "); split(b,y," "); d=y[2]-x[2]; v = 0; if (d > 0) v = 100*(y[1]-x[1])/d; printf "%.0f", v}')"
  local rps p50 p99 wpr
  if [[ "$kind" == ref ]]; then
    # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    IFS=, read -r rps p50 p99 < <(tail -n 1 "$base.out" | tr -d '"' |
      awk -F, '{printf "%.0f,%.1f,%.1f\n", $2, $5*1000, $7*1000}')
    wpr=""
  else
    IFS=, read -r rps p50 p99 wpr < <(grep '^csv,' "$base.out" |
      awk -F, '{printf "%.0f,%.1f,%.1f,%s\n", $6, $7, $8, $13}')
  fi
  # CPU per request: the process's share of a core over the run / requests per second.
  local server_us client_us
  server_us="$(awk -v p="$server_pct" -v r="$rps" 'BEGIN{printf "%.2f", p*1e4/r}')"
  client_us="$(awk -v p="$client_pct" -v r="$rps" 'BEGIN{printf "%.2f", p*1e4/r}')"
  echo "$kind,$config,$rep,$rps,$p50,$p99,$server_pct,$client_pct,$upc,$steal_pct,$wpr,$server_us,$client_us" >>"$ROWS"
  printf '  %-4s %-3s rep %s: %8s req/s  p50 %7s us  p99 %8s us  server %3s%% (%s us/req)  client %3s%% (%s us/req)  EVALSHA %s us/call in redis  steal %s%%\n' \
    "$kind" "$config" "$rep" "$rps" "$p50" "$p99" "$server_pct" "$server_us" "$client_pct" "$client_us" "$upc" "$steal_pct"
}

# Request counts for ~SECONDS_PER_RUN, from a short calibration run each.
calibrate() { # $1 pipeline depth, $2 requests
  redis-benchmark -p "$PORT" -n "$2" -c 1 -P "$1" --csv EVALSHA "$SHA" 0 | tail -n 1 | tr -d '"' |
    awk -F, -v s="$SECONDS_PER_RUN" '{n=int($2*s); print (n<1000 ? 1000 : n)}'
}
N64="$(calibrate 64 200000)"
N1="$(calibrate 1 5000)"

REF64=(redis-benchmark -p "$PORT" -n "$N64" -c 1 -P 64 --csv EVALSHA "$SHA" 0)
REF1=(redis-benchmark -p "$PORT" -n "$N1" -c 1 -P 1 --csv EVALSHA "$SHA" 0)
OURS64=("$BENCH" --url "redis://127.0.0.1:$PORT" --seconds "$SECONDS_PER_RUN" --callers 64)
OURS1=("$BENCH" --url "redis://127.0.0.1:$PORT" --seconds "$SECONDS_PER_RUN" --callers 1)
SAME64=("${OURS64[@]}" --same-thread)
SAME1=("${OURS1[@]}" --same-thread)

{
  echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), redis-server $REDIS_VERSION, loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "script: EVALSHA $SHA 0   (return 1), redis-server on 127.0.0.1:$PORT"
  echo "reference P64: ${REF64[*]}"
  echo "ours      P64: ${OURS64[*]}"
  echo "reference P1:  ${REF1[*]}"
  echo "ours      P1:  ${OURS1[*]}"
  if ((SAME_THREAD)); then
    echo "same      P64: ${SAME64[*]}"
    echo "same      P1:  ${SAME1[*]}"
  fi
  echo "raw results:   $RESULTS_DIR"
} | tee "$RESULTS_DIR/header.txt"

same() { if ((SAME_THREAD)); then measure same "$@"; fi; }
for rep in $(seq 1 "$REPS"); do
  if ((rep % 2 == 1)); then
    measure ref P64 "$rep" "${REF64[@]}"
    measure ours P64 "$rep" "${OURS64[@]}"
    same P64 "$rep" "${SAME64[@]}"
    measure ref P1 "$rep" "${REF1[@]}"
    measure ours P1 "$rep" "${OURS1[@]}"
    same P1 "$rep" "${SAME1[@]}"
  else
    same P64 "$rep" "${SAME64[@]}"
    measure ours P64 "$rep" "${OURS64[@]}"
    measure ref P64 "$rep" "${REF64[@]}"
    same P1 "$rep" "${SAME1[@]}"
    measure ours P1 "$rep" "${OURS1[@]}"
    measure ref P1 "$rep" "${REF1[@]}"
  fi
done

# Medians (min-max) per row, and the ratio ours / reference (of the medians,
# and the spread of the per-repetition ratios).
summarize() {
  awk -F, '
    # Portable awk (mawk has no asort): insertion sort of a space-separated list.
    function sorted(s, a,   n, i, j, v) {
      n = split(s, a, " ")
      for (i = 2; i <= n; i++) { v = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > v; j--) a[j+1] = a[j]; a[j+1] = v }
      return n
    }
    function med(s,   a, n) { n = sorted(s, a); return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2 }
    function lo(s,   a, n) { n = sorted(s, a); return a[1] }
    function hi(s,   a, n) { n = sorted(s, a); return a[n] }
    NR > 1 {
      k = $2 SUBSEP $1
      rps[k] = rps[k] " " $4; p50[k] = p50[k] " " $5; p99[k] = p99[k] " " $6
      scpu[k] = scpu[k] " " $7; ccpu[k] = ccpu[k] " " $8; upc[k] = upc[k] " " $9; steal[k] = steal[k] " " $10
      sus[k] = sus[k] " " $12; cus[k] = cus[k] " " $13
      if ($11 != "" && $11 > 0) rpw[k] = rpw[k] " " 1 / $11
      byrep[$2 SUBSEP $1 SUBSEP $3] = $4
      reps[$3] = 1
    }
    END {
      printf "| row | req/s median (min-max) | p50 us | p99 us | server CPU (us/req) | client CPU (us/req) | EVALSHA usec_per_call | steal |\n"
      printf "|---|---|---|---|---|---|---|---|\n"
      n_cfg = split("P64 P1", cfgs, " ")
      for (c = 1; c <= n_cfg; c++) {
        cfg = cfgs[c]
        for (w = 1; w <= 3; w++) {
          kind = (w == 1) ? "ref" : (w == 2) ? "ours" : "same"
          k = cfg SUBSEP kind
          if (!(k in rps)) continue
          if (kind == "ref") label = (cfg == "P64") ? "redis-benchmark -c 1 -P 64" : "redis-benchmark -c 1 -P 1"
          else if (kind == "ours") label = (cfg == "P64") ? "ratesync, 64 callers, 1 connection" : "ratesync, 1 caller"
          else label = (cfg == "P64") ? "diagnostic: 64 callers on the connection thread" : "diagnostic: 1 caller on the connection thread"
          printf "| %s | %.0f (%.0f-%.0f) | %.0f | %.0f | %.0f%% (%.2f) | %.0f%% (%.2f) | %.2f | %.0f%% |\n", label,
            med(rps[k]), lo(rps[k]), hi(rps[k]), med(p50[k]), med(p99[k]), med(scpu[k]), med(sus[k]),
            med(ccpu[k]), med(cus[k]), med(upc[k]), med(steal[k])
        }
        r = ""
        for (rep in reps) if ((cfg SUBSEP "ref" SUBSEP rep) in byrep && byrep[cfg SUBSEP "ref" SUBSEP rep] > 0)
          r = r " " byrep[cfg SUBSEP "ours" SUBSEP rep] / byrep[cfg SUBSEP "ref" SUBSEP rep]
        ratio[cfg] = sprintf("%s: ours/reference = %.2f (median of ours / median of reference); per repetition %.2f-%.2f; ours sent %.1f requests per socket write (median)",
          cfg, med(rps[cfg SUBSEP "ours"]) / med(rps[cfg SUBSEP "ref"]), lo(r), hi(r), med(rpw[cfg SUBSEP "ours"]))
        if ((cfg SUBSEP "same") in rps)
          ratio[cfg] = ratio[cfg] sprintf("\n%s diagnostic (callers on the connection thread): same/reference = %.2f; %.1f requests per socket write (median)",
            cfg, med(rps[cfg SUBSEP "same"]) / med(rps[cfg SUBSEP "ref"]), med(rpw[cfg SUBSEP "same"]))
      }
      print ""
      for (c = 1; c <= n_cfg; c++) print ratio[cfgs[c]]
    }' "$ROWS"
}
echo
summarize | tee "$RESULTS_DIR/summary.md"

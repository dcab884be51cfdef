#!/usr/bin/env bash
# ratesync through its public API (bench/api_bench: `co_await acquire` with
# permits) against its physical reference, in the same run on the same
# redis-server (started here: no persistence, loopback, a free port, a temp
# dir; stopped on exit):
#
#   reference: redis-benchmark -c C -P P [-r 10000] EVALSHA <sha> 2 <keys> <argv>
#              with ratesync's OWN script (lua/<strategy>.lua, SCRIPT LOAD), the
#              keys and ARGV our engine sends (src/redis/redis_engine.cpp), and
#              the same keys (__rand_int__ is 12 digits; api_bench spells its
#              keys the same way).
#   ours:      api_bench --engine redis --strategy S --scenario X --callers N
#              --keys K --pool one|default
#
# "Matching concurrency" means the same number of decisions in flight over
# the same number of connections: N callers on one connection face
# `-c 1 -P N`; on the default pool (2..10 connections, grown when every
# connection has 32 requests outstanding) they face `-c C -P ceil(N/C)`, where
# C = min(N, the connections the pool opened at N callers), measured first
# (INFO clients in the middle of a run).
#
# Every row runs --reps times (default 3), the two clients alternating which
# goes first, each run after FLUSHALL and CONFIG RESETSTAT; the server's cost
# per decision is `usec_per_call` of evalsha (INFO commandstats). Prints medians
# with min-max and the ratio ours / reference (of the medians, and the range of
# the per-repetition ratios), as a markdown table, and writes rows.csv (every
# run) and summary.csv / summary.md to the results directory. Then: memory
# engine rows (1 and 4 threads, one limiter key and distinct keys), p99 at half
# of the highest throughput measured (paced callers), and RSS over 1,000,000
# distinct keys.
#
# Usage: bench/run_api_bench.sh [--reps N] [--seconds S] [--quick | --smoke]
#          [--strategies token_bucket,sliding_window,token_bucket_concurrent]
#          [--scenarios admit,deny] [--callers 1,50,200,1000] [--keys 1,10000]
#          [--pools one,default,io,ctx] [--no-memory] [--no-redis] [--no-extras]
#          [--half-reps N] [--bench-bin PATH] [--results DIR] [redis://HOST:PORT[/DB]]
#        bench/run_api_bench.sh --summarize DIR
#   --quick   token bucket, admit, 10,000 keys, one connection (and "io": the
#             callers on its I/O thread, and "ctx": the store on the callers'
#             io_context, in full runs too), 1/50/200/1000
#             callers, plus one denial row; memory rows; ~2 minutes
#   --smoke   a few seconds: one small row per strategy on memory and redis (and
#             one denial row, RSS over 100,000 keys); checks that every figure
#             is produced and sane and exits 1 if not (ctest bench_smoke)
#   --half-reps N  repetitions of each half-load row (default 10; --smoke 1):
#             a p99 over 1 s moves with one stall of the machine
#   --summarize DIR  print the tables of an earlier run again from its
#             results directory (rows.csv ...), rewriting its summary.md and
#             summary.csv; runs nothing
#   URL       use that server instead of starting one (FLUSHALL, CONFIG
#             RESETSTAT and SCRIPT FLUSH are run on it: never a shared server)
#   env: BUILD_DIR (default build-bench), BUILD_JOBS (default 2)
# Needs redis-server, redis-cli and redis-benchmark (Debian/Ubuntu: apt-get
# install redis-server redis-tools). Builds api_bench with cmake unless
# --bench-bin is given. Installs nothing.
set -euo pipefail

REPS=3
HALF_REPS= # the half-load rows' repetitions (default: 10; --smoke 1)
SECONDS_PER_RUN=1
WARMUP=0.3
MODE=full
STRATEGIES="token_bucket,sliding_window,token_bucket_concurrent"
SCENARIOS="admit,deny"
CALLERS="1,50,200,1000"
KEYS="1,10000"
POOLS="one,default"
MEMORY=1
REDIS=1
EXTRAS=1
BENCH=""
RESULTS_DIR="${RESULTS_DIR:-}"
URL=""
SELECTED=0
SUMMARIZE=""
while [[ $# -gt 0 ]]; do
  case "$1" in
  --reps) REPS="$2"; shift 2 ;;
  --half-reps) HALF_REPS="$2"; shift 2 ;;
  --seconds) SECONDS_PER_RUN="$2"; shift 2 ;;
  --quick) MODE=quick; shift ;;
  --smoke) MODE=smoke; shift ;;
  --strategies) STRATEGIES="$2"; SELECTED=1; shift 2 ;;
  --scenarios) SCENARIOS="$2"; SELECTED=1; shift 2 ;;
  --callers) CALLERS="$2"; SELECTED=1; shift 2 ;;
  --keys) KEYS="$2"; SELECTED=1; shift 2 ;;
  --pools) POOLS="$2"; SELECTED=1; shift 2 ;;
  --no-memory) MEMORY=0; shift ;;
  --no-redis) REDIS=0; shift ;;
  --no-extras) EXTRAS=0; shift ;;
  --bench-bin) BENCH="$2"; shift 2 ;;
  --results) RESULTS_DIR="$2"; shift 2 ;;
  --summarize) SUMMARIZE="$2"; shift 2 ;;
  redis://*) URL="$1"; shift ;;
  -h | --help) sed -n '2,50p' "$0"; exit 0 ;;
  *) echo "run_api_bench.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-bench}"
T_START=$(date +%s)

if [[ -z "$BENCH" && -z "$SUMMARIZE" ]]; then
  BENCH="$BUILD_DIR/bench/api_bench"
  if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
    cmake -S "$ROOT" -B "$BUILD_DIR" -DRATESYNC_BUILD_BENCH=ON -DCMAKE_BUILD_TYPE=Release \
      -DRATESYNC_BUILD_TESTS=OFF -DRATESYNC_BUILD_EXAMPLES=OFF >/dev/null
  fi
  echo "building api_bench in $BUILD_DIR ..."
  if ! nice -n 10 cmake --build "$BUILD_DIR" --target api_bench spin_gaps paced_reference --parallel "${BUILD_JOBS:-2}" \
    >"$BUILD_DIR/api_bench_build.log" 2>&1; then
    tail -n 40 "$BUILD_DIR/api_bench_build.log" >&2
    echo "run_api_bench.sh: building api_bench failed (log: $BUILD_DIR/api_bench_build.log)" >&2
    exit 1
  fi
fi
[[ -n "$SUMMARIZE" || -x "$BENCH" ]] || { echo "run_api_bench.sh: no api_bench at $BENCH" >&2; exit 1; }

case "$MODE" in
quick)
  if ((!SELECTED)); then
    STRATEGIES=token_bucket SCENARIOS=admit KEYS=10000 POOLS=one CALLERS="1,50,200,1000"
  fi
  ;;
smoke)
  REPS=1 SECONDS_PER_RUN=0.3 WARMUP=0.1 STRATEGIES="token_bucket,sliding_window,token_bucket_concurrent"
  SCENARIOS=admit CALLERS=50 KEYS=10000 POOLS=one
  ;;
esac
# A p99 over 1 s moves with a single stall of the machine: the half-load rows
# get more repetitions than the others (and the summary counts how many of
# them were under 1 ms, ours and the reference's).
if [[ -z "$HALF_REPS" ]]; then
  if [[ "$MODE" == smoke ]]; then HALF_REPS=1; else HALF_REPS=10; fi
fi

[[ -n "$SUMMARIZE" ]] && RESULTS_DIR="$SUMMARIZE"
if [[ -z "$RESULTS_DIR" ]]; then
  if [[ "$MODE" == smoke ]]; then
    RESULTS_DIR="$(mktemp -d -t api-bench-smoke.XXXXXX)"
  else
    RESULTS_DIR="$BUILD_DIR/api-bench-results/$(date +%Y%m%d-%H%M%S)"
  fi
fi
mkdir -p "$RESULTS_DIR"

FAILURES=()
fail() {
  FAILURES+=("$*")
  echo "FAIL: $*" >&2
}

# api_bench's arguments for a row's pool: one, default, io (one connection,
# callers on the store's I/O thread), ctx (one connection, the store on the
# callers' io_context).
pool_args() {
  case "$1" in
  io) echo --pool one --io-thread ;;
  ctx) echo --pool one --callers-context ;;
  *) echo --pool "$1" ;;
  esac
}

# The tables (summary.md, summary.csv) from the results directory: medians
# (min-max) over the repetitions. Runs after the rows, or alone (--summarize).
summarize() {
  local ROWS="$RESULTS_DIR/rows.csv" MEM="$RESULTS_DIR/memory.csv"
  awk -F, -v mode="$MODE" -v secs="$SECONDS_PER_RUN" -v reps="$REPS" \
    -v summary_csv="$RESULTS_DIR/summary.csv" -v memfile="$MEM" -v rssfile="$RESULTS_DIR/rss.out" '
    function sorted(s, a,   n, i, j, v) {
      n = split(s, a, " ")
      for (i = 2; i <= n; i++) { v = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > v; j--) a[j+1] = a[j]; a[j+1] = v }
      return n
    }
    function med(s,   a, n) { n = sorted(s, a); if (n == 0) return ""; return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2 }
    function lo(s,   a, n) { n = sorted(s, a); return n ? a[1] : "" }
    function hi(s,   a, n) { n = sorted(s, a); return n ? a[n] : "" }
    function k(n) { return n >= 1000 ? sprintf("%.0fk", n / 1000) : n }
    function fmt_rate(s) { return sprintf("%s (%s-%s)", k(med(s)), k(lo(s)), k(hi(s))) }
    function under(s, lim,   a, n, i, c) { n = split(s, a, " "); c = 0; for (i = 1; i <= n; i++) if (a[i] + 0 < lim) c++; return c " of " n }
    function label(row,   f, s) {
      split(row, f, "/")
      if (f[1] == "half_load") return sprintf("token bucket paced at %s/s (half load), %s callers, %s, %s", k(f[2]), f[3],
        f[4] == 1 ? "1 key" : k(f[4]) " keys", f[5] == "one" ? "1 connection" : f[5] == "io" ? "1 connection, callers on its I/O thread" : f[5] == "ctx" ? "1 connection, the store on the callers\047 io_context" : "default pool")
      s = f[1] == "token_bucket" ? "token bucket" : f[1] == "sliding_window" ? "sliding window" : "bucket + max_concurrent"
      return sprintf("%s, %s, %s caller%s, %s, %s", s, f[2], f[3], f[3] == 1 ? "" : "s",
        f[4] == 1 ? "1 key" : k(f[4]) " keys", f[5] == "one" ? "1 connection" : f[5] == "io" ? "1 connection, callers on its I/O thread" : f[5] == "ctx" ? "1 connection, the store on the callers\047 io_context" : "default pool")
    }
    FILENAME == ARGV[1] && FNR > 1 {
      key = $2 SUBSEP $1
      if (!((key) in seen)) { seen[key] = 1; if ($1 == "ours" && !($2 in rowseen)) { rowseen[$2] = 1; order[++nrows] = $2 } }
      dps[key] = dps[key] " " $4; p50[key] = p50[key] " " $5; p99[key] = p99[key] " " $6; sp99[key] = sp99[key] " " $18
      if ($7 != "") p999[key] = p999[key] " " $7
      cpu[key] = cpu[key] " " $8; upc[key] = upc[key] " " $9
      if ($12 != "") conns[key] = conns[key] " " $12
      scpu[key] = scpu[key] " " $13; load = load " " $14
      if ($1 == "ref") { refc[$2] = $15; refp[$2] = $16 }
      byrep[$2 SUBSEP $1 SUBSEP $3] = $4
      nrep[$2] = ($3 > nrep[$2]) ? $3 : nrep[$2]
    }
    END {
      if (nrows > 0) {
        print "Redis engine: ratesync (api_bench) and redis-benchmark on ratesync'"'"'s own script, medians of " reps " (min-max); ratio = ours / reference (per-repetition range)."
        print "Latency: ours per acquisition (closed loop: at N callers p50 ~ N / throughput); redis-benchmark'"'"'s under -P is the time to the first reply of its batch, so only -P 1 compares."
        print ""
        print "Busy: the share of one core each side used over the run (decisions/s x CPU per decision). Redis runs commands on one thread: near 1.0 it is the limit; with both well below 1, the round trip is (client and server take turns with each batch)."
        print ""
        print "| row | reference | ref. decisions/s | ours decisions/s | ratio | ours p50 / p99 / p99.9 µs | ref. p50 / p99 µs | client CPU µs/decision ours / ref. | server µs/decision (evalsha) ours / ref. | busy: Redis ours / ref., client ours / ref. | conns |"
        print "|---|---|---|---|---|---|---|---|---|---|---|"
        print "row,reference,ref_dps_median,ref_dps_min,ref_dps_max,ours_dps_median,ours_dps_min,ours_dps_max,ratio,ratio_rep_min,ratio_rep_max,ours_p50_us,ours_p99_us,ours_p999_us,ref_p50_us,ref_p99_us,ours_cpu_us,ref_cpu_us,ours_evalsha_usec,ref_evalsha_usec,ours_server_cpu_us,ref_server_cpu_us,conns" > summary_csv
        for (i = 1; i <= nrows; i++) {
          r = order[i]; o = r SUBSEP "ours"; f = r SUBSEP "ref"
          has_ref = (f in seen)
          ratio = ""; rr = ""
          if (has_ref && med(dps[f]) > 0) {
            ratio = sprintf("%.2f", med(dps[o]) / med(dps[f]))
            rl = ""
            for (j = 1; j <= nrep[r]; j++) if ((r SUBSEP "ref" SUBSEP j) in byrep && byrep[r SUBSEP "ref" SUBSEP j] > 0 && (r SUBSEP "ours" SUBSEP j) in byrep)
              rl = rl " " byrep[r SUBSEP "ours" SUBSEP j] / byrep[r SUBSEP "ref" SUBSEP j]
            rr = sprintf("%.2f-%.2f", lo(rl), hi(rl))
          }
          paced = r ~ /^half_load\//
          ref_label = !has_ref ? "-" : paced ? "`paced_reference`" : sprintf("`-c %s -P %s`", refc[r], refp[r])
          busy = sprintf("%.2f / %s, %.2f / %s", med(dps[o]) * med(scpu[o]) / 1e6,
            has_ref && !paced ? sprintf("%.2f", med(dps[f]) * med(scpu[f]) / 1e6) : "-",
            med(dps[o]) * med(cpu[o]) / 1e6, has_ref && !paced ? sprintf("%.2f", med(dps[f]) * med(cpu[f]) / 1e6) : "-")
          printf "| %s | %s | %s | %s | %s | %.0f / %.0f / %.0f | %s | %.2f / %s | %.2f / %s | %s | %s |\n", label(r), ref_label,
            has_ref ? fmt_rate(dps[f]) : "-", fmt_rate(dps[o]), has_ref ? ratio " (" rr ")" : "-",
            med(p50[o]), med(p99[o]), med(p999[o]),
            has_ref ? sprintf("%.0f / %.0f", med(p50[f]), med(p99[f])) : "-",
            med(cpu[o]), has_ref && !paced ? sprintf("%.2f", med(cpu[f])) : "-",
            med(upc[o]), has_ref && !paced ? sprintf("%.2f", med(upc[f])) : "-", busy,
            (o in conns) ? med(conns[o]) : "?"
          printf "%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s\n", r,
            has_ref ? "-c " refc[r] " -P " refp[r] : "", med(dps[f]), lo(dps[f]), hi(dps[f]),
            med(dps[o]), lo(dps[o]), hi(dps[o]), ratio, lo(rl), hi(rl),
            med(p50[o]), med(p99[o]), med(p999[o]), med(p50[f]), med(p99[f]),
            med(cpu[o]), med(cpu[f]), med(upc[o]), med(upc[f]), med(scpu[o]), med(scpu[f]),
            (o in conns) ? med(conns[o]) : "" >> summary_csv
          rl = ""
        }
        printf "\nload average (1 min) during the runs: %s-%s, median %s\n", lo(load), hi(load), med(load)
        # Issue 5'"'"'s targets, from the rows above.
        print ""
        print "Targets (issue 5):"
        for (i = 1; i <= nrows; i++) {
          r = order[i]; split(r, g, "/"); o = r SUBSEP "ours"; f = r SUBSEP "ref"
          if (!(f in seen) || !(med(dps[f]) > 0)) continue
          if ((g[5] == "one" || g[5] == "io" || g[5] == "ctx") && g[3] >= 50 && g[2] == "admit") {
            x = med(dps[o]) / med(dps[f])
            printf "- throughput >= 0.90 of the reference, %s: %.2f %s\n", label(r), x, (x >= 0.9 ? "MET" : "not met")
          }
          if (g[3] == 1 && med(p50[f]) > 0) {
            x = med(p50[o]) / med(p50[f])
            printf "- single caller p50 within 20%% of redis-benchmark -c 1, %s: %.0f us vs %.0f us = %.2f %s\n", label(r),
              med(p50[o]), med(p50[f]), x, (x <= 1.2 ? "MET" : "not met")
          }
        }
        for (i = 1; i <= nrows; i++) {
          r = order[i]; split(r, g, "/"); o = r SUBSEP "ours"
          if (g[1] == "half_load") {
            printf "- p99 under 1 ms at half of the saturated throughput, %s: %.0f us %s, under 1 ms in %s repetitions (from each call'"'"'s actual start, without the pacer'"'"'s lateness: %.0f us)", label(r), med(p99[o]),
              (med(p99[o]) < 1000 ? "MET" : "not met"), under(p99[o], 1000), med(sp99[o])
            f = r SUBSEP "ref"
            if (f in seen)
              printf "; the physical reference (bench/paced_reference, same rate and keys): p99 %.0f us (%.0f-%.0f), under 1 ms in %s, ratio %.2f\n",
                med(p99[f]), lo(p99[f]), hi(p99[f]), under(p99[f], 1000), med(p99[o]) / med(p99[f])
            else
              printf "; no physical reference (bench/paced_reference not built)\n"
          }
        }
      }
      # Memory engine rows.
      nm = 0
      while ((getline line < memfile) > 0) {
        split(line, m, ",")
        if (m[1] == "row") continue
        if (!(m[1] in mseen)) { mseen[m[1]] = 1; morder[++nm] = m[1] }
        mdps[m[1]] = mdps[m[1]] " " m[3]; mp50[m[1]] = mp50[m[1]] " " m[4]; mp99[m[1]] = mp99[m[1]] " " m[5]
        mcpu[m[1]] = mcpu[m[1]] " " m[7]
      }
      if (nm > 0) {
        print ""
        print "Memory engine (api_bench --engine memory), medians (min-max); latency timed on every 16th call"
        print ""
        print "| row | decisions/s | p50 / p99 µs | CPU µs/decision |"
        print "|---|---|---|---|"
        for (i = 1; i <= nm; i++) {
          r = morder[i]; split(r, mf, "/")
          s = mf[2] == "token_bucket" ? "token bucket" : mf[2] == "sliding_window" ? "sliding window" : "bucket + max_concurrent"
          what = mf[4] == 1 ? "one limiter key" : (mf[5] == "per-thread" ? k(mf[4]) " distinct keys per thread" : k(mf[4]) " keys")
          printf "| %s, %s thread%s, %s%s | %s | %.2f / %.2f | %.3f |\n", s, mf[3], mf[3] == 1 ? "" : "s", what,
            mf[6] == "deny" ? ", deny" : "", fmt_rate(mdps[r]), med(mp50[r]), med(mp99[r]), med(mcpu[r])
        }
      }
      while ((getline line < rssfile) > 0) {
        split(line, m, ",")
        if (m[1] == "csv")
          printf "\nRSS (memory engine, %s): %d KiB before, %d KiB after %s acquisitions over %s distinct keys, %d KiB after %s more (%+d KiB)\n",
            m[3], m[5], m[6], m[4], m[4], m[7], m[4], m[8]
      }
    }' "$ROWS" | tee "$RESULTS_DIR/summary.md"
  if [[ -s "$RESULTS_DIR/server_latency_events.csv" ]]; then
    {
      echo
      echo "Redis's own stalls of 1 ms or more during the half-load runs (LATENCY LATEST: event, longest):"
      awk -F, '{ printf "- %s rep %s: %s\n", $1, $2, ($3 == "" ? "none" : $3) }' "$RESULTS_DIR/server_latency_events.csv"
      if [[ -s "$RESULTS_DIR/spin_gaps.out" ]]; then
        echo
        echo "The machine's own stalls (bench/spin_gaps.cpp, one thread reading the clock in a loop, after those runs):"
        cat "$RESULTS_DIR/spin_gaps.out"
      fi
    } | tee -a "$RESULTS_DIR/summary.md"
  fi
}

if [[ -n "$SUMMARIZE" ]]; then
  [[ -s "$RESULTS_DIR/rows.csv" ]] || { echo "run_api_bench.sh: no rows.csv in $RESULTS_DIR" >&2; exit 1; }
  REPS="$(awk -F, 'NR > 1 && $2 !~ /^half_load/ && $3 + 0 > n { n = $3 + 0 } END { print n + 0 }' "$RESULTS_DIR/rows.csv")"
  summarize
  exit 0
fi

# shellcheck source=private_redis.sh
source "$ROOT/bench/private_redis.sh"
if [[ -n "$URL" ]]; then
  HOSTPORT="${URL#redis://}"
  HOSTPORT="${HOSTPORT%%/*}"
  HOST="${HOSTPORT%:*}"
  PORT="${HOSTPORT##*:}"
  [[ "$PORT" == "$HOSTPORT" ]] && PORT=6379
  cli() { redis-cli -h "$HOST" -p "$PORT" "$@"; }
  cli PING | grep -q PONG || { echo "run_api_bench.sh: no server at $URL" >&2; exit 1; }
else
  start_private_redis run_api_bench.sh
  HOST=127.0.0.1
  URL="redis://127.0.0.1:$PORT"
fi
SERVER_PID="$(cli INFO server | tr -d '\r' | sed -n 's/^process_id:\([0-9]*\).*/\1/p')"
[[ -r "/proc/$SERVER_PID/stat" ]] || SERVER_PID=""
REDIS_VERSION="$(cli INFO server | tr -d '\r' | sed -n 's/^redis_version:\(.*\)/\1/p')"
CLK_TCK="$(getconf CLK_TCK)"

declare -A SHA
for s in token_bucket sliding_window; do
  SHA[$s]="$(cli -x SCRIPT LOAD <"$ROOT/lua/$s.lua")" # -x: byte for byte ($(cat) drops the last newline)
done
SHA[token_bucket_concurrent]="${SHA[token_bucket]}"

server_ticks() {
  if [[ -n "$SERVER_PID" ]]; then sed 's/.*) //' "/proc/$SERVER_PID/stat" | awk '{print $12 + $13}'; else echo 0; fi
}
# "calls usec_per_call failed_calls" of evalsha since the last CONFIG RESETSTAT.
evalsha_stats() {
  cli INFO commandstats | tr -d '\r' |
    sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\),.*usec_per_call=\([0-9.]*\).*failed_calls=\([0-9]*\).*/\1 \2 \3/p' |
    awk 'END{ if (NR == 0) print "0 0 0"; else print $0 }'
}
connected_clients() { cli INFO clients | tr -d '\r' | sed -n 's/^connected_clients:\([0-9]*\)/\1/p'; }
loadavg() { cut -d' ' -f1 /proc/loadavg; }

# The keys and ARGV our engine sends for a strategy / scenario / key count
# (redis_engine.cpp: keys "{prefix}:{<limiter>|<key>}:tb|sw", and ":cc" with
# max_concurrent; ARGV interval or window in us, burst or limit, cost, longest
# wait (-1: acquire without timeout; 0: try_acquire with timeout 0), margin
# 10 ms, max_concurrent, then (with max_concurrent, or for the window) request
# id and lease time to live 30 s). The limits are api_bench's: admit
# 1e8/s burst 1e9 (1 us), or 1e6 per 100 ms; deny 1 per 8 s.
reference_args() { # strategy scenario keys -> words after EVALSHA <sha>
  local strat="$1" scen="$2" keys="$3" suffix=tb p1 p2 wait maxc=0 id="0123456789abcdef-1a2b" tag
  [[ "$strat" == sliding_window ]] && suffix=sw
  if [[ "$scen" == admit ]]; then
    wait=-1
    if [[ "$strat" == sliding_window ]]; then p1=100000 p2=1000000; else p1=1 p2=1000000000; fi
  else
    wait=0 p1=8000000 p2=1
  fi
  [[ "$strat" == token_bucket_concurrent ]] && maxc=1000000
  # The sliding window logs one member per call, named after its id: ids
  # differ per call, as the engine's do.
  [[ "$strat" == sliding_window ]] && id="0123456789abcdef-__rand_int__"
  if [[ "$keys" == 1 ]]; then tag="{bench}"; else tag="{bench|__rand_int__}"; fi
  # Without max_concurrent the engine sends no lease key, and the bucket
  # neither the request id nor the lease time to live.
  if [[ "$strat" == token_bucket_concurrent ]]; then
    # On one key, admitting, every caller holds a lease of its own, and each
    # decision carries the lease released just before it (it rides in the
    # script: ARGV[9], removed before deciding). So does the reference: lease
    # ids drawn from as many as there are callers (-r, see reference_r), and
    # one of them released per call. On 10k keys a release is for another key
    # and goes out as a ZREM of its own, which the reference cannot send.
    local release=""
    if [[ "$keys" == 1 && "$scen" == admit ]]; then
      id="0123456789abcdef-__rand_int__" release=" 0123456789abcdef-__rand_int__"
    fi
    echo "2 rate_limit:$tag:$suffix rate_limit:$tag:cc $p1 $p2 1 $wait 10000 $maxc $id 30000000$release"
  elif [[ "$strat" == sliding_window ]]; then
    echo "1 rate_limit:$tag:$suffix $p1 $p2 1 $wait 10000 0 $id 30000000"
  else
    echo "1 rate_limit:$tag:$suffix $p1 $p2 1 $wait 10000 0"
  fi
}
reference_r() { # strategy scenario keys callers -> -r value ("" for none)
  if [[ "$3" != 1 ]]; then echo "$3"
  elif [[ "$1" == sliding_window ]]; then echo 2000000000
  elif [[ "$1" == token_bucket_concurrent && "$2" == admit ]]; then echo "$4" # lease ids
  else echo ""; fi
}

ROWS="$RESULTS_DIR/rows.csv"
echo "kind,row,rep,decisions_per_s,p50_us,p99_us,p999_us,client_cpu_us,server_usec_per_call,evalsha_calls,decisions,conns,server_cpu_us,loadavg,ref_c,ref_p,service_p50_us,service_p99_us" >"$ROWS"

# One reference run: $1 row $2 rep $3 C $4 P $5 n $6 r, rest: EVALSHA words.
run_ref() {
  local row="$1" rep="$2" c="$3" p="$4" n="$5" r="$6"
  shift 6
  local base="$RESULTS_DIR/$(echo "$row" | tr '/' '_')-ref-$rep"
  local cmd=(redis-benchmark -h "$HOST" -p "$PORT" -c "$c" -P "$p" -n "$n")
  [[ -n "$r" ]] && cmd+=(-r "$r")
  cmd+=(--csv EVALSHA "$@")
  echo "${cmd[*]}" >"$base.cmd"
  cli FLUSHALL >/dev/null
  cli CONFIG RESETSTAT >/dev/null
  cli LATENCY RESET >/dev/null # (events are recorded only for the half-load rows)
  local la t0 t1 TIMEFORMAT='%R %U %S'
  la="$(loadavg)"
  t0="$(server_ticks)"
  # One retry: on this shared VM redis-benchmark has once aborted with "All
  # clients disconnected" (1 run in ~290); a second failure is reported.
  if ! { time "${cmd[@]}" >"$base.out" 2>"$base.err"; } 2>"$base.time"; then
    echo "  $row rep $rep: redis-benchmark failed ($(head -c 200 "$base.err")); retrying once" >&2
    mv "$base.err" "$base.err.1"
    cli FLUSHALL >/dev/null
    cli CONFIG RESETSTAT >/dev/null
    la="$(loadavg)"
    t0="$(server_ticks)"
    if ! { time "${cmd[@]}" >"$base.out" 2>"$base.err"; } 2>"$base.time"; then
      fail "$row: redis-benchmark failed twice (see $base.err)"
      return
    fi
  fi
  t1="$(server_ticks)"
  local calls upc failed wall user sys
  read -r calls upc failed < <(evalsha_stats)
  read -r wall user sys <"$base.time"
  local rps p50 p99
  IFS=, read -r rps p50 p99 < <(tail -n 1 "$base.out" | tr -d '"' |
    awk -F, '{printf "%.0f,%.1f,%.1f\n", $2, $5*1000, $7*1000}')
  if [[ "$failed" != 0 || "$calls" -lt "$n" ]] || ! awk -v r="$rps" -v u="$upc" 'BEGIN{exit !(r > 0 && u > 0)}'; then
    fail "$row: reference: $calls EVALSHA calls of $n, $failed failed, ${rps:-?}/s, usec_per_call ${upc:-?}"
  fi
  local cpu_us server_us
  cpu_us="$(awk -v u="$user" -v s="$sys" -v n="$n" 'BEGIN{printf "%.3f", (u+s)*1e6/n}')"
  server_us="$(awk -v a="$t0" -v b="$t1" -v hz="$CLK_TCK" -v n="$calls" 'BEGIN{printf "%.3f", n ? (b-a)/hz*1e6/n : 0}')"
  echo "ref,$row,$rep,$rps,$p50,$p99,,$cpu_us,$upc,$calls,$n,$c,$server_us,$la,$c,$p,," >>"$ROWS"
  printf '  %-50s rep %s ref : %9s/s  p50 %7s us  p99 %8s us             client %6s us/dec  evalsha %5s us  (-c %s -P %s, load %s)\n' \
    "$row" "$rep" "$rps" "$p50" "$p99" "$cpu_us" "$upc" "$c" "$p" "$la"
}

# One api_bench run on redis: $1 row $2 rep, rest: api_bench options.
run_ours() {
  local row="$1" rep="$2"
  shift 2
  local base="$RESULTS_DIR/$(echo "$row" | tr '/' '_')-ours-$rep"
  local cmd=("$BENCH" --engine redis --url "$URL" --seconds "$SECONDS_PER_RUN" --warmup "$WARMUP" "$@")
  [[ "$MODE" == smoke ]] && cmd+=(--smoke)
  echo "${cmd[*]}" >"$base.cmd"
  cli FLUSHALL >/dev/null
  cli CONFIG RESETSTAT >/dev/null
  cli LATENCY RESET >/dev/null # (events are recorded only for the half-load rows)
  local la t0 t1 base_clients conns_file="$base.conns"
  la="$(loadavg)"
  base_clients="$(connected_clients)"
  t0="$(server_ticks)"
  # The connections the store opened, sampled near the end of the warm-up
  # (the pool grows within milliseconds of the load). Not inside the measured
  # window: the sample (a subshell, redis-cli, INFO) took the CPU for
  # milliseconds in the middle of it, a stall the reference never had, and
  # on 2 vCPUs that alone was the half-load rows' p99 (docs/performance.md).
  (sleep "$(awk -v w="$WARMUP" 'BEGIN{print w * 0.8}')"
    connected_clients >"$conns_file") &
  local sampler=$! status=0
  "${cmd[@]}" >"$base.out" 2>"$base.err" || status=$?
  wait "$sampler" 2>/dev/null || true
  t1="$(server_ticks)"
  if ((status != 0)); then
    fail "$row: api_bench exited with $status: $(head -c 300 "$base.err")"
    return
  fi
  local conns
  conns="$(awk -v b="$base_clients" '{print $1 - b}' "$conns_file" 2>/dev/null || echo "")"
  local calls upc failed
  read -r calls upc failed < <(evalsha_stats)
  local line dps p50 p99 p999 cpu decisions sp50 sp99
  line="$(grep '^csv,' "$base.out" || true)"
  IFS=, read -r dps p50 p99 p999 cpu decisions sp50 sp99 < <(echo "$line" | awk -F, '{print $16 "," $17 "," $18 "," $19 "," $21 "," $12 "," $25 "," $26}')
  if [[ -z "$line" ]] || ! awk -v d="$dps" -v p="$p50" 'BEGIN{exit !(d > 0 && p > 0)}'; then
    fail "$row: api_bench printed no figures"
    return
  fi
  if [[ "$calls" -lt "$decisions" || "$failed" != 0 ]]; then
    fail "$row: $calls EVALSHA calls ($failed failed) for $decisions decisions"
  fi
  local server_us
  server_us="$(awk -v a="$t0" -v b="$t1" -v hz="$CLK_TCK" -v n="$calls" 'BEGIN{printf "%.3f", n ? (b-a)/hz*1e6/n : 0}')"
  echo "ours,$row,$rep,$dps,$p50,$p99,$p999,$cpu,$upc,$calls,$decisions,$conns,$server_us,$la,,,$sp50,$sp99" >>"$ROWS"
  printf '  %-50s rep %s ours: %9s/s  p50 %7s us  p99 %8s us  p99.9 %8s  client %6s us/dec  evalsha %5s us  (%s conns, load %s)\n' \
    "$row" "$rep" "$dps" "$p50" "$p99" "$p999" "$cpu" "$upc" "${conns:-?}" "$la"
}

split() { tr ',' ' ' <<<"$1"; }

# The half-load rows' physical reference: bench/paced_reference (next to
# api_bench or in the build's bench/), EVALSHA of the token-bucket script
# paced at the same rate on the same keys by a client that does next to
# nothing. Without it those rows have no reference (said in the summary).
PACED_BIN=""
for candidate in "$(dirname "$BENCH")/paced_reference" "$(dirname "$BENCH")/../bench/paced_reference" \
  "$BUILD_DIR/bench/paced_reference"; do
  if [[ -x "$candidate" ]]; then PACED_BIN="$candidate"; break; fi
done
run_paced_ref() { # row rep rate keys
  local row="$1" rep="$2" rate="$3" keys="$4"
  local base="$RESULTS_DIR/$(echo "$row" | tr '/' '_')-ref-$rep"
  # shellcheck disable=SC2046 # reference_args is words
  local cmd=("$PACED_BIN" --host "$HOST" --port "$PORT" --rate "$rate" --seconds "$SECONDS_PER_RUN"
    --warmup "$WARMUP" --keys "$keys" -- EVALSHA "${SHA[token_bucket]}" $(reference_args token_bucket admit "$keys"))
  echo "${cmd[*]}" >"$base.cmd"
  cli FLUSHALL >/dev/null
  local la line dps p50 p99 p999 wp99
  la="$(loadavg)"
  if ! "${cmd[@]}" >"$base.out" 2>"$base.err"; then
    fail "$row: paced_reference failed: $(head -c 200 "$base.err")"
    return
  fi
  line="$(cat "$base.out")"
  read -r dps p50 p99 p999 wp99 < <(echo "$line" | sed -E 's/^paced_reference: ([0-9.]+) calls\/s, p50 ([0-9.]+) us, p99 ([0-9.]+) us, p99.9 ([0-9.]+) us \(from the write: p99 ([0-9.]+) us\).*/\1 \2 \3 \4 \5/')
  echo "ref,$row,$rep,$dps,$p50,$p99,$p999,,,,,,,$la,,,,$wp99" >>"$ROWS"
  printf '  %-50s rep %s ref:  %9s/s  p50 %7s us  p99 %8s us  p99.9 %8s  (paced_reference)\n' \
    "$row" "$rep" "$dps" "$p50" "$p99" "$p999"
}

{
  echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), kernel $(uname -r), loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "redis-server $REDIS_VERSION at $URL (pid ${SERVER_PID:-?}); $(redis-benchmark --version | head -n1)"
  echo "api_bench: $BENCH (git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo ?)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ', dirty tree'))"
  echo "mode $MODE, $REPS repetition(s), ${SECONDS_PER_RUN} s per run after ${WARMUP} s of warm-up"
  echo "raw results: $RESULTS_DIR"
} | tee "$RESULTS_DIR/header.txt"

if ((REDIS)); then
  # ratesync runs the very script the reference runs: with the script cache
  # empty, one api_bench run must leave exactly that SHA behind.
  cli SCRIPT FLUSH >/dev/null
  "$BENCH" --engine redis --url "$URL" --seconds 0.05 --warmup 0 --pool one >/dev/null 2>&1 ||
    fail "api_bench cannot run on $URL"
  if [[ "$(cli SCRIPT EXISTS "${SHA[token_bucket]}" | tr -d '\r')" != 1 ]]; then
    fail "ratesync's token bucket is not lua/token_bucket.lua (SHA ${SHA[token_bucket]} not loaded by api_bench)"
  fi
  for s in token_bucket sliding_window; do
    SHA[$s]="$(cli -x SCRIPT LOAD <"$ROOT/lua/$s.lua")" # -x: byte for byte ($(cat) drops the last newline)
  done

  # The rows.
  ROW_LIST=()
  for strat in $(split "$STRATEGIES"); do
    for scen in $(split "$SCENARIOS"); do
      for keys in $(split "$KEYS"); do
        for pool in $(split "$POOLS"); do
          for callers in $(split "$CALLERS"); do
            ROW_LIST+=("$strat/$scen/$callers/$keys/$pool")
          done
        done
      done
    done
  done
  if [[ "$MODE" == quick ]] && ((!SELECTED)); then ROW_LIST+=("token_bucket/deny/50/10000/one"); fi
  # Pool "io": one connection with the callers on the store's I/O thread
  # (api_bench --io-thread, limiter::io_executor()); pool "ctx": one
  # connection with the store on the callers' io_context (api_bench
  # --callers-context, store_options::io_context). Either way callers and
  # connection share a thread: no thread hand-off per decision. Token bucket
  # admissions over 10,000 keys, every caller count.
  if [[ "$MODE" != smoke ]] && ((!SELECTED)); then
    for pool in io ctx; do
      for callers in $(split "$CALLERS"); do ROW_LIST+=("token_bucket/admit/$callers/10000/$pool"); done
    done
  fi
  if [[ "$MODE" == smoke ]]; then ROW_LIST+=("token_bucket/deny/50/1/one" "token_bucket/admit/50/10000/ctx"); fi

  # Connections the default pool opens at each number of callers.
  declare -A CONNS
  for row in "${ROW_LIST[@]}"; do
    IFS=/ read -r strat scen callers keys pool <<<"$row"
    [[ "$pool" == default && -z "${CONNS[$callers]:-}" ]] || continue
    cli FLUSHALL >/dev/null
    b="$(connected_clients)"
    ("$BENCH" --engine redis --url "$URL" --callers "$callers" --keys 10000 --pool default \
      --seconds 1 --warmup 0.3 >/dev/null 2>&1) &
    pid=$!
    sleep 0.8
    n="$(connected_clients)"
    wait "$pid" || fail "api_bench failed while counting the default pool's connections"
    CONNS[$callers]=$((n - b))
    ((CONNS[$callers] >= 1)) || CONNS[$callers]=1
    echo "default pool at $callers callers: ${CONNS[$callers]} connections"
  done | tee "$RESULTS_DIR/pool_connections.txt"
  while read -r _ _ _ c _ n _; do CONNS[$c]="$n"; done < <(grep '^default pool' "$RESULTS_DIR/pool_connections.txt" || true)

  # Reference shapes and request counts (~SECONDS_PER_RUN each, from a short run).
  declare -A REF_C REF_P REF_N REF_R REF_ARGS
  for row in "${ROW_LIST[@]}"; do
    IFS=/ read -r strat scen callers keys pool <<<"$row"
    if [[ "$pool" != default ]]; then c=1; else c="${CONNS[$callers]}"; ((c > callers)) && c="$callers"; fi
    p=$(((callers + c - 1) / c))
    REF_C[$row]=$c REF_P[$row]=$p
    REF_R[$row]="$(reference_r "$strat" "$scen" "$keys" "$callers")"
    REF_ARGS[$row]="${SHA[$strat]} $(reference_args "$strat" "$scen" "$keys")"
    n0=$((c * p * 40))
    ((n0 < 4000)) && n0=4000
    if [[ "$MODE" == smoke ]]; then
      REF_N[$row]=$n0
      continue
    fi
    cli FLUSHALL >/dev/null
    # shellcheck disable=SC2086
    rps="$(redis-benchmark -h "$HOST" -p "$PORT" -c "$c" -P "$p" -n "$n0" ${REF_R[$row]:+-r ${REF_R[$row]}} \
      --csv EVALSHA ${REF_ARGS[$row]} | tail -n 1 | tr -d '"' | cut -d, -f2)"
    REF_N[$row]="$(awk -v r="$rps" -v s="$SECONDS_PER_RUN" -v m="$n0" 'BEGIN{n = int(r * s); print (n < m ? m : n)}')"
  done

  for rep in $(seq 1 "$REPS"); do
    i=0
    for row in "${ROW_LIST[@]}"; do
      IFS=/ read -r strat scen callers keys pool <<<"$row"
      # shellcheck disable=SC2046
      ours=(--strategy "$strat" --scenario "$scen" --callers "$callers" --keys "$keys" $(pool_args "$pool"))
      # shellcheck disable=SC2086
      if (((rep + i) % 2 == 1)); then
        run_ref "$row" "$rep" "${REF_C[$row]}" "${REF_P[$row]}" "${REF_N[$row]}" "${REF_R[$row]}" ${REF_ARGS[$row]}
        run_ours "$row" "$rep" "${ours[@]}"
      else
        run_ours "$row" "$rep" "${ours[@]}"
        run_ref "$row" "$rep" "${REF_C[$row]}" "${REF_P[$row]}" "${REF_N[$row]}" "${REF_R[$row]}" ${REF_ARGS[$row]}
      fi
      i=$((i + 1))
    done
  done

  # Latency at half of the saturated throughput: the token-bucket admission
  # row with the highest median decisions/s, run again with its callers paced
  # (open loop) at half that rate. The smoke run does one such row (its
  # saturating row's keys, callers on the I/O thread) with its reference.
  if ((EXTRAS)); then
    read -r SAT_ROW SAT < <(awk -F, '$1 == "ours" && $2 ~ /^token_bucket\/admit\// {v[$2] = v[$2] " " $4}
      END { best = 0; row = "-"
        for (r in v) { n = split(v[r], a, " "); for (i = 2; i <= n; i++) { x = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > x; j--) a[j+1] = a[j]; a[j+1] = x }
          m = n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2; if (m > best) { best = m; row = r } }
        printf "%s %.0f\n", row, best }' "$ROWS")
    if [[ "$SAT" != 0 ]]; then
      IFS=/ read -r _ _ callers keys pool <<<"$SAT_ROW"
      HALF=$((SAT / 2))
      echo "half load: $HALF decisions/s, half of $SAT ($SAT_ROW, the highest token-bucket median above)"
      # In the saturating row's mode and in the two low-latency ones (callers
      # and connection on one thread: "io" and "ctx"); on its keys and on
      # the other key count (1 or 10,000). Redis's own stalls of 1 ms or more
      # (LATENCY LATEST, e.g. its active expire cycle deleting the keys that
      # recovered) are recorded for each run.
      modes=("$pool")
      [[ "$pool" != io ]] && modes+=(io)
      [[ "$pool" != ctx ]] && modes+=(ctx)
      key_counts=("$keys")
      if [[ "$keys" == 1 ]]; then key_counts+=(10000); else key_counts+=(1); fi
      if [[ "$MODE" == smoke ]]; then
        modes=(io ctx) key_counts=("$keys")
        [[ -n "$PACED_BIN" ]] || fail "smoke: no bench/paced_reference next to $BENCH (build the paced_reference target)"
      fi
      cli CONFIG SET latency-monitor-threshold 1 >/dev/null
      for k in "${key_counts[@]}"; do
        for mode in "${modes[@]}"; do
          for rep in $(seq 1 "$HALF_REPS"); do
            # shellcheck disable=SC2046
            run_ours "half_load/$HALF/$callers/$k/$mode" "$rep" --strategy token_bucket --scenario admit \
              --callers "$callers" --keys "$k" $(pool_args "$mode") --rate "$HALF"
            [[ -n "$PACED_BIN" ]] && run_paced_ref "half_load/$HALF/$callers/$k/$mode" "$rep" "$HALF" "$k"
            # LATENCY LATEST: name, time, latest ms, max ms per event.
            echo "half_load/$HALF/$callers/$k/$mode,$rep,$(cli LATENCY LATEST |
              awk 'NR % 4 == 1 { n = $0 } NR % 4 == 0 { printf "%s%s %s ms", sep, n, $0; sep = "; " }')" \
              >>"$RESULTS_DIR/server_latency_events.csv"
          done
        done
      done
      cli CONFIG SET latency-monitor-threshold 0 >/dev/null
      # The machine's own stalls, for comparison (spin_gaps sits next to
      # api_bench; a --bench-bin elsewhere may have none).
      GAPS_BIN="$(dirname "$BENCH")/spin_gaps"
      if [[ -x "$GAPS_BIN" && "$MODE" != smoke ]]; then
        "$GAPS_BIN" 5 | tee "$RESULTS_DIR/spin_gaps.out"
      fi
    fi
  fi
fi

MEM="$RESULTS_DIR/memory.csv"
echo "row,rep,decisions_per_s,p50_us,p99_us,p999_us,cpu_us" >"$MEM"
if ((MEMORY)); then
  MEM_ROWS=()
  if [[ "$MODE" == smoke ]]; then
    for s in token_bucket sliding_window token_bucket_concurrent; do MEM_ROWS+=("$s/1/1/shared/admit"); done
    MEM_ROWS+=("token_bucket/4/1/shared/deny")
  else
    for s in $(split "$STRATEGIES"); do
      MEM_ROWS+=("$s/1/1/shared/admit" "$s/4/1/shared/admit" "$s/1/10000/shared/admit" "$s/4/10000/per-thread/admit")
    done
  fi
  msec="$SECONDS_PER_RUN"
  for rep in $(seq 1 "$REPS"); do
    for row in "${MEM_ROWS[@]}"; do
      IFS=/ read -r strat threads keys space scen <<<"$row"
      cmd=("$BENCH" --engine memory --strategy "$strat" --threads "$threads" --keys "$keys"
        --key-space "$space" --scenario "$scen" --seconds "$msec" --warmup "$WARMUP")
      [[ "$MODE" == smoke ]] && cmd+=(--smoke)
      base="$RESULTS_DIR/memory_$(echo "$row" | tr '/' '_')-$rep"
      if ! "${cmd[@]}" >"$base.out" 2>"$base.err"; then
        fail "memory $row: api_bench failed: $(head -c 300 "$base.err")"
        continue
      fi
      grep '^csv,' "$base.out" | awk -F, -v r="$row" -v rep="$rep" '{print "memory/" r "," rep "," $16 "," $17 "," $18 "," $19 "," $21}' >>"$MEM"
      tail -n 1 "$base.out" | sed 's/^/  /'
    done
  done
  if ((EXTRAS)); then
    RSS_KEYS=1000000
    [[ "$MODE" == smoke ]] && RSS_KEYS=100000
    rss_cmd=("$BENCH" --rss-keys "$RSS_KEYS" --header)
    [[ "$MODE" == smoke ]] && rss_cmd+=(--smoke)
    if "${rss_cmd[@]}" >"$RESULTS_DIR/rss.out" 2>"$RESULTS_DIR/rss.err"; then
      tail -n 1 "$RESULTS_DIR/rss.out" | sed 's/^/  /'
    else
      fail "RSS: $(cat "$RESULTS_DIR/rss.err")"
    fi
  fi
fi

summarize

T_END=$(date +%s)
echo
echo "run_api_bench.sh: $((T_END - T_START)) s; results in $RESULTS_DIR"
if ((${#FAILURES[@]})); then
  echo "run_api_bench.sh: ${#FAILURES[@]} failure(s):" >&2
  printf '  %s\n' "${FAILURES[@]}" >&2
  exit 1
fi
if [[ "$MODE" == smoke ]]; then
  # Every redis row has a ratio to its reference.
  if ((REDIS)) && ! awk -F, 'NR > 1 { n++; if (!($9 > 0)) bad = 1 } END { exit !(n > 0 && !bad) }' \
    "$RESULTS_DIR/summary.csv"; then
    echo "run_api_bench.sh: smoke: a row without a ratio in $RESULTS_DIR/summary.csv" >&2
    exit 1
  fi
  # --summarize renders the same tables from the files alone.
  cp "$RESULTS_DIR/summary.md" "$RESULTS_DIR/summary.md.run"
  if ! "$0" --summarize "$RESULTS_DIR" >/dev/null 2>&1 ||
    ! cmp -s "$RESULTS_DIR/summary.md" "$RESULTS_DIR/summary.md.run"; then
    echo "run_api_bench.sh: smoke: --summarize $RESULTS_DIR did not give the run's tables back" >&2
    exit 1
  fi
  echo "run_api_bench.sh: smoke OK"
  rm -rf "$RESULTS_DIR"
fi

#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and runs each for a bounded time from
# a temporary copy of its checked-in corpus (tests/fuzz/corpus/<target>, which
# is never modified). Fails on any crash, leak, timeout (hang), out-of-memory
# or uncaught exception, and prints per target the executions and coverage.
#   bash tests/fuzz/run.sh [target...]      (default: every target)
# Environment:
#   RATESYNC_FUZZ_SECONDS    time per target (default 60)
#   RATESYNC_FUZZ_BUILD_DIR  build directory (default <repo>/build-fuzz)
#   RATESYNC_JOBS            build parallelism (default: nproc)
#   CC / CXX                 clang to use (default clang-14 / clang++-14, else clang / clang++)
# Needs (Debian 12): build-essential cmake libasio-dev libtomlplusplus-dev
# libfmt-dev libhiredis-dev libssl-dev clang-14 libclang-rt-14-dev; missing
# ones are installed (as root or through sudo).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
fuzz_dir="$repo_root/tests/fuzz"
build_dir="${RATESYNC_FUZZ_BUILD_DIR:-$repo_root/build-fuzz}"
seconds="${RATESYNC_FUZZ_SECONDS:-60}"
jobs="${RATESYNC_JOBS:-$(nproc)}"
all_targets=(url_fuzz config_fuzz reply_fuzz)
if (($# > 0)); then targets=("$@"); else targets=("${all_targets[@]}"); fi

if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
  echo "RATESYNC_FUZZ_SECONDS must be a positive whole number of seconds (got '$seconds')" >&2
  exit 2
fi
for t in "${targets[@]}"; do
  if [[ " ${all_targets[*]} " != *" $t "* ]]; then
    echo "unknown fuzz target '$t' (targets: ${all_targets[*]})" >&2
    exit 2
  fi
done

echo "==> [fuzz 1/3] Checking Debian packages"
# shellcheck source=../../cmake/ensure_debian_packages.sh
source "$repo_root/cmake/ensure_debian_packages.sh"
ensure_debian_packages build-essential cmake libasio-dev libtomlplusplus-dev libfmt-dev \
  libhiredis-dev libssl-dev clang-14 libclang-rt-14-dev

cc="${CC:-}"
cxx="${CXX:-}"
if [[ -z $cxx ]]; then
  if command -v clang++-14 >/dev/null; then cc=clang-14 cxx=clang++-14; else cc=clang cxx=clang++; fi
fi
echo "==> [fuzz 2/3] Building ${targets[*]} in $build_dir ($cxx, ASan + UBSan + libFuzzer)"
# Optimised, with assertions kept (no NDEBUG) and warnings as errors.
CC="$cc" CXX="$cxx" cmake -S "$repo_root" -B "$build_dir" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g" \
  -DRATESYNC_BUILD_FUZZ=ON -DRATESYNC_WERROR=ON \
  -DRATESYNC_BUILD_TESTS=OFF -DRATESYNC_BUILD_EXAMPLES=OFF -DRATESYNC_INSTALL=OFF >/dev/null
cmake --build "$build_dir" --parallel "$jobs" --target "${targets[@]}"

echo "==> [fuzz 3/3] Running the targets side by side, $seconds s each"
work="$(mktemp -d)"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
logs="$build_dir/fuzz-logs"
artifacts="$build_dir/fuzz-artifacts"
mkdir -p "$logs" "$artifacts"

# A report stops the process; leaks are checked at the end of every input
# that allocated more than it freed (-detect_leaks) and at exit.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:allocator_may_return_null=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"

# The targets run side by side (each one process; CI has two cores): the
# stage takes `seconds` once instead of once per target.
for t in "${targets[@]}"; do
  name="${t%_fuzz}"
  corpus="$work/$name"
  mkdir -p "$corpus"
  cp "$fuzz_dir/corpus/$name/"* "$corpus/"
  seeds=$(find "$corpus" -type f | wc -l)
  echo "--- $t: $seeds seed inputs, log in $logs/$t.log"
  # -timeout: one input running longer is a hang. -rss_limit_mb also bounds
  # any single allocation (malloc_limit_mb defaults to it).
  "$build_dir/tests/fuzz/$t" "$corpus" \
    -dict="$fuzz_dir/$name.dict" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
    -detect_leaks=1 -print_final_stats=1 -close_fd_mask=1 \
    -artifact_prefix="$artifacts/$t-" >"$logs/$t.log" 2>&1 &
  pids+=($!)
done

failed=()
summary=()
for i in "${!targets[@]}"; do
  t="${targets[$i]}"
  log="$logs/$t.log"
  rc=0
  wait "${pids[$i]}" || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  # The last status line, e.g. "#490609 DONE cov: 2667 ft: 6438 corp: 496/108Kb ...".
  status=$(grep -E '^#[0-9]+[[:space:]]+(INITED|NEW|REDUCE|pulse|DONE|RELOAD)' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$status")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$status")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9A-Za-z]*\).*/\1/p' <<<"$status")
  if ((rc == 0)) && grep -q '^Done [0-9]* runs' "$log"; then
    verdict=ok
  else
    verdict="FAILED (exit $rc)"
    failed+=("$t")
    echo "    $t failed; the end of its log:"
    grep -v -E '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)' "$log" | tail -60 | sed 's/^/    | /'
    echo "    reproduce: $build_dir/tests/fuzz/$t <the crash- / leak- / timeout- / oom- file above>"
  fi
  line=$(printf '%-12s %-16s executions %-10s exec/s %-7s cov %-6s ft %-6s corpus %s' \
    "$t" "$verdict" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}")
  echo "    $line"
  summary+=("$line")
done

echo "==> Fuzzing summary ($seconds s per target; cov = covered edges of instrumented code, ft = features)"
printf '    %s\n' "${summary[@]}"
if ((${#failed[@]} > 0)); then
  echo "==> FAILED: ${failed[*]} (inputs in $artifacts)" >&2
  exit 1
fi
echo "==> All fuzz targets passed"

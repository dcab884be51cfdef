#!/usr/bin/env bash
# The test command: installs missing Debian packages, builds ratesync with
# warnings as errors and runs every test with ctest; then the same suite under
# ASan+UBSan, the concurrency tests under TSan, clang-tidy, and the fuzzers for
# a bounded time. Works from any directory.
#   bash tests/run.sh
# Environment:
#   RATESYNC_BUILD_DIR  main build directory (default <repo>/build); the other
#                       stages use <dir>-asan, <dir>-tsan, <dir>-tidy, <dir>-fuzz
#   RATESYNC_JOBS       build parallelism (default: nproc)
#   RATESYNC_STAGES     stages to run (default: "main asan tsan tidy fuzz"); CI
#                       runs them all
#   RATESYNC_FUZZ_SECONDS  time per fuzz target (default 60)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

build_dir="${RATESYNC_BUILD_DIR:-$repo_root/build}"
jobs="${RATESYNC_JOBS:-$(nproc)}"
stages=" ${RATESYNC_STAGES:-main asan tsan tidy fuzz} "
want() { [[ $stages == *" $1 "* ]]; }

packages=(build-essential cmake pkg-config libasio-dev libtomlplusplus-dev libfmt-dev
          libhiredis-dev libssl-dev libgtest-dev libgmock-dev libbenchmark-dev
          redis-server redis-tools openssl ca-certificates faketime)
if want tidy || want fuzz; then
  packages+=(clang-14 libclang-rt-14-dev clang-tidy-14)
fi

echo "==> Checking Debian packages"
# shellcheck source=../cmake/ensure_debian_packages.sh
source "$repo_root/cmake/ensure_debian_packages.sh"
ensure_debian_packages "${packages[@]}"

# configure_and_build <dir> <cmake args...>
configure_and_build() {
  local dir="$1"
  shift
  cmake -S "$repo_root" -B "$dir" -DRATESYNC_WERROR=ON -DRATESYNC_BUILD_TESTS=ON \
    -DRATESYNC_BUILD_EXAMPLES=ON "$@"
  cmake --build "$dir" --parallel "$jobs"
}

started=$SECONDS
stage_time() { echo "    ($(( SECONDS - started )) s so far)"; }

if want main; then
  echo "==> [main] Build (RelWithDebInfo, warnings as errors) and every test"
  configure_and_build "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo
  # ctest prints its own summary and fails on any failed test.
  (cd "$build_dir" && ctest --output-on-failure -j2 --timeout 900)
  stage_time
fi

# Sanitizer runs: a report aborts the process (-fno-sanitize-recover=all,
# halt_on_error), so it fails the test that caused it. Not run there: the
# package tests (they build consumers without sanitizers).
# verify_asan_link_order=0: accuracy_test runs one driver under faketime, whose
# LD_PRELOAD comes before the ASan runtime.
# -O1 -g1 (line tables): what the sanitizers' reports need (file:line in
# every frame), at about half the compile time of -O2 -g (a sanitized
# redis_behaviour_test.cpp: 126 s -> 68 s); the ASan build was the longest
# step of the command.
san_flags="-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG"
san_env=(
  ASAN_OPTIONS=detect_leaks=1:alloc_dealloc_mismatch=0:abort_on_error=1:detect_stack_use_after_return=0:verify_asan_link_order=0
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
)

if want asan; then
  echo "==> [asan] The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer (g++)"
  configure_and_build "$build_dir-asan" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$san_flags" \
    -DRATESYNC_SANITIZE=address,undefined -DRATESYNC_INSTALL=OFF
  (cd "$build_dir-asan" && env "${san_env[@]}" \
    ctest --output-on-failure -j2 --timeout 900 -LE package)
  stage_time
fi

if want tsan; then
  echo "==> [tsan] The concurrency tests under ThreadSanitizer (g++)"
  configure_and_build "$build_dir-tsan" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$san_flags" \
    -DRATESYNC_SANITIZE=thread -DRATESYNC_INSTALL=OFF
  (cd "$build_dir-tsan" && env "${san_env[@]}" \
    ctest --output-on-failure -j2 --timeout 900 -LE 'package|accuracy')
  stage_time
fi

if want tidy; then
  echo "==> [tidy] clang-tidy on src/ and include/ (.clang-tidy)"
  bash "$repo_root/cmake/run_clang_tidy.sh" "$build_dir-tidy"
  stage_time
fi

if want fuzz; then
  echo "==> [fuzz] libFuzzer targets, ${RATESYNC_FUZZ_SECONDS:-60} s each (clang)"
  RATESYNC_FUZZ_BUILD_DIR="$build_dir-fuzz" bash "$repo_root/tests/fuzz/run.sh"
  stage_time
fi
echo "==> All stages passed:${stages% }"

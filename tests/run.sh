#!/usr/bin/env bash
# The test command: installs missing Debian packages, builds ratesync with
# warnings as errors, runs every test with ctest. Works from any directory.
#   bash tests/run.sh
# Environment: RATESYNC_BUILD_DIR (default: <repo>/build), RATESYNC_JOBS
# (build parallelism, default: nproc).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

build_dir="${RATESYNC_BUILD_DIR:-$repo_root/build}"
jobs="${RATESYNC_JOBS:-$(nproc)}"

packages=(build-essential cmake pkg-config libasio-dev libtomlplusplus-dev libfmt-dev
          libhiredis-dev libssl-dev libgtest-dev libgmock-dev libbenchmark-dev
          redis-server redis-tools openssl ca-certificates faketime)

echo "==> [1/4] Checking Debian packages"
# shellcheck source=../cmake/ensure_debian_packages.sh
source "$repo_root/cmake/ensure_debian_packages.sh"
ensure_debian_packages "${packages[@]}"

echo "==> [2/4] Configuring $build_dir (RelWithDebInfo, warnings as errors)"
cmake -S "$repo_root" -B "$build_dir" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DRATESYNC_WERROR=ON \
  -DRATESYNC_BUILD_TESTS=ON \
  -DRATESYNC_BUILD_EXAMPLES=ON

echo "==> [3/4] Building (-j$jobs)"
cmake --build "$build_dir" --parallel "$jobs"

echo "==> [4/4] Running tests"
# ctest prints its own summary; its exit status is the script's.
cd "$build_dir"
ctest --output-on-failure -j2 --timeout 900

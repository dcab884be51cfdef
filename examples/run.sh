#!/usr/bin/env bash
# Builds and runs the main example (examples/quickstart.cpp) on the memory
# engine: no server needed. Works from any directory.
#   bash examples/run.sh
# Environment: RATESYNC_BUILD_DIR (default: <repo>/build-example), RATESYNC_JOBS
# (build parallelism, default: nproc).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

build_dir="${RATESYNC_BUILD_DIR:-$repo_root/build-example}"
jobs="${RATESYNC_JOBS:-$(nproc)}"

packages=(build-essential cmake libasio-dev libtomlplusplus-dev libfmt-dev libhiredis-dev libssl-dev)

echo "==> [1/4] Checking Debian packages"
# shellcheck source=../cmake/ensure_debian_packages.sh
source "$repo_root/cmake/ensure_debian_packages.sh"
ensure_debian_packages "${packages[@]}"

echo "==> [2/4] Configuring $build_dir (examples only, no tests)"
cmake -S "$repo_root" -B "$build_dir" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DRATESYNC_BUILD_TESTS=OFF \
  -DRATESYNC_BUILD_EXAMPLES=ON

echo "==> [3/4] Building the quickstart example (-j$jobs)"
cmake --build "$build_dir" --target quickstart --parallel "$jobs"

# Single-config generators put it at the top of examples/; multi-config ones
# under a per-config directory.
exe="$build_dir/examples/quickstart"
if [[ ! -x $exe ]]; then
  exe="$(find "$build_dir/examples" -type f -name quickstart -perm -u+x | head -n 1)"
fi
if [[ -z $exe || ! -x $exe ]]; then
  echo "error: quickstart executable not found under $build_dir/examples" >&2
  exit 1
fi

echo "==> [4/4] Running quickstart from examples/ (reads examples/ratesync.toml)"
cd "$repo_root/examples"
exec "$exe"

#!/usr/bin/env bash
# clang-tidy over the library: every src/*.cpp and src/redis/*.cpp with the
# checked-in .clang-tidy (our headers in include/ratesync/ and src/ are
# checked through them). Prints every finding and exits non-zero if there is
# one. Works from any directory.
#   bash cmake/run_clang_tidy.sh [BUILD_DIR]     (default: <repo>/build-tidy)
# Needs clang-tidy-14 (Debian 12: apt-get install clang-tidy-14) besides the
# packages of the normal build. Environment: RATESYNC_TIDY_JOBS (parallel
# clang-tidy processes, default 2), CLANG_TIDY (the binary, default
# clang-tidy-14, else clang-tidy).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${1:-$repo_root/build-tidy}"
jobs="${RATESYNC_TIDY_JOBS:-2}"
start=$SECONDS

tidy="${CLANG_TIDY:-}"
if [[ -z $tidy ]]; then
  for candidate in clang-tidy-14 clang-tidy; do
    if command -v "$candidate" >/dev/null; then
      tidy="$candidate"
      break
    fi
  done
fi
if [[ -z $tidy ]] || ! command -v "$tidy" >/dev/null; then
  echo "run_clang_tidy.sh: clang-tidy not found (Debian 12: apt-get install clang-tidy-14)" >&2
  exit 2
fi
echo "==> clang-tidy: $("$tidy" --version | grep -m1 -o 'version [0-9.]*')"

out_dir="$(mktemp -d)"
trap 'rm -rf "$out_dir"' EXIT

# The compile database. The library only: tests and examples are not checked.
echo "==> Configuring $build_dir (compile_commands.json)"
if ! cmake -S "$repo_root" -B "$build_dir" -DCMAKE_EXPORT_COMPILE_COMMANDS=ON \
  -DRATESYNC_BUILD_TESTS=OFF -DRATESYNC_BUILD_EXAMPLES=OFF -DRATESYNC_BUILD_BENCH=OFF \
  >"$out_dir/configure.log" 2>&1; then
  cat "$out_dir/configure.log" >&2
  exit 2
fi

# Generated sources: lua/*.lua embedded as generated/lua_scripts.cpp. No
# checked file includes it, but the compile database names it; generating it
# keeps every entry of the database real. Not the whole library: with Ninja
# the file is a target; with Makefiles its object (string constants, well
# under a second) is the nearest target that runs the generator.
echo "==> Generating sources"
if [[ -f $build_dir/build.ninja ]]; then
  cmake --build "$build_dir" --target generated/lua_scripts.cpp >/dev/null
else
  cmake --build "$build_dir" --target generated/lua_scripts.cpp.o >/dev/null
fi

cd "$repo_root"
files=(src/*.cpp src/redis/*.cpp)
for f in "${files[@]}"; do
  if ! grep -qF "\"file\": \"$repo_root/$f\"" "$build_dir/compile_commands.json"; then
    echo "run_clang_tidy.sh: $f is not in the compile database (not listed in CMakeLists.txt?)" >&2
    exit 2
  fi
done

echo "==> clang-tidy on ${#files[@]} files (-j$jobs)"
# One output file per source, printed whole afterwards (no interleaving); the
# exit status of each run (WarningsAsErrors: '*') is kept next to it.
# shellcheck disable=SC2016 # $1..$5 are expanded by the inner sh
printf '%s\n' "${files[@]}" |
  xargs -P "$jobs" -I{} sh -c '
    log="$1/$(echo "$2" | tr / _)"
    if "$3" -p "$4" --config-file="$5/.clang-tidy" --quiet "$2" >"$log" 2>&1; then
      echo 0 >"$log.rc"
    else
      echo 1 >"$log.rc"
    fi' sh "$out_dir" {} "$tidy" "$build_dir" "$repo_root"

failed=()
for f in "${files[@]}"; do
  log="$out_dir/$(echo "$f" | tr / _)"
  # Drop clang's count of the warnings it suppressed (system headers, Asio).
  findings="$(grep -Ev '^[0-9]+ (warning|error)s? (and [0-9]+ (warning|error)s? )?generated\.$' \
    "$log" || true)"
  if [[ $(cat "$log.rc") != 0 || -n $findings ]]; then
    failed+=("$f")
    echo "--- $f"
    echo "$findings"
  fi
done

elapsed=$((SECONDS - start))
if ((${#failed[@]} > 0)); then
  echo "==> clang-tidy: findings in ${#failed[@]} of ${#files[@]} files (${elapsed}s): ${failed[*]}"
  exit 1
fi
echo "==> clang-tidy: clean, ${#files[@]} files (${elapsed}s)"

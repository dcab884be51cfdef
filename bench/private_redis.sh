# Sourced by the bench scripts: start_private_redis NAME starts a redis-server
# of our own (no persistence) on a free loopback port in a temporary directory
# and stops it on exit. Sets PORT, REDIS_PID and TMP, and defines cli().
start_private_redis() {
  local name="$1" tool missing=()
  for tool in redis-server redis-cli redis-benchmark; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    echo "$name: missing ${missing[*]}." >&2
    echo "  Install them first (Debian/Ubuntu: apt-get install redis-server redis-tools)." >&2
    exit 1
  fi
  TMP="$(mktemp -d)"
  REDIS_PID=""
  trap _stop_private_redis EXIT
  trap 'exit 130' INT TERM
  PORT=""
  local p
  for _ in $(seq 1 20); do # retry if the port is taken
    p=$((20000 + RANDOM % 40000))
    redis-server --port "$p" --bind 127.0.0.1 --save "" --appendonly no --dir "$TMP" \
      --logfile "$TMP/redis.log" --daemonize no &
    REDIS_PID=$!
    for _ in $(seq 1 50); do
      if redis-cli -p "$p" PING 2>/dev/null | grep -q PONG; then PORT="$p"; break; fi
      kill -0 "$REDIS_PID" 2>/dev/null || break
      sleep 0.1
    done
    [[ -n "$PORT" ]] && break
    kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
    REDIS_PID=""
  done
  if [[ -z "$PORT" ]]; then
    echo "$name: could not start redis-server (see $TMP/redis.log)" >&2
    exit 1
  fi
}

_stop_private_redis() {
  if [[ -n "${REDIS_PID:-}" ]] && kill -0 "$REDIS_PID" 2>/dev/null; then
    kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
  fi
  [[ -n "${TMP:-}" ]] && rm -rf "$TMP"
}

cli() { redis-cli -p "$PORT" "$@"; }

// redis_basic: an outbound-call guard shared by every process that uses the
// same Redis. A token bucket (20 calls per second, bursts of 5) and a cap of
// 3 calls in flight protect a third-party API; the state lives in Redis, so
// ten copies of this program together still make at most 20 calls a second.
//
//   redis_basic [URL]     URL: argv[1], else $REDIS_URL, else
//                         redis://127.0.0.1:6379/0
//
// It sends 10 calls at once and shows when each one goes out, reads the
// limiter's state back from Redis, shows a caller that will not wait being
// refused, and prints the metrics. Exits 0 when every decision was made by
// Redis; 1 when Redis could not be reached (the limiter then fails open:
// calls go out unlimited, and store_errors counts them).
//
// See docs/engines/redis.md. Habits this file follows on purpose (g++ 12 and
// coroutine lifetimes): acquire_options are built in a named variable, never as
// a braced temporary inside a co_await expression; coroutines are free
// functions taking their arguments by value.
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>

#include "ratesync/ratesync.hpp"

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

long long ms_since(clock_type::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - t0).count();
}

double to_ms(std::chrono::microseconds d) {
  return static_cast<double>(d.count()) / 1000.0;
}

asio::awaitable<void> sleep_for(clock_type::duration d) {
  asio::steady_timer timer(co_await asio::this_coro::executor, d);
  co_await timer.async_wait(asio::use_awaitable);
}

// Calls in flight in this process (single-threaded io_context: no atomics).
struct in_flight {
  int now = 0;
  int peak = 0;
  int done = 0;
};

// One guarded outbound call: wait for a token and a slot (up to the limiter's
// timeout of 2 s), hold the permit while the request runs, release it after.
asio::awaitable<void> outbound_call(int id, std::shared_ptr<in_flight> calls,
                                    clock_type::time_point t0) {
  try {
    ratesync::permit permit = co_await ratesync::acquire("outbound_api");
    calls->peak = std::max(calls->peak, ++calls->now);
    std::printf("  +%4lld ms  call %d sent (%d in flight)\n", ms_since(t0), id, calls->now);
    co_await sleep_for(80ms); // the HTTP request would run here
    --calls->now;
  } catch (const ratesync::error& e) { // acquisition_error: no permit within 2 s
    std::printf("  +%4lld ms  call %d not sent: %s\n", ms_since(t0), id, e.what());
  }
  ++calls->done;
} // the permit is released at the end of its scope: its slot is free again

asio::awaitable<void> impatient_call(clock_type::time_point t0) {
  ratesync::acquire_options o;
  o.timeout = ratesync::seconds_d(0); // fail fast
  try {
    ratesync::permit permit = co_await ratesync::acquire("outbound_api", o);
    std::printf("  +%4lld ms  impatient call sent\n", ms_since(t0));
  } catch (const ratesync::acquisition_error& e) {
    std::printf("  +%4lld ms  impatient call refused (%s): retry_after = %.1f ms, nothing "
                "consumed\n",
                ms_since(t0), ratesync::to_string(e.reason()), to_ms(e.retry_after()));
  }
}

asio::awaitable<void> demo() {
  const ratesync::limiter api = ratesync::get_limiter("outbound_api");
  const auto ex = co_await asio::this_coro::executor;

  std::printf("10 calls at once (20/s, burst 5, at most 3 in flight, 80 ms each):\n");
  auto calls = std::make_shared<in_flight>();
  const auto t0 = clock_type::now();
  for (int id = 1; id <= 10; ++id)
    asio::co_spawn(ex, outbound_call(id, calls, t0), asio::detached);
  // The state in Redis while the calls run.
  co_await sleep_for(40ms);
  try {
    const ratesync::limiter_state st = co_await api.get_state();
    std::printf("  +%4lld ms  state in Redis: %lld tokens left, %lld slots held, next token "
                "in %.1f ms, bucket full again in %.1f ms\n",
                ms_since(t0), static_cast<long long>(st.remaining),
                static_cast<long long>(st.current_concurrent), to_ms(st.retry_after),
                to_ms(st.reset_after));
  } catch (const ratesync::store_error& e) { // get_state has no fail-open answer
    std::printf("  +%4lld ms  state unavailable: %s\n", ms_since(t0), e.what());
  }
  co_await impatient_call(t0);
  while (calls->done < 10)
    co_await sleep_for(10ms);
  std::printf("10 calls done in %lld ms, at most %d in flight\n", ms_since(t0), calls->peak);
}

} // namespace

int main(int argc, char** argv) {
  std::string url = "redis://127.0.0.1:6379/0";
  if (argc > 1)
    url = argv[1];
  else if (const char* env = std::getenv("REDIS_URL"); env && *env)
    url = env;

  try {
    ratesync::store_options store;
    store.engine = "redis";
    store.url = url;
    store.key_prefix = "rate_limit";
    store.socket_timeout = ratesync::seconds_d(2.0);
    store.socket_connect_timeout = ratesync::seconds_d(2.0);
    ratesync::configure_store("redis", store);

    ratesync::limiter_options api;
    api.store = "redis";
    api.rate_per_second = 20;
    api.burst = 5;
    api.max_concurrent = 3;
    api.timeout = ratesync::seconds_d(2.0);
    api.fail_closed = false; // Redis down: let calls through, count store_errors
    ratesync::configure_limiter("outbound_api", api);
  } catch (const ratesync::config_error& e) {
    std::fprintf(stderr, "redis_basic: %s\n", e.what());
    return 1;
  }
  std::printf("store \"redis\" at %s, key prefix \"rate_limit\"\n", url.c_str());

  asio::io_context ctx;
  std::exception_ptr failure;
  asio::co_spawn(ctx, demo(), [&failure](std::exception_ptr e) { failure = e; });
  ctx.run();
  if (failure) {
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "redis_basic: %s\n", e.what());
      return 1;
    }
  }

  const ratesync::limiter_metrics m = ratesync::get_limiter("outbound_api").get_metrics();
  std::printf("metrics: total_acquisitions %llu, denied %llu, max_concurrent_reached %llu, "
              "avg_wait_time_ms %.1f, store_errors %llu\n",
              static_cast<unsigned long long>(m.total_acquisitions),
              static_cast<unsigned long long>(m.denied),
              static_cast<unsigned long long>(m.max_concurrent_reached), m.avg_wait_time_ms,
              static_cast<unsigned long long>(m.store_errors));
  if (m.store_errors > 0) {
    std::fprintf(stderr,
                 "redis_basic: Redis at %s could not decide %llu time(s); the calls went out "
                 "unlimited (fail open). Is redis-server running?\n",
                 url.c_str(), static_cast<unsigned long long>(m.store_errors));
    return 1;
  }
  std::printf("inspect: redis-cli --scan --pattern 'rate_limit:*'   (the keys expire once "
              "the limits have recovered)\n");
  return 0;
}

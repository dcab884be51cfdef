// Memory-engine decisions per second through the public API:
// `co_await acquire` with permits, limits high enough that every decision
// admits. Run: build with -DRATESYNC_BUILD_BENCH=ON, then ./bench/memory_bench
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <benchmark/benchmark.h>

#include "ratesync/ratesync.hpp"

namespace {

using namespace ratesync;

// One registry for the whole run, shared by every benchmark thread.
registry& reg() {
  static registry* r = [] {
    auto* r = new registry;
    limiter_options bucket;
    bucket.rate_per_second = 1e9;
    bucket.burst = 1'000'000'000;
    r->configure_limiter("bucket", bucket);
    limiter_options window;
    window.algo = algorithm::sliding_window;
    window.limit = 1'000'000;
    window.window_seconds = 1e-6;
    r->configure_limiter("window", window);
    limiter_options both = bucket;
    both.max_concurrent = 1'000'000;
    r->configure_limiter("bucket_concurrency", both);
    return r;
  }();
  return *r;
}

// Runs the benchmark loop inside one coroutine on this thread's io_context:
// every acquire completes without suspending, so the loop measures the
// decision path (lookup, engine, metrics, permit) and nothing else.
template <class Body> void run_loop(benchmark::State& state, Body body) {
  asio::io_context ctx(1);
  asio::co_spawn(
      ctx,
      [&]() -> asio::awaitable<void> {
        for (auto _ : state)
          co_await body();
      },
      asio::detached);
  ctx.run();
  state.SetItemsProcessed(state.iterations());
}

void BM_acquire_by_name(benchmark::State& state, const char* name) {
  registry& r = reg();
  run_loop(state, [&]() -> asio::awaitable<void> { auto p = co_await r.acquire(name); });
}

void BM_acquire_by_handle(benchmark::State& state, const char* name) {
  auto lim = reg().get_limiter(name);
  run_loop(state, [&]() -> asio::awaitable<void> { auto p = co_await lim.acquire(); });
}

void BM_acquire_distinct_keys(benchmark::State& state) {
  auto lim = reg().get_limiter("bucket");
  acquire_options o;
  std::uint64_t i = static_cast<std::uint64_t>(state.thread_index()) << 40;
  run_loop(state, [&]() -> asio::awaitable<void> {
    o.key = std::to_string(i++ % 10'000 + (static_cast<std::uint64_t>(state.thread_index()) << 20));
    auto p = co_await lim.acquire(o);
  });
}

BENCHMARK_CAPTURE(BM_acquire_by_name, token_bucket, "bucket")
    ->Threads(1)
    ->Threads(4)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_acquire_by_handle, token_bucket, "bucket")
    ->Threads(1)
    ->Threads(4)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_acquire_by_handle, sliding_window, "window")->Threads(1)->UseRealTime();
BENCHMARK_CAPTURE(BM_acquire_by_handle, bucket_concurrency, "bucket_concurrency")
    ->Threads(1)
    ->Threads(4)
    ->UseRealTime();
BENCHMARK(BM_acquire_distinct_keys)->Threads(1)->Threads(4)->UseRealTime();

} // namespace

BENCHMARK_MAIN();

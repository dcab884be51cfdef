// quickstart: the three limiters of examples/ratesync.toml, one per algorithm,
// on the in-process memory engine (no server needed).
//
//   bash examples/run.sh              builds it and runs it from examples/
//   quickstart [path/to/config.toml]  default: ./ratesync.toml
//
// (a) a token bucket lets a burst through at once, then paces the rest;
// (b) a per-IP sliding window refuses a 4th login attempt at once with the
//     wait an HTTP 429 would report, while another IP still gets in;
// (c) five workers share a pool of two concurrency slots;
// (d) each limiter's metrics.
//
// Two habits this file follows on purpose (g++ 12 and coroutine lifetimes):
// acquire_options are built in a named variable, never as a braced temporary
// inside a co_await expression; and every coroutine is a free function taking
// its arguments by value, so nothing it uses can go out of scope under it.
#include <asio/co_spawn.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <string>
#include <utility>
#include <vector>

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

// Runs coroutines side by side and waits until every one has finished, so that
// no work outlives its section (nothing is detached). For a single-threaded
// io_context: the counter is not atomic.
class task_group {
public:
  explicit task_group(asio::any_io_executor ex)
      : ex_(std::move(ex)), all_done_(ex_, asio::steady_timer::time_point::max()) {}
  task_group(const task_group&) = delete;
  task_group& operator=(const task_group&) = delete;

  void spawn(asio::awaitable<void> task) {
    ++running_;
    asio::co_spawn(ex_, std::move(task), [this](std::exception_ptr e) {
      if (e && !first_error_)
        first_error_ = e;
      if (--running_ == 0)
        all_done_.cancel(); // wakes wait()
    });
  }

  // Must be awaited before the group goes out of scope.
  asio::awaitable<void> wait() {
    while (running_ > 0)
      co_await all_done_.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
    if (first_error_)
      std::rethrow_exception(first_error_);
  }

private:
  asio::any_io_executor ex_;
  asio::steady_timer all_done_; // never expires: cancelled as a signal
  int running_ = 0;
  std::exception_ptr first_error_;
};

// ---------------------------------------------------------------------------
// (a) Token bucket

// One outbound call. No options: the limiter's configured timeout applies.
asio::awaitable<void> api_call(int id, clock_type::time_point t0) {
  ratesync::permit permit = co_await ratesync::acquire("outbound_api");
  const long long at = ms_since(t0);
  std::printf("  call %2d sent at +%3lld ms%s\n", id, at, at < 10 ? "  (burst)" : "");
  // ... the HTTP request would go out here, while `permit` is held.
}

// A caller that will not wait long: refused at once, consuming nothing.
asio::awaitable<void> impatient_api_call(int id, clock_type::time_point t0) {
  ratesync::acquire_options o;
  o.timeout = 100ms;
  try {
    ratesync::permit permit = co_await ratesync::acquire("outbound_api", o);
    std::printf("  call %2d sent at +%3lld ms\n", id, ms_since(t0));
  } catch (const ratesync::acquisition_error& e) {
    std::printf("  call %2d (timeout 100 ms) refused at +%lld ms: retry_after = %.1f ms, "
                "nothing consumed\n",
                id, ms_since(t0), to_ms(e.retry_after()));
  }
}

asio::awaitable<void> token_bucket_demo() {
  const ratesync::limiter api = ratesync::get_limiter("outbound_api");
  std::printf("(a) outbound_api: token bucket, %g per second, burst %lld; 10 calls at once\n",
              api.options().rate_per_second.value_or(0.0),
              static_cast<long long>(api.options().burst.value_or(1)));
  task_group group(co_await asio::this_coro::executor);
  const auto t0 = clock_type::now();
  for (int id = 0; id < 10; ++id)
    group.spawn(api_call(id, t0));
  // Arrives after the ten have reserved their slots.
  group.spawn(impatient_api_call(10, t0));
  co_await group.wait();
}

// ---------------------------------------------------------------------------
// (b) Sliding window, one window per client IP, fail fast

asio::awaitable<void> login_attempt(std::string ip, int attempt, clock_type::time_point t0) {
  ratesync::acquire_options o;
  o.key = ip;                         // this IP's own window
  o.timeout = ratesync::seconds_d(0); // fail fast: never wait for a login
  try {
    ratesync::permit permit = co_await ratesync::acquire("login", o);
    std::printf("  +%3lld ms  %-13s attempt %d: 200 OK\n", ms_since(t0), ip.c_str(), attempt);
  } catch (const ratesync::acquisition_error& e) {
    const double retry_ms = to_ms(e.retry_after());
    std::printf("  +%3lld ms  %-13s attempt %d: 429 Too Many Requests, Retry-After: %.0f "
                "(retry_after = %.1f ms)\n",
                ms_since(t0), ip.c_str(), attempt, std::ceil(retry_ms / 1000.0), retry_ms);
  }
}

asio::awaitable<void> sliding_window_demo() {
  const ratesync::limiter login = ratesync::get_limiter("login");
  std::printf("\n(b) login: sliding window, %lld per %g s per IP; one attempt every 100 ms\n",
              static_cast<long long>(login.options().limit.value_or(0)),
              login.options().window_seconds.value_or(0.0));
  const auto t0 = clock_type::now();
  for (int attempt = 1; attempt <= 4; ++attempt) {
    if (attempt > 1)
      co_await sleep_for(100ms);
    co_await login_attempt("203.0.113.7", attempt, t0);
  }
  co_await login_attempt("198.51.100.23", 1, t0);
}

// ---------------------------------------------------------------------------
// (c) Concurrency limit

struct pool_watch {
  int inside = 0;
  int peak = 0;
};

// `watch` lives in concurrency_demo's frame, which awaits every worker.
asio::awaitable<void> db_worker(int id, pool_watch* watch, clock_type::time_point t0) {
  ratesync::permit slot = co_await ratesync::acquire("db_pool"); // waits in line
  watch->peak = std::max(watch->peak, ++watch->inside);
  std::printf("  +%3lld ms  worker %d enters (%d inside)\n", ms_since(t0), id, watch->inside);
  co_await sleep_for(100ms); // the query
  --watch->inside;
  std::printf("  +%3lld ms  worker %d leaves\n", ms_since(t0), id);
} // `slot` is released here: the next worker in line enters

asio::awaitable<void> concurrency_demo() {
  const ratesync::limiter pool = ratesync::get_limiter("db_pool");
  const long long slots = pool.options().max_concurrent.value_or(0);
  std::printf("\n(c) db_pool: at most %lld at once; 5 workers, 100 ms each\n", slots);
  pool_watch watch;
  task_group group(co_await asio::this_coro::executor);
  const auto t0 = clock_type::now();
  for (int id = 1; id <= 5; ++id)
    group.spawn(db_worker(id, &watch, t0));
  co_await group.wait();
  std::printf("  at most %d inside at once (max_concurrent = %lld)\n", watch.peak, slots);
}

// ---------------------------------------------------------------------------
// (d) Metrics

void print_metrics() {
  const std::vector<std::string> names = {"outbound_api", "login", "db_pool"};
  std::vector<ratesync::limiter_metrics> m;
  for (const auto& name : names)
    m.push_back(ratesync::get_limiter(name).get_metrics());

  std::printf("\n(d) metrics %13s", "");
  for (const auto& name : names)
    std::printf(" %12s", name.c_str());
  std::printf("\n");
  auto row = [&](const char* label, auto field) {
    std::printf("  %-22s", label);
    for (const auto& x : m)
      std::printf(" %12s", field(x).c_str());
    std::printf("\n");
  };
  auto count = [](auto v) { return std::to_string(v); };
  auto millis = [](double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f", v);
    return std::string(buf);
  };
  using lm = ratesync::limiter_metrics;
  row("total_acquisitions", [&](const lm& x) { return count(x.total_acquisitions); });
  row("denied", [&](const lm& x) { return count(x.denied); });
  row("timeouts", [&](const lm& x) { return count(x.timeouts); });
  row("avg_wait_time_ms", [&](const lm& x) { return millis(x.avg_wait_time_ms); });
  row("max_wait_time_ms", [&](const lm& x) { return millis(x.max_wait_time_ms); });
  row("current_concurrent", [&](const lm& x) { return count(x.current_concurrent); });
  row("max_concurrent_reached", [&](const lm& x) { return count(x.max_concurrent_reached); });
  row("total_releases", [&](const lm& x) { return count(x.total_releases); });
}

asio::awaitable<void> run_demo() {
  co_await token_bucket_demo();
  co_await sliding_window_demo();
  co_await concurrency_demo();
  print_metrics();
}

} // namespace

int main(int argc, char** argv) {
  const std::string path = argc > 1 ? argv[1] : "ratesync.toml";
  try {
    ratesync::load_config(path);
  } catch (const ratesync::config_error& e) {
    std::fprintf(stderr, "quickstart: %s\n", e.what());
    return 1;
  }
  std::printf("loaded %s\n\n", path.c_str());

  asio::io_context ctx;
  std::exception_ptr failure;
  asio::co_spawn(ctx, run_demo(), [&failure](std::exception_ptr e) { failure = e; });
  ctx.run(); // returns once run_demo and everything it started have finished

  if (failure) {
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "quickstart: %s\n", e.what());
      return 1;
    }
  }
  return 0;
}

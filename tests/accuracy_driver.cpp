// ratesync_accuracy_driver: one OS process of the cross-process accuracy
// tests (tests/accuracy_test.cpp). It configures one limiter "acc" on a redis
// store in its own ratesync::registry and runs coroutines on one io_context.
//
//   ratesync_accuracy_driver --url redis://127.0.0.1:P --prefix K --algo tb|sw|cc
//       [--rate R --burst B] [--limit L --window W] [--max-concurrent M]
//       [--lease-seconds S] [--margin-ms MS] --seconds T --coroutines N
//       [--hold-ms H] [--mode hammer|once|hold] [--wait-go] [--linger-ms MS]
//
// Modes:
//   hammer  N coroutines acquire in a loop until T seconds have passed, each
//           acquire waiting (timeout: the time left) for its slot.
//   once    N coroutines acquire once each (timeout: T seconds).
//   hold    acquires N permits (--coroutines, default 1) of the limiter, prints
//           "HELD", keeps them until killed or T seconds have passed, then
//           prints "RELEASED <us>" (the time just before the permits were
//           given back) and exits, after --linger-ms if given (the process,
//           and its registry, stay alive that long after the release).
//
// Output (stdout, one write per line, so the test reads it as it happens;
// times are std::chrono::system_clock microseconds since the epoch):
//   READY             connected, scripts loaded (a warm-up decision on a
//                     separate key "__warmup__"); with --wait-go the driver
//                     then waits for a line on stdin before starting
//   START <us>        the run begins; END <us> is its planned end
//   A <us>            one admission (printed right after the permit arrives)
//   E <us> / L <us>   with --hold-ms: entering / leaving the held section; E
//                     is printed after the permit arrived and L before it is
//                     released, so [E, L] lies inside the real holding time
//   DONE <count>      admissions of this process
//   METRICS k=v ...   the limiter's get_metrics() (the warm-up included)
//   CPU k=v ...       this process's user and system CPU time
// Exit status 0, or 2 on bad arguments, 1 on an unexpected exception.
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/use_future.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <sys/resource.h>
#include <unistd.h>
#include <vector>

#include "ratesync/ratesync.hpp"

namespace {

using steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct config {
  std::string url;
  std::string prefix = "accuracy";
  std::string algo = "tb";
  std::optional<double> rate;
  std::optional<std::int64_t> burst;
  std::optional<std::int64_t> limit;
  std::optional<double> window;
  std::optional<std::int64_t> max_concurrent;
  std::optional<double> lease_seconds;
  std::optional<double> margin_ms;
  double seconds = 5.0;
  int coroutines = 1;
  double hold_ms = 0.0;
  std::string mode = "hammer";
  bool wait_go = false;
  double linger_ms = 0.0;
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr, "ratesync_accuracy_driver: %s\n", why.c_str());
  std::exit(2);
}

config parse(int argc, char** argv) {
  config c;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--wait-go") {
      c.wait_go = true;
      continue;
    }
    if (i + 1 >= argc)
      usage("missing value after " + a);
    const std::string v = argv[++i];
    try {
      if (a == "--url")
        c.url = v;
      else if (a == "--prefix")
        c.prefix = v;
      else if (a == "--algo")
        c.algo = v;
      else if (a == "--rate")
        c.rate = std::stod(v);
      else if (a == "--burst")
        c.burst = std::stoll(v);
      else if (a == "--limit")
        c.limit = std::stoll(v);
      else if (a == "--window")
        c.window = std::stod(v);
      else if (a == "--max-concurrent")
        c.max_concurrent = std::stoll(v);
      else if (a == "--lease-seconds")
        c.lease_seconds = std::stod(v);
      else if (a == "--margin-ms")
        c.margin_ms = std::stod(v);
      else if (a == "--seconds")
        c.seconds = std::stod(v);
      else if (a == "--coroutines")
        c.coroutines = std::stoi(v);
      else if (a == "--hold-ms")
        c.hold_ms = std::stod(v);
      else if (a == "--mode")
        c.mode = v;
      else if (a == "--linger-ms")
        c.linger_ms = std::stod(v);
      else
        usage("unknown option " + a);
    } catch (const std::logic_error&) {
      usage("bad value for " + a + ": " + v);
    }
  }
  if (c.url.empty())
    usage("--url is required");
  if (c.algo != "tb" && c.algo != "sw" && c.algo != "cc")
    usage("--algo must be tb, sw or cc");
  if (c.mode != "hammer" && c.mode != "once" && c.mode != "hold")
    usage("--mode must be hammer, once or hold");
  if (c.coroutines < 1)
    usage("--coroutines must be at least 1");
  return c;
}

std::int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// One write(2) per line: unbuffered, and whole lines even if several
// processes shared the pipe.
void emit(const std::string& line) {
  std::string s = line;
  s += '\n';
  const char* p = s.data();
  std::size_t left = s.size();
  while (left > 0) {
    const ssize_t n = ::write(STDOUT_FILENO, p, left);
    if (n <= 0)
      return; // the reader went away: nothing useful to do
    p += n;
    left -= static_cast<std::size_t>(n);
  }
}

void emit_time(char tag) {
  emit(std::string(1, tag) + " " + std::to_string(now_us()));
}

asio::awaitable<void> sleep_for(steady::duration d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::use_awaitable);
}

struct shared_state {
  std::uint64_t admitted = 0; // one io_context thread: no atomics needed
};

// Holds the permit for hold_ms, printing E/L inside the holding interval.
asio::awaitable<void> hold_permit(ratesync::permit p, double hold_ms) {
  emit_time('E');
  co_await sleep_for(std::chrono::microseconds(static_cast<std::int64_t>(hold_ms * 1000.0)));
  emit_time('L');
  p.release();
}

// The coroutine parameters are taken by value (coroutine lifetimes).
asio::awaitable<void> worker(ratesync::limiter lim, config cfg, steady::time_point end,
                             std::shared_ptr<shared_state> st) {
  const bool once = cfg.mode == "once";
  for (;;) {
    const auto now = steady::now();
    if (now >= end)
      co_return;
    ratesync::acquire_options o; // a named variable: never a braced temporary in co_await
    o.timeout = std::chrono::duration_cast<ratesync::seconds_d>(end - now);
    ratesync::acquire_result r = co_await lim.try_acquire(o);
    if (r.allowed) {
      emit_time('A');
      ++st->admitted;
      if (cfg.hold_ms > 0)
        co_await hold_permit(std::move(r.permit), cfg.hold_ms);
      else
        r.permit.release();
      if (once)
        co_return;
      continue;
    }
    if (once)
      co_return;
    if (r.reason == ratesync::denial_reason::rate_limited) {
      // The next slot lies beyond our deadline: sleep until it could be had
      // (normally past the end, so this coroutine is done).
      const auto left = end - steady::now();
      const auto pause = std::max<steady::duration>(
          1ms, std::min<steady::duration>(
                   left, std::chrono::duration_cast<steady::duration>(r.retry_after)));
      co_await sleep_for(pause);
    }
    // timed_out / concurrency_limited: the loop ends at the deadline.
  }
}

asio::awaitable<void> holder(ratesync::limiter lim, config cfg, steady::time_point end) {
  std::vector<ratesync::permit> held;
  for (int i = 0; i < cfg.coroutines; ++i) {
    ratesync::acquire_options o;
    o.timeout = ratesync::seconds_d(10);
    ratesync::permit p = co_await lim.acquire(o);
    emit_time('A');
    held.push_back(std::move(p));
  }
  emit("HELD");
  const auto left = end - steady::now();
  if (left > 0ns)
    co_await sleep_for(left);
  const std::int64_t at = now_us();
  for (auto& p : held)
    p.release();
  emit("RELEASED " + std::to_string(at));
  if (cfg.linger_ms > 0)
    co_await sleep_for(
        std::chrono::microseconds(static_cast<std::int64_t>(cfg.linger_ms * 1000.0)));
}

void print_metrics(const ratesync::limiter_metrics& m) {
  char buf[512];
  std::snprintf(
      buf, sizeof buf,
      "METRICS total_acquisitions=%llu denied=%llu timeouts=%llu cancelled=%llu "
      "store_errors=%llu circuit_rejections=%llu max_concurrent_reached=%llu "
      "total_releases=%llu avg_wait_ms=%.3f max_wait_ms=%.3f",
      static_cast<unsigned long long>(m.total_acquisitions),
      static_cast<unsigned long long>(m.denied), static_cast<unsigned long long>(m.timeouts),
      static_cast<unsigned long long>(m.cancelled), static_cast<unsigned long long>(m.store_errors),
      static_cast<unsigned long long>(m.circuit_rejections),
      static_cast<unsigned long long>(m.max_concurrent_reached),
      static_cast<unsigned long long>(m.total_releases), m.avg_wait_time_ms, m.max_wait_time_ms);
  emit(buf);
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  std::snprintf(buf, sizeof buf, "CPU user_ms=%.0f sys_ms=%.0f",
                static_cast<double>(ru.ru_utime.tv_sec) * 1e3 +
                    static_cast<double>(ru.ru_utime.tv_usec) / 1e3,
                static_cast<double>(ru.ru_stime.tv_sec) * 1e3 +
                    static_cast<double>(ru.ru_stime.tv_usec) / 1e3);
  emit(buf);
}

int run(const config& cfg) {
  ratesync::registry reg;
  ratesync::store_options s;
  s.engine = "redis";
  s.url = cfg.url;
  s.key_prefix = cfg.prefix;
  if (cfg.margin_ms)
    s.timing_margin_ms = *cfg.margin_ms;
  reg.configure_store("redis", s);

  ratesync::limiter_options o;
  o.store = "redis";
  if (cfg.algo == "tb") {
    o.algo = ratesync::algorithm::token_bucket;
    o.rate_per_second = cfg.rate.value_or(10.0);
    o.burst = cfg.burst.value_or(1);
  } else if (cfg.algo == "sw") {
    o.algo = ratesync::algorithm::sliding_window;
    o.limit = cfg.limit.value_or(10);
    o.window_seconds = cfg.window.value_or(1.0);
  }
  if (cfg.max_concurrent)
    o.max_concurrent = cfg.max_concurrent;
  else if (cfg.algo == "cc")
    o.max_concurrent = 1;
  o.lease_seconds = cfg.lease_seconds;
  reg.configure_limiter("acc", o);
  ratesync::limiter lim = reg.get_limiter("acc");

  asio::io_context ctx;

  // Warm-up on a key of its own: connects and loads the script, so that the
  // measured run starts on a ready store. Its permit is released at once.
  {
    ratesync::acquire_options w;
    w.timeout = ratesync::seconds_d(0);
    w.key = "__warmup__";
    auto f = asio::co_spawn(ctx, lim.try_acquire(w), asio::use_future);
    ctx.run();
    ctx.restart();
    f.get();
  }
  emit("READY");
  if (cfg.wait_go) {
    char line[64];
    if (!std::fgets(line, sizeof line, stdin))
      return 0; // the test went away
  }

  const auto start = steady::now();
  const auto end = start + std::chrono::duration_cast<steady::duration>(
                               std::chrono::duration<double>(cfg.seconds));
  const std::int64_t start_us = now_us();
  emit("START " + std::to_string(start_us));
  emit("END " + std::to_string(start_us + static_cast<std::int64_t>(cfg.seconds * 1e6)));

  if (cfg.mode == "hold") {
    auto f = asio::co_spawn(ctx, holder(lim, cfg, end), asio::use_future);
    ctx.run();
    f.get();
    return 0;
  }

  auto st = std::make_shared<shared_state>();
  std::vector<std::future<void>> done;
  for (int i = 0; i < cfg.coroutines; ++i)
    done.push_back(asio::co_spawn(ctx, worker(lim, cfg, end, st), asio::use_future));
  ctx.run();
  for (auto& f : done)
    f.get();
  emit("DONE " + std::to_string(st->admitted));
  print_metrics(lim.get_metrics());
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  const config cfg = parse(argc, argv);
  try {
    return run(cfg);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ratesync_accuracy_driver: %s\n", e.what());
    return 1;
  }
}

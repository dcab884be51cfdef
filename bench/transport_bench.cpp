// Redis transport throughput and latency: N concurrent callers (coroutines on
// one io_context in this main thread) share ONE ratesync::redis::connection
// that lives on its own io_context thread (the store's thread), and each loops
//   co_await run_script(conn, script("one", "return 1"), {}, {})
// until the time is up. Reports decisions/s, p50/p99 per call, client CPU per
// call (getrusage, and split per thread) and socket writes per request
// (connection::stats()).
//
//   transport_bench --url redis://127.0.0.1:6379 --seconds 3 --callers 64
//                   [--warmup 0.3] [--same-thread]
//
// --same-thread runs the callers on the connection's own io_context instead
// (no thread hop per request and per reply): a diagnostic, to see what the
// two cross-thread hand-offs cost; it is not how a store is used.
//
// Output: one line starting "csv," (fields named by the "csv_header," line
// before it) and one human-readable line. Exit status 1 on any error reply or
// transport error. bench/run_transport_bench.sh runs it side by side with
// redis-benchmark on a redis-server of its own.
#include <algorithm>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <exception>
#include <future>
#include <pthread.h>
#include <span>
#include <string>
#include <string_view>
#include <sys/resource.h>
#include <thread>
#include <vector>

#include "redis/connection.hpp"
#include "redis/script.hpp"
#include "redis/url.hpp"

namespace {

using namespace ratesync::redis;
using steady = std::chrono::steady_clock;

struct args {
  std::string url = "redis://127.0.0.1:6379";
  double seconds = 3.0;
  double warmup = 0.3;
  int callers = 64;
  bool same_thread = false;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "transport_bench: %s\n"
               "usage: transport_bench --url redis://HOST:PORT --seconds S --callers N "
               "[--warmup S] [--same-thread]\n",
               why);
  std::exit(2);
}

args parse(int argc, char** argv) {
  args a;
  for (int i = 1; i < argc; ++i) {
    const std::string_view k = argv[i];
    if (k == "--same-thread") {
      a.same_thread = true;
      continue;
    }
    if (i + 1 >= argc)
      usage("missing value");
    const char* v = argv[++i];
    if (k == "--url")
      a.url = v;
    else if (k == "--seconds")
      a.seconds = std::atof(v);
    else if (k == "--warmup")
      a.warmup = std::atof(v);
    else if (k == "--callers")
      a.callers = std::atoi(v);
    else
      usage("unknown option");
  }
  if (a.seconds <= 0 || a.callers < 1 || a.warmup < 0)
    usage("--seconds must be > 0, --callers >= 1, --warmup >= 0");
  return a;
}

// The store's thread: the connection lives on it (as in tests/transport_test.cpp).
struct io_thread {
  asio::io_context ctx;
  asio::executor_work_guard<asio::io_context::executor_type> work{ctx.get_executor()};
  std::thread thread{[this] { ctx.run(); }};
  ~io_thread() {
    work.reset();
    ctx.stop();
    thread.join();
  }
};

double seconds_of(const timeval& t) {
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) * 1e-6;
}

double thread_cpu_seconds(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

struct snapshot {
  steady::time_point wall;
  double process_cpu = 0; // user + system, every thread
  double main_cpu = 0;    // the main thread (the callers', unless --same-thread)
  double io_cpu = 0;      // the connection's thread
  long voluntary_switches = 0;
  long involuntary_switches = 0;
  connection_stats stats;
};

snapshot take(clockid_t main_clock, clockid_t io_clock, const connection& conn) {
  snapshot s;
  rusage self{};
  getrusage(RUSAGE_SELF, &self);
  s.process_cpu = seconds_of(self.ru_utime) + seconds_of(self.ru_stime);
  s.main_cpu = thread_cpu_seconds(main_clock);
  s.io_cpu = thread_cpu_seconds(io_clock);
  s.voluntary_switches = self.ru_nvcsw;
  s.involuntary_switches = self.ru_nivcsw;
  s.stats = conn.stats();
  s.wall = steady::now();
  return s;
}

struct caller_result {
  std::vector<std::int64_t> ns; // per-call durations started inside the window
  std::uint64_t errors = 0;
  std::string first_error;
};

asio::awaitable<void> caller(std::shared_ptr<connection> conn, const script& s,
                             steady::time_point measure_from, steady::time_point until,
                             caller_result& out) {
  // Named, not braced temporaries inside the co_await (g++ 12 miscompiles those).
  const std::span<const std::string_view> keys;
  const std::span<const std::string_view> argv;
  for (;;) {
    const auto t0 = steady::now();
    if (t0 >= until)
      break;
    script_result r = co_await run_script(conn, s, keys, argv);
    const auto t1 = steady::now();
    const bool ok =
        !r.error && r.reply && r.reply->type == REDIS_REPLY_INTEGER && r.reply->integer == 1;
    if (!ok) {
      if (out.errors++ == 0) {
        if (r.error)
          out.first_error = r.error.message();
        else if (r.reply)
          out.first_error = "unexpected reply: " + std::string(reply_text(*r.reply));
        else
          out.first_error = "no reply";
      }
      continue;
    }
    if (t0 >= measure_from)
      out.ns.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
  }
}

double percentile_us(std::vector<std::int64_t>& v, double p) {
  if (v.empty())
    return 0;
  auto k = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return static_cast<double>(v[k]) / 1000.0;
}

} // namespace

int main(int argc, char** argv) {
  const args a = parse(argc, argv);

  connection_options opts;
  try {
    opts.where = parse_url(a.url);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "transport_bench: bad --url: %s\n", e.what());
    return 2;
  }
  opts.connect_timeout = std::chrono::seconds(2);

  io_thread io;
  clockid_t io_clock{};
  clockid_t main_clock{};
  if (pthread_getcpuclockid(io.thread.native_handle(), &io_clock) != 0 ||
      pthread_getcpuclockid(pthread_self(), &main_clock) != 0) {
    std::fprintf(stderr, "transport_bench: pthread_getcpuclockid failed\n");
    return 1;
  }
  auto conn = connection::create(io.ctx, opts, nullptr);
  conn->start();
  const script one("one", "return 1");

  asio::io_context ctx(1); // the callers' context: one thread, this one

  // One call first: connects, and loads the script (NOSCRIPT retry) if needed.
  {
    std::exception_ptr failure;
    std::string problem;
    asio::co_spawn(
        ctx,
        [&]() -> asio::awaitable<void> {
          const std::span<const std::string_view> keys;
          const std::span<const std::string_view> argv;
          script_result r = co_await run_script(conn, one, keys, argv);
          if (r.error)
            problem = r.error.message() + " (" + conn->last_error() + ")";
          else if (!r.reply || r.reply->type != REDIS_REPLY_INTEGER)
            problem = "unexpected first reply";
        },
        [&](std::exception_ptr e) { failure = e; });
    ctx.run();
    ctx.restart();
    if (failure || !problem.empty()) {
      std::fprintf(stderr, "transport_bench: cannot run the script on %s: %s\n",
                   opts.where.to_string().c_str(), problem.empty() ? "exception" : problem.c_str());
      conn->stop();
      return 1;
    }
  }

  const auto start = steady::now();
  const auto measure_from =
      start + std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(a.warmup));
  const auto until = measure_from + std::chrono::duration_cast<steady::duration>(
                                        std::chrono::duration<double>(a.seconds));

  std::vector<caller_result> results(static_cast<std::size_t>(a.callers));
  for (auto& r : results)
    r.ns.reserve(1 << 16);
  // The window opens on the callers' thread, between two completions.
  snapshot before;
  snapshot after;
  if (!a.same_thread) {
    for (auto& r : results)
      asio::co_spawn(ctx, caller(conn, one, measure_from, until, r), asio::detached);
    asio::steady_timer open(ctx, measure_from);
    open.async_wait([&](std::error_code) { before = take(main_clock, io_clock, *conn); });
    ctx.run();
    after = take(main_clock, io_clock, *conn);
  } else {
    std::promise<void> done;
    std::atomic<int> remaining{a.callers};
    asio::steady_timer open(io.ctx, measure_from);
    open.async_wait([&](std::error_code) { before = take(main_clock, io_clock, *conn); });
    for (auto& r : results)
      asio::co_spawn(io.ctx, caller(conn, one, measure_from, until, r), [&](std::exception_ptr) {
        if (remaining.fetch_sub(1) == 1)
          done.set_value();
      });
    done.get_future().wait();
    after = take(main_clock, io_clock, *conn);
  }
  conn->stop();

  std::vector<std::int64_t> all;
  std::uint64_t errors = 0;
  std::string first_error;
  std::size_t total = 0;
  for (const auto& r : results)
    total += r.ns.size();
  all.reserve(total);
  for (auto& r : results) {
    all.insert(all.end(), r.ns.begin(), r.ns.end());
    if (r.errors && first_error.empty())
      first_error = r.first_error;
    errors += r.errors;
  }

  const double wall = std::chrono::duration<double>(after.wall - before.wall).count();
  const double calls = static_cast<double>(all.size());
  const double per_call_us = calls > 0 ? 1e6 / calls : 0;
  const double rps = calls / wall;
  const double p50 = percentile_us(all, 0.50);
  const double p99 = percentile_us(all, 0.99);
  const double cpu_us = (after.process_cpu - before.process_cpu) * per_call_us;
  const double main_us = (after.main_cpu - before.main_cpu) * per_call_us;
  const double io_us = (after.io_cpu - before.io_cpu) * per_call_us;
  const auto writes = after.stats.writes - before.stats.writes;
  const auto requests = after.stats.requests - before.stats.requests;
  const double writes_per_request =
      requests ? static_cast<double>(writes) / static_cast<double>(requests) : 0;
  const double cpu_pct = 100.0 * (after.process_cpu - before.process_cpu) / wall;
  const double vcsw = static_cast<double>(after.voluntary_switches - before.voluntary_switches);
  const double ivcsw =
      static_cast<double>(after.involuntary_switches - before.involuntary_switches);

  std::printf("csv_header,callers,seconds,calls,errors,calls_per_s,p50_us,p99_us,"
              "cpu_us_per_call,main_cpu_us_per_call,io_cpu_us_per_call,client_cpu_pct,"
              "writes_per_request,vol_ctx_switches_per_call,invol_ctx_switches_per_call\n");
  std::printf("csv,%d,%.3f,%.0f,%llu,%.0f,%.1f,%.1f,%.3f,%.3f,%.3f,%.0f,%.4f,%.4f,%.4f\n",
              a.callers, wall, calls, static_cast<unsigned long long>(errors), rps, p50, p99,
              cpu_us, main_us, io_us, cpu_pct, writes_per_request, vcsw / calls, ivcsw / calls);
  std::printf("transport_bench: %d callers%s, 1 connection, %.2f s: %.0f calls/s, p50 %.1f us, "
              "p99 %.1f us, client CPU %.2f us/call (main thread %.2f, connection thread "
              "%.2f; %.0f%% of a core), %.3f socket writes/request (%.1f requests per write), "
              "%llu errors\n",
              a.callers, a.same_thread ? " on the connection's thread" : "", wall, rps, p50, p99,
              cpu_us, main_us, io_us, cpu_pct, writes_per_request,
              writes_per_request > 0 ? 1.0 / writes_per_request : 0.0,
              static_cast<unsigned long long>(errors));
  if (errors) {
    std::fprintf(stderr, "transport_bench: %llu failed calls, first: %s\n",
                 static_cast<unsigned long long>(errors), first_error.c_str());
    return 1;
  }
  return 0;
}

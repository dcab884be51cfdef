// ratesync through its public API: a store and a limiter configured on a
// ratesync::registry (configure_store / configure_limiter), and N coroutines
// per thread each looping
//   admit:  permit p = co_await lim.acquire(options);        (dropped at once)
//   deny:   acquire_result r = co_await lim.try_acquire(options);  timeout 0
// for a fixed time after a warm-up (connections up, scripts loaded). Reports
// decisions/s, latency p50/p99/p99.9 per acquisition (log-linear histogram,
// 32 sub-buckets per power of two: within 3 %), client CPU per decision
// (getrusage of the whole process, store thread included) and the counts.
//
//   api_bench --engine memory|redis [--url redis://127.0.0.1:6379]
//             [--strategy token_bucket|sliding_window|token_bucket_concurrent]
//             [--scenario admit|deny] [--callers N] [--threads T] [--keys K]
//             [--key-space shared|per-thread] [--pool one|default]
//             [--seconds S] [--warmup S] [--rate R] [--io-thread | --callers-context]
//             [--smoke] [--header]
//   api_bench --rss-keys 1000000 [--strategy ...]
//
// --io-thread (redis): the callers run on the store's I/O thread
// (limiter::io_executor()) instead of a thread of their own, so a decision
// costs no thread hand-off.
// --callers-context (redis): the other way round, the same thread: the store
// runs on the callers' io_context (store_options::io_context) and starts no
// thread of its own.
//
// Limits: `admit` sets them so high that every decision admits (token bucket
// 1e8/s with a burst of 1e9; sliding window 1e6 per 0.1 s; concurrency 1e6);
// `deny` sets a tiny one (1 per 8 s, burst/limit 1) and asks with timeout 0,
// so after each key's first admission every decision is a refusal.
//
// Keys: --keys 1 uses the limiter's single shared state (no key); --keys K
// draws each call's key uniformly from K, spelled as 12 decimal digits like
// redis-benchmark's __rand_int__ (so bench/run_api_bench.sh's reference hits
// the very same Redis keys). --key-space per-thread gives every thread keys of
// its own (memory rows: "4 threads on distinct keys").
//
// --rate R paces the callers (open loop, R decisions/s in all): arrivals due
// every T/R s on each of the T threads, evenly spaced (the threads offset by
// a fraction of that interval), each handed to an idle caller of its thread;
// at most --callers in flight per thread. Each latency runs from the
// arrival's scheduled time, so a late start counts, and an arrival due while
// every caller is busy waits for one, that wait included (open loop). Every
// paced call is timed; it counts when scheduled inside the window. Cheap: one
// timer per thread, not per call (a caller that finishes takes the next due
// arrival itself; idle callers park without a timer and one dispatcher per
// thread wakes at the next due arrival, but no more often than every 100 us,
// to hand them out). So a call may start up to ~100 us (plus the wake-up)
// after its time when the thread was idle, which its latency includes.
// --pool one is pool_min_size = pool_max_size = 1; default keeps the store's
// defaults (2..10 connections, grown under load). On the memory engine a
// decision never suspends, so one caller per thread runs at a time; latency
// is then timed on every 16th call in closed loop (two clock reads would be a
// third of the cost of a decision).
//
// --rss-keys N: memory engine, one caller: RSS (VmRSS) after 10,000 warm-up
// acquisitions, after N acquisitions over N distinct keys, and after N more
// over N other keys. Flat means the engine forgets idle keys.
//
// Output: a "csv_header," line (with --header) and a "csv," line, then a
// human-readable line. Exit status 1 on an error, 2 on bad usage; with
// --smoke (short run), also 1 when a figure is not sane (no decisions, an
// admission scenario with refusals, a denial scenario without, RSS not flat).
#include <algorithm>
#include <array>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <sys/resource.h>
#include <thread>
#include <type_traits>
#include <vector>

#include "ratesync/ratesync.hpp"

namespace {

using steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

enum class strategy { token_bucket, sliding_window, token_bucket_concurrent };

struct args {
  std::string engine = "memory";
  std::string url = "redis://127.0.0.1:6379";
  strategy strat = strategy::token_bucket;
  std::string strategy_name = "token_bucket";
  bool deny = false;
  int callers = 1;
  int threads = 1;
  std::uint64_t keys = 1;
  bool per_thread_keys = false;
  bool one_connection = false;
  double seconds = 2.0;
  double warmup = 0.5;
  double rate = 0; // 0: closed loop
  bool smoke = false;
  bool header = false;
  std::uint64_t rss_keys = 0;
  bool io_thread = false;       // callers on limiter::io_executor() (redis only)
  bool callers_context = false; // the store on the callers' io_context (redis only)
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "api_bench: %s\n"
               "usage: api_bench [--engine memory|redis] [--url URL]\n"
               "         [--strategy token_bucket|sliding_window|token_bucket_concurrent]\n"
               "         [--scenario admit|deny] [--callers N] [--threads T] [--keys K]\n"
               "         [--key-space shared|per-thread] [--pool one|default] [--seconds S]\n"
               "         [--warmup S] [--rate R] [--io-thread | --callers-context] [--smoke]\n"
               "         [--header]\n"
               "       api_bench --rss-keys N [--strategy ...] [--smoke] [--header]\n",
               why.c_str());
  std::exit(2);
}

args parse(int argc, char** argv) {
  args a;
  bool seconds_set = false;
  bool warmup_set = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view k = argv[i];
    if (k == "--smoke") {
      a.smoke = true;
      continue;
    }
    if (k == "--io-thread") {
      a.io_thread = true;
      continue;
    }
    if (k == "--callers-context") {
      a.callers_context = true;
      continue;
    }
    if (k == "--header") {
      a.header = true;
      continue;
    }
    if (i + 1 >= argc)
      usage("missing value after " + std::string(k));
    const std::string v = argv[++i];
    if (k == "--engine") {
      if (v != "memory" && v != "redis")
        usage("--engine memory|redis");
      a.engine = v;
    } else if (k == "--url") {
      a.url = v;
    } else if (k == "--strategy") {
      if (v == "token_bucket")
        a.strat = strategy::token_bucket;
      else if (v == "sliding_window")
        a.strat = strategy::sliding_window;
      else if (v == "token_bucket_concurrent")
        a.strat = strategy::token_bucket_concurrent;
      else
        usage("--strategy token_bucket|sliding_window|token_bucket_concurrent");
      a.strategy_name = v;
    } else if (k == "--scenario") {
      if (v != "admit" && v != "deny")
        usage("--scenario admit|deny");
      a.deny = v == "deny";
    } else if (k == "--callers") {
      a.callers = std::atoi(v.c_str());
    } else if (k == "--threads") {
      a.threads = std::atoi(v.c_str());
    } else if (k == "--keys") {
      a.keys = std::strtoull(v.c_str(), nullptr, 10);
    } else if (k == "--key-space") {
      if (v != "shared" && v != "per-thread")
        usage("--key-space shared|per-thread");
      a.per_thread_keys = v == "per-thread";
    } else if (k == "--pool") {
      if (v != "one" && v != "default")
        usage("--pool one|default");
      a.one_connection = v == "one";
    } else if (k == "--seconds") {
      a.seconds = std::atof(v.c_str());
      seconds_set = true;
    } else if (k == "--warmup") {
      a.warmup = std::atof(v.c_str());
      warmup_set = true;
    } else if (k == "--rate") {
      a.rate = std::atof(v.c_str());
    } else if (k == "--rss-keys") {
      a.rss_keys = std::strtoull(v.c_str(), nullptr, 10);
    } else {
      usage("unknown option " + std::string(k));
    }
  }
  if (a.smoke) {
    if (!seconds_set)
      a.seconds = 0.3;
    if (!warmup_set)
      a.warmup = 0.1;
  }
  if (a.seconds <= 0 || a.warmup < 0 || a.callers < 1 || a.threads < 1 || a.keys < 1 || a.rate < 0)
    usage("--seconds > 0, --warmup >= 0, --callers >= 1, --threads >= 1, --keys >= 1, --rate >= 0");
  if (a.io_thread && (a.engine != "redis" || a.threads != 1))
    usage("--io-thread: the callers run on the redis store's I/O thread (--engine redis, "
          "--threads 1)");
  if (a.callers_context && (a.engine != "redis" || a.threads != 1 || a.io_thread))
    usage("--callers-context: the redis store runs on the callers' one io_context (--engine "
          "redis, --threads 1, not with --io-thread)");
  if (a.keys > 1'000'000'000'000ULL)
    usage("--keys: at most 10^12 (12 digits)");
  return a;
}

// Latencies in ns, log-linear: exact below 32 ns, then 32 buckets per power
// of two (each bucket within 1/32 of its value). 2,048 counters: 16 KiB.
class histogram {
public:
  static constexpr int sub_bits = 5;
  static constexpr std::uint64_t sub = 1u << sub_bits;

  void add(std::uint64_t ns) noexcept {
    ++count_;
    max_ = std::max(max_, ns);
    if (ns < sub) {
      ++counts_[ns];
      return;
    }
    const int msb = 63 - std::countl_zero(ns);
    const int shift = msb - sub_bits;
    const std::uint64_t mant = (ns >> shift) & (sub - 1);
    ++counts_[(static_cast<std::uint64_t>(shift + 1) << sub_bits) | mant];
  }
  void merge(const histogram& o) noexcept {
    for (std::size_t i = 0; i < counts_.size(); ++i)
      counts_[i] += o.counts_[i];
    count_ += o.count_;
    max_ = std::max(max_, o.max_);
  }
  std::uint64_t count() const noexcept { return count_; }
  double max_us() const noexcept { return static_cast<double>(max_) / 1000.0; }
  // The middle of the bucket holding the value of rank ceil(p * count).
  double percentile_us(double p) const noexcept {
    if (count_ == 0)
      return 0;
    const auto rank =
        std::max<std::uint64_t>(1, static_cast<std::uint64_t>(p * static_cast<double>(count_)));
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < counts_.size(); ++i) {
      seen += counts_[i];
      if (seen >= rank)
        return std::min(middle_ns(i), static_cast<double>(max_)) / 1000.0;
    }
    return max_us();
  }

private:
  static double middle_ns(std::size_t i) noexcept {
    if (i < sub)
      return static_cast<double>(i);
    const int shift = static_cast<int>(i >> sub_bits) - 1;
    const std::uint64_t low = (sub | (i & (sub - 1))) << shift;
    return static_cast<double>(low) + static_cast<double>((std::uint64_t{1} << shift) - 1) / 2.0;
  }

  std::array<std::uint64_t, 64 << sub_bits> counts_{};
  std::uint64_t count_ = 0;
  std::uint64_t max_ = 0;
};

// What one thread's callers saw inside the measurement window.
struct thread_state {
  histogram latency;
  histogram service; // paced only: from the call's actual start, not its scheduled time
  std::uint64_t decisions = 0;
  std::uint64_t admitted = 0;
  std::uint64_t denied = 0;
  std::uint64_t errors = 0;
  std::string first_error;
  std::uint64_t thread_index = 0;
};

struct run_plan {
  ratesync::limiter lim;
  const args* a;
  steady::time_point measure_from;
  steady::time_point until;
  std::uint64_t timed_mask; // time every (mask + 1)th call
};

// Splitmix64: cheap and good enough to spread keys uniformly.
std::uint64_t next_random(std::uint64_t& s) noexcept {
  std::uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Twelve decimal digits, as redis-benchmark's __rand_int__ (fits in the
// string's small buffer: no allocation).
void set_key(std::string& key, std::uint64_t n) {
  char buf[12];
  for (int i = 11; i >= 0; --i) {
    buf[i] = static_cast<char>('0' + n % 10);
    n /= 10;
  }
  key.assign(buf, sizeof buf);
}

void note_error(thread_state& ts, const char* what) {
  if (ts.errors++ == 0)
    ts.first_error = what;
}

// Open-loop arrivals of one thread (--rate): due at first + k * interval,
// handed to the callers of that thread. A caller that finishes a call takes
// the oldest arrival already due, if any, with no suspension; otherwise it
// parks (its completion handler goes on the idle list, no timer). One
// dispatcher per thread (below) wakes at the next due arrival, at most once
// every `tick`, and hands every due arrival to a parked caller: one timer
// wait per wake-up, not per call. An arrival due while every caller is busy
// waits for the first one free, and its latency, measured from its scheduled
// time, includes that wait. Everything runs on the thread's executor: no
// locking. Arrivals stop at `until` (scheduled or real time).
class pacer {
public:
  static constexpr steady::duration tick = 100us;
  static constexpr steady::time_point stop_signal = steady::time_point::max();
  enum class take_result { due, none_due, done };

  pacer(steady::time_point first, std::chrono::duration<double, std::nano> interval,
        steady::time_point until)
      : first_(first), interval_(interval), until_(until), next_(first) {}

  // The oldest arrival due at `now` into `scheduled`; any other due ones go
  // to parked callers at once (a completion wakes the thread anyway: no need
  // to wait for the dispatcher's next tick).
  take_result take(steady::time_point now, steady::time_point& scheduled) {
    if (finished(now))
      return take_result::done;
    if (next_ > now)
      return take_result::none_due;
    scheduled = advance();
    hand_out(now);
    return take_result::due;
  }

  // Parks the calling coroutine until the dispatcher hands it an arrival
  // (its scheduled time) or stop_signal.
  asio::awaitable<steady::time_point> wait() {
    return asio::async_initiate<const asio::use_awaitable_t<>&, void(steady::time_point)>(
        park_initiation{this}, asio::use_awaitable);
  }

  // The dispatcher: every due arrival to a parked caller; then when to wake
  // up next. stop_signal once arrivals are over (parked callers released).
  steady::time_point dispatch(steady::time_point now) {
    if (finished(now)) {
      for (auto& p : idle_)
        p->resume(stop_signal);
      idle_.clear();
      return stop_signal;
    }
    hand_out(now);
    return std::min(until_, std::max(next_, now + tick));
  }

private:
  struct parked {
    virtual ~parked() = default;
    virtual void resume(steady::time_point scheduled) = 0;
  };
  // Resumed through a post to its own executor: the dispatcher hands out
  // every due arrival first, then the callers run in turn.
  template <class Handler> struct parked_handler final : parked {
    explicit parked_handler(Handler h) : handler(std::move(h)) {}
    void resume(steady::time_point scheduled) override {
      auto ex = asio::get_associated_executor(handler);
      asio::post(ex, [h = std::move(handler), scheduled]() mutable { std::move(h)(scheduled); });
    }
    Handler handler;
  };
  struct park_initiation {
    pacer* self;
    template <class Handler> void operator()(Handler&& h) const {
      self->idle_.push_back(
          std::make_unique<parked_handler<std::decay_t<Handler>>>(std::forward<Handler>(h)));
    }
  };

  void hand_out(steady::time_point now) {
    while (!idle_.empty() && next_ <= now) {
      idle_.back()->resume(advance());
      idle_.pop_back();
    }
  }
  bool finished(steady::time_point now) const noexcept { return now >= until_ || next_ >= until_; }
  steady::time_point advance() noexcept {
    const steady::time_point s = next_;
    ++count_;
    next_ = first_ +
            std::chrono::duration_cast<steady::duration>(interval_ * static_cast<double>(count_));
    return s;
  }

  steady::time_point first_;
  std::chrono::duration<double, std::nano> interval_;
  steady::time_point until_;
  steady::time_point next_;
  std::uint64_t count_ = 0;
  std::vector<std::unique_ptr<parked>> idle_; // LIFO: the most recently parked first
};

// One timer for all the paced callers of a thread.
asio::awaitable<void> dispatcher(pacer* pace) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (;;) {
    const steady::time_point wake = pace->dispatch(steady::now());
    if (wake == pacer::stop_signal)
      co_return;
    timer.expires_at(wake);
    co_await timer.async_wait(asio::use_awaitable);
  }
}

// Coroutine parameters by value (the frame outlives the caller's arguments).
// Paced: arrivals from `pace`. Closed loop (pace unused): the next call as soon
// as this one returns; its own instantiation, so pacing costs it nothing.
template <bool Paced>
asio::awaitable<void> caller(run_plan plan, thread_state* ts, std::uint64_t seed, pacer* pace) {
  const args& a = *plan.a;
  std::uint64_t rng = seed;
  const std::uint64_t key_base = a.per_thread_keys ? ts->thread_index * a.keys : 0;
  bool counting = false;
  steady::time_point now = Paced ? steady::now() : steady::time_point{};
  for (std::uint64_t i = 0;; ++i) {
    bool timed = true;
    steady::time_point t0{};
    if constexpr (!Paced) {
      timed = (i & plan.timed_mask) == 0;
      if (timed) {
        t0 = steady::now();
        if (t0 >= plan.until)
          break;
        counting = t0 >= plan.measure_from;
      }
    } else {
      // Paced: every call is timed, from its scheduled time (a late call
      // counts); counted when scheduled inside the window.
      const pacer::take_result got = pace->take(now, t0);
      if (got == pacer::take_result::done)
        break;
      if (got == pacer::take_result::none_due) {
        t0 = co_await pace->wait();
        if (t0 == pacer::stop_signal)
          break;
      }
      counting = t0 >= plan.measure_from;
    }
    steady::time_point started{};
    if constexpr (Paced)
      started = steady::now();
    ratesync::acquire_options o;
    if (a.keys > 1 || a.per_thread_keys)
      set_key(o.key, key_base + (a.keys > 1 ? next_random(rng) % a.keys : 0));
    try {
      if (a.deny) {
        o.timeout = ratesync::seconds_d(0);
        ratesync::acquire_result r = co_await plan.lim.try_acquire(o);
        if (counting)
          ++(r.allowed ? ts->admitted : ts->denied);
      } else {
        ratesync::permit p = co_await plan.lim.acquire(o);
        if (counting)
          ++ts->admitted;
      }
    } catch (const ratesync::acquisition_error&) {
      if (counting)
        ++ts->denied; // an admission scenario that refuses: reported, not an error
    } catch (const std::exception& e) {
      note_error(*ts, e.what());
    }
    if constexpr (Paced)
      now = steady::now();
    if (counting) {
      ++ts->decisions;
      if (timed)
        ts->latency.add(static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>((Paced ? now : steady::now()) - t0)
                .count()));
      if constexpr (Paced)
        ts->service.add(static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(now - started).count()));
    }
  }
}

std::string fmt_service(double p50, double p99) {
  char buf[96];
  std::snprintf(buf, sizeof buf, " (from the actual start: p50 %.1f us, p99 %.1f us)", p50, p99);
  return buf;
}

double seconds_of(const timeval& t) {
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) * 1e-6;
}

double process_cpu_seconds() {
  rusage self{};
  getrusage(RUSAGE_SELF, &self);
  return seconds_of(self.ru_utime) + seconds_of(self.ru_stime);
}

long rss_kib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0)
      return std::atol(line.c_str() + 6);
  return -1;
}

ratesync::limiter_options limiter_for(const args& a, const std::string& store) {
  ratesync::limiter_options o;
  o.store = store;
  o.fail_closed = true; // a store failure is an error here, not an admission
  if (a.strat == strategy::sliding_window) {
    o.algo = ratesync::algorithm::sliding_window;
    o.limit = a.deny ? 1 : 1'000'000;
    o.window_seconds = a.deny ? 8.0 : 0.1;
  } else {
    o.rate_per_second = a.deny ? 0.125 : 1e8; // 8 s / 1 us between tokens
    o.burst = a.deny ? 1 : 1'000'000'000;
  }
  if (a.strat == strategy::token_bucket_concurrent)
    o.max_concurrent = 1'000'000;
  return o;
}

// Runs one coroutine on a fresh io_context of this thread to completion.
template <class F> void run_here(F f) {
  asio::io_context ctx(1);
  std::exception_ptr failure;
  asio::co_spawn(ctx, std::move(f), [&](std::exception_ptr e) { failure = e; });
  ctx.run();
  if (failure)
    std::rethrow_exception(failure);
}

int rss_mode(const args& a) {
  ratesync::registry reg;
  reg.configure_limiter("bench", limiter_for(a, ""));
  ratesync::limiter lim = reg.get_limiter("bench");
  std::uint64_t next = 0;
  std::uint64_t errors = 0;
  auto round = [&](std::uint64_t n) {
    run_here([&]() -> asio::awaitable<void> {
      ratesync::acquire_options o;
      for (std::uint64_t i = 0; i < n; ++i) {
        set_key(o.key, next++);
        try {
          ratesync::permit p = co_await lim.acquire(o);
        } catch (const std::exception&) {
          ++errors;
        }
      }
    });
  };
  round(10'000);
  const long before = rss_kib();
  const auto t0 = steady::now();
  round(a.rss_keys);
  const long after = rss_kib();
  round(a.rss_keys);
  const long after2 = rss_kib();
  const double secs = std::chrono::duration<double>(steady::now() - t0).count();
  const long growth = std::max(after, after2) - before;
  if (a.header)
    std::printf("csv_header,mode,strategy,keys_per_round,rss_before_kib,rss_after_kib,"
                "rss_after_second_round_kib,growth_kib,seconds,errors\n");
  std::printf("csv,rss,%s,%llu,%ld,%ld,%ld,%ld,%.2f,%llu\n", a.strategy_name.c_str(),
              static_cast<unsigned long long>(a.rss_keys), before, after, after2, growth, secs,
              static_cast<unsigned long long>(errors));
  std::printf("api_bench: memory %s, RSS %ld KiB before, %ld KiB after %llu acquisitions over as "
              "many distinct keys, %ld KiB after %llu more (growth %ld KiB), %.2f s\n",
              a.strategy_name.c_str(), before, after, static_cast<unsigned long long>(a.rss_keys),
              after2, static_cast<unsigned long long>(a.rss_keys), growth, secs);
  if (errors) {
    std::fprintf(stderr, "api_bench: %llu acquisitions failed\n",
                 static_cast<unsigned long long>(errors));
    return 1;
  }
  // Flat: what is left after 2N distinct keys is not the keys (well under a
  // byte per key; N keys kept would be ~100+ bytes each). Not checked under
  // the sanitizers, whose allocators keep freed memory for a while.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  constexpr bool check_rss = false;
#else
  constexpr bool check_rss = true;
#endif
  if (a.smoke && check_rss &&
      (before <= 0 || growth > static_cast<long>(16 * 1024 + a.rss_keys / 64))) {
    std::fprintf(stderr, "api_bench: smoke: RSS grew by %ld KiB over %llu distinct keys\n", growth,
                 static_cast<unsigned long long>(2 * a.rss_keys));
    return 1;
  }
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  const args a = parse(argc, argv);
  if (a.rss_keys > 0)
    return rss_mode(a);

  const bool redis = a.engine == "redis";
  // --callers-context: the store's and the callers' io_context. Declared
  // before the registry: it must outlive the store.
  std::optional<asio::io_context> callers_ctx;
  if (a.callers_context)
    callers_ctx.emplace(1);
  ratesync::registry reg;
  try {
    std::string store;
    if (redis) {
      ratesync::store_options s;
      s.engine = "redis";
      s.url = a.url;
      s.socket_connect_timeout = 2s;
      s.io_context = callers_ctx ? &*callers_ctx : nullptr;
      if (a.one_connection) {
        s.pool_min_size = 1;
        s.pool_max_size = 1;
      }
      reg.configure_store("bench_store", s);
      store = "bench_store";
    }
    reg.configure_limiter("bench", limiter_for(a, store));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "api_bench: cannot configure: %s\n", e.what());
    return 2;
  }
  ratesync::limiter lim = reg.get_limiter("bench");

  // One decision first: the connection is up and the script loaded (EVALSHA,
  // NOSCRIPT, EVAL) before the clock starts; a dead server fails here.
  try {
    auto first = [&]() -> asio::awaitable<void> {
      ratesync::acquire_options o;
      o.timeout = ratesync::seconds_d(0);
      ratesync::acquire_result r = co_await lim.try_acquire(o);
      (void)r;
    };
    if (callers_ctx) {
      // On the store's context, run here until it is done (run() would not
      // return: the connections keep it busy); its worker runs it after.
      std::exception_ptr failure;
      bool done = false;
      asio::co_spawn(*callers_ctx, first, [&](std::exception_ptr e) {
        failure = e;
        done = true;
      });
      while (!done)
        callers_ctx->run_one();
      if (failure)
        std::rethrow_exception(failure);
    } else {
      run_here(first);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "api_bench: first decision failed: %s\n", e.what());
    return 1;
  }

  const auto start = steady::now();
  const auto measure_from =
      start + std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(a.warmup));
  const auto until = measure_from + std::chrono::duration_cast<steady::duration>(
                                        std::chrono::duration<double>(a.seconds));
  const run_plan plan{lim, &a, measure_from, until, redis ? 0u : 15u};
  // Paced: each thread's arrivals are R / T per second, evenly spaced, the
  // threads' sequences offset by a fraction of the interval from one another.
  const std::chrono::duration<double, std::nano> interval{a.rate > 0 ? 1e9 * a.threads / a.rate
                                                                     : 0.0};

  std::vector<thread_state> states(static_cast<std::size_t>(a.threads));
  std::vector<std::thread> workers;
  for (int t = 0; t < a.threads; ++t) {
    states[static_cast<std::size_t>(t)].thread_index = static_cast<std::uint64_t>(t);
    workers.emplace_back([&, t] {
      thread_state* ts = &states[static_cast<std::size_t>(t)];
      std::optional<pacer> paced;
      if (a.rate > 0)
        paced.emplace(start + std::chrono::duration_cast<steady::duration>(
                                  interval * (static_cast<double>(t) / a.threads)),
                      interval, until);
      pacer* pace = paced ? &*paced : nullptr;
      if (a.io_thread) {
        // The callers run on the store's own I/O thread: no thread hand-off
        // per decision. This thread waits for them (and the dispatcher).
        std::atomic<int> left{a.callers + (pace ? 1 : 0)};
        std::promise<void> all_done;
        auto one_done = [&](std::exception_ptr) {
          if (--left == 0)
            all_done.set_value();
        };
        for (int c = 0; c < a.callers; ++c) {
          const auto seed = static_cast<std::uint64_t>(c);
          if (pace)
            asio::co_spawn(lim.io_executor(), caller<true>(plan, ts, seed * 7919u + 1, pace),
                           one_done);
          else
            asio::co_spawn(lim.io_executor(), caller<false>(plan, ts, seed * 7919u + 1, pace),
                           one_done);
        }
        if (pace)
          asio::co_spawn(lim.io_executor(), dispatcher(pace), one_done);
        all_done.get_future().wait();
        return;
      }
      std::optional<asio::io_context> own_ctx;
      if (!callers_ctx)
        own_ctx.emplace(1);
      asio::io_context& ctx = callers_ctx ? *callers_ctx : *own_ctx;
      // The store's connections keep its context busy: stopped when the
      // callers are done (a context of this thread's own runs out of work).
      int left = a.callers + (pace ? 1 : 0);
      auto one_done = [&](const std::exception_ptr&) {
        if (--left == 0 && callers_ctx)
          ctx.stop();
      };
      for (int c = 0; c < a.callers; ++c) {
        const auto seed = static_cast<std::uint64_t>(t) * 1'000'003u + static_cast<unsigned>(c);
        if (pace)
          asio::co_spawn(ctx, caller<true>(plan, ts, seed * 7919u + 1, pace), one_done);
        else
          asio::co_spawn(ctx, caller<false>(plan, ts, seed * 7919u + 1, pace), one_done);
      }
      if (pace)
        asio::co_spawn(ctx, dispatcher(pace), one_done);
      ctx.run();
    });
  }
  // This thread only watches the clock: CPU is read at the window's edges.
  std::this_thread::sleep_until(measure_from);
  const double cpu0 = process_cpu_seconds();
  const auto wall0 = steady::now();
  std::this_thread::sleep_until(until);
  const double cpu1 = process_cpu_seconds();
  const auto wall1 = steady::now();
  for (auto& w : workers)
    w.join();

  thread_state all;
  std::string first_error;
  for (auto& s : states) {
    all.latency.merge(s.latency);
    all.service.merge(s.service);
    all.decisions += s.decisions;
    all.admitted += s.admitted;
    all.denied += s.denied;
    all.errors += s.errors;
    if (first_error.empty())
      first_error = s.first_error;
  }
  const ratesync::limiter_metrics m = lim.get_metrics();
  const double wall = std::chrono::duration<double>(wall1 - wall0).count();
  const double window = a.seconds;
  const double dps = static_cast<double>(all.decisions) / window;
  const double cpu_us =
      all.decisions ? (cpu1 - cpu0) * 1e6 / static_cast<double>(all.decisions) : 0;
  const double cpu_pct = 100.0 * (cpu1 - cpu0) / wall;
  const double p50 = all.latency.percentile_us(0.50);
  const double p99 = all.latency.percentile_us(0.99);
  const double p999 = all.latency.percentile_us(0.999);
  // Paced runs: the same calls timed from their actual start. The difference
  // is the time they waited to be started (the pacer's lateness, or every
  // caller busy); 0 when not paced.
  const bool paced = all.service.count() > 0;
  const double service_p50 = paced ? all.service.percentile_us(0.50) : 0;
  const double service_p99 = paced ? all.service.percentile_us(0.99) : 0;
  const char* pool = redis ? (a.one_connection ? "one" : "default") : "-";
  const char* scenario = a.deny ? "deny" : "admit";
  const char* key_space = a.per_thread_keys ? "per-thread" : "shared";

  if (a.header)
    std::printf("csv_header,engine,strategy,scenario,callers,threads,keys,key_space,pool,"
                "target_rate,seconds,decisions,admitted,denied,errors,decisions_per_s,p50_us,"
                "p99_us,p999_us,max_us,cpu_us_per_decision,cpu_pct,latency_samples,"
                "store_errors,service_p50_us,service_p99_us\n");
  std::printf(
      "csv,%s,%s,%s,%d,%d,%llu,%s,%s,%.0f,%.3f,%llu,%llu,%llu,%llu,%.0f,%.2f,%.2f,%.2f,"
      "%.2f,%.3f,%.0f,%llu,%llu,%.2f,%.2f\n",
      a.engine.c_str(), a.strategy_name.c_str(), scenario, a.callers, a.threads,
      static_cast<unsigned long long>(a.keys), key_space, pool, a.rate, window,
      static_cast<unsigned long long>(all.decisions), static_cast<unsigned long long>(all.admitted),
      static_cast<unsigned long long>(all.denied), static_cast<unsigned long long>(all.errors), dps,
      p50, p99, p999, all.latency.max_us(), cpu_us, cpu_pct,
      static_cast<unsigned long long>(all.latency.count()),
      static_cast<unsigned long long>(m.store_errors), service_p50, service_p99);
  std::printf("api_bench: %s %s %s, %d caller(s) x %d thread(s), %llu key(s)%s, pool %s%s: "
              "%.0f decisions/s (%llu admitted, %llu denied), p50 %.1f us, p99 %.1f us, "
              "p99.9 %.1f us%s, client CPU %.3f us/decision (%.0f%% of a core), %llu errors\n",
              a.engine.c_str(), a.strategy_name.c_str(), scenario, a.callers, a.threads,
              static_cast<unsigned long long>(a.keys), a.per_thread_keys ? " per thread" : "", pool,
              a.rate > 0 ? (", paced at " + std::to_string(a.rate) + "/s").c_str() : "", dps,
              static_cast<unsigned long long>(all.admitted),
              static_cast<unsigned long long>(all.denied), p50, p99, p999,
              paced ? fmt_service(service_p50, service_p99).c_str() : "", cpu_us, cpu_pct,
              static_cast<unsigned long long>(all.errors));

  int status = 0;
  if (all.errors || m.store_errors) {
    std::fprintf(stderr, "api_bench: %llu failed acquisitions (store errors %llu), first: %s\n",
                 static_cast<unsigned long long>(all.errors),
                 static_cast<unsigned long long>(m.store_errors), first_error.c_str());
    status = 1;
  }
  if (a.smoke) {
    std::string bad;
    if (all.decisions == 0 || all.latency.count() == 0 || p50 <= 0)
      bad = "no decisions measured";
    else if (!a.deny && all.denied > 0)
      bad = "refusals in an admission scenario";
    else if (a.deny && all.denied <= all.admitted)
      bad = "a denial scenario where most decisions admitted";
    else if (!(p50 <= p99 && p99 <= p999))
      bad = "percentiles out of order";
    if (!bad.empty()) {
      std::fprintf(stderr, "api_bench: smoke: %s\n", bad.c_str());
      status = 1;
    }
  }
  return status;
}

// The redis engine's behaviour as an operator sees it, against a private
// redis-server per test (tests/redis_server.hpp): what happens when Redis
// stops, restarts or forgets its scripts; which keys it writes, how they are
// named and that every one expires; get_state and reset; the seed page's TOML
// examples; and the smallest ACL a ratesync user needs (docs/engines/redis.md).
//
// Each test has its own server and each registry its own key_prefix.
// (g++ 12: no braced temporary inside a co_await expression; coroutine
// parameters are taken by value.)
#include <algorithm>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <gtest/gtest.h>
#include <map>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "ratesync/memory/sliding_log.hpp"
#include "ratesync/ratesync.hpp"
#include "redis/lua_scripts.hpp"
#include "redis/redis_engine.hpp" // key_base: the documented key layout
#include "redis/script.hpp"       // sha1_hex
#include "redis_server.hpp"
#include "test_support.hpp"

namespace {

using namespace ratesync;
using namespace ratesync::test;
using reply = redis_server::reply;

// ---------------------------------------------------------------------------
// Helpers

store_options redis_store(const redis_server& srv, const std::string& prefix) {
  store_options s;
  s.engine = "redis";
  s.url = srv.url();
  s.key_prefix = prefix;
  return s;
}

limiter_options bucket(double rate, std::int64_t burst) {
  limiter_options o;
  o.store = "r";
  o.rate_per_second = rate;
  o.burst = burst;
  return o;
}

limiter_options window(std::int64_t limit, double seconds) {
  limiter_options o;
  o.store = "r";
  o.algo = algorithm::sliding_window;
  o.limit = limit;
  o.window_seconds = seconds;
  return o;
}

limiter_options slots(std::int64_t n) {
  limiter_options o;
  o.store = "r";
  o.max_concurrent = n;
  return o;
}

// One decision, fail fast unless a timeout is given.
acquire_result try_now(const limiter& l, std::string key = "", double timeout_s = 0.0) {
  acquire_options o;
  o.key = std::move(key);
  o.timeout = seconds_d(timeout_s);
  return run(l.try_acquire(o));
}

limiter_state state_of(const limiter& l, std::string key = "") {
  return run(l.get_state(std::move(key)));
}

std::vector<std::string> all_keys(redis_server& srv) {
  std::vector<std::string> out;
  for (const auto& e : srv.query({"KEYS", "*"}).elements)
    out.push_back(e.str);
  std::sort(out.begin(), out.end());
  return out;
}

long long pttl(redis_server& srv, const std::string& key) {
  return srv.query({"PTTL", key}).integer;
}

// Polls `pred` every 10 ms for up to `limit`; true once it holds.
template <class Pred> bool eventually(Pred pred, std::chrono::milliseconds limit = 2000ms) {
  const auto t0 = steady::now();
  while (!pred()) {
    if (steady::now() - t0 > limit)
      return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

// What ACL LOG names: the denied commands (reason "command") and keys.
std::set<std::string> acl_denials(redis_server& srv) {
  std::set<std::string> out;
  for (const auto& entry : srv.query({"ACL", "LOG"}).elements) {
    std::string reason, object;
    for (std::size_t i = 0; i + 1 < entry.elements.size(); i += 2) {
      if (entry.elements[i].str == "reason")
        reason = entry.elements[i + 1].str;
      if (entry.elements[i].str == "object")
        object = entry.elements[i + 1].str;
    }
    out.insert(reason + ":" + object);
    if (std::getenv("RATESYNC_TEST_VERBOSE"))
      std::printf("ACL LOG: %s\n", entry.to_string().c_str());
  }
  return out;
}

// ---------------------------------------------------------------------------
// Failure: fail open, fail closed, the circuit breaker, recovery

store_options failing_store(const redis_server& srv, const std::string& prefix) {
  store_options s = redis_store(srv, prefix);
  s.socket_timeout = seconds_d(0.3);
  s.socket_connect_timeout = seconds_d(0.3);
  return s;
}

// limiter::io_executor(): coroutines started on it run on the store's I/O
// thread and make their decisions there (no thread hand-off); a memory
// limiter has no such thread.
TEST(RedisStore, IoExecutorRunsCallersOnTheStoresThread) {
  redis_server srv;
  auto reg = std::make_unique<registry>();
  reg->configure_store("r", redis_store(srv, "ioexec"));
  reg->configure_limiter("api", bucket(1e6, 1000));
  limiter_options mem;
  mem.rate_per_second = 10;
  reg->configure_limiter("local", mem);
  EXPECT_FALSE(reg->get_limiter("local").io_executor());

  limiter api = reg->get_limiter("api");
  asio::any_io_executor ex = api.io_executor();
  ASSERT_TRUE(ex);
  std::promise<int> done;
  std::promise<void> finished;
  asio::co_spawn(
      ex,
      [api, ex, &done]() mutable -> asio::awaitable<void> {
        int on_thread = 0;
        for (int i = 0; i < 200; ++i) {
          permit p = co_await api.acquire();
          if (ex.target<asio::io_context::executor_type>()->running_in_this_thread())
            ++on_thread;
        }
        done.set_value(on_thread);
        // Meanwhile the test drops the registry: the last reference to the
        // store is this coroutine's, released on the store's own thread.
        asio::steady_timer t(ex, std::chrono::milliseconds(300));
        co_await t.async_wait(asio::use_awaitable);
        api = limiter(nullptr);
        ex = asio::any_io_executor();
      },
      [&finished](std::exception_ptr) { finished.set_value(); });
  auto f = done.get_future();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(f.get(), 200);
  EXPECT_EQ(api.get_metrics().total_acquisitions, 200u);
  EXPECT_EQ(api.get_metrics().store_errors, 0u);
  api = limiter(nullptr);
  ex = asio::any_io_executor();
  reg.reset();
  // The store goes with the coroutine, on its own thread: no join of itself
  // ("resource deadlock"), no use after free (ASan), and the thread ends.
  EXPECT_EQ(finished.get_future().wait_for(std::chrono::seconds(5)), std::future_status::ready);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
}

TEST(RedisFailure, FailOpenAdmitsCountsAndTheBreakerAnswersAtOnce) {
  redis_server srv;
  registry reg;
  reg.configure_store("r", failing_store(srv, "failopen"));
  limiter_options o = bucket(1000, 1000);
  o.fail_closed = false;
  reg.configure_limiter("api", o);
  limiter api = reg.get_limiter("api");

  ASSERT_TRUE(try_now(api).allowed);
  ASSERT_EQ(api.get_metrics().store_errors, 0u);
  EXPECT_FALSE(api.get_metrics().circuit_open);

  srv.stop();
  int by_breaker = 0;
  double slowest_breaker_ms = 0;
  for (int i = 0; i < 40; ++i) {
    const auto before = api.get_metrics().circuit_rejections;
    const auto t0 = steady::now();
    const acquire_result r = try_now(api);
    const double ms = ms_since(t0);
    EXPECT_TRUE(r.allowed) << "fail open: attempt " << i;
    if (api.get_metrics().circuit_rejections > before) {
      ++by_breaker;
      slowest_breaker_ms = std::max(slowest_breaker_ms, ms);
    }
    std::this_thread::sleep_for(5ms);
  }
  const limiter_metrics m = api.get_metrics();
  EXPECT_EQ(m.total_acquisitions, 41u);
  EXPECT_EQ(m.store_errors, 40u);
  EXPECT_GT(m.circuit_rejections, 0u);
  EXPECT_EQ(m.circuit_rejections, static_cast<std::uint64_t>(by_breaker));
  EXPECT_TRUE(m.circuit_open);
  // The breaker answers without waiting on the dead store: far below the
  // 300 ms socket_timeout.
  EXPECT_LT(slowest_breaker_ms, 20.0);
  // A fail-open admission holds no slot and is counted like any permit.
  EXPECT_EQ(m.current_concurrent, 0);
}

// A paused server accepts connections and answers nothing: the case where the
// breaker matters most. The first failures each wait socket_timeout; once the
// breaker is open the answers are immediate.
TEST(RedisFailure, UnresponsiveServerCostsSocketTimeoutOnlyUntilTheBreakerOpens) {
  redis_server srv;
  registry reg;
  reg.configure_store("r", failing_store(srv, "paused"));
  reg.configure_limiter("api", bucket(1000, 1000));
  limiter api = reg.get_limiter("api");
  ASSERT_TRUE(try_now(api).allowed);

  srv.pause();
  std::vector<double> waited, by_breaker;
  for (int i = 0; i < 12; ++i) {
    const auto before = api.get_metrics().circuit_rejections;
    const auto t0 = steady::now();
    EXPECT_TRUE(try_now(api).allowed);
    const double ms = ms_since(t0);
    (api.get_metrics().circuit_rejections > before ? by_breaker : waited).push_back(ms);
  }
  srv.resume();
  // Three failures open the breaker (circuit_breaker::threshold); a probe
  // after each cool-down (100 ms, then doubling) may wait socket_timeout too.
  ASSERT_GE(waited.size(), 3u);
  EXPECT_GE(waited[0], 250.0);
  EXPECT_LT(waited[0], 300.0 + 250.0);
  ASSERT_FALSE(by_breaker.empty());
  for (double ms : by_breaker)
    EXPECT_LT(ms, 20.0);
  EXPECT_EQ(api.get_metrics().store_errors, 12u);
}

TEST(RedisFailure, FailClosedThrowsStoreErrorAndFlagsTheBreakersAnswers) {
  redis_server srv;
  registry reg;
  reg.configure_store("r", failing_store(srv, "failclosed"));
  limiter_options o = bucket(1000, 1000);
  o.fail_closed = true;
  reg.configure_limiter("api", o);
  limiter api = reg.get_limiter("api");
  ASSERT_TRUE(try_now(api).allowed);

  srv.stop();
  int thrown = 0, flagged = 0;
  double slowest_flagged_ms = 0;
  for (int i = 0; i < 30; ++i) {
    const auto t0 = steady::now();
    try {
      (void)try_now(api);
      ADD_FAILURE() << "fail closed: attempt " << i << " was decided";
    } catch (const store_error& e) {
      ++thrown;
      EXPECT_EQ(e.store(), "r");
      if (e.circuit_open()) {
        ++flagged;
        slowest_flagged_ms = std::max(slowest_flagged_ms, ms_since(t0));
      }
    }
    std::this_thread::sleep_for(5ms);
  }
  const limiter_metrics m = api.get_metrics();
  EXPECT_EQ(thrown, 30);
  EXPECT_GT(flagged, 0);
  EXPECT_EQ(m.store_errors, 30u);
  EXPECT_EQ(m.circuit_rejections, static_cast<std::uint64_t>(flagged));
  EXPECT_EQ(m.total_acquisitions, 1u);
  EXPECT_TRUE(m.circuit_open);
  EXPECT_LT(slowest_flagged_ms, 20.0);
}

// A probe whose caller's io_context is stopped and destroyed before its
// reply is handled gives the breaker no verdict. The probe must be handed on:
// before, the breaker stayed open for good, Redis back or not.
TEST(RedisFailure, AProbeWhoseCallerGoesAwayDoesNotKeepTheBreakerOpen) {
  redis_server srv;
  registry reg;
  reg.configure_store("r", failing_store(srv, "probe"));
  reg.configure_limiter("api", bucket(1000, 1000));
  limiter api = reg.get_limiter("api");
  ASSERT_TRUE(try_now(api).allowed);
  srv.pause();
  for (int i = 0; i < 3 && !api.get_metrics().circuit_open; ++i)
    (void)try_now(api); // each waits socket_timeout: three open the breaker
  ASSERT_TRUE(api.get_metrics().circuit_open);
  std::this_thread::sleep_for(150ms); // past the first cool-down (100 ms)
  {
    asio::io_context worker;
    bool decided = false;
    asio::co_spawn(
        worker,
        [api, &decided]() -> asio::awaitable<void> {
          acquire_options o;
          o.timeout = seconds_d(0);
          (void)co_await api.try_acquire(o); // the probe, to a paused server
          decided = true;
        },
        asio::detached);
    worker.run_for(50ms);
    ASSERT_FALSE(decided);
    worker.stop();
    srv.resume();
    std::this_thread::sleep_for(400ms); // the probe's reply (or timeout) is queued, never run
  } // the worker goes, its queued handlers and the probe's coroutine with it
  EXPECT_TRUE(eventually([&] {
    (void)try_now(api);
    return !api.get_metrics().circuit_open;
  })) << "the breaker stayed open: its probe was never handed on";
}

TEST(RedisFailure, RecoversOnceTheServerIsBackAndLimitsAgain) {
  redis_server srv;
  registry reg;
  reg.configure_store("r", failing_store(srv, "recovery"));
  reg.configure_limiter("api", bucket(1000, 1000));
  reg.configure_limiter("slow", bucket(1, 1)); // one per second
  limiter api = reg.get_limiter("api");
  limiter slow = reg.get_limiter("slow");
  ASSERT_TRUE(try_now(api).allowed);

  // An outage of about a second and a half, with traffic all along: the
  // breaker's cool-down has grown (100, 200, 400, 800 ms) by the end.
  srv.stop();
  const auto outage = steady::now();
  while (ms_since(outage) < 1500) {
    EXPECT_TRUE(try_now(api).allowed);
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(api.get_metrics().circuit_open);
  srv.start();

  // Decided by Redis again: an acquire that adds no store error.
  const auto back = steady::now();
  double recovered_ms = -1;
  std::string trace; // the slow attempts (probes), for the log
  while (ms_since(back) < 8000) {
    const auto errors = api.get_metrics().store_errors;
    const auto t0 = steady::now();
    EXPECT_TRUE(try_now(api).allowed);
    if (ms_since(t0) > 5.0)
      trace += " probe at +" + std::to_string(static_cast<int>(ms_since(back) - ms_since(t0))) +
               " ms took " + std::to_string(static_cast<int>(ms_since(t0))) + " ms;";
    if (api.get_metrics().store_errors == errors) {
      recovered_ms = ms_since(back);
      break;
    }
    std::this_thread::sleep_for(20ms);
  }
  std::printf("after the restart:%s\n", trace.c_str());
  ASSERT_GE(recovered_ms, 0) << "still failing 8 s after the restart";
  std::printf("decided by Redis again %.0f ms after the restart\n", recovered_ms);
  // Usually ~0.7 s after this outage, but not bounded by 2 s: the connection
  // retries after 20 ms doubling to 2 s (plus up to half as jitter), and a
  // breaker probe that reaches a connection still waiting out that backoff
  // times out (socket_timeout) and doubles the cool-down (to at most 2 s).
  // Seen: 2.6 s in 1 run of 7. Bound: a reconnect (<= ~1.9 s after this
  // outage) + one more cool-down (<= 2 s) + slack.
  EXPECT_LT(recovered_ms, 5000.0);
  EXPECT_FALSE(api.get_metrics().circuit_open);

  const auto errors = api.get_metrics().store_errors;
  for (int i = 0; i < 20; ++i)
    EXPECT_TRUE(try_now(api).allowed);
  EXPECT_EQ(api.get_metrics().store_errors, errors) << "store_errors still growing";

  // Real limiting: the second call within a second is refused by Redis.
  ASSERT_TRUE(try_now(slow).allowed);
  const acquire_result denied = try_now(slow);
  EXPECT_FALSE(denied.allowed);
  EXPECT_EQ(denied.reason, denial_reason::rate_limited);
  EXPECT_GT(denied.retry_after, 900ms);
  EXPECT_LE(denied.retry_after, 1000ms);
  EXPECT_EQ(slow.get_metrics().store_errors, 0u);
}

// ---------------------------------------------------------------------------
// SCRIPT FLUSH (what a restart, failover or operator does to the script cache)

// Repeats SCRIPT FLUSH every few milliseconds until destroyed.
class flusher {
public:
  explicit flusher(redis_server& srv)
      : thread_([this, &srv] {
          while (!done_) {
            srv.command({"SCRIPT", "FLUSH"});
            ++flushes;
            std::this_thread::sleep_for(3ms);
          }
        }) {}
  ~flusher() {
    done_ = true;
    thread_.join();
  }
  std::atomic<int> flushes{0};

private:
  std::atomic<bool> done_{false};
  std::thread thread_;
};

asio::awaitable<void> acquire_many(limiter l, int n, std::atomic<int>* admitted,
                                   std::atomic<int>* failed) {
  for (int i = 0; i < n; ++i) {
    try {
      acquire_options o;
      o.timeout = seconds_d(0);
      acquire_result r = co_await l.try_acquire(o);
      ++(r.allowed ? *admitted : *failed);
    } catch (const std::exception&) {
      ++*failed;
    }
  }
}

TEST(RedisScripts, ScriptFlushUnderLoadFailsNothing) {
  redis_server srv;
  registry reg;
  reg.configure_store("r", redis_store(srv, "flush"));
  reg.configure_limiter("api", bucket(1e6, 1000000));
  limiter api = reg.get_limiter("api");
  std::atomic<int> admitted{0}, failed{0};
  {
    flusher f(srv);
    asio::io_context ctx;
    for (int i = 0; i < 100; ++i)
      asio::co_spawn(ctx, acquire_many(api, 30, &admitted, &failed), asio::detached);
    ctx.run();
    EXPECT_GT(f.flushes.load(), 5);
  }
  EXPECT_EQ(admitted.load(), 3000);
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(api.get_metrics().store_errors, 0u);
  EXPECT_EQ(api.get_metrics().total_acquisitions, 3000u);
}

// Waiting callers on a 50/s bucket for 2 s while the scripts keep vanishing:
// a NOSCRIPT retry neither doubles a decision nor loses one.
asio::awaitable<void> paced_caller(limiter l, steady::time_point end, std::atomic<int>* admitted,
                                   std::atomic<int>* failed) {
  for (;;) {
    const auto left = end - steady::now();
    if (left <= 0ns)
      co_return;
    acquire_options o;
    o.timeout = std::chrono::duration_cast<seconds_d>(left);
    try {
      acquire_result r = co_await l.try_acquire(o);
      if (!r.allowed)
        co_return; // the next slot is past the end
      ++*admitted;
    } catch (const std::exception&) {
      ++*failed;
    }
  }
}

TEST(RedisScripts, ScriptFlushDuringPacedWaitsNeitherDoublesNorLoses) {
  redis_server srv;
  registry reg;
  reg.configure_store("r", redis_store(srv, "flushpaced"));
  reg.configure_limiter("paced", bucket(50, 1));
  limiter paced = reg.get_limiter("paced");
  std::atomic<int> admitted{0}, failed{0};
  {
    flusher f(srv);
    asio::io_context ctx;
    const auto end = steady::now() + 2s;
    for (int i = 0; i < 8; ++i)
      asio::co_spawn(ctx, paced_caller(paced, end, &admitted, &failed), asio::detached);
    ctx.run();
  }
  // 1 at once + 50 per second for 2 s; one more for the instants at the edges.
  EXPECT_LE(admitted.load(), 1 + 50 * 2 + 1);
  EXPECT_GE(admitted.load(), 91); // >= 90% of 101
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(paced.get_metrics().store_errors, 0u);
}

// ---------------------------------------------------------------------------
// A restart under load

// What a restart of this (non-persistent) server erases: everything. Every
// bucket is full again, every window empty, every lease gone, so each key
// may admit up to a full burst / limit / max_concurrent more right after it,
// and a holder's slot no longer counts (renew_lease.lua does not bring back
// a lease that vanished; the holder keeps its permit, released as usual).
// The script cache is empty too: the first EVALSHA gets NOSCRIPT and the
// script is loaded again, which costs nothing but a round trip. With
// persistence (AOF/RDB) or a replica that has the data, only what was not
// yet persisted or replicated is lost.
struct load_stats {
  std::atomic<int> admitted{0};
  std::atomic<int> refused{0};
  std::atomic<int> thrown{0};
  std::atomic<bool> stop{false};
};

asio::awaitable<void> steady_load(limiter l, load_stats* s) {
  while (!s->stop) {
    try {
      acquire_options o;
      o.timeout = seconds_d(0);
      acquire_result r = co_await l.try_acquire(o);
      ++(r.allowed ? s->admitted : s->refused);
    } catch (const std::exception&) {
      ++s->thrown;
    }
    co_await sleep_for(5ms);
  }
}

TEST(RedisRestart, KillAndStartUnderLoadFailsOpenThenResumes) {
  redis_server srv;
  registry reg;
  reg.configure_store("r", failing_store(srv, "restart"));
  reg.configure_limiter("api", bucket(10000, 10000));
  reg.configure_limiter("daily", bucket(1.0 / 86400, 1)); // one a day
  limiter_options one = slots(1);
  reg.configure_limiter("one", one);
  limiter api = reg.get_limiter("api");
  limiter daily = reg.get_limiter("daily");
  limiter single = reg.get_limiter("one");

  ASSERT_TRUE(try_now(daily).allowed);
  ASSERT_FALSE(try_now(daily).allowed); // spent for a day
  acquire_result held = try_now(single);
  ASSERT_TRUE(held.allowed);
  ASSERT_FALSE(try_now(single).allowed); // the only slot is held

  load_stats s;
  asio::io_context ctx;
  for (int i = 0; i < 4; ++i)
    asio::co_spawn(ctx, steady_load(api, &s), asio::detached);
  std::thread loader([&] { ctx.run(); });

  std::this_thread::sleep_for(300ms);
  const auto errors_before = api.get_metrics().store_errors;
  srv.kill(); // a crash: SIGKILL
  std::this_thread::sleep_for(700ms);
  const auto errors_during = api.get_metrics().store_errors;
  srv.start(); // same port, empty dataset
  const bool resumed = eventually(
      [&] {
        const auto e = api.get_metrics().store_errors;
        std::this_thread::sleep_for(300ms);
        return api.get_metrics().store_errors == e; // 300 ms of traffic without an error
      },
      8000ms);
  s.stop = true;
  loader.join();

  EXPECT_EQ(errors_before, 0u);
  EXPECT_GT(errors_during, 0u) << "the outage was not noticed";
  EXPECT_TRUE(resumed) << "still failing after the restart";
  EXPECT_EQ(s.refused.load(), 0);
  EXPECT_EQ(s.thrown.load(), 0) << "fail open: nothing thrown";
  EXPECT_FALSE(api.get_metrics().circuit_open);

  // Erased by the restart: the daily bucket is full again, and the held slot
  // is free although its holder still has its permit.
  EXPECT_TRUE(try_now(daily).allowed);
  EXPECT_TRUE(try_now(single).allowed);
  held.permit.release();
}

// ---------------------------------------------------------------------------
// Keys: every one expires, and vanishes once its state has recovered

void expect_every_key_expires(redis_server& srv) {
  for (const auto& k : all_keys(srv)) {
    const long long t = pttl(srv, k);
    EXPECT_GT(t, 0) << k << " has no TTL (PTTL " << t << ")";
  }
}

TEST(RedisKeys, EveryKeyHasATtlAndVanishesOnceRecovered) {
  redis_server srv;
  registry reg;
  store_options so = redis_store(srv, "ttl");
  so.timing_margin_ms = 10;
  reg.configure_store("r", so);
  reg.configure_limiter("tb", bucket(10, 5)); // full again 500 ms after draining
  reg.configure_limiter("sw", window(3, 0.4));
  limiter_options cc = slots(2);
  cc.lease_seconds = 0.6;
  reg.configure_limiter("cc", cc);
  limiter_options tbcc = bucket(10, 5);
  tbcc.max_concurrent = 2;
  tbcc.lease_seconds = 0.6;
  reg.configure_limiter("tbcc", tbcc);
  limiter_options swcc = window(3, 0.4);
  swcc.max_concurrent = 2;
  swcc.lease_seconds = 0.6;
  reg.configure_limiter("swcc", swcc);

  for (const std::string key : {"", "user-1"}) {
    SCOPED_TRACE("caller key \"" + key + "\"");
    ASSERT_EQ(all_keys(srv), std::vector<std::string>{});
    // Token bucket: 3 of a burst of 5; the key lives until the bucket is
    // full again (3 x 100 ms + the 10 ms margin).
    limiter tb = reg.get_limiter("tb");
    for (int i = 0; i < 3; ++i)
      ASSERT_TRUE(try_now(tb, key).allowed);
    const std::string tb_key = redis::key_base("ttl", "tb", key) + ":tb";
    ASSERT_EQ(all_keys(srv), std::vector<std::string>{tb_key});
    EXPECT_GT(pttl(srv, tb_key), 200);
    EXPECT_LE(pttl(srv, tb_key), 310);

    // Sliding window: the log lives one window after its newest admission.
    limiter sw = reg.get_limiter("sw");
    ASSERT_TRUE(try_now(sw, key).allowed);
    ASSERT_TRUE(try_now(sw, key).allowed);
    const std::string sw_key = redis::key_base("ttl", "sw", key) + ":sw";
    EXPECT_GT(pttl(srv, sw_key), 300);
    EXPECT_LE(pttl(srv, sw_key), 410);

    // Leases: the zset lives as long as its longest lease (+ margin), renewed
    // while held; it is emptied, so removed, by the releases.
    std::vector<acquire_result> held;
    for (const char* name : {"cc", "tbcc", "swcc"})
      for (int i = 0; i < 2; ++i) {
        held.push_back(try_now(reg.get_limiter(name), key));
        ASSERT_TRUE(held.back().allowed) << name;
      }
    for (const char* name : {"cc", "tbcc", "swcc"}) {
      const std::string cc_key = redis::key_base("ttl", name, key) + ":cc";
      EXPECT_GT(pttl(srv, cc_key), 400) << name;
      EXPECT_LE(pttl(srv, cc_key), 610) << name;
      EXPECT_EQ(srv.query({"ZCARD", cc_key}).integer, 2) << name;
    }
    expect_every_key_expires(srv);
    EXPECT_EQ(all_keys(srv).size(), 2u + 3u + 2u); // tb, sw; 3 lease sets; tbcc:tb, swcc:sw

    // Held past the lease: renewed (every third of lease_seconds), not expired.
    std::this_thread::sleep_for(800ms);
    for (const char* name : {"cc", "tbcc", "swcc"}) {
      const std::string cc_key = redis::key_base("ttl", name, key) + ":cc";
      EXPECT_EQ(srv.query({"ZCARD", cc_key}).integer, 2) << name << " lost a held lease";
      EXPECT_GT(pttl(srv, cc_key), 0) << name;
    }
    EXPECT_FALSE(try_now(reg.get_limiter("cc"), key).allowed) << "both slots are still held";
    // The rate keys have recovered meanwhile and are gone.
    for (const auto& k : all_keys(srv))
      EXPECT_EQ(k.substr(k.size() - 3), ":cc") << k << " outlived its state";

    expect_every_key_expires(srv);
    held.clear(); // releases all six
    EXPECT_TRUE(eventually([&] { return all_keys(srv).empty(); }, 1000ms))
        << "lease sets left after release: " << all_keys(srv).size();
  }
}

// A permit released just before its store is destroyed (registry gone,
// program exiting) frees its slot in Redis: the store sends what is in
// flight, the release's ZREM included, before it stops its connections.
// (It used to stop them first, failing the ZREM not yet written: the slot
// stayed taken for every other process until the lease expired,
// lease_seconds later. That failed in 15 and 16 of 20 runs.)
TEST(RedisKeys, ReleaseJustBeforeShutdownReachesRedis) {
  redis_server srv;
  {
    registry reg;
    reg.configure_store("r", redis_store(srv, "shutdown"));
    reg.configure_limiter("cc", slots(2));
    acquire_result a = try_now(reg.get_limiter("cc"));
    ASSERT_TRUE(a.allowed);
    a.permit.release();
  } // the store goes with the registry
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(srv.query({"ZCARD", "shutdown:{cc}:cc"}).integer, 0) << "lease left behind";
}

// Releases made close together go out as one ZREM per leases key, and none is
// overtaken by the decision its caller makes next: with one slot, release
// and take it again, 300 times, never refused.
// The slow log, told to record every command, names the client of each:
// scripts' own calls come from "?:0" (INFO commandstats cannot tell).
void log_every_command(redis_server& srv) {
  srv.command({"CONFIG", "SET", "slowlog-log-slower-than", "0"});
  srv.command({"CONFIG", "SET", "slowlog-max-len", "100000"});
  srv.command({"SLOWLOG", "RESET"});
}

// The slow log's ids (in the order Redis ran them) of the `name` commands
// that clients, not scripts, sent since log_every_command().
std::vector<std::int64_t> client_commands(redis_server& srv, const std::string& name) {
  const redis_server::reply log = srv.query({"SLOWLOG", "GET", "-1"});
  std::vector<std::int64_t> ids;
  for (const auto& entry : log.elements)
    if (entry.elements.size() > 4 && !entry.elements[3].elements.empty() &&
        entry.elements[3].elements[0].str == name && entry.elements[4].str != "?:0")
      ids.push_back(entry.elements[0].integer);
  std::sort(ids.begin(), ids.end());
  return ids;
}

// ZREM commands sent by clients since log_every_command().
std::int64_t zrem_calls(redis_server& srv) {
  return static_cast<std::int64_t>(client_commands(srv, "ZREM").size());
}

// The threads ratesync starts are named (top -H, perf --sort comm, gdb):
// a store's own I/O thread "rs-io:<store>", cut to Linux's 15 characters.
TEST(RedisStore, ItsOwnThreadIsNamedAfterIt) {
#if defined(__linux__)
  const auto thread_names = [] {
    std::multiset<std::string> names;
    for (const auto& t : std::filesystem::directory_iterator("/proc/self/task")) {
      std::ifstream in(t.path() / "comm");
      std::string n;
      std::getline(in, n);
      names.insert(n);
    }
    return names;
  };
  redis_server srv;
  registry reg;
  ASSERT_EQ(thread_names().count("rs-io:cache"), 0u);
  reg.configure_store("cache", redis_store(srv, "names"));
  reg.configure_store("a_long_store_name", redis_store(srv, "names2"));
  limiter_options o = bucket(1e6, 1000);
  o.store = "cache";
  reg.configure_limiter("a", o);
  o.store = "a_long_store_name";
  reg.configure_limiter("b", o);
  ASSERT_TRUE(try_now(reg.get_limiter("a")).allowed);
  ASSERT_TRUE(try_now(reg.get_limiter("b")).allowed);
  const auto names = thread_names();
  EXPECT_EQ(names.count("rs-io:cache"), 1u);
  EXPECT_EQ(names.count("rs-io:a_long_st"), 1u);
#else
  GTEST_SKIP() << "thread names are set on Linux only";
#endif
}

// The last reference dropped on the store's thread, inside a batch of reply
// handlers whose next one is a ZREM's completion: that completion refers to
// the store, which used to be deleted before it ran (ASan: use after free).
TEST(RedisStore, TheLastReferenceDroppedOnItsThreadOutlivesTheRestOfTheBatch) {
  redis_server srv;
  auto reg = std::make_unique<registry>();
  store_options one = redis_store(srv, "lastref");
  one.pool_min_size = 1; // the state request and the ZREM share a connection
  one.pool_max_size = 1;
  reg->configure_store("r", one);
  reg->configure_limiter("cc", slots(10));
  limiter l = reg->get_limiter("cc");
  acquire_result held = try_now(l);
  ASSERT_TRUE(held.allowed);
  (void)state_of(l); // the state script is loaded: one request, no retry as EVAL
  log_every_command(srv);
  std::promise<void> finished;
  srv.pause(); // what is sent now is answered in one write on resume()
  asio::co_spawn(
      l.io_executor(),
      [l]() mutable -> asio::awaitable<void> {
        (void)co_await l.get_state();
        l = limiter(nullptr); // the last reference: the store goes here
      },
      [&finished](const std::exception_ptr&) { finished.set_value(); });
  std::this_thread::sleep_for(200ms); // the state request is written
  held.permit.release();              // its ZREM goes after it
  std::this_thread::sleep_for(200ms);
  l = limiter(nullptr);
  reg.reset();
  srv.resume();
  EXPECT_EQ(finished.get_future().wait_for(5s), std::future_status::ready);
  EXPECT_TRUE(eventually([&] {
    return srv.query({"ZCARD", "lastref:{cc}:cc"}).integer == 0;
  })) << "the release never reached Redis";
  // The case arose: the state request ran before the ZREM (else the ZREM's
  // completion ran first, before the store could go, and nothing was tested).
  const std::vector<std::int64_t> states = client_commands(srv, "EVALSHA");
  const std::vector<std::int64_t> zrems = client_commands(srv, "ZREM");
  ASSERT_EQ(states.size(), 1u);
  ASSERT_EQ(zrems.size(), 1u);
  ASSERT_TRUE(client_commands(srv, "EVAL").empty()); // no NOSCRIPT retry behind the ZREM
  EXPECT_LT(states[0], zrems[0]) << "the ZREM ran first: the case did not arise";
  std::this_thread::sleep_for(100ms); // the store's thread ends
}

// A caller sleeping towards its reserved slot (a rate and max_concurrent),
// whose io_context is destroyed, never gets its permit: its lease must go,
// not be renewed for as long as the store lives (it was: the slot stayed
// taken in every process sharing the server).
TEST(RedisKeys, AWaiterWhoseIoContextGoesLeavesNoLease) {
  redis_server srv;
  registry reg;
  reg.configure_store("r", redis_store(srv, "gone"));
  limiter_options o = bucket(5, 1); // one per 200 ms
  o.max_concurrent = 10;
  o.lease_seconds = 0.3; // renewed every 100 ms while its holder lives
  reg.configure_limiter("tb", o);
  const limiter l = reg.get_limiter("tb");
  ASSERT_TRUE(try_now(l).allowed); // released at once; the next waits ~200 ms
  ASSERT_TRUE(eventually([&] { return srv.query({"ZCARD", "gone:{tb}:cc"}).integer == 0; }));
  {
    asio::io_context worker;
    bool admitted = false;
    asio::co_spawn(
        worker,
        [l, &admitted]() -> asio::awaitable<void> {
          permit p = co_await l.acquire();
          admitted = true;
        },
        asio::detached);
    worker.run_for(50ms); // decided: a slot ~200 ms ahead, its lease taken
    ASSERT_FALSE(admitted);
    ASSERT_EQ(srv.query({"ZCARD", "gone:{tb}:cc"}).integer, 1);
  }                                   // destroyed with the waiter asleep
  std::this_thread::sleep_for(800ms); // more than twice the lease's time to live
  EXPECT_EQ(srv.query({"ZCARD", "gone:{tb}:cc"}).integer, 0)
      << "the lease of a waiter that never got its permit was kept alive";
}

TEST(RedisKeys, ReleasesMadeTogetherGoOutAsOneZremPerKey) {
  redis_server srv;
  registry reg;
  reg.configure_store("r", redis_store(srv, "batch"));
  reg.configure_limiter("cc", slots(100));
  const limiter l = reg.get_limiter("cc");
  std::vector<acquire_result> held;
  for (int i = 0; i < 50; ++i) {
    held.push_back(try_now(l));
    ASSERT_TRUE(held.back().allowed);
  }
  ASSERT_EQ(srv.query({"ZCARD", "batch:{cc}:cc"}).integer, 50);
  log_every_command(srv);
  for (auto& a : held)
    a.permit.release();
  EXPECT_TRUE(eventually([&] {
    return srv.query({"ZCARD", "batch:{cc}:cc"}).integer == 0;
  })) << "leases left behind";
  const std::int64_t zrems = zrem_calls(srv);
  EXPECT_GE(zrems, 1);
  EXPECT_LT(zrems, 50) << "one ZREM per release: releases were not batched";
  std::printf("50 releases in a row: %lld ZREM command(s)\n", static_cast<long long>(zrems));
}

TEST(RedisKeys, AReleaseIsNeverOvertakenByTheNextDecision) {
  redis_server srv;
  registry reg;
  reg.configure_store("r", redis_store(srv, "order"));
  reg.configure_limiter("one", slots(1));
  const limiter l = reg.get_limiter("one");
  // From the test's thread (the requests cross to the store's thread)...
  for (int i = 0; i < 300; ++i) {
    acquire_result a = try_now(l);
    ASSERT_TRUE(a.allowed) << "refused at round " << i << ": the previous release came after";
    a.permit.release();
  }
  // ...and on the store's own thread, where a decision is written at once
  // and the releases' own flush would come after it.
  std::promise<int> refused_at;
  asio::co_spawn(
      l.io_executor(),
      [l]() -> asio::awaitable<int> {
        acquire_options o;
        o.timeout = seconds_d(0);
        for (int i = 0; i < 300; ++i) {
          acquire_result a = co_await l.try_acquire(o);
          if (!a.allowed)
            co_return i;
          a.permit.release();
        }
        co_return -1;
      },
      [&refused_at](std::exception_ptr e, int at) { refused_at.set_value(e ? -2 : at); });
  auto f = refused_at.get_future();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(f.get(), -1) << "refused (or failed: -2) on the store's thread";
  EXPECT_TRUE(eventually([&] { return srv.query({"ZCARD", "order:{one}:cc"}).integer == 0; }));
}

// Callers that release and stop, on their own io_context: the releases are
// made by reply handlers that run together (one batch per socket read), no
// decision follows to carry them, and they go out when the batch ends.
TEST(RedisKeys, ReleasesMadeByCallersThatStopGoOutWhenTheirBatchEnds) {
  redis_server srv;
  registry reg;
  reg.configure_store("r", redis_store(srv, "last"));
  reg.configure_limiter("cc", slots(100));
  const limiter l = reg.get_limiter("cc");
  ASSERT_TRUE(try_now(l).allowed); // connected, scripts loaded
  ASSERT_TRUE(eventually([&] { return srv.query({"ZCARD", "last:{cc}:cc"}).integer == 0; }));
  log_every_command(srv);
  asio::io_context callers;
  int admitted = 0;
  for (int i = 0; i < 40; ++i)
    asio::co_spawn(
        callers,
        [l, &admitted]() -> asio::awaitable<void> {
          acquire_options o;
          o.timeout = seconds_d(0);
          acquire_result a = co_await l.try_acquire(o);
          admitted += a.allowed ? 1 : 0;
        }, // the permit is released here, as the handler ends
        asio::detached);
  callers.run();
  EXPECT_EQ(admitted, 40);
  EXPECT_TRUE(eventually(
      [&] {
        return srv.query({"ZCARD", "last:{cc}:cc"}).integer == 0;
      },
      1000ms))
      << "leases left behind: " << srv.query({"ZCARD", "last:{cc}:cc"}).integer;
  const std::int64_t zrems = zrem_calls(srv);
  std::printf("40 callers that release and stop: %lld ZREM command(s)\n",
              static_cast<long long>(zrems));
  EXPECT_GE(zrems, 1);
  EXPECT_LT(zrems, 40) << "one ZREM per release: releases were not batched";
}

// Releases for keys other than the next decision's go out as ZREMs of their
// own. Nobody waits for them, so they do not make a connection "busy": 50
// callers on many keys keep to the two connections the pool starts with
// (each new one opens at 32 outstanding decisions), where counting the
// ZREMs opened 8-10.
TEST(RedisKeys, ReleasesOnManyKeysDoNotGrowThePool) {
  redis_server srv;
  registry reg;
  store_options so = redis_store(srv, "grow");
  so.pool_min_size = 2;
  so.pool_max_size = 10;
  reg.configure_store("r", so);
  limiter_options o = bucket(1e6, 1000000);
  o.max_concurrent = 1000;
  reg.configure_limiter("cc", o);
  const limiter l = reg.get_limiter("cc");
  ASSERT_TRUE(try_now(l).allowed); // connected, scripts loaded
  const auto connections = [&] {
    const std::string list = srv.command({"CLIENT", "LIST"});
    std::size_t n = 0;
    for (auto at = list.find("name=ratesync"); at != std::string::npos;
         at = list.find("name=ratesync", at + 1))
      ++n;
    return n;
  };
  asio::io_context callers;
  std::atomic<bool> stop{false};
  std::atomic<int> admitted{0};
  for (int i = 0; i < 50; ++i)
    asio::co_spawn(
        callers,
        [l, i, &stop, &admitted]() -> asio::awaitable<void> {
          for (int k = 0; !stop; ++k) {
            acquire_options a;
            a.key = std::to_string((i * 7919 + k * 104729) % 10000);
            permit p = co_await l.acquire(a);
            ++admitted;
          } // each permit released as the next call starts: a ZREM for its key
        },
        asio::detached);
  std::thread runner([&] { callers.run(); });
  std::size_t most = 0;
  for (int i = 0; i < 10; ++i) {
    std::this_thread::sleep_for(50ms);
    most = std::max(most, connections());
  }
  stop = true;
  runner.join();
  EXPECT_GT(admitted.load(), 500);
  EXPECT_LE(most, 2u) << "connections opened by 50 callers";
}

// A release followed by a decision on its leases key rides in that
// decision's script (each decision script removes such leases first): no ZREM
// of its own, and the slot it frees counts as free in that very decision.
TEST(RedisKeys, AReleaseRidesInTheNextDecisionOnItsKey) {
  redis_server srv;
  registry reg;
  reg.configure_store("r", redis_store(srv, "ride"));
  limiter_options rated = bucket(1e6, 1000000);
  rated.max_concurrent = 1;
  limiter_options windowed = window(1000000, 1);
  windowed.max_concurrent = 1;
  reg.configure_limiter("slot", slots(1));
  reg.configure_limiter("bucket", rated);
  reg.configure_limiter("window", windowed);
  const std::vector<limiter> all{reg.get_limiter("slot"), reg.get_limiter("bucket"),
                                 reg.get_limiter("window")};
  for (const limiter& l : all)
    ASSERT_TRUE(try_now(l).allowed); // connected, scripts loaded
  const auto none_left = [&] {
    return srv.query({"ZCARD", "ride:{slot}:cc"}).integer == 0 &&
           srv.query({"ZCARD", "ride:{bucket}:cc"}).integer == 0 &&
           srv.query({"ZCARD", "ride:{window}:cc"}).integer == 0;
  };
  ASSERT_TRUE(eventually(none_left));
  log_every_command(srv);
  // On the store's thread, where the releases' own flush (posted there) runs
  // only after the next decision has taken them. 100 rounds on each limiter
  // in turn: every release rides but the last of each run, which precedes a
  // decision on another key (it goes out as a ZREM ahead of it) or nothing.
  constexpr int rounds = 100;
  std::promise<int> refused_at;
  asio::co_spawn(
      all[0].io_executor(),
      [all]() -> asio::awaitable<int> {
        acquire_options o;
        o.timeout = seconds_d(0);
        for (int i = 0; i < 3 * rounds; ++i) {
          acquire_result a = co_await all[static_cast<std::size_t>(i / rounds)].try_acquire(o);
          if (!a.allowed)
            co_return i;
          a.permit.release();
        }
        co_return -1;
      },
      [&refused_at](std::exception_ptr e, int at) { refused_at.set_value(e ? -2 : at); });
  auto f = refused_at.get_future();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(f.get(), -1) << "refused (or failed: -2): the slot was still leased";
  EXPECT_TRUE(eventually(none_left)) << "leases left behind";
  const std::int64_t zrems = zrem_calls(srv);
  std::printf("%d acquire/release rounds, %d on each of 3 limiters in turn: %lld ZREM "
              "command(s)\n",
              3 * rounds, rounds, static_cast<long long>(zrems));
  EXPECT_GE(zrems, 1);
  EXPECT_LE(zrems, 3) << "releases did not ride in the next decision on their key";
}

// ---------------------------------------------------------------------------
// Key layout: "<prefix>:{<limiter>[|<key>]}:<tb|sw|cc>", caller keys opaque

TEST(RedisKeys, LayoutIsPrefixHashTagAndKind) {
  redis_server srv;
  registry reg;
  reg.configure_store("r", redis_store(srv, "layout"));
  reg.configure_limiter("api", bucket(100, 10));
  reg.configure_limiter("login", window(5, 60));
  limiter_options both = bucket(100, 10);
  both.max_concurrent = 4;
  reg.configure_limiter("calls", both);
  reg.configure_limiter("db", slots(3));

  ASSERT_TRUE(try_now(reg.get_limiter("api")).allowed);
  ASSERT_TRUE(try_now(reg.get_limiter("login"), "203.0.113.7").allowed);
  acquire_result c = try_now(reg.get_limiter("calls"), "user:42");
  acquire_result d = try_now(reg.get_limiter("db"));
  ASSERT_TRUE(c.allowed && d.allowed);

  const std::vector<std::string> expected = {
      "layout:{api}:tb", "layout:{calls|user%3A42}:cc",   "layout:{calls|user%3A42}:tb",
      "layout:{db}:cc",  "layout:{login|203.0.113.7}:sw",
  };
  EXPECT_EQ(all_keys(srv), expected);
  EXPECT_EQ(redis::key_base("layout", "calls", "user:42"), "layout:{calls|user%3A42}");
  EXPECT_EQ(srv.command({"TYPE", "layout:{api}:tb"}), "+string");
  EXPECT_EQ(srv.command({"TYPE", "layout:{login|203.0.113.7}:sw"}), "+zset");
  EXPECT_EQ(srv.command({"TYPE", "layout:{db}:cc"}), "+zset");
  // All keys of one decision share the hash tag between the braces, so one
  // Cluster slot: no raw brace inside it (a caller's '{' is percent-encoded).
  for (const auto& k : all_keys(srv)) {
    EXPECT_EQ(std::count(k.begin(), k.end(), '{'), 1) << k;
    EXPECT_EQ(std::count(k.begin(), k.end(), '}'), 1) << k;
  }
}

TEST(RedisKeys, CallerKeysAreOpaqueAndNeverCollide) {
  redis_server srv;
  registry reg;
  reg.configure_store("r", redis_store(srv, "opaque"));
  const std::string long_key(1 << 20, 'k');
  std::string long_key2 = long_key;
  long_key2.back() = 'K';
  // (limiter, key) pairs that a naive "<limiter>|<key>" or a truncation at a
  // NUL byte would map onto each other.
  const std::vector<std::pair<std::string, std::string>> pairs = {
      {"a", "b|c"},
      {"a|b", "c"},
      {"a|b", ""},
      {"a", "b"},
      {"a", "b:c"},
      {"a:b", "c"},
      {"a", "{b}"},
      {"a", "}{"},
      {"a}", "{"},
      {"a", "%7C"},
      {"a", "|"},
      {"a", std::string("x\0y", 3)},
      {"a", std::string("x\0z", 3)},
      {"a", "x"},
      {"a", "\xff\xfe"},
      {"a", "\xff\xfd"},
      {"a", "\xc3\xa9"}, // valid UTF-8 "é"
      {"a", long_key},
      {"a", long_key2},
      {"a", "#" + redis::sha1_hex(long_key)},
  };
  std::set<std::string> limiters;
  for (const auto& [l, k] : pairs)
    if (limiters.insert(l).second)
      reg.configure_limiter(l, bucket(0.001, 1)); // one per 1000 s

  // Each pair gets exactly one admission: if two pairs shared state, the
  // second of them would be refused.
  for (std::size_t i = 0; i < pairs.size(); ++i) {
    const auto& [l, k] = pairs[i];
    const acquire_result r = try_now(reg.get_limiter(l), k);
    EXPECT_TRUE(r.allowed) << "pair " << i << " shares state with an earlier one";
    EXPECT_EQ(r.permit.held(), r.allowed);
  }
  for (std::size_t i = 0; i < pairs.size(); ++i) {
    const auto& [l, k] = pairs[i];
    EXPECT_FALSE(try_now(reg.get_limiter(l), k).allowed) << "pair " << i << " has no state";
  }

  const std::vector<std::string> keys = all_keys(srv);
  EXPECT_EQ(keys.size(), pairs.size());
  const std::regex shape(R"(opaque:\{[A-Za-z0-9_.%#-]+(\|[A-Za-z0-9_.%#-]+)?\}:tb)");
  for (const auto& k : keys) {
    EXPECT_TRUE(std::regex_match(k, shape)) << k.substr(0, 200);
    EXPECT_LT(k.size(), 300u) << "long keys are hashed";
  }
  EXPECT_TRUE(std::count(keys.begin(), keys.end(),
                         "opaque:{a|#" + redis::sha1_hex(long_key) + "}:tb") == 1);
  EXPECT_TRUE(std::count(keys.begin(), keys.end(),
                         "opaque:{a|%23" + redis::sha1_hex(long_key) + "}:tb") == 1);
  EXPECT_TRUE(std::count(keys.begin(), keys.end(), "opaque:{a|x%00y}:tb") == 1);
  EXPECT_TRUE(std::count(keys.begin(), keys.end(), "opaque:{a%7D|%7B}:tb") == 1);
}

// ---------------------------------------------------------------------------
// get_state and reset

// The sliding-window scripts decide exactly as the memory engine's log
// (include/ratesync/memory/sliding_log.hpp) on the same calls at the same
// times: sliding_window.lua, undo.lua and state.lua, with Redis TIME replaced
// by a clock the test sets, over random costs, waits and cancellations
// (anywhere in the log, which renumbers the running totals after them).
// A script that reads the time from the key "clock" instead of Redis TIME.
std::string on_test_clock(std::string_view script) {
  const std::string time_lines = "local t = redis.call('TIME')\n"
                                 "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])";
  std::string s(script);
  const auto at = s.find(time_lines);
  if (at == std::string::npos)
    throw std::runtime_error("the script no longer reads TIME as this test expects");
  return s.replace(at, time_lines.size(), "local now = tonumber(redis.call('GET', 'clock'))");
}

TEST(RedisScripts, SlidingWindowDecidesExactlyAsTheMemoryEngine) {
  redis_server srv;
  const std::string sw = on_test_clock(redis::lua::sliding_window);
  const std::string state = on_test_clock(redis::lua::state);
  const std::string undo(redis::lua::undo);
  using ratesync::memory::sliding_log;
  std::mt19937_64 rng(11);
  int waited = 0, denied = 0, cancelled = 0;
  for (int round = 0; round < 6; ++round) {
    // Windows of 10-300 s of the test clock: the keys' TTLs (real time)
    // outlast the test.
    const auto window_us = static_cast<std::int64_t>(10 + rng() % 290) * 1'000'000;
    const auto limit = static_cast<std::int64_t>(1 + rng() % 40);
    sliding_log mem(limit, window_us * 1000);
    const std::string key = "parity:" + std::to_string(round);
    std::int64_t now = 1'800'000'000'000'000; // us
    struct reservation {
      std::int64_t at_us, cost;
      std::string id;
    };
    std::vector<reservation> held;
    for (int i = 0; i < 300; ++i) {
      SCOPED_TRACE("round " + std::to_string(round) + " call " + std::to_string(i));
      now += static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(2 * window_us / limit));
      srv.command({"SET", "clock", std::to_string(now)});
      if (!held.empty() && rng() % 4 == 0) {
        const std::size_t k = rng() % held.size();
        const reservation r = held[k];
        held.erase(held.begin() + static_cast<std::ptrdiff_t>(k));
        ASSERT_EQ(srv.command({"EVAL", undo, "1", key, "sw", r.id, std::to_string(r.cost), "",
                               std::to_string(r.at_us)}),
                  ":1");
        mem.cancel(r.at_us * 1000, r.cost);
        ++cancelled;
      }
      const auto cost = static_cast<std::int64_t>(1 + rng() % static_cast<std::uint64_t>(limit));
      const std::int64_t max_wait =
          rng() % 3 == 0 ? -1 : static_cast<std::int64_t>(rng() % (2 * window_us));
      const std::string id = "c" + std::to_string(i);
      const reply got =
          srv.query({"EVAL", sw, "1", key, std::to_string(window_us), std::to_string(limit),
                     std::to_string(cost), std::to_string(max_wait), "0", "0", id, "0"});
      const auto want =
          mem.take(now * 1000, cost,
                   max_wait < 0 ? std::numeric_limits<std::int64_t>::max() : max_wait * 1000);
      if (!want.allowed) {
        ++denied;
        ASSERT_EQ(got.to_string(), ":" + std::to_string(-want.retry_after / 1000));
      } else if (want.wait == 0) {
        ASSERT_EQ(got.to_string(), ":0");
      } else {
        ++waited;
        ASSERT_EQ(got.to_string(), "*3 [:1, :" + std::to_string(want.wait / 1000) +
                                       ", :" + std::to_string(want.at / 1000) + "]");
        held.push_back({want.at / 1000, cost, id});
      }
      const std::int64_t t = now * 1000;
      ASSERT_EQ(srv.command({"EVAL", state, "2", key, "none", "sw", std::to_string(window_us),
                             std::to_string(limit)}),
                "*4 [:" + std::to_string(mem.remaining(t)) +
                    ", :" + std::to_string(mem.retry_after(t) / 1000) +
                    ", :" + std::to_string(mem.reset_after(t) / 1000) + ", :0]");
    }
  }
  // The sequence exercised every branch.
  EXPECT_GT(waited, 100);
  EXPECT_GT(denied, 100);
  EXPECT_GT(cancelled, 100);
}

// Undoing a reservation rewrites the running totals of the entries after it,
// so behind more than 256 of them undo.lua leaves its units spent (a mass
// cancellation of a deep queue would otherwise cost the server quadratic
// time); nearer the end of the queue it still gives them back.
TEST(RedisScripts, ASlidingWindowUndoBehindADeepQueueLeavesTheUnitsSpent) {
  redis_server srv;
  const std::string sw = on_test_clock(redis::lua::sliding_window);
  const std::string undo(redis::lua::undo);
  srv.command({"SET", "clock", "1000000000"});
  // Limit 1 per second: the first admits now, each next one waits a second more.
  std::vector<std::string> at;
  for (int i = 0; i < 300; ++i) {
    const reply r = srv.query({"EVAL", sw, "1", "deep", "1000000", "1", "1", "-1", "0", "0",
                               "c" + std::to_string(i), "0"});
    at.push_back(i == 0 ? "1000000000" : std::to_string(r.elements.at(2).integer));
  }
  ASSERT_EQ(srv.query({"ZCARD", "deep"}).integer, 300);
  // The second of 300 has 299 entries at or after its time: left in place.
  EXPECT_EQ(srv.command({"EVAL", undo, "1", "deep", "sw", "c1", "1", "", at[1]}), ":1");
  EXPECT_EQ(srv.query({"ZCARD", "deep"}).integer, 300);
  // The 290th has 11: removed, and the entries after it renumbered.
  EXPECT_EQ(srv.command({"EVAL", undo, "1", "deep", "sw", "c289", "1", "", at[289]}), ":1");
  EXPECT_EQ(srv.query({"ZCARD", "deep"}).integer, 299);
  const reply last = srv.query({"ZRANGE", "deep", "-1", "-1"});
  EXPECT_EQ(last.elements.at(0).str, "c12b:1:c299") << "through 299 (hex 12b) after the removal";
}

TEST(RedisState, GetStateMatchesTheNumbersAndResetForgetsTheRate) {
  redis_server srv;
  registry reg;
  store_options so = redis_store(srv, "state");
  so.timing_margin_ms = 0;
  reg.configure_store("r", so);
  limiter_options tbo = bucket(10, 5); // 100 ms per token
  tbo.max_concurrent = 10;
  reg.configure_limiter("tb", tbo);
  reg.configure_limiter("sw", window(3, 1.0));
  reg.configure_limiter("cc", slots(3));
  limiter tb = reg.get_limiter("tb");
  limiter sw = reg.get_limiter("sw");
  limiter cc = reg.get_limiter("cc");

  // Untouched keys: everything available.
  limiter_state s = state_of(tb, "k");
  EXPECT_EQ(s.remaining, 5);
  EXPECT_EQ(s.retry_after, 0us);
  EXPECT_EQ(s.reset_after, 0us);
  EXPECT_EQ(s.current_concurrent, 0);

  // Token bucket: 3 taken (all held), 2 left; full again after ~300 ms.
  // (Permits are kept: a release is sent without waiting, and could reach
  // Redis after the next get_state on another connection.)
  std::vector<acquire_result> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(try_now(tb, "k"));
    ASSERT_TRUE(held.back().allowed);
  }
  s = state_of(tb, "k");
  EXPECT_EQ(s.remaining, 2);
  EXPECT_EQ(s.retry_after, 0us);
  EXPECT_GT(s.reset_after, 250ms);
  EXPECT_LE(s.reset_after, 300ms);
  EXPECT_EQ(s.current_concurrent, 3);
  // Drained: the next token in ~100 ms.
  for (int i = 0; i < 2; ++i) {
    held.push_back(try_now(tb, "k"));
    ASSERT_TRUE(held.back().allowed);
  }
  s = state_of(tb, "k");
  EXPECT_EQ(s.remaining, 0);
  EXPECT_GT(s.retry_after, 50ms);
  EXPECT_LE(s.retry_after, 100ms);
  EXPECT_GT(s.reset_after, 450ms);
  EXPECT_LE(s.reset_after, 500ms);
  EXPECT_EQ(s.current_concurrent, 5);
  const acquire_result refused = try_now(tb, "k");
  EXPECT_FALSE(refused.allowed);
  EXPECT_LE(refused.retry_after, s.retry_after);
  EXPECT_GT(refused.retry_after, s.retry_after - 50ms);
  // Another key is untouched.
  EXPECT_EQ(state_of(tb, "other").remaining, 5);
  EXPECT_EQ(state_of(tb, "other").current_concurrent, 0);

  // reset: the bucket is full again; the held permits stay held.
  run(tb.reset("k"));
  s = state_of(tb, "k");
  EXPECT_EQ(s.remaining, 5);
  EXPECT_EQ(s.retry_after, 0us);
  EXPECT_EQ(s.reset_after, 0us);
  EXPECT_EQ(s.current_concurrent, 5);
  held.push_back(try_now(tb, "k"));
  EXPECT_TRUE(held.back().allowed);
  EXPECT_EQ(state_of(tb, "k").remaining, 4);

  // Sliding window: 3 in a 1 s window, all used.
  ASSERT_TRUE(try_now(sw, "ip").allowed);
  std::this_thread::sleep_for(100ms);
  ASSERT_TRUE(try_now(sw, "ip").allowed);
  s = state_of(sw, "ip");
  EXPECT_EQ(s.remaining, 1);
  EXPECT_EQ(s.retry_after, 0us);
  EXPECT_GT(s.reset_after, 950ms); // the newest admission leaves in ~1 s
  EXPECT_LE(s.reset_after, 1000ms);
  ASSERT_TRUE(try_now(sw, "ip").allowed);
  s = state_of(sw, "ip");
  EXPECT_EQ(s.remaining, 0);
  EXPECT_GT(s.retry_after, 850ms); // the oldest leaves ~900 ms from now
  EXPECT_LE(s.retry_after, 900ms);
  EXPECT_GT(s.reset_after, 950ms);
  EXPECT_LE(s.reset_after, 1000ms);
  EXPECT_EQ(s.current_concurrent, 0);
  run(sw.reset("ip"));
  s = state_of(sw, "ip");
  EXPECT_EQ(s.remaining, 3);
  EXPECT_EQ(s.retry_after, 0us);
  EXPECT_EQ(s.reset_after, 0us);

  // Concurrency alone: remaining = free slots.
  acquire_result a = try_now(cc);
  acquire_result b = try_now(cc);
  ASSERT_TRUE(a.allowed && b.allowed);
  s = state_of(cc);
  EXPECT_EQ(s.current_concurrent, 2);
  EXPECT_EQ(s.remaining, 1);
  EXPECT_EQ(s.retry_after, 0us);
  a.permit.release(); // fire and forget: visible after one round trip
  EXPECT_TRUE(eventually([&] { return state_of(cc).current_concurrent == 1; }));
  EXPECT_EQ(state_of(cc).remaining, 2);
  run(cc.reset()); // a concurrency limit has no rate state: held slots stay
  EXPECT_EQ(state_of(cc).current_concurrent, 1);

  EXPECT_EQ(tb.get_metrics().store_errors + sw.get_metrics().store_errors +
                cc.get_metrics().store_errors,
            0u);
}

// ---------------------------------------------------------------------------
// The seed page's examples, verbatim but for the URL

// Blocks copied from the seed page (docs/engines/redis.md shows them too).
constexpr const char* seed_basic = R"(
[stores.redis]
engine = "redis"
url = "redis://localhost:6379/0"

[limiters.api]
store = "redis"
rate_per_second = 100.0
timeout = 30.0
)";

constexpr const char* seed_full_options = R"(
[stores.redis]
engine = "redis"
url = "redis://localhost:6379/0"
db = 0                              # Database number (0-15)
password = "${REDIS_PASSWORD:-}"    # Optional password
key_prefix = "rate_limit"           # Key prefix for namespacing
pool_min_size = 2                   # Min connections
pool_max_size = 10                  # Max connections
timing_margin_ms = 10.0             # Timing safety margin
socket_timeout = 5.0                # Socket timeout (seconds)
socket_connect_timeout = 5.0        # Connection timeout (seconds)
)";

constexpr const char* seed_token_bucket = R"(
[limiters.api]
store = "redis"
rate_per_second = 100.0    # Max 100 requests per second
max_concurrent = 50        # Max 50 simultaneous (optional)
)";

constexpr const char* seed_sliding_window = R"(
[limiters.login]
store = "redis"
algorithm = "sliding_window"
limit = 5                  # Max 5 attempts
window_seconds = 300       # Per 5 minutes
)";

std::string with_url(std::string toml, const std::string& url) {
  const std::string from = "redis://localhost:6379/0";
  for (auto at = toml.find(from); at != std::string::npos; at = toml.find(from, at + url.size()))
    toml.replace(at, from.size(), url);
  return toml;
}

// Five calls at 100 per second (burst 1): paced 10 ms apart, all admitted.
void expect_paced_at_100_per_second(const limiter& api) {
  const auto t0 = steady::now();
  std::vector<acquire_result> held;
  for (int i = 0; i < 5; ++i) {
    acquire_options o; // the configured timeout (30 s) applies
    held.push_back(run(api.try_acquire(o)));
    EXPECT_TRUE(held.back().allowed);
  }
  EXPECT_GE(ms_since(t0), 4 * 10.0 - 1.0);
  EXPECT_EQ(api.get_metrics().store_errors, 0u);
}

asio::awaitable<void> acquire_and_hold(limiter l, std::chrono::milliseconds hold) {
  acquire_options o; // the configured timeout applies
  permit p = co_await l.acquire(o);
  co_await sleep_for(hold);
}

// The keys in Redis while 30 callers queue on `api` (at 100 per second their
// reservations keep the bucket's key alive for ~300 ms; a single call's key
// lives only ~10 ms + timing_margin_ms).
std::vector<std::string> keys_while_busy(redis_server& srv, const limiter& api) {
  asio::io_context ctx;
  for (int i = 0; i < 30; ++i)
    asio::co_spawn(ctx, acquire_and_hold(api, 400ms), asio::detached);
  std::thread callers([&] { ctx.run(); });
  std::this_thread::sleep_for(100ms);
  std::vector<std::string> keys = all_keys(srv);
  callers.join();
  return keys;
}

TEST(RedisSeed, TomlExamplesRunAgainstARealServerUnchangedButForTheUrl) {
  redis_server srv;
  const std::string url = srv.url() + "/0";
  ::unsetenv("REDIS_PASSWORD"); // the seed's "${REDIS_PASSWORD:-}": no password

  { // Basic TOML
    registry reg;
    reg.load_config_string(with_url(seed_basic, url), "seed-basic.toml");
    limiter api = reg.get_limiter("api");
    EXPECT_EQ(api.options().timeout->count(), 30.0);
    expect_paced_at_100_per_second(api);
    EXPECT_EQ(keys_while_busy(srv, api), std::vector<std::string>{"rate_limit:{api}:tb"});
  }
  srv.command({"FLUSHALL"});

  { // Full options + the Token Bucket and Sliding Window blocks
    registry reg;
    reg.load_config_string(
        with_url(std::string(seed_full_options) + seed_token_bucket + seed_sliding_window, url),
        "seed-full.toml");
    limiter api = reg.get_limiter("api");
    expect_paced_at_100_per_second(api);
    EXPECT_EQ(api.get_metrics().current_concurrent, 0);
    // max_concurrent = 50: 50 held, the 51st refused at once.
    std::vector<acquire_result> held;
    std::this_thread::sleep_for(20ms);
    for (int i = 0; i < 50; ++i) {
      held.push_back(try_now(api, "", 5.0));
      ASSERT_TRUE(held.back().allowed) << i;
    }
    const acquire_result full = try_now(api);
    EXPECT_FALSE(full.allowed);
    EXPECT_EQ(full.reason, denial_reason::concurrency_limited);
    EXPECT_EQ(srv.query({"ZCARD", "rate_limit:{api}:cc"}).integer, 50);
    held.clear();

    // login: 5 attempts per 5 minutes, fail fast.
    limiter login = reg.get_limiter("login");
    for (int i = 0; i < 5; ++i)
      EXPECT_TRUE(try_now(login, "198.51.100.1").allowed) << i;
    const acquire_result sixth = try_now(login, "198.51.100.1");
    EXPECT_FALSE(sixth.allowed);
    EXPECT_GT(sixth.retry_after, 299s);
    EXPECT_LE(sixth.retry_after, 300s);
    EXPECT_TRUE(try_now(login, "198.51.100.2").allowed);
    EXPECT_EQ(srv.query({"ZCARD", "rate_limit:{login|198.51.100.1}:sw"}).integer, 5);
    EXPECT_GT(pttl(srv, "rate_limit:{login|198.51.100.1}:sw"), 299000);
  }
  srv.command({"FLUSHALL"});

  { // Programmatic configuration: the seed's configure_store/configure_limiter
    registry reg;
    store_options s;
    s.engine = "redis"; // strategy="redis"
    s.url = url;
    s.key_prefix = "myapp_limits";
    s.pool_max_size = 20;
    reg.configure_store("redis", s);
    limiter_options l;
    l.store = "redis"; // store_id="redis"
    l.rate_per_second = 100.0;
    l.max_concurrent = 50;
    l.timeout = seconds_d(30.0);
    reg.configure_limiter("api", l);
    limiter api = reg.get_limiter("api");
    expect_paced_at_100_per_second(api);
    const std::vector<std::string> expected = {"myapp_limits:{api}:cc", "myapp_limits:{api}:tb"};
    EXPECT_EQ(keys_while_busy(srv, api), expected);
    EXPECT_EQ(api.get_metrics().store_errors, 0u);
    // Every permit released: the lease set is emptied, so removed.
    EXPECT_TRUE(eventually([&] {
      return srv.command({"EXISTS", "myapp_limits:{api}:cc"}) == ":0";
    }));
  }
}

// ---------------------------------------------------------------------------
// ACL: the least a ratesync user needs

// Everything the engine sends, at top level and from inside its scripts
// (Redis checks a script's calls against the caller's ACL):
//   connection set-up   AUTH (always allowed), SELECT (db != 0), CLIENT SETNAME
//   health check        PING
//   decisions           EVALSHA; EVAL (the script's source) after NOSCRIPT
//   release, reset      ZREM, DEL
//   inside the scripts  TIME GET SET ZADD ZCARD ZCOUNT ZRANGE ZRANGEBYSCORE
//                       ZREMRANGEBYSCORE ZSCORE ZREM PTTL PEXPIRE
const std::vector<std::string> needed_commands = {
    "evalsha", "eval",   "ping",          "client|setname",
    "select",  "zrem",   "del",           "time",
    "get",     "set",    "zadd",          "zcard",
    "zcount",  "zrange", "zrangebyscore", "zremrangebyscore",
    "zscore",  "pttl",   "pexpire"};

std::string acl_rule(const std::string& user, const std::string& prefix,
                     const std::vector<std::string>& commands) {
  std::string rule = user + " on >pw ~" + prefix + ":* resetchannels -@all";
  for (const auto& c : commands)
    rule += " +" + c;
  return rule;
}

asio::awaitable<bool> acquire_then_cancel(limiter l, std::chrono::milliseconds after) {
  using namespace asio::experimental::awaitable_operators;
  acquire_options o; // no timeout: waits for its reserved slot
  auto acquiring = l.acquire(o);
  auto timer = sleep_for(after);
  auto r = co_await (std::move(acquiring) || std::move(timer));
  co_return r.index() == 0;
}

// A caller cancelled while it sleeps towards its reserved slot gives back,
// with undo.lua, the lease it took: only the held permit's lease is left,
// long before lease_seconds would have removed the other. (The request id
// that names the lease lives in the lease's record by then; the undo takes
// it back from there.)
TEST(RedisKeys, ACancelledWaitForAReservedSlotGivesItsLeaseBack) {
  redis_server srv;
  registry reg;
  reg.configure_store("r", redis_store(srv, "undo"));
  limiter_options o = bucket(10, 1);
  o.max_concurrent = 3;
  o.lease_seconds = 30;
  reg.configure_limiter("tbcc", o);
  limiter l = reg.get_limiter("tbcc");
  const acquire_result held = try_now(l);
  ASSERT_TRUE(held.allowed);
  EXPECT_EQ(srv.query({"ZCARD", "undo:{tbcc}:cc"}).integer, 1);
  EXPECT_FALSE(run(acquire_then_cancel(l, 20ms))) << "the ~100 ms wait was not cancelled";
  EXPECT_EQ(srv.query({"ZCARD", "undo:{tbcc}:cc"}).integer, 1)
      << "the cancelled waiter's lease was left behind";
  const acquire_result again = try_now(l);
  EXPECT_FALSE(again.allowed);
  EXPECT_LE(again.retry_after, seconds_d(0.1)) << "the reserved slot was not given back";
}

// Every kind of request the engine can send, on one registry: acquires of
// each limiter kind with caller keys, lease renewal and release, get_state,
// reset, a cancelled wait (undo.lua), a NOSCRIPT reload and an idle health
// check. Failures are swallowed (the limiters fail open): the caller reads
// the metrics and ACL LOG.
std::uint64_t run_every_request(redis_server& srv, const std::string& url,
                                const std::string& prefix) {
  registry reg;
  store_options so;
  so.engine = "redis";
  so.url = url;
  so.key_prefix = prefix;
  so.socket_timeout = seconds_d(0.5);
  so.socket_connect_timeout = seconds_d(0.5);
  so.health_check_interval = seconds_d(0.05);
  so.pool_min_size = 1;
  reg.configure_store("r", so);
  limiter_options tb = bucket(100, 2);
  tb.max_concurrent = 2;
  tb.lease_seconds = 0.15;
  reg.configure_limiter("tb", tb);
  limiter_options sw = window(2, 1.0);
  sw.max_concurrent = 2;
  reg.configure_limiter("sw", sw);
  reg.configure_limiter("cc", slots(2));
  reg.configure_limiter("slow", bucket(10, 1));
  reg.configure_limiter("slow_sw", window(1, 0.1));
  auto quietly = [](auto f) {
    try {
      f();
    } catch (const std::exception&) {
    }
  };
  quietly([&] {
    acquire_result p = try_now(reg.get_limiter("tb"), "k");
    std::this_thread::sleep_for(200ms); // renewed every 50 ms
  });                                   // released: ZREM
  quietly([&] {
    for (int i = 0; i < 2; ++i)
      (void)try_now(reg.get_limiter("sw"), "k");
  });
  quietly([&] { (void)try_now(reg.get_limiter("cc"), "k"); });
  for (const char* name : {"tb", "sw", "cc"})
    quietly([&] { (void)state_of(reg.get_limiter(name), "k"); });
  quietly([&] { run(reg.get_limiter("tb").reset("k")); });
  quietly([&] { run(reg.get_limiter("sw").reset("k")); });
  for (const char* name : {"slow", "slow_sw"})
    quietly([&] {
      limiter slow = reg.get_limiter(name);
      (void)try_now(slow);
      (void)run(acquire_then_cancel(slow, 20ms)); // waits ~100 ms: cancelled, undone
    });
  srv.command({"SCRIPT", "FLUSH"});
  quietly([&] { (void)try_now(reg.get_limiter("cc"), "k2"); });
  std::this_thread::sleep_for(200ms); // idle: health-check PINGs
  std::uint64_t errors = 0;
  for (const auto& name : reg.limiter_names())
    errors += reg.get_limiter(name).get_metrics().store_errors;
  return errors;
}

std::string acl_url(const redis_server& srv, const std::string& user) {
  return "redis://" + user + ":pw@127.0.0.1:" + std::to_string(srv.port()) + "/1";
}

TEST(RedisAcl, AUserWithOnlyTheNeededCommandsWorks) {
  redis_server srv({.acl_lines = {acl_rule("rl", "acl_rl", needed_commands)}});
  srv.command({"ACL", "LOG", "RESET"});
  EXPECT_EQ(run_every_request(srv, acl_url(srv, "rl"), "acl_rl"), 0u);
  EXPECT_EQ(acl_denials(srv), std::set<std::string>{});
  // The renewals and the undo really ran, as that user.
  const std::string info = srv.command({"INFO", "commandstats"});
  for (const char* c : {"cmdstat_zscore", "cmdstat_eval:", "cmdstat_select", "cmdstat_del",
                        "cmdstat_zcount", "cmdstat_zrange:"})
    EXPECT_NE(info.find(c), std::string::npos) << c << " never ran";
}

TEST(RedisAcl, EveryGrantedCommandIsNeeded) {
  redis_server srv({.acl_lines = {acl_rule("rl", "acl_rl", needed_commands)}});
  for (std::size_t i = 0; i < needed_commands.size(); ++i) {
    const std::string& missing = needed_commands[i];
    SCOPED_TRACE("without +" + missing);
    std::vector<std::string> fewer = needed_commands;
    fewer.erase(fewer.begin() + static_cast<std::ptrdiff_t>(i));
    const std::string user = "rl" + std::to_string(i);
    std::vector<std::string> setuser = {"ACL", "SETUSER"};
    std::istringstream words(acl_rule(user, "acl_rl", fewer));
    for (std::string w; words >> w;)
      setuser.push_back(w);
    ASSERT_EQ(srv.command(setuser), "+OK");
    srv.command({"ACL", "LOG", "RESET"});
    // Keys of their own: leases that a variant could not release (without
    // ZREM) must not fill the next variant's slots.
    (void)run_every_request(srv, acl_url(srv, user), "acl_rl:v" + std::to_string(i));
    const auto denials = acl_denials(srv);
    EXPECT_TRUE(denials.count("command:" + missing)) << "never denied: not needed";
    for (const auto& d : denials)
      EXPECT_EQ(d, "command:" + missing) << "denied besides the missing one";
  }
}

// A reset that Redis refuses (here an ACL without DEL) is a store_error
// naming the refusal; it used to return as if the rate had been forgotten.
TEST(RedisAcl, AResetRedisRefusesIsAStoreError) {
  std::vector<std::string> no_del = needed_commands;
  no_del.erase(std::find(no_del.begin(), no_del.end(), "del"));
  redis_server srv({.acl_lines = {acl_rule("rl", "acl_rl", no_del)}});
  registry reg;
  store_options so;
  so.engine = "redis";
  so.url = acl_url(srv, "rl");
  so.key_prefix = "acl_rl";
  reg.configure_store("r", so);
  reg.configure_limiter("tb", bucket(100, 2));
  const limiter l = reg.get_limiter("tb");
  ASSERT_TRUE(try_now(l, "k").allowed);
  try {
    run(l.reset("k"));
    ADD_FAILURE() << "reset returned although Redis refused the DEL";
  } catch (const store_error& e) {
    EXPECT_EQ(e.store(), "r");
    EXPECT_NE(std::string(e.what()).find("NOPERM"), std::string::npos) << e.what();
  }
}

TEST(RedisAcl, KeysOutsideThePrefixAreDenied) {
  redis_server srv({.acl_lines = {acl_rule("rl", "acl_rl", needed_commands)}});
  // The same user with another key_prefix: every decision is refused by the
  // key pattern, so the limiters fail open and count it.
  EXPECT_GT(run_every_request(srv, acl_url(srv, "rl"), "elsewhere"), 0u);
  const auto denials = acl_denials(srv);
  ASSERT_FALSE(denials.empty());
  for (const auto& d : denials)
    EXPECT_EQ(d.rfind("key:", 0), 0u) << d;
}

} // namespace

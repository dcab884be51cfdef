// Hostile values at every public entry point (include/ratesync/*.hpp), on the
// memory engine and on a redis store: empty and 1 MiB names and keys, keys
// with '{', '}', ':', NUL bytes and invalid UTF-8, costs of 0 and above the
// burst, negative / NaN / infinite durations and rates from code and from
// TOML, unknown limiters, a configuration loaded while acquirers run; and the
// security facts (TLS verification failures reported as such, no password in
// any message). Each gets a defined answer, a clear error or a documented
// behaviour, and no other limiter's state changes. docs/reliability.md lists
// the classes with these tests.
//
// (g++ 12: no braced temporary inside a co_await expression; coroutine
// parameters are taken by value.)
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <gtest/gtest.h>
#include <limits>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include "ratesync/ratesync.hpp"
#include "redis_server.hpp"
#include "test_support.hpp"

namespace {

using namespace ratesync;
using namespace ratesync::test;

constexpr double nan_v = std::numeric_limits<double>::quiet_NaN();
constexpr double inf_v = std::numeric_limits<double>::infinity();
constexpr std::int64_t i64_max = std::numeric_limits<std::int64_t>::max();
constexpr std::int64_t i64_min = std::numeric_limits<std::int64_t>::min();
const std::string mib(std::size_t(1) << 20, 'k');

// The exception `f` throws, as type E; a test failure if it throws nothing or
// something else.
template <class E, class F> std::optional<E> thrown(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw another exception: " << e.what();
    return std::nullopt;
  }
  ADD_FAILURE() << "threw nothing";
  return std::nullopt;
}

// One redis-server for the whole process; each registry its own key_prefix.
redis_server& shared_server() {
  static redis_server srv;
  return srv;
}

enum class engine_kind { memory, redis };

std::string engine_name(const testing::TestParamInfo<engine_kind>& p) {
  return p.param == engine_kind::memory ? "Memory" : "Redis";
}

// A registry whose store "s" is the engine under test.
class engine_registry : public registry {
public:
  explicit engine_registry(engine_kind k) {
    static std::atomic<int> n{0};
    store_options s;
    if (k == engine_kind::redis) {
      s.engine = "redis";
      s.url = shared_server().url();
      s.key_prefix = "bad" + std::to_string(n++);
      prefix = s.key_prefix;
    }
    configure_store("s", s);
  }
  std::string prefix;
};

limiter_options bucket(double rate, std::int64_t burst) {
  limiter_options o;
  o.store = "s";
  o.rate_per_second = rate;
  o.burst = burst;
  return o;
}

acquire_options fast(std::string key = {}) {
  acquire_options o;
  o.timeout = seconds_d(0);
  o.key = std::move(key);
  return o;
}

acquire_result try_now(const limiter& l, std::string key = {}) {
  return run(l.try_acquire(fast(std::move(key))));
}

// A limiter whose state the hostile calls must not touch: one admission per
// 1000 s, spent by key "v", plus one held concurrency slot.
struct bystander {
  explicit bystander(registry& reg) {
    limiter_options o = bucket(0.001, 1);
    o.max_concurrent = 5;
    reg.configure_limiter("bystander", o);
    l.emplace(reg.get_limiter("bystander"));
    held = try_now(*l, "v");
    EXPECT_TRUE(held.allowed);
    before = run(l->get_state("v"));
    metrics = l->get_metrics();
  }
  void expect_untouched() const {
    const limiter_state now = run(l->get_state("v"));
    EXPECT_EQ(now.remaining, before.remaining);
    EXPECT_EQ(now.current_concurrent, 1);
    EXPECT_GT(now.retry_after, before.retry_after - std::chrono::seconds(60));
    const limiter_metrics m = l->get_metrics();
    EXPECT_EQ(m.total_acquisitions, metrics.total_acquisitions);
    EXPECT_EQ(m.denied, metrics.denied);
    EXPECT_EQ(m.current_concurrent, 1);
    EXPECT_EQ(m.store_errors, 0u);
  }
  std::optional<limiter> l;
  acquire_result held;
  limiter_state before;
  limiter_metrics metrics;
};

class BadInput : public testing::TestWithParam<engine_kind> {};

INSTANTIATE_TEST_SUITE_P(Engines, BadInput,
                         testing::Values(engine_kind::memory, engine_kind::redis), engine_name);

// ---------------------------------------------------------------------------
// Keys: any byte string is a key of its own

std::vector<std::string> hostile_keys() {
  std::string all_bytes;
  for (int c = 0; c < 256; ++c)
    all_bytes += static_cast<char>(c);
  std::string mib_braces = mib;
  mib_braces.front() = '{';
  mib_braces.back() = '}';
  return {"",
          "{",
          "}",
          "{}",
          "{user}",
          "}{",
          ":",
          "a:b",
          "a:{b}:c",
          "|",
          "%7B",
          std::string(1, '\0'),
          std::string("x\0y", 3),
          std::string("x\0z", 3),
          "\xff\xfe",
          "\xc0\x80",     // overlong NUL
          "\xed\xa0\x80", // a UTF-16 surrogate
          "\xc3\xa9",     // valid UTF-8
          all_bytes,
          mib,
          mib_braces,
          std::string(std::size_t(1) << 20, '\0')};
}

TEST_P(BadInput, HostileKeysEachGetTheirOwnStateAndTouchNothingElse) {
  engine_registry reg(GetParam());
  bystander b(reg);
  limiter_options o = bucket(0.001, 1); // one per 1000 s
  o.max_concurrent = 100;
  reg.configure_limiter("api", o);
  limiter api = reg.get_limiter("api");
  const auto keys = hostile_keys();
  std::vector<acquire_result> held;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    SCOPED_TRACE("key #" + std::to_string(i) + " (" + std::to_string(keys[i].size()) + " bytes)");
    // Fresh state: admitted once (had two keys shared state, the second of
    // them would be refused here).
    held.push_back(try_now(api, keys[i]));
    EXPECT_TRUE(held.back().allowed);
    const acquire_result again = try_now(api, keys[i]);
    EXPECT_FALSE(again.allowed);
    EXPECT_EQ(again.reason, denial_reason::rate_limited);
    EXPECT_GT(again.retry_after, std::chrono::seconds(990));
    limiter_state s = run(api.get_state(keys[i]));
    EXPECT_EQ(s.remaining, 0);
    EXPECT_EQ(s.current_concurrent, 1);
    // acquire() refuses with an acquisition_error naming the key readably.
    const auto e = thrown<acquisition_error>([&] { run(api.acquire(fast(keys[i]))); });
    if (e) {
      EXPECT_EQ(e->key(), keys[i]);
      EXPECT_LT(std::string(e->what()).size(), 400u) << "one readable line";
      EXPECT_EQ(std::string(e->what()).find('\0'), std::string::npos);
    }
  }
  // reset(key) forgets exactly that key's rate state.
  run(api.reset(keys[1]));
  EXPECT_EQ(run(api.get_state(keys[1])).remaining, 1);
  EXPECT_EQ(run(api.get_state(keys[2])).remaining, 0);
  EXPECT_EQ(api.get_metrics().total_acquisitions, keys.size());
  EXPECT_EQ(api.get_metrics().store_errors, 0u);
  b.expect_untouched();
  held.clear();
  EXPECT_EQ(api.get_metrics().current_concurrent, 0);
}

// ---------------------------------------------------------------------------
// Limiter names: any non-empty byte string; lookups match it exactly

TEST_P(BadInput, HostileLimiterNamesAreDistinctLimiters) {
  engine_registry reg(GetParam());
  bystander b(reg);
  const std::vector<std::string> names = {"{",
                                          "}",
                                          "{api}",
                                          "a:b",
                                          "a|b",
                                          "api ",
                                          std::string("api\0x", 5),
                                          std::string(1, '\0'),
                                          "\xff\xfe",
                                          "\xc3\xa9",
                                          mib,
                                          "#" + std::string(40, '0')};
  for (const auto& n : names)
    reg.configure_limiter(n, bucket(0.001, 1));
  for (std::size_t i = 0; i < names.size(); ++i) {
    SCOPED_TRACE("name #" + std::to_string(i));
    limiter l = reg.get_limiter(names[i]);
    EXPECT_EQ(l.name(), names[i]);
    EXPECT_TRUE(try_now(l).allowed) << "shares state with another name";
    EXPECT_FALSE(try_now(l).allowed);
  }
  EXPECT_FALSE(reg.has_limiter("api")) << "\"api\\0x\" must not be found as \"api\"";
  const auto e = thrown<limiter_not_found>([&] { reg.get_limiter(std::string("a:b\0", 4)); });
  if (e) {
    EXPECT_EQ(e->name(), std::string("a:b\0", 4));
  }
  b.expect_untouched();
}

TEST(BadNames, EmptyNamesAreConfigErrors) {
  registry reg;
  limiter_options o;
  o.max_concurrent = 1;
  auto e = thrown<config_error>([&] { reg.configure_limiter("", o); });
  if (e) {
    EXPECT_EQ(e->option(), "limiters");
    EXPECT_EQ(e->message(), "limiter name must not be empty");
  }
  e = thrown<config_error>([&] { reg.configure_store("", store_options()); });
  if (e) {
    EXPECT_EQ(e->option(), "stores");
  }
  e = thrown<config_error>([&] { reg.configure_store("", std::shared_ptr<engine>()); });
  if (e) {
    EXPECT_EQ(e->option(), "stores");
  }
  e = thrown<config_error>([&] { reg.configure_store("x", std::shared_ptr<engine>()); });
  if (e) {
    EXPECT_EQ(e->option(), "stores.x");
  }
  EXPECT_TRUE(reg.limiter_names().empty());
  EXPECT_TRUE(reg.store_names().empty());
}

// ---------------------------------------------------------------------------
// Unknown limiters

TEST(BadNames, UnknownLimiterIsLimiterNotFoundEverywhere) {
  registry reg;
  limiter_options o;
  o.max_concurrent = 1;
  reg.configure_limiter("api", o);
  for (const std::string& name : {std::string("nope"), std::string(), std::string("API"),
                                  std::string("api\0", 4), std::string("\xff"), mib}) {
    SCOPED_TRACE(std::to_string(name.size()) + " bytes");
    auto e = thrown<limiter_not_found>([&] { reg.get_limiter(name); });
    if (e) {
      EXPECT_EQ(e->name(), name);
      // The message shows the name readably, on one short line.
      const std::string what = e->what();
      EXPECT_LT(what.size(), 400u);
      EXPECT_EQ(what.find('\0'), std::string::npos);
      EXPECT_EQ(what.find('\xff'), std::string::npos);
    }
    EXPECT_FALSE(reg.has_limiter(name));
    EXPECT_THROW(run(reg.acquire(name)), limiter_not_found);
    EXPECT_THROW(run(reg.try_acquire(name, fast())), limiter_not_found);
  }
  EXPECT_EQ(reg.get_limiter("api").get_metrics().total_acquisitions, 0u);
}

// ---------------------------------------------------------------------------
// Costs

TEST_P(BadInput, ImpossibleCostsAreInvalidArgumentsThatConsumeNothing) {
  engine_registry reg(GetParam());
  bystander b(reg);
  reg.configure_limiter("tb", bucket(10, 5));
  limiter_options w;
  w.store = "s";
  w.algo = algorithm::sliding_window;
  w.limit = 3;
  w.window_seconds = 60;
  reg.configure_limiter("sw", w);
  limiter_options cc;
  cc.store = "s";
  cc.max_concurrent = 2;
  reg.configure_limiter("cc", cc);
  struct bad {
    const char* limiter;
    std::int64_t cost;
    const char* says;
  };
  for (const bad& c :
       {bad{"tb", 0, "cost must be at least 1 (got 0)"},
        bad{"tb", -1, "cost must be at least 1 (got -1)"},
        bad{"tb", i64_min, "cost must be at least 1"},
        bad{"tb", 6, "cost 6 exceeds the burst of 5"}, bad{"tb", i64_max, "exceeds the burst of 5"},
        bad{"sw", 4, "cost 4 exceeds the limit of 3"}, bad{"sw", 0, "cost must be at least 1"},
        bad{"cc", 0, "cost must be at least 1"}}) {
    SCOPED_TRACE(std::string(c.limiter) + " cost " + std::to_string(c.cost));
    acquire_options o = fast();
    o.cost = c.cost;
    limiter l = reg.get_limiter(c.limiter);
    for (int how = 0; how < 2; ++how) {
      auto e = thrown<ratesync::invalid_argument>([&] {
        if (how == 0)
          run(l.acquire(o));
        else
          run(l.try_acquire(o));
      });
      if (e) {
        EXPECT_NE(std::string(e->what()).find(std::string("limiter \"") + c.limiter + "\""),
                  std::string::npos)
            << e->what();
        EXPECT_NE(std::string(e->what()).find(c.says), std::string::npos) << e->what();
      }
    }
    // Counted nowhere: it never reached a decision.
    const limiter_metrics m = l.get_metrics();
    EXPECT_EQ(m.total_acquisitions + m.denied + m.timeouts + m.store_errors, 0u);
  }
  // The edges are fine: the whole burst, the whole window, any cost on a
  // concurrency-only limiter (it always takes one slot).
  acquire_options o = fast();
  o.cost = 5;
  EXPECT_TRUE(run(reg.get_limiter("tb").try_acquire(o)).allowed);
  EXPECT_EQ(run(reg.get_limiter("tb").get_state()).remaining, 0);
  o.cost = 3;
  EXPECT_TRUE(run(reg.get_limiter("sw").try_acquire(o)).allowed);
  o.cost = i64_max;
  acquire_result slot = run(reg.get_limiter("cc").try_acquire(o));
  EXPECT_TRUE(slot.allowed);
  EXPECT_EQ(run(reg.get_limiter("cc").get_state()).current_concurrent, 1);
  b.expect_untouched();
}

// ---------------------------------------------------------------------------
// Per-call timeouts

TEST_P(BadInput, NegativeAndNanTimeoutsAreInvalidInfiniteMeansNoDeadline) {
  engine_registry reg(GetParam());
  bystander b(reg);
  reg.configure_limiter("api", bucket(20, 1)); // a token every 50 ms
  limiter api = reg.get_limiter("api");
  for (double t : {-1.0, -1e-300, -inf_v, nan_v, -nan_v}) {
    SCOPED_TRACE(t);
    acquire_options o;
    o.timeout = seconds_d(t);
    auto e = thrown<ratesync::invalid_argument>([&] { run(api.acquire(o)); });
    if (e) {
      EXPECT_NE(std::string(e->what()).find("limiter \"api\": timeout must be zero or positive"),
                std::string::npos)
          << e->what();
    }
    EXPECT_THROW(run(api.try_acquire(o)), ratesync::invalid_argument);
  }
  EXPECT_EQ(api.get_metrics().total_acquisitions + api.get_metrics().denied, 0u);

  // -0.0 and the smallest positive double are zero: fail fast.
  ASSERT_TRUE(try_now(api).allowed); // the bucket is empty for 50 ms
  for (double t : {-0.0, std::numeric_limits<double>::denorm_min()}) {
    acquire_options o;
    o.timeout = seconds_d(t);
    const acquire_result r = run(api.try_acquire(o));
    EXPECT_FALSE(r.allowed);
    EXPECT_EQ(r.reason, denial_reason::rate_limited);
  }
  // +inf and 1e300 s: no deadline; the caller waits its ~50 ms.
  for (double t : {inf_v, 1e300}) {
    acquire_options o;
    o.timeout = seconds_d(t);
    const auto t0 = steady::now();
    EXPECT_TRUE(run(api.try_acquire(o)).allowed);
    EXPECT_GT(ms_since(t0), 20.0);
    EXPECT_LT(ms_since(t0), 1000.0);
  }
  b.expect_untouched();
}

// ---------------------------------------------------------------------------
// Options from code

struct limiter_case {
  const char* what;
  std::function<void(limiter_options&)> set;
  const char* option;  // the option the error names
  const char* message; // a part of its message
};

std::vector<limiter_case> bad_limiter_options() {
  auto rate = [](double v) { return [v](limiter_options& o) { o.rate_per_second = v; }; };
  auto window = [](double v) {
    return [v](limiter_options& o) {
      o.rate_per_second.reset();
      o.algo = algorithm::sliding_window;
      o.limit = 5;
      o.window_seconds = v;
    };
  };
  auto timeout = [](double v) { return [v](limiter_options& o) { o.timeout = seconds_d(v); }; };
  auto lease = [](double v) {
    return [v](limiter_options& o) {
      o.max_concurrent = 2;
      o.lease_seconds = v;
    };
  };
  return {
      {"rate 0", rate(0), "rate_per_second", "must be > 0 (got 0)"},
      {"rate -1", rate(-1), "rate_per_second", "must be > 0 (got -1)"},
      {"rate nan", rate(nan_v), "rate_per_second", "must be a finite number (got nan)"},
      {"rate inf", rate(inf_v), "rate_per_second", "must be a finite number (got inf)"},
      {"rate -inf", rate(-inf_v), "rate_per_second", "must be a finite number (got -inf)"},
      {"rate 1e300", rate(1e300), "rate_per_second", "must be <= 1000000000"},
      {"rate denormal",
       [](limiter_options& o) {
         o.burst.reset(); // with a burst given, the error names the burst
         o.rate_per_second = std::numeric_limits<double>::denorm_min();
       },
       "rate_per_second", "burst / rate_per_second must be <= 1000000000 seconds"},
      {"burst 0", [](limiter_options& o) { o.burst = 0; }, "burst", "must be >= 1 (got 0)"},
      {"burst min", [](limiter_options& o) { o.burst = i64_min; }, "burst", "must be >= 1"},
      {"burst max", [](limiter_options& o) { o.burst = i64_max; }, "burst",
       "burst / rate_per_second must be <= 1000000000 seconds"},
      {"window 0", window(0), "window_seconds", "must be > 0 (got 0)"},
      {"window -1", window(-1), "window_seconds", "must be > 0 (got -1)"},
      {"window nan", window(nan_v), "window_seconds", "must be a finite number (got nan)"},
      {"window inf", window(inf_v), "window_seconds", "must be a finite number (got inf)"},
      {"window -inf", window(-inf_v), "window_seconds", "must be a finite number (got -inf)"},
      {"limit 0",
       [window](limiter_options& o) {
         window(60)(o);
         o.limit = 0;
       },
       "limit", "must be >= 1 (got 0)"},
      {"limit max",
       [window](limiter_options& o) {
         window(60)(o);
         o.limit = i64_max;
       },
       "limit", "must be <= 1000000 (got 9223372036854775807)"},
      {"timeout -1", timeout(-1), "timeout", "must be >= 0 (got -1)"},
      {"timeout nan", timeout(nan_v), "timeout", "must be a finite number (got nan)"},
      {"timeout inf", timeout(inf_v), "timeout", "must be a finite number (got inf)"},
      {"timeout -inf", timeout(-inf_v), "timeout", "must be a finite number (got -inf)"},
      {"max_concurrent 0", [](limiter_options& o) { o.max_concurrent = 0; }, "max_concurrent",
       "must be >= 1 (got 0)"},
      {"max_concurrent min", [](limiter_options& o) { o.max_concurrent = i64_min; },
       "max_concurrent", "must be >= 1"},
      {"lease 0", lease(0), "lease_seconds", "must be >= 0.1 (got 0)"},
      {"lease -1", lease(-1), "lease_seconds", "must be >= 0.1 (got -1)"},
      {"lease 1 ms", lease(0.001), "lease_seconds", "must be >= 0.1 (got 0.001)"},
      {"lease nan", lease(nan_v), "lease_seconds", "must be a finite number (got nan)"},
      {"lease inf", lease(inf_v), "lease_seconds", "must be a finite number (got inf)"},
      {"lease 1e300", lease(1e300), "lease_seconds", "must be <= 1000000"},
  };
}

TEST_P(BadInput, LimiterOptionsFromCodeAreConfigErrorsThatAddNothing) {
  engine_registry reg(GetParam());
  bystander b(reg);
  for (const auto& c : bad_limiter_options()) {
    SCOPED_TRACE(c.what);
    limiter_options o = bucket(10, 1);
    c.set(o);
    auto e = thrown<config_error>([&] { reg.configure_limiter("x", o); });
    if (e) {
      EXPECT_EQ(e->option(), std::string("limiters.x.") + c.option);
      EXPECT_NE(e->message().find(c.message), std::string::npos) << e->message();
      EXPECT_EQ(e->source(), "");
      EXPECT_EQ(e->line(), 0u);
    }
    EXPECT_THROW(ratesync::validate("x", o), config_error);
    EXPECT_FALSE(reg.has_limiter("x"));
  }
  b.expect_untouched();
}

struct store_case {
  const char* what;
  std::function<void(store_options&)> set;
  const char* option;
  const char* message;
};

std::vector<store_case> bad_store_options() {
  auto secs = [](seconds_d store_options::*field, double v) {
    return [field, v](store_options& o) { o.*field = seconds_d(v); };
  };
  std::vector<store_case> out;
  for (auto [field, name] :
       {std::pair{&store_options::socket_timeout, "socket_timeout"},
        std::pair{&store_options::socket_connect_timeout, "socket_connect_timeout"}}) {
    out.push_back({name, secs(field, 0), name, "must be > 0 (got 0)"});
    out.push_back({name, secs(field, -1), name, "must be > 0 (got -1)"});
    out.push_back({name, secs(field, nan_v), name, "must be a finite number (got nan)"});
    out.push_back({name, secs(field, inf_v), name, "must be a finite number (got inf)"});
    out.push_back({name, secs(field, -inf_v), name, "must be a finite number (got -inf)"});
    // Beyond what a deadline in nanoseconds can hold.
    out.push_back({name, secs(field, 1e300), name, "must be <= 1000000"});
    out.push_back({name, secs(field, 1e10), name, "must be <= 1000000"});
  }
  out.push_back({"health -1", secs(&store_options::health_check_interval, -1),
                 "health_check_interval", "must be >= 0 (got -1)"});
  out.push_back({"health nan", secs(&store_options::health_check_interval, nan_v),
                 "health_check_interval", "must be a finite number (got nan)"});
  out.push_back({"health inf", secs(&store_options::health_check_interval, inf_v),
                 "health_check_interval", "must be a finite number (got inf)"});
  out.push_back({"health 1e300", secs(&store_options::health_check_interval, 1e300),
                 "health_check_interval", "must be <= 1000000"});
  auto margin = [](double v) { return [v](store_options& o) { o.timing_margin_ms = v; }; };
  out.push_back({"margin -1", margin(-1), "timing_margin_ms", "must be >= 0 (got -1)"});
  out.push_back({"margin nan", margin(nan_v), "timing_margin_ms", "must be a finite number"});
  out.push_back({"margin inf", margin(inf_v), "timing_margin_ms", "must be a finite number"});
  // A margin too large for integer microseconds used to turn negative.
  out.push_back({"margin 1e300", margin(1e300), "timing_margin_ms", "must be <= 1000000"});
  out.push_back({"pool min -1", [](store_options& o) { o.pool_min_size = -1; }, "pool_min_size",
                 "must be >= 0 (got -1)"});
  out.push_back({"pool max 0", [](store_options& o) { o.pool_max_size = 0; }, "pool_max_size",
                 "must be >= 1 (got 0)"});
  out.push_back({"pool huge",
                 [](store_options& o) {
                   o.pool_min_size = i64_max;
                   o.pool_max_size = i64_max;
                 },
                 "pool_max_size", "must be <= 1000"});
  out.push_back({"db -1", [](store_options& o) { o.db = -1; }, "db", "must be between 0 and"});
  out.push_back({"db max", [](store_options& o) { o.db = i64_max; }, "db", "must be between"});
  out.push_back({"prefix empty", [](store_options& o) { o.key_prefix.clear(); }, "key_prefix",
                 "must not be empty"});
  out.push_back({"prefix {", [](store_options& o) { o.key_prefix = "a{b"; }, "key_prefix",
                 "must not contain '{' or '}'"});
  out.push_back({"prefix }", [](store_options& o) { o.key_prefix = "}"; }, "key_prefix",
                 "must not contain '{' or '}'"});
  out.push_back({"url empty", [](store_options& o) { o.url.clear(); }, "url", "is required"});
  out.push_back({"url garbage", [](store_options& o) { o.url = "\xff\xfe{}:"; }, "url", ""});
  out.push_back({"url NUL", [](store_options& o) { o.url = std::string("redis://a\0b:1/0", 15); },
                 "url", ""});
  out.push_back({"url 1 MiB", [](store_options& o) { o.url = "redis://" + mib; }, "url",
                 "the host name is 1048576 bytes long; a DNS name has at most 253"});
  out.push_back({"engine", [](store_options& o) { o.engine = "memcached"; }, "engine",
                 "must be \"memory\" or \"redis\""});
  out.push_back({"tls on redis://", [](store_options& o) { o.tls_insecure_skip_verify = true; },
                 "tls_insecure_skip_verify", "applies to rediss:// URLs only"});
  return out;
}

TEST(BadStoreOptions, FromCodeAreConfigErrorsThatAddNothing) {
  registry reg;
  for (const auto& c : bad_store_options()) {
    SCOPED_TRACE(c.what);
    store_options o;
    o.engine = "redis";
    o.url = "redis://:hunter2-pw@127.0.0.1:1/0";
    c.set(o);
    auto e = thrown<config_error>([&] { reg.configure_store("s", o); });
    if (e) {
      EXPECT_EQ(e->option(), std::string("stores.s.") + c.option) << e->what();
      EXPECT_NE(e->message().find(c.message), std::string::npos) << e->message();
      EXPECT_EQ(std::string(e->what()).find("hunter2-pw"), std::string::npos) << e->what();
    }
    EXPECT_TRUE(reg.store_names().empty());
  }
}

// ---------------------------------------------------------------------------
// Options from TOML: negative, NaN and infinite durations and rates

class temp_file {
public:
  explicit temp_file(const std::string& text) {
    char name[] = "/tmp/ratesync-bad-XXXXXX.toml";
    const int fd = ::mkstemps(name, 5);
    if (fd < 0)
      throw std::runtime_error("mkstemps");
    ::close(fd);
    path_ = name;
    std::ofstream(path_) << text;
  }
  ~temp_file() { std::filesystem::remove(path_); }
  const std::string& path() const { return path_; }

private:
  std::string path_;
};

TEST(BadToml, NonFiniteAndNegativeDurationsAndRatesNameFileLineAndOption) {
  struct option_case {
    const char* section; // "limiters" or "stores"
    const char* head;    // the lines before the option, inside the table
    const char* option;
    bool zero_ok; // 0 is valid (>= 0) or not (> 0)
    bool huge_ok; // 1e300 is valid
  };
  const char* redis_head = "engine = \"redis\"\nurl = \"redis://127.0.0.1:1/0\"\n";
  const std::vector<option_case> options = {
      {"limiters", "", "rate_per_second", false, false},
      {"limiters", "algorithm = \"sliding_window\"\nlimit = 5\n", "window_seconds", false, false},
      {"limiters", "max_concurrent = 1\n", "timeout", true, true}, // 1e300: no deadline
      {"limiters", "max_concurrent = 1\n", "lease_seconds", false, false},
      {"stores", redis_head, "timing_margin_ms", true, false},
      {"stores", redis_head, "socket_timeout", false, false},
      {"stores", redis_head, "socket_connect_timeout", false, false},
      {"stores", redis_head, "health_check_interval", true, false},
  };
  registry reg;
  limiter_options keep;
  keep.max_concurrent = 1;
  reg.configure_limiter("keep", keep);
  for (const auto& c : options) {
    for (const std::string value : {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "-1", "-0.5", "0",
                                    "1e300", "\"${RATESYNC_BAD_NUMBER}\""}) {
      if ((value == "0" && c.zero_ok) || (value == "1e300" && c.huge_ok))
        continue;
      SCOPED_TRACE(std::string(c.option) + " = " + value);
      ::setenv("RATESYNC_BAD_NUMBER", "nan", 1);
      // Line 1: a comment; 2: the table; then the head; then the option.
      const std::string text = std::string("# hostile\n[") + c.section + ".x]\n" + c.head +
                               c.option + " = " + value + "\n[limiters.y]\nmax_concurrent = 1\n";
      int line = 3;
      for (const char* p = c.head; *p; ++p)
        line += *p == '\n';
      temp_file f(text);
      auto e = thrown<config_error>([&] { reg.load_config(f.path()); });
      if (e) {
        EXPECT_EQ(e->source(), f.path());
        EXPECT_EQ(e->line(), static_cast<std::uint32_t>(line)) << e->what();
        EXPECT_EQ(e->column(), std::string(c.option).size() + 4) << e->what();
        EXPECT_EQ(e->option(), std::string(c.section) + ".x." + c.option);
        const std::string prefix = f.path() + ":" + std::to_string(line) + ":";
        EXPECT_EQ(std::string(e->what()).rfind(prefix, 0), 0u) << e->what();
      }
      // All or nothing: [limiters.y] after the error is not added either.
      EXPECT_EQ(reg.limiter_names(), std::vector<std::string>{"keep"});
      EXPECT_TRUE(reg.store_names().empty());
    }
  }
  ::unsetenv("RATESYNC_BAD_NUMBER");
}

TEST(BadToml, HugeIntegersAndHostileNames) {
  registry reg;
  // Beyond 64 bits: a TOML error at the value.
  auto e = thrown<config_error>([&] {
    reg.load_config_string("[limiters.a]\nmax_concurrent = 9223372036854775808\n", "big.toml");
  });
  if (e) {
    EXPECT_EQ(e->source(), "big.toml");
    EXPECT_EQ(e->line(), 2u);
  }
  e = thrown<config_error>([&] {
    reg.load_config_string("[limiters.a]\nrate_per_second = 1\nburst = 9223372036854775807\n",
                           "big.toml");
  });
  if (e) {
    EXPECT_EQ(e->option(), "limiters.a.burst");
  }
  e = thrown<config_error>([&] {
    reg.load_config_string("[limiters.a]\nmax_concurrent = -9223372036854775808\n", "big.toml");
  });
  if (e) {
    EXPECT_EQ(e->option(), "limiters.a.max_concurrent");
  }
  // Names with braces, colons, escapes (TOML cannot hold a raw NUL or invalid
  // UTF-8) are names like any other.
  reg.load_config_string("[limiters.\"{a}:b\"]\nmax_concurrent = 1\n"
                         "[limiters.\"\\u0000\"]\nmax_concurrent = 1\n"
                         "[limiters.\"\\u00e9\"]\nmax_concurrent = 1\n",
                         "names.toml");
  EXPECT_TRUE(reg.has_limiter("{a}:b"));
  EXPECT_TRUE(reg.has_limiter(std::string(1, '\0')));
  EXPECT_TRUE(reg.has_limiter("\xc3\xa9"));
  // Invalid UTF-8 in the text itself is a TOML error, not a crash.
  e = thrown<config_error>(
      [&] { reg.load_config_string("[limiters.\"\xff\"]\nmax_concurrent = 1\n", "utf8.toml"); });
  if (e) {
    EXPECT_EQ(e->source(), "utf8.toml");
  }
  EXPECT_EQ(reg.limiter_names().size(), 3u);
}

// ---------------------------------------------------------------------------
// A configuration loaded while acquirers run

TEST_P(BadInput, ConfigLoadedWhileAcquirersRunAddsLimitersAndRedefiningIsAnError) {
  engine_registry reg(GetParam());
  bystander b(reg);
  limiter_options o = bucket(1000, 10);
  o.max_concurrent = 8;
  reg.configure_limiter("api", o);
  limiter api = reg.get_limiter("api");

  std::atomic<bool> stop{false};
  std::atomic<int> admitted{0}, errors{0};
  asio::io_context ctx;
  for (int i = 0; i < 16; ++i)
    asio::co_spawn(
        ctx,
        [&]() -> asio::awaitable<void> {
          while (!stop) {
            try {
              acquire_options a;
              a.timeout = seconds_d(1);
              acquire_result r = co_await reg.try_acquire("api", a);
              admitted += r.allowed;
              co_await sleep_for(1ms);
            } catch (const std::exception&) {
              ++errors;
            }
          }
        },
        asio::detached);
  std::thread load([&] { ctx.run(); });
  std::this_thread::sleep_for(100ms);

  // New limiters arrive while "api" is in use.
  const std::string store_line = "store = \"s\"\n";
  reg.load_config_string("[limiters.extra]\n" + store_line + "rate_per_second = 5\n", "add.toml");
  EXPECT_TRUE(try_now(reg.get_limiter("extra")).allowed);

  // Redefining "api" (a reload) is refused, whole file included, and the
  // running limiter keeps its options and its state.
  const auto before = api.get_metrics();
  auto e = thrown<config_error>([&] {
    reg.load_config_string("[limiters.extra2]\n" + store_line +
                               "rate_per_second = 5\n\n[limiters.api]\n" + store_line +
                               "rate_per_second = 1\n",
                           "reload.toml");
  });
  if (e) {
    EXPECT_EQ(e->option(), "limiters.api");
    EXPECT_EQ(e->line(), 5u);
    EXPECT_EQ(e->message(), "a limiter of this name is already configured");
  }
  EXPECT_FALSE(reg.has_limiter("extra2"));
  EXPECT_THROW(reg.configure_limiter("api", bucket(1, 1)), config_error);
  EXPECT_THROW(reg.configure_store("s", store_options()), config_error);
  std::this_thread::sleep_for(100ms);
  stop = true;
  load.join();
  EXPECT_EQ(*reg.get_limiter("api").options().rate_per_second, 1000.0);
  EXPECT_EQ(errors.load(), 0);
  EXPECT_GT(api.get_metrics().total_acquisitions, before.total_acquisitions)
      << "the running limiter stopped";
  EXPECT_EQ(api.get_metrics().total_acquisitions, static_cast<std::uint64_t>(admitted.load()));
  EXPECT_EQ(api.get_metrics().current_concurrent, 0);
  b.expect_untouched();
}

// ---------------------------------------------------------------------------
// Security: TLS verification failures, passwords

// A rediss:// store that cannot verify the server: each decision fails with a
// store_error that says so (fail closed), with the password masked.
std::string tls_failure(redis_server& srv, const std::string& ca, const std::string& name) {
  registry reg;
  store_options s;
  s.engine = "redis";
  s.url = "rediss://:tls-pw-39c1@127.0.0.1:" + std::to_string(srv.tls_port()) + "/0";
  s.tls_ca_file = ca;
  s.tls_server_name = name;
  s.socket_connect_timeout = seconds_d(2);
  reg.configure_store("r", s);
  limiter_options o;
  o.store = "r";
  o.max_concurrent = 1;
  o.fail_closed = true;
  reg.configure_limiter("api", o);
  limiter api = reg.get_limiter("api");
  std::string what;
  try {
    acquire_result r = run(api.try_acquire(fast()));
    what = r.allowed ? "allowed" : "refused";
  } catch (const store_error& e) {
    what = e.what();
  }
  EXPECT_EQ(what.find("tls-pw-39c1"), std::string::npos) << what;
  return what;
}

TEST(Security, TlsVerificationFailuresAreReportedAsSuch) {
  redis_server srv({.tls = true, .requirepass = "tls-pw-39c1"});
  const std::string wrong_ca = tls_failure(srv, srv.other_ca_file(), "");
  std::printf("[security] wrong CA: %s\n", wrong_ca.c_str());
  EXPECT_NE(wrong_ca.find("did not verify"), std::string::npos) << wrong_ca;
  const std::string wrong_name = tls_failure(srv, srv.ca_file(), "not-this-server.example");
  std::printf("[security] wrong name: %s\n", wrong_name.c_str());
  EXPECT_NE(wrong_name.find("did not verify"), std::string::npos) << wrong_name;
  EXPECT_EQ(tls_failure(srv, srv.ca_file(), ""), "allowed");
}

TEST(Security, NoPasswordInAnyMessage) {
  const std::string pw = "p4ss-w0rd-e5";
  redis_server srv({.requirepass = pw});
  std::vector<std::string> messages;
  auto decide = [&](const std::string& url, bool stop_first) {
    registry reg;
    store_options s;
    s.engine = "redis";
    s.url = url;
    s.socket_timeout = seconds_d(0.3);
    s.socket_connect_timeout = seconds_d(0.3);
    reg.configure_store("r", s);
    limiter_options o;
    o.store = "r";
    o.max_concurrent = 1;
    o.fail_closed = true;
    reg.configure_limiter("api", o);
    if (stop_first)
      srv.stop();
    for (int i = 0; i < 4; ++i) { // the breaker's answer too
      try {
        (void)run(reg.get_limiter("api").try_acquire(fast()));
      } catch (const std::exception& e) {
        messages.push_back(e.what());
      }
    }
    if (stop_first)
      srv.start();
  };
  const std::string port = std::to_string(srv.port());
  decide("redis://:wrong-" + pw + "@127.0.0.1:" + port + "/0", false); // refused by AUTH
  decide("redis://acl-user:" + pw + "@127.0.0.1:" + port + "/0", false);
  decide("redis://:" + pw + "@127.0.0.1:" + port + "/0", true); // server gone
  for (const std::string& bad_url : {"redis://:" + pw + "@127.0.0.1:99999/0",
                                     "redis://:" + pw + "@[::1/0", "redis://:" + pw + "@h:1/x"}) {
    try {
      registry reg;
      store_options s;
      s.engine = "redis";
      s.url = bad_url;
      reg.configure_store("r", s);
      messages.push_back("no error for " + bad_url);
    } catch (const std::exception& e) {
      messages.push_back(e.what());
    }
  }
  ASSERT_GE(messages.size(), 15u);
  for (const auto& m : messages) {
    std::printf("[security] %s\n", m.c_str());
    EXPECT_EQ(m.find(pw), std::string::npos) << m;
  }
}

} // namespace

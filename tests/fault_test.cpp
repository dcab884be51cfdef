// Faults under load, against a private redis-server per test
// (tests/redis_server.hpp): 200 concurrent acquirers through the public API
// while the server is SIGKILLed and restarted, SIGSTOPped, paused with CLIENT
// PAUSE, has its scripts flushed, answers -OOM, drops every client, or stops
// listening; and 10,000 waiting acquirers cancelled. Each scenario measures
// what a user would notice: how long the slowest acquire took, what each
// acquire got (a decision by Redis, a fail-open admission, a store_error),
// that the metrics count exactly that, when Redis decided again after the
// fault cleared, and that no concurrency slot stays taken afterwards, on the
// server (ZCARD of the lease set) or in current_concurrent.
// docs/reliability.md quotes the "[fault]" lines these tests print.
//
// (g++ 12: no braced temporary inside a co_await expression; coroutine
// parameters are taken by value.)
#include <algorithm>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <atomic>
#include <cstdio>
#include <functional>
#include <gtest/gtest.h>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "ratesync/ratesync.hpp"
#include "redis_server.hpp"
#include "test_support.hpp"

namespace {

using namespace ratesync;
using namespace ratesync::test;

// ---------------------------------------------------------------------------
// The load

// Every scenario's server has a password: no error message may show it.
constexpr const char* password = "fault-pw-6d1e";

constexpr auto socket_timeout = 250ms;
constexpr double acquire_timeout_s = 0.5;
// An acquire may take its timeout (waiting for a slot) plus one store round
// trip that fails at socket_timeout; beyond that only scheduling delays on a
// loaded 2-core machine.
constexpr double slack_ms = 500;
constexpr double longest_call_ms = acquire_timeout_s * 1000 + 250 + slack_ms;
constexpr auto hold_for = 20ms;  // each admitted caller holds its permit this long
constexpr auto pause_for = 20ms; // between one caller's acquires
constexpr auto warm_up = 400ms;
constexpr auto fault_lasts = 1000ms;
constexpr auto observe_after = 2300ms; // load kept up after the fault cleared
constexpr double recovery_bound_ms = 2000;

enum class outcome { admitted, refused, fail_open, store_error, other };

struct call_record {
  double start_ms = 0;
  double end_ms = 0;
  outcome what = outcome::other;
  bool circuit = false; // a store_error answered by the circuit breaker
};

// Acquirers on one limiter, and everything they saw.
struct group {
  std::string name;
  std::string store = "r"; // each store has its own circuit breaker
  bool fail_closed = false;
  bool leases = true; // max_concurrent set: each admission is a lease in Redis
  int acquirers = 100;
  // Whether the fault must show up as store errors on this limiter.
  bool expect_errors = true;

  std::vector<call_record> calls;
  std::uint64_t seen_store_errors = 0;
  std::set<std::string> messages; // distinct store_error / other texts
  limiter_metrics before, after;
};

struct scenario {
  std::string name;
  std::vector<group> groups;
  // Starts the fault, returns once it has cleared (the instant it returns).
  std::function<void(redis_server&)> fault;
  std::vector<std::string> server_args{};
};

// The acquirers of all groups run on one thread: a store error is counted in
// the metrics on the caller's thread right before its acquire returns, so the
// counter read at that moment tells whether this very call was a fail-open
// admission.
asio::awaitable<void> acquirer(limiter l, group* g, steady::time_point t0,
                               const std::atomic<bool>* stop) {
  const auto ms = [t0] { return ms_since(t0); };
  while (!stop->load()) {
    call_record rec;
    rec.start_ms = ms();
    acquire_result r;
    try {
      acquire_options o;
      o.timeout = seconds_d(acquire_timeout_s);
      r = co_await l.try_acquire(o);
      const std::uint64_t errors = l.get_metrics().store_errors;
      const bool failed = errors != g->seen_store_errors;
      g->seen_store_errors = errors;
      rec.what = !r.allowed ? outcome::refused : failed ? outcome::fail_open : outcome::admitted;
    } catch (const store_error& e) {
      g->seen_store_errors = l.get_metrics().store_errors;
      rec.what = outcome::store_error;
      rec.circuit = e.circuit_open();
      if (g->messages.size() < 8)
        g->messages.insert(e.what());
    } catch (const std::exception& e) {
      rec.what = outcome::other;
      g->messages.insert(std::string("other: ") + e.what());
    }
    rec.end_ms = ms();
    g->calls.push_back(rec);
    if (r.allowed)
      co_await sleep_for(hold_for);
    r.permit.release();
    co_await sleep_for(pause_for);
  }
}

store_options store_for(const redis_server& srv) {
  store_options s;
  s.engine = "redis";
  s.url = "redis://:" + std::string(password) + "@127.0.0.1:" + std::to_string(srv.port());
  s.key_prefix = "fault";
  s.socket_timeout = socket_timeout;
  s.socket_connect_timeout = socket_timeout;
  return s;
}

limiter_options limiter_for(const group& g) {
  limiter_options o;
  o.store = g.store;
  o.rate_per_second = 20000; // never the limit here: the faults are
  o.burst = 2000;
  if (g.leases)
    o.max_concurrent = g.acquirers * 4 / 5; // a few callers wait for a slot
  o.fail_closed = g.fail_closed;
  return o;
}

std::string lease_key(const std::string& limiter) {
  return "fault:{" + limiter + "}:cc";
}

// Polls `pred` every 10 ms for up to `limit`; the time it took, or -1.
template <class Pred> double time_until(Pred pred, std::chrono::milliseconds limit) {
  const auto t0 = steady::now();
  while (!pred()) {
    if (steady::now() - t0 > limit)
      return -1;
    std::this_thread::sleep_for(10ms);
  }
  return ms_since(t0);
}

struct counts {
  std::size_t n[5] = {};
  std::size_t circuit = 0;
  double slowest_ms = 0;
  std::size_t operator[](outcome o) const { return n[static_cast<int>(o)]; }
};

counts count(const std::vector<call_record>& calls, double from_ms, double to_ms) {
  counts c;
  for (const auto& r : calls) {
    if (r.end_ms < from_ms || r.end_ms >= to_ms)
      continue;
    ++c.n[static_cast<int>(r.what)];
    c.circuit += r.circuit;
    c.slowest_ms = std::max(c.slowest_ms, r.end_ms - r.start_ms);
  }
  return c;
}

bool failed(const call_record& r) {
  return r.what == outcome::store_error || r.what == outcome::fail_open || r.what == outcome::other;
}

bool decided(const call_record& r) {
  return r.what == outcome::admitted || r.what == outcome::refused;
}

void run_scenario(scenario sc) {
  SCOPED_TRACE(sc.name);
  redis_server_options so;
  so.requirepass = password;
  so.extra_args = sc.server_args;
  redis_server srv(so);
  registry reg;
  int total = 0;
  for (auto& g : sc.groups) {
    const auto stores = reg.store_names();
    if (std::find(stores.begin(), stores.end(), g.store) == stores.end())
      reg.configure_store(g.store, store_for(srv));
    reg.configure_limiter(g.name, limiter_for(g));
    total += g.acquirers;
  }
  ASSERT_EQ(total, 200);

  std::atomic<bool> stop{false};
  asio::io_context ctx;
  const auto t0 = steady::now();
  for (auto& g : sc.groups) {
    limiter l = reg.get_limiter(g.name);
    g.before = l.get_metrics();
    for (int i = 0; i < g.acquirers; ++i)
      asio::co_spawn(ctx, acquirer(l, &g, t0, &stop), asio::detached);
  }
  std::thread load([&] { ctx.run(); });

  std::this_thread::sleep_for(warm_up);
  const double fault_ms = ms_since(t0);
  sc.fault(srv);
  const double clear_ms = ms_since(t0);
  std::this_thread::sleep_for(observe_after);
  const double stop_ms = ms_since(t0);
  stop = true;
  load.join(); // every acquirer has finished its last call and dropped its permit

  // Recovery: the first call decided by Redis that ended after the fault
  // cleared, and the end of the last failed one (from then on every call was
  // decided by Redis).
  double first_success = -1, last_failure = clear_ms;
  std::size_t decided_after_recovery = 0;
  for (const auto& g : sc.groups)
    for (const auto& r : g.calls) {
      if (r.end_ms >= clear_ms && decided(r) && (first_success < 0 || r.end_ms < first_success))
        first_success = r.end_ms;
      if (failed(r))
        last_failure = std::max(last_failure, r.end_ms);
    }
  for (const auto& g : sc.groups)
    for (const auto& r : g.calls)
      decided_after_recovery += r.end_ms > last_failure && decided(r);
  const double first_ms = first_success < 0 ? -1 : first_success - clear_ms;
  const double full_ms = last_failure - clear_ms;

  std::printf("[fault] %s: fault %.0f ms, cleared at +%.0f ms; first decision by Redis %.0f ms "
              "after it cleared, full service after %.0f ms (%zu calls decided after that)\n",
              sc.name.c_str(), clear_ms - fault_ms, clear_ms, first_ms, full_ms,
              decided_after_recovery);

  for (auto& g : sc.groups) {
    SCOPED_TRACE("limiter " + g.name + (g.fail_closed ? " (fail closed)" : " (fail open)"));
    limiter l = reg.get_limiter(g.name);
    g.after = l.get_metrics();
    const counts warm = count(g.calls, 0, fault_ms);
    const counts all = count(g.calls, 0, 1e18);
    std::printf(
        "[fault] %s %-12s %s: %zu calls: %zu admitted by Redis, %zu refused, %zu "
        "fail-open, %zu store_error (%zu by the breaker), %zu other; slowest %.0f ms; "
        "metrics store_errors %llu, circuit_rejections %llu\n",
        sc.name.c_str(), g.name.c_str(), g.fail_closed ? "closed" : "open  ", g.calls.size(),
        all[outcome::admitted], all[outcome::refused], all[outcome::fail_open],
        all[outcome::store_error], all.circuit, all[outcome::other], all.slowest_ms,
        static_cast<unsigned long long>(g.after.store_errors - g.before.store_errors),
        static_cast<unsigned long long>(g.after.circuit_rejections - g.before.circuit_rejections));
    for (const auto& m : g.messages)
      std::printf("[fault]   message: %s\n", m.c_str());

    // No crash, no hang: every acquire came back in time.
    EXPECT_LE(all.slowest_ms, longest_call_ms);
    EXPECT_EQ(all[outcome::other], 0u) << "unexpected exceptions";
    // Before the fault everything was decided by Redis.
    EXPECT_GT(warm[outcome::admitted], 0u);
    EXPECT_EQ(warm[outcome::fail_open] + warm[outcome::store_error], 0u);
    // The right answer for the policy, and the metrics count exactly that.
    const std::uint64_t store_errors = g.after.store_errors - g.before.store_errors;
    const std::uint64_t circuit = g.after.circuit_rejections - g.before.circuit_rejections;
    if (g.fail_closed) {
      EXPECT_EQ(all[outcome::fail_open], 0u);
      EXPECT_EQ(store_errors, all[outcome::store_error]);
      EXPECT_EQ(circuit, all.circuit);
      EXPECT_EQ(g.after.total_acquisitions - g.before.total_acquisitions, all[outcome::admitted]);
    } else {
      EXPECT_EQ(all[outcome::store_error], 0u) << "fail open: nothing thrown";
      EXPECT_EQ(store_errors, all[outcome::fail_open]);
      EXPECT_LE(circuit, store_errors);
      EXPECT_EQ(g.after.total_acquisitions - g.before.total_acquisitions,
                all[outcome::admitted] + all[outcome::fail_open]);
    }
    EXPECT_EQ((g.after.denied - g.before.denied) + (g.after.timeouts - g.before.timeouts),
              all[outcome::refused]);
    EXPECT_EQ(g.after.cancelled, g.before.cancelled);
    if (g.expect_errors)
      EXPECT_GT(store_errors, 0u) << "the fault was not noticed";
    else
      EXPECT_EQ(store_errors, 0u);
    for (const auto& m : g.messages)
      EXPECT_EQ(m.find(password), std::string::npos) << "the password leaked: " << m;

    // Every permit was dropped: nothing held, here or in Redis.
    EXPECT_EQ(g.after.current_concurrent, 0);
    EXPECT_EQ(g.after.total_releases - g.before.total_releases,
              g.after.total_acquisitions - g.before.total_acquisitions);
    if (g.leases) {
      const std::string key = lease_key(g.name);
      const double gone = time_until(
          [&] {
            return srv.query({"ZCARD", key}).integer == 0;
          },
          3000ms);
      std::printf("[fault] %s %-12s leases in Redis: %lld at the end of the load, 0 after %.0f "
                  "ms\n",
                  sc.name.c_str(), g.name.c_str(), srv.query({"ZCARD", key}).integer, gone);
      EXPECT_GE(gone, 0) << "leases left in Redis: " << srv.query({"ZCARD", key}).integer
                         << " (ZRANGE: " << srv.command({"ZRANGE", key, "0", "-1"}) << ")";
    }
  }
  (void)stop_ms;

  // Recovered, within the bound, with traffic decided by Redis afterwards.
  const bool any_errors = std::any_of(sc.groups.begin(), sc.groups.end(),
                                      [](const group& g) { return g.expect_errors; });
  if (any_errors) {
    EXPECT_GE(first_ms, 0) << "nothing was decided by Redis after the fault";
    EXPECT_LE(first_ms, recovery_bound_ms);
  }
  EXPECT_LE(full_ms, recovery_bound_ms);
  EXPECT_GT(decided_after_recovery, 200u) << "too little traffic after the recovery";

  // And a fresh caller of each limiter is decided by Redis.
  for (const auto& g : sc.groups) {
    limiter l = reg.get_limiter(g.name);
    const auto errors = l.get_metrics().store_errors;
    acquire_options o;
    o.timeout = seconds_d(0);
    EXPECT_TRUE(run(l.try_acquire(o)).allowed) << g.name;
    EXPECT_EQ(l.get_metrics().store_errors, errors) << g.name;
  }
}

// 100 acquirers on a fail-open and 100 on a fail-closed limiter, both with a
// token bucket and max_concurrent, on one store (one circuit breaker).
std::vector<group> both_policies(bool expect_errors = true) {
  group open;
  open.name = "open";
  open.fail_closed = false;
  open.expect_errors = expect_errors;
  group closed = open;
  closed.name = "closed";
  closed.fail_closed = true;
  return {open, closed};
}

// ---------------------------------------------------------------------------
// The faults

TEST(Fault, SigkillAndRestart) {
  run_scenario({"sigkill_restart", both_policies(), [](redis_server& srv) {
                  srv.kill();
                  std::this_thread::sleep_for(fault_lasts);
                  srv.start(); // same port, empty dataset; returns once it answers
                }});
}

TEST(Fault, SigstopPastSocketTimeout) {
  run_scenario({"sigstop", both_policies(), [](redis_server& srv) {
                  srv.pause();
                  std::this_thread::sleep_for(fault_lasts);
                  srv.resume();
                }});
}

TEST(Fault, ClientPausePastSocketTimeout) {
  run_scenario({"client_pause", both_policies(), [](redis_server& srv) {
                  const auto t = steady::now();
                  const std::string ms = std::to_string(fault_lasts.count());
                  ASSERT_EQ(srv.command({"CLIENT", "PAUSE", ms, "ALL"}), "+OK");
                  // Redis ends the pause by itself.
                  std::this_thread::sleep_until(t + fault_lasts);
                }});
}

TEST(Fault, ScriptFlushEveryFewMilliseconds) {
  run_scenario({"script_flush", both_policies(false), [](redis_server& srv) {
                  const auto t = steady::now();
                  int flushes = 0;
                  while (steady::now() - t < fault_lasts) {
                    ASSERT_EQ(srv.command({"SCRIPT", "FLUSH"}), "+OK");
                    ++flushes;
                    std::this_thread::sleep_for(3ms);
                  }
                  EXPECT_GT(flushes, 50);
                }});
}

// maxmemory far below the dataset with noeviction: Redis refuses commands
// that may grow memory with -OOM. It refuses a script only if the script's
// first write is such a command (Redis cannot stop a script half-way). The
// token bucket's first write is its SET, with max_concurrent too (the lease
// set is pruned only when full), so both kinds get -OOM and answer by their
// policy; a call that carries folded releases writes ZREM first and is still
// decided. (Until the lease set was counted before it was pruned,
// ZREMRANGEBYSCORE came first and the lease limiters were never refused,
// writing past maxmemory: on their own store, this test fails with the old
// scripts.)
TEST(Fault, OutOfMemoryWithNoeviction) {
  // The lease limiters on a store of their own: on one store the plain
  // buckets' -OOM answers would open the breaker they share, and they would
  // fail by it whatever Redis answered them.
  std::vector<group> groups;
  for (group g : both_policies()) {
    g.store = "r2";
    g.acquirers = 50;
    groups.push_back(g);
  }
  for (group g : both_policies()) { // 200 acquirers in all
    g.name = "plain_" + g.name;
    g.leases = false;
    g.acquirers = 50;
    groups.push_back(g);
  }
  run_scenario({"oom",
                groups,
                [](redis_server& srv) {
                  ASSERT_EQ(srv.command({"CONFIG", "SET", "maxmemory", "1"}), "+OK");
                  std::this_thread::sleep_for(fault_lasts);
                  ASSERT_EQ(srv.command({"CONFIG", "SET", "maxmemory", "0"}), "+OK");
                },
                {"--maxmemory-policy", "noeviction"}});
}

// CLIENT KILL TYPE normal every 100 ms for a second: every connection of the
// store drops, again and again, with requests written and unanswered.
TEST(Fault, ClientKillEveryConnection) {
  run_scenario({"client_kill", both_policies(), [](redis_server& srv) {
                  const auto t = steady::now();
                  while (steady::now() - t < fault_lasts) {
                    const auto r = srv.query({"CLIENT", "KILL", "TYPE", "normal"});
                    EXPECT_EQ(r.kind, redis_server::reply::type::integer);
                    std::this_thread::sleep_for(100ms);
                  }
                }});
}

// The listening port disappears and comes back while the server keeps its
// data: CONFIG SET port 0 closes the TCP listener (established connections
// would survive it, so every client is killed too: reconnecting is refused),
// and CONFIG SET port brings the same port back. Commands go through the
// fixture's unix socket meanwhile.
TEST(Fault, ListeningPortGoneAndBack) {
  run_scenario({"port_gone", both_policies(), [](redis_server& srv) {
                  ASSERT_EQ(srv.query_unix({"CONFIG", "SET", "port", "0"}).str, "OK");
                  srv.query_unix({"CLIENT", "KILL", "TYPE", "normal"});
                  std::this_thread::sleep_for(fault_lasts);
                  const std::string port = std::to_string(srv.port());
                  ASSERT_EQ(srv.query_unix({"CONFIG", "SET", "port", port}).str, "OK");
                }});
}

// ---------------------------------------------------------------------------
// 10,000 waiters cancelled

struct cancel_counts {
  int cancelled = 0; // completed with operation_aborted
  int admitted = 0;  // completed with a permit (which the handler drops)
  int other = 0;     // anything else
};

// Spawns `n` waiters on `l` (no timeout), each with its own cancellation
// signal; their completions are counted in `c`.
std::vector<std::unique_ptr<asio::cancellation_signal>>
spawn_waiters(asio::io_context& ctx, const limiter& l, int n, cancel_counts& c) {
  std::vector<std::unique_ptr<asio::cancellation_signal>> signals;
  signals.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    signals.push_back(std::make_unique<asio::cancellation_signal>());
    acquire_options o; // no timeout: wait as long as it takes
    asio::co_spawn(
        ctx, l.acquire(o),
        asio::bind_cancellation_slot(signals.back()->slot(), [&c](std::exception_ptr e, permit p) {
          if (!e) {
            ++c.admitted;
            p.release();
            return;
          }
          try {
            std::rethrow_exception(e);
          } catch (const std::system_error& se) {
            ++(se.code() == asio::error::operation_aborted ? c.cancelled : c.other);
          } catch (...) {
            ++c.other;
          }
        }));
  }
  return signals;
}

// ---------------------------------------------------------------------------
// Lost replies and cancelled probes, one call at a time

// Two acquires whose script calls reach a stopped server: one times out, one
// is cancelled by its caller. When the server runs again it executes both
// scripts, and each takes a lease for a caller that has gone. Those leases
// must not keep their slots (they used to, for lease_seconds: 30 s).
TEST(FaultLease, LeasesTakenByCallsWhoseReplyWasLostAreRemoved) {
  redis_server srv({.requirepass = password});
  registry reg;
  reg.configure_store("r", store_for(srv));
  limiter_options o;
  o.store = "r";
  o.max_concurrent = 2;
  o.fail_closed = true;
  reg.configure_limiter("cc", o);
  limiter cc = reg.get_limiter("cc");
  acquire_options fast;
  fast.timeout = seconds_d(0);
  ASSERT_TRUE(run(cc.try_acquire(fast)).allowed); // connected, scripts loaded

  srv.pause();
  EXPECT_THROW(run(cc.try_acquire(fast)), store_error); // times out
  asio::io_context ctx;
  cancel_counts c;
  auto signals = spawn_waiters(ctx, cc, 1, c);
  ctx.run_for(50ms); // written, unanswered
  signals[0]->emit(asio::cancellation_type::terminal);
  ctx.run();
  EXPECT_EQ(c.cancelled, 1);
  srv.resume();

  const std::string key = lease_key("cc");
  const double gone = time_until([&] { return srv.query({"ZCARD", key}).integer == 0; }, 2000ms);
  std::printf("[fault] lost_replies: leases of a timed-out and a cancelled call gone %.0f ms "
              "after the server resumed\n",
              gone);
  EXPECT_GE(gone, 0) << "leases left: " << srv.command({"ZRANGE", key, "0", "-1"});
  std::this_thread::sleep_for(300ms); // a late script would bring one back now
  EXPECT_EQ(srv.query({"ZCARD", key}).integer, 0);
  acquire_result a = run(cc.try_acquire(fast));
  acquire_result b = run(cc.try_acquire(fast));
  EXPECT_TRUE(a.allowed && b.allowed) << "both slots are free";
}

// The breaker lets one probe through after its cool-down. A probe cancelled
// by its caller used to leave the breaker waiting for that probe's verdict
// for good: every later call was refused without asking Redis, forever.
TEST(FaultBreaker, ACancelledProbeDoesNotKeepTheBreakerOpen) {
  redis_server srv({.requirepass = password});
  registry reg;
  reg.configure_store("r", store_for(srv));
  limiter_options o;
  o.store = "r";
  o.max_concurrent = 10;
  o.fail_closed = true;
  reg.configure_limiter("cc", o);
  limiter cc = reg.get_limiter("cc");
  acquire_options fast;
  fast.timeout = seconds_d(0);
  ASSERT_TRUE(run(cc.try_acquire(fast)).allowed);

  srv.pause();
  for (int i = 0; i < 3; ++i)
    EXPECT_THROW(run(cc.try_acquire(fast)), store_error);
  ASSERT_TRUE(cc.get_metrics().circuit_open);
  std::this_thread::sleep_for(150ms); // past the first cool-down (100 ms)
  asio::io_context ctx;
  cancel_counts c;
  auto signals = spawn_waiters(ctx, cc, 1, c); // the probe
  ctx.run_for(50ms);
  signals[0]->emit(asio::cancellation_type::terminal);
  ctx.run();
  EXPECT_EQ(c.cancelled, 1);
  srv.resume();

  const auto t = steady::now();
  bool decided = false;
  while (!decided && ms_since(t) < 3000) {
    try {
      decided = run(cc.try_acquire(fast)).allowed;
    } catch (const store_error&) {
      std::this_thread::sleep_for(10ms);
    }
  }
  std::printf("[fault] cancelled_probe: decided by Redis again %.0f ms after the server resumed\n",
              ms_since(t));
  EXPECT_TRUE(decided) << "the breaker stayed open";
  EXPECT_FALSE(cc.get_metrics().circuit_open);
}

TEST(FaultCancel, TenThousandWaitersOnTheMemoryEngine) {
  registry reg;
  limiter_options o;
  o.max_concurrent = 1;
  reg.configure_limiter("one", o);
  limiter l = reg.get_limiter("one");
  acquire_options fast;
  fast.timeout = seconds_d(0);
  acquire_result holder = run(l.try_acquire(fast));
  ASSERT_TRUE(holder.allowed);

  asio::io_context ctx;
  cancel_counts c;
  auto signals = spawn_waiters(ctx, l, 10000, c);
  ctx.poll(); // every waiter queued
  const auto t = steady::now();
  for (auto& s : signals)
    s->emit(asio::cancellation_type::terminal);
  ctx.run();
  std::printf("[fault] cancel_memory: 10000 waiters cancelled in %.0f ms\n", ms_since(t));
  EXPECT_EQ(c.cancelled, 10000);
  EXPECT_EQ(c.admitted + c.other, 0);
  EXPECT_EQ(l.get_metrics().cancelled, 10000u);
  EXPECT_EQ(l.get_metrics().current_concurrent, 1);
  holder.permit.release();
  EXPECT_EQ(l.get_metrics().current_concurrent, 0);
  EXPECT_EQ(run(l.get_state()).current_concurrent, 0);
  EXPECT_TRUE(run(l.try_acquire(fast)).allowed) << "the slot is free again";
}

// On redis a waiter for a slot polls (a script call every 2 to 50 ms), so at
// any moment thousands of its calls are written and unanswered: cancelling
// must neither leak a lease nor leave the connection out of step.
// `release_first`: the holder's slot is released in the same instant as the
// waiters are cancelled, so that polls already in Redis find the slot free
// and take it for a caller that is gone.
void ten_thousand_cancelled_on_redis(bool release_first) {
  redis_server srv({.requirepass = password});
  registry reg;
  store_options so = store_for(srv);
  so.socket_timeout = seconds_d(10); // 10,000 pollers queue up; none must time out
  reg.configure_store("r", so);
  limiter_options o;
  o.store = "r";
  o.max_concurrent = 1;
  o.fail_closed = true;
  reg.configure_limiter("one", o);
  limiter l = reg.get_limiter("one");
  acquire_options fast;
  fast.timeout = seconds_d(0);
  acquire_result holder = run(l.try_acquire(fast));
  ASSERT_TRUE(holder.allowed);

  auto evalsha_calls = [&] {
    const std::string info = srv.command({"INFO", "commandstats"});
    const auto at = info.find("cmdstat_evalsha:calls=");
    return at == std::string::npos ? 0L : std::stol(info.substr(at + 22));
  };
  asio::io_context ctx;
  cancel_counts c;
  auto signals = spawn_waiters(ctx, l, 10000, c);
  // Run until every waiter has been refused by Redis at least once (and is
  // polling), i.e. 10,000 script calls and then some.
  const long calls_before = evalsha_calls();
  const auto t_spawn = steady::now();
  while (evalsha_calls() - calls_before < 12000 && ms_since(t_spawn) < 20000)
    ctx.run_for(50ms);
  ASSERT_GE(evalsha_calls() - calls_before, 12000) << "the waiters never all polled";
  const double polled_ms = ms_since(t_spawn);
  EXPECT_EQ(c.cancelled + c.admitted + c.other, 0) << "a waiter finished before its cancellation";

  const auto t = steady::now();
  if (release_first)
    holder.permit.release();
  for (auto& s : signals)
    s->emit(asio::cancellation_type::terminal);
  ctx.run();
  const double cancel_ms = ms_since(t);
  if (!release_first)
    holder.permit.release();
  const std::string key = lease_key("one");
  const double gone = time_until([&] { return srv.query({"ZCARD", key}).integer == 0; }, 3000ms);
  std::printf("[fault] cancel_redis%s: 10000 waiters polling after %.0f ms, all cancelled in %.0f "
              "ms (%d cancelled, %d admitted first); leases in Redis 0 after %.0f ms\n",
              release_first ? "_racing_release" : "", polled_ms, cancel_ms, c.cancelled, c.admitted,
              gone);
  EXPECT_EQ(c.other, 0);
  EXPECT_EQ(c.cancelled + c.admitted, 10000);
  if (!release_first) {
    EXPECT_EQ(c.cancelled, 10000);
  }
  const limiter_metrics m = l.get_metrics();
  EXPECT_EQ(m.cancelled, static_cast<std::uint64_t>(c.cancelled));
  EXPECT_EQ(m.store_errors, 0u);
  EXPECT_EQ(m.current_concurrent, 0);
  EXPECT_GE(gone, 0) << "leases left in Redis: " << srv.command({"ZRANGE", key, "0", "-1"});
  EXPECT_EQ(run(l.get_state()).current_concurrent, 0);
  // The slot is free, the connections are in step: one caller gets it.
  acquire_result again = run(l.try_acquire(fast));
  EXPECT_TRUE(again.allowed);
  EXPECT_FALSE(run(l.try_acquire(fast)).allowed);
}

TEST(FaultCancel, TenThousandWaitersOnRedisLeaveNoLease) {
  ten_thousand_cancelled_on_redis(false);
}

TEST(FaultCancel, TenThousandWaitersCancelledAsTheSlotFreesLeaveNoLease) {
  ten_thousand_cancelled_on_redis(true);
}

} // namespace

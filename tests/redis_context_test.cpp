// A redis store on the caller's io_context (store_options::io_context): it
// starts no thread, decides only while that context runs, and goes without
// losing what was in flight whether it is dropped on the context's thread,
// from another thread while the context runs, or while nobody runs it; it
// goes at once after the context stopped, and answers store_error once the
// context was destroyed before it.
// Against a private redis-server per test (tests/redis_server.hpp).
// (g++ 12: no braced temporary inside a co_await expression.)
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <chrono>
#include <fstream>
#include <future>
#include <gtest/gtest.h>
#include <memory>
#include <string>
#include <thread>

#include "ratesync/ratesync.hpp"
#include "redis_server.hpp"
#include "test_support.hpp"

namespace {

using namespace ratesync;
using namespace ratesync::test;

// The process's thread count (/proc/self/status, "Threads:").
int threads_now() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("Threads:", 0) == 0)
      return std::stoi(line.substr(8));
  throw std::runtime_error("no Threads: line in /proc/self/status");
}

store_options on_context(const redis_server& srv, const std::string& prefix,
                         asio::io_context* ctx) {
  store_options s;
  s.engine = "redis";
  s.url = srv.url();
  s.key_prefix = prefix;
  s.io_context = ctx;
  return s;
}

limiter_options slots(std::int64_t n) {
  limiter_options o;
  o.store = "r";
  o.max_concurrent = n;
  return o;
}

acquire_options fail_fast() {
  acquire_options o;
  o.timeout = seconds_d(0);
  return o;
}

long long zcard(redis_server& srv, const std::string& key) {
  return srv.query({"ZCARD", key}).integer;
}

// Runs `ctx` on a thread of its own; the future is ready once run() returned.
std::future<void> run_on_thread(asio::io_context& ctx) {
  return std::async(std::launch::async, [&ctx] { ctx.run(); });
}

TEST(RedisContext, TheStoreStartsNoThreadAndDecidesOnlyWhileTheContextRuns) {
  redis_server srv;
  // ThreadSanitizer starts a thread of its own with the first one created.
  std::thread([] {}).join();
  {
    // The count can tell: a store of its own adds its thread.
    const int before = threads_now();
    registry own;
    own.configure_store("r", on_context(srv, "ownthread", nullptr));
    EXPECT_EQ(threads_now(), before + 1);
  }
  asio::io_context io;
  const int before = threads_now();
  auto reg = std::make_unique<registry>();
  reg->configure_store("r", on_context(srv, "ctx", &io));
  limiter_options o = slots(100);
  o.rate_per_second = 1; // one a second
  o.burst = 5;
  reg->configure_limiter("api", o);
  EXPECT_EQ(threads_now(), before);
  limiter api = reg->get_limiter("api");
  ASSERT_TRUE(api.io_executor() == asio::any_io_executor(io.get_executor()));

  // A caller on another thread's context: nothing is decided while nobody
  // runs the store's.
  std::future<acquire_result> first =
      std::async(std::launch::async, [&] { return run(api.try_acquire(fail_fast())); });
  EXPECT_EQ(first.wait_for(300ms), std::future_status::timeout);
  auto t0 = steady::now();
  while (first.wait_for(0s) != std::future_status::ready && steady::now() - t0 < 5s)
    io.run_for(10ms);
  ASSERT_EQ(first.wait_for(0s), std::future_status::ready);
  EXPECT_TRUE(first.get().allowed);

  // Callers on the store's context.
  int admitted = 1;
  std::chrono::microseconds retry_after{0};
  bool done = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        for (int i = 0; i < 8; ++i) {
          acquire_result r = co_await api.try_acquire(fail_fast());
          if (r.allowed)
            ++admitted;
          else
            retry_after = r.retry_after;
        }
        done = true;
        reg.reset(); // the registry's reference; `api` still holds the store
      },
      asio::detached);
  t0 = steady::now();
  while (!done && steady::now() - t0 < 5s)
    io.run_for(10ms);
  ASSERT_TRUE(done);
  EXPECT_EQ(admitted, 5); // the burst, and no more
  EXPECT_GT(retry_after, 500ms);
  EXPECT_LE(retry_after, 1000ms);
  EXPECT_EQ(api.get_metrics().store_errors, 0u);
  EXPECT_EQ(threads_now(), before);
}

// The last reference goes on the context's own thread, right after a
// release: the release (unsent then) reaches Redis, and the context's run()
// returns by itself once the store has stopped (nothing of it is left).
TEST(RedisContext, DroppedOnTheContextsThreadItSendsWhatWasInFlightAndLetsRunReturn) {
  redis_server srv;
  asio::io_context io;
  auto reg = std::make_unique<registry>();
  reg->configure_store("r", on_context(srv, "onthread", &io));
  reg->configure_limiter("cc", slots(2));
  bool released = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        limiter l = reg->get_limiter("cc");
        permit p = co_await l.acquire();
        p.release(); // a ZREM queued, not yet written
        released = true;
        l = limiter(nullptr);
        reg.reset(); // the last reference: the store goes here, on this thread
      },
      asio::detached);
  std::future<void> ran = run_on_thread(io);
  ASSERT_EQ(ran.wait_for(5s), std::future_status::ready) << "run() kept running after the store";
  ran.get();
  EXPECT_TRUE(released);
  EXPECT_EQ(zcard(srv, "onthread:{cc}:cc"), 0) << "the release was lost";
}

// Dropped from another thread while the context runs, the server paused
// with the release's ZREM written: the destructor returns at once (it never
// waits for a context the caller runs), and the store finishes on the
// context: its run() returns only once the reply came, after the resume.
TEST(RedisContext, DroppedFromAnotherThreadItFinishesOnTheContext) {
  redis_server srv;
  asio::io_context io;
  auto reg = std::make_unique<registry>();
  reg->configure_store("r", on_context(srv, "offthread", &io));
  reg->configure_limiter("cc", slots(2));
  std::future<void> ran = run_on_thread(io);
  {
    limiter l = reg->get_limiter("cc");
    acquire_result a = run(l.try_acquire(fail_fast())); // from this thread's own context
    ASSERT_TRUE(a.allowed);
    EXPECT_EQ(zcard(srv, "offthread:{cc}:cc"), 1);
    srv.pause();
    a.permit.release(); // its ZREM is written, and answered on resume
  }
  std::this_thread::sleep_for(50ms);
  const auto t0 = steady::now();
  reg.reset();
  EXPECT_LT(ms_since(t0), 100.0) << "the destructor waited";
  EXPECT_EQ(ran.wait_for(300ms), std::future_status::timeout) << "stopped before the reply";
  srv.resume();
  ASSERT_EQ(ran.wait_for(5s), std::future_status::ready) << "run() kept running after the store";
  ran.get();
  EXPECT_EQ(zcard(srv, "offthread:{cc}:cc"), 0) << "the release was lost";
}

// Dropped while nobody runs the context (between two run()s): the
// destructor does not wait (it used to, for socket_timeout), and the
// release queued meanwhile goes out when the context runs again; then run()
// returns by itself. Without the drain the connections' stop, queued behind
// the release, fails its ZREM before it is written.
TEST(RedisContext, DroppedWhileNobodyRunsTheContextItFinishesWhenItRunsAgain) {
  redis_server srv;
  asio::io_context io;
  auto reg = std::make_unique<registry>();
  reg->configure_store("r", on_context(srv, "idle", &io));
  reg->configure_limiter("cc", slots(2));
  std::future<void> ran = run_on_thread(io);
  acquire_result a = run(reg->get_limiter("cc").try_acquire(fail_fast()));
  ASSERT_TRUE(a.allowed);
  io.stop();
  ASSERT_EQ(ran.wait_for(5s), std::future_status::ready);
  ran.get();
  io.restart(); // not stopped, but nobody runs it
  a.permit.release();
  const auto t0 = steady::now();
  reg.reset();
  EXPECT_LT(ms_since(t0), 100.0) << "the destructor waited for a context nobody runs";
  EXPECT_EQ(zcard(srv, "idle:{cc}:cc"), 1);
  ran = run_on_thread(io);
  ASSERT_EQ(ran.wait_for(5s), std::future_status::ready) << "run() kept running after the store";
  ran.get();
  EXPECT_EQ(zcard(srv, "idle:{cc}:cc"), 0) << "the release was lost";
}

// Dropped after the context was stopped, which is then destroyed: the
// destructor returns at once, and what the store left queued there goes
// with the context. The held lease stays until it expires (lease_seconds),
// as when the process dies.
TEST(RedisContext, DroppedAfterTheContextStoppedReturnsAtOnce) {
  redis_server srv;
  auto io = std::make_unique<asio::io_context>();
  auto reg = std::make_unique<registry>();
  reg->configure_store("r", on_context(srv, "stopped", io.get()));
  reg->configure_limiter("cc", slots(2));
  std::future<void> ran = run_on_thread(*io);
  acquire_result a = run(reg->get_limiter("cc").try_acquire(fail_fast()));
  ASSERT_TRUE(a.allowed);
  io->stop();
  ASSERT_EQ(ran.wait_for(5s), std::future_status::ready);
  ran.get();
  a.permit.release();
  const auto t0 = steady::now();
  reg.reset();
  EXPECT_LT(ms_since(t0), 1000.0);
  io.reset(); // then the context: what the store left queued goes with it
  EXPECT_EQ(zcard(srv, "stopped:{cc}:cc"), 1);
}

// The context destroyed before the store (as a context of main's is before
// the default registry, which lives until exit): the store lets go of its
// connections as the context goes, and every later call is answered with a
// store_error that says why, fail-open calls admitted and counted. Without
// that the store's destructor touched the freed context (ASan).
TEST(RedisContext, AContextDestroyedBeforeItsStoreLeavesAStoreThatSaysSo) {
  redis_server srv;
  auto io = std::make_unique<asio::io_context>();
  registry reg;
  reg.configure_store("r", on_context(srv, "gone", io.get()));
  limiter_options closed = slots(2);
  closed.fail_closed = true;
  reg.configure_limiter("closed", closed);
  reg.configure_limiter("open", slots(2));
  std::future<void> ran = run_on_thread(*io);
  acquire_result held = run(reg.get_limiter("open").try_acquire(fail_fast()));
  ASSERT_TRUE(held.allowed);
  io->stop();
  ASSERT_EQ(ran.wait_for(5s), std::future_status::ready);
  ran.get();
  io.reset();
  held.permit.release(); // nothing can send it
  try {
    (void)run(reg.get_limiter("closed").try_acquire(fail_fast()));
    ADD_FAILURE() << "no store_error";
  } catch (const store_error& e) {
    EXPECT_NE(std::string(e.what()).find("io_context"), std::string::npos) << e.what();
  }
  const limiter open = reg.get_limiter("open");
  EXPECT_TRUE(run(open.try_acquire(fail_fast())).allowed);
  EXPECT_EQ(open.get_metrics().store_errors, 1u);
  EXPECT_EQ(zcard(srv, "gone:{open}:cc"), 1); // the held lease, until lease_seconds
} // the registry and its store go after the context

// registry::set_io_context: the redis stores of a TOML file (which cannot
// name a context) run on it; a store configured after it is unset has its
// own thread again.
TEST(RedisContext, ARegistrysIoContextCarriesTheRedisStoresOfAFile) {
  redis_server srv;
  std::thread([] {}).join(); // ThreadSanitizer's own thread, before the count
  asio::io_context io;
  registry reg;
  reg.set_io_context(&io);
  const int before = threads_now();
  reg.load_config_string("[stores.r]\nengine = \"redis\"\nurl = \"" + srv.url() +
                             "\"\nkey_prefix = \"toml\"\n\n[limiters.api]\nstore = \"r\"\n"
                             "rate_per_second = 1\nburst = 3\n",
                         "test.toml");
  EXPECT_EQ(threads_now(), before);
  const limiter api = reg.get_limiter("api");
  ASSERT_TRUE(api.io_executor() == asio::any_io_executor(io.get_executor()));
  int admitted = 0;
  bool done = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        for (int i = 0; i < 5; ++i)
          if ((co_await api.try_acquire(fail_fast())).allowed)
            ++admitted;
        done = true;
      },
      asio::detached);
  const auto t0 = steady::now();
  while (!done && steady::now() - t0 < 5s)
    io.run_for(10ms);
  ASSERT_TRUE(done);
  EXPECT_EQ(admitted, 3);
  EXPECT_EQ(api.get_metrics().store_errors, 0u);

  reg.set_io_context(nullptr);
  const int now = threads_now();
  reg.configure_store("own", on_context(srv, "own", nullptr));
  EXPECT_EQ(threads_now(), now + 1);
} // the registry goes first (nobody runs the context), then the context

TEST(RedisContext, AMemoryStoreRefusesAnIoContext) {
  asio::io_context io;
  registry reg;
  store_options m;
  m.io_context = &io;
  try {
    reg.configure_store("m", m);
    FAIL() << "accepted";
  } catch (const config_error& e) {
    EXPECT_NE(std::string(e.what()).find("stores.m.io_context"), std::string::npos) << e.what();
  }
}

} // namespace

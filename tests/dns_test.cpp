// A redis store whose URL names a host: the name is looked up on a thread of
// its own, which neither the connect timeout nor a shutdown waits for. (Asio's
// resolver, used before, runs getaddrinfo on a thread of the io_context that
// nothing interrupts: a stop, a connect timeout and the destruction of the
// io_context all waited for the system resolver's own timeouts.)
//
// The system resolver is made slow for one name, "slow-dns.invalid", by a
// getaddrinfo of this executable's own, which sleeps 3 s and then fails as an
// unreachable name server does (EAI_AGAIN), and late for another,
// "late-dns.invalid", which it answers as 127.0.0.1 after 0.7 s; every other
// name goes to the real one: "localhost" is looked up for real and reaches a
// private redis-server.
// (An executable's own definition of a libc function is the one the library
// calls; the sanitizer runtimes, where the stages use them, come after it.)
#include <array>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <atomic>
#include <chrono>
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <mutex>
#include <netdb.h>
#include <pthread.h>
#include <string>
#include <string_view>
#include <thread>

#include "ratesync/ratesync.hpp"
#include "redis_server.hpp"
#include "test_support.hpp"

namespace {

constexpr std::string_view slow_name = "slow-dns.invalid";
constexpr auto slow_for = std::chrono::seconds(3);
std::atomic<int> slow_lookups{0}; // NOLINT(cppcoreguidelines-avoid-non-const-global-variables)
// Answered, as 127.0.0.1, after late_for: longer than the tests' connect timeout.
constexpr std::string_view late_name = "late-dns.invalid";
constexpr auto late_for = std::chrono::milliseconds(700);
std::atomic<int> late_lookups{0}; // NOLINT(cppcoreguidelines-avoid-non-const-global-variables)
// The name of the thread that looked up late_name last (ratesync names it).
std::mutex late_thread_mutex; // NOLINT(cppcoreguidelines-avoid-non-const-global-variables)
std::string late_thread_name; // NOLINT(cppcoreguidelines-avoid-non-const-global-variables)

} // namespace

extern "C" int getaddrinfo(const char* node, const char* service, const addrinfo* hints,
                           addrinfo** res) {
  using real_t = int (*)(const char*, const char*, const addrinfo*, addrinfo**);
  static const auto real = reinterpret_cast<real_t>(dlsym(RTLD_NEXT, "getaddrinfo"));
  if (node != nullptr && std::string_view(node) == slow_name) {
    slow_lookups.fetch_add(1);
    std::this_thread::sleep_for(slow_for);
    return EAI_AGAIN;
  }
  if (node != nullptr && std::string_view(node) == late_name) {
    late_lookups.fetch_add(1);
    {
      std::array<char, 16> name{};
      pthread_getname_np(pthread_self(), name.data(), name.size());
      const std::lock_guard lk(late_thread_mutex);
      late_thread_name = name.data();
    }
    std::this_thread::sleep_for(late_for);
    return real("127.0.0.1", service, hints, res);
  }
  return real(node, service, hints, res);
}

namespace {

using namespace std::chrono_literals;
using namespace ratesync;
using namespace ratesync::test;
using steady = std::chrono::steady_clock;

store_options store_at(const std::string& url, asio::io_context* ctx = nullptr) {
  store_options s;
  s.engine = "redis";
  s.url = url;
  s.key_prefix = "dns";
  s.pool_min_size = 1;
  s.socket_connect_timeout = seconds_d(0.3);
  s.socket_timeout = seconds_d(5);
  s.io_context = ctx;
  return s;
}

limiter_options slots(std::int64_t n) {
  limiter_options o;
  o.store = "r";
  o.max_concurrent = n;
  o.fail_closed = true;
  return o;
}

acquire_result try_now(const limiter& l) {
  acquire_options o;
  o.timeout = seconds_d(0);
  return run(l.try_acquire(o));
}

void wait_for_a_slow_lookup(int before) {
  const auto until = steady::now() + 2s;
  while (slow_lookups.load() == before && steady::now() < until)
    std::this_thread::sleep_for(1ms);
  ASSERT_GT(slow_lookups.load(), before) << "the store never looked " << slow_name << " up";
}

double seconds_since(steady::time_point t0) {
  return std::chrono::duration<double>(steady::now() - t0).count();
}

TEST(Dns, AHostNameIsLookedUpAndReachesTheServer) {
  redis_server srv;
  registry reg;
  reg.configure_store("r", store_at("redis://localhost:" + std::to_string(srv.port())));
  reg.configure_limiter("cc", slots(1));
  limiter l = reg.get_limiter("cc");
  const acquire_result a = try_now(l);
  EXPECT_TRUE(a.allowed);
  EXPECT_EQ(srv.query({"ZCARD", "dns:{cc}:cc"}).integer, 1) << "the lease is not in this server";
  EXPECT_FALSE(try_now(l).allowed) << "the one slot is held";
}

TEST(Dns, TheConnectTimeoutCoversASlowLookup) {
  registry reg;
  reg.configure_store("r", store_at("redis://" + std::string(slow_name) + ":6379"));
  reg.configure_limiter("cc", slots(1));
  limiter l = reg.get_limiter("cc");
  const auto t0 = steady::now();
  try {
    (void)try_now(l);
    ADD_FAILURE() << "decided with no server";
  } catch (const store_error& e) {
    EXPECT_NE(std::string(e.what()).find("could not connect to the Redis server in time (looking "
                                         "up \"slow-dns.invalid\" took longer than "
                                         "socket_connect_timeout (300 ms))"),
              std::string::npos)
        << e.what();
  }
  // socket_connect_timeout is 0.3 s; the lookup would take 3 s.
  EXPECT_LT(seconds_since(t0), 1.5);
}

// A name server slower than socket_connect_timeout (0.7 s against 0.3 s):
// the attempts that give up on the lookup leave it under way, and the first
// one after its answer takes it up and connects. Each attempt used to start
// a lookup of its own and give up on it in turn: the store never connected,
// and a thread was started per attempt.
TEST(Dns, ALookupSlowerThanTheConnectTimeoutStillConnects) {
  redis_server srv;
  const int before = late_lookups.load();
  registry reg;
  reg.configure_store(
      "r", store_at("redis://" + std::string(late_name) + ":" + std::to_string(srv.port())));
  reg.configure_limiter("cc", slots(1));
  limiter l = reg.get_limiter("cc");
  const auto t0 = steady::now();
  acquire_result held;
  std::string last;
  while (!held.allowed && seconds_since(t0) < 5) {
    try {
      held = try_now(l);
    } catch (const store_error& e) { // the attempts before the answer time out
      last = e.what();
    }
  }
  ASSERT_TRUE(held.allowed) << "never connected; last error: " << last;
  EXPECT_EQ(srv.query({"ZCARD", "dns:{cc}:cc"}).integer, 1) << "the lease is not in this server";
  EXPECT_LT(seconds_since(t0), 2.0);
  EXPECT_EQ(late_lookups.load() - before, 1) << "one lookup, taken up by the next attempt";
  const std::lock_guard lk(late_thread_mutex);
  EXPECT_EQ(late_thread_name, "rs-dns") << "the lookup's thread is named";
}

TEST(Dns, AStoreOnItsOwnThreadIsDroppedWithoutWaitingForALookup) {
  const int before = slow_lookups.load();
  auto reg = std::make_unique<registry>();
  store_options s = store_at("redis://" + std::string(slow_name) + ":6379");
  s.socket_connect_timeout = seconds_d(10); // the lookup is under way when the store goes
  reg->configure_store("r", s);
  reg->configure_limiter("cc", slots(1));
  (void)reg->get_limiter("cc");
  wait_for_a_slow_lookup(before);
  const auto t0 = steady::now();
  reg.reset();
  EXPECT_LT(seconds_since(t0), 1.0) << "the store's destruction waited for the lookup";
}

TEST(Dns, AStoreOnTheCallersContextLetsRunReturnDuringALookup) {
  const int before = slow_lookups.load();
  asio::io_context io;
  auto reg = std::make_unique<registry>();
  store_options s = store_at("redis://" + std::string(slow_name) + ":6379", &io);
  s.socket_connect_timeout = seconds_d(10);
  reg->configure_store("r", s);
  reg->configure_limiter("cc", slots(1));
  (void)reg->get_limiter("cc");
  std::thread runner([&] { io.run(); });
  wait_for_a_slow_lookup(before);
  const auto t0 = steady::now();
  asio::post(io, [&] { reg.reset(); }); // dropped on the context's thread
  runner.join();                        // run() returns once the store has finished
  EXPECT_LT(seconds_since(t0), 1.0) << "run() waited for the lookup";
}

} // namespace

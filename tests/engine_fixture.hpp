// Runs one test source against either engine: built plainly it uses the
// memory engine; built with RATESYNC_TEST_REDIS every limiter the tests
// configure lives on a redis store backed by a test-started redis-server.
#pragma once

#include <atomic>
#include <string>

#include "ratesync/ratesync.hpp"
#ifdef RATESYNC_TEST_REDIS
#include "redis_server.hpp"
#endif

namespace ratesync::test {

constexpr bool on_redis =
#ifdef RATESYNC_TEST_REDIS
    true;
#else
    false;
#endif

class test_registry : public registry {
public:
  test_registry() {
#ifdef RATESYNC_TEST_REDIS
    static redis_server server; // one per test process, stopped at exit
    static std::atomic<int> n{0};
    store_options s;
    s.engine = "redis";
    s.url = server.url();
    s.key_prefix = "test" + std::to_string(n++); // each registry its own keys
    s.timing_margin_ms = 0;
    registry::configure_store("redis", s);
#endif
  }

  // Limiters land on the engine under test unless a test names a store.
  void configure_limiter(const std::string& name, limiter_options o) {
    if (o.store.empty() && on_redis)
      o.store = "redis";
    registry::configure_limiter(name, std::move(o));
  }
  using registry::configure_store;
};

} // namespace ratesync::test

// config_fuzz's stand-in for src/redis/redis_engine.cpp. The real make_engine
// starts a thread and connects at once, which a fuzzer running thousands of
// configurations a second cannot afford (and a fuzzed host name would send it
// to DNS). This one does what the real one does before any I/O (parse the
// URL, convert the timeouts and the margin as transport_options() and the
// redis_store constructor do, so that UBSan sees a value that does not fit)
// and returns a memory engine. Keep the conversions in step with
// redis_engine.cpp.
#include <chrono>
#include <cmath>
#include <cstdint>

#include "ratesync/memory/memory_engine.hpp"
#include "redis/redis_engine.hpp"
#include "redis/url.hpp"

namespace ratesync::redis {

namespace {

// Keeps a value alive so that the conversion computing it is not optimised out.
template <class T> void keep(T value) {
  volatile T sink = value;
  (void)sink;
}

} // namespace

std::shared_ptr<engine> make_engine(const std::string& store_name, const store_options& o) {
  (void)store_name;
  endpoint where = parse_url(o.url); // std::invalid_argument, as in the real one
  if (o.db)
    where.db = *o.db;
  keep(where.db);
  using std::chrono::duration_cast;
  using std::chrono::nanoseconds;
  keep(duration_cast<nanoseconds>(o.socket_connect_timeout).count());
  keep(duration_cast<nanoseconds>(o.socket_timeout).count());
  keep(duration_cast<nanoseconds>(o.health_check_interval).count());
  keep(static_cast<std::int64_t>(std::ceil(o.timing_margin_ms * 1000.0)));
  return memory::make_engine();
}

} // namespace ratesync::redis

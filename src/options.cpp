// Checks of store and limiter options, shared by TOML files and code.
#include "ratesync/options.hpp"

#include <fstream>
#include <utility>

#include "redis/url.hpp"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include <fmt/format.h>

#include "ratesync/errors.hpp"

namespace ratesync {

const char* to_string(algorithm a) noexcept {
  switch (a) {
  case algorithm::token_bucket:
    return "token_bucket";
  case algorithm::sliding_window:
    return "sliding_window";
  }
  return "unknown";
}

namespace {

// Largest rate, window, limit and refill time we accept: beyond it integer
// microsecond arithmetic in the engines would lose precision or overflow.
constexpr double max_magnitude = 1e9;
// A sliding window logs every admission it holds (an entry in memory, a zset
// member on Redis), one per call whatever its cost: as every call costs at
// least 1, the limit bounds that log, and so its memory.
constexpr std::int64_t max_limit = 1'000'000;
// Longest socket timeout, health-check interval and lease, in seconds, and
// largest timing margin, in ms: beyond them a duration in integer nanoseconds
// (or microseconds) would overflow, and a margin turned negative on x86.
constexpr double max_seconds = 1e6;
constexpr double max_margin_ms = 1e6;
// Shortest lease: the store renews a lease a third of the way through, on a
// 50 ms tick; a shorter lease could expire while its holder lives, and
// max_concurrent would silently stop holding.
constexpr double min_lease_seconds = 0.1;
// Most connections one store may open: the pool opens pool_min_size at once.
constexpr std::int64_t max_pool_size = 1000;

// Store defaults, to tell options a memory store would silently ignore.
const store_options default_store{};

// Throws config_error for an option of one store or limiter, configured from
// code (no source position).
class checker {
public:
  checker(const char* section, const std::string& name)
      : prefix_(fmt::format("{}.{}", section, name)) {}

  [[noreturn]] void fail(const char* option, const std::string& message) const {
    throw config_error("", 0, 0, *option ? fmt::format("{}.{}", prefix_, option) : prefix_,
                       message);
  }

  // A finite number strictly above `low` (when `open`) or at least `low`.
  void finite_at_least(const char* option, double v, double low, bool open) const {
    if (!std::isfinite(v))
      fail(option, fmt::format("must be a finite number (got {})", v));
    if (open ? !(v > low) : !(v >= low))
      fail(option, fmt::format("must be {} {} (got {})", open ? ">" : ">=", low, v));
  }

  void at_most(const char* option, double v, double high) const {
    if (v > high)
      fail(option, fmt::format("must be <= {} (got {})", high, v));
  }

  void int_at_least(const char* option, std::int64_t v, std::int64_t low) const {
    if (v < low)
      fail(option, fmt::format("must be >= {} (got {})", low, v));
  }

private:
  std::string prefix_;
};

// TLS options given where no TLS is used are errors, not ignored.
void check_no_tls(const checker& c, const store_options& o, const char* why) {
  if (!o.tls_ca_file.empty())
    c.fail("tls_ca_file", why);
  if (!o.tls_cert_file.empty())
    c.fail("tls_cert_file", why);
  if (!o.tls_key_file.empty())
    c.fail("tls_key_file", why);
  if (!o.tls_server_name.empty())
    c.fail("tls_server_name", why);
  if (o.tls_insecure_skip_verify)
    c.fail("tls_insecure_skip_verify", why);
}

} // namespace

void validate(const std::string& name, const store_options& o) {
  if (name.empty())
    throw config_error("", 0, 0, "stores", "store name must not be empty");
  checker c("stores", name);

  if (o.engine == "memory") {
    // Every redis option is rejected rather than silently ignored. Options
    // with defaults can only be told apart from "unset" when they differ.
    const char* const redis_only = "applies to the redis engine only (engine is \"memory\")";
    if (!o.url.empty())
      c.fail("url", redis_only);
    if (o.db)
      c.fail("db", redis_only);
    if (o.password)
      c.fail("password", redis_only);
    if (o.key_prefix != default_store.key_prefix)
      c.fail("key_prefix", redis_only);
    if (o.pool_min_size != default_store.pool_min_size)
      c.fail("pool_min_size", redis_only);
    if (o.pool_max_size != default_store.pool_max_size)
      c.fail("pool_max_size", redis_only);
    if (o.timing_margin_ms != default_store.timing_margin_ms)
      c.fail("timing_margin_ms", redis_only);
    if (o.socket_timeout != default_store.socket_timeout)
      c.fail("socket_timeout", redis_only);
    if (o.socket_connect_timeout != default_store.socket_connect_timeout)
      c.fail("socket_connect_timeout", redis_only);
    if (o.health_check_interval != default_store.health_check_interval)
      c.fail("health_check_interval", redis_only);
    if (o.io_context != nullptr)
      c.fail("io_context", "applies to the redis engine only (a memory store does no I/O)");
    check_no_tls(c, o, redis_only);
    return;
  }
  if (o.engine != "redis")
    c.fail("engine", fmt::format("must be \"memory\" or \"redis\" (got \"{}\")", o.engine));

  if (o.url.empty())
    c.fail("url", "is required for the redis engine (e.g. \"redis://localhost:6379/0\")");
  redis::endpoint where;
  try {
    where = redis::parse_url(o.url);
  } catch (const std::invalid_argument& e) {
    c.fail("url", e.what()); // the message shows the URL redacted
  }
  // A longer name could never be resolved (DNS names have at most 253
  // bytes); refused here rather than failing every connect.
  if (where.kind != redis::transport_kind::unix_socket && where.host.size() > 253)
    c.fail("url", fmt::format("the host name is {} bytes long; a DNS name has at most 253",
                              where.host.size()));
  if (where.kind == redis::transport_kind::tls) {
    for (auto [option, path] :
         {std::pair{"tls_ca_file", &o.tls_ca_file}, std::pair{"tls_cert_file", &o.tls_cert_file},
          std::pair{"tls_key_file", &o.tls_key_file}})
      if (!path->empty() && !std::ifstream(*path))
        c.fail(option, fmt::format("cannot read \"{}\"", *path));
    if (o.tls_cert_file.empty() != o.tls_key_file.empty())
      c.fail(o.tls_cert_file.empty() ? "tls_cert_file" : "tls_key_file",
             "a client certificate needs both tls_cert_file and tls_key_file");
  } else {
    check_no_tls(c, o, "applies to rediss:// URLs only");
  }
  c.finite_at_least("health_check_interval", o.health_check_interval.count(), 0.0, false);
  c.at_most("health_check_interval", o.health_check_interval.count(), max_seconds);
  if (o.db && (*o.db < 0 || *o.db > std::numeric_limits<std::int32_t>::max()))
    c.fail("db", fmt::format("must be between 0 and {} (got {})",
                             std::numeric_limits<std::int32_t>::max(), *o.db));
  if (o.key_prefix.empty())
    c.fail("key_prefix", "must not be empty");
  if (o.key_prefix.find_first_of("{}") != std::string::npos)
    c.fail("key_prefix", "must not contain '{' or '}' (they would break the keys' hash tag)");
  c.int_at_least("pool_min_size", o.pool_min_size, 0);
  c.int_at_least("pool_max_size", o.pool_max_size, 1);
  if (o.pool_max_size > max_pool_size)
    c.fail("pool_max_size", fmt::format("must be <= {} (got {})", max_pool_size, o.pool_max_size));
  if (o.pool_max_size < o.pool_min_size)
    c.fail("pool_max_size", fmt::format("must be >= pool_min_size (got {}, pool_min_size is {})",
                                        o.pool_max_size, o.pool_min_size));
  c.finite_at_least("timing_margin_ms", o.timing_margin_ms, 0.0, false);
  c.at_most("timing_margin_ms", o.timing_margin_ms, max_margin_ms);
  c.finite_at_least("socket_timeout", o.socket_timeout.count(), 0.0, true);
  c.at_most("socket_timeout", o.socket_timeout.count(), max_seconds);
  c.finite_at_least("socket_connect_timeout", o.socket_connect_timeout.count(), 0.0, true);
  c.at_most("socket_connect_timeout", o.socket_connect_timeout.count(), max_seconds);
}

void validate(const std::string& name, const limiter_options& o) {
  if (name.empty())
    throw config_error("", 0, 0, "limiters", "limiter name must not be empty");
  checker c("limiters", name);

  // Each value on its own.
  if (o.rate_per_second) {
    c.finite_at_least("rate_per_second", *o.rate_per_second, 0.0, true);
    c.at_most("rate_per_second", *o.rate_per_second, max_magnitude);
  }
  if (o.burst)
    c.int_at_least("burst", *o.burst, 1);
  if (o.limit) {
    c.int_at_least("limit", *o.limit, 1);
    if (*o.limit > max_limit)
      c.fail("limit", fmt::format("must be <= {} (got {}): a sliding window logs each admission "
                                  "it holds",
                                  max_limit, *o.limit));
  }
  if (o.window_seconds) {
    c.finite_at_least("window_seconds", *o.window_seconds, 0.0, true);
    c.at_most("window_seconds", *o.window_seconds, max_magnitude);
  }
  if (o.max_concurrent)
    c.int_at_least("max_concurrent", *o.max_concurrent, 1);
  if (o.lease_seconds) {
    if (!o.max_concurrent)
      c.fail("lease_seconds", "applies to limiters with max_concurrent only");
    c.finite_at_least("lease_seconds", *o.lease_seconds, min_lease_seconds, false);
    c.at_most("lease_seconds", *o.lease_seconds, max_seconds);
  }
  if (o.timeout)
    c.finite_at_least("timeout", o.timeout->count(), 0.0, false);

  // Options against the algorithm.
  if (o.algo == algorithm::token_bucket) {
    const char* const window_only =
        "applies to algorithm \"sliding_window\" only; set algorithm = \"sliding_window\"";
    if (o.limit)
      c.fail("limit", window_only);
    if (o.window_seconds)
      c.fail("window_seconds", window_only);
    if (o.burst && !o.rate_per_second)
      c.fail("burst", "requires rate_per_second");
    if (o.rate_per_second) {
      double burst = o.burst ? static_cast<double>(*o.burst) : 1.0;
      double refill = burst / *o.rate_per_second;
      if (refill > max_magnitude)
        c.fail(o.burst ? "burst" : "rate_per_second",
               fmt::format("burst / rate_per_second must be <= {} seconds (got {})", max_magnitude,
                           refill));
    }
    if (!o.rate_per_second && !o.max_concurrent)
      c.fail("", "nothing to limit: set rate_per_second, limit and window_seconds (with "
                 "algorithm = \"sliding_window\"), or max_concurrent");
  } else {
    const char* const bucket_only =
        "applies to algorithm \"token_bucket\" only (this limiter's algorithm is "
        "\"sliding_window\")";
    if (o.rate_per_second)
      c.fail("rate_per_second", bucket_only);
    if (o.burst)
      c.fail("burst", bucket_only);
    const char* const required = "is required with algorithm = \"sliding_window\"";
    if (!o.limit)
      c.fail("limit", required);
    if (!o.window_seconds)
      c.fail("window_seconds", required);
  }
}

} // namespace ratesync

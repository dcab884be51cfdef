// The options of stores and limiters, as configure_store / configure_limiter
// take them and as [stores.NAME] / [limiters.NAME] in TOML spell them.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace asio {
class io_context;
}

namespace ratesync {

// Seconds as a floating-point count; any std::chrono duration converts to it.
using seconds_d = std::chrono::duration<double>;

// [stores.NAME]: where limiter state lives.
struct store_options {
  // "memory" (in-process, the default) or "redis". TOML accepts `engine` or its
  // synonym `strategy`.
  std::string engine = "memory";

  // --- redis engine (rejected on a memory store) ---
  std::string url;                     // redis://, rediss:// or unix://; required for redis
  std::optional<std::int64_t> db;      // overrides the URL's database
  std::optional<std::string> password; // overrides the URL's password
  std::string key_prefix = "rate_limit";
  std::int64_t pool_min_size = 2;
  std::int64_t pool_max_size = 10;
  double timing_margin_ms = 10.0; // only ever lengthens waits and TTLs
  seconds_d socket_timeout{5.0};
  seconds_d socket_connect_timeout{5.0};
  // An idle connection is probed with PING this often (0: never).
  seconds_d health_check_interval{1.0};
  // Code only (TOML has no spelling for it). Null: the store runs its
  // connections on an I/O thread of its own, and every decision of a caller
  // on another thread crosses to it and back. Set: on this io_context, and
  // the store starts no thread; callers on it decide without a thread
  // hand-off (docs/engines/redis.md, "The store's io_context"). The context
  // must be run by one thread at a time, and should outlive the store (a
  // store whose context is destroyed first answers every call with
  // store_error); while the store lives its connections keep the context's
  // run() from returning.
  asio::io_context* io_context = nullptr;

  // --- TLS (rediss:// URLs only) ---
  std::string tls_ca_file;   // empty: the system's trust store
  std::string tls_cert_file; // client certificate, with tls_key_file
  std::string tls_key_file;
  std::string tls_server_name; // empty: the URL's host
  // Turns certificate verification off. For tests against self-signed
  // servers only: it makes TLS useless against an active attacker.
  bool tls_insecure_skip_verify = false;
};

enum class algorithm { token_bucket, sliding_window };

const char* to_string(algorithm a) noexcept;

// [limiters.NAME]: one limit. A limiter needs at least one of: rate_per_second
// (token bucket), limit + window_seconds (sliding window), max_concurrent.
struct limiter_options {
  // Name of the store; empty selects the registry's built-in memory store.
  std::string store;
  algorithm algo = algorithm::token_bucket; // TOML: `algorithm`

  // token_bucket: sustained rate and how many may pass at once (default 1:
  // strict pacing, one every 1/rate seconds).
  std::optional<double> rate_per_second;
  std::optional<std::int64_t> burst;

  // sliding_window: at most `limit` admissions in any `window_seconds`.
  std::optional<std::int64_t> limit;
  std::optional<double> window_seconds;

  // At most this many permits held at once (with either algorithm, or alone).
  std::optional<std::int64_t> max_concurrent;
  // Redis engine: a held slot is a lease that its holder renews every third
  // of this; a crashed holder's slot returns after it. (The memory engine
  // needs no lease: no other process can hold its slots.) Default 30 s.
  std::optional<double> lease_seconds;

  // Default for acquire_options::timeout. Unset: wait as long as it takes.
  std::optional<seconds_d> timeout;

  // When the store fails: false admits (and counts store_errors), true throws
  // store_error.
  bool fail_closed = false;
};

// Checks a store's options the same way a TOML file is checked; throws
// config_error naming "stores.NAME.option".
void validate(const std::string& name, const store_options& options);

// Checks a limiter's options (without resolving its store); throws
// config_error naming "limiters.NAME.option".
void validate(const std::string& name, const limiter_options& options);

} // namespace ratesync

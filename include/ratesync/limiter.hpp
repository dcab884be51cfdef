// A configured limiter: acquire permits from it, read its metrics and state.
// `limiter` is a cheap handle; copies share one limiter.
#pragma once

#include <asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <string>

#include "ratesync/engine.hpp"
#include "ratesync/metrics.hpp"
#include "ratesync/options.hpp"
#include "ratesync/permit.hpp"

namespace ratesync {

// (g++ 12 miscompiles a braced temporary inside a co_await expression, such as
// `co_await acquire("api", {.timeout = 0s})`: build the options in a named
// variable first. The overloads below take no defaulted arguments for that
// reason.)
struct acquire_options {
  // How long the caller will wait. Unset: the limiter's configured timeout, or
  // as long as it takes when none is configured. Zero: fail fast.
  std::optional<seconds_d> timeout;
  // Per-key limit: each distinct key (a user id, an IP) gets its own state
  // with the limiter's limits. Empty: the limiter's single shared state.
  std::string key;
  // Tokens (token bucket) or admissions (sliding window) this call takes.
  // Must be 1..burst (or 1..limit). Concurrency always takes one slot.
  std::int64_t cost = 1;
};

// What try_acquire returns instead of throwing acquisition_error.
struct acquire_result {
  bool allowed = false;
  // When refused: how long until the same request could succeed.
  std::chrono::microseconds retry_after{0};
  denial_reason reason = denial_reason::rate_limited;
  // When allowed: the permit to hold.
  ratesync::permit permit;

  explicit operator bool() const noexcept { return allowed; }
};

namespace detail {

class limiter_core : public std::enable_shared_from_this<limiter_core> {
public:
  limiter_core(limiter_spec spec, std::string store_name, std::shared_ptr<engine> store);

  const limiter_spec& spec() const noexcept { return spec_; }
  const std::string& store_name() const noexcept { return store_name_; }
  const engine& store() const noexcept { return *store_; }
  metrics_recorder& metrics() noexcept { return metrics_; }
  limiter_metrics snapshot() const noexcept {
    limiter_metrics m = metrics_.snapshot();
    m.circuit_open = backend_->degraded();
    return m;
  }

  // The coroutine bodies take the core by value so that a limiter removed
  // from its registry stays alive while anyone waits on it.
  static asio::awaitable<acquire_result> try_acquire(std::shared_ptr<limiter_core> self,
                                                     acquire_options options);
  static asio::awaitable<permit> acquire(std::shared_ptr<limiter_core> self,
                                         acquire_options options);
  static asio::awaitable<limiter_state> get_state(std::shared_ptr<limiter_core> self,
                                                  std::string key);
  static asio::awaitable<void> reset(std::shared_ptr<limiter_core> self, std::string key);

  void release(lease_token lease) noexcept;

private:
  // What a backend's failure to decide means for the call: a store error
  // under fail-open admits (counted), anything else is rethrown (a
  // cancellation counted). Called in the handler of the awaited decision, so
  // that the decision is awaited in acquire() and try_acquire() themselves
  // (a coroutine level per decision fewer).
  acquire_outcome recover(std::exception_ptr failure);
  acquire_result finish(const acquire_outcome& out, std::chrono::steady_clock::time_point start,
                        bool waited);
  std::optional<acquire_result> decide_now(const acquire_request& req,
                                           std::chrono::steady_clock::time_point start);

  limiter_spec spec_;
  std::string store_name_;
  std::shared_ptr<engine> store_; // keeps the engine alive as long as the backend
  std::unique_ptr<backend> backend_;
  metrics_recorder metrics_;
};

} // namespace detail

class limiter {
public:
  explicit limiter(std::shared_ptr<detail::limiter_core> core) noexcept : core_(std::move(core)) {}

  const std::string& name() const noexcept { return core_->spec().name; }
  const std::string& store_name() const noexcept { return core_->store_name(); }
  const limiter_options& options() const noexcept { return core_->spec().options; }

  // Waits for a permit; throws acquisition_error when it cannot be had within
  // the timeout, invalid_argument for an impossible cost, store_error when the
  // store fails and the limiter is fail_closed.
  asio::awaitable<permit> acquire(const acquire_options& options) const {
    return detail::limiter_core::acquire(core_, options);
  }
  asio::awaitable<permit> acquire() const { return acquire(acquire_options()); }
  // As acquire, but a refusal is a result rather than an exception.
  asio::awaitable<acquire_result> try_acquire(const acquire_options& options) const {
    return detail::limiter_core::try_acquire(core_, options);
  }
  asio::awaitable<acquire_result> try_acquire() const { return try_acquire(acquire_options()); }

  // Inspects a key's state without consuming anything.
  asio::awaitable<limiter_state> get_state() const { return get_state(std::string()); }
  asio::awaitable<limiter_state> get_state(std::string key) const {
    return detail::limiter_core::get_state(core_, std::move(key));
  }
  // Forgets a key's rate state (operators, tests). Held permits stay held.
  asio::awaitable<void> reset() const { return reset(std::string()); }
  asio::awaitable<void> reset(std::string key) const {
    return detail::limiter_core::reset(core_, std::move(key));
  }

  limiter_metrics get_metrics() const noexcept { return core_->snapshot(); }
  // The executor of the thread that talks to this limiter's store (redis
  // stores: the store's own thread, or the io_context given as
  // store_options::io_context), or a null executor (memory stores decide on
  // the caller's thread). A coroutine started on it makes each decision without the two
  // thread hand-offs (caller -> I/O thread -> caller) that the default costs:
  // the lowest latency for a single caller (docs/performance.md). Keep such
  // coroutines short and non-blocking: they share the thread with the
  // store's connections.
  asio::any_io_executor io_executor() const noexcept { return core_->store().io_executor(); }

private:
  std::shared_ptr<detail::limiter_core> core_;
};

} // namespace ratesync

// What every engine offers the limiter layer. An engine (a configured store)
// makes one backend per limiter; the backend decides, waits, releases.
// Nothing here knows about sockets; nothing in a backend knows about metrics.
#pragma once

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "ratesync/errors.hpp"
#include "ratesync/options.hpp"

namespace ratesync {

// A limiter's options after validation, in the units engines compute with.
struct limiter_spec {
  std::string name;
  algorithm algo = algorithm::token_bucket;
  // Token bucket: one token every `emission_interval` (rounded up to a whole
  // nanosecond so that rounding never loosens the rate); `burst` tokens at most.
  std::optional<std::chrono::nanoseconds> emission_interval;
  std::int64_t burst = 1;
  // Sliding window: `limit` admissions per `window` (rounded up).
  std::int64_t limit = 0;
  std::chrono::nanoseconds window{0};
  // 0: no concurrency limit.
  std::int64_t max_concurrent = 0;
  std::chrono::nanoseconds lease{std::chrono::seconds(30)};
  std::optional<std::chrono::nanoseconds> default_timeout;
  bool fail_closed = false;
  limiter_options options; // as configured, for introspection

  bool has_rate() const noexcept { return emission_interval.has_value() || limit > 0; }
  // The largest cost one acquire may ask for.
  std::int64_t max_cost() const noexcept;
};

// Builds the spec, validating the options; throws config_error.
limiter_spec make_spec(const std::string& name, const limiter_options& options);

// What a backend hands back for an admitted request: an opaque token that
// release() takes back. {nullptr, 0} holds nothing.
struct lease_token {
  void* state = nullptr;
  std::uint64_t id = 0;
};

// One acquire, as the backend sees it.
struct acquire_request {
  std::string_view key;
  std::int64_t cost = 1;
  // Absolute deadline on the steady clock; nullopt: wait as long as needed.
  std::optional<std::chrono::steady_clock::time_point> deadline;
  // When the call began (read before any lock). An in-process engine may
  // decide at this time rather than read the clock again, but no earlier
  // than a decision it has already made on the same state.
  std::chrono::steady_clock::time_point start;
};

struct acquire_outcome {
  bool admitted = false;
  lease_token lease;                        // when admitted
  std::chrono::microseconds retry_after{0}; // when refused
  denial_reason reason = denial_reason::rate_limited;
  bool hit_concurrency_limit = false; // found every slot held on arrival
};

// Read-only view of one key's state (get_state).
struct limiter_state {
  // How many cost-1 acquires would be admitted right now.
  std::int64_t remaining = 0;
  // How long until a cost-1 acquire could be admitted (0: now).
  std::chrono::microseconds retry_after{0};
  // How long until the state has fully recovered (bucket full, window empty).
  std::chrono::microseconds reset_after{0};
  // Permits held (limiters with max_concurrent), else 0.
  std::int64_t current_concurrent = 0;
};

// One limiter's state in one store.
class backend {
public:
  virtual ~backend() = default;

  // Admits the request, waiting (until the deadline) where the limits need it;
  // refuses at once, consuming nothing, when the wait cannot fit. Cancellation
  // of the awaiting coroutine consumes nothing. Throws store_error when the
  // store cannot decide.
  virtual asio::awaitable<acquire_outcome> acquire(acquire_request request) = 0;

  // The same decision when it can be made without suspending: admitted now,
  // or refused (consuming nothing). nullopt sends the caller to acquire()
  // (a wait is needed, or the engine does I/O). Saves the coroutine frames of
  // the common, immediate case.
  virtual std::optional<acquire_outcome> try_acquire_now(const acquire_request& request) {
    (void)request;
    return std::nullopt;
  }

  // Gives back what an admitted request holds. Safe from any thread.
  virtual void release(lease_token lease) noexcept = 0;

  virtual asio::awaitable<limiter_state> get_state(std::string key) = 0;
  // True while the store is known to be failing (its circuit breaker is open).
  virtual bool degraded() const noexcept { return false; }
  virtual asio::awaitable<void> reset(std::string key) = 0;
};

// A configured store.
class engine {
public:
  virtual ~engine() = default;
  virtual std::unique_ptr<backend> make_backend(const limiter_spec& spec) = 0;
  // The executor of the io_context that does this store's I/O, if it has
  // one (a redis store: its own thread's, or store_options::io_context's;
  // a memory store: none, a null executor). See limiter::io_executor().
  virtual asio::any_io_executor io_executor() const noexcept { return {}; }
};

} // namespace ratesync

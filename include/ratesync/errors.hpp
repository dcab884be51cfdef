// Every error ratesync reports, as exception types.
// Catch ratesync::error for all of them, or the specific type for one class.
#pragma once

#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace ratesync {

// Base of every exception ratesync throws.
class error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

// A bad configuration value, from a TOML file, a string or code.
// what() reads "file:line:column: option: message" where each part is known;
// the parts are also available one by one.
class config_error : public error {
public:
  config_error(std::string source, std::uint32_t line, std::uint32_t column, std::string option,
               std::string message);

  // The file path, "<string>" for load_config_string, or empty for code.
  const std::string& source() const noexcept { return source_; }
  // 1-based position in the source; 0 when unknown (configured from code).
  std::uint32_t line() const noexcept { return line_; }
  std::uint32_t column() const noexcept { return column_; }
  // Dotted path of the offending option, e.g. "limiters.api.rate_per_second".
  const std::string& option() const noexcept { return option_; }
  // The message alone, without position and option.
  const std::string& message() const noexcept { return message_; }

private:
  std::string source_;
  std::uint32_t line_;
  std::uint32_t column_;
  std::string option_;
  std::string message_;
};

// get_limiter / acquire named a limiter that is not configured.
class limiter_not_found : public error {
public:
  explicit limiter_not_found(std::string name);
  const std::string& name() const noexcept { return name_; }

private:
  std::string name_;
};

// A call's arguments cannot be satisfied by any wait: cost of 0, cost above the
// burst or the window's limit. Retrying the same call will fail the same way.
class invalid_argument : public error {
public:
  using error::error;
};

// Why an acquisition was refused.
enum class denial_reason {
  rate_limited,        // the rate or window would need a longer wait than the timeout allows
  concurrency_limited, // every max_concurrent slot is held (fail fast)
  timed_out,           // waited for a concurrency slot for the whole timeout
};

const char* to_string(denial_reason r) noexcept;

// co_await acquire(...) could not obtain a permit within its timeout.
class acquisition_error : public error {
public:
  acquisition_error(std::string limiter, std::string key, std::chrono::microseconds retry_after,
                    denial_reason reason);

  const std::string& limiter() const noexcept { return limiter_; }
  // The caller's key (empty when the limiter is used without one).
  const std::string& key() const noexcept { return key_; }
  // How long until the same request could succeed: exact for rates and
  // windows (rounded up), zero when it depends on a holder releasing a slot.
  std::chrono::microseconds retry_after() const noexcept { return retry_after_; }
  denial_reason reason() const noexcept { return reason_; }

private:
  std::string limiter_;
  std::string key_;
  std::chrono::microseconds retry_after_;
  denial_reason reason_;
};

// The store (e.g. Redis) failed while deciding and the limiter is fail_closed,
// or the store cannot serve at all.
class store_error : public error {
public:
  store_error(std::string store, const std::string& message, bool circuit_open = false);
  const std::string& store() const noexcept { return store_; }
  // True when the store's circuit breaker answered without contacting the
  // store (after repeated failures; it probes until the store is back).
  bool circuit_open() const noexcept { return circuit_open_; }

private:
  std::string store_;
  bool circuit_open_;
};

} // namespace ratesync

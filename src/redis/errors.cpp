// The transport's error category: one message per errc, stable text for logs.
#include "redis/errors.hpp"

namespace ratesync::redis {

namespace {

class transport_category_impl final : public std::error_category {
public:
  const char* name() const noexcept override { return "ratesync.redis"; }

  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
    case errc::timeout:
      return "no reply from the Redis server in time";
    case errc::connection_lost:
      return "the connection to the Redis server was lost";
    case errc::not_connected:
      return "could not connect to the Redis server";
    case errc::connect_timeout:
      return "could not connect to the Redis server in time";
    case errc::protocol_error:
      return "the Redis server sent an invalid RESP reply";
    case errc::auth_failed:
      return "the Redis server refused the credentials";
    case errc::tls_verify_failed:
      return "the Redis server's TLS certificate did not verify";
    case errc::server_error:
      return "the Redis server answered with an error";
    case errc::shutting_down:
      return "the Redis store is shutting down";
    }
    return "unknown ratesync.redis error";
  }

  // Both timeouts are also std::errc::timed_out, so that generic code can
  // test for them without knowing this category.
  bool equivalent(int value, const std::error_condition& cond) const noexcept override {
    const auto e = static_cast<errc>(value);
    if (e == errc::timeout || e == errc::connect_timeout)
      return cond == std::errc::timed_out;
    return default_error_condition(value) == cond;
  }
};

} // namespace

const std::error_category& transport_category() noexcept {
  static const transport_category_impl instance;
  return instance;
}

} // namespace ratesync::redis

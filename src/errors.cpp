// Error types: messages are composed once, at construction.
#include "ratesync/errors.hpp"

#include <fmt/format.h>

namespace ratesync {

namespace {

std::string config_what(const std::string& source, std::uint32_t line, std::uint32_t column,
                        const std::string& option, const std::string& message) {
  std::string out;
  if (!source.empty()) {
    out = source;
    if (line != 0) {
      out += fmt::format(":{}", line);
      if (column != 0)
        out += fmt::format(":{}", column);
    }
    out += ": ";
  }
  if (!option.empty())
    out += option + ": ";
  return out + message;
}

} // namespace

config_error::config_error(std::string source, std::uint32_t line, std::uint32_t column,
                           std::string option, std::string message)
    : error(config_what(source, line, column, option, message)), source_(std::move(source)),
      line_(line), column_(column), option_(std::move(option)), message_(std::move(message)) {}

const char* to_string(denial_reason r) noexcept {
  switch (r) {
  case denial_reason::rate_limited:
    return "rate_limited";
  case denial_reason::concurrency_limited:
    return "concurrency_limited";
  case denial_reason::timed_out:
    return "timed_out";
  }
  return "unknown";
}

namespace {

// Keys are caller bytes: show at most 64 of them, escaping what is not
// printable ASCII, so that a message stays one readable line.
std::string printable_key(const std::string& key) {
  std::string out;
  std::size_t shown = 0;
  for (unsigned char c : key) {
    if (shown++ == 64) {
      out += fmt::format("...({} bytes)", key.size());
      break;
    }
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
      out += static_cast<char>(c);
    else
      out += fmt::format("\\x{:02x}", c);
  }
  return out;
}

std::string acquisition_what(const std::string& limiter, const std::string& key,
                             std::chrono::microseconds retry_after, denial_reason reason) {
  std::string where = key.empty()
                          ? fmt::format("limiter \"{}\"", limiter)
                          : fmt::format("limiter \"{}\" (key \"{}\")", limiter, printable_key(key));
  switch (reason) {
  case denial_reason::rate_limited:
    return fmt::format("{}: rate limited; retry after {:.3f} ms", where,
                       static_cast<double>(retry_after.count()) / 1000.0);
  case denial_reason::concurrency_limited:
    return fmt::format("{}: every concurrency slot is held", where);
  case denial_reason::timed_out:
    return fmt::format("{}: timed out waiting for a concurrency slot", where);
  }
  return where;
}

} // namespace

// The name may come from a caller's input (a route, a header): shown like a
// key, so that the message stays one readable line whatever its bytes.
limiter_not_found::limiter_not_found(std::string name)
    : error(fmt::format("no limiter named \"{}\" is configured", printable_key(name))),
      name_(std::move(name)) {}

acquisition_error::acquisition_error(std::string limiter, std::string key,
                                     std::chrono::microseconds retry_after, denial_reason reason)
    : error(acquisition_what(limiter, key, retry_after, reason)), limiter_(std::move(limiter)),
      key_(std::move(key)), retry_after_(retry_after), reason_(reason) {}

store_error::store_error(std::string store, const std::string& message, bool circuit_open)
    : error(fmt::format("store \"{}\": {}", store, message)), store_(std::move(store)),
      circuit_open_(circuit_open) {}

} // namespace ratesync

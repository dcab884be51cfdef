// The scripts' replies, checked before the engine acts on them: a server that
// is not Redis, a proxy that mangles replies or a script of another version
// must give a store_error, never a wait of centuries or an overflow.
#include "redis/script_reply.hpp"

#include <algorithm>
#include <fmt/format.h>
#include <string>

#include "redis/resp.hpp"

namespace ratesync::redis {

namespace {

// What a reply is, for messages; never its bytes (they may be anything).
std::string describe(const redisReply& r) {
  switch (r.type) {
  case REDIS_REPLY_STRING:
    return fmt::format("a bulk string of {} bytes", r.len);
  case REDIS_REPLY_ARRAY:
    return fmt::format("an array of {} elements", r.elements);
  case REDIS_REPLY_INTEGER:
    return fmt::format("the integer {}", r.integer);
  case REDIS_REPLY_NIL:
    return "a nil";
  case REDIS_REPLY_STATUS:
    return "a status reply";
  case REDIS_REPLY_ERROR:
    return "an error reply";
  default:
    return fmt::format("a reply of type {}", r.type);
  }
}

[[noreturn]] void unexpected(std::string_view store, std::string_view script,
                             const std::string& what) {
  throw store_error(std::string(store), fmt::format("unexpected reply to {}: {}", script, what));
}

// An array of `n` integers, or a store_error saying what came instead.
void check_shape(std::string_view store, std::string_view script, const redisReply& r,
                 std::size_t n) {
  if (r.type == REDIS_REPLY_ERROR)
    throw store_error(std::string(store),
                      fmt::format("Redis refused {}: {}", script, reply_text(r)));
  if (r.type != REDIS_REPLY_ARRAY || r.elements != n)
    unexpected(store, script,
               fmt::format("expected an array of {} integers, got {}", n, describe(r)));
  for (std::size_t i = 0; i < n; ++i) {
    const redisReply* e = r.element[i];
    if (e == nullptr || e->type != REDIS_REPLY_INTEGER)
      unexpected(store, script,
                 fmt::format("expected an array of {} integers, got one whose element {} is {}", n,
                             i + 1, e == nullptr ? std::string("missing") : describe(*e)));
  }
}

// A count or duration: 0..`high`.
std::int64_t in_range(std::string_view store, std::string_view script, const redisReply& r,
                      std::size_t i, const char* what, std::int64_t high) {
  const long long v = r.element[i]->integer;
  if (v < 0 || v > high)
    unexpected(store, script, fmt::format("{} {} out of range (0..{})", what, v, high));
  return static_cast<std::int64_t>(v);
}

} // namespace

const char* to_string(decision_script s) noexcept {
  switch (s) {
  case decision_script::token_bucket:
    return "token_bucket";
  case decision_script::sliding_window:
    return "sliding_window";
  case decision_script::concurrency:
    return "concurrency";
  }
  return "unknown script";
}

decision decode_decision(std::string_view store, decision_script script, const redisReply& reply) {
  const std::string_view name = to_string(script);
  decision d;
  if (reply.type == REDIS_REPLY_INTEGER) {
    // The short forms: 0 admitted now, -n refused with a retry-after of n us.
    const long long v = reply.integer;
    if (v == 0) {
      d.status = decision::verdict::admitted;
      return d;
    }
    if (v > 0 || script == decision_script::concurrency)
      unexpected(store, name,
                 fmt::format("the integer {} (expected 0{})", v,
                             script == decision_script::concurrency ? "" : " or a negative wait"));
    if (v < -longest_reply_us)
      unexpected(store, name,
                 fmt::format("the integer {} (a retry-after (us) out of range 1..{})", v,
                             longest_reply_us));
    d.status = decision::verdict::refused;
    d.wait_us = static_cast<std::int64_t>(-v);
    return d;
  }
  check_shape(store, name, reply, 3);
  const long long status = reply.element[0]->integer;
  switch (status) {
  case 0:
    if (script == decision_script::concurrency)
      unexpected(store, name, "status 0 (refused by a rate), which this script never returns");
    d.status = decision::verdict::refused;
    break;
  case 1:
    d.status = decision::verdict::admitted;
    break;
  case 2:
    d.status = decision::verdict::no_slot;
    break;
  default:
    unexpected(store, name, fmt::format("status {} (expected 0, 1 or 2)", status));
  }
  d.wait_us = in_range(store, name, reply, 1, "wait (us)", longest_reply_us);
  d.reserved = static_cast<std::int64_t>(reply.element[2]->integer);
  return d;
}

limiter_state decode_state(std::string_view store, const redisReply& reply, bool concurrency_only,
                           std::int64_t max_concurrent) {
  constexpr std::string_view name = "state";
  check_shape(store, name, reply, 4);
  constexpr std::int64_t any_count = INT64_MAX;
  limiter_state st;
  const std::int64_t remaining = in_range(store, name, reply, 0, "remaining", any_count);
  st.retry_after = std::chrono::microseconds(
      in_range(store, name, reply, 1, "retry_after (us)", longest_reply_us));
  st.reset_after = std::chrono::microseconds(
      in_range(store, name, reply, 2, "reset_after (us)", longest_reply_us));
  st.current_concurrent = in_range(store, name, reply, 3, "leases held", any_count);
  // More leases than slots: another process with a larger max_concurrent.
  st.remaining = concurrency_only
                     ? std::max<std::int64_t>(0, max_concurrent - st.current_concurrent)
                     : remaining;
  return st;
}

} // namespace ratesync::redis

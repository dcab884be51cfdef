// Private: what the replies of the scripts in lua/ mean, checked. Pure
// functions of one decoded reply, used by the redis engine and by the reply
// fuzzer (tests/fuzz/reply_fuzz.cpp): a reply of the wrong shape, or with a
// value no script returns, is a store_error naming the store and the script.
#pragma once

#include <cstdint>
#include <hiredis/hiredis.h>
#include <string_view>

#include "ratesync/engine.hpp"

namespace ratesync::redis {

// The longest wait, retry-after or reset time a reply may carry: 100 years in
// microseconds. Larger values would overflow std::chrono::nanoseconds once a
// margin or the steady clock is added; no script returns them.
inline constexpr std::int64_t longest_reply_us = 100LL * 365 * 24 * 3600 * 1'000'000;

// The deciding scripts: token_bucket.lua, sliding_window.lua, concurrency.lua.
enum class decision_script { token_bucket, sliding_window, concurrency };

const char* to_string(decision_script s) noexcept;

// Their reply, {status, wait_us, reserved}, or in short: 0 for {1, 0, 0}
// (admitted now) and -n for {0, n, 0} (refused, retry after n us).
struct decision {
  enum class verdict {
    refused = 0,  // by the rate or window; nothing consumed
    admitted = 1, // possibly at a reserved time in the future
    no_slot = 2,  // every max_concurrent slot is leased
  };
  verdict status = verdict::refused;
  // admitted: how long to sleep before going (0: go now); refused: the
  // retry-after; no_slot: 0. Within 0..longest_reply_us.
  std::int64_t wait_us = 0;
  // admitted by token_bucket: the bucket's time after this admission (what an
  // undo gives back); sliding_window: the admission's time; else 0.
  std::int64_t reserved = 0;
};

// Throws store_error (store `store`) for an error reply, a reply that is
// neither an array of three integers nor an integer <= 0, a status the script
// never returns (the concurrency script never refuses by rate) or a wait out
// of range.
decision decode_decision(std::string_view store, decision_script script, const redisReply& reply);

// state.lua's reply, {remaining, retry_after_us, reset_after_us, leases_held},
// as the limiter's state. For a limiter with only max_concurrent
// (`concurrency_only`), remaining is max_concurrent minus the leases held
// (never below 0). Throws store_error like decode_decision for a reply that
// is not an array of four integers or holds a negative count or a time out
// of range.
limiter_state decode_state(std::string_view store, const redisReply& reply, bool concurrency_only,
                           std::int64_t max_concurrent);

} // namespace ratesync::redis

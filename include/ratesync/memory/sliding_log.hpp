// Sliding window as an exact log of admission times, with reservations.
// Pure logic on explicit times (integer nanoseconds); the caller locks.
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>

namespace ratesync::memory {

// The log holds admission times in order, including reserved future ones. It
// keeps the invariant that no half-open window (x - W, x] holds more than
// `limit` entries, i.e. e[i] - e[i - limit] >= W for every i. A new request
// of `cost` goes after the last entry, at the earliest time t with
// t >= e[n + cost - 1 - limit] + W, so waiters pass in arrival order, each
// when the admission it displaces leaves the window. Denied requests are not
// logged. Removing an entry never breaks the invariant, so a cancelled
// reservation is simply erased.
class sliding_log {
public:
  using ns = std::int64_t;

  struct decision {
    bool allowed = false;
    ns wait = 0;        // allowed: how long until the reserved time (0: now)
    ns at = 0;          // allowed: the admission time logged
    ns retry_after = 0; // refused: how long until the same request could pass
  };

  sliding_log(std::int64_t limit, ns window) noexcept : limit_(limit), window_(window) {}

  decision take(ns now, std::int64_t cost, ns max_wait) {
    prune(now);
    const ns t = earliest(now, cost);
    decision d;
    if (t - now > max_wait) {
      d.retry_after = t - now;
      return d;
    }
    d.allowed = true;
    d.wait = t - now;
    d.at = t;
    log_.insert(log_.end(), static_cast<std::size_t>(cost), t);
    return d;
  }

  // Undo a reservation made at `at` for `cost` (entries of equal time are
  // interchangeable, so any `cost` of them will do).
  void cancel(ns at, std::int64_t cost) {
    auto hi = std::upper_bound(log_.begin(), log_.end(), at);
    auto lo = std::lower_bound(log_.begin(), hi, at);
    const auto n = std::min<std::ptrdiff_t>(cost, hi - lo);
    log_.erase(hi - n, hi);
  }

  bool idle(ns now) const noexcept { return log_.empty() || log_.back() <= now - window_; }

  std::int64_t remaining(ns now) const noexcept {
    if (!log_.empty() && log_.back() > now)
      return 0;
    const auto live =
        std::distance(std::upper_bound(log_.begin(), log_.end(), now - window_), log_.end());
    return std::max<std::int64_t>(0, limit_ - live);
  }
  ns retry_after(ns now) const noexcept { return earliest(now, 1) - now; }
  ns reset_after(ns now) const noexcept {
    return log_.empty() ? 0 : std::max<ns>(0, log_.back() + window_ - now);
  }

  void reset() noexcept { log_.clear(); }
  std::size_t size() const noexcept { return log_.size(); }

private:
  void prune(ns now) {
    while (!log_.empty() && log_.front() <= now - window_)
      log_.pop_front();
  }

  // Works on an unpruned log too: pruned entries are all <= now - W and so
  // never raise t above now.
  ns earliest(ns now, std::int64_t cost) const noexcept {
    ns t = now;
    if (log_.empty())
      return t;
    t = std::max(t, log_.back());
    const auto idx = static_cast<std::int64_t>(log_.size()) + cost - 1 - limit_;
    if (idx >= 0)
      t = std::max(t, log_[static_cast<std::size_t>(idx)] + window_);
    return t;
  }

  std::int64_t limit_;
  ns window_;
  std::deque<ns> log_;
};

} // namespace ratesync::memory

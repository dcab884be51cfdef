// Sliding window as an exact log of admission times, with reservations.
// Pure logic on explicit times (integer nanoseconds); the caller locks.
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <limits>

namespace ratesync::memory {

// The log holds admission times in order, including reserved future ones,
// one unit per unit of cost. It keeps the invariant that no half-open window
// (x - W, x] holds more than `limit` units, i.e. u[i] - u[i - limit] >= W for
// every i, u being the units' times in order. A new request of `cost` goes
// after the last unit, at the earliest time t with
// t >= u[n + cost - 1 - limit] + W, so waiters pass in arrival order, each
// when the admission it displaces leaves the window. Denied requests are not
// logged. Removing units never breaks the invariant, so a cancelled
// reservation is simply taken out.
//
// Units are stored run-length: one entry per admission time with the running
// total of units through it, so a call of cost n costs one entry, not n, and
// unit i is found by binary search on the totals.
//
// A cancellation lowers the totals of every later entry. Done at once, the
// waiters of a deep queue cancelled one after the other (a timeout shared by
// all, a shutdown) cost quadratic time under the shard's lock: 10,000 of them
// about 5e7 steps. So cancel() turns the entries from its own on into plain
// unit counts (each entry once, however many cancellations follow), and the
// next other call adds them up again and drops the emptied entries: linear
// for the lot.
class sliding_log {
public:
  using ns = std::int64_t;

  static constexpr ns never = std::numeric_limits<ns>::max();

  struct decision {
    bool allowed = false;
    ns wait = 0;        // allowed: how long until the reserved time (0: now)
    ns at = 0;          // allowed: the admission time logged
    ns retry_after = 0; // refused: how long until the same request could pass
  };

  sliding_log(std::int64_t limit, ns window) noexcept : limit_(limit), window_(window) {}

  decision take(ns now, std::int64_t cost, ns max_wait) {
    settle();
    prune(now);
    const ns t = earliest(now, cost);
    decision d;
    // `never`: a queue reaching past the year 2262 of the steady clock (see
    // gcra::take), refused whatever the caller would wait.
    if (t == never || t - now > max_wait) {
      d.retry_after = t - now;
      return d;
    }
    d.allowed = true;
    d.wait = t - now;
    d.at = t;
    if (!log_.empty() && log_.back().at == t)
      log_.back().through += cost;
    else
      log_.push_back({t, top() + cost});
    return d;
  }

  // Undo a reservation made at `at` for `cost` (units of equal time are
  // interchangeable, so any `cost` of them will do).
  void cancel(ns at, std::int64_t cost) {
    auto it = std::lower_bound(log_.begin(), log_.end(), at,
                               [](const entry& e, ns t) { return e.at < t; });
    if (it == log_.end() || it->at != at)
      return;
    counts_from(static_cast<std::size_t>(it - log_.begin()));
    it->through -= std::min(cost, it->through); // a count now
  }

  bool idle(ns now) const noexcept {
    settle();
    return log_.empty() || log_.back().at <= now - window_;
  }

  std::int64_t remaining(ns now) const noexcept {
    settle();
    if (!log_.empty() && log_.back().at > now)
      return 0;
    auto first_live = std::upper_bound(log_.begin(), log_.end(), now - window_,
                                       [](ns t, const entry& e) { return t < e.at; });
    const std::int64_t gone = first_live == log_.begin() ? base_ : std::prev(first_live)->through;
    return std::max<std::int64_t>(0, limit_ - (top() - gone));
  }
  ns retry_after(ns now) const noexcept {
    settle();
    return earliest(now, 1) - now;
  }
  ns reset_after(ns now) const noexcept {
    settle();
    return log_.empty() ? 0 : std::max<ns>(0, log_.back().at + window_ - now);
  }

  void reset() noexcept {
    log_.clear();
    base_ = 0;
    counts_ = false;
  }
  // Entries held: admission times, not units.
  std::size_t size() const noexcept {
    settle();
    return log_.size();
  }

private:
  struct entry {
    ns at;
    std::int64_t through; // units logged up to and including this entry's
                          // (from counts_from_ on while counts_: its own units)
  };

  // Entries from i on hold their own units in `through`. Converted from the
  // back, so that the entry before each is still a running total.
  void counts_from(std::size_t i) noexcept {
    if (!counts_) {
      counts_ = true;
      counts_from_ = log_.size();
    }
    for (std::size_t k = counts_from_; k-- > i;)
      log_[k].through -= k == 0 ? base_ : log_[k - 1].through;
    counts_from_ = std::min(counts_from_, i);
  }

  // Running totals again, emptied entries dropped. Every call but cancel()
  // starts here; under the caller's lock, so the const ones may too.
  void settle() const noexcept {
    if (!counts_)
      return;
    counts_ = false;
    std::int64_t running = counts_from_ == 0 ? base_ : log_[counts_from_ - 1].through;
    std::size_t kept = counts_from_;
    for (std::size_t k = counts_from_; k < log_.size(); ++k) {
      if (log_[k].through == 0)
        continue;
      running += log_[k].through;
      log_[kept++] = {log_[k].at, running};
    }
    log_.resize(kept);
  }

  std::int64_t top() const noexcept { return log_.empty() ? base_ : log_.back().through; }

  void prune(ns now) {
    while (!log_.empty() && log_.front().at <= now - window_) {
      base_ = log_.front().through;
      log_.pop_front();
    }
    if (log_.empty())
      base_ = 0;
  }

  // Works on an unpruned log too: pruned units are all <= now - W and so
  // never raise t above now.
  ns earliest(ns now, std::int64_t cost) const noexcept {
    ns t = now;
    if (log_.empty())
      return t;
    t = std::max(t, log_.back().at);
    const std::int64_t idx = top() - base_ + cost - 1 - limit_;
    if (idx >= 0) {
      // The entry holding unit idx (counted from 0 after base_).
      auto it = std::lower_bound(log_.begin(), log_.end(), base_ + idx + 1,
                                 [](const entry& e, std::int64_t u) { return e.through < u; });
      if (it != log_.end())
        t = it->at > never - window_ ? never : std::max(t, it->at + window_);
    }
    return t;
  }

  std::int64_t limit_;
  ns window_;
  mutable std::deque<entry> log_; // mutable: settle() (same units, other form)
  std::int64_t base_ = 0;         // units logged before the first entry (pruned)
  mutable bool counts_ = false;   // cancel() left unit counts from counts_from_ on
  mutable std::size_t counts_from_ = 0;
};

} // namespace ratesync::memory

// Token bucket in GCRA form, with reservations that can be taken back.
// Pure logic on explicit times (integer nanoseconds); the caller locks.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <list>

namespace ratesync::memory {

// The bucket is a single "theoretical arrival time" (tat): the instant at which
// it would be full again. A request of `cost` tokens at `now` may pass at
//   admit_at = max(tat, now) + cost * T - burst * T
// and moves tat to max(tat, now) + cost * T. So in any interval of length L at
// most burst + L / T tokens pass: the guarantee of docs/algorithms.md.
//
// A waiter reserves its future slot at once (one decision, no polling). If it
// is cancelled before its time, the slot is given back when it can be given
// back exactly: the reservation is undone if nothing was decided after it;
// otherwise it stays as a hole (its capacity is lost, never handed to two
// callers) until every later reservation is undone too or its time has passed.
class gcra {
public:
  using ns = std::int64_t;
  static constexpr ns no_limit = std::numeric_limits<ns>::max();

  struct pending {
    ns new_tat;  // tat after this reservation
    ns prev_tat; // tat before it
    bool cancelled = false;
  };
  using reservation = std::list<pending>::iterator;

  struct decision {
    bool allowed = false;
    ns wait = 0;        // allowed: how long until the reserved slot (0: now)
    ns retry_after = 0; // refused: how long until the same request could pass
    reservation slot{}; // allowed with wait > 0: pass to admitted() or cancel()
  };

  gcra(ns emission_interval, std::int64_t burst) noexcept : t_(emission_interval), burst_(burst) {}

  // Takes `cost` tokens if that needs a wait of at most `max_wait`; otherwise
  // changes nothing.
  decision take(ns now, std::int64_t cost, ns max_wait) {
    drop_past_holes(now);
    const ns base = std::max(tat_, now);
    decision d;
    // A queue of waiters reaching past the year 2262 of the steady clock
    // (a refill time of decades and waiters with no deadline): refused, as
    // a wait the clock cannot count. It used to wrap around to a negative
    // time, and the caller was admitted at once.
    if (cost * t_ > no_limit - base) {
      d.retry_after = no_limit - now;
      return d;
    }
    const ns new_tat = base + cost * t_;
    const ns wait = std::max<ns>(0, new_tat - burst_ * t_ - now);
    if (wait > max_wait) {
      d.retry_after = wait;
      return d;
    }
    d.allowed = true;
    d.wait = wait;
    if (wait > 0)
      d.slot = pending_.insert(pending_.end(), pending{new_tat, tat_});
    tat_ = new_tat;
    return d;
  }

  // The reserved slot's time came and its holder went through.
  void admitted(reservation r) { pending_.erase(r); }

  // The holder gave up before its slot: undo what can be undone exactly.
  void cancel(reservation r) {
    r->cancelled = true;
    while (!pending_.empty() && pending_.back().cancelled && pending_.back().new_tat == tat_) {
      tat_ = pending_.back().prev_tat;
      pending_.pop_back();
    }
  }

  // Nothing owed and the bucket full: the state can be forgotten. Holes left
  // by cancelled waiters do not count: with the bucket full their times have
  // all passed (no reservation ends after tat), and nobody holds them. (They
  // used to keep a key's state for good when no request came after them.)
  bool idle(ns now) const noexcept {
    return tat_ <= now && std::all_of(pending_.begin(), pending_.end(),
                                      [](const pending& p) { return p.cancelled; });
  }

  // Tokens available now, wait for one token, time until full.
  std::int64_t remaining(ns now) const noexcept {
    const ns base = std::max(tat_, now);
    const ns free = now + burst_ * t_ - base;
    return std::clamp<std::int64_t>(free / t_, 0, burst_);
  }
  ns retry_after(ns now) const noexcept {
    return std::max<ns>(0, std::max(tat_, now) + t_ - burst_ * t_ - now);
  }
  ns reset_after(ns now) const noexcept { return std::max<ns>(0, tat_ - now); }

  // Forget the history (operators' reset). Reservations still waiting keep
  // their slots; undoing them later changes nothing.
  void reset() noexcept { tat_ = 0; }

  std::size_t pending_count() const noexcept { return pending_.size(); }

private:
  // A cancelled reservation whose time has passed no longer matters.
  void drop_past_holes(ns now) {
    while (!pending_.empty() && pending_.front().cancelled && pending_.front().new_tat <= now)
      pending_.pop_front();
  }

  ns t_;
  std::int64_t burst_;
  ns tat_ = 0;
  std::list<pending> pending_;
};

} // namespace ratesync::memory

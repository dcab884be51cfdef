// The token bucket and sliding log on explicit time: the guarantees of
// docs/algorithms.md checked exactly, over random demand, and the exact undo
// of cancelled reservations.
#include <algorithm>
#include <chrono>
#include <deque>
#include <gtest/gtest.h>
#include <random>
#include <vector>

#include "ratesync/memory/gcra.hpp"
#include "ratesync/memory/sliding_log.hpp"

namespace {

using ratesync::memory::gcra;
using ratesync::memory::sliding_log;
using ns = std::int64_t;
constexpr ns ms = 1'000'000;
constexpr ns sec = 1'000'000'000;

struct admission {
  ns at;
  std::int64_t cost;
};

// Largest sum of costs admitted in any closed interval of length `len`.
std::int64_t max_in_span(std::vector<admission> a, ns len) {
  std::sort(a.begin(), a.end(), [](auto& x, auto& y) { return x.at < y.at; });
  std::int64_t best = 0, sum = 0;
  std::size_t lo = 0;
  for (std::size_t hi = 0; hi < a.size(); ++hi) {
    sum += a[hi].cost;
    while (a[hi].at - a[lo].at > len)
      sum -= a[lo++].cost;
    best = std::max(best, sum);
  }
  return best;
}

TEST(Gcra, NeverAdmitsMoreThanBurstPlusRateTimesSpan) {
  std::mt19937_64 rng(42);
  for (int round = 0; round < 20; ++round) {
    const ns t = (1 + rng() % 50) * ms; // emission interval
    const std::int64_t burst = 1 + rng() % 8;
    gcra b(t, burst);
    std::vector<admission> admitted;
    ns now = 10 * sec;
    for (int i = 0; i < 3000; ++i) {
      now += static_cast<ns>(rng() % (2 * t / 3 + 1)); // demand above the rate
      const std::int64_t cost = 1 + static_cast<std::int64_t>(rng() % burst);
      const ns max_wait = (rng() % 3 == 0) ? 0 : static_cast<ns>(rng() % (4 * t));
      auto d = b.take(now, cost, max_wait);
      if (d.allowed) {
        admitted.push_back({now + d.wait, cost});
        if (d.wait > 0)
          b.admitted(d.slot);
      } else {
        EXPECT_GT(d.retry_after, max_wait);
      }
    }
    for (ns span : {ns{0}, t / 2, t, 3 * t, 10 * t, 100 * t}) {
      // Closed interval [x, x + span]: at most burst + floor(span / t) tokens.
      EXPECT_LE(max_in_span(admitted, span), burst + span / t)
          << "t=" << t << " burst=" << burst << " span=" << span;
    }
  }
}

TEST(Gcra, SaturatingDemandGetsTheFullRate) {
  const ns t = 10 * ms;
  gcra b(t, 5);
  ns now = sec;
  const ns start = now;
  std::int64_t tokens = 0;
  while (now < start + 10 * sec) {
    auto d = b.take(now, 1, 0);
    if (d.allowed)
      ++tokens;
    now += ms / 3;
  }
  // burst + rate * span, less the one token in flight at the end.
  EXPECT_GE(tokens, 5 + (10 * sec) / t - 1);
  EXPECT_LE(tokens, 5 + (10 * sec) / t + 1);
}

TEST(Gcra, RefusalConsumesNothingAndReportsTheExactWait) {
  gcra b(100 * ms, 2);
  const ns now = sec;
  EXPECT_TRUE(b.take(now, 2, 0).allowed);
  auto d = b.take(now, 1, 0);
  ASSERT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after, 100 * ms);
  d = b.take(now, 2, 150 * ms);
  ASSERT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after, 200 * ms);
  // Nothing was consumed by the refusals.
  EXPECT_EQ(b.retry_after(now), 100 * ms);
  EXPECT_EQ(b.remaining(now + 200 * ms), 2);
}

TEST(Gcra, ReservationsAreServedInOrderAtTheirSlots) {
  gcra b(10 * ms, 1);
  const ns now = sec;
  std::vector<ns> waits;
  for (int i = 0; i < 5; ++i) {
    auto d = b.take(now, 1, gcra::no_limit);
    ASSERT_TRUE(d.allowed);
    waits.push_back(d.wait);
  }
  EXPECT_EQ(waits, (std::vector<ns>{0, 10 * ms, 20 * ms, 30 * ms, 40 * ms}));
}

TEST(Gcra, CancellingEveryWaiterInAnyOrderRestoresTheBucket) {
  std::mt19937_64 rng(7);
  for (int round = 0; round < 200; ++round) {
    gcra b(10 * ms, 3);
    ns now = sec;
    ASSERT_TRUE(b.take(now, 3, 0).allowed); // empty the bucket
    const ns before = b.retry_after(now);
    std::vector<gcra::reservation> slots;
    for (int i = 0; i < 8; ++i) {
      auto d = b.take(now, 1 + static_cast<std::int64_t>(rng() % 3), gcra::no_limit);
      ASSERT_TRUE(d.allowed);
      ASSERT_GT(d.wait, 0);
      slots.push_back(d.slot);
    }
    std::shuffle(slots.begin(), slots.end(), rng);
    for (auto s : slots)
      b.cancel(s);
    EXPECT_EQ(b.retry_after(now), before);
    EXPECT_EQ(b.pending_count(), 0u);
  }
}

TEST(Gcra, CancelledSlotBeforeALiveOneIsNeverHandedOutTwice) {
  gcra b(10 * ms, 1);
  const ns now = sec;
  ASSERT_TRUE(b.take(now, 1, 0).allowed);
  auto a = b.take(now, 1, gcra::no_limit); // at +10 ms
  auto c = b.take(now, 1, gcra::no_limit); // at +20 ms
  b.cancel(a.slot);
  auto d = b.take(now, 1, gcra::no_limit);
  // The hole at +10 ms is not reused: d goes after c.
  EXPECT_EQ(d.wait, 30 * ms);
  b.cancel(d.slot);
  b.cancel(c.slot); // now the whole tail, hole included, unwinds
  EXPECT_EQ(b.retry_after(now), 10 * ms);
  EXPECT_EQ(b.pending_count(), 0u);
}

TEST(Gcra, IdleOnlyOnceFull) {
  gcra b(10 * ms, 2);
  ns now = sec;
  EXPECT_TRUE(b.idle(now));
  ASSERT_TRUE(b.take(now, 1, 0).allowed);
  EXPECT_FALSE(b.idle(now));
  EXPECT_TRUE(b.idle(now + 10 * ms));
}

// A waiter cancelled while a later one still waits stays as a hole; once the
// later one has gone through and the bucket is full again, the state must be
// idle (forgettable). It was not: holes left only on the next take(), so a
// key nobody asked for again kept its state for good.
TEST(Gcra, AHoleLeftByACancelledWaiterDoesNotKeepTheStateAlive) {
  gcra b(100 * ms, 1);
  const ns now = sec;
  ASSERT_TRUE(b.take(now, 1, 0).allowed);
  const auto first = b.take(now, 1, sec);  // slot at +100 ms
  const auto second = b.take(now, 1, sec); // slot at +200 ms
  ASSERT_TRUE(first.allowed && second.allowed);
  b.cancel(first.slot); // not the last: a hole
  EXPECT_EQ(b.pending_count(), 2u);
  b.admitted(second.slot);
  EXPECT_FALSE(b.idle(now + 250 * ms)); // the bucket refills until +300 ms
  EXPECT_TRUE(b.idle(now + 300 * ms));
}

// Waiters with no deadline on a bucket that refills in decades: the queue
// reaches the end of the steady clock's range (year 2262). The call that
// would go past it is refused; it used to wrap around to a negative time and
// pass at once. The same for the sliding window.
TEST(Gcra, AQueuePastTheClocksRangeIsRefusedNotWrapped) {
  const ns t = sec;                         // one per second
  const std::int64_t burst = 1'000'000'000; // refills in ~31 years (the most allowed)
  gcra b(t, burst);
  const ns now = sec;
  int admitted = 0;
  for (; admitted < 20; ++admitted) {
    const auto d = b.take(now, burst, gcra::no_limit);
    if (!d.allowed) {
      EXPECT_GT(d.retry_after, ns{100} * 365 * 24 * 3600 * sec); // a century away, not "now"
      break;
    }
    EXPECT_GE(d.wait, 0);
  }
  EXPECT_GE(admitted, 8);
  EXPECT_LT(admitted, 20) << "never refused: the time wrapped";

  sliding_log l(1, 1'000'000'000 * sec); // a window of ~31 years
  int logged = 0;
  for (; logged < 20; ++logged) {
    const auto d = l.take(now, 1, gcra::no_limit);
    if (!d.allowed)
      break;
    EXPECT_GE(d.at, now);
  }
  EXPECT_GE(logged, 8);
  EXPECT_LT(logged, 20) << "never refused: the time wrapped";
}

TEST(SlidingLog, NoWindowEverHoldsMoreThanTheLimit) {
  std::mt19937_64 rng(1);
  for (int round = 0; round < 20; ++round) {
    const ns window = (1 + rng() % 500) * ms;
    const std::int64_t limit = 1 + rng() % 20;
    sliding_log l(limit, window);
    std::vector<admission> admitted;
    ns now = sec;
    for (int i = 0; i < 3000; ++i) {
      now += static_cast<ns>(rng() % (window / limit + 1));
      const std::int64_t cost =
          1 + static_cast<std::int64_t>(rng() % std::min<std::int64_t>(limit, 3));
      const ns max_wait = (rng() % 2) ? 0 : static_cast<ns>(rng() % window);
      auto d = l.take(now, cost, max_wait);
      if (d.allowed)
        admitted.push_back({d.at, cost});
      else
        EXPECT_GT(d.retry_after, max_wait);
    }
    // Half-open window (x - W, x]: a closed span of W - 1 ns.
    EXPECT_LE(max_in_span(admitted, window - 1), limit) << "W=" << window << " limit=" << limit;
  }
}

TEST(SlidingLog, DeniedRequestsAreNotCountedAndRetryAfterIsWhenTheOldestLeaves) {
  sliding_log l(3, 300 * ms);
  const ns t0 = sec;
  EXPECT_TRUE(l.take(t0, 1, 0).allowed);
  EXPECT_TRUE(l.take(t0 + 100 * ms, 1, 0).allowed);
  EXPECT_TRUE(l.take(t0 + 200 * ms, 1, 0).allowed);
  for (int i = 0; i < 10; ++i) {
    auto d = l.take(t0 + 250 * ms, 1, 0);
    ASSERT_FALSE(d.allowed);
    EXPECT_EQ(d.retry_after, 50 * ms); // t0 leaves the window at t0 + 300 ms
  }
  EXPECT_EQ(l.size(), 3u);
  EXPECT_TRUE(l.take(t0 + 300 * ms, 1, 0).allowed);
}

TEST(SlidingLog, CancelledReservationIsErased) {
  sliding_log l(1, 100 * ms);
  const ns now = sec;
  ASSERT_TRUE(l.take(now, 1, 0).allowed);
  auto a = l.take(now, 1, sec);
  ASSERT_TRUE(a.allowed);
  EXPECT_EQ(a.wait, 100 * ms);
  l.cancel(a.at, 1);
  EXPECT_EQ(l.retry_after(now), 100 * ms);
  EXPECT_EQ(l.size(), 1u);
}

TEST(SlidingLog, SubSecondWindowsAndRemaining) {
  sliding_log l(5, 50 * ms);
  const ns now = sec;
  EXPECT_EQ(l.remaining(now), 5);
  ASSERT_TRUE(l.take(now, 2, 0).allowed);
  EXPECT_EQ(l.remaining(now), 3);
  EXPECT_EQ(l.reset_after(now), 50 * ms);
  EXPECT_EQ(l.remaining(now + 50 * ms), 5);
  EXPECT_TRUE(l.idle(now + 50 * ms));
}

// The sliding log as it was before its entries were run-length: one time per
// unit. The run-length log must decide exactly as this one does.
class unit_log {
public:
  unit_log(std::int64_t limit, ns window) : limit_(limit), window_(window) {}
  sliding_log::decision take(ns now, std::int64_t cost, ns max_wait) {
    while (!log_.empty() && log_.front() <= now - window_)
      log_.pop_front();
    const ns t = earliest(now, cost);
    sliding_log::decision d;
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
  void cancel(ns at, std::int64_t cost) {
    auto hi = std::upper_bound(log_.begin(), log_.end(), at);
    auto lo = std::lower_bound(log_.begin(), hi, at);
    log_.erase(hi - std::min<std::ptrdiff_t>(cost, hi - lo), hi);
  }
  std::int64_t remaining(ns now) const {
    if (!log_.empty() && log_.back() > now)
      return 0;
    const auto live =
        std::distance(std::upper_bound(log_.begin(), log_.end(), now - window_), log_.end());
    return std::max<std::int64_t>(0, limit_ - live);
  }
  ns earliest(ns now, std::int64_t cost) const {
    ns t = now;
    if (log_.empty())
      return t;
    t = std::max(t, log_.back());
    const auto idx = static_cast<std::int64_t>(log_.size()) + cost - 1 - limit_;
    if (idx >= 0)
      t = std::max(t, log_[static_cast<std::size_t>(idx)] + window_);
    return t;
  }

private:
  std::int64_t limit_;
  ns window_;
  std::deque<ns> log_;
};

TEST(SlidingLog, DecidesAsALogOfOneEntryPerUnitWould) {
  std::mt19937_64 rng(7);
  for (int round = 0; round < 40; ++round) {
    const ns window = (1 + rng() % 300) * ms;
    const std::int64_t limit = 1 + static_cast<std::int64_t>(rng() % 50);
    sliding_log l(limit, window);
    unit_log ref(limit, window);
    std::vector<sliding_log::decision> held; // reservations that may be cancelled
    std::vector<std::int64_t> held_cost;
    ns now = sec;
    for (int i = 0; i < 2000; ++i) {
      now += static_cast<ns>(rng() % (2 * window / limit + 1));
      // Now and then a run of cancellations (up to all that are held), in
      // any order, some of them looked at halfway.
      std::size_t cancels = 0;
      if (!held.empty() && rng() % 5 == 0)
        cancels = rng() % 8 == 0 ? held.size() : 1 + rng() % std::min<std::size_t>(3, held.size());
      for (std::size_t c = 0; c < cancels; ++c) {
        const std::size_t k = rng() % held.size();
        l.cancel(held[k].at, held_cost[k]);
        ref.cancel(held[k].at, held_cost[k]);
        held.erase(held.begin() + static_cast<std::ptrdiff_t>(k));
        held_cost.erase(held_cost.begin() + static_cast<std::ptrdiff_t>(k));
        if (rng() % 4 == 0) {
          ASSERT_EQ(l.remaining(now), ref.remaining(now));
        }
      }
      const std::int64_t cost = 1 + static_cast<std::int64_t>(rng() % limit);
      const ns max_wait = (rng() % 3) ? 0 : static_cast<ns>(rng() % (2 * window));
      const auto d = l.take(now, cost, max_wait);
      const auto r = ref.take(now, cost, max_wait);
      ASSERT_EQ(d.allowed, r.allowed) << "round " << round << " step " << i;
      ASSERT_EQ(d.at, r.at);
      ASSERT_EQ(d.wait, r.wait);
      ASSERT_EQ(d.retry_after, r.retry_after);
      if (d.allowed && d.wait > 0) {
        held.push_back(d);
        held_cost.push_back(cost);
      }
      ASSERT_EQ(l.remaining(now), ref.remaining(now));
      ASSERT_EQ(l.retry_after(now), ref.earliest(now, 1) - now);
    }
  }
}

// A queue of waiters cancelled one after the other, oldest first (a timeout
// they share, a shutdown): each cancellation used to lower the totals of all
// the later entries, 2e10 steps for these 200,000 (tens of seconds) under the
// shard's lock. Now linear: milliseconds.
TEST(SlidingLog, CancellingADeepQueueOneByOneIsNotQuadratic) {
  constexpr int waiters = 200'000;
  sliding_log l(1, ms);
  const ns now = sec;
  ASSERT_TRUE(l.take(now, 1, 0).allowed);
  std::vector<ns> at;
  at.reserve(waiters);
  for (int i = 0; i < waiters; ++i) {
    const auto d = l.take(now, 1, 1000 * sec);
    ASSERT_TRUE(d.allowed);
    at.push_back(d.at);
  }
  EXPECT_EQ(at.back(), now + waiters * ms);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < waiters - 1; ++i)
    l.cancel(at[static_cast<std::size_t>(i)], 1);
  EXPECT_EQ(l.size(), 2u); // the admission and the last waiter
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(took, 2.0) << "cancelling " << waiters << " waiters took " << took << " s";
  // The last waiter keeps its slot; the next one comes right after it.
  EXPECT_EQ(l.retry_after(now), waiters * ms + ms);
  l.cancel(at.back(), 1);
  EXPECT_EQ(l.retry_after(now), ms);
  EXPECT_EQ(l.size(), 1u);
}

TEST(SlidingLog, ACallOfCostNIsOneEntry) {
  sliding_log l(1'000'000, 10 * sec);
  const ns now = sec;
  ASSERT_TRUE(l.take(now, 600'000, 0).allowed);
  ASSERT_TRUE(l.take(now + ms, 400'000, 0).allowed);
  EXPECT_EQ(l.size(), 2u);
  EXPECT_EQ(l.remaining(now + ms), 0);
  // The next unit waits for the first call's units to leave the window.
  EXPECT_EQ(l.retry_after(now + ms), 10 * sec - ms);
  auto d = l.take(now + 2 * ms, 600'000, 20 * sec);
  ASSERT_TRUE(d.allowed);
  EXPECT_EQ(d.at, now + 10 * sec);
  EXPECT_EQ(l.size(), 3u);
}

} // namespace

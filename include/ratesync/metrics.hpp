// Per-limiter counters: what get_limiter(name).get_metrics() returns.
// An acquire that reaches the limiter ends in exactly one of: an acquisition,
// a denial, a timeout, a cancellation, or an exception (bad arguments, or a
// store failure on a fail_closed limiter, counted in store_errors).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>

namespace ratesync {

struct limiter_metrics {
  // Permits handed out (including fail-open admissions while the store failed).
  std::uint64_t total_acquisitions = 0;
  // Sum, average and maximum of the time each successful acquire spent
  // waiting between its call and its permit, in milliseconds (zero for one
  // admitted without suspending).
  double total_wait_time_ms = 0.0;
  double avg_wait_time_ms = 0.0;
  double max_wait_time_ms = 0.0;
  // Acquires that waited for a concurrency slot for their whole timeout.
  std::uint64_t timeouts = 0;
  // Acquires refused because the limit could not admit them within their
  // timeout: a rate or window wait longer than the time left (decided at
  // once, without sleeping), or every slot held with a zero timeout.
  // Nothing was consumed.
  std::uint64_t denied = 0;
  // Acquires abandoned by their caller (cancelled) while waiting.
  std::uint64_t cancelled = 0;
  // Permits held right now (total_acquisitions - total_releases), on any
  // limiter; limiter_state::current_concurrent counts a key's slots instead.
  std::int64_t current_concurrent = 0;
  // Acquires that found every max_concurrent slot held (they then waited or
  // were refused).
  std::uint64_t max_concurrent_reached = 0;
  // Permits released (destroyed or released explicitly), each counted once.
  std::uint64_t total_releases = 0;
  // Decisions the store could not make (admitted when fail-open, thrown when
  // fail-closed).
  std::uint64_t store_errors = 0;
  // Of those, the ones the store's circuit breaker answered at once, without
  // waiting on a store that had failed repeatedly.
  std::uint64_t circuit_rejections = 0;
  // The store's circuit breaker is open right now (the store is failing).
  bool circuit_open = false;
  // Wall-clock time of the latest successful acquisition.
  std::optional<std::chrono::system_clock::time_point> last_acquisition_at;
};

namespace detail {

// Lock-free counters behind limiter_metrics; safe to update and read from any
// thread. A snapshot reads each field atomically (fields may be from slightly
// different instants under load).
class metrics_recorder {
public:
  // `waited` is zero for a decision made without suspending; `at` is when
  // the permit was granted.
  void acquired(std::chrono::nanoseconds waited, std::chrono::steady_clock::time_point at) noexcept;
  // Call before the backend gives the slot back (limiter_core::release), so
  // that the held count never includes a slot already taken again.
  void released() noexcept {
    held_.fetch_sub(1, std::memory_order_relaxed);
    releases_.fetch_add(1, std::memory_order_release);
  }
  void denied() noexcept { denied_.fetch_add(1, std::memory_order_relaxed); }
  void timed_out() noexcept { timeouts_.fetch_add(1, std::memory_order_relaxed); }
  void cancelled() noexcept { cancelled_.fetch_add(1, std::memory_order_relaxed); }
  void concurrency_full() noexcept { conc_full_.fetch_add(1, std::memory_order_relaxed); }
  void store_error(bool circuit_open) noexcept {
    store_errors_.fetch_add(1, std::memory_order_relaxed);
    if (circuit_open)
      circuit_rejections_.fetch_add(1, std::memory_order_relaxed);
  }

  limiter_metrics snapshot() const noexcept;

private:
  std::atomic<std::uint64_t> acquisitions_{0};
  std::atomic<std::uint64_t> wait_ns_total_{0};
  std::atomic<std::uint64_t> wait_ns_max_{0};
  std::atomic<std::uint64_t> releases_{0};
  // Permits held: current_concurrent. Its own counter, read with one load;
  // it used to be total_acquisitions - total_releases from two loads, and a
  // reader preempted between them counted every acquisition made meanwhile
  // as held (metrics_test read up to 10189 held permits on a limiter with
  // max_concurrent = 4).
  std::atomic<std::int64_t> held_{0};
  std::atomic<std::uint64_t> denied_{0};
  std::atomic<std::uint64_t> timeouts_{0};
  std::atomic<std::uint64_t> cancelled_{0};
  std::atomic<std::uint64_t> conc_full_{0};
  std::atomic<std::uint64_t> store_errors_{0};
  std::atomic<std::uint64_t> circuit_rejections_{0};
  std::atomic<std::int64_t> last_at_ns_{0}; // steady_clock ns since its epoch; 0: never
};

} // namespace detail
} // namespace ratesync

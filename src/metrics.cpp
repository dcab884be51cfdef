// Metrics counters: relaxed atomics, read field by field into a snapshot.
#include "ratesync/metrics.hpp"

#include <algorithm>

namespace ratesync::detail {

void metrics_recorder::acquired(std::chrono::nanoseconds waited,
                                std::chrono::steady_clock::time_point at) noexcept {
  const auto ns = static_cast<std::uint64_t>(waited.count() > 0 ? waited.count() : 0);
  wait_ns_total_.fetch_add(ns, std::memory_order_relaxed);
  auto max = wait_ns_max_.load(std::memory_order_relaxed);
  while (ns > max && !wait_ns_max_.compare_exchange_weak(max, ns, std::memory_order_relaxed)) {
  }
  // Steady time here, wall-clock time at snapshot: one clock read less per
  // acquisition.
  last_at_ns_.store(
      std::max<std::int64_t>(
          1, std::chrono::duration_cast<std::chrono::nanoseconds>(at.time_since_epoch()).count()),
      std::memory_order_relaxed);
  held_.fetch_add(1, std::memory_order_relaxed);
  // Last, with release: a reader that sees this acquisition sees its wait.
  acquisitions_.fetch_add(1, std::memory_order_release);
}

limiter_metrics metrics_recorder::snapshot() const noexcept {
  limiter_metrics m;
  // Releases before acquisitions: a release is always counted after its
  // acquisition, so total_releases never exceeds total_acquisitions.
  m.total_releases = releases_.load(std::memory_order_acquire);
  m.total_acquisitions = acquisitions_.load(std::memory_order_acquire);
  // One load: the permits held at one instant. Each permit is counted held
  // after its admission and no longer held before its slot is given back,
  // so this never exceeds the slots taken (max_concurrent, except permits
  // admitted fail-open) and never reads negative.
  m.current_concurrent = held_.load(std::memory_order_relaxed);
  m.total_wait_time_ms = static_cast<double>(wait_ns_total_.load(std::memory_order_relaxed)) / 1e6;
  m.max_wait_time_ms = static_cast<double>(wait_ns_max_.load(std::memory_order_relaxed)) / 1e6;
  m.avg_wait_time_ms = m.total_acquisitions == 0
                           ? 0.0
                           : m.total_wait_time_ms / static_cast<double>(m.total_acquisitions);
  m.timeouts = timeouts_.load(std::memory_order_relaxed);
  m.denied = denied_.load(std::memory_order_relaxed);
  m.cancelled = cancelled_.load(std::memory_order_relaxed);
  m.max_concurrent_reached = conc_full_.load(std::memory_order_relaxed);
  m.store_errors = store_errors_.load(std::memory_order_relaxed);
  m.circuit_rejections = circuit_rejections_.load(std::memory_order_relaxed);
  if (auto at = last_at_ns_.load(std::memory_order_relaxed); at != 0) {
    const auto ago =
        std::chrono::steady_clock::now().time_since_epoch() - std::chrono::nanoseconds(at);
    m.last_acquisition_at = std::chrono::system_clock::now() -
                            std::chrono::duration_cast<std::chrono::system_clock::duration>(ago);
  }
  return m;
}

} // namespace ratesync::detail

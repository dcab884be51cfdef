// The limiter layer: argument checks, deadlines, fail policy and metrics
// around one backend decision. Engines know nothing of metrics.
#include "ratesync/limiter.hpp"

#include <asio/error.hpp>
#include <cmath>
#include <fmt/format.h>
#include <system_error>

namespace ratesync {

std::int64_t limiter_spec::max_cost() const noexcept {
  if (emission_interval)
    return burst;
  if (limit > 0)
    return limit;
  return std::numeric_limits<std::int64_t>::max();
}

namespace {

std::chrono::nanoseconds ceil_ns(double seconds) {
  return std::chrono::nanoseconds(static_cast<std::int64_t>(std::ceil(seconds * 1e9)));
}

// Timeouts longer than this are waits without a deadline (and keep the
// deadline arithmetic far from overflow).
constexpr double longest_timeout_s = 100.0 * 365 * 24 * 3600;

} // namespace

limiter_spec make_spec(const std::string& name, const limiter_options& options) {
  validate(name, options);
  limiter_spec s;
  s.name = name;
  s.algo = options.algo;
  if (options.rate_per_second) {
    // Rounded up: a longer interval can only make the limit stricter.
    s.emission_interval =
        std::max(std::chrono::nanoseconds(1), ceil_ns(1.0 / *options.rate_per_second));
    s.burst = options.burst.value_or(1);
  }
  if (options.algo == algorithm::sliding_window) {
    s.limit = *options.limit;
    s.window = std::max(std::chrono::nanoseconds(1), ceil_ns(*options.window_seconds));
  }
  s.max_concurrent = options.max_concurrent.value_or(0);
  if (options.lease_seconds)
    s.lease = ceil_ns(*options.lease_seconds);
  if (options.timeout && options.timeout->count() < longest_timeout_s)
    s.default_timeout = std::chrono::duration_cast<std::chrono::nanoseconds>(*options.timeout);
  s.fail_closed = options.fail_closed;
  s.options = options;
  return s;
}

void permit::release() noexcept {
  if (auto core = std::move(core_))
    core->release(std::exchange(lease_, {}));
}

namespace detail {

limiter_core::limiter_core(limiter_spec spec, std::string store_name, std::shared_ptr<engine> store)
    : spec_(std::move(spec)), store_name_(std::move(store_name)), store_(std::move(store)),
      backend_(store_->make_backend(spec_)) {}

void limiter_core::release(lease_token lease) noexcept {
  // Counted first: once the backend has the slot back, another caller may
  // take it and be counted held before this release would be.
  metrics_.released();
  backend_->release(lease);
}

namespace {

// Checks the call's arguments and turns its timeout into a deadline.
acquire_request prepare(const limiter_spec& spec, const acquire_options& options,
                        std::chrono::steady_clock::time_point start) {
  if (options.cost < 1)
    throw invalid_argument(
        fmt::format("limiter \"{}\": cost must be at least 1 (got {})", spec.name, options.cost));
  if (options.cost > spec.max_cost())
    throw invalid_argument(fmt::format(
        "limiter \"{}\": cost {} exceeds the {} of {}; no wait "
        "could ever admit it",
        spec.name, options.cost, spec.emission_interval ? "burst" : "limit", spec.max_cost()));
  acquire_request req{options.key, options.cost, std::nullopt, start};
  if (options.timeout) {
    const double t = options.timeout->count();
    if (std::isnan(t) || t < 0)
      throw invalid_argument(fmt::format(
          "limiter \"{}\": timeout must be zero or positive seconds (got {})", spec.name, t));
    if (t < longest_timeout_s)
      req.deadline = start + std::chrono::duration_cast<std::chrono::nanoseconds>(*options.timeout);
  } else if (spec.default_timeout) {
    req.deadline = start + *spec.default_timeout;
  }
  return req;
}

[[noreturn]] void throw_denied(const limiter_spec& spec, const acquire_options& options,
                               const acquire_result& r) {
  throw acquisition_error(spec.name, options.key, r.retry_after, r.reason);
}

bool is_cancellation(const std::system_error& e) {
  return e.code() == asio::error::operation_aborted;
}

} // namespace

acquire_result limiter_core::finish(const acquire_outcome& out,
                                    std::chrono::steady_clock::time_point start, bool waited) {
  if (out.hit_concurrency_limit)
    metrics_.concurrency_full();
  acquire_result r;
  r.allowed = out.admitted;
  if (out.admitted) {
    const auto at = waited ? std::chrono::steady_clock::now() : start;
    metrics_.acquired(at - start, at);
    r.permit = permit(shared_from_this(), out.lease);
  } else {
    r.retry_after = out.retry_after;
    r.reason = out.reason;
    if (out.reason == denial_reason::timed_out)
      metrics_.timed_out();
    else
      metrics_.denied();
  }
  return r;
}

namespace {

// A store that cannot decide: admit without a lease (fail open) or rethrow.
acquire_outcome on_store_error(const limiter_spec& spec, metrics_recorder& metrics,
                               const store_error& e) {
  metrics.store_error(e.circuit_open());
  if (spec.fail_closed)
    throw;
  acquire_outcome out;
  out.admitted = true;
  return out;
}

} // namespace

std::optional<acquire_result>
limiter_core::decide_now(const acquire_request& req, std::chrono::steady_clock::time_point start) {
  std::optional<acquire_outcome> out;
  try {
    out = backend_->try_acquire_now(req);
  } catch (const store_error& e) {
    out = on_store_error(spec_, metrics_, e);
  }
  if (!out)
    return std::nullopt;
  return finish(*out, start, false);
}

acquire_outcome limiter_core::recover(std::exception_ptr failure) {
  try {
    std::rethrow_exception(std::move(failure));
  } catch (const store_error& e) {
    return on_store_error(spec_, metrics_, e);
  } catch (const std::system_error& e) {
    if (is_cancellation(e))
      metrics_.cancelled();
    throw;
  }
}

asio::awaitable<acquire_result> limiter_core::try_acquire(std::shared_ptr<limiter_core> self,
                                                          acquire_options options) {
  const auto start = std::chrono::steady_clock::now();
  const acquire_request req = prepare(self->spec_, options, start);
  if (auto r = self->decide_now(req, start))
    co_return std::move(*r);
  acquire_outcome out;
  try {
    out = co_await self->backend_->acquire(req);
  } catch (...) {
    out = self->recover(std::current_exception());
  }
  co_return self->finish(out, start, true);
}

asio::awaitable<permit> limiter_core::acquire(std::shared_ptr<limiter_core> self,
                                              acquire_options options) {
  const auto start = std::chrono::steady_clock::now();
  const acquire_request req = prepare(self->spec_, options, start);
  std::optional<acquire_result> r = self->decide_now(req, start);
  if (!r) {
    acquire_outcome out;
    try {
      out = co_await self->backend_->acquire(req);
    } catch (...) {
      out = self->recover(std::current_exception());
    }
    r = self->finish(out, start, true);
  }
  if (!r->allowed)
    throw_denied(self->spec_, options, *r);
  co_return std::move(r->permit);
}

asio::awaitable<limiter_state> limiter_core::get_state(std::shared_ptr<limiter_core> self,
                                                       std::string key) {
  co_return co_await self->backend_->get_state(std::move(key));
}

asio::awaitable<void> limiter_core::reset(std::shared_ptr<limiter_core> self, std::string key) {
  co_await self->backend_->reset(std::move(key));
}

} // namespace detail
} // namespace ratesync

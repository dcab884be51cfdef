// The memory engine: per-key GCRA / sliding log / concurrency slots behind a
// sharded mutex; waits on timers and channels of the caller's executor.
#include "ratesync/memory/memory_engine.hpp"

#include <array>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/concurrent_channel.hpp>
#include <asio/experimental/deferred.hpp>
#include <asio/experimental/parallel_group.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "ratesync/memory/gcra.hpp"
#include "ratesync/memory/sliding_log.hpp"

namespace ratesync::memory {
namespace {

using ns = std::int64_t;
using steady = std::chrono::steady_clock;
constexpr ns forever = std::numeric_limits<ns>::max();

ns now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(steady::now().time_since_epoch())
      .count();
}

std::chrono::microseconds to_us_ceil(ns d) noexcept {
  return std::chrono::microseconds(d <= 0 ? 0 : (d + 999) / 1000);
}

// A caller queued for a concurrency slot. Whoever frees a slot hands it over
// under the shard's lock (state = granted) and then signals the channel, which
// is safe from any thread and remembers a signal sent before anyone waits.
struct waiter {
  enum class state { queued, granted, gone };
  explicit waiter(const asio::any_io_executor& ex) : wake(ex, 1) {}
  // (Asio 1.22 cannot instantiate a channel of void(error_code) alone.)
  asio::experimental::concurrent_channel<void(std::error_code, bool)> wake;
  state st = state::queued;
  std::list<std::shared_ptr<waiter>>::iterator pos;
};

struct shard;

struct key_state {
  std::optional<gcra> bucket;
  std::optional<sliding_log> window;
  std::int64_t held = 0;
  std::list<std::shared_ptr<waiter>> waiters; // FIFO
  shard* home = nullptr;
  // acquire() coroutines that hold a pointer to this state. acquire() drops
  // the shard's lock between its steps; without the pin, another thread's
  // find_or_create could sweep the state (idle: nothing held, nothing
  // reserved yet, or just reset) in between, and the coroutine would then
  // read freed memory (ASan: heap-use-after-free in acquire()).
  std::int64_t pins = 0;

  bool idle(ns now) const noexcept {
    return pins == 0 && held == 0 && waiters.empty() && (!bucket || bucket->idle(now)) &&
           (!window || window->idle(now));
  }
};

struct string_hash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};

struct shard {
  std::mutex mu;
  std::unordered_map<std::string, std::unique_ptr<key_state>, string_hash, std::equal_to<>> keys;
  std::size_t sweep_at = 1024;
  // The latest time a decision in this shard was made at: decisions are
  // made in time order (see try_acquire_now).
  std::int64_t last_decision = 0;
};

constexpr std::size_t shard_count = 16;

class memory_backend final : public backend {
public:
  explicit memory_backend(limiter_spec spec) : spec_(std::move(spec)) {}

  asio::awaitable<acquire_outcome> acquire(acquire_request req) override;
  std::optional<acquire_outcome> try_acquire_now(const acquire_request& req) override;
  void release(lease_token lease) noexcept override;
  asio::awaitable<limiter_state> get_state(std::string key) override;
  asio::awaitable<void> reset(std::string key) override;

private:
  shard& shard_for(std::string_view key) noexcept {
    return shards_[string_hash{}(key) % shard_count];
  }
  key_state& find_or_create(shard& sh, std::string_view key, ns now);
  // Frees one slot: to the first waiter if any (returned, to be woken after
  // the lock is dropped), else back to the pool.
  static std::shared_ptr<waiter> free_slot(key_state& st);
  static void wake(const std::shared_ptr<waiter>& w) {
    if (w)
      w->wake.try_send(std::error_code{}, true);
  }
  static ns max_wait(const acquire_request& req, ns now) noexcept {
    if (!req.deadline)
      return forever;
    const ns left =
        std::chrono::duration_cast<std::chrono::nanoseconds>(req.deadline->time_since_epoch())
            .count() -
        now;
    return left < 0 ? 0 : left;
  }

  limiter_spec spec_;
  std::array<shard, shard_count> shards_;
};

key_state& memory_backend::find_or_create(shard& sh, std::string_view key, ns now) {
  if (auto it = sh.keys.find(key); it != sh.keys.end())
    return *it->second;
  if (sh.keys.size() >= sh.sweep_at) {
    // Amortised O(1): a sweep happens only after the map has doubled.
    std::erase_if(sh.keys, [now](const auto& kv) { return kv.second->idle(now); });
    sh.sweep_at = std::max<std::size_t>(1024, 2 * sh.keys.size());
  }
  auto st = std::make_unique<key_state>();
  st->home = &sh;
  if (spec_.emission_interval)
    st->bucket.emplace(spec_.emission_interval->count(), spec_.burst);
  else if (spec_.limit > 0)
    st->window.emplace(spec_.limit, spec_.window.count());
  return *sh.keys.emplace(std::string(key), std::move(st)).first->second;
}

std::shared_ptr<waiter> memory_backend::free_slot(key_state& st) {
  if (st.waiters.empty()) {
    --st.held;
    return nullptr;
  }
  auto w = std::move(st.waiters.front());
  st.waiters.pop_front();
  w->st = waiter::state::granted;
  return w;
}

std::optional<acquire_outcome> memory_backend::try_acquire_now(const acquire_request& req) {
  acquire_outcome out;
  shard& sh = shard_for(req.key);
  std::lock_guard lk(sh.mu);
  // Decided at the call's start (one clock read less: it is a large part of
  // an in-process decision), but never before a decision already made in
  // this shard. A call that waited for the lock while another decided used
  // to decide at a time before that one's, out of order: a sliding window
  // then found the other's entry "in its future" and refused the call with
  // room to spare. Reading the clock here instead costs 15-20 % of the
  // decisions per second.
  const ns now = std::max(
      std::chrono::duration_cast<std::chrono::nanoseconds>(req.start.time_since_epoch()).count(),
      sh.last_decision);
  sh.last_decision = now;
  const ns allowed_wait = max_wait(req, now);
  key_state& st = find_or_create(sh, req.key, now);
  const bool limits_concurrency = spec_.max_concurrent > 0;
  if (limits_concurrency && (st.held >= spec_.max_concurrent || !st.waiters.empty())) {
    if (allowed_wait > 0)
      return std::nullopt; // queue for a slot
    out.hit_concurrency_limit = true;
    out.reason = denial_reason::concurrency_limited;
    return out;
  }
  // Only an immediate admission is taken here; a wait that fits goes to the
  // coroutine, which reserves it.
  ns retry_after = 0;
  if (st.bucket) {
    auto d = st.bucket->take(now, req.cost, 0);
    retry_after = d.allowed ? 0 : d.retry_after;
  } else if (st.window) {
    auto d = st.window->take(now, req.cost, 0);
    retry_after = d.allowed ? 0 : d.retry_after;
  }
  if (retry_after > 0) {
    if (retry_after <= allowed_wait)
      return std::nullopt;
    out.retry_after = to_us_ceil(retry_after);
    return out;
  }
  out.admitted = true;
  if (limits_concurrency) {
    ++st.held;
    out.lease = lease_token{&st, 1};
  }
  return out;
}

asio::awaitable<acquire_outcome> memory_backend::acquire(acquire_request req) {
  acquire_outcome out;
  shard& sh = shard_for(req.key);
  key_state* st = nullptr;

  // Undoes on any exit (return, exception, frame destroyed) what was not
  // committed: a held slot, a queued waiter, a reservation. Always unpins
  // the key's state.
  struct guard {
    explicit guard(shard* s) : sh(s) {}
    guard(const guard&) = delete;
    guard& operator=(const guard&) = delete;
    shard* sh;
    key_state* st = nullptr;
    bool slot = false;
    std::shared_ptr<waiter> queued;
    std::optional<gcra::reservation> bucket_slot;
    std::optional<std::pair<ns, std::int64_t>> window_slot; // (at, cost)
    ~guard() {
      if (!st)
        return;
      std::shared_ptr<waiter> to_wake;
      {
        std::lock_guard lk(sh->mu);
        if (queued && queued->st == waiter::state::queued) {
          st->waiters.erase(queued->pos);
          queued->st = waiter::state::gone;
        } else if (queued && queued->st == waiter::state::granted) {
          slot = true; // handed to us while we were leaving
        }
        if (bucket_slot)
          st->bucket->cancel(*bucket_slot);
        if (window_slot)
          st->window->cancel(window_slot->first, window_slot->second);
        if (slot)
          to_wake = free_slot(*st);
        --st->pins;
      }
      wake(to_wake);
    }
  } g(&sh);

  const bool limits_concurrency = spec_.max_concurrent > 0;
  std::shared_ptr<waiter> w;
  {
    std::lock_guard lk(sh.mu);
    const ns now = now_ns();
    sh.last_decision = std::max(sh.last_decision, now);
    st = &find_or_create(sh, req.key, now);
    ++st->pins; // until the guard goes
    g.st = st;
    if (limits_concurrency) {
      if (st->held < spec_.max_concurrent && st->waiters.empty()) {
        ++st->held;
        g.slot = true;
      } else {
        out.hit_concurrency_limit = true;
        if (max_wait(req, now) == 0) {
          out.reason = denial_reason::concurrency_limited;
          co_return out;
        }
        w = std::make_shared<waiter>(co_await asio::this_coro::executor);
        w->pos = st->waiters.insert(st->waiters.end(), w);
        g.queued = w;
      }
    }
  }
  if (w) {
    std::error_code deadline_ec = asio::error::operation_aborted;
    if (req.deadline) {
      asio::steady_timer timer(co_await asio::this_coro::executor, *req.deadline);
      auto [order, wake_ec, woken, timer_ec] =
          co_await asio::experimental::make_parallel_group(
              w->wake.async_receive(asio::experimental::deferred),
              timer.async_wait(asio::experimental::deferred))
              .async_wait(asio::experimental::wait_for_one(), asio::use_awaitable);
      (void)order;
      (void)wake_ec;
      (void)woken;
      deadline_ec = timer_ec;
    } else {
      auto [wake_ec, woken] =
          co_await w->wake.async_receive(asio::experimental::as_tuple(asio::use_awaitable));
      (void)wake_ec;
      (void)woken;
    }
    const bool caller_cancelled =
        (co_await asio::this_coro::cancellation_state).cancelled() != asio::cancellation_type::none;
    {
      std::lock_guard lk(sh.mu);
      if (w->st == waiter::state::granted) {
        g.slot = true;
        g.queued.reset();
      }
    }
    if (caller_cancelled)
      throw std::system_error(asio::error::operation_aborted);
    if (!g.slot) {
      if (!deadline_ec) {
        out.reason = denial_reason::timed_out;
        co_return out; // the guard takes the waiter out of the queue
      }
      throw std::system_error(asio::error::operation_aborted);
    }
  }

  // The rate (or window) decision, holding the slot if there is one.
  if (st->bucket || st->window) {
    ns wait = 0;
    {
      std::lock_guard lk(sh.mu);
      const ns now = now_ns();
      sh.last_decision = std::max(sh.last_decision, now);
      const ns allowed_wait = max_wait(req, now);
      if (st->bucket) {
        auto d = st->bucket->take(now, req.cost, allowed_wait);
        if (!d.allowed) {
          out.retry_after = to_us_ceil(d.retry_after);
          co_return out; // the guard frees the slot
        }
        wait = d.wait;
        if (wait > 0)
          g.bucket_slot = d.slot;
      } else {
        auto d = st->window->take(now, req.cost, allowed_wait);
        if (!d.allowed) {
          out.retry_after = to_us_ceil(d.retry_after);
          co_return out;
        }
        wait = d.wait;
        if (wait > 0)
          g.window_slot.emplace(d.at, req.cost);
      }
    }
    if (wait > 0) {
      asio::steady_timer timer(co_await asio::this_coro::executor, std::chrono::nanoseconds(wait));
      auto [ec] = co_await timer.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
      if (ec)
        throw std::system_error(ec); // cancelled: the guard gives the slot back
      std::lock_guard lk(sh.mu);
      if (g.bucket_slot)
        st->bucket->admitted(*g.bucket_slot);
      g.bucket_slot.reset();
      g.window_slot.reset();
    }
  }

  out.admitted = true;
  if (g.slot)
    out.lease = lease_token{st, 1};
  g.slot = false; // committed; the guard only unpins
  co_return out;
}

void memory_backend::release(lease_token lease) noexcept {
  auto* st = static_cast<key_state*>(lease.state);
  if (!st)
    return;
  std::shared_ptr<waiter> to_wake;
  {
    std::lock_guard lk(st->home->mu);
    to_wake = free_slot(*st);
  }
  wake(to_wake);
}

asio::awaitable<limiter_state> memory_backend::get_state(std::string key) {
  limiter_state s;
  shard& sh = shard_for(key);
  std::lock_guard lk(sh.mu);
  const ns now = now_ns();
  auto it = sh.keys.find(key);
  const key_state* st = it == sh.keys.end() ? nullptr : it->second.get();
  if (spec_.emission_interval) {
    gcra fresh(spec_.emission_interval->count(), spec_.burst);
    const gcra& b = st ? *st->bucket : fresh;
    s.remaining = b.remaining(now);
    s.retry_after = to_us_ceil(b.retry_after(now));
    s.reset_after = to_us_ceil(b.reset_after(now));
  } else if (spec_.limit > 0) {
    sliding_log fresh(spec_.limit, spec_.window.count());
    const sliding_log& l = st ? *st->window : fresh;
    s.remaining = l.remaining(now);
    s.retry_after = to_us_ceil(l.retry_after(now));
    s.reset_after = to_us_ceil(l.reset_after(now));
  } else {
    s.remaining = spec_.max_concurrent - (st ? st->held : 0);
  }
  if (st)
    s.current_concurrent = st->held;
  co_return s;
}

asio::awaitable<void> memory_backend::reset(std::string key) {
  shard& sh = shard_for(key);
  std::lock_guard lk(sh.mu);
  if (auto it = sh.keys.find(key); it != sh.keys.end()) {
    if (it->second->bucket)
      it->second->bucket->reset();
    if (it->second->window)
      it->second->window->reset();
  }
  co_return;
}

class memory_engine final : public engine {
public:
  std::unique_ptr<backend> make_backend(const limiter_spec& spec) override {
    return std::make_unique<memory_backend>(spec);
  }
};

} // namespace

std::shared_ptr<engine> make_engine() {
  return std::make_shared<memory_engine>();
}

} // namespace ratesync::memory

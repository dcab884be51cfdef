// The redis engine: keys, the scripts' arguments and replies, waiting for a
// reserved slot, polling for a concurrency slot, lease renewal, the circuit
// breaker. The transport (connection, pool) knows nothing of limiters.
#include "redis/redis_engine.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <iterator>
#include <span>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <atomic>
#include <cmath>
#include <fmt/format.h>
#include <functional>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "redis/lua_scripts.hpp"
#include "redis/pool.hpp"
#include "redis/script.hpp"
#include "redis/script_reply.hpp"
#include "redis/url.hpp"
#include "thread_name.hpp"

namespace ratesync::redis {

using steady = std::chrono::steady_clock;
using namespace std::chrono_literals;
namespace ex = asio::experimental;

namespace {

bool plain(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-' || c == '.';
}

std::string segment(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (plain(c))
      out += static_cast<char>(c);
    else
      out += fmt::format("%{:02X}", c);
  }
  if (out.size() > 128) {
    out = "#"; // never produced by the encoding above
    out += sha1_hex(s);
  }
  return out;
}

std::int64_t to_us(std::chrono::nanoseconds d) {
  return (d.count() + 999) / 1000;
}

// After `threshold` failures in a row the breaker opens: callers get an
// answer at once (store_error with circuit_open) instead of each waiting
// socket_timeout. After a cool-down one probe goes through; success closes
// it, failure reopens it with a longer cool-down.
class circuit_breaker {
public:
  static constexpr int threshold = 3;

  // What allow() decided for one call.
  enum class pass { closed, probe, rejected };

  pass allow() {
    std::lock_guard lk(mu_);
    if (!open_)
      return pass::closed;
    const auto now = steady::now();
    if (now < retry_at_ || probing_)
      return pass::rejected;
    probing_ = true; // half-open: this caller is the probe
    return pass::probe;
  }
  void success() {
    std::lock_guard lk(mu_);
    failures_ = 0;
    open_ = false;
    probing_ = false;
    cooldown_ = initial;
  }
  // Only a failed probe lengthens the cool-down. Under load hundreds of calls
  // are on their way when Redis fails; each of their failures used to double
  // it, so it reached its longest at the very start of an outage, and
  // service came back up to that long after Redis did.
  void failure(pass how) {
    std::lock_guard lk(mu_);
    if (open_) {
      if (how != pass::probe)
        return;
      probing_ = false;
      cooldown_ = std::min<std::chrono::nanoseconds>(cooldown_ * 2, longest);
      retry_at_ = steady::now() + cooldown_;
    } else if (++failures_ >= threshold) {
      open_ = true;
      retry_at_ = steady::now() + cooldown_;
    }
  }
  // The call was cancelled by its caller: no verdict on Redis. A cancelled
  // probe hands the probe on (it used to keep the breaker open for good).
  void abandoned(pass how) {
    std::lock_guard lk(mu_);
    if (how == pass::probe)
      probing_ = false;
  }
  bool is_open() const {
    std::lock_guard lk(mu_);
    return open_;
  }

private:
  static constexpr std::chrono::nanoseconds initial = 100ms;
  // Bounds the time from Redis coming back to the next probe.
  static constexpr std::chrono::nanoseconds longest = 1s;
  mutable std::mutex mu_;
  int failures_ = 0;
  bool open_ = false;
  bool probing_ = false;
  std::chrono::nanoseconds cooldown_ = initial;
  steady::time_point retry_at_{};
};

// The scripts, shared by every store: a fire-and-forget call may still be
// running (its reply on the way, or a retry as EVAL) after its store is gone.
// Never destroyed: a store of the default registry (a static, destroyed at
// exit after anything made later) still sends scripts while it drains.
struct script_set {
  script token_bucket{"token_bucket", std::string(lua::token_bucket)};
  script sliding_window{"sliding_window", std::string(lua::sliding_window)};
  script concurrency{"concurrency", std::string(lua::concurrency)};
  script renew_lease{"renew_lease", std::string(lua::renew_lease)};
  script undo{"undo", std::string(lua::undo)};
  script state{"state", std::string(lua::state)};
};

const script_set& scripts() {
  // NOLINTNEXTLINE(cppcoreguidelines-owning-memory): leaked on purpose (above)
  static const script_set* const set = new script_set;
  return *set;
}

class redis_store;

// Registered in an io_context given as store_options::io_context: when that
// context is destroyed before a store on it (a store of the default
// registry, which lives until exit, on a context of main's), shutdown()
// tells each store, which lets go of its connections and its timer while
// their services still exist, and answers every later call with a
// store_error instead of touching the context.
class context_watch final : public asio::execution_context::service {
public:
  // Asio's service key (its constructor is empty, but not noexcept).
  // NOLINTNEXTLINE(cppcoreguidelines-avoid-non-const-global-variables,cert-err58-cpp)
  inline static asio::execution_context::id id;
  explicit context_watch(asio::execution_context& ctx) : service(ctx) {}
  void add(std::weak_ptr<redis_store> store);

private:
  void shutdown() override;
  std::mutex mu_;
  std::vector<std::weak_ptr<redis_store>> stores_;
};

struct lease_record {
  std::string key; // the leases zset
  std::string id;  // member
  std::int64_t ttl_us = 0;
  steady::time_point next_renewal;
};

// A store's shared state: its connections, leases and releases. The engine
// the registry holds (redis_engine, below) owns its life cycle; the backends
// hold it too. The store's own handlers (ZREM completions, fire-and-forget
// scripts, the posted flush of releases, the renewal loop) hold it only
// weakly: they may outlive it on a context that is not the store's (the
// caller's, store_options::io_context), and on its own thread they may be
// queued behind the handler that drops the last reference. Once it is gone
// they do nothing.
class redis_store final : public batch_end_work, public std::enable_shared_from_this<redis_store> {
public:
  redis_store(std::string name, const store_options& o);
  redis_store(const redis_store&) = delete;
  redis_store& operator=(const redis_store&) = delete;
  ~redis_store() override = default;

  // Starts the renewal loop (it needs a weak reference: after construction).
  void start();
  // Fails what the connections hold with errc::shutting_down and stops them,
  // the renewal loop, and the store's own thread if it has one (each posted
  // to the context, behind what is queued there). Idempotent.
  void stop();

  asio::io_context& context() const noexcept { return ctx_; }
  bool owns_thread() const noexcept { return own_ != nullptr; }
  // Runs the store's own io_context (its thread's body), in a thread named
  // "rs-io:<store>" (cut to 15 characters).
  std::function<void()> thread_body() const {
    return [io = own_, name = "rs-io:" + name_] {
      ratesync::detail::name_this_thread(name);
      io->ctx.run();
    };
  }
  // Fire-and-forget commands (releases, undos, renewals) not yet answered.
  std::int64_t unsent() const noexcept { return unsent_.load(std::memory_order_acquire); }
  std::chrono::nanoseconds drain_limit() const noexcept { return drain_limit_; }

  // One script call: through the breaker, on the least loaded connection.
  // Returns the reply (which may be an error reply only for NOSCRIPT-free
  // script errors); throws store_error on any failure. `sent_on`, if given,
  // is set to the connection the call went to (stays empty when the breaker
  // answered). `lease_key`, if given, is the leases key the script reads:
  // releases waiting for that key ride in the script as trailing ARGV (the
  // decision scripts remove them first) instead of a ZREM of their own.
  asio::awaitable<reply_ptr> call(const script& s, std::span<const std::string_view> keys,
                                  std::span<const std::string_view> args,
                                  std::shared_ptr<connection>* sent_on = nullptr,
                                  std::string_view lease_key = {});
  // Fire and forget (renewals): the caller does not wait.
  void send_script(const script& s, std::vector<std::string> keys, std::vector<std::string> args);

  std::string new_id() {
    return fmt::format("{}-{:x}", nonce_, counter_.fetch_add(1, std::memory_order_relaxed));
  }
  // ZREM of a lease, fire and forget, retried (every 250 ms, from the
  // renewal loop) until Redis answers or the lease has expired by itself
  // (`ttl_us`): a lease left behind keeps its slot taken for lease_seconds
  // with no holder. `on`: the connection a lost script call went to, so that
  // the ZREM follows the script there (sent at once); without it the removal
  // is queued with the other releases (queue_release).
  void remove_lease(std::string key, std::string id, std::int64_t ttl_us,
                    const std::shared_ptr<connection>& on = nullptr);
  void add_lease(std::uint64_t token, lease_record r);

  // Forgets the lease (no removal from Redis) and returns its record, if it
  // was there.
  std::optional<lease_record> drop_lease(std::uint64_t token);
  // Stops renewing the lease and removes it from Redis (fire and forget).
  void release_lease(std::uint64_t token);
  // A connection for a request; store_error once the store's io_context is
  // gone (context_destroyed()).
  std::shared_ptr<connection> pick() {
    std::shared_ptr<connection> c = pool_->pick();
    if (c == nullptr)
      throw store_error(name_, gone_message);
    return c;
  }
  // Called by context_watch while the io_context given as
  // store_options::io_context is destroyed.
  void context_destroyed() noexcept;
  bool context_gone() const noexcept { return gone_.load(std::memory_order_acquire); }
  std::uint64_t next_token() { return tokens_.fetch_add(1, std::memory_order_relaxed); }

  const std::string& name() const { return name_; }
  const std::string& prefix() const { return prefix_; }
  std::int64_t margin_us() const { return margin_us_; }
  bool degraded() const { return breaker_.is_open(); }

  const script& token_bucket = scripts().token_bucket;
  const script& sliding_window = scripts().sliding_window;
  const script& concurrency = scripts().concurrency;
  const script& renew_lease = scripts().renew_lease;
  const script& undo = scripts().undo;
  const script& state = scripts().state;

private:
  static asio::awaitable<void> renew_loop(std::weak_ptr<redis_store> store,
                                          std::shared_ptr<asio::steady_timer> tick);
  // One turn of the renewal loop: renewals due, removals to retry.
  void renew_due();

  // The store's own io_context, when it has one (no store_options::io_context),
  // shared with its thread: when the store is stopped on that thread, the
  // thread cannot be joined, and keeps the io_context until run() returns.
  // First, so that it goes last: the connections are bound to it.
  struct io_thread {
    asio::io_context ctx;
  };
  std::shared_ptr<io_thread> own_;
  asio::io_context& ctx_; // own_->ctx, or the caller's
  std::string name_;
  std::string prefix_;
  std::int64_t margin_us_;
  std::unique_ptr<pool> pool_;
  std::shared_ptr<asio::steady_timer> tick_; // the renewal loop's; stop() cancels it
  std::atomic<bool> stopped_{false};
  std::atomic<bool> gone_{false}; // the io_context was destroyed
  static constexpr const char* gone_message =
      "the io_context it ran on (store_options::io_context) was destroyed before the store";
  circuit_breaker breaker_;
  std::string nonce_;
  std::atomic<std::uint64_t> counter_{1};
  std::atomic<std::uint64_t> tokens_{1};
  std::atomic<std::int64_t> unsent_{0}; // fire-and-forget commands not yet answered
  std::chrono::nanoseconds drain_limit_;
  std::mutex leases_mu_;
  std::unordered_map<std::uint64_t, lease_record> leases_;
  struct pending_removal {
    std::string key;
    std::string id;
    steady::time_point give_up;
  };
  void send_removal(pending_removal p, const std::shared_ptr<connection>& on);
  // Releases wait in `releases_` so that those made close together go out as
  // one ZREM per leases key: sent by the store's next decision on its own
  // connection, before its script (that decision cannot overtake them), or
  // else when the batch of reply handlers that made them ends (batch_ended),
  // or else by a flush posted to the I/O thread when the first one arrives.
  // Those two go on the connection the pool picks: under load (more than
  // one connection) the caller's next decision may take another and reach
  // Redis first (docs/engines/redis.md, "Pool"). send_releases returns, unsent, those
  // for `fold_key` (at most one ZREM's worth): the caller sends them in its
  // script and settles them when the script has answered.
  void queue_release(pending_removal p);
  void batch_ended() noexcept override;
  std::vector<pending_removal> send_releases(const std::shared_ptr<connection>& on,
                                             std::string_view fold_key = {});
  // One ZREM of the group's ids (all on one key) on `on`, settled by its reply.
  void send_zrem(std::vector<pending_removal> group, const std::shared_ptr<connection>& on);
  // Removals sent and answered (or not): unanswered ones are retried by the
  // renewal loop until they expire by themselves.
  void settle_removals(std::vector<pending_removal>& group, std::error_code ec, const reply_ptr& r);
  std::mutex releases_mu_;
  std::vector<pending_removal> releases_;
  std::atomic<bool> releases_waiting_{false};
  std::mutex removals_mu_;
  std::vector<pending_removal> removals_; // failed ZREMs, for the next retry
  steady::time_point next_retry_{};
};

connection_options transport_options(const store_options& o) {
  connection_options c;
  c.where = parse_url(o.url);
  if (o.db)
    c.where.db = *o.db;
  // An empty password (e.g. "${REDIS_PASSWORD:-}" unset) overrides nothing.
  if (o.password && !o.password->empty())
    c.where.password = *o.password;
  c.connect_timeout =
      std::chrono::duration_cast<std::chrono::nanoseconds>(o.socket_connect_timeout);
  c.request_timeout = std::chrono::duration_cast<std::chrono::nanoseconds>(o.socket_timeout);
  c.health_check_interval =
      std::chrono::duration_cast<std::chrono::nanoseconds>(o.health_check_interval);
  c.tls.ca_file = o.tls_ca_file;
  c.tls.cert_file = o.tls_cert_file;
  c.tls.key_file = o.tls_key_file;
  c.tls.server_name = o.tls_server_name;
  c.tls.verify = !o.tls_insecure_skip_verify;
  return c;
}

redis_store::redis_store(std::string name, const store_options& o)
    : own_(o.io_context != nullptr ? nullptr : std::make_shared<io_thread>()),
      ctx_(o.io_context != nullptr ? *o.io_context : own_->ctx), name_(std::move(name)),
      prefix_(o.key_prefix),
      margin_us_(static_cast<std::int64_t>(std::ceil(o.timing_margin_ms * 1000.0))),
      tick_(std::make_shared<asio::steady_timer>(ctx_)),
      drain_limit_(std::chrono::duration_cast<std::chrono::nanoseconds>(o.socket_timeout)) {
  connection_options c = transport_options(o);
  std::shared_ptr<asio::ssl::context> tls;
  if (c.where.kind == transport_kind::tls)
    tls = make_tls_context(c.tls);
  pool_ = std::make_unique<pool>(ctx_, std::move(c), std::move(tls),
                                 static_cast<std::size_t>(o.pool_min_size),
                                 static_cast<std::size_t>(o.pool_max_size));
  std::random_device rd;
  nonce_ = fmt::format("{:08x}{:08x}", rd(), rd());
}

void redis_store::start() {
  if (!own_)
    asio::use_service<context_watch>(ctx_).add(weak_from_this());
  asio::co_spawn(ctx_, renew_loop(weak_from_this(), tick_), asio::detached);
}

void context_watch::add(std::weak_ptr<redis_store> store) {
  std::lock_guard lk(mu_);
  std::erase_if(stores_, [](const std::weak_ptr<redis_store>& w) { return w.expired(); });
  stores_.push_back(std::move(store));
}

void context_watch::shutdown() {
  std::vector<std::weak_ptr<redis_store>> stores;
  {
    std::lock_guard lk(mu_);
    stores.swap(stores_);
  }
  for (const auto& w : stores)
    if (const auto s = w.lock())
      s->context_destroyed();
}

void redis_store::context_destroyed() noexcept {
  gone_.store(true, std::memory_order_release);
  stopped_.store(true, std::memory_order_release);
  // The context's handlers (the connections' coroutines, the renewal loop)
  // are destroyed after this, with the context; what the store holds goes
  // now, while the socket and timer services still exist.
  pool_->abandon();
  tick_.reset();
}

void redis_store::stop() {
  if (stopped_.exchange(true, std::memory_order_acq_rel))
    return;
  pool_->stop();
  asio::post(ctx_, [tick = tick_] { tick->cancel(); });
  if (own_)
    asio::post(ctx_, [io = own_] { io->ctx.stop(); }); // after the connections' stop()
}

asio::awaitable<reply_ptr> redis_store::call(const script& s,
                                             std::span<const std::string_view> keys,
                                             std::span<const std::string_view> args,
                                             std::shared_ptr<connection>* sent_on,
                                             std::string_view lease_key) {
  if (context_gone())
    throw store_error(name_, gone_message);
  const circuit_breaker::pass pass = breaker_.allow();
  if (pass == circuit_breaker::pass::rejected)
    throw store_error(
        name_, "Redis is failing; the circuit breaker answers at once until a probe succeeds",
        true);
  // The breaker's verdict on this call. A call that ends without one (its
  // coroutine destroyed while it waited for Redis, because its caller's
  // io_context went; an exception on the way) counts as abandoned, so that a
  // probe is handed on: a probe that gave no verdict kept the breaker open
  // for good, Redis back or not.
  struct verdict_t {
    circuit_breaker& breaker;
    circuit_breaker::pass pass;
    bool given = false;
    verdict_t(circuit_breaker& b, circuit_breaker::pass p) : breaker(b), pass(p) {}
    verdict_t(const verdict_t&) = delete;
    verdict_t& operator=(const verdict_t&) = delete;
    ~verdict_t() {
      if (!given)
        breaker.abandoned(pass);
    }
  } verdict(breaker_, pass);
  auto conn = pick();
  if (sent_on != nullptr)
    *sent_on = conn;
  // Releases riding in this call are settled when it has answered, or, if
  // this coroutine is destroyed before (its caller's io_context went
  // first), put on the retry list: whether the script ran is unknown.
  struct riding_releases {
    redis_store& store;
    std::vector<pending_removal> list;
    explicit riding_releases(redis_store& s) : store(s) {}
    riding_releases(const riding_releases&) = delete;
    riding_releases& operator=(const riding_releases&) = delete;
    ~riding_releases() {
      if (!list.empty())
        store.settle_removals(list, asio::error::operation_aborted, nullptr);
    }
  } folded(*this);
  std::vector<std::string_view> with_releases;
  if (releases_waiting_.load(std::memory_order_acquire)) {
    folded.list = send_releases(conn, lease_key);
    if (!folded.list.empty()) {
      with_releases.reserve(args.size() + folded.list.size());
      with_releases.assign(args.begin(), args.end());
      for (const pending_removal& p : folded.list)
        with_releases.emplace_back(p.id);
      args = with_releases;
    }
  }
  // run_script() inlined: one coroutine level less on every decision.
  auto [ec, reply] = co_await conn->async_execute(encode_evalsha(s, keys, args),
                                                  ex::as_tuple(asio::use_awaitable));
  script_result r{ec, std::move(reply)};
  if (!ec && is_noscript(r.reply))
    r = co_await retry_as_eval(conn, s, keys, args);
  if (!folded.list.empty()) {
    settle_removals(folded.list, r.error, r.reply);
    folded.list.clear();
  }
  if (r.error == asio::error::operation_aborted)
    throw std::system_error(r.error); // the caller cancelled: not a store failure (abandoned)
  verdict.given = true;
  if (r.error) {
    breaker_.failure(pass);
    std::string why = conn->last_error();
    throw store_error(name_, why.empty() ? r.error.message()
                                         : fmt::format("{} ({})", r.error.message(), why));
  }
  if (r.reply->type == REDIS_REPLY_ERROR) {
    breaker_.failure(pass);
    throw store_error(name_, fmt::format("Redis refused {}: {}", s.name(), reply_text(*r.reply)));
  }
  breaker_.success();
  co_return std::move(r.reply);
}

void redis_store::send_script(const script& s, std::vector<std::string> keys,
                              std::vector<std::string> args) {
  std::shared_ptr<connection> conn = pool_->pick();
  if (conn == nullptr)
    return; // the io_context is gone
  unsent_.fetch_add(1, std::memory_order_relaxed);
  // The store weakly (see redis_store): holding it would keep it, and its
  // own io_context, alive in that io_context's queue after a shutdown.
  asio::co_spawn(
      ctx_,
      [w = weak_from_this(), conn = std::move(conn), &s, keys = std::move(keys),
       args = std::move(args)]() -> asio::awaitable<void> {
        std::vector<std::string_view> k(keys.begin(), keys.end());
        std::vector<std::string_view> a(args.begin(), args.end());
        co_await run_script(conn, s, k, a);
        if (const auto self = w.lock())
          self->unsent_.fetch_sub(1, std::memory_order_release);
      },
      asio::detached);
}

void redis_store::remove_lease(std::string key, std::string id, std::int64_t ttl_us,
                               const std::shared_ptr<connection>& on) {
  pending_removal p{std::move(key), std::move(id),
                    steady::now() + std::chrono::microseconds(ttl_us)};
  if (on)
    send_removal(std::move(p), on);
  else
    queue_release(std::move(p));
}

void redis_store::queue_release(pending_removal p) {
  if (context_gone())
    return; // nothing can send it: the lease expires after lease_seconds
  unsent_.fetch_add(1, std::memory_order_relaxed);
  bool first = false;
  {
    std::lock_guard lk(releases_mu_);
    first = releases_.empty();
    releases_.push_back(std::move(p));
    releases_waiting_.store(true, std::memory_order_release);
  }
  if (!first)
    return;
  // Made by a reply handler (a caller that released and goes on): its next
  // decision, or another's in the same batch, takes it, else the batch's end.
  try {
    if (connection::defer_to_batch_end(shared_from_this()))
      return;
  } catch (...) { // out of memory: posted instead
  }
  asio::post(ctx_, [w = weak_from_this()] {
    if (const auto self = w.lock())
      self->send_releases(nullptr);
  });
}

void redis_store::batch_ended() noexcept {
  if (!releases_waiting_.load(std::memory_order_acquire))
    return;
  try {
    send_releases(nullptr);
  } catch (...) { // out of memory: the leases expire after lease_seconds
  }
}

std::vector<redis_store::pending_removal>
redis_store::send_releases(const std::shared_ptr<connection>& on, std::string_view fold_key) {
  std::vector<pending_removal> all;
  std::vector<pending_removal> folded;
  {
    std::lock_guard lk(releases_mu_);
    all.swap(releases_);
    releases_waiting_.store(false, std::memory_order_relaxed);
  }
  if (all.empty())
    return folded;
  // One ZREM per key, of at most this many members.
  constexpr std::size_t most = 512;
  // All for the caller's key (one key, the common case): they ride as they are.
  if (!fold_key.empty() && all.size() <= most &&
      std::all_of(all.begin(), all.end(),
                  [&](const pending_removal& p) { return p.key == fold_key; }))
    return all;
  std::stable_sort(all.begin(), all.end(), [](const pending_removal& a, const pending_removal& b) {
    return a.key < b.key;
  });
  for (std::size_t i = 0; i < all.size();) {
    std::size_t j = i + 1;
    while (j < all.size() && j - i < most && all[j].key == all[i].key)
      ++j;
    if (folded.empty() && !fold_key.empty() && all[i].key == fold_key) {
      folded.assign(std::make_move_iterator(all.begin() + static_cast<std::ptrdiff_t>(i)),
                    std::make_move_iterator(all.begin() + static_cast<std::ptrdiff_t>(j)));
      i = j;
      continue;
    }
    send_zrem(std::vector<pending_removal>(
                  std::make_move_iterator(all.begin() + static_cast<std::ptrdiff_t>(i)),
                  std::make_move_iterator(all.begin() + static_cast<std::ptrdiff_t>(j))),
              on ? on : pool_->pick());
    i = j;
  }
  return folded;
}

void redis_store::send_zrem(std::vector<pending_removal> group,
                            const std::shared_ptr<connection>& on) {
  if (on == nullptr || context_gone()) { // the leases expire by themselves
    unsent_.fetch_sub(static_cast<std::int64_t>(group.size()), std::memory_order_release);
    return;
  }
  std::vector<std::string_view> argv{"ZREM", group.front().key};
  for (const pending_removal& p : group)
    argv.emplace_back(p.id);
  std::string payload = encode_command(argv);
  on->async_execute(
      std::move(payload),
      [w = weak_from_this(), group = std::move(group)](std::error_code ec, reply_ptr r) mutable {
        if (const auto self = w.lock())
          self->settle_removals(group, ec, r);
      },
      true); // background: a connection with many releases in flight is not busy
}

void redis_store::settle_removals(std::vector<pending_removal>& group, std::error_code ec,
                                  const reply_ptr& r) {
  const bool answered = !ec && r && r->type != REDIS_REPLY_ERROR;
  if (!answered && ec != errc::shutting_down) {
    const auto now = steady::now();
    std::lock_guard lk(removals_mu_);
    for (auto& p : group)
      if (now < p.give_up)
        removals_.push_back(std::move(p));
  }
  unsent_.fetch_sub(static_cast<std::int64_t>(group.size()), std::memory_order_release);
}

void redis_store::send_removal(pending_removal p, const std::shared_ptr<connection>& on) {
  unsent_.fetch_add(1, std::memory_order_relaxed);
  std::vector<pending_removal> group;
  group.push_back(std::move(p));
  send_zrem(std::move(group), on ? on : pool_->pick());
}

void redis_store::add_lease(std::uint64_t token, lease_record r) {
  std::lock_guard lk(leases_mu_);
  leases_.emplace(token, std::move(r));
}

std::optional<lease_record> redis_store::drop_lease(std::uint64_t token) {
  std::lock_guard lk(leases_mu_);
  auto it = leases_.find(token);
  if (it == leases_.end())
    return std::nullopt;
  std::optional<lease_record> r(std::move(it->second));
  leases_.erase(it);
  return r;
}

void redis_store::release_lease(std::uint64_t token) {
  std::optional<lease_record> r = drop_lease(token);
  if (r)
    remove_lease(std::move(r->key), std::move(r->id), r->ttl_us);
}

// Every live lease is renewed once a third of its time to live has passed,
// so a slot never expires while its holder lives.
asio::awaitable<void> redis_store::renew_loop(std::weak_ptr<redis_store> store,
                                              std::shared_ptr<asio::steady_timer> tick) {
  for (;;) {
    tick->expires_after(50ms);
    auto [ec] = co_await tick->async_wait(ex::as_tuple(asio::use_awaitable));
    const auto self = store.lock();
    if (ec || !self || self->stopped_.load(std::memory_order_acquire))
      co_return;
    self->renew_due();
  }
}

void redis_store::renew_due() {
  std::vector<lease_record> due;
  {
    std::lock_guard lk(leases_mu_);
    const auto now = steady::now();
    for (auto& [token, r] : leases_) {
      if (r.next_renewal <= now) {
        due.push_back(r);
        r.next_renewal = now + std::chrono::microseconds(r.ttl_us / 3);
      }
    }
  }
  const std::string ttl_margin = std::to_string(margin_us_);
  for (auto& r : due)
    send_script(renew_lease, {r.key}, {r.id, std::to_string(r.ttl_us), ttl_margin});
  // Lease removals that failed, again every 250 ms (one attempt each at a
  // time: a failed attempt puts it back).
  if (const auto now = steady::now(); now >= next_retry_) {
    next_retry_ = now + 250ms;
    std::vector<pending_removal> retry;
    {
      std::lock_guard lk(removals_mu_);
      retry.swap(removals_);
    }
    for (auto& p : retry)
      send_removal(std::move(p), nullptr);
  }
}

class redis_backend final : public backend {
public:
  redis_backend(std::shared_ptr<redis_store> store, limiter_spec spec);

  asio::awaitable<acquire_outcome> acquire(acquire_request req) override;
  void release(lease_token lease) noexcept override;
  asio::awaitable<limiter_state> get_state(std::string key) override;
  asio::awaitable<void> reset(std::string key) override;
  bool degraded() const noexcept override { return store_->degraded(); }

private:
  // key_base(prefix, limiter, key): the limiter's part is encoded once.
  std::string base(std::string_view key) const {
    std::string out = limiter_base_;
    if (!key.empty()) {
      out += '|';
      out += segment(key);
    }
    out += '}';
    return out;
  }
  const char* rate_suffix() const { return spec_.emission_interval ? ":tb" : ":sw"; }

  std::shared_ptr<redis_store> store_;
  limiter_spec spec_;
  // What every decision sends and that never changes, encoded once (the
  // per-call strings used to be a third of the client's allocations).
  std::string limiter_base_;                         // "<prefix>:{<limiter>"
  std::string default_rate_key_, default_lease_key_; // the keys of calls without a key
  const script* script_;
  decision_script kind_;
  std::string p1_, p2_; // interval and burst, or window and limit
  std::string margin_, lease_ttl_, maxc_;
};

redis_backend::redis_backend(std::shared_ptr<redis_store> store, limiter_spec spec)
    : store_(std::move(store)), spec_(std::move(spec)) {
  limiter_base_ = key_base(store_->prefix(), spec_.name, "");
  limiter_base_.pop_back(); // the closing '}'
  const std::string keyless = base("");
  default_rate_key_ = keyless + rate_suffix();
  default_lease_key_ = keyless + ":cc";
  const bool rate = spec_.has_rate();
  script_ = !rate ? &store_->concurrency
                  : (spec_.emission_interval ? &store_->token_bucket : &store_->sliding_window);
  kind_ = !rate ? decision_script::concurrency
                : (spec_.emission_interval ? decision_script::token_bucket
                                           : decision_script::sliding_window);
  if (spec_.emission_interval) {
    p1_ = std::to_string(to_us(*spec_.emission_interval));
    p2_ = std::to_string(spec_.burst);
  } else if (rate) {
    p1_ = std::to_string(to_us(spec_.window));
    p2_ = std::to_string(spec_.limit);
  }
  margin_ = std::to_string(store_->margin_us());
  lease_ttl_ = std::to_string(to_us(spec_.lease));
  maxc_ = std::to_string(spec_.max_concurrent);
}

asio::awaitable<acquire_outcome> redis_backend::acquire(acquire_request req) {
  acquire_outcome out;
  const bool rate = spec_.has_rate();
  const bool slots = spec_.max_concurrent > 0;
  // A limiter without per-call keys (the common case) uses the keys made at
  // construction; the lease key is made only where a script reads it.
  std::string own_rate_key;
  std::string own_lease_key;
  std::string_view rate_key = default_rate_key_;
  std::string_view lease_key = default_lease_key_;
  if (!req.key.empty()) {
    const std::string b = base(req.key);
    if (rate)
      rate_key = own_rate_key = b + rate_suffix();
    if (slots || !rate)
      lease_key = own_lease_key = b + ":cc";
  }
  // The request id names the lease and the sliding window's log entries; a
  // token bucket without max_concurrent never reads it.
  // (Moved into the lease's record once admitted; the undo takes it back.)
  std::string id = (slots || !spec_.emission_interval) ? store_->new_id() : std::string("-");
  const script& s = *script_;
  const decision_script kind = kind_;
  const std::string& margin = margin_;
  const std::string& lease_ttl = lease_ttl_;
  const std::string& maxc = maxc_;
  const std::string& p1 = p1_;
  const std::string& p2 = p2_;
  std::array<char, 24> cost_buf{};
  const std::string_view cost(
      cost_buf.data(),
      static_cast<std::size_t>(
          std::to_chars(cost_buf.data(), cost_buf.data() + cost_buf.size(), req.cost).ptr -
          cost_buf.data()));
  std::chrono::nanoseconds poll = 2ms;
  bool polled = false;
  for (;;) {
    std::int64_t max_wait = -1;
    if (req.deadline)
      max_wait = std::max<std::int64_t>(
          0, std::chrono::duration_cast<std::chrono::microseconds>(*req.deadline - steady::now())
                 .count());
    std::array<char, 24> wait_buf{};
    const std::string_view wait_arg(
        wait_buf.data(),
        static_cast<std::size_t>(
            std::to_chars(wait_buf.data(), wait_buf.data() + wait_buf.size(), max_wait).ptr -
            wait_buf.data()));
    std::array<std::string_view, 2> key_list{rate_key, lease_key};
    std::array<std::string_view, 8> arg_list{
        p1, p2, cost, wait_arg, margin, slots ? std::string_view(maxc) : "0", id, lease_ttl};
    std::span<const std::string_view> keys(key_list);
    std::span<const std::string_view> args(arg_list);
    if (!rate) {
      key_list[0] = lease_key;
      arg_list = {maxc, id, lease_ttl, margin};
      keys = keys.first(1);
      args = args.first(4);
    } else if (!slots) {
      // Without max_concurrent the scripts never read the lease key (not
      // even made for a keyed call), nor the bucket the request id and TTL.
      keys = keys.first(1);
      if (kind == decision_script::token_bucket)
        args = args.first(6);
    }
    std::shared_ptr<connection> sent_on;
    reply_ptr r;
    try {
      r = co_await store_->call(s, keys, args, &sent_on,
                                slots || !rate ? lease_key : std::string_view());
    } catch (...) {
      // The script may have run and taken a lease although its reply never
      // came back (a timeout, a dropped connection, a cancelled caller): the
      // slot would stay taken, with no holder, for lease_seconds. The ZREM
      // follows the script on its connection, so Redis runs it after.
      if (slots && sent_on)
        store_->remove_lease(std::string(lease_key), id, to_us(spec_.lease), sent_on);
      throw;
    }
    const decision d = decode_decision(store_->name(), kind, *r);
    const std::int64_t micros = d.wait_us;
    if (d.status == decision::verdict::refused) {
      out.retry_after = std::chrono::microseconds(micros);
      co_return out;
    }
    if (d.status == decision::verdict::no_slot) {
      // Every slot leased: poll until one returns or the time is up.
      out.hit_concurrency_limit = true;
      if (max_wait == 0) {
        out.reason = polled ? denial_reason::timed_out : denial_reason::concurrency_limited;
        co_return out;
      }
      polled = true;
      std::chrono::nanoseconds pause = poll;
      if (req.deadline) {
        const auto left = *req.deadline - steady::now();
        if (left <= 0ns) {
          out.reason = denial_reason::timed_out;
          co_return out;
        }
        pause = std::min<std::chrono::nanoseconds>(pause, left);
      }
      asio::steady_timer t(co_await asio::this_coro::executor, pause);
      co_await t.async_wait(asio::use_awaitable);
      poll = std::min<std::chrono::nanoseconds>(poll * 2, 50ms);
      continue;
    }
    // Admitted (status 1), possibly at a reserved time in the future.
    std::uint64_t token = 0;
    if (slots) {
      token = store_->next_token();
      // The id is the record's now (an admission never loops back here).
      store_->add_lease(token, lease_record{std::string(lease_key), std::exchange(id, {}),
                                            to_us(spec_.lease), steady::now() + spec_.lease / 3});
    }
    // Until the permit holds it, the lease is this coroutine's. Destroyed
    // while it sleeps towards its slot (its caller's io_context went), it
    // gives the lease back; the lease used to be renewed for as long as the
    // store lived, its slot taken in every process.
    struct lease_guard_t {
      redis_store& store;
      std::uint64_t token;
      lease_guard_t(redis_store& s, std::uint64_t t) : store(s), token(t) {}
      lease_guard_t(const lease_guard_t&) = delete;
      lease_guard_t& operator=(const lease_guard_t&) = delete;
      ~lease_guard_t() {
        if (token == 0)
          return;
        try {
          store.release_lease(token);
        } catch (...) { // out of memory: the lease expires after lease_seconds
        }
      }
    } lease_guard(*store_, token);
    if (micros > 0) {
      const std::int64_t reserved = d.reserved;
      asio::steady_timer t(co_await asio::this_coro::executor,
                           std::chrono::microseconds(micros + store_->margin_us()));
      auto [ec] = co_await t.async_wait(ex::as_tuple(asio::use_awaitable));
      if (ec) {
        // Cancelled while waiting for its slot: give back what can be, and
        // wait for that (one round trip) so that the caller's next decision
        // cannot overtake the undo on another connection. The cancellation
        // that brought us here must not abort the undo itself.
        if (token) { // the undo below removes it from Redis
          if (std::optional<lease_record> r = store_->drop_lease(token))
            id = std::move(r->id);
        }
        lease_guard.token = 0;
        const std::string kind = spec_.emission_interval ? "tb" : "sw";
        // tb: the TAT it set; sw: its entry's time (and the id names it).
        const std::string at = std::to_string(reserved);
        const std::string_view what = spec_.emission_interval ? std::string_view(at) : id;
        const std::string amount = spec_.emission_interval
                                       ? std::to_string(req.cost * to_us(*spec_.emission_interval))
                                       : std::string(cost);
        const std::string lease_id = slots ? id : std::string();
        std::vector<std::string_view> undo_keys{rate_key};
        if (slots)
          undo_keys.push_back(lease_key);
        std::vector<std::string_view> undo_args{kind, what, amount, lease_id, at};
        const bool throwing = co_await asio::this_coro::throw_if_cancelled();
        co_await asio::this_coro::throw_if_cancelled(false);
        co_await asio::this_coro::reset_cancellation_state();
        try {
          co_await store_->call(store_->undo, undo_keys, undo_args);
        } catch (const std::exception&) {
          // Not undone: the rate's slot stays spent (safe); the lease is
          // removed on its own.
          if (token)
            store_->remove_lease(std::string(lease_key), id, to_us(spec_.lease));
        }
        co_await asio::this_coro::throw_if_cancelled(throwing);
        throw std::system_error(ec);
      }
    }
    out.admitted = true;
    if (token)
      out.lease = lease_token{this, token};
    lease_guard.token = 0; // the permit's now
    co_return out;
  }
}

void redis_backend::release(lease_token lease) noexcept {
  if (lease.id == 0)
    return;
  try {
    store_->release_lease(lease.id);
  } catch (...) {
    // Best effort: an unreleased lease expires after lease_seconds.
  }
}

asio::awaitable<limiter_state> redis_backend::get_state(std::string key) {
  const std::string b = base(key);
  const std::string rate_key = b + (spec_.has_rate() ? rate_suffix() : ":tb");
  const std::string lease_key = b + ":cc";
  std::string kind = spec_.emission_interval ? "tb" : (spec_.has_rate() ? "sw" : "cc");
  std::string p1 = spec_.emission_interval ? std::to_string(to_us(*spec_.emission_interval))
                                           : std::to_string(to_us(spec_.window));
  std::string p2 =
      spec_.emission_interval ? std::to_string(spec_.burst) : std::to_string(spec_.limit);
  std::vector<std::string_view> keys{rate_key, lease_key};
  std::vector<std::string_view> args{kind, p1, p2};
  reply_ptr r = co_await store_->call(store_->state, keys, args);
  co_return decode_state(store_->name(), *r, kind == "cc", spec_.max_concurrent);
}

asio::awaitable<void> redis_backend::reset(std::string key) {
  const std::string rate_key = base(key) + rate_suffix();
  std::vector<std::string_view> argv{"DEL", rate_key};
  auto [ec, r] = co_await store_->pick()->async_execute(encode_command(argv),
                                                        ex::as_tuple(asio::use_awaitable));
  if (ec)
    throw store_error(store_->name(), ec.message());
  // Refused (an ACL without DEL, a read-only replica, OOM): nothing was
  // reset, and the caller must hear it (it used to return as if done).
  if (r->type == REDIS_REPLY_ERROR)
    throw store_error(store_->name(), fmt::format("Redis refused reset: {}", reply_text(*r)));
}

// The store as the registry and the limiters hold it: its life cycle. It
// goes when the last of them lets go (the backends hold it, the limiters hold
// this). Releases and undos sent just before still reach Redis (else a
// released slot would stay leased for lease_seconds), within a socket
// timeout; then the store stops.
class redis_engine final : public engine {
public:
  explicit redis_engine(std::shared_ptr<redis_store> store) : store_(std::move(store)) {
    store_->start();
    if (store_->owns_thread()) {
      work_.emplace(store_->context().get_executor());
      thread_ = std::thread(store_->thread_body());
    }
  }
  redis_engine(const redis_engine&) = delete;
  redis_engine& operator=(const redis_engine&) = delete;
  ~redis_engine() override;

  std::unique_ptr<backend> make_backend(const limiter_spec& spec) override {
    return std::make_unique<redis_backend>(store_, spec);
  }
  asio::any_io_executor io_executor() const noexcept override {
    return store_->context().get_executor();
  }

private:
  static asio::awaitable<void> drain_then_stop(std::shared_ptr<redis_store> s);

  std::shared_ptr<redis_store> store_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::thread thread_; // the store's own, when it has one
};

redis_engine::~redis_engine() {
  if (store_->context_gone())
    return; // nothing of it is left on that context
  asio::io_context& ctx = store_->context();
  if (!store_->owns_thread() || ctx.get_executor().running_in_this_thread()) {
    // The caller's io_context, from any thread, or the store's own thread
    // from itself: the drain goes on as a coroutine there, which then stops
    // the store. The destructor never waits for a context the caller runs
    // (nobody may be running it now); its run() returns once that is done.
    // The store's own thread cannot join itself: it ends by itself once
    // stop() has stopped its io_context, and frees it.
    if (thread_.joinable())
      thread_.detach();
    work_.reset();
    try {
      asio::co_spawn(ctx, drain_then_stop(store_), asio::detached);
    } catch (...) { // out of memory: stopped now, what is in flight dropped
      store_->stop();
    }
    return;
  }
  // The store's own thread, from another: wait for what is in flight
  // (within socket_timeout), then stop and join it.
  const auto give_up = steady::now() + store_->drain_limit();
  while (store_->unsent() > 0 && steady::now() < give_up)
    std::this_thread::sleep_for(1ms);
  store_->stop();
  work_.reset();
  thread_.join();
}

asio::awaitable<void> redis_engine::drain_then_stop(std::shared_ptr<redis_store> s) {
  asio::steady_timer t(s->context());
  const auto give_up = steady::now() + s->drain_limit();
  while (s->unsent() > 0 && steady::now() < give_up) {
    t.expires_after(1ms);
    co_await t.async_wait(ex::as_tuple(asio::use_awaitable));
  }
  s->stop();
}

} // namespace

std::string key_base(std::string_view prefix, std::string_view limiter, std::string_view key) {
  std::string out(prefix);
  out += ":{";
  out += segment(limiter);
  if (!key.empty()) {
    out += '|';
    out += segment(key);
  }
  out += '}';
  return out;
}

std::shared_ptr<engine> make_engine(const std::string& store_name, const store_options& options) {
  return std::make_shared<redis_engine>(std::make_shared<redis_store>(store_name, options));
}

} // namespace ratesync::redis

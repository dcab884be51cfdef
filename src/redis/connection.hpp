// Private: one multiplexed Redis connection. Asio owns the socket (TCP, TLS or
// unix); hiredis only encodes and decodes. Many callers share the connection:
// whatever is queued goes out in one write, replies are matched in order
// (see pipeline.hpp). The connection lives on one single-threaded io_context
// owned by its store; callers on any executor or thread submit requests and
// are completed on their own executor.
#pragma once

#include <algorithm>
#include <asio/any_io_executor.hpp>
#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/execution/outstanding_work.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/prefer.hpp>
#include <asio/ssl/context.hpp>
#include <asio/steady_timer.hpp>
#include <atomic>
#include <chrono>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "redis/errors.hpp"
#include "redis/pipeline.hpp"
#include "redis/resp.hpp"
#include "redis/url.hpp"

namespace ratesync::redis {

struct tls_options {
  std::string ca_file;   // empty: the system's trust store
  std::string cert_file; // client certificate (with key_file), for servers that demand one
  std::string key_file;
  std::string server_name; // empty: the URL's host
  bool verify = true;      // false only through the loudly named store option
};

struct connection_options {
  endpoint where;
  tls_options tls;
  std::chrono::nanoseconds connect_timeout = std::chrono::seconds(5);
  std::chrono::nanoseconds request_timeout = std::chrono::seconds(5);
  // An idle connection is probed with PING this often; zero turns it off.
  std::chrono::nanoseconds health_check_interval = std::chrono::seconds(1);
  std::chrono::nanoseconds reconnect_min = std::chrono::milliseconds(20);
  std::chrono::nanoseconds reconnect_max = std::chrono::seconds(2);
  std::string client_name = "ratesync";
};

struct connection_stats {
  std::uint64_t writes = 0;   // socket writes (each carries a batch)
  std::uint64_t requests = 0; // requests submitted
  std::uint64_t connects = 0; // successful connects (handshake included)
};

// The TLS context for a store's connections (certificates are read here, so
// a missing file is a configuration-time error). Throws std::invalid_argument.
std::shared_ptr<asio::ssl::context> make_tls_context(const tls_options& tls);

// Work a thread would rather do once after a batch of reply handlers than
// once per handler: a connection handing the requests they made over to its
// own thread, a store sending the releases they made. See
// connection::defer_to_batch_end().
class batch_end_work {
public:
  batch_end_work() = default;
  batch_end_work(const batch_end_work&) = delete;
  batch_end_work(batch_end_work&&) = delete;
  batch_end_work& operator=(const batch_end_work&) = delete;
  batch_end_work& operator=(batch_end_work&&) = delete;
  virtual ~batch_end_work() = default;
  virtual void batch_ended() noexcept = 0;
};

class connection : public std::enable_shared_from_this<connection>, public batch_end_work {
public:
  static std::shared_ptr<connection> create(asio::io_context& ctx, connection_options options,
                                            std::shared_ptr<asio::ssl::context> tls);
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;
  ~connection() override;

  // Starts connecting (and reconnecting, with backoff, whenever it drops).
  void start();
  // Fails every request with errc::shutting_down and stops; idempotent.
  void stop();

  // Sends one encoded command; completes with its reply or an error:
  // errc::timeout after request_timeout, errc::connection_lost if the
  // connection dropped after the request was written (it is never replayed),
  // the connect error if no connection could be made. Error replies from the
  // server are replies, not errors. Cancellation (per-operation, any type)
  // removes a request not yet written, or discards the reply of one written.
  // A `background` request (nobody waits for it, the server answers it at
  // once: a ZREM of released leases) does not count in load().
  template <class CompletionToken>
  auto async_execute(std::string payload, CompletionToken&& token, bool background = false) {
    return asio::async_initiate<CompletionToken, void(std::error_code, reply_ptr)>(
        [self = shared_from_this(), background](auto handler, std::string payload) mutable {
          self->initiate(std::move(handler), std::move(payload), background);
        },
        token, std::move(payload));
  }

  // While a batch of reply handlers runs on this thread (the replies of one
  // socket read whose handlers share an executor), calls w->batch_ended()
  // once they have all run, once however often it was deferred, and returns
  // true. Outside a batch returns false: the caller does the work now.
  static bool defer_to_batch_end(std::shared_ptr<batch_end_work> w);

  // Requests queued or awaiting a reply, background ones left out (for
  // least-loaded selection).
  std::size_t load() const noexcept { return load_.load(std::memory_order_relaxed); }
  bool is_connected() const noexcept { return connected_.load(std::memory_order_relaxed); }
  connection_stats stats() const noexcept;
  // The latest connect or protocol failure (kept after recovery), with the
  // server's words where it gave any; passwords never appear. Empty if none.
  std::string last_error() const;

private:
  // A request with its completion handler. Completion posts the handler to
  // its own executor (keeping that executor's io_context alive meanwhile).
  class queued_request;
  template <class Handler> class handler_request;
  class unsubmitted;
  class ready_batch;

  connection(asio::io_context& ctx, connection_options options,
             std::shared_ptr<asio::ssl::context> tls);

  template <class Handler> void initiate(Handler handler, std::string payload, bool background);

  // On the connection's thread. `write`: start the writer (or have the
  // running reply batch start it at its end); false when the caller will.
  void submit(request* r, std::uint64_t id, bool write = true);
  void request_write() noexcept;
  void cancel(std::uint64_t id);
  void drain_incoming();
  // Any thread: posts drain_incoming() to the connection's thread.
  void post_drain();
  // The deferred post_drain() of a batch (defer_to_batch_end).
  void batch_ended() noexcept override;
  // Any thread: completes what is queued with errc::shutting_down.
  void fail_incoming() noexcept;
  void forget(std::uint64_t id) {
    if (id != 0)
      live_.erase(id);
  }
  // On the connection's thread: while the replies of one read are matched,
  // completions are gathered (`gathering_`), then posted by flush_ready() as
  // one function per run of requests with the same executor, instead of one
  // post (a lock, often a wake-up) per request.
  void flush_ready() noexcept;
  void refresh_load() noexcept { load_.store(pipeline_.load(), std::memory_order_relaxed); }

  // What a reply batch calls at its end to start the writer once
  // (request_write()); holds the connection weakly.
  class write_kick final : public batch_end_work {
  public:
    explicit write_kick(std::weak_ptr<connection> c) noexcept : conn_(std::move(c)) {}
    void batch_ended() noexcept override;

  private:
    std::weak_ptr<connection> conn_;
  };

  struct impl;
  std::unique_ptr<impl> impl_;
  std::shared_ptr<write_kick> write_kick_;
  asio::io_context& ctx_;
  pipeline pipeline_;
  // The requests a caller could cancel (id != 0: its handler had a
  // cancellation slot), by id. Only those: a node per request was one of the
  // few heap allocations per decision, for callers that can never cancel.
  std::unordered_map<std::uint64_t, request*> live_;
  struct incoming_request {
    queued_request* r;
    std::uint64_t id;
  };
  std::mutex incoming_mutex_;
  std::vector<incoming_request> incoming_; // submitted from other threads, not drained yet
  std::atomic<std::uint64_t> next_id_{1};
  std::atomic<std::size_t> load_{0};
  std::atomic<bool> connected_{false};
  std::atomic<std::uint64_t> writes_{0};
  std::atomic<std::uint64_t> requests_{0};
  std::atomic<std::uint64_t> connects_{0};
  mutable std::mutex error_mutex_;
  std::string last_error_;
  std::chrono::nanoseconds request_timeout_;
  bool stopping_ = false;
  bool gathering_ = false;
  bool posted_here_ = false;           // flush_ready() posted to ctx_ (see reader_loop)
  std::vector<queued_request*> ready_; // completed, to be posted by flush_ready()

  friend struct impl;
};

// What initiate() creates: a request that can also be completed before it
// reaches the pipeline (complete() is protected in request).
class connection::queued_request : public request {
public:
  using request::request;
  // Any thread: posts the handler with the error.
  virtual void fail_unsubmitted(std::error_code ec) = 0;
  // On the handler's executor, once gathered: invokes the handler with the
  // stored result, deleting the request first.
  virtual void deliver() = 0;
  // Set when gathered: the executor the handler runs on.
  const asio::any_io_executor& ready_executor() const noexcept { return ready_executor_; }

protected:
  asio::any_io_executor ready_executor_;
};

// The posted function of flush_ready(): delivers its requests in order. If it
// is destroyed without running (its io_context went first), the requests are
// destroyed with their handlers, as a single posted handler would be.
class connection::ready_batch {
public:
  // A batch of more than `first_part` requests runs that many handlers, ends
  // (running what they deferred: their requests are handed over), and posts
  // the rest as a batch of its own (`rest`: not split again). Redis works on
  // the first part's requests while the client runs the rest; a caller on the
  // connection's own thread gets its writer in between. 50 callers on one
  // connection, token bucket: 92k -> 126k decisions/s (docs/performance.md).
  static constexpr std::size_t first_part = 16;

  explicit ready_batch(std::vector<queued_request*> requests, bool rest = false) noexcept
      : requests_(std::move(requests)), rest_(rest) {}
  ready_batch(const ready_batch&) = delete;
  ready_batch(ready_batch&& o) noexcept
      : requests_(std::exchange(o.requests_, {})), rest_(o.rest_) {}
  ready_batch& operator=(const ready_batch&) = delete;
  ready_batch& operator=(ready_batch&&) = delete;
  ~ready_batch() {
    for (queued_request* r : requests_)
      delete r;
  }

  void operator()() {
    std::vector<queued_request*> rs = std::exchange(requests_, {});
    ready_batch later({}, true);
    if (!rest_ && rs.size() > first_part) {
      try {
        later.requests_.assign(rs.begin() + first_part, rs.end());
        rs.resize(first_part);
      } catch (...) { // out of memory: all of them now
      }
    }
    std::exception_ptr first;
    deliver(rs, first);
    if (!later.requests_.empty()) {
      const asio::any_io_executor ex = later.requests_.front()->ready_executor();
      try {
        asio::post(ex, std::move(later));
      } catch (...) { // out of memory: what was not posted runs now
        deliver(std::exchange(later.requests_, {}), first);
      }
    }
    if (first)
      std::rethrow_exception(first);
  }

  // While a batch's handlers run, the requests they send to connections on
  // other threads are handed over when the batch is done: one hand-off, one
  // write for all of them, as a single-threaded client writes what its reply
  // handlers queued once they have all run. The same for any other work
  // deferred to the batch's end (connection::defer_to_batch_end()).
  static bool defer(std::shared_ptr<batch_end_work> w) {
    batch_lists* lists = current();
    if (lists == nullptr)
      return false;
    if (std::find(lists->deferred.begin(), lists->deferred.end(), w) == lists->deferred.end())
      lists->deferred.push_back(std::move(w));
    return true;
  }

private:
  // Runs the handlers, then what they deferred; the first exception a
  // handler threw is kept in `first` (the others still run).
  static void deliver(const std::vector<queued_request*>& rs, std::exception_ptr& first) {
    const deferring deferred;
    for (queued_request* r : rs) {
      try {
        r->deliver();
      } catch (...) {
        if (!first)
          first = std::current_exception();
      }
    }
  }

  struct batch_lists {
    std::vector<std::shared_ptr<batch_end_work>> deferred;
  };
  class deferring {
  public:
    deferring() noexcept : outer_(std::exchange(current(), &lists_)) {}
    deferring(const deferring&) = delete;
    deferring& operator=(const deferring&) = delete;
    ~deferring() {
      current() = outer_;
      for (auto& w : lists_.deferred)
        w->batch_ended();
    }

  private:
    batch_lists lists_;
    batch_lists* outer_;
  };

  // What the batch running on this thread deferred, if one is running.
  static batch_lists*& current() noexcept {
    // NOLINTNEXTLINE(cppcoreguidelines-avoid-non-const-global-variables): one per thread, by design
    thread_local batch_lists* drains = nullptr;
    return drains;
  }
  std::vector<queued_request*> requests_;
  bool rest_;
};

// Travels with the posted drain of the incoming queue. If the drain never
// runs (the io_context is stopped and destroyed first), every request still
// queued is completed with errc::shutting_down when it is destroyed; such
// requests used to be leaked with their handlers, and the work they count kept
// the caller's io_context::run() from ever returning.
class connection::unsubmitted {
public:
  explicit unsubmitted(std::shared_ptr<connection> c) noexcept : c_(std::move(c)) {}
  unsubmitted(const unsubmitted&) = delete;
  unsubmitted(unsubmitted&& o) noexcept = default;
  unsubmitted& operator=(const unsubmitted&) = delete;
  unsubmitted& operator=(unsubmitted&&) = delete;
  ~unsubmitted() {
    if (c_ != nullptr)
      c_->fail_incoming();
  }
  std::shared_ptr<connection> release() noexcept { return std::move(c_); }

private:
  std::shared_ptr<connection> c_;
};

template <class Handler> class connection::handler_request final : public queued_request {
public:
  handler_request(std::string payload, std::chrono::steady_clock::time_point deadline,
                  bool background, Handler handler, std::shared_ptr<connection> owner,
                  std::uint64_t id)
      : queued_request(std::move(payload), deadline, background), handler_(std::move(handler)),
        work_(asio::prefer(asio::get_associated_executor(handler_, owner->ctx_.get_executor()),
                           asio::execution::outstanding_work_t::tracked)),
        owner_(std::move(owner)), id_(id) {}

  void fail_unsubmitted(std::error_code ec) override { post_alone(ec, nullptr); }

  void deliver() override {
    Handler h = std::move(handler_);
    const std::error_code ec = ec_;
    reply_ptr r = std::move(reply_);
    delete this; // the batch's poster holds the executor's work until post() returned
    invoke(std::move(h), ec, std::move(r));
  }

private:
  // The cancellation slot is cleared on the handler's own executor, where
  // the caller would emit cancellation from, before the handler runs.
  static void invoke(Handler h, std::error_code ec, reply_ptr r) {
    auto slot = asio::get_associated_cancellation_slot(h);
    if (slot.is_connected())
      slot.clear();
    std::move(h)(ec, std::move(r));
  }

  void complete(std::error_code ec, reply_ptr reply) override {
    owner_->forget(id_);
    if (owner_->gathering_) {
      ec_ = ec;
      reply_ = std::move(reply);
      ready_executor_ = asio::get_associated_executor(handler_, owner_->ctx_.get_executor());
      owner_->ready_.push_back(this);
      // Released here, on the connection's thread, as the other path's
      // `delete this` does; the handler's thread never holds the connection.
      owner_.reset();
      return;
    }
    post_alone(ec, std::move(reply));
  }

  void post_alone(std::error_code ec, reply_ptr reply) {
    auto ex = asio::get_associated_executor(handler_, owner_->ctx_.get_executor());
    asio::post(ex, [h = std::move(handler_), ec, r = std::move(reply)]() mutable {
      invoke(std::move(h), ec, std::move(r));
    });
    // work_ is released by this delete, on this thread, after post() has
    // returned; it used to travel with the posted function and be released
    // on the caller's thread. The caller's io_context may be destroyed as
    // soon as its run() returns, and asio's post() signals that context's
    // condition variable after unlocking its mutex: TSan caught this thread
    // still inside pthread_cond_signal while the caller destroyed it. Now
    // run() cannot return before this thread is done with the context.
    delete this;
  }

  Handler handler_;
  decltype(asio::prefer(
      std::declval<asio::associated_executor_t<Handler, asio::io_context::executor_type>>(),
      asio::execution::outstanding_work_t::tracked)) work_;
  std::shared_ptr<connection> owner_;
  std::uint64_t id_;
  std::error_code ec_; // the result, while gathered
  reply_ptr reply_;
};

template <class Handler>
void connection::initiate(Handler handler, std::string payload, bool background) {
  auto slot = asio::get_associated_cancellation_slot(handler);
  // 0: nobody can cancel it, and it is not looked up by id.
  const std::uint64_t id =
      slot.is_connected() ? next_id_.fetch_add(1, std::memory_order_relaxed) : 0;
  if (slot.is_connected()) {
    // May be emitted from any thread: hop to the connection's thread, where
    // the request may already be gone (then nothing happens).
    slot.assign([self = shared_from_this(), id](asio::cancellation_type) {
      asio::post(self->ctx_, [self, id] { self->cancel(id); });
    });
  }
  const auto deadline = std::chrono::steady_clock::now() + request_timeout_;
  auto* r = new handler_request<Handler>(std::move(payload), deadline, background,
                                         std::move(handler), shared_from_this(), id);
  requests_.fetch_add(1, std::memory_order_relaxed);
  if (ctx_.get_executor().running_in_this_thread()) {
    submit(r, id); // a caller on the connection's own thread: no hop
    return;
  }
  // From another thread: queued, and one posted drain carries everything that
  // arrives before it runs (one hand-off per burst, not per request).
  bool first = false;
  {
    std::lock_guard lk(incoming_mutex_);
    first = incoming_.empty();
    incoming_.push_back({r, id});
  }
  if (!first)
    return; // the drain that carries it is on its way (or deferred, see ready_batch)
  try {
    if (ready_batch::defer(shared_from_this()))
      return;
  } catch (...) { // out of memory: hand it over now
  }
  post_drain();
}

inline bool connection::defer_to_batch_end(std::shared_ptr<batch_end_work> w) {
  return ready_batch::defer(std::move(w));
}

inline void connection::batch_ended() noexcept {
  try {
    post_drain();
  } catch (...) { // out of memory: the unposted drain failed its requests
  }
}

inline void connection::post_drain() {
  asio::post(ctx_, [guard = unsubmitted(shared_from_this())]() mutable {
    guard.release()->drain_incoming();
  });
}

} // namespace ratesync::redis

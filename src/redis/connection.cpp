// The connection's socket side: connect (TCP, TLS, unix) under a deadline,
// AUTH / SELECT / CLIENT SETNAME, then one reader, a writer started by the
// requests, a deadline sweeper and a health check, until something fails;
// then reconnect with exponential backoff and jitter. All of it runs on the
// store's thread.
#include "redis/connection.hpp"

#include <array>
#include <asio/co_spawn.hpp>
#include <asio/connect.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/deferred.hpp>
#include <asio/experimental/parallel_group.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/read.hpp>
#include <asio/ssl/error.hpp>
#include <asio/ssl/host_name_verification.hpp>
#include <asio/ssl/stream.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <cerrno>
#include <cstring>
#include <fmt/format.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <random>
#include <stdexcept>
#include <thread>
#include <variant>
#include <vector>

#include "thread_name.hpp"

namespace ratesync::redis {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
namespace ex = asio::experimental;
using tcp = asio::ip::tcp;
using unix_stream = asio::local::stream_protocol;
using tls_stream = asio::ssl::stream<tcp::socket>;

std::shared_ptr<asio::ssl::context> make_tls_context(const tls_options& tls) {
  auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
  ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                   asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                   asio::ssl::context::no_tlsv1_1);
  std::error_code ec;
  if (tls.verify) {
    ctx->set_verify_mode(asio::ssl::verify_peer, ec);
    if (tls.ca_file.empty())
      ctx->set_default_verify_paths(ec);
    else
      ctx->load_verify_file(tls.ca_file, ec);
    if (ec)
      throw std::invalid_argument(
          fmt::format("cannot load the CA file \"{}\": {}", tls.ca_file, ec.message()));
  } else {
    ctx->set_verify_mode(asio::ssl::verify_none);
  }
  if (!tls.cert_file.empty() || !tls.key_file.empty()) {
    if (tls.cert_file.empty() || tls.key_file.empty())
      throw std::invalid_argument("a client certificate needs both a certificate and a key file");
    ctx->use_certificate_chain_file(tls.cert_file, ec);
    if (ec)
      throw std::invalid_argument(fmt::format("cannot load the client certificate \"{}\": {}",
                                              tls.cert_file, ec.message()));
    ctx->use_private_key_file(tls.key_file, asio::ssl::context::pem, ec);
    if (ec)
      throw std::invalid_argument(
          fmt::format("cannot load the client key \"{}\": {}", tls.key_file, ec.message()));
  }
  return ctx;
}

// A host name's lookup, run by a thread that owns it with the connection
// (look_up()). `found` and the codes are written before `done` is set.
struct host_lookup {
  std::atomic<bool> done{false};
  int eai = 0;
  int err = 0; // errno, for EAI_SYSTEM
  std::vector<asio::ip::tcp::endpoint> found;
};

// Everything that touches the socket; lives and dies with the connection.
struct connection::impl {
  explicit impl(connection& c, connection_options o, std::shared_ptr<asio::ssl::context> t)
      : conn(c), opts(std::move(o)), tls(std::move(t)), deadline(c.ctx_), write_done(c.ctx_),
        backoff_timer(c.ctx_), rng(std::random_device{}()) {
    deadline.expires_at(steady::time_point::max());
  }

  connection& conn;
  connection_options opts;
  std::shared_ptr<asio::ssl::context> tls;
  std::variant<std::monostate, tcp::socket, tls_stream, unix_stream::socket> stream;
  std::optional<reply_reader> reader{std::in_place};
  asio::steady_timer deadline; // fires at the pipeline's earliest deadline
  // The writer (start_write()): one async_write at a time, of all that waits
  // when it starts. `writable` while a connection is up and nothing has
  // failed on it; `writing` from a write's start to its completion, which
  // run() waits for (`write_done`) before the stream may go: a TLS write
  // completing into a destroyed stream would touch it. `out` is the bytes
  // being written (its capacity reused).
  bool writable = false;
  bool writing = false;
  asio::steady_timer write_done;
  std::string out;
  // The pause between connect attempts; a member so that stop() can cut it
  // short (it used to be a local of run(), and stop() waited it out).
  asio::steady_timer backoff_timer;
  // When the current backoff pause began (max(): not pausing). A request
  // arriving during a pause cuts it short once reconnect_min has passed: a
  // server that came back is found at once rather than after up to
  // reconnect_max, and no faster than every reconnect_min if it has not.
  steady::time_point backoff_since = steady::time_point::max();
  asio::awaitable<void> pause_before_reconnect(std::chrono::nanoseconds d) {
    backoff_since = steady::now();
    backoff_timer.expires_after(d);
    co_await backoff_timer.async_wait(ex::as_tuple(asio::use_awaitable)); // stop() cancels it
    backoff_since = steady::time_point::max();
  }
  steady::time_point last_reply = steady::now();
  std::error_code drop_reason;
  std::mt19937_64 rng;
  // The lookup under way, or finished and not used yet. A connect attempt
  // that stops waiting for it (socket_connect_timeout) leaves it to the
  // next, which takes it up instead of starting another: a name server
  // slower than the connect timeout still gets the connection made, and a
  // connection never has more than one lookup thread.
  std::shared_ptr<host_lookup> lookup;

  void set_error(std::string text) {
    std::lock_guard lk(conn.error_mutex_);
    conn.last_error_ = std::move(text);
  }

  void close_stream() noexcept {
    writable = false; // what is submitted from now on waits for the next connection
    std::error_code ignored;
    if (auto* t = std::get_if<tls_stream>(&stream))
      t->lowest_layer().close(ignored);
    else if (auto* p = std::get_if<tcp::socket>(&stream))
      p->close(ignored);
    else if (auto* u = std::get_if<unix_stream::socket>(&stream))
      u->close(ignored);
  }

  template <class Buffers> asio::awaitable<std::size_t> write(const Buffers& b) {
    return std::visit(
        [&](auto& s) -> asio::awaitable<std::size_t> {
          using S = std::decay_t<decltype(s)>;
          if constexpr (std::is_same_v<S, std::monostate>)
            throw std::system_error(errc::not_connected);
          else
            return asio::async_write(s, b, asio::use_awaitable);
        },
        stream);
  }

  template <class Buffers> asio::awaitable<std::size_t> read_some(const Buffers& b) {
    return std::visit(
        [&](auto& s) -> asio::awaitable<std::size_t> {
          using S = std::decay_t<decltype(s)>;
          if constexpr (std::is_same_v<S, std::monostate>)
            throw std::system_error(errc::not_connected);
          else
            return s.async_read_some(b, asio::use_awaitable);
        },
        stream);
  }

  // `deadline`: the end of the connect attempt (socket_connect_timeout).
  asio::awaitable<void> open_socket(steady::time_point deadline);
  asio::awaitable<std::vector<tcp::endpoint>> look_up(steady::time_point deadline);
  void start_lookup();
  asio::awaitable<std::error_code> connect_once();
  asio::awaitable<void> handshake();
  asio::awaitable<void> run();
  void start_write() noexcept;
  asio::awaitable<void> reader_loop();
  asio::awaitable<void> read_replies();
  asio::awaitable<void> health();
  asio::awaitable<void> sweep_deadlines(std::shared_ptr<connection> self);
  void arm_deadline() {
    if (deadline.expiry() == steady::time_point::max() && conn.pipeline_.size() > 0)
      deadline.expires_at(steady::now() + conn.request_timeout_);
  }
};

namespace {

// What getaddrinfo's failures mean, in Asio's words (as its resolver says them).
std::error_code lookup_error(int eai, int err) {
  switch (eai) {
  case EAI_AGAIN:
    return asio::error::host_not_found_try_again;
  case EAI_FAIL:
    return asio::error::no_recovery;
  case EAI_MEMORY:
    return asio::error::no_memory;
  case EAI_SYSTEM:
    return {err, std::system_category()};
  case EAI_NONAME:
  case EAI_NODATA:
  case EAI_ADDRFAMILY:
  default:
    return asio::error::host_not_found;
  }
}

} // namespace

// Asio's resolver runs getaddrinfo on a thread in the io_context, which
// nothing can interrupt: a stop or a connect timeout took effect only when
// the lookup returned, and destroying the io_context (or its run()
// returning) waited for it, up to the system resolver's own timeouts (10 s
// and more for an unreachable name server). The lookup now runs on a
// detached thread that owns what it writes; the connection polls for the
// answer (from 0.1 ms, doubling to 10 ms: a lookup is rare and usually
// quick) and gives up on it at stop() or at the connect deadline, leaving
// the thread to finish alone and its answer to the next attempt (`lookup`).
// No thread is started in the io_context.
asio::awaitable<std::vector<tcp::endpoint>> connection::impl::look_up(steady::time_point deadline) {
  // A failure left by an earlier attempt may be a backoff old: asked again.
  if (lookup && lookup->done.load(std::memory_order_acquire) && lookup->eai != 0)
    lookup.reset();
  if (!lookup)
    start_lookup();
  const std::shared_ptr<host_lookup> l = lookup;
  asio::steady_timer poll(conn.ctx_);
  std::chrono::nanoseconds step = 100us;
  while (!l->done.load(std::memory_order_acquire)) {
    if (conn.stopping_)
      throw std::system_error(errc::shutting_down);
    if (steady::now() >= deadline)
      throw std::system_error(errc::connect_timeout); // connect_once words it
    poll.expires_after(step);
    co_await poll.async_wait(ex::as_tuple(asio::use_awaitable));
    step = std::min<std::chrono::nanoseconds>(step * 2, 10ms);
  }
  // An answer that came after the deadline (between two polls) is left to
  // the next attempt: this one's watchdog has fired or is about to, and
  // would not be there for the connect.
  if (steady::now() >= deadline)
    throw std::system_error(errc::connect_timeout);
  lookup.reset(); // used: the next attempt looks up again
  if (l->eai != 0)
    throw std::system_error(lookup_error(l->eai, l->err)); // connect_once words it
  if (l->found.empty())
    throw std::system_error(asio::error::host_not_found);
  co_return std::move(l->found);
}

void connection::impl::start_lookup() {
  auto l = std::make_shared<host_lookup>();
  std::thread([l, host = opts.where.host, port = opts.where.port] {
    ratesync::detail::name_this_thread("rs-dns");
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    l->eai = ::getaddrinfo(host.c_str(), nullptr, &hints, &res);
    l->err = errno;
    if (l->eai == 0) {
      try {
        for (const addrinfo* a = res; a != nullptr; a = a->ai_next) {
          if (a->ai_family == AF_INET || a->ai_family == AF_INET6) {
            tcp::endpoint e;
            std::memcpy(e.data(), a->ai_addr, a->ai_addrlen);
            e.resize(a->ai_addrlen);
            e.port(port);
            l->found.push_back(e);
          }
        }
      } catch (...) { // out of memory: what was found so far
      }
      ::freeaddrinfo(res);
    }
    l->done.store(true, std::memory_order_release);
  }).detach();
  lookup = std::move(l);
}

asio::awaitable<void> connection::impl::open_socket(steady::time_point deadline) {
  auto ex = co_await asio::this_coro::executor;
  switch (opts.where.kind) {
  case transport_kind::unix_socket: {
    auto& s = stream.emplace<unix_stream::socket>(ex);
    co_await s.async_connect(unix_stream::endpoint(opts.where.path), asio::use_awaitable);
    break;
  }
  case transport_kind::tcp:
  case transport_kind::tls: {
    // An IP address (redis://127.0.0.1) needs no lookup; a host name is
    // looked up on a thread of its own (look_up()).
    std::vector<tcp::endpoint> endpoints;
    std::error_code not_numeric;
    const asio::ip::address ip = asio::ip::make_address(opts.where.host, not_numeric);
    if (!not_numeric)
      endpoints.emplace_back(ip, opts.where.port);
    else
      endpoints = co_await look_up(deadline);
    tcp::socket* sock = nullptr;
    if (opts.where.kind == transport_kind::tcp) {
      sock = &stream.emplace<tcp::socket>(ex);
    } else {
      sock = &stream.emplace<tls_stream>(ex, *tls).next_layer();
    }
    co_await asio::async_connect(*sock, endpoints, asio::use_awaitable);
    sock->set_option(tcp::no_delay(true));
    if (opts.where.kind == transport_kind::tls) {
      auto& s = std::get<tls_stream>(stream);
      const std::string& name =
          opts.tls.server_name.empty() ? opts.where.host : opts.tls.server_name;
      if (!SSL_set_tlsext_host_name(s.native_handle(), name.c_str()))
        throw std::system_error(errc::not_connected);
      if (opts.tls.verify)
        s.set_verify_callback(asio::ssl::host_name_verification(name));
      co_await s.async_handshake(asio::ssl::stream_base::client, asio::use_awaitable);
    }
    break;
  }
  }
}

// AUTH, SELECT and CLIENT SETNAME in one write; their replies read directly
// (the pipeline only sees traffic of an established connection).
asio::awaitable<void> connection::impl::handshake() {
  std::string batch;
  std::size_t expected = 0;
  bool has_auth = false;
  if (opts.where.password) {
    std::vector<std::string_view> args{"AUTH"};
    if (opts.where.username)
      args.push_back(*opts.where.username);
    args.push_back(*opts.where.password);
    append_command(batch, args);
    ++expected;
    has_auth = true;
  }
  std::string db = std::to_string(opts.where.db);
  if (opts.where.db != 0) {
    std::vector<std::string_view> args{"SELECT", db};
    append_command(batch, args);
    ++expected;
  }
  if (!opts.client_name.empty()) {
    std::vector<std::string_view> args{"CLIENT", "SETNAME", opts.client_name};
    append_command(batch, args);
    ++expected;
  }
  if (expected == 0)
    co_return;
  co_await write(asio::buffer(batch));
  std::array<char, 4096> buf{};
  std::size_t got = 0;
  while (got < expected) {
    std::size_t n = co_await read_some(asio::buffer(buf));
    reader->feed(buf.data(), n);
    while (auto r = reader->next()) {
      const bool is_auth = has_auth && got == 0;
      ++got;
      if ((*r)->type == REDIS_REPLY_ERROR) {
        const std::string text(reply_text(**r));
        if (is_auth || text.rfind("NOAUTH", 0) == 0) {
          set_error(fmt::format("authentication failed: {}", text));
          throw std::system_error(errc::auth_failed);
        }
        set_error(fmt::format("connection setup refused: {}", text));
        throw std::system_error(errc::server_error);
      }
    }
  }
}

asio::awaitable<std::error_code> connection::impl::connect_once() {
  close_stream();
  stream.emplace<std::monostate>();
  reader.emplace();
  // The watchdog closes the socket at the deadline, which aborts whatever
  // step (resolve, connect, TLS, AUTH) is under way. Its state is shared: a
  // late handler must neither touch this frame nor close a newer socket.
  struct watch_state {
    bool done = false;
    bool fired = false;
  };
  auto watch = std::make_shared<watch_state>();
  asio::steady_timer watchdog(conn.ctx_, opts.connect_timeout);
  watchdog.async_wait([this, watch](std::error_code ec) {
    if (!ec && !watch->done) {
      watch->fired = true;
      close_stream();
    }
  });
  std::error_code result;
  try {
    co_await open_socket(watchdog.expiry());
    co_await handshake();
  } catch (const std::system_error& e) {
    result = e.code();
  } catch (const protocol_error& e) {
    set_error(fmt::format("protocol error during setup: {}", e.what()));
    result = errc::protocol_error;
  }
  watch->done = true;
  watchdog.cancel();
  const auto limit_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(opts.connect_timeout).count();
  if (result == errc::connect_timeout) { // the lookup
    set_error(fmt::format("looking up \"{}\" took longer than socket_connect_timeout ({} ms)",
                          opts.where.host, limit_ms));
    co_return errc::connect_timeout;
  }
  if (watch->fired) { // the socket's steps: connect, TLS, AUTH
    set_error(fmt::format("{} did not complete the connection's setup within "
                          "socket_connect_timeout ({} ms)",
                          opts.where.to_string(), limit_ms));
    co_return errc::connect_timeout;
  }
  if (!result)
    co_return result;
  if (result.category() == transport_category())
    co_return result;
  if (result.category() == asio::error::get_ssl_category() ||
      result.category() == asio::ssl::error::get_stream_category()) {
    const auto reason = ERR_GET_REASON(static_cast<unsigned long>(result.value()));
    if (reason == SSL_R_CERTIFICATE_VERIFY_FAILED) {
      set_error(fmt::format("TLS: the certificate of {} did not verify", opts.where.to_string()));
      co_return errc::tls_verify_failed;
    }
    set_error(
        fmt::format("TLS handshake with {} failed: {}", opts.where.to_string(), result.message()));
    co_return errc::not_connected;
  }
  set_error(fmt::format("cannot connect to {}: {}", opts.where.to_string(), result.message()));
  co_return errc::not_connected;
}

// Started where requests are submitted (once per reply batch or drain, see
// connection::request_write()) and by its own completion, on the
// connection's thread. Asio tries the send in the initiating call, so the
// bytes usually leave before start_write() returns: no handler is posted
// and no pass of the reactor comes between a submit and its write. (A
// writer coroutine sleeping on a timer used to be woken by cancelling it:
// its resumption was a posted handler, behind a pass of the reactor, on the
// critical path of every decision.) A failed write closes the socket; the
// reader then fails and the connection is made again.
// NOLINTNEXTLINE(misc-no-recursion): the next write starts from the completion, later
void connection::impl::start_write() noexcept {
  if (writing || !writable || !conn.pipeline_.has_waiting())
    return;
  try {
    conn.pipeline_.take_write_batch(out);
    conn.writes_.fetch_add(1, std::memory_order_relaxed);
    // NOLINTNEXTLINE(misc-no-recursion): runs from the io_context (see above)
    auto done = [self = conn.shared_from_this()](std::error_code ec, std::size_t) {
      impl* const i = self->impl_.get();
      if (i == nullptr)
        return; // run() has ended (it waits for this, unless the io_context went)
      i->writing = false;
      i->write_done.cancel();
      if (self->stopping_)
        return;
      if (ec)
        i->close_stream();
      else
        i->start_write();
    };
    if (auto* t = std::get_if<tls_stream>(&stream))
      asio::async_write(*t, asio::buffer(out), std::move(done));
    else if (auto* p = std::get_if<tcp::socket>(&stream))
      asio::async_write(*p, asio::buffer(out), std::move(done));
    else if (auto* u = std::get_if<unix_stream::socket>(&stream))
      asio::async_write(*u, asio::buffer(out), std::move(done));
    else
      throw std::system_error(errc::not_connected);
    writing = true; // (a completion never runs inside the initiating call)
  } catch (...) {   // out of memory, or no stream: what was taken fails with the connection
    close_stream();
  }
}

// However the reader ends (end of stream, an error, the group's
// cancellation), nothing more is written to that connection: requests
// submitted until run() has closed it wait for the next one. (Not in a
// destructor: when the io_context is destroyed this frame may go after
// the impl.)
asio::awaitable<void> connection::impl::reader_loop() {
  try {
    co_await read_replies();
  } catch (...) {
    writable = false;
    throw;
  }
  writable = false;
}

asio::awaitable<void> connection::impl::read_replies() {
  std::array<char, 16384> buf{};
  for (;;) {
    std::size_t n = co_await read_some(asio::buffer(buf));
    reader->feed(buf.data(), n);
    last_reply = steady::now(); // bytes from the server: it is alive (one clock read per read)
    {
      // The completions of this read's replies go out together (see flush_ready).
      struct gather {
        connection& c;
        explicit gather(connection& conn) : c(conn) { c.gathering_ = true; }
        gather(const gather&) = delete;
        gather& operator=(const gather&) = delete;
        ~gather() { c.flush_ready(); }
      } const gathered(conn);
      try {
        while (auto r = reader->next()) {
          if (!conn.pipeline_.on_reply(std::move(*r))) {
            set_error("the server sent a reply nobody asked for");
            drop_reason = errc::protocol_error;
            co_return;
          }
        }
      } catch (const protocol_error& e) {
        set_error(fmt::format("protocol error: {}", e.what()));
        drop_reason = errc::protocol_error;
        co_return;
      }
      conn.refresh_load();
    }
    // Handlers posted to this thread run before the next read is started:
    // that read is tried at once and finds nothing (the callers have not
    // sent their next requests yet), a system call that otherwise sat
    // between a reply and the requests its handler makes.
    if (std::exchange(conn.posted_here_, false))
      co_await asio::post(conn.ctx_, asio::use_awaitable);
  }
}

// An idle connection is probed with PING: a dead peer is noticed within
// health_check_interval + request_timeout even when nobody sends anything.
asio::awaitable<void> connection::impl::health() {
  if (opts.health_check_interval <= 0ns) {
    asio::steady_timer forever(conn.ctx_, steady::time_point::max());
    co_await forever.async_wait(ex::as_tuple(asio::use_awaitable));
    co_return;
  }
  asio::steady_timer t(conn.ctx_);
  for (;;) {
    t.expires_after(opts.health_check_interval);
    auto [ec] = co_await t.async_wait(ex::as_tuple(asio::use_awaitable));
    if (ec)
      co_return;
    if (steady::now() - last_reply < opts.health_check_interval)
      continue;
    std::vector<std::string_view> ping{"PING"};
    auto [err, reply] =
        co_await conn.async_execute(encode_command(ping), ex::as_tuple(asio::use_awaitable));
    if (err) { // the group ends with this check: nothing more is written
      if (err == errc::timeout) {
        set_error("health check: PING timed out");
        drop_reason = errc::connection_lost;
      }
      writable = false;
      co_return;
    }
  }
}

asio::awaitable<void> connection::impl::sweep_deadlines(std::shared_ptr<connection> self) {
  // Detached: it may start or resume after run() has returned, and by then
  // this impl is destroyed (see run()). It holds the connection and looks at
  // stopping_ through it before touching anything of the impl.
  for (;;) {
    if (self->stopping_)
      co_return;
    auto [ec] = co_await deadline.async_wait(ex::as_tuple(asio::use_awaitable));
    if (self->stopping_)
      co_return;
    const auto next = conn.pipeline_.expire(steady::now());
    conn.refresh_load();
    deadline.expires_at(next);
    (void)ec;
  }
}

asio::awaitable<void> connection::impl::run() {
  auto self = conn.shared_from_this(); // alive as long as this loop runs
  // Runs when this frame goes: after stop(), or when the io_context is
  // destroyed while the loop is suspended (the frame is destroyed without
  // being resumed), or if an exception escapes.
  // - Every request still queued or in flight is completed (shutting_down).
  //   When the io_context was destroyed they used to be leaked with their
  //   handlers, and the work those count kept the callers' io_context::run()
  //   from returning. After stop() nothing is left by now.
  // - The socket and timers (impl) are destroyed now, while their io_context
  //   still exists: callers that hold the connection (run_script takes it by
  //   value) may drop the last reference after the io_context is gone, and
  //   ~connection must not touch it then. Nothing uses impl once stopping_ is
  //   set: submit() and stop() test it first, sweep_deadlines() stops.
  struct on_exit_t {
    explicit on_exit_t(connection& conn) : c(conn) {}
    on_exit_t(const on_exit_t&) = delete;
    on_exit_t& operator=(const on_exit_t&) = delete;
    connection& c;
    ~on_exit_t() {
      c.stopping_ = true;
      c.connected_.store(false, std::memory_order_relaxed);
      try {
        c.pipeline_.on_disconnect(errc::shutting_down, true);
      } catch (...) { // a handler could not be posted (bad_alloc)
      }
      c.refresh_load();
      c.impl_.reset(); // this frame does not touch *this any more
    }
  } on_exit{conn};
  auto executor = co_await asio::this_coro::executor;
  asio::co_spawn(executor, sweep_deadlines(self), asio::detached);
  std::chrono::nanoseconds backoff = opts.reconnect_min;
  // The next pause (backoff plus up to 50 % jitter); doubles the backoff.
  auto next_pause = [&] {
    std::uniform_int_distribution<std::int64_t> jitter(0, backoff.count() / 2);
    const auto d = backoff + std::chrono::nanoseconds(jitter(rng));
    backoff = std::min(backoff * 2, opts.reconnect_max);
    return d;
  };
  while (!conn.stopping_) {
    const std::error_code ec = co_await connect_once();
    if (conn.stopping_)
      break;
    if (ec) {
      // Whoever waits for this connection learns now, not at its deadline.
      conn.pipeline_.on_disconnect(ec, true);
      conn.refresh_load();
      co_await pause_before_reconnect(next_pause());
      continue;
    }
    drop_reason = {};
    const auto connected_at = steady::now();
    last_reply = connected_at;
    conn.connects_.fetch_add(1, std::memory_order_relaxed);
    conn.connected_.store(true, std::memory_order_relaxed);
    writable = true;
    start_write(); // what was submitted while connecting
    auto [order, e1, e2] =
        co_await ex::make_parallel_group(asio::co_spawn(executor, reader_loop(), ex::deferred),
                                         asio::co_spawn(executor, health(), ex::deferred))
            .async_wait(ex::wait_for_one(), asio::use_awaitable);
    (void)order;
    (void)e1;
    (void)e2;
    conn.connected_.store(false, std::memory_order_relaxed);
    close_stream();
    while (writing) { // its completion was queued by the close
      write_done.expires_at(steady::time_point::max());
      co_await write_done.async_wait(ex::as_tuple(asio::use_awaitable));
    }
    conn.pipeline_.on_disconnect(
        conn.stopping_ ? std::error_code(errc::shutting_down)
                       : (drop_reason ? drop_reason : std::error_code(errc::connection_lost)),
        conn.stopping_);
    conn.refresh_load();
    if (conn.stopping_)
      break;
    // A connection that served for a while is re-established at once, with
    // the backoff reset. One that dropped right after connecting (a server or
    // proxy that accepts and closes, a protocol error on the first reply) is
    // retried with the growing backoff, as if the connect had failed: the
    // backoff used to be reset by every successful connect and the reconnect
    // immediate, a tight loop against such a server.
    if (steady::now() - connected_at >= opts.reconnect_max)
      backoff = opts.reconnect_min;
    else {
      co_await pause_before_reconnect(next_pause());
    }
  }
  conn.pipeline_.on_disconnect(errc::shutting_down, true);
  conn.refresh_load();
  deadline.cancel();
}

connection::connection(asio::io_context& ctx, connection_options options,
                       std::shared_ptr<asio::ssl::context> tls)
    : ctx_(ctx), request_timeout_(options.request_timeout) {
  impl_ = std::make_unique<impl>(*this, std::move(options), std::move(tls));
}

connection::~connection() = default;

std::shared_ptr<connection> connection::create(asio::io_context& ctx, connection_options options,
                                               std::shared_ptr<asio::ssl::context> tls) {
  std::shared_ptr<connection> c(new connection(ctx, std::move(options), std::move(tls)));
  c->write_kick_ = std::make_shared<write_kick>(c);
  return c;
}

void connection::start() {
  asio::co_spawn(ctx_, impl_->run(), asio::detached);
}

void connection::stop() {
  asio::post(ctx_, [self = shared_from_this()] {
    if (self->stopping_)
      return;
    self->stopping_ = true;
    self->impl_->close_stream();
    self->impl_->deadline.cancel();
    self->impl_->backoff_timer.cancel();
    self->pipeline_.on_disconnect(errc::shutting_down, true);
    self->refresh_load();
  });
}

void connection::submit(request* r, std::uint64_t id, bool write) {
  if (id != 0)
    live_.emplace(id, r);
  pipeline_.push(*r);
  if (stopping_) {
    pipeline_.on_disconnect(errc::shutting_down, true);
    refresh_load();
    return;
  }
  refresh_load();
  if (write)
    request_write();
  impl_->arm_deadline();
  if (impl_->backoff_since != steady::time_point::max() &&
      steady::now() - impl_->backoff_since >= impl_->opts.reconnect_min)
    impl_->backoff_timer.cancel();
}

void connection::drain_incoming() {
  std::vector<incoming_request> batch;
  {
    std::lock_guard lk(incoming_mutex_);
    batch.swap(incoming_);
  }
  for (const auto& in : batch)
    submit(in.r, in.id, false);
  if (!batch.empty() && !stopping_)
    request_write(); // one write for the drain
}

void connection::request_write() noexcept {
  // Handlers of a reply batch on this thread: once, when they have all run
  // (one write for all the requests they made).
  try {
    if (ready_batch::defer(write_kick_))
      return;
  } catch (...) { // out of memory: now
  }
  impl_->start_write();
}

void connection::write_kick::batch_ended() noexcept {
  if (const auto c = conn_.lock())
    if (!c->stopping_ && c->impl_ != nullptr)
      c->impl_->start_write();
}

void connection::fail_incoming() noexcept {
  std::vector<incoming_request> batch;
  {
    std::lock_guard lk(incoming_mutex_);
    batch.swap(incoming_);
  }
  for (const auto& in : batch) {
    try {
      in.r->fail_unsubmitted(errc::shutting_down);
    } catch (...) { // posting the handler failed (bad_alloc): nothing left to do
    }
  }
}

void connection::flush_ready() noexcept {
  gathering_ = false;
  std::size_t i = 0;
  while (i < ready_.size()) {
    const asio::any_io_executor ex = ready_[i]->ready_executor();
    std::size_t j = i + 1;
    while (j < ready_.size() && ready_[j]->ready_executor() == ex)
      ++j;
    // Out of memory below: the handlers are destroyed, never run (as when
    // their io_context is destroyed first), by whoever holds them.
    std::vector<queued_request*> run;
    try {
      run.assign(ready_.begin() + static_cast<std::ptrdiff_t>(i),
                 ready_.begin() + static_cast<std::ptrdiff_t>(j));
    } catch (...) {
      for (std::size_t k = i; k < j; ++k)
        delete ready_[k];
      i = j;
      continue;
    }
    ready_batch batch(std::move(run));
    if (&asio::query(ex, asio::execution::context) == &static_cast<asio::execution_context&>(ctx_))
      posted_here_ = true;
    try {
      // Held across post(): the handlers may run, release their own work
      // and let that io_context's run() return before post() has returned
      // here (see handler_request::complete).
      const auto work = asio::prefer(ex, asio::execution::outstanding_work_t::tracked);
      asio::post(work, std::move(batch));
    } catch (...) {
    }
    i = j;
  }
  ready_.clear();
}

void connection::cancel(std::uint64_t id) {
  auto it = live_.find(id);
  if (it == live_.end())
    return; // already completed
  pipeline_.cancel(*it->second, asio::error::operation_aborted);
  refresh_load();
}

connection_stats connection::stats() const noexcept {
  return {writes_.load(std::memory_order_relaxed), requests_.load(std::memory_order_relaxed),
          connects_.load(std::memory_order_relaxed)};
}

std::string connection::last_error() const {
  std::lock_guard lk(error_mutex_);
  return last_error_;
}

} // namespace ratesync::redis

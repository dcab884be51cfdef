// The Redis transport against a real redis-server started by the fixture:
// TCP, unix socket and TLS; AUTH and ACL users; db isolation; pipelining of
// many callers over one connection; a server stopped, paused or flushed under
// load; cancellation of queued and written requests; protocol errors.
#include <algorithm>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/read.hpp>
#include <asio/write.hpp>
#include <atomic>
#include <gtest/gtest.h>
#include <thread>

#include "redis/connection.hpp"
#include "redis/pool.hpp"
#include "redis/script.hpp"
#include "redis_server.hpp"
#include "test_support.hpp"

namespace {

using namespace ratesync;
using namespace ratesync::redis;
using namespace ratesync::test;
namespace ex = asio::experimental;

// The store's thread: connections live on it.
struct io_thread {
  asio::io_context ctx;
  asio::executor_work_guard<asio::io_context::executor_type> work{ctx.get_executor()};
  std::thread thread{[this] { ctx.run(); }};
  ~io_thread() {
    work.reset();
    ctx.stop();
    thread.join();
  }
};

connection_options options_for(const std::string& url) {
  connection_options o;
  o.where = parse_url(url);
  o.connect_timeout = std::chrono::seconds(2);
  o.request_timeout = std::chrono::seconds(2);
  o.reconnect_max = std::chrono::milliseconds(200);
  return o;
}

std::string show(const redisReply& r) {
  switch (r.type) {
  case REDIS_REPLY_STATUS:
    return "+" + std::string(r.str, r.len);
  case REDIS_REPLY_ERROR:
    return "-" + std::string(r.str, r.len);
  case REDIS_REPLY_INTEGER:
    return ":" + std::to_string(r.integer);
  case REDIS_REPLY_STRING:
    return std::string(r.str, r.len);
  case REDIS_REPLY_NIL:
    return "(nil)";
  default:
    return "(array)";
  }
}

// One command; the reply shown as above, or "!" + the transport error.
asio::awaitable<std::string> exec_argv(std::shared_ptr<connection> c,
                                       std::vector<std::string> args) {
  std::vector<std::string_view> argv(args.begin(), args.end());
  std::string payload = encode_command(argv);
  auto [ec, reply] =
      co_await c->async_execute(std::move(payload), ex::as_tuple(asio::use_awaitable));
  if (ec)
    co_return "!" + ec.message();
  co_return show(*reply);
}

// exec(c, "SET", "k", "v"): the argument list is built here, outside any
// co_await expression (g++ 12 miscompiles braced lists inside one).
template <class... Args>
asio::awaitable<std::string> exec(std::shared_ptr<connection> c, const Args&... args) {
  return exec_argv(std::move(c), std::vector<std::string>{std::string(args)...});
}

std::string error_text(errc e) {
  return "!" + make_error_code(e).message();
}

std::shared_ptr<connection> open(io_thread& io, connection_options o,
                                 std::shared_ptr<asio::ssl::context> tls = nullptr) {
  auto c = connection::create(io.ctx, std::move(o), std::move(tls));
  c->start();
  return c;
}

TEST(Transport, TcpUnixSocketAndClientName) {
  redis_server srv;
  io_thread io;
  for (const auto& url : {srv.url(), srv.unix_url()}) {
    auto c = open(io, options_for(url));
    EXPECT_EQ(run(exec(c, "PING")), "+PONG") << url;
    EXPECT_EQ(run(exec(c, "CLIENT", "GETNAME")), "ratesync") << url;
    c->stop();
  }
}

TEST(Transport, TlsVerifiesTheServerAndRejectsAWrongCa) {
  redis_server srv({.tls = true});
  io_thread io;
  auto o = options_for(srv.tls_url());
  o.tls.ca_file = srv.ca_file();
  auto good = open(io, o, make_tls_context(o.tls));
  EXPECT_EQ(run(exec(good, "PING")), "+PONG");

  o.tls.ca_file = srv.other_ca_file();
  auto bad = open(io, o, make_tls_context(o.tls));
  EXPECT_EQ(run(exec(bad, "PING")), error_text(errc::tls_verify_failed));
  EXPECT_NE(bad->last_error().find("did not verify"), std::string::npos) << bad->last_error();
  good->stop();
  bad->stop();
}

TEST(Transport, TlsClientCertificateWhenTheServerDemandsOne) {
  redis_server srv({.tls = true, .tls_require_client_cert = true});
  io_thread io;
  auto o = options_for(srv.tls_url());
  o.tls.ca_file = srv.ca_file();
  auto without = open(io, o, make_tls_context(o.tls));
  const auto t0 = steady::now();
  EXPECT_EQ(run(exec(without, "PING"))[0], '!');
  EXPECT_LT(ms_since(t0), 1500.0) << "should fail on the handshake, not time out";

  o.tls.cert_file = srv.client_cert_file();
  o.tls.key_file = srv.client_key_file();
  auto with = open(io, o, make_tls_context(o.tls));
  EXPECT_EQ(run(exec(with, "PING")), "+PONG");
  without->stop();
  with->stop();
}

TEST(Transport, TlsContextRejectsMissingFilesAtOnce) {
  tls_options t;
  t.ca_file = "/nonexistent/ca.crt";
  EXPECT_THROW(make_tls_context(t), std::invalid_argument);
  t.ca_file.clear();
  t.cert_file = "/nonexistent/client.crt";
  EXPECT_THROW(make_tls_context(t), std::invalid_argument);
}

TEST(Transport, AuthWithTheDefaultUserAndAnAclUser) {
  redis_server srv({.requirepass = "s3cret", .acl_lines = {"user app on >apppass ~* +@all"}});
  io_thread io;
  auto def = open(io, options_for("redis://:s3cret@127.0.0.1:" + std::to_string(srv.port())));
  EXPECT_EQ(run(exec(def, "ACL", "WHOAMI")), "default");
  auto app = open(io, options_for("redis://app:apppass@127.0.0.1:" + std::to_string(srv.port())));
  EXPECT_EQ(run(exec(app, "ACL", "WHOAMI")), "app");
  def->stop();
  app->stop();
}

TEST(Transport, WrongPasswordIsAnAuthenticationErrorNotATimeout) {
  redis_server srv({.requirepass = "s3cret"});
  io_thread io;
  auto c = open(io, options_for("redis://:wrong-password@127.0.0.1:" + std::to_string(srv.port())));
  const auto t0 = steady::now();
  EXPECT_EQ(run(exec(c, "PING")), error_text(errc::auth_failed));
  EXPECT_LT(ms_since(t0), 1000.0);
  const std::string why = c->last_error();
  EXPECT_NE(why.find("authentication failed"), std::string::npos) << why;
  EXPECT_EQ(why.find("wrong-password"), std::string::npos) << "password leaked: " << why;
  c->stop();
}

TEST(Transport, DatabasesAreIsolated) {
  redis_server srv;
  io_thread io;
  auto db1 = open(io, options_for(srv.url() + "/1"));
  auto db2 = open(io, options_for(srv.url() + "/2"));
  EXPECT_EQ(run(exec(db1, "SET", "k", "one")), "+OK");
  EXPECT_EQ(run(exec(db2, "GET", "k")), "(nil)");
  EXPECT_EQ(run(exec(db1, "GET", "k")), "one");
  EXPECT_EQ(srv.command({"SELECT", "0"}), "+OK");
  EXPECT_EQ(srv.command({"DBSIZE"}), ":0");
  db1->stop();
  db2->stop();
}

TEST(Transport, TenThousandCallersShareOneConnectionInFewWrites) {
  redis_server srv;
  io_thread io;
  auto c = open(io, options_for(srv.url()));
  ASSERT_EQ(run(exec(c, "PING")), "+PONG");
  const auto writes_before = c->stats().writes;
  asio::io_context callers;
  int correct = 0, wrong = 0;
  for (int i = 0; i < 10000; ++i)
    asio::co_spawn(
        callers,
        [&, i]() -> asio::awaitable<void> {
          const std::string v = "value-" + std::to_string(i);
          std::string got = co_await exec(c, "ECHO", v);
          (got == v ? correct : wrong)++;
        },
        asio::detached);
  callers.run();
  EXPECT_EQ(correct, 10000);
  EXPECT_EQ(wrong, 0);
  const auto writes = c->stats().writes - writes_before;
  EXPECT_LT(writes, 1000u) << "10,000 requests took " << writes << " socket writes";
  std::printf("10,000 pipelined requests: %llu socket writes\n",
              static_cast<unsigned long long>(writes));
  c->stop();
}

// Callers that keep sending until told to stop; records how long each failed
// request took.
struct load {
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::atomic<double> slowest_failure_ms{0};
  std::thread thread;

  load(std::shared_ptr<connection> c, int callers) {
    thread = std::thread([this, c, callers] {
      asio::io_context ctx;
      for (int i = 0; i < callers; ++i)
        asio::co_spawn(
            ctx,
            [this, c]() -> asio::awaitable<void> {
              while (!stop) {
                const auto t0 = steady::now();
                std::string r = co_await exec(c, "PING");
                if (r == "+PONG") {
                  ++ok;
                } else {
                  ++failed;
                  const double ms = ms_since(t0);
                  double prev = slowest_failure_ms.load();
                  while (ms > prev && !slowest_failure_ms.compare_exchange_weak(prev, ms)) {
                  }
                  co_await sleep_for(std::chrono::milliseconds(5));
                }
              }
            },
            asio::detached);
      ctx.run();
    });
  }
  ~load() {
    stop = true;
    thread.join();
  }
};

TEST(Transport, ServerStoppedMidLoadFailsOnTimeAndRecovers) {
  redis_server srv;
  io_thread io;
  auto o = options_for(srv.url());
  o.request_timeout = std::chrono::milliseconds(500);
  auto c = open(io, o);
  ASSERT_EQ(run(exec(c, "PING")), "+PONG");
  {
    load l(c, 50);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    srv.kill();
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    EXPECT_GT(l.failed.load(), 0);
    EXPECT_LT(l.slowest_failure_ms.load(), 500.0 + 250.0);
    srv.start();
    // Back without restarting anything on our side.
    const auto t0 = steady::now();
    std::string r;
    while (ms_since(t0) < 5000 && (r = run(exec(c, "PING"))) != "+PONG")
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_EQ(r, "+PONG");
  }
  c->stop();
}

TEST(Transport, ClientPauseLongerThanTheTimeoutTimesOutThenRecovers) {
  redis_server srv;
  io_thread io;
  auto o = options_for(srv.url());
  o.request_timeout = std::chrono::milliseconds(400);
  auto c = open(io, o);
  ASSERT_EQ(run(exec(c, "PING")), "+PONG");
  EXPECT_EQ(srv.command({"CLIENT", "PAUSE", "1500", "ALL"}), "+OK");
  const auto t0 = steady::now();
  EXPECT_EQ(run(exec(c, "PING")), error_text(errc::timeout));
  EXPECT_NEAR(ms_since(t0), 400.0, 150.0);
  std::this_thread::sleep_for(std::chrono::milliseconds(1300));
  const auto t1 = steady::now();
  std::string r;
  while (ms_since(t1) < 5000 && (r = run(exec(c, "ECHO", "after"))) != "after")
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(r, "after");
  c->stop();
}

TEST(Transport, ScriptFlushUnderLoadFailsNothing) {
  redis_server srv;
  io_thread io;
  auto c = open(io, options_for(srv.url()));
  const script echo("echo", "return ARGV[1]");
  std::atomic<int> ok{0}, bad{0};
  std::atomic<bool> done{false};
  std::thread flusher([&] {
    while (!done) {
      srv.command({"SCRIPT", "FLUSH"});
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  asio::io_context callers;
  for (int i = 0; i < 50; ++i)
    asio::co_spawn(
        callers,
        [&, i]() -> asio::awaitable<void> {
          for (int k = 0; k < 200; ++k) {
            const std::string v = std::to_string(i * 1000 + k);
            std::vector<std::string_view> args{v};
            std::span<const std::string_view> no_keys;
            auto r = co_await run_script(c, echo, no_keys, args);
            (!r.error && r.reply->type == REDIS_REPLY_STRING && show(*r.reply) == v ? ok : bad)++;
          }
        },
        asio::detached);
  callers.run();
  done = true;
  flusher.join();
  EXPECT_EQ(ok.load(), 50 * 200);
  EXPECT_EQ(bad.load(), 0);
  c->stop();
}

TEST(Transport, CancelledRequestsLeaveTheConnectionUsableAndRepliesInOrder) {
  redis_server srv;
  io_thread io;
  auto c = open(io, options_for(srv.url()));
  ASSERT_EQ(run(exec(c, "PING")), "+PONG");

  // Written, then cancelled: the server is stopped so nothing is answered
  // until the callers have given up; their late replies must be dropped.
  srv.pause();
  asio::io_context callers;
  std::vector<asio::cancellation_signal> signals(100);
  int aborted = 0;
  for (int i = 0; i < 100; ++i)
    asio::co_spawn(
        callers,
        [&, i]() -> asio::awaitable<void> {
          std::string r = co_await exec(c, "ECHO", "stale-" + std::to_string(i));
          aborted += r == "!" + std::error_code(asio::error::operation_aborted).message();
        },
        asio::bind_cancellation_slot(signals[static_cast<std::size_t>(i)].slot(), asio::detached));
  callers.run_for(std::chrono::milliseconds(100)); // all written by now
  for (auto& s : signals)
    s.emit(asio::cancellation_type::terminal);
  callers.run();
  EXPECT_EQ(aborted, 100);
  srv.resume();

  // Cancelled at once, most of them before the writer took them (the
  // pipeline tests pin that case exactly): each completes exactly once.
  callers.restart();
  std::vector<asio::cancellation_signal> more(100);
  int completed = 0;
  for (int i = 0; i < 100; ++i) {
    asio::co_spawn(
        callers,
        [&]() -> asio::awaitable<void> {
          std::string r = co_await exec(c, "ECHO", "maybe");
          completed += r == "maybe" || r[0] == '!';
        },
        asio::bind_cancellation_slot(more[static_cast<std::size_t>(i)].slot(), asio::detached));
  }
  callers.poll();
  for (auto& s : more)
    s.emit(asio::cancellation_type::terminal);
  callers.run();
  EXPECT_EQ(completed, 100);

  // Later callers get their own replies.
  callers.restart();
  int right = 0;
  for (int i = 0; i < 500; ++i)
    asio::co_spawn(
        callers,
        [&, i]() -> asio::awaitable<void> {
          const std::string v = "fresh-" + std::to_string(i);
          right += (co_await exec(c, "ECHO", v)) == v;
        },
        asio::detached);
  callers.run();
  EXPECT_EQ(right, 500);
  EXPECT_EQ(c->load(), 0u);
  c->stop();
}

TEST(Transport, GarbageFromTheServerFailsPendingRequestsWithAProtocolError) {
  io_thread io;
  // A fake server: answers anything with bytes that are not RESP.
  asio::ip::tcp::acceptor acceptor(io.ctx, {asio::ip::make_address("127.0.0.1"), 0});
  const auto port = acceptor.local_endpoint().port();
  asio::co_spawn(
      io.ctx,
      [&acceptor]() -> asio::awaitable<void> {
        for (;;) {
          auto sock = co_await acceptor.async_accept(asio::use_awaitable);
          std::array<char, 512> buf;
          co_await sock.async_read_some(asio::buffer(buf), asio::use_awaitable);
          co_await asio::async_write(sock, asio::buffer(std::string("!garbage\r\n")),
                                     asio::use_awaitable);
          co_await sock.async_read_some(asio::buffer(buf), asio::use_awaitable);
        }
      },
      asio::detached);
  auto o = options_for("redis://127.0.0.1:" + std::to_string(port));
  o.client_name.clear(); // no handshake: the first bytes back are the reply
  auto c = open(io, o);
  EXPECT_EQ(run(exec(c, "PING")), error_text(errc::protocol_error));
  EXPECT_NE(c->last_error().find("protocol error"), std::string::npos) << c->last_error();
  c->stop();
  asio::post(io.ctx, [&] { acceptor.close(); });
}

TEST(Transport, PoolOpensMinEagerlyAndGrowsUnderLoad) {
  redis_server srv;
  io_thread io;
  pool p(io.ctx, options_for(srv.url()), nullptr, 2, 4);
  EXPECT_EQ(p.size(), 2u);
  // Eager: both connect without any request.
  const auto t0 = steady::now();
  while (ms_since(t0) < 3000) {
    auto cs = p.connections();
    if (std::all_of(cs.begin(), cs.end(), [](auto& c) { return c->is_connected(); }))
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(p.connections()[0]->is_connected());
  EXPECT_TRUE(p.connections()[1]->is_connected());
  srv.pause(); // requests pile up, so every connection looks busy
  asio::io_context callers;
  for (int wave = 0; wave < 30; ++wave) {
    for (int i = 0; i < 10; ++i)
      asio::co_spawn(
          callers, [&]() -> asio::awaitable<void> { co_await exec(p.pick(), "PING"); },
          asio::detached);
    callers.run_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(p.size(), 4u);
  srv.resume();
  callers.run();
  p.stop();
}

} // namespace

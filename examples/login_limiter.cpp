// login_limiter: brute-force protection for a login endpoint, shared by every
// server process through Redis. Each client IP may try 3 logins in any 60
// seconds (a sliding window, one window per IP); a 4th attempt is refused at
// once, and the refusal becomes an HTTP "429 Too Many Requests" with a
// Retry-After header in whole seconds, rounded up.
//
//   login_limiter [URL]   URL: argv[1], else $REDIS_URL, else
//                         redis://127.0.0.1:6379/0
//
// The limiter is fail_closed: if Redis cannot decide, the login answers
// "503 Service Unavailable" rather than letting unlimited attempts through.
// Exits 0 when Redis decided every attempt, 1 otherwise.
//
// See docs/engines/redis.md. (g++ 12: acquire_options live in a named
// variable, never a braced temporary inside co_await; coroutines take their
// arguments by value.)
#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "ratesync/ratesync.hpp"

namespace {

// What the HTTP layer would send back.
struct http_response {
  int status = 200;
  std::string reason = "OK";
  long long retry_after_s = 0; // Retry-After header when > 0
};

// Retry-After is whole seconds; rounding down would invite a retry that is
// still refused.
long long retry_after_seconds(std::chrono::microseconds d) {
  return (d.count() + 999'999) / 1'000'000;
}

// The guard in front of the password check.
asio::awaitable<http_response> handle_login(std::string client_ip) {
  ratesync::acquire_options o;
  o.key = client_ip;                  // one window per IP
  o.timeout = ratesync::seconds_d(0); // never make a login wait: refuse at once
  try {
    ratesync::permit permit = co_await ratesync::acquire("login", o);
    // ... check the password here ...
    co_return http_response{};
  } catch (const ratesync::acquisition_error& e) {
    co_return http_response{429, "Too Many Requests", retry_after_seconds(e.retry_after())};
  } catch (const ratesync::store_error& e) {
    std::fprintf(stderr, "login_limiter: %s\n", e.what());
    co_return http_response{503, "Service Unavailable", 0};
  }
}

asio::awaitable<int> demo() {
  const ratesync::limiter login = ratesync::get_limiter("login");
  const std::string a = "203.0.113.7";
  const std::string b = "198.51.100.23";
  // Start from a clean slate, so that running the demo twice within a minute
  // shows the same thing (reset is meant for operators and tests).
  co_await login.reset(a);
  co_await login.reset(b);

  int unavailable = 0;
  struct attempt {
    const std::string* ip;
    int n;
  };
  const attempt attempts[] = {{&a, 1}, {&a, 2}, {&b, 1}, {&a, 3}, {&a, 4}, {&a, 5}, {&b, 2}};
  for (const attempt& at : attempts) {
    const http_response r = co_await handle_login(*at.ip);
    std::printf("%-14s attempt %d: %d %s", at.ip->c_str(), at.n, r.status, r.reason.c_str());
    if (r.retry_after_s > 0)
      std::printf(", Retry-After: %lld", r.retry_after_s);
    std::printf("\n");
    unavailable += r.status == 503;
  }

  const ratesync::limiter_state st = co_await login.get_state(a);
  std::printf("state of %s in Redis: %lld attempts left, next one allowed in %.1f s\n", a.c_str(),
              static_cast<long long>(st.remaining),
              static_cast<double>(st.retry_after.count()) / 1e6);
  const ratesync::limiter_metrics m = login.get_metrics();
  std::printf("metrics: total_acquisitions %llu, denied %llu, store_errors %llu\n",
              static_cast<unsigned long long>(m.total_acquisitions),
              static_cast<unsigned long long>(m.denied),
              static_cast<unsigned long long>(m.store_errors));
  co_return unavailable == 0 ? 0 : 1;
}

} // namespace

int main(int argc, char** argv) {
  std::string url = "redis://127.0.0.1:6379/0";
  if (argc > 1)
    url = argv[1];
  else if (const char* env = std::getenv("REDIS_URL"); env && *env)
    url = env;

  try {
    ratesync::store_options store;
    store.engine = "redis";
    store.url = url;
    store.socket_timeout = ratesync::seconds_d(2.0);
    store.socket_connect_timeout = ratesync::seconds_d(2.0);
    ratesync::configure_store("redis", store);

    ratesync::limiter_options login;
    login.store = "redis";
    login.algo = ratesync::algorithm::sliding_window;
    login.limit = 3;
    login.window_seconds = 60;
    login.fail_closed = true; // Redis down: 503, not unlimited attempts
    ratesync::configure_limiter("login", login);
  } catch (const ratesync::config_error& e) {
    std::fprintf(stderr, "login_limiter: %s\n", e.what());
    return 1;
  }
  std::printf("store \"redis\" at %s; login: 3 attempts per 60 s per IP, fail fast\n", url.c_str());

  asio::io_context ctx;
  int code = 1;
  std::exception_ptr failure;
  asio::co_spawn(ctx, demo(), [&](std::exception_ptr e, int c) {
    failure = e;
    code = c;
  });
  ctx.run();
  if (failure) {
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& e) { // e.g. store_error from reset: Redis unreachable
      std::fprintf(stderr, "login_limiter: %s\n", e.what());
      return 1;
    }
  }
  return code;
}

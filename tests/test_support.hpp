// Helpers shared by the tests: run coroutines to completion, measure time.
#pragma once

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/use_future.hpp>
#include <chrono>
#include <future>

namespace ratesync::test {

using steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

// Runs one coroutine on a fresh single-threaded io_context and returns its
// result (rethrowing its exception).
template <class T> T run(asio::awaitable<T> a) {
  asio::io_context ctx;
  auto f = asio::co_spawn(ctx, std::move(a), asio::use_future);
  ctx.run();
  return f.get();
}

inline asio::awaitable<void> sleep_for(std::chrono::nanoseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::use_awaitable);
}

inline double ms_since(steady::time_point t0) {
  return std::chrono::duration<double, std::milli>(steady::now() - t0).count();
}

} // namespace ratesync::test

// Helpers shared by the tests: run coroutines to completion, measure time.
#pragma once

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <chrono>
#include <exception>
#include <optional>
#include <stdexcept>
#include <type_traits>

namespace ratesync::test {

using steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

// Runs one coroutine on a fresh single-threaded io_context and returns its
// result (rethrowing its exception). The completion runs on this thread, in
// ctx.run(). (It used asio::use_future, whose handler Asio 1.22 runs on its
// hidden system_context thread: that thread could drop the last reference
// to an exception the test had just caught and read, through libstdc++'s
// exception_ptr, whose atomic reference count TSan cannot see: TSan reported
// a data race on the exception's memory, 4 times in one run of
// RedisFailure.FailClosedThrowsStoreErrorAndFlagsTheBreakersAnswers.)
template <class T> T run(asio::awaitable<T> a) {
  asio::io_context ctx;
  std::exception_ptr error;
  if constexpr (std::is_void_v<T>) {
    asio::co_spawn(ctx, std::move(a), [&](std::exception_ptr e) { error = std::move(e); });
    ctx.run();
    if (error)
      std::rethrow_exception(error);
  } else {
    std::optional<T> value;
    asio::co_spawn(ctx, std::move(a), [&](std::exception_ptr e, T v) {
      error = std::move(e);
      if (!error)
        value.emplace(std::move(v));
    });
    ctx.run();
    if (error)
      std::rethrow_exception(error);
    if (!value)
      throw std::logic_error("run(): the coroutine did not complete");
    return std::move(*value);
  }
}

inline asio::awaitable<void> sleep_for(std::chrono::nanoseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::use_awaitable);
}

inline double ms_since(steady::time_point t0) {
  return std::chrono::duration<double, std::milli>(steady::now() - t0).count();
}

} // namespace ratesync::test

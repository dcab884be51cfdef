// A consumer of the ratesync package: configures a memory limiter in code,
// acquires from a coroutine, checks the metrics. Prints OK and exits 0 only if
// every acquire was counted.
#include <ratesync/ratesync.hpp>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>

#include <cstdint>
#include <exception>
#include <iostream>

namespace {

constexpr int acquires = 3;

asio::awaitable<int> use_limiter() {
  int held = 0;
  for (int i = 0; i < acquires; ++i) {
    auto p = co_await ratesync::acquire("api");
    if (p.held())
      ++held;
  }
  co_return held;
}

} // namespace

int main() {
  try {
    ratesync::limiter_options opts;
    opts.rate_per_second = 1000.0;
    opts.burst = 10;
    ratesync::configure_limiter("api", opts);

    asio::io_context ctx;
    int held = -1;
    std::exception_ptr failure;
    asio::co_spawn(ctx, use_limiter(), [&](std::exception_ptr e, int n) {
      failure = e;
      held = n;
    });
    ctx.run();
    if (failure)
      std::rethrow_exception(failure);

    const std::uint64_t counted = ratesync::get_limiter("api").get_metrics().total_acquisitions;
    if (held != acquires || counted != acquires) {
      std::cerr << "FAIL: held " << held << " permits, metrics counted " << counted << ", expected "
                << acquires << '\n';
      return 1;
    }
    std::cout << "OK: " << counted << " acquisitions\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "FAIL: " << e.what() << '\n';
    return 1;
  }
}

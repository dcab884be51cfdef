// The free functions on the default registry, and its auto-loading of
// RATESYNC_CONFIG or ./ratesync.toml. ctest runs each case in its own process,
// so each starts with an untouched default registry.
#include <asio/detached.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <unistd.h>

#include "ratesync/ratesync.hpp"
#include "test_support.hpp"

namespace {

using namespace ratesync;
using namespace ratesync::test;
namespace fs = std::filesystem;

fs::path temp_dir() {
  auto d = fs::temp_directory_path() / ("ratesync-test-" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

void write(const fs::path& p, const std::string& text) {
  std::ofstream(p) << text;
}

const char* kConfig = R"(
[stores.local]
engine = "memory"

[limiters.api]
store = "local"
rate_per_second = 100.0
burst = 2
)";

TEST(DefaultRegistry, LoadConfigThenCoSpawnOnYourOwnIoContext) {
  ::unsetenv("RATESYNC_CONFIG");
  auto dir = temp_dir();
  write(dir / "app.toml", kConfig);
  load_config(dir / "app.toml");
  asio::io_context ctx;
  int admitted = 0;
  for (int i = 0; i < 4; ++i)
    asio::co_spawn(
        ctx,
        [&]() -> asio::awaitable<void> {
          auto p = co_await ratesync::acquire("api");
          ++admitted;
        },
        asio::detached);
  ctx.run(); // returns once every coroutine is done: nothing left behind
  EXPECT_EQ(admitted, 4);
  EXPECT_EQ(get_limiter("api").get_metrics().total_acquisitions, 4u);
  fs::remove_all(dir);
}

TEST(DefaultRegistry, LoadsTheFileNamedByRatesyncConfig) {
  auto dir = temp_dir();
  write(dir / "named.toml", kConfig);
  ::setenv("RATESYNC_CONFIG", (dir / "named.toml").c_str(), 1);
  EXPECT_EQ(get_limiter("api").options().burst, 2);
  fs::remove_all(dir);
}

TEST(DefaultRegistry, AMissingRatesyncConfigFileIsAnError) {
  ::setenv("RATESYNC_CONFIG", "/nonexistent/ratesync.toml", 1);
  try {
    get_limiter("api");
    FAIL() << "no error";
  } catch (const config_error& e) {
    EXPECT_EQ(e.source(), "/nonexistent/ratesync.toml");
  }
  // Every later lookup reports it too, not a bare limiter_not_found.
  EXPECT_THROW(get_limiter("api"), config_error);
}

TEST(DefaultRegistry, AFailedExplicitLoadLeavesAutoLoadInPlace) {
  auto dir = temp_dir();
  write(dir / "named.toml", kConfig);
  ::setenv("RATESYNC_CONFIG", (dir / "named.toml").c_str(), 1);
  EXPECT_THROW(load_config_string("[limiters.x]\nstore = \"nowhere\"\nmax_concurrent = 1\n"),
               config_error);
  EXPECT_EQ(get_limiter("api").options().burst, 2);
  fs::remove_all(dir);
}

TEST(DefaultRegistry, LoadsRatesyncTomlFromTheWorkingDirectory) {
  ::unsetenv("RATESYNC_CONFIG");
  auto dir = temp_dir();
  write(dir / "ratesync.toml", kConfig);
  auto cwd = fs::current_path();
  fs::current_path(dir);
  EXPECT_TRUE(default_registry().has_limiter("api"));
  fs::current_path(cwd);
  fs::remove_all(dir);
}

TEST(DefaultRegistry, ExplicitConfigurationDisablesAutoLoad) {
  auto dir = temp_dir();
  write(dir / "named.toml", kConfig);
  ::setenv("RATESYNC_CONFIG", (dir / "named.toml").c_str(), 1);
  limiter_options o;
  o.max_concurrent = 3;
  configure_limiter("workers", o);
  EXPECT_FALSE(default_registry().has_limiter("api"));
  EXPECT_THROW(get_limiter("api"), limiter_not_found);
  EXPECT_EQ(get_limiter("workers").options().max_concurrent, 3);
  fs::remove_all(dir);
}

TEST(DefaultRegistry, NothingConfiguredMeansLimiterNotFound) {
  ::unsetenv("RATESYNC_CONFIG");
  try {
    run(ratesync::acquire("api"));
    FAIL() << "no error";
  } catch (const limiter_not_found& e) {
    EXPECT_EQ(e.name(), "api");
    EXPECT_STREQ(e.what(), "no limiter named \"api\" is configured");
  }
}

} // namespace

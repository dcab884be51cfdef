// Fuzzes the TOML configuration loader: any bytes through the public
// registry::load_config_string on a fresh registry, with ${VAR} expansion of
// the variables set in LLVMFuzzerInitialize. config_error is the documented
// refusal; any other exception escapes and is a finding, like a crash.
//
// Checked beyond that:
//  - a config_error names a line inside the text (or 0);
//  - an error about a password never shows the secret RATESYNC_FUZZ_SECRET
//    carries;
//  - every limiter of a configuration that loads behaves as configured on a
//    fresh state: its state shows a full allowance, one acquire of its whole
//    burst or limit (cost 1 for a concurrency limit) is admitted without
//    waiting, a held permit counts as concurrent, and a cost above the burst
//    or limit is refused with ratesync::invalid_argument.
// Redis stores are built by redis_engine_stub.cpp: the URL and timeouts are
// checked and converted as the real engine does, limiters run in memory.
#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "ratesync/ratesync.hpp"

namespace {

constexpr std::string_view secret = "Fz9s3cr3tQx";

[[noreturn]] void violated(const char* property, const std::string& detail) {
  std::fprintf(stderr, "config_fuzz: %s\n  %s\n", property, detail.c_str());
  std::abort();
}

void check_error(const ratesync::config_error& e, std::string_view text) {
  std::size_t lines = 1;
  for (char c : text)
    lines += c == '\n' ? 1 : 0;
  if (e.line() > lines)
    violated("config_error names a line past the end of the text", e.what());
  if (e.source() != "fuzz.toml")
    violated("config_error names another source", e.what());
  // (A URL's password is masked by redact_url, which url_fuzz checks; here the
  // secret may sit anywhere in a URL, e.g. in a query key, where it is no
  // password.)
  if (e.option().ends_with(".password") && text.find(secret) == std::string_view::npos &&
      std::string_view(e.what()).find(secret) != std::string_view::npos)
    violated("an error about a password shows the password", e.what());
}

// One fresh limiter, decided without waiting (timeout 0).
asio::awaitable<void> exercise(ratesync::limiter l) {
  const auto& o = l.options();
  const std::string who = "limiter " + l.name();

  const ratesync::limiter_state fresh = co_await l.get_state();
  if (fresh.remaining < 1 || fresh.retry_after.count() != 0 || fresh.current_concurrent != 0)
    violated("a fresh limiter's state is not a full allowance", who);

  std::int64_t max_cost = std::numeric_limits<std::int64_t>::max();
  if (o.rate_per_second)
    max_cost = o.burst.value_or(1);
  else if (o.limit)
    max_cost = *o.limit;

  ratesync::acquire_options all;
  all.timeout = ratesync::seconds_d(0);
  all.cost = max_cost == std::numeric_limits<std::int64_t>::max() ? 1 : max_cost;
  ratesync::acquire_result r = co_await l.try_acquire(all);
  if (!r.allowed)
    violated("a fresh limiter refuses its whole burst or limit", who);
  if (o.max_concurrent) {
    const ratesync::limiter_state held = co_await l.get_state();
    if (held.current_concurrent != 1)
      violated("a held permit is not counted as concurrent", who);
  }
  r.permit.release();

  if (max_cost != std::numeric_limits<std::int64_t>::max()) {
    ratesync::acquire_options too_much;
    too_much.timeout = ratesync::seconds_d(0);
    too_much.cost = max_cost + 1;
    bool refused = false;
    try {
      co_await l.try_acquire(too_much);
    } catch (const ratesync::invalid_argument&) {
      refused = true;
    }
    if (!refused)
      violated("a cost above the burst or limit is not refused", who);
  }
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Values for ${VAR} / ${VAR:-default} in the corpus and dictionary.
  ::setenv("RATESYNC_FUZZ_URL", "redis://app:Fz9s3cr3tQx@localhost:6379/2", 1);
  ::setenv("RATESYNC_FUZZ_SECRET", "Fz9s3cr3tQx", 1);
  ::setenv("RATESYNC_FUZZ_HOST", "redis.internal", 1);
  ::setenv("RATESYNC_FUZZ_RATE", "12.5", 1);
  ::setenv("RATESYNC_FUZZ_INT", "7", 1);
  ::setenv("RATESYNC_FUZZ_BOOL", "true", 1);
  ::setenv("RATESYNC_FUZZ_EMPTY", "", 1);
  ::setenv("RATESYNC_FUZZ_NESTED", "${RATESYNC_FUZZ_INT}", 1); // not expanded again
  ::unsetenv("RATESYNC_FUZZ_UNSET");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  ratesync::registry reg;
  try {
    reg.load_config_string(text, "fuzz.toml");
  } catch (const ratesync::config_error& e) {
    check_error(e, text);
    if (!reg.limiter_names().empty() || !reg.store_names().empty())
      violated("a refused configuration left something configured", e.what());
    return 0;
  }

  asio::io_context io;
  for (const std::string& name : reg.limiter_names()) {
    asio::co_spawn(io, exercise(reg.get_limiter(name)), [](std::exception_ptr e) {
      if (e)
        std::rethrow_exception(e); // out of io.run(): an uncaught exception
    });
  }
  io.run();
  return 0;
}

// TOML configuration: the seed's snippets, ${VAR} expansion, and every class of
// error with its exact position, option and message; validate() from code.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <unistd.h>

#include "config.hpp"
#include "ratesync/errors.hpp"
#include "ratesync/options.hpp"

namespace {

using ratesync::config_error;
using ratesync::limiter_options;
using ratesync::seconds_d;
using ratesync::store_options;
using ratesync::detail::closest_name;
using ratesync::detail::config_document;
using ratesync::detail::expand_env;
using ratesync::detail::parse_config;
using ratesync::detail::parse_config_file;

// Sets (or unsets) an environment variable for one test and restores it.
class scoped_env {
public:
  scoped_env(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name))
      old_ = old;
    if (value != nullptr)
      ::setenv(name, value, 1);
    else
      ::unsetenv(name);
  }
  ~scoped_env() {
    if (old_)
      ::setenv(name_.c_str(), old_->c_str(), 1);
    else
      ::unsetenv(name_.c_str());
  }
  scoped_env(const scoped_env&) = delete;
  scoped_env& operator=(const scoped_env&) = delete;

private:
  std::string name_;
  std::optional<std::string> old_;
};

// A config_error, field by field, for exact comparisons.
struct error_parts {
  std::string source;
  std::uint32_t line = 0;
  std::uint32_t column = 0;
  std::string option;
  std::string message;

  bool operator==(const error_parts&) const = default;
};

std::ostream& operator<<(std::ostream& os, const error_parts& e) {
  return os << "{source \"" << e.source << "\", line " << e.line << ", column " << e.column
            << ", option \"" << e.option << "\", message \"" << e.message << "\"}";
}

error_parts parts(const config_error& e) {
  return {e.source(), e.line(), e.column(), e.option(), e.message()};
}

constexpr const char* source_name = "test.toml";

// The config_error parse_config throws for `text` (a failure if none).
error_parts error_of(std::string_view text) {
  try {
    parse_config(text, source_name);
  } catch (const config_error& e) {
    return parts(e);
  }
  ADD_FAILURE() << "no config_error for:\n" << text;
  return {};
}

error_parts at(std::uint32_t line, std::uint32_t column, std::string option, std::string message) {
  return {source_name, line, column, std::move(option), std::move(message)};
}

template <class F> error_parts validate_error_of(F&& f) {
  try {
    f();
  } catch (const config_error& e) {
    return parts(e);
  }
  ADD_FAILURE() << "no config_error";
  return {};
}

error_parts from_code(std::string option, std::string message) {
  return {"", 0, 0, std::move(option), std::move(message)};
}

// ---------------------------------------------------------------------------
// The seed's snippets, unchanged.

constexpr std::string_view seed_basic = R"([stores.redis]
engine = "redis"
url = "redis://localhost:6379/0"

[limiters.api]
store = "redis"
rate_per_second = 100.0
timeout = 30.0
)";

constexpr std::string_view seed_full_options = R"([stores.redis]
engine = "redis"
url = "redis://localhost:6379/0"
db = 0                              # Database number (0-15)
password = "${REDIS_PASSWORD:-}"    # Optional password
key_prefix = "rate_limit"           # Key prefix for namespacing
pool_min_size = 2                   # Min connections
pool_max_size = 10                  # Max connections
timing_margin_ms = 10.0             # Timing safety margin
socket_timeout = 5.0                # Socket timeout (seconds)
socket_connect_timeout = 5.0        # Connection timeout (seconds)
)";

constexpr std::string_view seed_token_bucket = R"([limiters.api]
store = "redis"
rate_per_second = 100.0    # Max 100 requests per second
max_concurrent = 50        # Max 50 simultaneous (optional)
)";

constexpr std::string_view seed_sliding_window = R"([limiters.login]
store = "redis"
algorithm = "sliding_window"
limit = 5                  # Max 5 attempts
window_seconds = 300       # Per 5 minutes
)";

constexpr std::string_view seed_production = R"([stores.redis_prod]
engine = "redis"
url = "rediss://:${REDIS_PASSWORD}@redis.internal:6380/0"
password = "${REDIS_PASSWORD}"
pool_max_size = 20
socket_timeout = 10.0
)";

TEST(ConfigSeed, BasicParses) {
  config_document doc = parse_config(seed_basic, source_name);
  EXPECT_EQ(doc.source, source_name);
  ASSERT_EQ(doc.stores.size(), 1u);
  ASSERT_EQ(doc.limiters.size(), 1u);

  const auto& s = doc.stores[0];
  EXPECT_EQ(s.name, "redis");
  EXPECT_EQ(s.options.engine, "redis");
  EXPECT_EQ(s.options.url, "redis://localhost:6379/0");
  EXPECT_FALSE(s.options.db);
  EXPECT_FALSE(s.options.password);
  EXPECT_EQ(s.options.key_prefix, "rate_limit");
  EXPECT_EQ(s.pos.line, 1u);
  EXPECT_EQ(s.pos.column, 1u);
  EXPECT_EQ(s.option_pos.at("engine").line, 2u);
  EXPECT_EQ(s.option_pos.at("engine").column, 10u);
  EXPECT_EQ(s.option_pos.at("url").line, 3u);
  EXPECT_EQ(s.option_pos.at("url").column, 7u);

  const auto& l = doc.limiters[0];
  EXPECT_EQ(l.name, "api");
  EXPECT_EQ(l.options.store, "redis");
  EXPECT_EQ(l.options.algo, ratesync::algorithm::token_bucket);
  EXPECT_EQ(l.options.rate_per_second, 100.0);
  EXPECT_EQ(l.options.timeout, seconds_d(30.0));
  EXPECT_FALSE(l.options.burst);
  EXPECT_FALSE(l.options.limit);
  EXPECT_FALSE(l.options.window_seconds);
  EXPECT_FALSE(l.options.max_concurrent);
  EXPECT_FALSE(l.options.fail_closed);
  EXPECT_EQ(l.pos.line, 5u);
  EXPECT_EQ(l.pos.column, 1u);
  EXPECT_EQ(l.option_pos.at("store").line, 6u);
  EXPECT_EQ(l.option_pos.at("store").column, 9u);
  EXPECT_EQ(l.option_pos.at("rate_per_second").line, 7u);
  EXPECT_EQ(l.option_pos.at("rate_per_second").column, 19u);
  EXPECT_EQ(l.option_pos.at("timeout").line, 8u);
  EXPECT_EQ(l.option_pos.count("burst"), 0u);
}

TEST(ConfigSeed, FullOptionsWithoutPassword) {
  scoped_env pw("REDIS_PASSWORD", nullptr);
  config_document doc = parse_config(seed_full_options, source_name);
  ASSERT_EQ(doc.stores.size(), 1u);
  EXPECT_TRUE(doc.limiters.empty());
  const store_options& o = doc.stores[0].options;
  EXPECT_EQ(o.engine, "redis");
  EXPECT_EQ(o.url, "redis://localhost:6379/0");
  EXPECT_EQ(o.db, 0);
  ASSERT_TRUE(o.password.has_value());
  EXPECT_EQ(*o.password, "");
  EXPECT_EQ(o.key_prefix, "rate_limit");
  EXPECT_EQ(o.pool_min_size, 2);
  EXPECT_EQ(o.pool_max_size, 10);
  EXPECT_EQ(o.timing_margin_ms, 10.0);
  EXPECT_EQ(o.socket_timeout, seconds_d(5.0));
  EXPECT_EQ(o.socket_connect_timeout, seconds_d(5.0));
  EXPECT_EQ(doc.stores[0].option_pos.size(), 10u);
  EXPECT_EQ(doc.stores[0].option_pos.at("password").line, 5u);
  EXPECT_EQ(doc.stores[0].option_pos.at("password").column, 12u);
}

TEST(ConfigSeed, FullOptionsWithPassword) {
  scoped_env pw("REDIS_PASSWORD", "s3cret");
  config_document doc = parse_config(seed_full_options, source_name);
  ASSERT_EQ(doc.stores.size(), 1u);
  EXPECT_EQ(doc.stores[0].options.password, "s3cret");
}

TEST(ConfigSeed, FullOptionsEmptyPasswordVariable) {
  scoped_env pw("REDIS_PASSWORD", "");
  config_document doc = parse_config(seed_full_options, source_name);
  EXPECT_EQ(doc.stores[0].options.password, "");
}

TEST(ConfigSeed, TokenBucketWithConcurrency) {
  config_document doc = parse_config(seed_token_bucket, source_name);
  ASSERT_EQ(doc.limiters.size(), 1u);
  const limiter_options& o = doc.limiters[0].options;
  EXPECT_EQ(o.store, "redis");
  EXPECT_EQ(o.algo, ratesync::algorithm::token_bucket);
  EXPECT_EQ(o.rate_per_second, 100.0);
  EXPECT_EQ(o.max_concurrent, 50);
  EXPECT_FALSE(o.timeout);
}

TEST(ConfigSeed, SlidingWindow) {
  config_document doc = parse_config(seed_sliding_window, source_name);
  ASSERT_EQ(doc.limiters.size(), 1u);
  const auto& l = doc.limiters[0];
  EXPECT_EQ(l.name, "login");
  EXPECT_EQ(l.options.store, "redis");
  EXPECT_EQ(l.options.algo, ratesync::algorithm::sliding_window);
  EXPECT_EQ(l.options.limit, 5);
  EXPECT_EQ(l.options.window_seconds, 300.0);
  EXPECT_FALSE(l.options.rate_per_second);
  EXPECT_FALSE(l.options.burst);
  EXPECT_EQ(l.option_pos.at("window_seconds").line, 5u);
  EXPECT_EQ(l.option_pos.at("window_seconds").column, 18u);
}

TEST(ConfigSeed, ProductionExpandsPasswordInUrlAndPassword) {
  scoped_env pw("REDIS_PASSWORD", "p@ss");
  config_document doc = parse_config(seed_production, source_name);
  ASSERT_EQ(doc.stores.size(), 1u);
  const store_options& o = doc.stores[0].options;
  EXPECT_EQ(o.url, "rediss://:p@ss@redis.internal:6380/0");
  EXPECT_EQ(o.password, "p@ss");
  EXPECT_EQ(o.pool_max_size, 20);
  EXPECT_EQ(o.socket_timeout, seconds_d(10.0));
}

TEST(ConfigSeed, ProductionWithoutPasswordNamesTheVariable) {
  scoped_env pw("REDIS_PASSWORD", nullptr);
  EXPECT_EQ(error_of(seed_production),
            at(3, 7, "stores.redis_prod.url",
               "environment variable REDIS_PASSWORD is not set (use ${REDIS_PASSWORD:-default} "
               "to give a default)"));
}

TEST(ConfigSeed, AllSnippetsTogetherInTextOrder) {
  scoped_env pw("REDIS_PASSWORD", nullptr);
  std::string text = std::string(seed_full_options) + "\n" + std::string(seed_sliding_window) +
                     "\n" + std::string(seed_token_bucket);
  config_document doc = parse_config(text, source_name);
  ASSERT_EQ(doc.stores.size(), 1u);
  ASSERT_EQ(doc.limiters.size(), 2u);
  EXPECT_EQ(doc.limiters[0].name, "login");
  EXPECT_EQ(doc.limiters[1].name, "api");
  EXPECT_EQ(doc.limiters[0].pos.line, 13u);
  EXPECT_EQ(doc.limiters[1].pos.line, 19u);
}

// ---------------------------------------------------------------------------
// Parsing details

TEST(ConfigParse, EmptyDocument) {
  config_document doc = parse_config("", source_name);
  EXPECT_TRUE(doc.stores.empty());
  EXPECT_TRUE(doc.limiters.empty());
  doc = parse_config("[stores]\n[limiters]\n", source_name);
  EXPECT_TRUE(doc.stores.empty());
  EXPECT_TRUE(doc.limiters.empty());
}

TEST(ConfigParse, EntriesKeepTextOrder) {
  config_document doc = parse_config(R"([limiters.zeta]
max_concurrent = 1
[stores.b]
engine = "memory"
[limiters.alpha]
max_concurrent = 2
[stores.a]
)",
                                     source_name);
  ASSERT_EQ(doc.limiters.size(), 2u);
  EXPECT_EQ(doc.limiters[0].name, "zeta");
  EXPECT_EQ(doc.limiters[1].name, "alpha");
  ASSERT_EQ(doc.stores.size(), 2u);
  EXPECT_EQ(doc.stores[0].name, "b");
  EXPECT_EQ(doc.stores[1].name, "a");
  EXPECT_EQ(doc.stores[1].options.engine, "memory");
}

TEST(ConfigParse, FirstErrorInTextIsReported) {
  EXPECT_EQ(error_of(R"([limiters.zeta]
rate_per_second = 0
[limiters.alpha]
rate_per_second = -1
)"),
            at(2, 19, "limiters.zeta.rate_per_second", "must be > 0 (got 0)"));
}

TEST(ConfigParse, InlineTablesAndDottedKeys) {
  config_document doc = parse_config(R"([limiters]
api = { rate_per_second = 5, burst = 10 }
web.max_concurrent = 3
)",
                                     source_name);
  ASSERT_EQ(doc.limiters.size(), 2u);
  EXPECT_EQ(doc.limiters[0].name, "api");
  EXPECT_EQ(doc.limiters[0].options.rate_per_second, 5.0);
  EXPECT_EQ(doc.limiters[0].options.burst, 10);
  EXPECT_EQ(doc.limiters[0].option_pos.at("burst").line, 2u);
  EXPECT_EQ(doc.limiters[0].option_pos.at("burst").column, 38u);
  EXPECT_EQ(doc.limiters[1].name, "web");
  EXPECT_EQ(doc.limiters[1].options.max_concurrent, 3);
}

TEST(ConfigParse, EveryLimiterOption) {
  config_document doc = parse_config(R"([limiters.all]
store = "main"
algorithm = "token_bucket"
rate_per_second = 2
burst = 4
max_concurrent = 8
timeout = 0
fail_closed = true
)",
                                     source_name);
  const limiter_options& o = doc.limiters.at(0).options;
  EXPECT_EQ(o.store, "main");
  EXPECT_EQ(o.rate_per_second, 2.0); // an integer is accepted for a float option
  EXPECT_EQ(o.burst, 4);
  EXPECT_EQ(o.max_concurrent, 8);
  EXPECT_EQ(o.timeout, seconds_d(0.0));
  EXPECT_TRUE(o.fail_closed);
  EXPECT_EQ(doc.limiters.at(0).option_pos.size(), 7u);
}

TEST(ConfigParse, MaxConcurrentAlone) {
  config_document doc = parse_config("[limiters.db]\nmax_concurrent = 4\n", source_name);
  EXPECT_EQ(doc.limiters.at(0).options.max_concurrent, 4);
  EXPECT_FALSE(doc.limiters.at(0).options.rate_per_second);
}

TEST(ConfigParse, StrategyIsASynonymOfEngine) {
  config_document doc = parse_config(R"([stores.r]
strategy = "redis"
url = "redis://localhost"
)",
                                     source_name);
  EXPECT_EQ(doc.stores.at(0).options.engine, "redis");
  EXPECT_EQ(doc.stores.at(0).option_pos.at("engine").line, 2u);
  EXPECT_EQ(doc.stores.at(0).option_pos.at("strategy").line, 2u);

  doc = parse_config(R"([stores.r]
engine = "redis"
strategy = "redis"
url = "redis://localhost"
)",
                     source_name);
  EXPECT_EQ(doc.stores.at(0).options.engine, "redis");
}

TEST(ConfigParse, QuotedNumericPasswordStaysAString) {
  config_document doc = parse_config(R"([stores.r]
engine = "redis"
url = "redis://localhost"
password = "12345"
)",
                                     source_name);
  EXPECT_EQ(doc.stores.at(0).options.password, "12345");
}

TEST(ConfigParse, UnquotedNumericPasswordIsATypeError) {
  EXPECT_EQ(error_of(R"([stores.r]
engine = "redis"
url = "redis://localhost"
password = 12345
)"),
            at(4, 12, "stores.r.password", "expected a string, got integer"));
}

TEST(ConfigParse, NumbersFromEnvironment) {
  const char* text = R"([limiters.api]
rate_per_second = "${RATESYNC_TEST_RATE:-10}"
burst = "${RATESYNC_TEST_BURST:-3}"
fail_closed = "${RATESYNC_TEST_FAIL_CLOSED:-true}"
timeout = "${RATESYNC_TEST_TIMEOUT:-}0.5"
)";
  {
    scoped_env rate("RATESYNC_TEST_RATE", nullptr);
    scoped_env burst("RATESYNC_TEST_BURST", nullptr);
    scoped_env fc("RATESYNC_TEST_FAIL_CLOSED", nullptr);
    scoped_env to("RATESYNC_TEST_TIMEOUT", nullptr);
    const limiter_options o = parse_config(text, source_name).limiters.at(0).options;
    EXPECT_EQ(o.rate_per_second, 10.0);
    EXPECT_EQ(o.burst, 3);
    EXPECT_TRUE(o.fail_closed);
    EXPECT_EQ(o.timeout, seconds_d(0.5));
  }
  {
    scoped_env rate("RATESYNC_TEST_RATE", "2.5");
    scoped_env burst("RATESYNC_TEST_BURST", "+7");
    scoped_env fc("RATESYNC_TEST_FAIL_CLOSED", "false");
    scoped_env to("RATESYNC_TEST_TIMEOUT", "1");
    const limiter_options o = parse_config(text, source_name).limiters.at(0).options;
    EXPECT_EQ(o.rate_per_second, 2.5);
    EXPECT_EQ(o.burst, 7);
    EXPECT_FALSE(o.fail_closed);
    EXPECT_EQ(o.timeout, seconds_d(10.5));
  }
}

TEST(ConfigParse, NumberFromEnvironmentMustParseEntirely) {
  const char* rate = R"([limiters.api]
rate_per_second = "${RATESYNC_TEST_RATE:-10}"
)";
  {
    scoped_env env("RATESYNC_TEST_RATE", "fast");
    EXPECT_EQ(error_of(rate), at(2, 19, "limiters.api.rate_per_second",
                                 "\"${RATESYNC_TEST_RATE:-10}\" expands to \"fast\", which is not "
                                 "a number"));
  }
  {
    scoped_env env("RATESYNC_TEST_RATE", "10 ");
    EXPECT_EQ(error_of(rate), at(2, 19, "limiters.api.rate_per_second",
                                 "\"${RATESYNC_TEST_RATE:-10}\" expands to \"10 \", which is not "
                                 "a number"));
  }
  {
    // A value from the environment is checked like any other.
    scoped_env env("RATESYNC_TEST_RATE", "-4");
    EXPECT_EQ(error_of(rate), at(2, 19, "limiters.api.rate_per_second", "must be > 0 (got -4)"));
  }
  {
    scoped_env env("RATESYNC_TEST_BURST", "2.5");
    EXPECT_EQ(error_of(R"([limiters.api]
rate_per_second = 1
burst = "${RATESYNC_TEST_BURST}"
)"),
              at(3, 9, "limiters.api.burst",
                 "\"${RATESYNC_TEST_BURST}\" expands to \"2.5\", which is not an integer"));
  }
  {
    scoped_env env("RATESYNC_TEST_FAIL_CLOSED", "yes");
    EXPECT_EQ(error_of(R"([limiters.api]
max_concurrent = 1
fail_closed = "${RATESYNC_TEST_FAIL_CLOSED}"
)"),
              at(3, 15, "limiters.api.fail_closed",
                 "\"${RATESYNC_TEST_FAIL_CLOSED}\" expands to \"yes\", which is not a boolean "
                 "(true or false)"));
  }
  {
    scoped_env env("RATESYNC_TEST_DB", "99999999999999999999");
    EXPECT_EQ(error_of(R"([stores.r]
engine = "redis"
url = "redis://localhost"
db = "${RATESYNC_TEST_DB}"
)"),
              at(4, 6, "stores.r.db",
                 "\"${RATESYNC_TEST_DB}\" expands to \"99999999999999999999\", which is not a "
                 "64-bit integer"));
  }
  {
    scoped_env env("RATESYNC_TEST_RATE", nullptr);
    EXPECT_EQ(error_of(R"([limiters.api]
rate_per_second = "${RATESYNC_TEST_RATE:-}"
)"),
              at(2, 19, "limiters.api.rate_per_second",
                 "\"${RATESYNC_TEST_RATE:-}\" expands to \"\", which is not a number"));
  }
}

TEST(ConfigParse, ExpansionErrorsPointAtTheValue) {
  scoped_env env("RATESYNC_TEST_MISSING", nullptr);
  EXPECT_EQ(error_of(R"([limiters.api]
store = "${RATESYNC_TEST_MISSING}"
max_concurrent = 1
)"),
            at(2, 9, "limiters.api.store",
               "environment variable RATESYNC_TEST_MISSING is not set (use "
               "${RATESYNC_TEST_MISSING:-default} to give a default)"));
  EXPECT_EQ(error_of(R"([limiters.api]
store = "${RATESYNC_TEST_MISSING"
max_concurrent = 1
)"),
            at(2, 9, "limiters.api.store", "unterminated \"${\": missing \"}\""));
}

TEST(ConfigParse, LiteralDollarBraceInAValue) {
  config_document doc = parse_config(R"([stores.r]
engine = "redis"
url = "redis://localhost"
password = "pa$${x}ss"
)",
                                     source_name);
  EXPECT_EQ(doc.stores.at(0).options.password, "pa${x}ss");
}

// ---------------------------------------------------------------------------
// expand_env

TEST(ExpandEnv, PlainTextIsUnchanged) {
  EXPECT_EQ(expand_env(""), "");
  EXPECT_EQ(expand_env("redis://localhost:6379/0"), "redis://localhost:6379/0");
  EXPECT_EQ(expand_env("cost $5"), "cost $5");
  EXPECT_EQ(expand_env("$"), "$");
  EXPECT_EQ(expand_env("a$b$$c}"), "a$b$$c}");
}

TEST(ExpandEnv, Variable) {
  scoped_env a("RATESYNC_TEST_A", "alpha");
  scoped_env b("RATESYNC_TEST_B", "");
  EXPECT_EQ(expand_env("${RATESYNC_TEST_A}"), "alpha");
  EXPECT_EQ(expand_env("x-${RATESYNC_TEST_A}-${RATESYNC_TEST_A}-y"), "x-alpha-alpha-y");
  // Set but empty is not missing.
  EXPECT_EQ(expand_env("[${RATESYNC_TEST_B}]"), "[]");
}

TEST(ExpandEnv, DefaultAppliesWhenUnsetOrEmpty) {
  scoped_env set("RATESYNC_TEST_SET", "value");
  scoped_env empty("RATESYNC_TEST_EMPTY", "");
  scoped_env unset("RATESYNC_TEST_UNSET", nullptr);
  EXPECT_EQ(expand_env("${RATESYNC_TEST_SET:-default}"), "value");
  EXPECT_EQ(expand_env("${RATESYNC_TEST_EMPTY:-default}"), "default");
  EXPECT_EQ(expand_env("${RATESYNC_TEST_UNSET:-default}"), "default");
  EXPECT_EQ(expand_env("${RATESYNC_TEST_UNSET:-}"), "");
  EXPECT_EQ(expand_env("${RATESYNC_TEST_EMPTY:-}"), "");
  EXPECT_EQ(expand_env("${RATESYNC_TEST_UNSET:-a b:-c $d}"), "a b:-c $d");
}

TEST(ExpandEnv, NestedDefault) {
  scoped_env set("RATESYNC_TEST_SET", "value");
  scoped_env unset("RATESYNC_TEST_UNSET", nullptr);
  EXPECT_EQ(expand_env("${RATESYNC_TEST_UNSET:-${RATESYNC_TEST_SET}}"), "value");
  EXPECT_EQ(expand_env("${RATESYNC_TEST_UNSET:-${RATESYNC_TEST_UNSET:-inner}}"), "inner");
  // An unused default is not expanded: its missing variable is no error.
  EXPECT_EQ(expand_env("${RATESYNC_TEST_SET:-${RATESYNC_TEST_UNSET}}"), "value");
}

std::string nested_defaults(int depth) {
  std::string value;
  for (int i = 0; i < depth; ++i)
    value += "${RATESYNC_TEST_UNSET:-";
  value += "x";
  for (int i = 0; i < depth; ++i)
    value += "}";
  return value;
}

// Expansion recurses once per nested default. Without a cap, 20,000 levels
// (a 440 kB value) overflowed the stack.
TEST(ExpandEnv, NestingIsCapped) {
  scoped_env unset("RATESYNC_TEST_UNSET", nullptr);
  EXPECT_EQ(expand_env(nested_defaults(32)), "x");
  for (int depth : {33, 20'000}) {
    try {
      expand_env(nested_defaults(depth));
      ADD_FAILURE() << "no error at depth " << depth;
    } catch (const std::invalid_argument& e) {
      EXPECT_STREQ(e.what(), "defaults nested more than 32 deep (${A:-${B:-...}})");
    }
  }
}

TEST(ExpandEnv, DoubleDollarIsALiteral) {
  scoped_env a("RATESYNC_TEST_A", "alpha");
  EXPECT_EQ(expand_env("$${RATESYNC_TEST_A}"), "${RATESYNC_TEST_A}");
  EXPECT_EQ(expand_env("$${"), "${");
  // Left to right: "$" then the escape "$${".
  EXPECT_EQ(expand_env("$$${RATESYNC_TEST_A}"), "$${RATESYNC_TEST_A}");
  // In a default: the default is "${", and the second "}" is plain text.
  EXPECT_EQ(expand_env("${RATESYNC_TEST_UNSET_X:-$${}}"), "${}");
}

std::string expand_error(std::string_view value) {
  try {
    expand_env(value);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  ADD_FAILURE() << "no error for " << value;
  return {};
}

TEST(ExpandEnv, MissingVariableIsNamed) {
  scoped_env unset("RATESYNC_TEST_UNSET", nullptr);
  EXPECT_EQ(expand_error("pre ${RATESYNC_TEST_UNSET} post"),
            "environment variable RATESYNC_TEST_UNSET is not set (use "
            "${RATESYNC_TEST_UNSET:-default} to give a default)");
}

TEST(ExpandEnv, SyntaxErrors) {
  scoped_env a("RATESYNC_TEST_A", "alpha");
  const std::string unterminated = "unterminated \"${\": missing \"}\"";
  EXPECT_EQ(expand_error("${"), unterminated);
  EXPECT_EQ(expand_error("${RATESYNC_TEST_A"), unterminated);
  EXPECT_EQ(expand_error("${RATESYNC_TEST_A:-default"), unterminated);
  EXPECT_EQ(expand_error("${RATESYNC_TEST_A:-${X}"), unterminated);
  EXPECT_EQ(expand_error("${}"), "empty variable name in \"${}\"");
  EXPECT_EQ(expand_error("${:-x}"), "empty variable name in \"${:-x}\"");
  EXPECT_EQ(expand_error("${1ABC}"),
            "invalid variable name \"1ABC\": it must not start with a digit");
  const std::string expected = ": expected ${NAME} or ${NAME:-default}, NAME made of letters, "
                               "digits and '_'";
  EXPECT_EQ(expand_error("${A-B}"), "invalid variable reference \"${A-B}\"" + expected);
  EXPECT_EQ(expand_error("${A:=b}"), "invalid variable reference \"${A:=b}\"" + expected);
  EXPECT_EQ(expand_error("x${A B"), "invalid variable reference \"${A B\"" + expected);
}

// ---------------------------------------------------------------------------
// closest_name

TEST(ClosestName, SuggestsWithinTheDistance) {
  const std::vector<std::string_view> names = {"store",          "algorithm", "rate_per_second",
                                               "burst",          "limit",     "window_seconds",
                                               "max_concurrent", "timeout",   "fail_closed"};
  EXPECT_EQ(closest_name("rate_per_secnd", names), "rate_per_second");
  EXPECT_EQ(closest_name("brust", names), "burst");                // distance 2
  EXPECT_EQ(closest_name("timeuot", names), "timeout");            // distance 2
  EXPECT_EQ(closest_name("window_secs", names), "window_seconds"); // 3 <= 11 / 3
  EXPECT_EQ(closest_name("store_id", names), "");                  // 3 > max(2, 8 / 3)
  EXPECT_EQ(closest_name("colour", names), "");
  EXPECT_EQ(closest_name("", names), "");
  EXPECT_EQ(closest_name("burst", {}), "");
  EXPECT_EQ(closest_name("limits", names), "limit");
}

// ---------------------------------------------------------------------------
// Errors, one class at a time, with exact position, option and message.

TEST(ConfigErrors, UnknownOptionSuggestsTheClosest) {
  EXPECT_EQ(error_of(R"([limiters.api]
rate_per_secnd = 5
)"),
            at(2, 1, "limiters.api.rate_per_secnd",
               "unknown option 'rate_per_secnd'; did you mean 'rate_per_second'?"));
  EXPECT_EQ(error_of(R"([stores.r]
engine = "redis"
  pool_maxsize = 3
)"),
            at(3, 3, "stores.r.pool_maxsize",
               "unknown option 'pool_maxsize'; did you mean 'pool_max_size'?"));
}

TEST(ConfigErrors, UnknownOptionWithoutSuggestionListsTheValidOnes) {
  EXPECT_EQ(error_of(R"([limiters.api]
rate_per_second = 5
colour = "red"
)"),
            at(3, 1, "limiters.api.colour",
               "unknown option 'colour' (valid: store, algorithm, rate_per_second, burst, limit, "
               "window_seconds, max_concurrent, timeout, fail_closed, lease_seconds)"));
}

TEST(ConfigErrors, SubTableInAnEntryIsAnUnknownOption) {
  EXPECT_EQ(error_of(R"([limiters.api]
rate_per_second = 5
[limiters.api.extra]
x = 1
)"),
            at(3, 15, "limiters.api.extra",
               "unknown option 'extra' (valid: store, algorithm, rate_per_second, burst, limit, "
               "window_seconds, max_concurrent, timeout, fail_closed, lease_seconds)"));
}

TEST(ConfigErrors, WrongType) {
  EXPECT_EQ(error_of("[limiters.api]\nrate_per_second = \"fast\"\n"),
            at(2, 19, "limiters.api.rate_per_second", "expected a number, got string"));
  EXPECT_EQ(error_of("[limiters.api]\nrate_per_second = \"10\"\n"),
            at(2, 19, "limiters.api.rate_per_second", "expected a number, got string"));
  EXPECT_EQ(error_of("[limiters.api]\nrate_per_second = 1\nburst = 2.5\n"),
            at(3, 9, "limiters.api.burst", "expected an integer, got float"));
  EXPECT_EQ(error_of("[limiters.api]\nrate_per_second = 1\nburst = 2.0\n"),
            at(3, 9, "limiters.api.burst", "expected an integer, got float"));
  EXPECT_EQ(error_of("[limiters.api]\nmax_concurrent = true\n"),
            at(2, 18, "limiters.api.max_concurrent", "expected an integer, got boolean"));
  EXPECT_EQ(error_of("[limiters.api]\nmax_concurrent = 1\nfail_closed = \"yes\"\n"),
            at(3, 15, "limiters.api.fail_closed", "expected a boolean, got string"));
  EXPECT_EQ(error_of("[limiters.api]\nmax_concurrent = 1\nfail_closed = 1\n"),
            at(3, 15, "limiters.api.fail_closed", "expected a boolean, got integer"));
  EXPECT_EQ(error_of("[limiters.api]\nstore = 1\n"),
            at(2, 9, "limiters.api.store", "expected a string, got integer"));
  EXPECT_EQ(error_of("[limiters.api]\ntimeout = [1]\n"),
            at(2, 11, "limiters.api.timeout", "expected a number, got array"));
  EXPECT_EQ(error_of("[limiters.api]\ntimeout = 1979-05-27\n"),
            at(2, 11, "limiters.api.timeout", "expected a number, got date"));
  EXPECT_EQ(error_of("[stores.r]\nengine = { x = 1 }\n"),
            at(2, 10, "stores.r.engine", "expected a string, got table"));
}

TEST(ConfigErrors, RateOutOfRange) {
  EXPECT_EQ(error_of("[limiters.api]\nrate_per_second = 0\n"),
            at(2, 19, "limiters.api.rate_per_second", "must be > 0 (got 0)"));
  EXPECT_EQ(error_of("[limiters.api]\nrate_per_second = -1\n"),
            at(2, 19, "limiters.api.rate_per_second", "must be > 0 (got -1)"));
  EXPECT_EQ(error_of("[limiters.api]\nrate_per_second = -0.5\n"),
            at(2, 19, "limiters.api.rate_per_second", "must be > 0 (got -0.5)"));
  EXPECT_EQ(error_of("[limiters.api]\nrate_per_second = 2e9\n"),
            at(2, 19, "limiters.api.rate_per_second", "must be <= 1000000000 (got 2000000000)"));
  EXPECT_EQ(error_of("[limiters.api]\nrate_per_second = nan\n"),
            at(2, 19, "limiters.api.rate_per_second", "must be a finite number (got nan)"));
  EXPECT_EQ(error_of("[limiters.api]\nrate_per_second = inf\n"),
            at(2, 19, "limiters.api.rate_per_second", "must be a finite number (got inf)"));
  EXPECT_EQ(error_of("[limiters.api]\nrate_per_second = -inf\n"),
            at(2, 19, "limiters.api.rate_per_second", "must be a finite number (got -inf)"));
}

TEST(ConfigErrors, BurstOutOfRange) {
  EXPECT_EQ(error_of("[limiters.api]\nrate_per_second = 1\nburst = 0\n"),
            at(3, 9, "limiters.api.burst", "must be >= 1 (got 0)"));
  EXPECT_EQ(error_of("[limiters.api]\nrate_per_second = 1\nburst = -3\n"),
            at(3, 9, "limiters.api.burst", "must be >= 1 (got -3)"));
  // The bucket would take more than 1e9 seconds to refill.
  EXPECT_EQ(error_of("[limiters.api]\nrate_per_second = 0.001\nburst = 10000000\n"),
            at(3, 9, "limiters.api.burst",
               "burst / rate_per_second must be <= 1000000000 seconds (got 10000000000)"));
  EXPECT_EQ(error_of("[limiters.api]\nrate_per_second = 1e-10\n"),
            at(2, 19, "limiters.api.rate_per_second",
               "burst / rate_per_second must be <= 1000000000 seconds (got 10000000000)"));
}

TEST(ConfigErrors, LimitAndWindowOutOfRange) {
  const std::string head = "[limiters.login]\nalgorithm = \"sliding_window\"\n";
  EXPECT_EQ(error_of(head + "limit = 0\nwindow_seconds = 60\n"),
            at(3, 9, "limiters.login.limit", "must be >= 1 (got 0)"));
  EXPECT_EQ(error_of(head + "limit = 1000001\nwindow_seconds = 60\n"),
            at(3, 9, "limiters.login.limit",
               "must be <= 1000000 (got 1000001): a sliding window logs each admission it "
               "holds"));
  EXPECT_EQ(error_of(head + "limit = 5\nwindow_seconds = 0\n"),
            at(4, 18, "limiters.login.window_seconds", "must be > 0 (got 0)"));
  EXPECT_EQ(error_of(head + "limit = 5\nwindow_seconds = -60\n"),
            at(4, 18, "limiters.login.window_seconds", "must be > 0 (got -60)"));
  EXPECT_EQ(error_of(head + "limit = 5\nwindow_seconds = nan\n"),
            at(4, 18, "limiters.login.window_seconds", "must be a finite number (got nan)"));
  EXPECT_EQ(error_of(head + "limit = 5\nwindow_seconds = inf\n"),
            at(4, 18, "limiters.login.window_seconds", "must be a finite number (got inf)"));
  EXPECT_EQ(error_of(head + "limit = 5\nwindow_seconds = 1e10\n"),
            at(4, 18, "limiters.login.window_seconds", "must be <= 1000000000 (got 10000000000)"));
}

TEST(ConfigErrors, TimeoutAndConcurrencyOutOfRange) {
  EXPECT_EQ(error_of("[limiters.api]\nmax_concurrent = 0\n"),
            at(2, 18, "limiters.api.max_concurrent", "must be >= 1 (got 0)"));
  EXPECT_EQ(error_of("[limiters.api]\nmax_concurrent = 1\ntimeout = -1\n"),
            at(3, 11, "limiters.api.timeout", "must be >= 0 (got -1)"));
  EXPECT_EQ(error_of("[limiters.api]\nmax_concurrent = 1\ntimeout = nan\n"),
            at(3, 11, "limiters.api.timeout", "must be a finite number (got nan)"));
  EXPECT_EQ(error_of("[limiters.api]\nmax_concurrent = 1\ntimeout = inf\n"),
            at(3, 11, "limiters.api.timeout", "must be a finite number (got inf)"));
}

TEST(ConfigErrors, LimiterWithNothingToLimit) {
  const std::string message = "nothing to limit: set rate_per_second, limit and window_seconds "
                              "(with algorithm = \"sliding_window\"), or max_concurrent";
  EXPECT_EQ(error_of("\n[limiters.api]\nstore = \"redis\"\n"), at(2, 1, "limiters.api", message));
  EXPECT_EQ(error_of("[limiters.api]\n"), at(1, 1, "limiters.api", message));
  EXPECT_EQ(error_of("[limiters.api]\ntimeout = 1\nfail_closed = true\n"),
            at(1, 1, "limiters.api", message));
}

TEST(ConfigErrors, BurstWithoutRate) {
  EXPECT_EQ(error_of("[limiters.api]\nburst = 5\nmax_concurrent = 2\n"),
            at(2, 9, "limiters.api.burst", "requires rate_per_second"));
}

TEST(ConfigErrors, SlidingWindowNeedsLimitAndWindow) {
  const std::string required = "is required with algorithm = \"sliding_window\"";
  EXPECT_EQ(error_of(R"([limiters.login]
algorithm = "sliding_window"
limit = 5
)"),
            at(1, 1, "limiters.login.window_seconds", required));
  EXPECT_EQ(error_of(R"([limiters.login]
algorithm = "sliding_window"
window_seconds = 60
)"),
            at(1, 1, "limiters.login.limit", required));
  EXPECT_EQ(error_of(R"([limiters.login]
algorithm = "sliding_window"
max_concurrent = 3
)"),
            at(1, 1, "limiters.login.limit", required));
}

TEST(ConfigErrors, OptionsOfTheOtherAlgorithm) {
  EXPECT_EQ(error_of(R"([limiters.login]
limit = 5
window_seconds = 300
)"),
            at(2, 9, "limiters.login.limit",
               "applies to algorithm \"sliding_window\" only; set algorithm = \"sliding_window\""));
  EXPECT_EQ(error_of(R"([limiters.login]
rate_per_second = 1
window_seconds = 300
)"),
            at(3, 18, "limiters.login.window_seconds",
               "applies to algorithm \"sliding_window\" only; set algorithm = \"sliding_window\""));
  EXPECT_EQ(error_of(R"([limiters.login]
algorithm = "sliding_window"
limit = 5
window_seconds = 300
burst = 2
)"),
            at(5, 9, "limiters.login.burst",
               "applies to algorithm \"token_bucket\" only (this limiter's algorithm is "
               "\"sliding_window\")"));
  EXPECT_EQ(error_of(R"([limiters.login]
rate_per_second = 1
algorithm = "sliding_window"
limit = 5
window_seconds = 300
)"),
            at(2, 19, "limiters.login.rate_per_second",
               "applies to algorithm \"token_bucket\" only (this limiter's algorithm is "
               "\"sliding_window\")"));
}

TEST(ConfigErrors, UnknownAlgorithm) {
  EXPECT_EQ(error_of("[limiters.login]\nalgorithm = \"sliding-window\"\n"),
            at(2, 13, "limiters.login.algorithm",
               "must be \"token_bucket\" or \"sliding_window\" (got \"sliding-window\"); did you "
               "mean \"sliding_window\"?"));
  EXPECT_EQ(error_of("[limiters.login]\nalgorithm = \"leaky\"\n"),
            at(2, 13, "limiters.login.algorithm",
               "must be \"token_bucket\" or \"sliding_window\" (got \"leaky\")"));
}

TEST(ConfigErrors, DuplicateTable) {
  EXPECT_EQ(
      error_of(R"([limiters.api]
rate_per_second = 1

[limiters.api]
burst = 2
)"),
      at(4, 1, "", "table [limiters.api] is defined more than once; a table may appear only once"));
}

TEST(ConfigErrors, DuplicateKey) {
  EXPECT_EQ(error_of(R"([limiters.api]
rate_per_second = 1
rate_per_second = 2
)"),
            at(3, 19, "", "'rate_per_second' is set more than once in the same table"));
}

TEST(ConfigErrors, TomlSyntaxError) {
  EXPECT_EQ(error_of("[limiters.api]\nrate_per_second = \n"),
            at(2, 19, "", "Error while parsing key-value pair: expected value, saw '\\n'"));
  EXPECT_EQ(error_of("[limiters.api]\nburst = 99999999999999999999\n"),
            at(2, 29, "",
               "Error while parsing decimal integer: '99999999999999999999' is not "
               "representable in 64 bits"));
}

TEST(ConfigErrors, UnknownTopLevelKey) {
  EXPECT_EQ(error_of("[limiter.api]\nrate_per_second = 1\n"),
            at(1, 2, "limiter", "unknown top-level key 'limiter'; did you mean 'limiters'?"));
  EXPECT_EQ(error_of("# settings\nversion = 2\n"),
            at(2, 1, "version",
               "unknown top-level key 'version' (a file holds only [stores.NAME] and "
               "[limiters.NAME] tables)"));
}

TEST(ConfigErrors, SectionsMustBeTablesOfTables) {
  EXPECT_EQ(error_of("limiters = 5\n"),
            at(1, 12, "limiters", "expected a table of [limiters.NAME] tables, got integer"));
  EXPECT_EQ(error_of("[[stores]]\nengine = \"memory\"\n"),
            at(1, 1, "stores", "expected a table of [stores.NAME] tables, got array"));
  EXPECT_EQ(error_of("[limiters]\napi = 5\n"),
            at(2, 7, "limiters.api", "expected a table [limiters.api] of options, got integer"));
}

TEST(ConfigErrors, StrategyConflictsWithEngine) {
  EXPECT_EQ(error_of(R"([stores.r]
engine = "redis"
strategy = "memory"
url = "redis://localhost"
)"),
            at(3, 12, "stores.r.strategy",
               "conflicts with engine = \"redis\" (strategy is a synonym of engine; give only one "
               "of them)"));
}

TEST(ConfigErrors, UnknownEngine) {
  EXPECT_EQ(error_of("[stores.r]\nengine = \"nats\"\n"),
            at(2, 10, "stores.r.engine", "must be \"memory\" or \"redis\" (got \"nats\")"));
  // Given as strategy, the error points at strategy.
  EXPECT_EQ(error_of("[stores.r]\nstrategy = \"nats\"\n"),
            at(2, 12, "stores.r.engine", "must be \"memory\" or \"redis\" (got \"nats\")"));
}

TEST(ConfigErrors, RedisOptionsOnAMemoryStore) {
  const std::string message = "applies to the redis engine only (engine is \"memory\")";
  EXPECT_EQ(error_of("[stores.m]\nurl = \"redis://localhost\"\n"),
            at(2, 7, "stores.m.url", message));
  EXPECT_EQ(error_of("[stores.m]\nengine = \"memory\"\ndb = 1\n"),
            at(3, 6, "stores.m.db", message));
  EXPECT_EQ(error_of("[stores.m]\npassword = \"\"\n"), at(2, 12, "stores.m.password", message));
  // Even given its default value.
  EXPECT_EQ(error_of("[stores.m]\npool_max_size = 10\n"),
            at(2, 17, "stores.m.pool_max_size", message));
}

TEST(ConfigErrors, RedisStoreChecks) {
  const std::string head = "[stores.r]\nengine = \"redis\"\n";
  EXPECT_EQ(error_of(head),
            at(1, 1, "stores.r.url",
               "is required for the redis engine (e.g. \"redis://localhost:6379/0\")"));
  EXPECT_EQ(error_of(head + "url = \"\"\n"),
            at(3, 7, "stores.r.url",
               "is required for the redis engine (e.g. \"redis://localhost:6379/0\")"));
  const std::string with_url = head + "url = \"redis://localhost\"\n";
  EXPECT_EQ(error_of(with_url + "db = -1\n"),
            at(4, 6, "stores.r.db", "must be between 0 and 2147483647 (got -1)"));
  EXPECT_EQ(error_of(with_url + "db = 2147483648\n"),
            at(4, 6, "stores.r.db", "must be between 0 and 2147483647 (got 2147483648)"));
  EXPECT_EQ(error_of(with_url + "key_prefix = \"\"\n"),
            at(4, 14, "stores.r.key_prefix", "must not be empty"));
  EXPECT_EQ(error_of(with_url + "pool_min_size = -1\n"),
            at(4, 17, "stores.r.pool_min_size", "must be >= 0 (got -1)"));
  EXPECT_EQ(error_of(with_url + "pool_max_size = 0\n"),
            at(4, 17, "stores.r.pool_max_size", "must be >= 1 (got 0)"));
  EXPECT_EQ(
      error_of(with_url + "pool_max_size = 1\n"),
      at(4, 17, "stores.r.pool_max_size", "must be >= pool_min_size (got 1, pool_min_size is 2)"));
  EXPECT_EQ(error_of(with_url + "timing_margin_ms = -0.5\n"),
            at(4, 20, "stores.r.timing_margin_ms", "must be >= 0 (got -0.5)"));
  EXPECT_EQ(error_of(with_url + "timing_margin_ms = nan\n"),
            at(4, 20, "stores.r.timing_margin_ms", "must be a finite number (got nan)"));
  EXPECT_EQ(error_of(with_url + "socket_timeout = 0\n"),
            at(4, 18, "stores.r.socket_timeout", "must be > 0 (got 0)"));
  EXPECT_EQ(error_of(with_url + "socket_connect_timeout = inf\n"),
            at(4, 26, "stores.r.socket_connect_timeout", "must be a finite number (got inf)"));
  // Zero margin and a pool of one are fine.
  config_document doc =
      parse_config(with_url + "timing_margin_ms = 0\npool_min_size = 0\npool_max_size = 1\n", "x");
  EXPECT_EQ(doc.stores.at(0).options.pool_max_size, 1);
}

TEST(ConfigErrors, EmptyNames) {
  EXPECT_EQ(error_of("[limiters.\"\"]\nmax_concurrent = 1\n"),
            at(1, 1, "limiters", "limiter name must not be empty"));
  EXPECT_EQ(error_of("[stores.\"\"]\n"), at(1, 1, "stores", "store name must not be empty"));
}

TEST(ConfigErrors, WhatReadsSourceLineColumnOptionMessage) {
  try {
    parse_config("[limiters.api]\nrate_per_second = 0\n", "app.toml");
    FAIL() << "no error";
  } catch (const config_error& e) {
    EXPECT_STREQ(e.what(), "app.toml:2:19: limiters.api.rate_per_second: must be > 0 (got 0)");
  }
}

// ---------------------------------------------------------------------------
// Files

class ConfigFile : public ::testing::Test {
protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("ratesync_config_test_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::filesystem::path write(const std::string& name, std::string_view text) {
    std::filesystem::path p = dir_ / name;
    std::ofstream(p) << text;
    return p;
  }

  std::filesystem::path dir_;
};

TEST_F(ConfigFile, ParsesAFile) {
  auto path = write("ok.toml", seed_basic);
  config_document doc = parse_config_file(path);
  EXPECT_EQ(doc.source, path.string());
  EXPECT_EQ(doc.limiters.at(0).options.rate_per_second, 100.0);
}

TEST_F(ConfigFile, ErrorsNameTheFile) {
  auto path = write("bad.toml", "[limiters.api]\nrate_per_second = 0\n");
  try {
    parse_config_file(path);
    FAIL() << "no error";
  } catch (const config_error& e) {
    EXPECT_EQ(parts(e), (error_parts{path.string(), 2, 19, "limiters.api.rate_per_second",
                                     "must be > 0 (got 0)"}));
  }
}

TEST_F(ConfigFile, MissingFile) {
  auto path = dir_ / "missing.toml";
  try {
    parse_config_file(path);
    FAIL() << "no error";
  } catch (const config_error& e) {
    EXPECT_EQ(parts(e), (error_parts{path.string(), 0, 0, "",
                                     "cannot read file: No such file or directory"}));
    EXPECT_EQ(std::string(e.what()),
              path.string() + ": cannot read file: No such file or directory");
  }
}

TEST_F(ConfigFile, DirectoryIsUnreadable) {
  try {
    parse_config_file(dir_);
    FAIL() << "no error";
  } catch (const config_error& e) {
    EXPECT_EQ(parts(e), (error_parts{dir_.string(), 0, 0, "", "cannot read file: Is a directory"}));
  }
}

// ---------------------------------------------------------------------------
// validate() from code: no source, no position, the same option paths.

TEST(Validate, AlgorithmNames) {
  EXPECT_STREQ(ratesync::to_string(ratesync::algorithm::token_bucket), "token_bucket");
  EXPECT_STREQ(ratesync::to_string(ratesync::algorithm::sliding_window), "sliding_window");
}

TEST(Validate, ValidOptionsPass) {
  limiter_options rate;
  rate.rate_per_second = 1e9;
  rate.burst = 1;
  EXPECT_NO_THROW(ratesync::validate("api", rate));

  limiter_options window;
  window.algo = ratesync::algorithm::sliding_window;
  window.limit = 1'000'000;
  window.window_seconds = 1e9;
  window.max_concurrent = 1;
  window.timeout = seconds_d(0);
  EXPECT_NO_THROW(ratesync::validate("login", window));

  limiter_options concurrency;
  concurrency.max_concurrent = 10;
  EXPECT_NO_THROW(ratesync::validate("db", concurrency));

  EXPECT_NO_THROW(ratesync::validate("mem", store_options{}));
  store_options redis;
  redis.engine = "redis";
  redis.url = "redis://localhost";
  redis.db = 2147483647;
  redis.password = "";
  EXPECT_NO_THROW(ratesync::validate("redis", redis));
}

TEST(Validate, LimiterErrors) {
  limiter_options o;
  o.rate_per_second = -1;
  EXPECT_EQ(validate_error_of([&] { ratesync::validate("api", o); }),
            from_code("limiters.api.rate_per_second", "must be > 0 (got -1)"));

  o.rate_per_second = std::numeric_limits<double>::quiet_NaN();
  EXPECT_EQ(validate_error_of([&] { ratesync::validate("api", o); }),
            from_code("limiters.api.rate_per_second", "must be a finite number (got nan)"));

  o.rate_per_second = 10;
  o.timeout = seconds_d(std::numeric_limits<double>::quiet_NaN());
  EXPECT_EQ(validate_error_of([&] { ratesync::validate("api", o); }),
            from_code("limiters.api.timeout", "must be a finite number (got nan)"));

  o.timeout = std::chrono::milliseconds(-5);
  EXPECT_EQ(validate_error_of([&] { ratesync::validate("api", o); }),
            from_code("limiters.api.timeout", "must be >= 0 (got -0.005)"));

  EXPECT_EQ(validate_error_of([&] { ratesync::validate("api", limiter_options{}); }),
            from_code("limiters.api",
                      "nothing to limit: set rate_per_second, limit and window_seconds (with "
                      "algorithm = \"sliding_window\"), or max_concurrent"));

  limiter_options burst;
  burst.burst = 3;
  burst.max_concurrent = 1;
  EXPECT_EQ(validate_error_of([&] { ratesync::validate("api", burst); }),
            from_code("limiters.api.burst", "requires rate_per_second"));

  limiter_options window;
  window.algo = ratesync::algorithm::sliding_window;
  window.limit = 10;
  EXPECT_EQ(
      validate_error_of([&] { ratesync::validate("w", window); }),
      from_code("limiters.w.window_seconds", "is required with algorithm = \"sliding_window\""));

  limiter_options named;
  named.max_concurrent = 1;
  EXPECT_EQ(validate_error_of([&] { ratesync::validate("", named); }),
            from_code("limiters", "limiter name must not be empty"));
}

TEST(Validate, StoreErrors) {
  store_options o;
  o.engine = "nats";
  EXPECT_EQ(validate_error_of([&] { ratesync::validate("s", o); }),
            from_code("stores.s.engine", "must be \"memory\" or \"redis\" (got \"nats\")"));

  store_options memory;
  memory.password = "x";
  EXPECT_EQ(
      validate_error_of([&] { ratesync::validate("m", memory); }),
      from_code("stores.m.password", "applies to the redis engine only (engine is \"memory\")"));
  memory = store_options{};
  memory.pool_max_size = 20;
  EXPECT_EQ(validate_error_of([&] { ratesync::validate("m", memory); }),
            from_code("stores.m.pool_max_size",
                      "applies to the redis engine only (engine is \"memory\")"));

  store_options redis;
  redis.engine = "redis";
  EXPECT_EQ(validate_error_of([&] { ratesync::validate("r", redis); }),
            from_code("stores.r.url",
                      "is required for the redis engine (e.g. \"redis://localhost:6379/0\")"));
  redis.url = "redis://localhost";
  redis.socket_connect_timeout = seconds_d(-1);
  EXPECT_EQ(validate_error_of([&] { ratesync::validate("r", redis); }),
            from_code("stores.r.socket_connect_timeout", "must be > 0 (got -1)"));

  EXPECT_EQ(validate_error_of([&] { ratesync::validate("", store_options{}); }),
            from_code("stores", "store name must not be empty"));

  try {
    ratesync::validate("s", o);
  } catch (const config_error& e) {
    EXPECT_STREQ(e.what(), "stores.s.engine: must be \"memory\" or \"redis\" (got \"nats\")");
  }
}

} // namespace

// ---------------------------------------------------------------------------
// Redis connection options checked at configuration time

namespace {

std::string message_of(std::string_view text) {
  try {
    parse_config(text, "test.toml");
  } catch (const ratesync::config_error& e) {
    return e.what();
  }
  return "no error";
}

} // namespace

TEST(ConfigRedis, MalformedUrlIsAConfigErrorWithoutThePassword) {
  const std::string m = message_of(R"([stores.r]
engine = "redis"
url = "redis://:hunter2@localhost:99999/0"
)");
  EXPECT_NE(m.find("test.toml:3:7: stores.r.url:"), std::string::npos) << m;
  EXPECT_NE(m.find("port"), std::string::npos) << m;
  EXPECT_EQ(m.find("hunter2"), std::string::npos) << m;
}

TEST(ConfigRedis, TlsOptionsNeedARedissUrl) {
  const std::string m = message_of(R"([stores.r]
engine = "redis"
url = "redis://localhost"
tls_ca_file = "/etc/ssl/certs/ca-certificates.crt"
)");
  EXPECT_NE(m.find("stores.r.tls_ca_file: applies to rediss:// URLs only"), std::string::npos) << m;
}

TEST(ConfigRedis, MissingTlsFilesAreReportedAtLoad) {
  const std::string m = message_of(R"([stores.r]
engine = "redis"
url = "rediss://localhost:6380"
tls_ca_file = "/nonexistent/ca.crt"
)");
  EXPECT_NE(m.find("test.toml:4:15: stores.r.tls_ca_file: cannot read \"/nonexistent/ca.crt\""),
            std::string::npos)
      << m;
  const std::string half = message_of(R"([stores.r]
engine = "redis"
url = "rediss://localhost:6380"
tls_cert_file = "/etc/hostname"
)");
  EXPECT_NE(half.find("needs both tls_cert_file and tls_key_file"), std::string::npos) << half;
}

TEST(ConfigRedis, KeyPrefixMustNotBreakTheHashTag) {
  const std::string m = message_of(R"([stores.r]
engine = "redis"
url = "redis://localhost"
key_prefix = "app{1}"
)");
  EXPECT_NE(m.find("stores.r.key_prefix: must not contain '{' or '}'"), std::string::npos) << m;
}

TEST(ConfigRedis, LeaseSecondsNeedsMaxConcurrent) {
  const std::string m = message_of(R"([limiters.api]
rate_per_second = 5
lease_seconds = 10
)");
  EXPECT_NE(m.find("limiters.api.lease_seconds: applies to limiters with max_concurrent only"),
            std::string::npos)
      << m;
  EXPECT_EQ(message_of(R"([limiters.api]
max_concurrent = 2
lease_seconds = 10
)"),
            "no error");
}

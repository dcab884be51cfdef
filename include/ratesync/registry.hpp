// Named stores and limiters. The free functions (ratesync::acquire, ...) use
// default_registry(); create registry objects of your own for isolation
// (tests, one per tenant).
#pragma once

#include <asio/awaitable.hpp>
#include <atomic>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ratesync/limiter.hpp"
#include "ratesync/options.hpp"

namespace ratesync {

namespace detail {
struct config_document;
}

class registry {
public:
  registry();
  ~registry();
  registry(const registry&) = delete;
  registry& operator=(const registry&) = delete;

  // Adds every store and limiter a TOML file declares. All or nothing: on any
  // error (config_error naming file, line, column and option) the registry is
  // left exactly as it was. A name already configured is an error.
  void load_config(const std::filesystem::path& path);
  // The same from TOML text; `source_name` stands for the file in errors.
  void load_config_string(std::string_view toml, std::string source_name = "<string>");

  // Programmatic configuration, validated like a file (config_error names the
  // option). A limiter's store must exist already; empty means the built-in
  // memory store.
  void configure_store(const std::string& name, store_options options);
  void configure_limiter(const std::string& name, limiter_options options);
  // A store backed by an engine of your own (see engine.hpp): the hook for
  // custom backends and for tests that need a store that fails.
  void configure_store(const std::string& name, std::shared_ptr<engine> store);
  // Redis stores configured after this call, from a file or from code,
  // whose options name no io_context of their own (store_options::io_context)
  // run on `ctx` instead of a thread each: the way for stores declared in
  // TOML. nullptr goes back to threads; stores already configured keep
  // theirs. The context's requirements are store_options::io_context's
  // (docs/engines/redis.md, "The store's io_context").
  void set_io_context(asio::io_context* ctx);

  // Throws limiter_not_found.
  limiter get_limiter(std::string_view name);
  bool has_limiter(std::string_view name);
  std::vector<std::string> limiter_names();
  std::vector<std::string> store_names();

  // Shorthands for get_limiter(name).acquire(options) / try_acquire(options).
  asio::awaitable<permit> acquire(std::string_view name, const acquire_options& options);
  asio::awaitable<permit> acquire(std::string_view name);
  asio::awaitable<acquire_result> try_acquire(std::string_view name,
                                              const acquire_options& options);
  asio::awaitable<acquire_result> try_acquire(std::string_view name);

private:
  friend registry& default_registry();
  explicit registry(bool auto_load);
  struct staged;
  void apply(const detail::config_document& doc);
  void commit(staged&& s);
  std::shared_ptr<detail::limiter_core> find(std::string_view name);

  struct string_hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };
  using limiter_map = std::unordered_map<std::string, std::shared_ptr<detail::limiter_core>,
                                         string_hash, std::equal_to<>>;

  mutable std::shared_mutex mutex_;
  std::map<std::string, std::shared_ptr<engine>, std::less<>> stores_;
  std::shared_ptr<engine> default_store_;
  asio::io_context* io_context_ = nullptr; // set_io_context
  limiter_map limiters_;
  // The default registry loads RATESYNC_CONFIG or ./ratesync.toml on first
  // lookup if nothing was configured before.
  bool configured_ = false;
  std::atomic<bool> auto_load_pending_;
  std::mutex auto_load_mutex_;
  void auto_load_once();
};

// The registry behind the free functions.
registry& default_registry();

// Free functions on default_registry().
void load_config(const std::filesystem::path& path);
void load_config_string(std::string_view toml, std::string source_name = "<string>");
void configure_store(const std::string& name, store_options options);
void configure_limiter(const std::string& name, limiter_options options);
limiter get_limiter(std::string_view name);

// `co_await ratesync::acquire("api")` waits for a permit of limiter "api";
// keep the permit for as long as the guarded work runs.
asio::awaitable<permit> acquire(std::string_view name, const acquire_options& options);
asio::awaitable<permit> acquire(std::string_view name);
asio::awaitable<acquire_result> try_acquire(std::string_view name, const acquire_options& options);
asio::awaitable<acquire_result> try_acquire(std::string_view name);

} // namespace ratesync

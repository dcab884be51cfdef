// The registry: validated, all-or-nothing configuration and name lookup.
#include "ratesync/registry.hpp"

#include <atomic>
#include <cstdlib>
#include <fmt/format.h>
#include <mutex>

#include "config.hpp"
#include "ratesync/memory/memory_engine.hpp"
#include "redis/redis_engine.hpp"

namespace ratesync {

namespace {

std::shared_ptr<engine> make_store_engine(const std::string& name, const store_options& options) {
  if (options.engine == "memory")
    return memory::make_engine();
  return redis::make_engine(name, options);
}

std::string joined(const std::vector<std::string>& names) {
  if (names.empty())
    return "none";
  std::string out;
  for (const auto& n : names)
    out += (out.empty() ? "" : ", ") + n;
  return out;
}

} // namespace

struct registry::staged {
  std::vector<std::pair<std::string, std::shared_ptr<engine>>> stores;
  std::vector<std::shared_ptr<detail::limiter_core>> limiters;
};

registry::registry() : registry(false) {}
registry::registry(bool auto_load)
    : default_store_(memory::make_engine()), auto_load_pending_(auto_load) {}
registry::~registry() = default;

void registry::load_config(const std::filesystem::path& path) {
  apply(detail::parse_config_file(path));
}

void registry::load_config_string(std::string_view toml, std::string source_name) {
  apply(detail::parse_config(toml, std::move(source_name)));
}

void registry::apply(const detail::config_document& doc) {
  std::unique_lock lk(mutex_);
  staged s;
  std::map<std::string, std::shared_ptr<engine>, std::less<>> new_stores;
  for (const auto& st : doc.stores) {
    if (stores_.contains(st.name))
      throw doc.error_at(st, "stores", "", "a store of this name is already configured");
    std::shared_ptr<engine> eng;
    try {
      store_options options = st.options;
      if (options.engine == "redis" && options.io_context == nullptr)
        options.io_context = io_context_; // set_io_context's, if any
      eng = make_store_engine(st.name, options);
    } catch (const std::invalid_argument& e) {
      throw doc.error_at(st, "stores", "url", e.what());
    }
    new_stores.emplace(st.name, eng);
    s.stores.emplace_back(st.name, std::move(eng));
  }
  for (const auto& l : doc.limiters) {
    if (limiters_.contains(l.name))
      throw doc.error_at(l, "limiters", "", "a limiter of this name is already configured");
    std::shared_ptr<engine> eng = default_store_;
    const std::string& store = l.options.store;
    if (!store.empty()) {
      if (auto it = new_stores.find(store); it != new_stores.end())
        eng = it->second;
      else if (auto it2 = stores_.find(store); it2 != stores_.end())
        eng = it2->second;
      else {
        std::vector<std::string> known;
        for (const auto& [n, e] : stores_)
          known.push_back(n);
        for (const auto& [n, e] : new_stores)
          known.push_back(n);
        throw doc.error_at(
            l, "limiters", "store",
            fmt::format("unknown store \"{}\" (configured stores: {})", store, joined(known)));
      }
    }
    s.limiters.push_back(std::make_shared<detail::limiter_core>(make_spec(l.name, l.options), store,
                                                                std::move(eng)));
  }
  commit(std::move(s));
}

void registry::commit(staged&& s) {
  configured_ = true;
  for (auto& [name, eng] : s.stores)
    stores_.emplace(name, std::move(eng));
  for (auto& core : s.limiters)
    limiters_.emplace(core->spec().name, std::move(core));
}

void registry::configure_store(const std::string& name, store_options options) {
  detail::config_document doc;
  doc.stores.push_back({name, std::move(options), {}, {}});
  validate(name, doc.stores.back().options);
  apply(doc);
}

void registry::configure_store(const std::string& name, std::shared_ptr<engine> store) {
  if (name.empty())
    throw config_error("", 0, 0, "stores", "a store needs a non-empty name");
  if (!store)
    throw config_error("", 0, 0, "stores." + name, "the engine must not be null");
  std::unique_lock lk(mutex_);
  if (stores_.contains(name))
    throw config_error("", 0, 0, "stores." + name, "a store of this name is already configured");
  stores_.emplace(name, std::move(store));
  configured_ = true;
}

void registry::set_io_context(asio::io_context* ctx) {
  std::unique_lock lk(mutex_);
  io_context_ = ctx;
}

void registry::configure_limiter(const std::string& name, limiter_options options) {
  detail::config_document doc;
  doc.limiters.push_back({name, std::move(options), {}, {}});
  validate(name, doc.limiters.back().options);
  apply(doc);
}

void registry::auto_load_once() {
  if (!auto_load_pending_.load(std::memory_order_acquire))
    return;
  // Lookups wait here while the file loads. A load that fails leaves the
  // flag set: every lookup retries it and reports the same error, rather
  // than one caller seeing it and the others a bare limiter_not_found.
  std::lock_guard load_lock(auto_load_mutex_);
  if (!auto_load_pending_.load(std::memory_order_acquire))
    return;
  std::string path;
  {
    std::shared_lock lk(mutex_);
    if (!configured_) {
      if (const char* env = std::getenv("RATESYNC_CONFIG"); env && *env)
        path = env; // named explicitly: missing is an error
      else if (std::error_code ec; std::filesystem::is_regular_file("ratesync.toml", ec))
        path = "ratesync.toml";
    }
  }
  if (!path.empty())
    load_config(path);
  auto_load_pending_.store(false, std::memory_order_release);
}

std::shared_ptr<detail::limiter_core> registry::find(std::string_view name) {
  auto_load_once();
  std::shared_lock lk(mutex_);
  auto it = limiters_.find(name);
  if (it == limiters_.end())
    throw limiter_not_found(std::string(name));
  return it->second;
}

limiter registry::get_limiter(std::string_view name) {
  return limiter(find(name));
}

bool registry::has_limiter(std::string_view name) {
  auto_load_once();
  std::shared_lock lk(mutex_);
  return limiters_.find(name) != limiters_.end();
}

std::vector<std::string> registry::limiter_names() {
  auto_load_once();
  std::shared_lock lk(mutex_);
  std::vector<std::string> out;
  for (const auto& [n, l] : limiters_)
    out.push_back(n);
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> registry::store_names() {
  auto_load_once();
  std::shared_lock lk(mutex_);
  std::vector<std::string> out;
  for (const auto& [n, s] : stores_)
    out.push_back(n);
  return out;
}

asio::awaitable<permit> registry::acquire(std::string_view name, const acquire_options& options) {
  return detail::limiter_core::acquire(find(name), options);
}

asio::awaitable<permit> registry::acquire(std::string_view name) {
  return acquire(name, acquire_options());
}

asio::awaitable<acquire_result> registry::try_acquire(std::string_view name) {
  return try_acquire(name, acquire_options());
}

asio::awaitable<acquire_result> registry::try_acquire(std::string_view name,
                                                      const acquire_options& options) {
  return detail::limiter_core::try_acquire(find(name), options);
}

registry& default_registry() {
  static registry r(true);
  return r;
}

void load_config(const std::filesystem::path& path) {
  default_registry().load_config(path);
}
void load_config_string(std::string_view toml, std::string source_name) {
  default_registry().load_config_string(toml, std::move(source_name));
}
void configure_store(const std::string& name, store_options options) {
  default_registry().configure_store(name, std::move(options));
}
void configure_limiter(const std::string& name, limiter_options options) {
  default_registry().configure_limiter(name, std::move(options));
}
limiter get_limiter(std::string_view name) {
  return default_registry().get_limiter(name);
}
asio::awaitable<permit> acquire(std::string_view name, const acquire_options& options) {
  return default_registry().acquire(name, options);
}
asio::awaitable<acquire_result> try_acquire(std::string_view name, const acquire_options& options) {
  return default_registry().try_acquire(name, options);
}
asio::awaitable<permit> acquire(std::string_view name) {
  return default_registry().acquire(name, acquire_options());
}
asio::awaitable<acquire_result> try_acquire(std::string_view name) {
  return default_registry().try_acquire(name, acquire_options());
}

} // namespace ratesync

// Private: a store's connections. `pool_min_size` are opened at once; more,
// up to `pool_max_size`, when every open connection is busy. Each request
// goes to the first connected connection that is not busy (else the least
// loaded): under light load one connection carries everything, in order, so
// a release sent just before a caller's next decision reaches Redis before it
// (they used to rotate among idle connections and could overtake each other);
// and requests share writes. A connection that fails reconnects by itself.
#pragma once

#include <asio/io_context.hpp>
#include <memory>
#include <mutex>
#include <vector>

#include "redis/connection.hpp"

namespace ratesync::redis {

class pool {
public:
  // A connection with at least this many requests outstanding counts as busy.
  static constexpr std::size_t busy_load = 32;

  pool(asio::io_context& ctx, connection_options options, std::shared_ptr<asio::ssl::context> tls,
       std::size_t min_size, std::size_t max_size);
  ~pool();
  pool(const pool&) = delete;
  pool& operator=(const pool&) = delete;

  // Thread-safe. Null only after abandon().
  std::shared_ptr<connection> pick();
  void stop();
  // Lets go of every connection without stopping it (their io_context is
  // being destroyed, and them with it); opens none after.
  void abandon();

  std::size_t size() const;
  std::vector<std::shared_ptr<connection>> connections() const;

private:
  std::shared_ptr<connection> open();

  asio::io_context& ctx_;
  connection_options options_;
  std::shared_ptr<asio::ssl::context> tls_;
  std::size_t max_size_;
  mutable std::mutex mutex_;
  std::vector<std::shared_ptr<connection>> conns_;
  bool abandoned_ = false;
};

} // namespace ratesync::redis

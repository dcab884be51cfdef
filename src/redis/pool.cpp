// The pool: the first connected one that is not busy, grown under load, never
// shrunk.
#include "redis/pool.hpp"

#include <algorithm>
#include <cstdint>

namespace ratesync::redis {

pool::pool(asio::io_context& ctx, connection_options options,
           std::shared_ptr<asio::ssl::context> tls, std::size_t min_size, std::size_t max_size)
    : ctx_(ctx), options_(std::move(options)), tls_(std::move(tls)),
      max_size_(std::max<std::size_t>(1, max_size)) {
  const std::size_t n = std::clamp<std::size_t>(min_size, 1, max_size_);
  std::lock_guard lk(mutex_);
  for (std::size_t i = 0; i < n; ++i)
    conns_.push_back(open());
}

pool::~pool() {
  stop();
}

std::shared_ptr<connection> pool::open() {
  auto c = connection::create(ctx_, options_, tls_);
  c->start();
  return c;
}

std::shared_ptr<connection> pool::pick() {
  std::lock_guard lk(mutex_);
  if (abandoned_)
    return nullptr;
  // Connected ones first: a connection that is (re)connecting usually has no
  // load (its requests failed), so "least loaded" alone sent requests to it,
  // to wait for or fail with its next connect attempt.
  std::size_t best = 0;
  std::size_t best_load = SIZE_MAX;
  bool best_connected = false;
  for (std::size_t i = 0; i < conns_.size(); ++i) {
    const std::size_t load = conns_[i]->load();
    const bool connected = conns_[i]->is_connected();
    if (connected && load < busy_load)
      return conns_[i]; // the first that can take it
    if ((connected && !best_connected) || (connected == best_connected && load < best_load)) {
      best = i;
      best_load = load;
      best_connected = connected;
    }
  }
  if (best_load >= busy_load && conns_.size() < max_size_) {
    conns_.push_back(open());
    return conns_.back();
  }
  return conns_[best];
}

void pool::abandon() {
  std::vector<std::shared_ptr<connection>> gone;
  {
    std::lock_guard lk(mutex_);
    abandoned_ = true;
    gone.swap(conns_);
  }
}

void pool::stop() {
  std::lock_guard lk(mutex_);
  for (auto& c : conns_)
    c->stop();
}

std::size_t pool::size() const {
  std::lock_guard lk(mutex_);
  return conns_.size();
}

std::vector<std::shared_ptr<connection>> pool::connections() const {
  std::lock_guard lk(mutex_);
  return conns_;
}

} // namespace ratesync::redis

// The pool: least loaded first, grown under load, never shrunk.
#include "redis/pool.hpp"

#include <algorithm>

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
  const std::size_t n = conns_.size();
  std::size_t best = next_ % n;
  std::size_t best_load = conns_[best]->load();
  for (std::size_t k = 1; k < n && best_load > 0; ++k) {
    const std::size_t i = (next_ + k) % n;
    // A connected one beats one that is (re)connecting at equal load.
    const std::size_t load = conns_[i]->load();
    if (load < best_load ||
        (load == best_load && conns_[i]->is_connected() && !conns_[best]->is_connected())) {
      best = i;
      best_load = load;
    }
  }
  if (best_load >= busy_load && n < max_size_) {
    conns_.push_back(open());
    return conns_.back();
  }
  ++next_;
  return conns_[best];
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

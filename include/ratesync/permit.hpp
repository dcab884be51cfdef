// The RAII result of a successful acquire: holding it holds a concurrency slot
// (on limiters with max_concurrent); destroying or releasing it gives it back.
#pragma once

#include <memory>
#include <utility>

#include "ratesync/engine.hpp"

namespace ratesync {

namespace detail {
class limiter_core;
}

class permit {
public:
  permit() noexcept = default;
  permit(const permit&) = delete;
  permit& operator=(const permit&) = delete;
  permit(permit&& other) noexcept
      : core_(std::move(other.core_)), lease_(std::exchange(other.lease_, {})) {}
  permit& operator=(permit&& other) noexcept {
    if (this != &other) {
      release();
      core_ = std::move(other.core_);
      lease_ = std::exchange(other.lease_, {});
    }
    return *this;
  }
  ~permit() { release(); }

  // Gives the permit back now. Idempotent.
  void release() noexcept;

  // True until released (a default-constructed permit holds nothing).
  bool held() const noexcept { return core_ != nullptr; }
  explicit operator bool() const noexcept { return held(); }

private:
  friend class detail::limiter_core;
  permit(std::shared_ptr<detail::limiter_core> core, lease_token lease) noexcept
      : core_(std::move(core)), lease_(lease) {}

  std::shared_ptr<detail::limiter_core> core_;
  lease_token lease_;
};

} // namespace ratesync

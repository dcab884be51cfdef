// The in-process engine: limiter state in this process's memory, shared by
// every thread. The zero-setup default and the development stand-in for Redis.
#pragma once

#include <memory>

#include "ratesync/engine.hpp"

namespace ratesync::memory {

// A memory store. Each limiter gets its own state; per-key state is created on
// first use and dropped once it has fully recovered, so memory follows the
// number of recently active keys. Waiting uses timers on the awaiting
// coroutine's executor: the engine owns no thread and no executor.
std::shared_ptr<engine> make_engine();

} // namespace ratesync::memory

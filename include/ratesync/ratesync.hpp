// ratesync: distributed rate limiting for C++20 coroutines.
// Including this header brings the whole public API, namespace ratesync.
#pragma once

#include "ratesync/engine.hpp"
#include "ratesync/errors.hpp"
#include "ratesync/limiter.hpp"
#include "ratesync/memory/memory_engine.hpp"
#include "ratesync/metrics.hpp"
#include "ratesync/options.hpp"
#include "ratesync/permit.hpp"
#include "ratesync/registry.hpp"

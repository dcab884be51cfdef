// Private: names the threads ratesync starts, so that top -H, ps -L, perf
// (--sort comm) and gdb tell them from the application's.
#pragma once

#include <algorithm>
#include <array>
#include <cstring>
#include <string_view>

#if defined(__linux__)
#include <pthread.h>
#endif

namespace ratesync::detail {

// Names the calling thread. Linux keeps 15 characters (the rest is cut);
// elsewhere it does nothing. A failure changes nothing else, so it is ignored.
inline void name_this_thread(std::string_view name) noexcept {
#if defined(__linux__)
  std::array<char, 16> buf{};
  std::memcpy(buf.data(), name.data(), std::min(name.size(), buf.size() - 1));
  (void)pthread_setname_np(pthread_self(), buf.data());
#else
  (void)name;
#endif
}

} // namespace ratesync::detail

// Private: the Lua scripts of lua/*.lua, compiled into the library at build
// time (cmake/embed_lua.cmake). The files stay the one source of truth, which
// `redis-cli --eval lua/token_bucket.lua ...` can run as well.
#pragma once

#include <string_view>

namespace ratesync::redis::lua {

extern const std::string_view token_bucket;
extern const std::string_view sliding_window;
extern const std::string_view concurrency;
extern const std::string_view renew_lease;
extern const std::string_view undo;
extern const std::string_view state;

} // namespace ratesync::redis::lua

// Private: the redis engine. Every decision is one EVALSHA of a script in
// lua/, on Redis time; a store runs its connections on a thread of its own
// or on the io_context its options name (store_options::io_context).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "ratesync/engine.hpp"
#include "ratesync/options.hpp"

namespace ratesync::redis {

// Throws std::invalid_argument when the options cannot be used (a URL or TLS
// file the validation did not catch).
std::shared_ptr<engine> make_engine(const std::string& store_name, const store_options& options);

// The keys of one limiter (and caller key): "{prefix}:{<limiter>|<key>}:<kind>"
// where limiter and key are percent-encoded (so '{', '}', ':' and '|' never
// appear raw) and replaced by "#<sha1>" when longer than 128 bytes encoded.
// Everything of one decision shares the {...} hash tag (one Cluster slot).
std::string key_base(std::string_view prefix, std::string_view limiter, std::string_view key);

} // namespace ratesync::redis

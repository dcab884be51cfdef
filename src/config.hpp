// Private: TOML configuration parsed into options, with the source position of
// every table and option so that later checks (by the registry) can point at
// the line that is wrong. toml++ stays behind this header.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ratesync/errors.hpp"
#include "ratesync/options.hpp"

namespace ratesync::detail {

struct source_pos {
  std::uint32_t line = 0;
  std::uint32_t column = 0;
};

template <class Options> struct configured {
  std::string name;
  Options options;
  source_pos pos;                               // the [stores.NAME] / [limiters.NAME] header
  std::map<std::string, source_pos> option_pos; // option name -> where it was set
};

struct config_document {
  std::string source; // file path or the name given to load_config_string
  std::vector<configured<store_options>> stores;
  std::vector<configured<limiter_options>> limiters;

  // A config_error at the option (or, if it was not set, at the table) of an
  // entry, e.g. error_at(l, "limiters", "store", "unknown store \"x\"").
  template <class Options>
  config_error error_at(const configured<Options>& entry, std::string_view section,
                        const std::string& option, const std::string& message) const {
    auto it = entry.option_pos.find(option);
    source_pos p = it != entry.option_pos.end() ? it->second : entry.pos;
    std::string path = std::string(section) + "." + entry.name;
    if (!option.empty())
      path += "." + option;
    return config_error(source, p.line, p.column, path, message);
  }
};

// Parses TOML text: checks its shape, every option's name and type, expands
// ${VAR} / ${VAR:-default} in strings, and runs validate() on every store and
// limiter. Store references are not resolved here (a limiter may name a store
// configured earlier). Throws config_error.
config_document parse_config(std::string_view text, std::string source);

// Reads and parses a file; an unreadable file is a config_error naming it.
config_document parse_config_file(const std::filesystem::path& path);

// Expands ${VAR} and ${VAR:-default} (shell semantics: the default applies when
// VAR is unset or empty); `$${` stands for a literal `${`. Throws
// std::invalid_argument with a message naming the variable or the defect.
std::string expand_env(std::string_view value);

// The candidate closest to `word` by edit distance, or empty if none is close.
std::string closest_name(std::string_view word, std::span<const std::string_view> candidates);

} // namespace ratesync::detail

// TOML configuration: shape, option names and types, ${VAR} expansion, and the
// source position of everything, on top of toml++.
#include "config.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <system_error>
#include <type_traits>
#include <utility>

#include <fmt/format.h>
#include <toml++/toml.h>

namespace ratesync::detail {

// ---------------------------------------------------------------------------
// ${VAR} expansion

namespace {

bool is_name_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

// Expands `in` from `pos`; inside a default (`in_default`) it stops at the
// closing '}' and leaves `pos` on it. With `evaluate` false (an unused
// default) the syntax is still checked but no variable needs to exist.
// expand() and variable() recurse once per nested default: the nesting is
// capped so that a pathological value cannot overflow the stack.
class expander {
public:
  explicit expander(std::string_view in) : in_(in) {}

  std::string run() {
    std::size_t pos = 0;
    return expand(pos, false, true);
  }

private:
  static constexpr int max_nesting = 32;

  // NOLINTNEXTLINE(misc-no-recursion): depth capped by max_nesting
  std::string expand(std::size_t& pos, bool in_default, bool evaluate) {
    std::string out;
    while (pos < in_.size()) {
      char c = in_[pos];
      if (in_default && c == '}')
        return out;
      if (c == '$' && in_.substr(pos, 3) == "$${") {
        out += "${";
        pos += 3;
      } else if (c == '$' && in_.substr(pos, 2) == "${") {
        out += variable(pos, evaluate);
      } else {
        out += c;
        ++pos;
      }
    }
    if (in_default)
      throw std::invalid_argument("unterminated \"${\": missing \"}\"");
    return out;
  }

  // `pos` is on "${"; leaves it after the closing '}'.
  // NOLINTNEXTLINE(misc-no-recursion): depth capped by max_nesting
  std::string variable(std::size_t& pos, bool evaluate) {
    std::size_t start = pos;
    pos += 2;
    std::size_t name_begin = pos;
    while (pos < in_.size() && is_name_char(in_[pos]))
      ++pos;
    std::string name(in_.substr(name_begin, pos - name_begin));
    if (pos >= in_.size())
      throw std::invalid_argument("unterminated \"${\": missing \"}\"");

    bool has_default = false;
    std::string fallback;
    if (in_[pos] == ':' && in_.substr(pos, 2) == ":-") {
      pos += 2;
      has_default = true;
      if (nesting_ == max_nesting)
        throw std::invalid_argument(
            fmt::format("defaults nested more than {} deep (${{A:-${{B:-...}}}})", max_nesting));
      const char* env = name.empty() ? nullptr : std::getenv(name.c_str());
      bool use_default = evaluate && (env == nullptr || *env == '\0');
      ++nesting_;
      fallback = expand(pos, true, use_default);
      --nesting_;
    } else if (in_[pos] != '}') {
      std::size_t close = in_.find('}', pos);
      std::string_view shown = in_.substr(
          start, close == std::string_view::npos ? std::string_view::npos : close + 1 - start);
      throw std::invalid_argument(fmt::format(
          "invalid variable reference \"{}\": expected ${{NAME}} or ${{NAME:-default}}, "
          "NAME made of letters, digits and '_'",
          shown));
    }
    ++pos; // the closing '}'

    if (name.empty())
      throw std::invalid_argument(
          fmt::format("empty variable name in \"{}\"", in_.substr(start, pos - start)));
    if (name[0] >= '0' && name[0] <= '9')
      throw std::invalid_argument(
          fmt::format("invalid variable name \"{}\": it must not start with a digit", name));
    if (!evaluate)
      return {};

    const char* env = std::getenv(name.c_str());
    if (has_default)
      return env != nullptr && *env != '\0' ? std::string(env) : fallback;
    if (env == nullptr)
      throw std::invalid_argument(
          fmt::format("environment variable {} is not set (use ${{{}:-default}} to give a default)",
                      name, name));
    return env;
  }

  std::string_view in_;
  int nesting_ = 0;
};

} // namespace

std::string expand_env(std::string_view value) {
  return expander(value).run();
}

// ---------------------------------------------------------------------------
// closest_name

std::string closest_name(std::string_view word, std::span<const std::string_view> candidates) {
  if (word.empty())
    return {};
  std::size_t best_distance = std::max<std::size_t>(2, word.size() / 3) + 1;
  std::string_view best;
  std::vector<std::size_t> row;
  for (std::string_view cand : candidates) {
    // Levenshtein distance, one row at a time.
    row.resize(cand.size() + 1);
    for (std::size_t j = 0; j <= cand.size(); ++j)
      row[j] = j;
    for (std::size_t i = 1; i <= word.size(); ++i) {
      std::size_t diagonal = row[0];
      row[0] = i;
      for (std::size_t j = 1; j <= cand.size(); ++j) {
        std::size_t above = row[j];
        std::size_t cost = word[i - 1] == cand[j - 1] ? 0 : 1;
        row[j] = std::min({above + 1, row[j - 1] + 1, diagonal + cost});
        diagonal = above;
      }
    }
    if (row[cand.size()] < best_distance) {
      best_distance = row[cand.size()];
      best = cand;
    }
  }
  return std::string(best);
}

// ---------------------------------------------------------------------------
// The document

namespace {

source_pos pos_of(const toml::source_region& r) {
  return {static_cast<std::uint32_t>(r.begin.line), static_cast<std::uint32_t>(r.begin.column)};
}

bool before(const toml::source_region& a, const toml::source_region& b) {
  if (a.begin.line != b.begin.line)
    return a.begin.line < b.begin.line;
  return a.begin.column < b.begin.column;
}

// A table's entries in the order they appear in the text (toml++ keeps them
// sorted by key).
std::vector<std::pair<const toml::key*, const toml::node*>> in_text_order(const toml::table& t) {
  std::vector<std::pair<const toml::key*, const toml::node*>> out;
  for (auto&& [k, v] : t)
    out.emplace_back(&k, &v);
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return before(a.first->source(), b.first->source());
  });
  return out;
}

const char* type_name(toml::node_type t) {
  switch (t) {
  case toml::node_type::string:
    return "string";
  case toml::node_type::integer:
    return "integer";
  case toml::node_type::floating_point:
    return "float";
  case toml::node_type::boolean:
    return "boolean";
  case toml::node_type::date:
    return "date";
  case toml::node_type::time:
    return "time";
  case toml::node_type::date_time:
    return "date-time";
  case toml::node_type::array:
    return "array";
  case toml::node_type::table:
    return "table";
  case toml::node_type::none:
    break;
  }
  return "nothing";
}

std::string joined(std::span<const std::string_view> names) {
  std::string out;
  for (std::string_view n : names) {
    if (!out.empty())
      out += ", ";
    out += n;
  }
  return out;
}

std::string unknown_name_message(const char* what, std::string_view name,
                                 std::span<const std::string_view> valid) {
  std::string best = closest_name(name, valid);
  if (!best.empty())
    return fmt::format("unknown {} '{}'; did you mean '{}'?", what, name, best);
  return fmt::format("unknown {} '{}' (valid: {})", what, name, joined(valid));
}

// toml++ reports a repeated table or key as "cannot redefine existing ...";
// say what that means for a configuration file.
std::string describe_parse_error(std::string_view description) {
  constexpr std::string_view marker = "cannot redefine existing ";
  std::size_t at = description.find(marker);
  if (at == std::string_view::npos || description.empty() || description.back() != '\'')
    return std::string(description);
  std::string_view rest = description.substr(at + marker.size());
  std::size_t quote = rest.find('\'');
  if (quote == std::string_view::npos || quote + 1 >= rest.size() || rest.back() != '\'')
    return std::string(description);
  std::string_view type = rest.substr(0, quote);
  std::string_view name = rest.substr(quote + 1, rest.size() - quote - 2);
  if (type == "table ")
    return fmt::format("table [{}] is defined more than once; a table may appear only once", name);
  return fmt::format("'{}' is set more than once in the same table", name);
}

constexpr std::array<std::string_view, 2> top_level_names = {"stores", "limiters"};

// Options a memory store rejects even when given their default value.
constexpr auto redis_only_options = std::to_array<std::string_view>(
    {"url", "db", "password", "key_prefix", "pool_min_size", "pool_max_size", "timing_margin_ms",
     "socket_timeout", "socket_connect_timeout", "health_check_interval", "tls_ca_file",
     "tls_cert_file", "tls_key_file", "tls_server_name", "tls_insecure_skip_verify"});

constexpr auto store_option_names = [] {
  std::array<std::string_view, 2 + redis_only_options.size()> names{"engine", "strategy"};
  std::copy(redis_only_options.begin(), redis_only_options.end(), names.begin() + 2);
  return names;
}();

constexpr auto limiter_option_names = std::to_array<std::string_view>(
    {"store", "algorithm", "rate_per_second", "burst", "limit", "window_seconds", "max_concurrent",
     "timeout", "fail_closed", "lease_seconds"});

// Reads the options of one [stores.NAME] / [limiters.NAME] table.
class entry_reader {
public:
  entry_reader(const std::string& source, std::string_view section, const std::string& name,
               std::map<std::string, source_pos>& option_pos)
      : source_(source), path_(fmt::format("{}.{}", section, name)), option_pos_(option_pos) {}

  [[noreturn]] void fail(const toml::source_region& where, std::string_view option,
                         const std::string& message) const {
    source_pos p = pos_of(where);
    throw config_error(source_, p.line, p.column,
                       option.empty() ? path_ : fmt::format("{}.{}", path_, option), message);
  }

  void record(std::string_view option, const toml::node& value) {
    option_pos_[std::string(option)] = pos_of(value.source());
  }

  std::string get_string(std::string_view option, const toml::node& value) {
    record(option, value);
    const auto* s = value.as_string();
    if (s == nullptr)
      fail(value.source(), option,
           fmt::format("expected a string, got {}", type_name(value.type())));
    return expand(option, value, s->get());
  }

  std::int64_t get_integer(std::string_view option, const toml::node& value) {
    record(option, value);
    if (const auto* i = value.as_integer())
      return i->get();
    std::string text = expanded_string(option, value, "an integer");
    std::int64_t out = 0;
    const char* first = text.data();
    const char* last = first + text.size();
    if (first != last && *first == '+')
      ++first;
    auto [end, ec] = std::from_chars(first, last, out);
    if (ec == std::errc::result_out_of_range)
      fail(value.source(), option, not_a(option, value, text, "a 64-bit integer"));
    if (ec != std::errc() || end != last || text.empty())
      fail(value.source(), option, not_a(option, value, text, "an integer"));
    return out;
  }

  double get_number(std::string_view option, const toml::node& value) {
    record(option, value);
    if (const auto* i = value.as_integer())
      return static_cast<double>(i->get());
    if (const auto* f = value.as_floating_point())
      return f->get();
    std::string text = expanded_string(option, value, "a number");
    double out = 0;
    const char* first = text.data();
    const char* last = first + text.size();
    if (first != last && *first == '+')
      ++first;
    auto [end, ec] = std::from_chars(first, last, out);
    if (ec != std::errc() || end != last || text.empty())
      fail(value.source(), option, not_a(option, value, text, "a number"));
    return out;
  }

  bool get_boolean(std::string_view option, const toml::node& value) {
    record(option, value);
    if (const auto* b = value.as_boolean())
      return b->get();
    std::string text = expanded_string(option, value, "a boolean");
    if (text == "true")
      return true;
    if (text == "false")
      return false;
    fail(value.source(), option, not_a(option, value, text, "a boolean (true or false)"));
  }

private:
  std::string expand(std::string_view option, const toml::node& value,
                     const std::string& raw) const {
    try {
      return expand_env(raw);
    } catch (const std::invalid_argument& e) {
      fail(value.source(), option, e.what());
    }
  }

  // A number or boolean may come as a string only through ${VAR}.
  std::string expanded_string(std::string_view option, const toml::node& value,
                              const char* expected) {
    const auto* s = value.as_string();
    if (s == nullptr || s->get().find("${") == std::string::npos)
      fail(value.source(), option,
           fmt::format("expected {}, got {}", expected, type_name(value.type())));
    return expand(option, value, s->get());
  }

  static std::string not_a(std::string_view option, const toml::node& value,
                           const std::string& text, const char* expected) {
    const std::string& raw = value.as_string()->get();
    if (option == "password")
      return fmt::format("\"{}\" does not expand to {}", raw, expected);
    return fmt::format("\"{}\" expands to \"{}\", which is not {}", raw, text, expected);
  }

  const std::string& source_;
  std::string path_;
  std::map<std::string, source_pos>& option_pos_;
};

class document_parser {
public:
  explicit document_parser(config_document& doc) : doc_(doc) {}

  void parse(const toml::table& root) {
    // Every [stores.NAME] and [limiters.NAME], in the order of the text, so
    // that the first error reported is the first in the file.
    struct entry {
      bool is_store;
      const toml::key* name;
      const toml::node* node;
    };
    std::vector<entry> entries;
    for (auto [key, node] : in_text_order(root)) {
      bool is_store = key->str() == "stores";
      if (!is_store && key->str() != "limiters") {
        source_pos p = pos_of(key->source());
        std::string best = closest_name(key->str(), top_level_names);
        throw config_error(
            doc_.source, p.line, p.column, std::string(key->str()),
            best.empty()
                ? fmt::format("unknown top-level key '{}' (a file holds only "
                              "[stores.NAME] and [limiters.NAME] tables)",
                              key->str())
                : fmt::format("unknown top-level key '{}'; did you mean '{}'?", key->str(), best));
      }
      const auto* section = node->as_table();
      if (section == nullptr) {
        source_pos p = pos_of(node->source());
        throw config_error(doc_.source, p.line, p.column, std::string(key->str()),
                           fmt::format("expected a table of [{}.NAME] tables, got {}", key->str(),
                                       type_name(node->type())));
      }
      for (auto [name, value] : in_text_order(*section))
        entries.push_back({is_store, name, value});
    }
    std::stable_sort(entries.begin(), entries.end(), [](const entry& a, const entry& b) {
      return before(a.node->source(), b.node->source());
    });

    for (const entry& e : entries) {
      if (e.is_store)
        doc_.stores.push_back(read_entry<store_options>("stores", *e.name, *e.node));
      else
        doc_.limiters.push_back(read_entry<limiter_options>("limiters", *e.name, *e.node));
    }
  }

private:
  template <class Options>
  configured<Options> read_entry(std::string_view section, const toml::key& name,
                                 const toml::node& node) {
    configured<Options> c;
    c.name = std::string(name.str());
    c.pos = pos_of(node.source());
    entry_reader reader(doc_.source, section, c.name, c.option_pos);
    const auto* table = node.as_table();
    if (table == nullptr)
      reader.fail(node.source(), "",
                  fmt::format("expected a table [{}.{}] of options, got {}", section, c.name,
                              type_name(node.type())));
    read_options(reader, *table, c.options);

    try {
      if constexpr (std::is_same_v<Options, store_options>)
        reject_redis_options(reader, *table, c.options);
      validate(c.name, c.options);
    } catch (const config_error& e) {
      // Point at the option named, if it was set here, else at the table.
      source_pos p = c.pos;
      std::string prefix = fmt::format("{}.{}.", section, c.name);
      if (e.option().size() > prefix.size() && e.option().compare(0, prefix.size(), prefix) == 0) {
        auto it = c.option_pos.find(e.option().substr(prefix.size()));
        if (it != c.option_pos.end())
          p = it->second;
      }
      throw config_error(doc_.source, p.line, p.column, e.option(), e.message());
    }
    return c;
  }

  static void read_options(entry_reader& r, const toml::table& t, store_options& o) {
    const toml::node* engine = nullptr;
    const toml::node* strategy = nullptr;
    std::string strategy_value;
    for (auto [key, value] : in_text_order(t)) {
      std::string_view k = key->str();
      if (k == "engine") {
        o.engine = r.get_string(k, *value);
        engine = value;
      } else if (k == "strategy") {
        strategy_value = r.get_string(k, *value);
        strategy = value;
      } else if (k == "url") {
        o.url = r.get_string(k, *value);
      } else if (k == "db") {
        o.db = r.get_integer(k, *value);
      } else if (k == "password") {
        o.password = r.get_string(k, *value);
      } else if (k == "key_prefix") {
        o.key_prefix = r.get_string(k, *value);
      } else if (k == "pool_min_size") {
        o.pool_min_size = r.get_integer(k, *value);
      } else if (k == "pool_max_size") {
        o.pool_max_size = r.get_integer(k, *value);
      } else if (k == "timing_margin_ms") {
        o.timing_margin_ms = r.get_number(k, *value);
      } else if (k == "socket_timeout") {
        o.socket_timeout = seconds_d(r.get_number(k, *value));
      } else if (k == "socket_connect_timeout") {
        o.socket_connect_timeout = seconds_d(r.get_number(k, *value));
      } else if (k == "health_check_interval") {
        o.health_check_interval = seconds_d(r.get_number(k, *value));
      } else if (k == "tls_ca_file") {
        o.tls_ca_file = r.get_string(k, *value);
      } else if (k == "tls_cert_file") {
        o.tls_cert_file = r.get_string(k, *value);
      } else if (k == "tls_key_file") {
        o.tls_key_file = r.get_string(k, *value);
      } else if (k == "tls_server_name") {
        o.tls_server_name = r.get_string(k, *value);
      } else if (k == "tls_insecure_skip_verify") {
        o.tls_insecure_skip_verify = r.get_boolean(k, *value);
      } else {
        r.fail(key->source(), k, unknown_name_message("option", k, store_option_names));
      }
    }
    if (strategy == nullptr)
      return;
    if (engine == nullptr) {
      // A synonym of engine: errors about the engine point at it.
      o.engine = std::move(strategy_value);
      r.record("engine", *strategy);
    } else if (strategy_value != o.engine) {
      r.fail(strategy->source(), "strategy",
             fmt::format("conflicts with engine = \"{}\" (strategy is a synonym of engine; give "
                         "only one of them)",
                         o.engine));
    }
  }

  static void read_options(entry_reader& r, const toml::table& t, limiter_options& o) {
    for (auto [key, value] : in_text_order(t)) {
      std::string_view k = key->str();
      if (k == "store") {
        o.store = r.get_string(k, *value);
      } else if (k == "algorithm") {
        std::string a = r.get_string(k, *value);
        if (a == "token_bucket") {
          o.algo = algorithm::token_bucket;
        } else if (a == "sliding_window") {
          o.algo = algorithm::sliding_window;
        } else {
          constexpr std::array<std::string_view, 2> algorithms = {"token_bucket", "sliding_window"};
          std::string best = closest_name(a, algorithms);
          r.fail(value->source(), k,
                 fmt::format("must be \"token_bucket\" or \"sliding_window\" (got \"{}\"){}", a,
                             best.empty() ? "" : fmt::format("; did you mean \"{}\"?", best)));
        }
      } else if (k == "rate_per_second") {
        o.rate_per_second = r.get_number(k, *value);
      } else if (k == "burst") {
        o.burst = r.get_integer(k, *value);
      } else if (k == "limit") {
        o.limit = r.get_integer(k, *value);
      } else if (k == "window_seconds") {
        o.window_seconds = r.get_number(k, *value);
      } else if (k == "max_concurrent") {
        o.max_concurrent = r.get_integer(k, *value);
      } else if (k == "timeout") {
        o.timeout = seconds_d(r.get_number(k, *value));
      } else if (k == "fail_closed") {
        o.fail_closed = r.get_boolean(k, *value);
      } else if (k == "lease_seconds") {
        o.lease_seconds = r.get_number(k, *value);
      } else {
        r.fail(key->source(), k, unknown_name_message("option", k, limiter_option_names));
      }
    }
  }

  // validate() can only reject redis options on a memory store when they
  // differ from their defaults; a file shows that they were given at all.
  static void reject_redis_options(entry_reader& r, const toml::table& t, const store_options& o) {
    if (o.engine != "memory")
      return;
    for (auto [key, value] : in_text_order(t)) {
      std::string_view k = key->str();
      if (std::find(redis_only_options.begin(), redis_only_options.end(), k) !=
          redis_only_options.end())
        r.fail(value->source(), k, "applies to the redis engine only (engine is \"memory\")");
    }
  }

  config_document& doc_;
};

} // namespace

config_document parse_config(std::string_view text, std::string source) {
  config_document doc;
  doc.source = std::move(source);
  toml::table root;
  try {
    root = toml::parse(text, std::string_view(doc.source));
  } catch (const toml::parse_error& e) {
    source_pos p = pos_of(e.source());
    throw config_error(doc.source, p.line, p.column, "", describe_parse_error(e.description()));
  }
  document_parser(doc).parse(root);
  return doc;
}

config_document parse_config_file(const std::filesystem::path& path) {
  std::string source = path.string();
  auto cannot_read = [&](int err) {
    // std::strerror is not thread-safe; error_code::message is (strerror_r).
    return config_error(source, 0, 0, "",
                        fmt::format("cannot read file: {}",
                                    std::error_code(err, std::generic_category()).message()));
  };
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(source.c_str(), "rb"),
                                                       &std::fclose);
  if (!file)
    throw cannot_read(errno);
  std::string text;
  std::array<char, 8192> buffer{};
  errno = 0;
  std::size_t n = 0;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), file.get())) > 0)
    text.append(buffer.data(), n);
  if (std::ferror(file.get()))
    throw cannot_read(errno != 0 ? errno : EIO);
  return parse_config(text, std::move(source));
}

} // namespace ratesync::detail

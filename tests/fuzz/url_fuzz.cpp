// Fuzzes src/redis/url: any bytes as a Redis URL. Beyond "no crash, no
// exception other than std::invalid_argument", checks what users rely on:
//  - redact_url never throws;
//  - a URL that parses re-parses from its canonical to_string() to the same
//    endpoint (the password then reads "***"), and to_string() is a fixed point;
//  - the canonical URL with the real password percent-encoded parses back to
//    exactly the endpoint, and redact_url() of it is to_string();
//  - redact_url() of the input does not depend on the password: the input with
//    its password's text replaced (same length, other characters) redacts to
//    the same string.
// A violated property aborts (a crash for libFuzzer).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "redis/url.hpp"

namespace {

using ratesync::redis::endpoint;
using ratesync::redis::parse_url;
using ratesync::redis::redact_url;
using ratesync::redis::transport_kind;

[[noreturn]] void violated(const char* property, std::string_view input) {
  std::fprintf(stderr, "url_fuzz: %s\n  input: ", property);
  for (unsigned char c : input) {
    if (c >= 0x20 && c < 0x7f && c != '\\')
      std::fputc(c, stderr);
    else
      std::fprintf(stderr, "\\x%02x", c);
  }
  std::fputc('\n', stderr);
  std::abort();
}

bool same(const endpoint& a, const endpoint& b) {
  return a.kind == b.kind && a.host == b.host && a.port == b.port && a.path == b.path &&
         a.username == b.username && a.password == b.password && a.db == b.db;
}

// Every byte but letters and digits as %XX: valid in any part of any URL.
std::string escape_all(std::string_view s) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

// to_string() with the password written out (escaped) instead of "***".
std::string with_password(const endpoint& e) {
  std::string s = e.to_string();
  if (!e.password)
    return s;
  const std::string mask = e.kind == transport_kind::unix_socket ? "&password=***" : ":***@";
  // unix: the password is the last query parameter (the path may hold the
  // same text: '&', '=' and '*' are kept in it).
  const auto at = e.kind == transport_kind::unix_socket ? s.rfind(mask) : s.find(mask);
  if (at == std::string::npos)
    return {};
  const std::string value = escape_all(*e.password);
  if (e.kind == transport_kind::unix_socket)
    return s.replace(at + mask.size() - 3, 3, value);
  return s.replace(at + 1, 3, value);
}

// Another character of the same kind, so that the text keeps its meaning in
// the URL (a letter for a letter, a digit for a digit; others stay).
char other(char c) {
  if (c >= 'a' && c <= 'z')
    return c == 'z' ? 'a' : static_cast<char>(c + 1);
  if (c >= 'A' && c <= 'Z')
    return c == 'Z' ? 'A' : static_cast<char>(c + 1);
  if (c >= '0' && c <= '9')
    return c == '9' ? '0' : static_cast<char>(c + 1);
  return c;
}

std::optional<endpoint> try_parse(std::string_view url) {
  try {
    return parse_url(url);
  } catch (const std::invalid_argument&) {
    return std::nullopt;
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  const std::string redacted = redact_url(input); // never throws
  endpoint e;
  try {
    e = parse_url(input);
  } catch (const std::invalid_argument& err) {
    if (std::string_view(err.what()).empty())
      violated("an error without a message", input);
    return 0;
  }

  // Canonical form: re-parses to the same endpoint (password masked) and is
  // a fixed point.
  const std::string canonical = e.to_string();
  const auto again = try_parse(canonical);
  if (!again)
    violated("to_string() of a parsed URL does not parse", input);
  endpoint expected = e;
  if (expected.password)
    expected.password = "***";
  if (!same(*again, expected))
    violated("to_string() re-parses to another endpoint", input);
  if (again->to_string() != canonical)
    violated("to_string() is not a fixed point", input);

  // With the real password: exactly the endpoint back; redacted as to_string().
  const std::string full = with_password(e);
  if (full.empty())
    violated("to_string() shows no password mask for an endpoint with a password", input);
  const auto exact = try_parse(full);
  if (!exact || !same(*exact, e))
    violated("the canonical URL with the password escaped does not parse back", input);
  if (redact_url(full) != canonical)
    violated("redact_url() of the canonical URL with its password is not to_string()", input);

  // The redaction of the input itself must not depend on its password. Where
  // the password's decoded text appears exactly once in the input, replace
  // it; if the result parses to the same endpoint but another password, the
  // text was the password, and the redactions must be equal.
  if (e.password && e.password->find('*') == std::string::npos) {
    const std::string& p = *e.password;
    const auto first = input.find(p);
    if (first != std::string_view::npos && input.rfind(p) == first) {
      std::string changed(input);
      for (std::size_t i = 0; i < p.size(); ++i)
        changed[first + i] = other(changed[first + i]);
      if (const auto other_e = try_parse(changed);
          other_e && other_e->password && *other_e->password != p) {
        endpoint same_but_password = *other_e;
        same_but_password.password = e.password;
        if (same(same_but_password, e) && redact_url(changed) != redacted)
          violated("redact_url() depends on the password", input);
      }
    }
  }
  return 0;
}

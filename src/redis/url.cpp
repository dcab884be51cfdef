// Redis connection URLs. Decisions (the header lists the accepted forms):
//
// * Schemes: redis://, rediss:// (TLS) and unix://, matched case-insensitively
//   (RFC 3986); anything else, including "redis:/x" and a missing scheme, is an
//   error that lists the three. rediss defaults to port 6379 as well.
// * Userinfo (redis, rediss) is everything before the LAST '@', so a password
//   may contain raw '@', '/', '?', '#' or ':' (it is split from the user at the
//   FIRST ':'); percent-encoding is still the documented way. Like redis-py:
//     redis://:pass@h       password only (empty user = no username)
//     redis://user:pass@h   ACL username and password
//     redis://user@h        username without a password (not a password)
//   An empty username or password is the same as none (no AUTH for it). The
//   username must not contain a raw '/', '?', '#', '@', '[' or ']' (so that a
//   stray '@' later in the URL is not taken as the end of a userinfo).
// * unix:///abs/path.sock takes credentials and db only as the query
//   ?db=N&username=U&password=P (percent-decoded, '+' is a literal '+', keys
//   are case-sensitive, each at most once, empty "&&" segments are ignored);
//   unknown keys are errors. redis:// and rediss:// accept no query: the db is
//   the path.
// * '%XX' escapes (either hex case) are decoded in username, password, host,
//   unix path and query values; a bad one is an error naming the part. Host and
//   path must not decode to control characters (a host also not to one of
//   " %/:?#@[]\"), a unix path must not contain NUL, end with '/' or exceed
//   sun_path.
// * IPv6 literals must be bracketed and pass inet_pton; a zone id is written
//   "%25zone" (RFC 6874) and stored as "addr%zone" in endpoint::host.
// * Errors never quote the userinfo or anything from a query that follows a
//   password, and show the URL through redact_url(). A URL that does not parse
//   is redacted conservatively: the whole userinfo is masked, since where the
//   user name ends is then uncertain.
// * to_string() is canonical: lower-case scheme, the port and db always
//   written (unix: "?db=N" always, then username and password), user, host,
//   path and query values re-escaped so that parse_url(to_string()) gives the
//   same endpoint except that the password reads "***".
#include "redis/url.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdexcept>
#include <sys/un.h>

namespace ratesync::redis {

namespace {

constexpr std::string_view accepted_schemes = "redis://, rediss:// or unix://";

constexpr char lower(char c) noexcept {
  return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c;
}

bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size())
    return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i]))
      return false;
  return true;
}

bool istarts_with(std::string_view s, std::string_view prefix) noexcept {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

constexpr bool is_alpha(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
constexpr bool is_digit(char c) noexcept {
  return c >= '0' && c <= '9';
}

int hex_value(char c) noexcept {
  if (is_digit(c))
    return c - '0';
  c = lower(c);
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1;
}

// RFC 3986 scheme: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
bool is_scheme(std::string_view s) noexcept {
  if (s.empty() || !is_alpha(s[0]))
    return false;
  return std::ranges::all_of(
      s, [](char c) { return is_alpha(c) || is_digit(c) || c == '+' || c == '-' || c == '.'; });
}

// Length of "scheme://" (or "scheme:" plus any slashes when there is no "://")
// at the start of `url`, 0 if `url` does not start with something scheme-like.
std::size_t scheme_prefix_length(std::string_view url) noexcept {
  const auto colon = url.find(':');
  if (colon == std::string_view::npos || !is_scheme(url.substr(0, colon)))
    return 0;
  std::size_t i = colon + 1;
  while (i < url.size() && url[i] == '/')
    ++i;
  return i;
}

// Where a query's password value that starts at `from` ends: at the next
// "&key=" for a key this parser knows (so an unencoded '&' in the password is
// masked with it) or at the end.
std::size_t password_value_end(std::string_view url, std::size_t from) noexcept {
  for (std::size_t amp = url.find('&', from); amp != std::string_view::npos;
       amp = url.find('&', amp + 1)) {
    const auto rest = url.substr(amp + 1);
    if (istarts_with(rest, "db=") || istarts_with(rest, "username=") ||
        istarts_with(rest, "password="))
      return amp;
  }
  return url.size();
}

// Masks the values of "password=" query parameters from `query_start` on.
void mask_query_passwords(std::string& out, std::string_view url, std::size_t query_start) {
  std::size_t i = query_start;
  while (i < url.size()) {
    // A parameter starts after the '?' or after an '&'.
    const auto key = url.substr(i);
    if (istarts_with(key, "password=")) {
      const auto value = i + 9;
      const auto end = password_value_end(url, value);
      out.append(url.substr(i, 9));
      out.append("***");
      i = end;
      if (i == url.size())
        return;
    }
    const auto amp = url.find('&', i);
    const auto stop = amp == std::string_view::npos ? url.size() : amp + 1;
    out.append(url.substr(i, stop - i));
    i = stop;
  }
}

// `parsed`: the URL is known to parse, so a userinfo without ':' is a user
// name (kept); otherwise the whole userinfo is masked.
std::string redact(std::string_view url, bool parsed) {
  std::string out;
  out.reserve(url.size() + 4);

  std::size_t start = 0;
  if (const auto sep = url.find("://");
      sep != std::string_view::npos && is_scheme(url.substr(0, sep)))
    start = sep + 3;
  else
    start = scheme_prefix_length(url);
  const bool unix_path = start > 0 && istarts_with(url, "unix:") && start < url.size() &&
                         url[start] == '/' && url[start - 1] == '/';

  std::size_t after_userinfo = start;
  const auto at = unix_path ? std::string_view::npos : url.rfind('@');
  if (at != std::string_view::npos && at >= start) {
    const auto userinfo = url.substr(start, at - start);
    out.append(url.substr(0, start));
    const auto colon = userinfo.find(':');
    if (!parsed) {
      out.append("***");
    } else if (colon == std::string_view::npos || colon + 1 == userinfo.size()) {
      out.append(userinfo); // a user name alone, or an empty password
    } else {
      out.append(userinfo.substr(0, colon + 1));
      out.append("***");
    }
    out.push_back('@');
    after_userinfo = at + 1;
  } else {
    out.append(url.substr(0, start));
  }

  const auto q = url.find('?', after_userinfo);
  if (q == std::string_view::npos) {
    out.append(url.substr(after_userinfo));
    return out;
  }
  out.append(url.substr(after_userinfo, q + 1 - after_userinfo));
  mask_query_passwords(out, url, q + 1);
  return out;
}

// ---------------------------------------------------------------- parsing

// A value or a defect (without the URL: parse_url adds it, redacted).
template <class T> struct result {
  std::optional<T> value;
  std::string error;
  static result fail(std::string e) { return {std::nullopt, std::move(e)}; }
  static result ok(T v) { return {std::move(v), {}}; }
};

// Decodes %XX escapes. On a bad escape returns nullopt and sets `bad` to the
// offending text (at most "%" and two characters).
std::optional<std::string> percent_decode(std::string_view s, std::string& bad) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out.push_back(s[i]);
      continue;
    }
    const int hi = i + 1 < s.size() ? hex_value(s[i + 1]) : -1;
    const int lo = i + 2 < s.size() ? hex_value(s[i + 2]) : -1;
    if (hi < 0 || lo < 0) {
      bad = std::string(s.substr(i, 3));
      return std::nullopt;
    }
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

// Decodes `raw`, the part named `part`; the escape itself is quoted only when
// the part is not secret.
result<std::string> decode_part(std::string_view raw, std::string_view part, bool secret) {
  std::string bad;
  auto decoded = percent_decode(raw, bad);
  if (decoded)
    return result<std::string>::ok(std::move(*decoded));
  std::string e = "bad percent-escape in ";
  e.append(part);
  if (!secret) {
    e.append(" ('");
    e.append(bad);
    e.append("')");
  }
  e.append(" (expected '%' and two hex digits)");
  return result<std::string>::fail(std::move(e));
}

std::string quoted(std::string_view s) {
  std::string out = "'";
  out.append(s);
  out.push_back('\'');
  return out;
}

// Decimal digits only, no sign; nullopt if empty, not digits or above `max`.
std::optional<std::uint64_t> parse_decimal(std::string_view s, std::uint64_t max) noexcept {
  if (s.empty())
    return std::nullopt;
  std::uint64_t v = 0;
  for (char c : s) {
    if (!is_digit(c))
      return std::nullopt;
    const auto d = static_cast<std::uint64_t>(c - '0');
    if (v > (max - d) / 10)
      return std::nullopt;
    v = v * 10 + d;
  }
  return v;
}

constexpr auto max_db = static_cast<std::uint64_t>(INT64_MAX);

result<std::int64_t> parse_db(std::string_view s, bool quote) {
  if (const auto v = parse_decimal(s, max_db))
    return result<std::int64_t>::ok(static_cast<std::int64_t>(*v));
  std::string e = "bad db";
  if (quote) {
    e.push_back(' ');
    e.append(quoted(s));
  }
  e.append(" (expected a non-negative decimal integer)");
  return result<std::int64_t>::fail(std::move(e));
}

bool is_control(char c) noexcept {
  const auto u = static_cast<unsigned char>(c);
  return u < 0x20 || u == 0x7f;
}

std::optional<std::string> nonempty(std::string s) {
  if (s.empty())
    return std::nullopt;
  return s;
}

// redis:// and rediss:// after the "://".
result<endpoint> parse_tcp(std::string_view rest, endpoint ep) {
  using R = result<endpoint>;

  std::string_view hostpart = rest;
  if (const auto at = rest.rfind('@'); at != std::string_view::npos) {
    const auto userinfo = rest.substr(0, at);
    hostpart = rest.substr(at + 1);
    const auto colon = userinfo.find(':');
    const auto user_raw = userinfo.substr(0, colon);
    if (const auto bad = user_raw.find_first_of("/?#@[]"); bad != std::string_view::npos)
      return R::fail(std::string("unencoded '") + user_raw[bad] +
                     "' in the username (percent-encode it)");
    auto user = decode_part(user_raw, "username", false);
    if (!user.value)
      return R::fail(std::move(user.error));
    ep.username = nonempty(std::move(*user.value));
    if (colon != std::string_view::npos) {
      auto pass = decode_part(userinfo.substr(colon + 1), "password", true);
      if (!pass.value)
        return R::fail(std::move(pass.error));
      ep.password = nonempty(std::move(*pass.value));
    }
  }

  if (hostpart.find('?') != std::string_view::npos)
    return R::fail("query parameters are only accepted in unix:// URLs (put credentials before "
                   "the host and the db in the path: redis://user:password@host:port/db)");
  if (hostpart.find('#') != std::string_view::npos)
    return R::fail("a fragment ('#') is not allowed");

  // host
  std::string_view after_host;
  if (!hostpart.empty() && hostpart[0] == '[') {
    const auto close = hostpart.find(']');
    if (close == std::string_view::npos)
      return R::fail("unterminated '[' in the IPv6 host (expected ']')");
    auto host = decode_part(hostpart.substr(1, close - 1), "host", false);
    if (!host.value)
      return R::fail(std::move(host.error));
    const std::string& h = *host.value;
    if (h.empty())
      return R::fail("empty host");
    const auto pct = h.find('%');
    const std::string addr = h.substr(0, pct);
    in6_addr parsed{};
    // inet_pton reads a C string: a NUL (raw or %00) would end the address
    // there and let anything after it through into the host (url_fuzz).
    if (addr.find_first_not_of("0123456789abcdefABCDEF:.") != std::string::npos)
      return R::fail("bad IPv6 address " +
                     quoted(hostpart.substr(1, std::min(close, hostpart.find('%')) - 1)) +
                     " in brackets");
    if (::inet_pton(AF_INET6, addr.c_str(), &parsed) != 1)
      return R::fail("bad IPv6 address " + quoted(addr) + " in brackets");
    if (pct != std::string::npos) {
      const std::string_view zone = std::string_view(h).substr(pct + 1);
      if (zone.empty())
        return R::fail("empty IPv6 zone id (write it as '%25zone')");
      for (char c : zone)
        if (is_control(c) || c == ' ' || c == '%' || c == '[' || c == ']' || c == '/')
          return R::fail("bad character in the IPv6 zone id");
    }
    ep.host = h;
    after_host = hostpart.substr(close + 1);
    if (!after_host.empty() && after_host[0] != ':' && after_host[0] != '/')
      return R::fail("unexpected characters after ']' (expected ':port' or '/db')");
  } else {
    const auto slash = hostpart.find('/');
    const auto authority = hostpart.substr(0, slash);
    const auto colon = authority.find(':');
    if (colon != std::string_view::npos && authority.find(':', colon + 1) != std::string_view::npos)
      return R::fail("':' in the host beyond the port (an IPv6 address must be in brackets, "
                     "e.g. redis://[::1]:6379)");
    const auto host_raw = authority.substr(0, colon);
    if (host_raw.empty())
      return R::fail("empty host");
    auto host = decode_part(host_raw, "host", false);
    if (!host.value)
      return R::fail(std::move(host.error));
    for (char c : *host.value)
      if (is_control(c) || std::string_view(" %/:?#@[]\\").find(c) != std::string_view::npos)
        return R::fail("bad character in the host " + quoted(host_raw));
    ep.host = std::move(*host.value);
    after_host = hostpart.substr(host_raw.size());
  }

  // port
  if (!after_host.empty() && after_host[0] == ':') {
    const auto slash = after_host.find('/');
    const auto port = after_host.substr(1, slash == std::string_view::npos ? slash : slash - 1);
    if (port.empty())
      return R::fail("empty port after ':' (expected 1..65535)");
    const auto v = parse_decimal(port, 65535);
    if (!v || *v == 0)
      return R::fail("bad port " + quoted(port) + " (expected a decimal number in 1..65535)");
    ep.port = static_cast<std::uint16_t>(*v);
    after_host = slash == std::string_view::npos ? std::string_view{} : after_host.substr(slash);
  }

  // db
  if (!after_host.empty()) { // starts with '/'
    const auto db = after_host.substr(1);
    if (db.find('/') != std::string_view::npos)
      return R::fail("bad db path " + quoted(after_host) + " (expected '/N', one number)");
    if (!db.empty()) {
      auto n = parse_db(db, true);
      if (!n.value)
        return R::fail(std::move(n.error));
      ep.db = *n.value;
    }
  }
  return R::ok(std::move(ep));
}

// unix:// after the "://".
result<endpoint> parse_unix(std::string_view rest, endpoint ep) {
  using R = result<endpoint>;
  if (rest.empty())
    return R::fail("unix:// URL without a path (expected unix:///path/to.sock)");
  if (rest[0] != '/') {
    const auto slash = rest.find('/');
    if (rest.substr(0, slash).find('@') != std::string_view::npos)
      return R::fail("unix:// URLs take credentials in the query "
                     "(unix:///path/to.sock?username=..&password=..), not before the path");
    return R::fail("unix:// URL with a host or a relative path (expected unix:///path/to.sock)");
  }
  if (rest.find('#') != std::string_view::npos)
    return R::fail("a fragment ('#') is not allowed (percent-encode '#' as %23)");

  const auto q = rest.find('?');
  auto path = decode_part(rest.substr(0, q), "unix socket path", false);
  if (!path.value)
    return R::fail(std::move(path.error));
  const std::string& p = *path.value;
  if (p.find('\0') != std::string::npos)
    return R::fail("NUL character in the unix socket path");
  if (p.back() == '/')
    return R::fail("the unix socket path " + quoted(p) + " names a directory");
  constexpr std::size_t max_path = sizeof(sockaddr_un{}.sun_path) - 1;
  if (p.size() > max_path)
    return R::fail("unix socket path longer than " + std::to_string(max_path) + " bytes");
  ep.path = p;

  if (q == std::string_view::npos)
    return R::ok(std::move(ep));

  bool seen_db = false;
  bool seen_user = false;
  bool seen_password = false;
  std::string_view query = rest.substr(q + 1);
  while (!query.empty()) {
    const auto amp = query.find('&');
    const auto param = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (param.empty())
      continue;
    const auto eq = param.find('=');
    const auto key = param.substr(0, eq);
    const bool known = key == "db" || key == "username" || key == "password";
    if (!known || eq == std::string_view::npos) {
      // After a password, this may be the rest of a password with an unencoded
      // '&': do not quote it.
      std::string e;
      if (seen_password)
        e = std::string(!known ? "unknown query parameter" : "query parameter without '='") +
            " after 'password' (percent-encode '&' in a password as %26)";
      else if (!known)
        e = "unknown query parameter " + quoted(key);
      else
        e = "query parameter " + quoted(key) + " without '='";
      e += "; accepted: db, username, password";
      return R::fail(std::move(e));
    }
    const auto value = param.substr(eq + 1);
    bool& seen = key == "db" ? seen_db : key == "username" ? seen_user : seen_password;
    if (seen)
      return R::fail("query parameter " + quoted(key) + " given twice");
    seen = true;
    if (key == "db") {
      auto n = parse_db(value, false);
      if (!n.value)
        return R::fail(std::move(n.error));
      ep.db = *n.value;
    } else {
      const bool secret = key == "password";
      auto v = decode_part(value, secret ? "password" : "username", secret);
      if (!v.value)
        return R::fail(std::move(v.error));
      (secret ? ep.password : ep.username) = nonempty(std::move(*v.value));
    }
  }
  return R::ok(std::move(ep));
}

result<endpoint> parse(std::string_view url) {
  const auto sep = url.find("://");
  const auto scheme = sep == std::string_view::npos ? std::string_view{} : url.substr(0, sep);
  endpoint ep;
  if (iequals(scheme, "redis")) {
    ep.kind = transport_kind::tcp;
    return parse_tcp(url.substr(sep + 3), std::move(ep));
  }
  if (iequals(scheme, "rediss")) {
    ep.kind = transport_kind::tls;
    return parse_tcp(url.substr(sep + 3), std::move(ep));
  }
  if (iequals(scheme, "unix")) {
    ep.kind = transport_kind::unix_socket;
    return parse_unix(url.substr(sep + 3), std::move(ep));
  }
  std::string e;
  if (is_scheme(scheme))
    e = "unsupported scheme " + quoted(scheme) + "; expected ";
  else
    e = "no supported scheme; the URL must start with ";
  e.append(accepted_schemes);
  return result<endpoint>::fail(std::move(e));
}

// ---------------------------------------------------------------- printing

constexpr bool is_unreserved(char c) noexcept {
  return is_alpha(c) || is_digit(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

constexpr bool is_sub_delim(char c) noexcept {
  return std::string_view("!$&'()*+,;=").find(c) != std::string_view::npos;
}

// Appends `s`, percent-encoding every byte that is neither unreserved nor kept.
template <class Keep> void append_escaped(std::string& out, std::string_view s, Keep keep) {
  constexpr std::string_view hex = "0123456789ABCDEF";
  for (char c : s) {
    if (is_unreserved(c) || keep(c)) {
      out.push_back(c);
    } else {
      const auto u = static_cast<unsigned char>(c);
      out.push_back('%');
      out.push_back(hex[u >> 4]);
      out.push_back(hex[u & 15]);
    }
  }
}

} // namespace

std::string endpoint::to_string() const {
  std::string out;
  if (kind == transport_kind::unix_socket) {
    out = "unix://";
    append_escaped(out, path,
                   [](char c) { return is_sub_delim(c) || c == '/' || c == ':' || c == '@'; });
    out.append("?db=");
    out.append(std::to_string(db));
    if (username) {
      out.append("&username=");
      append_escaped(out, *username, [](char c) {
        return c != '&' && c != '=' && c != '+' &&
               (is_sub_delim(c) || c == ':' || c == '@' || c == '/');
      });
    }
    if (password)
      out.append("&password=***");
    return out;
  }

  out = kind == transport_kind::tls ? "rediss://" : "redis://";
  if (username || password) {
    if (username)
      append_escaped(out, *username, is_sub_delim);
    if (password)
      out.append(":***");
    out.push_back('@');
  }
  if (const auto colon = host.find(':'); colon != std::string::npos) {
    const auto pct = host.find('%');
    out.push_back('[');
    out.append(host.substr(0, pct));
    if (pct != std::string::npos) {
      out.append("%25");
      append_escaped(out, std::string_view(host).substr(pct + 1), is_sub_delim);
    }
    out.push_back(']');
  } else {
    append_escaped(out, host, is_sub_delim);
  }
  out.push_back(':');
  out.append(std::to_string(port));
  out.push_back('/');
  out.append(std::to_string(db));
  return out;
}

endpoint parse_url(std::string_view url) {
  auto r = parse(url);
  if (!r.value)
    throw std::invalid_argument("invalid Redis URL '" + redact(url, false) + "': " + r.error);
  return std::move(*r.value);
}

std::string redact_url(std::string_view url) {
  try {
    return redact(url, parse(url).value.has_value());
  } catch (...) { // only std::bad_alloc can get here
    return {};
  }
}

} // namespace ratesync::redis

// Private: Redis connection URLs, parsed at configuration time.
//   redis://[[user]:password@]host[:port][/db]
//   rediss://...                      (TLS)
//   unix:///path/to.sock[?db=N]       (also ?password=..&username=..)
// Percent-decoding in user, password, host and path; IPv6 literals in
// brackets. Passwords never appear in what to_string() or errors print.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ratesync::redis {

enum class transport_kind { tcp, tls, unix_socket };

struct endpoint {
  transport_kind kind = transport_kind::tcp;
  std::string host; // tcp / tls: name or address (IPv6 without brackets)
  std::uint16_t port = 6379;
  std::string path; // unix_socket
  std::optional<std::string> username;
  std::optional<std::string> password;
  std::int64_t db = 0;

  // The URL with any password replaced by "***".
  std::string to_string() const;
};

// Throws std::invalid_argument with a message that names the defect (never
// the password): unknown scheme, empty host, bad port (not 1..65535), bad db
// (not a non-negative integer), bad percent-escape, unterminated IPv6
// bracket, unix URL without a path, trailing garbage.
endpoint parse_url(std::string_view url);

// `url` with the password (if any) replaced by "***", for messages; never
// throws (an unparsable URL is shown with everything after "://" up to the
// last '@' masked).
std::string redact_url(std::string_view url);

} // namespace ratesync::redis

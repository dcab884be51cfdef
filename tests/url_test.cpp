// Redis URL parsing: every accepted form, every defect (the message names it
// and never shows the password), percent-decoding, IPv6, unix sockets,
// canonical to_string() round trips and redact_url().
#include <gtest/gtest.h>
#include <stdexcept>
#include <string>
#include <string_view>
#include <sys/un.h>
#include <vector>

#include "redis/url.hpp"

namespace {

using ratesync::redis::endpoint;
using ratesync::redis::parse_url;
using ratesync::redis::redact_url;
using ratesync::redis::transport_kind;

// The message of the std::invalid_argument that parse_url(url) throws.
std::string error_of(std::string_view url) {
  try {
    const auto ep = parse_url(url);
    ADD_FAILURE() << "parse_url accepted '" << url << "' as " << ep.to_string();
    return "<accepted>";
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
}

bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

// parse_url(url) throws a message naming `defect`, showing the URL redacted
// and without `secret` (when given).
void expect_error(std::string_view url, std::string_view defect, std::string_view secret = {}) {
  SCOPED_TRACE(std::string(url));
  const auto msg = error_of(url);
  EXPECT_TRUE(contains(msg, defect)) << msg;
  EXPECT_TRUE(contains(msg, redact_url(url))) << msg;
  if (!secret.empty()) {
    EXPECT_FALSE(contains(msg, secret)) << msg;
  }
}

void expect_same(const endpoint& a, const endpoint& b) {
  EXPECT_EQ(a.kind, b.kind);
  EXPECT_EQ(a.host, b.host);
  EXPECT_EQ(a.port, b.port);
  EXPECT_EQ(a.path, b.path);
  EXPECT_EQ(a.username, b.username);
  EXPECT_EQ(a.password, b.password);
  EXPECT_EQ(a.db, b.db);
}

// ------------------------------------------------------------------ tcp, tls

TEST(Url, HostOnlyHasDefaults) {
  const auto ep = parse_url("redis://localhost");
  EXPECT_EQ(ep.kind, transport_kind::tcp);
  EXPECT_EQ(ep.host, "localhost");
  EXPECT_EQ(ep.port, 6379);
  EXPECT_EQ(ep.db, 0);
  EXPECT_FALSE(ep.username);
  EXPECT_FALSE(ep.password);
  EXPECT_TRUE(ep.path.empty());
}

TEST(Url, UserPasswordHostPortDb) {
  const auto ep = parse_url("redis://alice:s3cret@cache.example.com:6380/5");
  EXPECT_EQ(ep.kind, transport_kind::tcp);
  EXPECT_EQ(ep.username, "alice");
  EXPECT_EQ(ep.password, "s3cret");
  EXPECT_EQ(ep.host, "cache.example.com");
  EXPECT_EQ(ep.port, 6380);
  EXPECT_EQ(ep.db, 5);
}

TEST(Url, PasswordOnly) {
  const auto ep = parse_url("redis://:s3cret@10.0.0.1");
  EXPECT_FALSE(ep.username);
  EXPECT_EQ(ep.password, "s3cret");
  EXPECT_EQ(ep.host, "10.0.0.1");
}

TEST(Url, UsernameWithoutColonIsAUsernameWithoutPassword) {
  const auto ep = parse_url("redis://alice@h");
  EXPECT_EQ(ep.username, "alice");
  EXPECT_FALSE(ep.password);
}

TEST(Url, EmptyUserAndPasswordMeanNone) {
  for (const auto* url : {"redis://:@h", "redis://@h", "redis://alice:@h"}) {
    SCOPED_TRACE(url);
    const auto ep = parse_url(url);
    EXPECT_FALSE(ep.password);
    EXPECT_EQ(ep.host, "h");
  }
  EXPECT_FALSE(parse_url("redis://:@h").username);
  EXPECT_EQ(parse_url("redis://alice:@h").username, "alice");
}

TEST(Url, TlsSchemeDefaultsToPort6379) {
  const auto ep = parse_url("rediss://u:p@secure.example");
  EXPECT_EQ(ep.kind, transport_kind::tls);
  EXPECT_EQ(ep.port, 6379);
  EXPECT_EQ(ep.host, "secure.example");
  EXPECT_EQ(parse_url("rediss://h:7000/1").port, 7000);
}

TEST(Url, SchemeIsCaseInsensitive) {
  EXPECT_EQ(parse_url("REDIS://H").kind, transport_kind::tcp);
  EXPECT_EQ(parse_url("REDIS://H").host, "H");
  EXPECT_EQ(parse_url("Rediss://h").kind, transport_kind::tls);
  EXPECT_EQ(parse_url("UNIX:///tmp/r.sock").kind, transport_kind::unix_socket);
}

TEST(Url, PortBounds) {
  EXPECT_EQ(parse_url("redis://h:1").port, 1);
  EXPECT_EQ(parse_url("redis://h:65535").port, 65535);
  EXPECT_EQ(parse_url("redis://h:06380").port, 6380);
  EXPECT_EQ(parse_url("redis://h:6380/").port, 6380);
}

TEST(Url, DbFromPath) {
  EXPECT_EQ(parse_url("redis://h").db, 0);
  EXPECT_EQ(parse_url("redis://h/").db, 0);
  EXPECT_EQ(parse_url("redis://h/0").db, 0);
  EXPECT_EQ(parse_url("redis://h/15").db, 15);
  EXPECT_EQ(parse_url("redis://h:1/007").db, 7);
  EXPECT_EQ(parse_url("redis://h/9223372036854775807").db, INT64_MAX);
}

TEST(Url, BadPort) {
  expect_error("redis://h:", "empty port");
  expect_error("redis://h:/1", "empty port");
  expect_error("redis://h:0", "bad port '0'");
  expect_error("redis://h:65536", "bad port '65536'");
  expect_error("redis://h:x", "bad port 'x'");
  expect_error("redis://h:-1", "bad port '-1'");
  expect_error("redis://h:+80", "bad port '+80'");
  expect_error("redis://h:99999999999999999999999", "bad port");
  expect_error("redis://u:s3cret@h:0/1", "bad port '0'", "s3cret");
  EXPECT_TRUE(contains(error_of("redis://h:0"), "1..65535"));
}

TEST(Url, BadDb) {
  expect_error("redis://h/x", "bad db 'x'");
  expect_error("redis://h/-1", "bad db '-1'");
  expect_error("redis://h/+1", "bad db '+1'");
  expect_error("redis://h/1 ", "bad db '1 '");
  expect_error("redis://h/9223372036854775808", "bad db");
  expect_error("redis://h/1/2", "bad db path '/1/2'");
  expect_error("redis://h/1/", "bad db path");
  expect_error("redis://:s3cret@h:1/x", "bad db", "s3cret");
  EXPECT_TRUE(contains(error_of("redis://h/x"), "non-negative"));
}

TEST(Url, EmptyHost) {
  expect_error("redis://", "empty host");
  expect_error("redis://:6379", "empty host");
  expect_error("redis:///1", "empty host");
  expect_error("redis://alice:s3cret@", "empty host", "s3cret");
  expect_error("rediss://:s3cret@:6379/1", "empty host", "s3cret");
  expect_error("redis://[]:6379", "empty host");
}

TEST(Url, UnknownOrMissingScheme) {
  for (const auto* url : {"http://h", "redis:/h", "redis:h", "localhost:6379", "", "://h",
                          "redis+sentinel://h", " redis://h", "valkey://u:s3cret@h"}) {
    SCOPED_TRACE(url);
    const auto msg = error_of(url);
    EXPECT_TRUE(contains(msg, "redis://, rediss:// or unix://")) << msg;
    EXPECT_FALSE(contains(msg, "s3cret")) << msg;
  }
  EXPECT_TRUE(contains(error_of("http://h"), "unsupported scheme 'http'"));
  EXPECT_TRUE(contains(error_of("redis:/h"), "must start with"));
}

TEST(Url, QueryAndFragmentRejectedForTcp) {
  expect_error("redis://h?db=1", "only accepted in unix:// URLs");
  expect_error("redis://:s3cret@h/1?password=x", "only accepted in unix://", "s3cret");
  expect_error("redis://h/1#frag", "fragment");
}

TEST(Url, BadHostCharacters) {
  expect_error("redis://h%2Fx", "bad character in the host");
  expect_error("redis://a%3Ab", "bad character in the host");
  expect_error("redis://h%00", "bad character in the host");
  expect_error("redis://h x", "bad character in the host");
}

// --------------------------------------------------------- percent-decoding

TEST(Url, PercentDecodingInUserPasswordAndHost) {
  const auto ep = parse_url("redis://us%40er%3Ax:p%40ss%3Aw%2Frd@my%2Dhost:1/2");
  EXPECT_EQ(ep.username, "us@er:x");
  EXPECT_EQ(ep.password, "p@ss:w/rd");
  EXPECT_EQ(ep.host, "my-host");
  // Hex digits in either case; '+' stays a '+'.
  EXPECT_EQ(parse_url("redis://:a%2fb%2Fc+d@h").password, "a/b/c+d");
  EXPECT_EQ(parse_url("redis://:%00%ff@h").password, std::string("\0\xff", 2));
}

TEST(Url, UnencodedSpecialCharactersInThePassword) {
  // The userinfo ends at the last '@', the user at the first ':'.
  const auto ep = parse_url("redis://alice:p@ss:w/rd?#@h:1/2");
  EXPECT_EQ(ep.username, "alice");
  EXPECT_EQ(ep.password, "p@ss:w/rd?#");
  EXPECT_EQ(ep.host, "h");
  EXPECT_EQ(ep.port, 1);
  EXPECT_EQ(ep.db, 2);
}

TEST(Url, UnencodedDelimiterInTheUsername) {
  expect_error("redis://h/0@x", "unencoded '/' in the username");
  expect_error("redis://al@ce:s3cret@h", "unencoded '@' in the username", "s3cret");
  expect_error("redis://a[b@h", "unencoded '['");
}

TEST(Url, BadEscapeNamesThePartButNotThePassword) {
  expect_error("redis://:s3cret%G1@h", "bad percent-escape in password", "s3cret");
  expect_error("redis://u:s3cret%4@h", "bad percent-escape in password", "s3cret");
  expect_error("redis://u:s3cret%@h", "bad percent-escape in password", "s3cret");
  // The escape itself is quoted only for parts that are not secret.
  EXPECT_FALSE(contains(error_of("redis://:s3cret%G1@h"), "%G1"));
  expect_error("redis://us%G1er:s3cret@h", "bad percent-escape in username ('%G1')", "s3cret");
  expect_error("redis://u:s3cret@ho%4", "bad percent-escape in host ('%4')", "s3cret");
  expect_error("redis://[fe80::1%eth0]", "bad percent-escape in host ('%et')");
  expect_error("unix:///tmp/r%zz.sock", "bad percent-escape in unix socket path ('%zz')");
  expect_error("unix:///tmp/r.sock?password=s3cret%G", "bad percent-escape in password", "s3cret");
  expect_error("unix:///tmp/r.sock?username=%%", "bad percent-escape in username ('%%')");
}

// -------------------------------------------------------------------- IPv6

TEST(Url, Ipv6WithPortAndDb) {
  const auto ep = parse_url("redis://[::1]:6380/2");
  EXPECT_EQ(ep.host, "::1");
  EXPECT_EQ(ep.port, 6380);
  EXPECT_EQ(ep.db, 2);

  const auto tls = parse_url("rediss://u:p%40@[2001:db8::1]:7000/3");
  EXPECT_EQ(tls.kind, transport_kind::tls);
  EXPECT_EQ(tls.host, "2001:db8::1");
  EXPECT_EQ(tls.password, "p@");
  EXPECT_EQ(tls.port, 7000);
  EXPECT_EQ(tls.db, 3);

  EXPECT_EQ(parse_url("redis://[::1]").port, 6379);
  EXPECT_EQ(parse_url("redis://[::1]/4").db, 4);
  EXPECT_EQ(parse_url("redis://[::ffff:10.0.0.1]").host, "::ffff:10.0.0.1");
}

TEST(Url, Ipv6ZoneIdIsPercentDecoded) {
  EXPECT_EQ(parse_url("redis://[fe80::1%25eth0]").host, "fe80::1%eth0");
  EXPECT_EQ(parse_url("redis://[fe80::1%25en%30]:1").host, "fe80::1%en0");
}

TEST(Url, Ipv6Defects) {
  expect_error("redis://[::1", "unterminated '['");
  expect_error("redis://u:s3cret@[::1:6379/0", "unterminated '['", "s3cret");
  expect_error("redis://::1", "IPv6 address must be in brackets");
  expect_error("redis://fe80::1:6379", "IPv6 address must be in brackets");
  expect_error("redis://h:1:2", "':' in the host beyond the port");
  expect_error("redis://[zzz]", "bad IPv6 address 'zzz'");
  expect_error("redis://[127.0.0.1]", "bad IPv6 address");
  expect_error("redis://[::1]x", "unexpected characters after ']'");
  expect_error("redis://[::1]:", "empty port");
  expect_error("redis://[::1]:0", "bad port '0'");
  expect_error("redis://[fe80::1%25]", "empty IPv6 zone id");
}

// Found by tests/fuzz/url_fuzz: inet_pton reads a C string, so an address
// with a NUL (raw or %00) was checked only up to it, and what followed went
// into the host (to_string() of it did not parse back).
TEST(Url, Ipv6WithNulIsRefused) {
  expect_error("redis://[::1%00garbage]:6379", "bad IPv6 address '::1'");
  expect_error("redis://[::1%00%40evil]", "bad IPv6 address '::1'");
  expect_error("redis://[::ffff%00%00%40::ffff]", "bad IPv6 address '::ffff'");
  EXPECT_EQ(parse_url("redis://[::FFFF:192.0.2.1]").host, "::FFFF:192.0.2.1");
}

// -------------------------------------------------------------------- unix

TEST(Url, UnixSocket) {
  const auto ep = parse_url("unix:///tmp/redis.sock");
  EXPECT_EQ(ep.kind, transport_kind::unix_socket);
  EXPECT_EQ(ep.path, "/tmp/redis.sock");
  EXPECT_EQ(ep.db, 0);
  EXPECT_FALSE(ep.username);
  EXPECT_FALSE(ep.password);
  EXPECT_TRUE(ep.host.empty());
}

TEST(Url, UnixSocketWithDbAndCredentials) {
  const auto ep = parse_url("unix:///var/run/r.sock?db=3&password=p%26w%3Dd&username=bob");
  EXPECT_EQ(ep.path, "/var/run/r.sock");
  EXPECT_EQ(ep.db, 3);
  EXPECT_EQ(ep.password, "p&w=d");
  EXPECT_EQ(ep.username, "bob");

  EXPECT_EQ(parse_url("unix:///tmp/r.sock?").db, 0);
  EXPECT_EQ(parse_url("unix:///tmp/r.sock?&db=2&").db, 2);
  EXPECT_FALSE(parse_url("unix:///tmp/r.sock?password=").password);
  EXPECT_EQ(parse_url("unix:///tmp/r.sock?password=a+b@c").password, "a+b@c");
}

TEST(Url, UnixPathIsPercentDecoded) {
  EXPECT_EQ(parse_url("unix:///tmp/my%20dir/r%3fx.sock").path, "/tmp/my dir/r?x.sock");
  EXPECT_EQ(parse_url("unix:///tmp/a@b.sock").path, "/tmp/a@b.sock");
}

TEST(Url, UnixDefects) {
  expect_error("unix://", "without a path");
  expect_error("unix://relative.sock", "host or a relative path");
  expect_error("unix://localhost/tmp/r.sock", "host or a relative path");
  expect_error("unix://bob:s3cret@/tmp/r.sock", "credentials in the query", "s3cret");
  expect_error("unix:///tmp/", "names a directory");
  expect_error("unix:///tmp/a%00b", "NUL character");
  expect_error("unix:///tmp/r.sock#x", "fragment");
  expect_error("unix:///tmp/r.sock?foo=1", "unknown query parameter 'foo'");
  expect_error("unix:///tmp/r.sock?DB=1", "unknown query parameter 'DB'");
  expect_error("unix:///tmp/r.sock?db", "query parameter 'db' without '='");
  expect_error("unix:///tmp/r.sock?db=", "bad db");
  expect_error("unix:///tmp/r.sock?db=x", "bad db");
  expect_error("unix:///tmp/r.sock?db=-1", "bad db");
  expect_error("unix:///tmp/r.sock?db=1&db=2", "'db' given twice");
  expect_error("unix:///tmp/r.sock?password=s3cret&password=s3cret", "'password' given twice",
               "s3cret");
  expect_error("unix:///tmp/r.sock?password=s3cret&db=x", "bad db", "s3cret");
  EXPECT_TRUE(contains(error_of("unix:///tmp/r.sock?foo=1"), "accepted: db, username, password"));
}

TEST(Url, UnknownQueryKeyAfterPasswordIsNotQuoted) {
  // The user most likely meant the password "s3&cret=x".
  expect_error("unix:///tmp/r.sock?password=s3&cret=x", "unknown query parameter after 'password'",
               "cret");
  expect_error("unix:///tmp/r.sock?password=s3&cret", "after 'password'", "cret");
}

TEST(Url, UnixPathLength) {
  constexpr auto max = sizeof(sockaddr_un{}.sun_path) - 1;
  const std::string longest = "/" + std::string(max - 1, 'a');
  EXPECT_EQ(parse_url("unix://" + longest).path, longest);
  expect_error("unix://" + longest + "a", "longer than");
}

// ----------------------------------------------------- secrets in messages

TEST(Url, NoErrorMessageShowsThePassword) {
  const std::vector<std::string> templates = {
      "redis://u:PW@h:0",
      "redis://u:PW@h:x/1",
      "redis://:PW@",
      "redis://:PW@[::1",
      "redis://u:PW@::1",
      "redis://u:PW@h/x",
      "redis://u:PW@h?db=1",
      "redis://u:PW%zz@h",
      "http://u:PW@h",
      "redis:/u:PW@h",
      "u:PW@h",
      ":PW@h",
      "redis://u:PW@h/1/2",
      "rediss://u:PW@h:65536",
      "redis://u:PW@h#x",
      "redis://u@b:PW@h:0",
      "unix://u:PW@/tmp/s",
      "unix:///s?password=PW&x=1",
      "unix:///s?password=PW&db",
      "unix:///s?db=x&password=PW",
      "unix:///s?password=PW%",
      "unix:///s/?password=PW",
      "unix:///s?password=PW&DB=1",
      "unix:///s?password=PW#x",
      "redis://:PW@h:1:2",
      "redis://:P@W@[fe80::1%25]",
      "redis://:P/W@h:0",
  };
  for (const auto& t : templates) {
    auto url = t;
    if (const auto pw = url.find("PW"); pw != std::string::npos)
      url.replace(pw, 2, "s3cret");
    if (const auto split = url.find("P@W"); split != std::string::npos)
      url.replace(split, 3, "s3@cret");
    if (const auto split = url.find("P/W"); split != std::string::npos)
      url.replace(split, 3, "s3/cret");
    SCOPED_TRACE(url);
    const auto msg = error_of(url);
    EXPECT_FALSE(contains(msg, "s3cret")) << msg;
    EXPECT_FALSE(contains(msg, "cret")) << msg;
    EXPECT_TRUE(contains(msg, "invalid Redis URL '")) << msg;
  }
}

// ------------------------------------------------------------- to_string

TEST(Url, ToStringIsCanonicalAndMasksThePassword) {
  EXPECT_EQ(parse_url("redis://user:s3cret@[::1]:6380/2").to_string(),
            "redis://user:***@[::1]:6380/2");
  EXPECT_EQ(parse_url("unix:///tmp/r.sock?db=3").to_string(), "unix:///tmp/r.sock?db=3");
  EXPECT_EQ(parse_url("redis://localhost").to_string(), "redis://localhost:6379/0");
  EXPECT_EQ(parse_url("REDISS://:s3cret@h/").to_string(), "rediss://:***@h:6379/0");
  EXPECT_EQ(parse_url("redis://alice@h").to_string(), "redis://alice@h:6379/0");
  EXPECT_EQ(parse_url("redis://:@h").to_string(), "redis://h:6379/0");
  EXPECT_EQ(parse_url("unix:///s?password=s3cret&username=bob&db=1").to_string(),
            "unix:///s?db=1&username=bob&password=***");
  EXPECT_EQ(parse_url("unix:///tmp/r.sock").to_string(), "unix:///tmp/r.sock?db=0");
}

TEST(Url, ToStringReEscapes) {
  EXPECT_EQ(parse_url("redis://us%40er%3Ax%2F:pw@h").to_string(),
            "redis://us%40er%3Ax%2F:***@h:6379/0");
  EXPECT_EQ(parse_url("redis://[fe80::1%25eth0]:1").to_string(), "redis://[fe80::1%25eth0]:1/0");
  EXPECT_EQ(parse_url("redis://h%C3%A9").to_string(), "redis://h%C3%A9:6379/0");
  EXPECT_EQ(parse_url("unix:///tmp/my%20dir/r%3F%23%25.sock").to_string(),
            "unix:///tmp/my%20dir/r%3F%23%25.sock?db=0");
  EXPECT_EQ(parse_url("unix:///s?username=a%26b%3Dc%2Bd").to_string(),
            "unix:///s?db=0&username=a%26b%3Dc%2Bd");
}

TEST(Url, RoundTripsThroughToString) {
  for (const auto* url : {
           "redis://localhost",
           "redis://h:1/0",
           "rediss://alice@cache.example.com:65535/9223372036854775807",
           "redis://us%40er%3Ax%2F%25%20@h",
           "redis://[::1]:6380/2",
           "redis://[fe80::1%25eth%230]/1",
           "redis://h%C3%A9%22:7/7",
           "redis://a!$&'()*+,;=b",
           "unix:///tmp/r.sock",
           "unix:///tmp/my%20dir/a&b=c%3F%23%25@:.sock?db=5&username=b%26o%3Db%2B%25",
           "redis://u:s3cret@h:1/2",
           "rediss://:s3cret@[::1]",
           "unix:///s?password=s3cret&db=2",
       }) {
    SCOPED_TRACE(url);
    auto ep = parse_url(url);
    const auto text = ep.to_string();
    EXPECT_FALSE(contains(text, "s3cret")) << text;
    const auto again = parse_url(text);
    if (ep.password)
      ep.password = "***";
    expect_same(again, ep);
    EXPECT_EQ(again.to_string(), text);
  }
}

// ------------------------------------------------------------- redact_url

TEST(Url, RedactParseableUrls) {
  EXPECT_EQ(redact_url("redis://user:s3cret@h"), "redis://user:***@h");
  EXPECT_EQ(redact_url("redis://:s3cret@h:1/2"), "redis://:***@h:1/2");
  EXPECT_EQ(redact_url("rediss://u:s3%40cr:et@[::1]:6380/2"), "rediss://u:***@[::1]:6380/2");
  EXPECT_EQ(redact_url("redis://u:p@ss@h"), "redis://u:***@h");
  EXPECT_EQ(redact_url("redis://alice@h"), "redis://alice@h");
  EXPECT_EQ(redact_url("redis://alice:@h"), "redis://alice:@h");
  EXPECT_EQ(redact_url("redis://h:6379/0"), "redis://h:6379/0");
  EXPECT_EQ(redact_url("unix:///s?db=1&password=s3cret&username=u"),
            "unix:///s?db=1&password=***&username=u");
  EXPECT_EQ(redact_url("unix:///tmp/a@b.sock?password=x@y"), "unix:///tmp/a@b.sock?password=***");
}

TEST(Url, RedactUnparsableUrls) {
  // The whole userinfo is masked: where the user name ends is uncertain.
  EXPECT_EQ(redact_url("redis://user:s3cret@h:0"), "redis://***@h:0");
  EXPECT_EQ(redact_url("redis://s3cret@h:x"), "redis://***@h:x");
  EXPECT_EQ(redact_url("http://u:s3cret@h"), "http://***@h");
  EXPECT_EQ(redact_url("redis:/u:s3cret@h"), "redis:/***@h");
  EXPECT_EQ(redact_url("u:s3cret@h"), "u:***@h");
  EXPECT_EQ(redact_url(":s3cret@h"), "***@h");
  EXPECT_EQ(redact_url(":a://s3cret@h"), "***@h");
  EXPECT_EQ(redact_url("redis://:s3cret%G1@h"), "redis://***@h");
  EXPECT_EQ(redact_url("redis://h?password=s3cret"), "redis://h?password=***");
  EXPECT_EQ(redact_url("unix:///s?password=s3&cret&db=x"), "unix:///s?password=***&db=x");
  EXPECT_EQ(redact_url("unix:///s?Password=s3cret&foo"), "unix:///s?Password=***");
  EXPECT_EQ(redact_url("unix://u:s3cret@/tmp/s"), "unix://***@/tmp/s");
  EXPECT_EQ(redact_url("no url at all"), "no url at all");
  EXPECT_EQ(redact_url(""), "");
}

TEST(Url, RedactNeverThrows) {
  const std::string with_nul("redis://u:s3\0cret@h", 19);
  for (const auto& url : {std::string("@"), std::string("://@"), std::string("?password="),
                          std::string("%"), std::string("unix://?password=&password=&"),
                          std::string("redis://[@]:@@:"), with_nul, std::string(10000, '@')}) {
    EXPECT_NO_THROW({
      const auto r = redact_url(url);
      EXPECT_FALSE(contains(r, "cret")) << r;
    });
  }
}

} // namespace

// The RESP codec: commands encoded with binary-safe arguments and decoded back,
// replies fed whole and byte by byte, garbage rejected for good.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <gtest/gtest.h>
#include <string>
#include <string_view>
#include <vector>

#include "redis/resp.hpp"

namespace {

using namespace ratesync::redis;
using namespace std::string_view_literals;

// Feeds all of `bytes` in pieces of `step` and collects every reply.
std::vector<reply_ptr> decode(std::string_view bytes, std::size_t step) {
  reply_reader reader;
  std::vector<reply_ptr> out;
  for (std::size_t i = 0; i < bytes.size(); i += step) {
    const auto n = std::min(step, bytes.size() - i);
    reader.feed(bytes.data() + i, n);
    while (auto r = reader.next())
      out.push_back(std::move(*r));
  }
  return out;
}

std::string_view str(const redisReply& r) {
  return {r.str, r.len};
}

// A command comes back from the reader as an array of bulk strings.
void expect_round_trip(const std::vector<std::string_view>& args) {
  const std::string encoded = encode_command(args);
  for (std::size_t step : {encoded.size(), std::size_t{1}, std::size_t{7}}) {
    if (step == 1 && encoded.size() > 100'000)
      step = 4096;
    auto replies = decode(encoded, step);
    ASSERT_EQ(replies.size(), 1u);
    const redisReply& r = *replies[0];
    ASSERT_EQ(r.type, REDIS_REPLY_ARRAY);
    ASSERT_EQ(r.elements, args.size());
    for (std::size_t i = 0; i < args.size(); ++i) {
      ASSERT_EQ(r.element[i]->type, REDIS_REPLY_STRING);
      EXPECT_EQ(str(*r.element[i]), args[i]) << "argument " << i;
    }
  }
}

TEST(Resp, EncodesTheRespArrayOfBulkStrings) {
  const std::vector<std::string_view> args{"SET", "k", "value"};
  EXPECT_EQ(encode_command(args), "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n");
}

TEST(Resp, AppendConcatenatesCommands) {
  std::string out = "prefix";
  const std::vector<std::string_view> a{"PING"};
  const std::vector<std::string_view> b{"GET", "x"};
  append_command(out, a);
  append_command(out, b);
  EXPECT_EQ(out, "prefix*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\nx\r\n");
}

TEST(Resp, EmptyCommandIsRejected) {
  const std::vector<std::string_view> none;
  EXPECT_THROW(encode_command(none), std::invalid_argument);
}

TEST(Resp, BinaryArgumentsRoundTrip) {
  const std::string nul("a\0b\0\0c", 6);
  const std::string crlf = "line\r\n$3\r\n*2\r\n";
  std::string all_bytes;
  for (int c = 0; c < 256; ++c)
    all_bytes.push_back(static_cast<char>(c));
  expect_round_trip({"EVALSHA", nul, "", crlf, all_bytes, std::string_view("\0", 1), ""});
}

// The encoder is ours (hiredis's formats lengths with sprintf, too slow);
// hiredis's redisFormatCommandArgv stays the oracle: same bytes for commands
// of 1-40 arguments of 0-300 random bytes, and for lengths with 1-7 digits.
TEST(Resp, EncoderMatchesHiredisByteForByte) {
  std::uint64_t seed = 0x9e3779b97f4a7c15ULL;
  auto next = [&] {
    seed ^= seed << 13;
    seed ^= seed >> 7;
    seed ^= seed << 17;
    return seed;
  };
  auto hiredis_encode = [](const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<std::size_t> lens;
    for (const auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    char* raw = nullptr;
    const int n =
        redisFormatCommandArgv(&raw, static_cast<int>(args.size()), argv.data(), lens.data());
    std::string out(raw, static_cast<std::size_t>(n));
    redisFreeCommand(raw);
    return out;
  };
  for (int round = 0; round < 2000; ++round) {
    std::vector<std::string> args(1 + next() % 40);
    for (auto& a : args) {
      a.resize(next() % 301);
      for (auto& c : a)
        c = static_cast<char>(next());
    }
    if (round < 7)
      args.back().assign(static_cast<std::size_t>(std::pow(10, round)), 'x');
    const std::vector<std::string_view> views(args.begin(), args.end());
    ASSERT_EQ(encode_command(views), hiredis_encode(args)) << "round " << round;
  }
}

TEST(Resp, EmptyArgumentIsEncodedAsEmptyBulk) {
  const std::vector<std::string_view> args{"SET", "", "v"};
  EXPECT_EQ(encode_command(args), "*3\r\n$3\r\nSET\r\n$0\r\n\r\n$1\r\nv\r\n");
  expect_round_trip(args);
}

TEST(Resp, OneMebibyteArgumentRoundTrips) {
  std::string big(1 << 20, '\0');
  for (std::size_t i = 0; i < big.size(); ++i)
    big[i] = static_cast<char>((i * 131) % 251);
  expect_round_trip({"SET", "big", big});
}

TEST(Resp, OneMebibyteBulkReplyDecodes) {
  // Larger than the reader's 16 KiB maxbuf, which only governs buffer reuse.
  const std::string payload(1 << 20, 'x');
  const std::string wire = "$" + std::to_string(payload.size()) + "\r\n" + payload + "\r\n";
  for (std::size_t step : {wire.size(), std::size_t{1000}, std::size_t{16 * 1024 + 3}}) {
    auto replies = decode(wire, step);
    ASSERT_EQ(replies.size(), 1u);
    ASSERT_EQ(replies[0]->type, REDIS_REPLY_STRING);
    EXPECT_EQ(replies[0]->len, payload.size());
    EXPECT_TRUE(str(*replies[0]) == payload);
  }
}

// Every reply kind, in one stream.
constexpr std::string_view kStream = "+OK\r\n"
                                     "-ERR wrong number of arguments\r\n"
                                     ":-42\r\n"
                                     ":9223372036854775807\r\n"
                                     "$5\r\nhe\0lo\r\n"
                                     "$0\r\n\r\n"
                                     "$-1\r\n"
                                     "*-1\r\n"
                                     "*0\r\n"
                                     "*3\r\n:1\r\n*2\r\n$1\r\na\r\n*1\r\n+deep\r\n$-1\r\n"
                                     "*4\r\n:1\r\n:0\r\n$8\r\n0.250000\r\n:1700000000123456\r\n"sv;

void check_stream(const std::vector<reply_ptr>& rs) {
  ASSERT_EQ(rs.size(), 11u);
  EXPECT_EQ(rs[0]->type, REDIS_REPLY_STATUS);
  EXPECT_EQ(reply_text(*rs[0]), "OK");

  EXPECT_EQ(rs[1]->type, REDIS_REPLY_ERROR);
  EXPECT_EQ(reply_text(*rs[1]), "ERR wrong number of arguments");

  EXPECT_EQ(rs[2]->type, REDIS_REPLY_INTEGER);
  EXPECT_EQ(rs[2]->integer, -42);
  EXPECT_EQ(rs[3]->integer, 9223372036854775807LL);

  EXPECT_EQ(rs[4]->type, REDIS_REPLY_STRING);
  EXPECT_EQ(str(*rs[4]), std::string_view("he\0lo", 5));
  EXPECT_EQ(reply_text(*rs[4]), ""); // not an error or status
  EXPECT_EQ(rs[5]->type, REDIS_REPLY_STRING);
  EXPECT_EQ(rs[5]->len, 0u);

  EXPECT_EQ(rs[6]->type, REDIS_REPLY_NIL);
  EXPECT_EQ(rs[7]->type, REDIS_REPLY_NIL); // nil array
  EXPECT_EQ(reply_text(*rs[6]), "");

  EXPECT_EQ(rs[8]->type, REDIS_REPLY_ARRAY);
  EXPECT_EQ(rs[8]->elements, 0u);

  const redisReply& nested = *rs[9];
  ASSERT_EQ(nested.type, REDIS_REPLY_ARRAY);
  ASSERT_EQ(nested.elements, 3u);
  EXPECT_EQ(nested.element[0]->integer, 1);
  const redisReply& inner = *nested.element[1];
  ASSERT_EQ(inner.type, REDIS_REPLY_ARRAY);
  ASSERT_EQ(inner.elements, 2u);
  EXPECT_EQ(str(*inner.element[0]), "a");
  ASSERT_EQ(inner.element[1]->type, REDIS_REPLY_ARRAY);
  ASSERT_EQ(inner.element[1]->elements, 1u);
  EXPECT_EQ(reply_text(*inner.element[1]->element[0]), "deep");
  EXPECT_EQ(nested.element[2]->type, REDIS_REPLY_NIL);

  // What a rate-limit script returns: a flat array, fractions as strings.
  const redisReply& lua = *rs[10];
  ASSERT_EQ(lua.type, REDIS_REPLY_ARRAY);
  ASSERT_EQ(lua.elements, 4u);
  EXPECT_EQ(lua.element[0]->integer, 1);
  EXPECT_EQ(lua.element[1]->integer, 0);
  EXPECT_EQ(str(*lua.element[2]), "0.250000");
  EXPECT_EQ(lua.element[3]->integer, 1700000000123456LL);
}

TEST(Resp, RepliesInOneChunk) {
  check_stream(decode(kStream, kStream.size()));
}

TEST(Resp, RepliesByteByByte) {
  check_stream(decode(kStream, 1));
}

TEST(Resp, RepliesInOddChunks) {
  for (std::size_t step = 2; step < 16; ++step)
    check_stream(decode(kStream, step));
}

TEST(Resp, NeedsMoreBytesGivesNullopt) {
  reply_reader reader;
  auto feed = [&](std::string_view s) { reader.feed(s.data(), s.size()); };
  EXPECT_FALSE(reader.next().has_value()); // nothing fed
  feed("$5\r\nhel");
  EXPECT_FALSE(reader.next().has_value());
  feed("lo\r");
  EXPECT_FALSE(reader.next().has_value());
  feed("\n");
  auto r = reader.next();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(str(**r), "hello");
  EXPECT_FALSE(reader.next().has_value());
  feed(""); // an empty read changes nothing
  EXPECT_FALSE(reader.next().has_value());
}

TEST(Resp, PartialReplyFreedWithTheReader) {
  // An array half received holds allocated elements: the reader frees them.
  reply_reader reader;
  const std::string_view half = "*3\r\n$3\r\nabc\r\n:7\r\n";
  reader.feed(half.data(), half.size());
  EXPECT_FALSE(reader.next().has_value());
}

TEST(Resp, GarbageIsAStickyProtocolError) {
  reply_reader reader;
  const std::string_view bad = "!!!\r\n";
  reader.feed(bad.data(), bad.size());
  EXPECT_THROW(reader.next(), protocol_error);
  // Sticky: valid bytes afterwards do not revive it.
  const std::string_view ok = "+OK\r\n";
  reader.feed(ok.data(), ok.size());
  EXPECT_THROW(reader.next(), protocol_error);
  EXPECT_THROW(reader.next(), protocol_error);
}

// Found by tests/fuzz/reply_fuzz: hiredis allocates an array's element
// pointers when the header arrives, so these 13 bytes alone made it allocate
// 16 GiB. A header over reply_reader::max_array_elements is refused at once.
TEST(Resp, HugeArrayHeaderIsAProtocolErrorNotAnAllocation) {
  for (std::string_view wire : {"*2147483647\r\n"sv, "*2\r\n:1\r\n*1048577\r\n"sv}) {
    reply_reader reader;
    reader.feed(wire.data(), wire.size());
    try {
      reader.next();
      ADD_FAILURE() << "no protocol_error for " << wire;
    } catch (const protocol_error& e) {
      EXPECT_NE(std::string_view(e.what()).find("elements (more than 1048576)"),
                std::string_view::npos)
          << e.what();
    }
    EXPECT_THROW(reader.next(), protocol_error); // sticky, like any protocol error
  }
  // At the limit the header is accepted and the elements awaited.
  reply_reader reader;
  const std::string_view at_limit = "*1048576\r\n:1\r\n";
  reader.feed(at_limit.data(), at_limit.size());
  EXPECT_FALSE(reader.next().has_value());
}

TEST(Resp, GarbageAfterGoodRepliesAndMidArray) {
  reply_reader reader;
  const std::string_view wire = "+OK\r\n*2\r\n:1\r\n?bad\r\n";
  reader.feed(wire.data(), wire.size());
  auto first = reader.next();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(reply_text(**first), "OK");
  try {
    (void)reader.next();
    FAIL() << "expected protocol_error";
  } catch (const protocol_error& e) {
    EXPECT_NE(std::string(e.what()), "");
  }
  EXPECT_THROW(reader.next(), protocol_error);
}

TEST(Resp, BadLengthIsAProtocolError) {
  reply_reader reader;
  const std::string_view wire = "$abc\r\n";
  reader.feed(wire.data(), wire.size());
  EXPECT_THROW(reader.next(), protocol_error);
}

TEST(Resp, ManyRepliesInOneFeed) {
  std::string wire;
  for (int i = 0; i < 10'000; ++i)
    wire += ":" + std::to_string(i) + "\r\n";
  auto rs = decode(wire, wire.size());
  ASSERT_EQ(rs.size(), 10'000u);
  for (int i = 0; i < 10'000; ++i)
    ASSERT_EQ(rs[static_cast<std::size_t>(i)]->integer, i);
}

} // namespace

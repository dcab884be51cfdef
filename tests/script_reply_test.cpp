// The scripts' replies as the redis engine reads them (src/redis/script_reply):
// the real shapes decode to what each script means; an error reply, a wrong
// shape or a value no script returns is a store_error naming the store and
// the script, never a crash or a wait of centuries.
#include <gtest/gtest.h>
#include <string>
#include <string_view>

#include "redis/resp.hpp"
#include "redis/script_reply.hpp"

namespace {

using namespace ratesync::redis;
using ratesync::store_error;

// One reply from RESP bytes, as the connection's reader would hand it over.
reply_ptr parse(std::string_view bytes) {
  reply_reader reader;
  reader.feed(bytes.data(), bytes.size());
  auto r = reader.next();
  if (!r)
    throw std::runtime_error("incomplete reply in test");
  return std::move(*r);
}

// The store_error's message for `bytes` as a reply to `script`, or a failure.
std::string decision_error(std::string_view bytes, decision_script script) {
  reply_ptr r = parse(bytes);
  try {
    decode_decision("main", script, *r);
  } catch (const store_error& e) {
    EXPECT_EQ(e.store(), "main");
    EXPECT_FALSE(e.circuit_open());
    return e.what();
  }
  ADD_FAILURE() << "no store_error for " << testing::PrintToString(std::string(bytes));
  return {};
}

std::string state_error(std::string_view bytes) {
  reply_ptr r = parse(bytes);
  try {
    decode_state("main", *r, false, 0);
  } catch (const store_error& e) {
    EXPECT_EQ(e.store(), "main");
    return e.what();
  }
  ADD_FAILURE() << "no store_error for " << testing::PrintToString(std::string(bytes));
  return {};
}

TEST(ScriptReply, TokenBucketAdmittedAtAReservedTime) {
  reply_ptr r = parse("*3\r\n:1\r\n:2500\r\n:1700000000002500\r\n");
  const decision d = decode_decision("main", decision_script::token_bucket, *r);
  EXPECT_EQ(d.status, decision::verdict::admitted);
  EXPECT_EQ(d.wait_us, 2500);
  EXPECT_EQ(d.reserved, 1700000000002500);
}

TEST(ScriptReply, RefusalCarriesItsRetryAfter) {
  for (auto script : {decision_script::token_bucket, decision_script::sliding_window}) {
    for (const std::string_view bytes : {"*3\r\n:0\r\n:999999\r\n:0\r\n", ":-999999\r\n"}) {
      reply_ptr r = parse(bytes);
      const decision d = decode_decision("main", script, *r);
      EXPECT_EQ(d.status, decision::verdict::refused);
      EXPECT_EQ(d.wait_us, 999999);
    }
  }
  // The longest retry-after in short form is 100 years.
  reply_ptr r = parse(":-3153600000000000\r\n");
  EXPECT_EQ(decode_decision("main", decision_script::token_bucket, *r).wait_us, longest_reply_us);
}

TEST(ScriptReply, ZeroIsAdmittedNowByEveryScript) {
  for (auto script : {decision_script::token_bucket, decision_script::sliding_window,
                      decision_script::concurrency}) {
    reply_ptr r = parse(":0\r\n");
    const decision d = decode_decision("main", script, *r);
    EXPECT_EQ(d.status, decision::verdict::admitted);
    EXPECT_EQ(d.wait_us, 0);
    EXPECT_EQ(d.reserved, 0);
  }
}

TEST(ScriptReply, EverySlotLeased) {
  for (auto script : {decision_script::token_bucket, decision_script::sliding_window,
                      decision_script::concurrency}) {
    reply_ptr r = parse("*3\r\n:2\r\n:0\r\n:0\r\n");
    EXPECT_EQ(decode_decision("main", script, *r).status, decision::verdict::no_slot);
  }
  reply_ptr leased = parse("*3\r\n:1\r\n:0\r\n:0\r\n");
  const decision d = decode_decision("main", decision_script::concurrency, *leased);
  EXPECT_EQ(d.status, decision::verdict::admitted);
  EXPECT_EQ(d.wait_us, 0);
}

TEST(ScriptReply, ErrorReplyNamesTheScriptAndTheServersText) {
  const std::string what =
      decision_error("-ERR user_script:1: Script attempted to access nonexistent global\r\n",
                     decision_script::sliding_window);
  EXPECT_NE(what.find("Redis refused sliding_window: ERR user_script:1"), std::string::npos)
      << what;
}

TEST(ScriptReply, WrongShapesAreStoreErrorsSayingWhatCame) {
  const auto tb = decision_script::token_bucket;
  struct wrong {
    std::string_view bytes;
    std::string_view says;
  };
  const wrong cases[] = {
      {":1\r\n", "the integer 1 (expected 0 or a negative wait)"},
      {":-3153600000000001\r\n", "the integer -3153600000000001 (a retry-after (us) out of range"},
      {":-9223372036854775808\r\n", "the integer -9223372036854775808 (a retry-after"},
      {"$-1\r\n", "got a nil"},
      {"*-1\r\n", "got a nil"},
      {"+OK\r\n", "got a status reply"},
      {"$5\r\nhello\r\n", "got a bulk string of 5 bytes"},
      {"*0\r\n", "got an array of 0 elements"},
      {"*2\r\n:1\r\n:0\r\n", "got an array of 2 elements"},
      {"*4\r\n:1\r\n:0\r\n:0\r\n:0\r\n", "got an array of 4 elements"},
      {"*3\r\n:1\r\n$1\r\n5\r\n:0\r\n", "element 2 is a bulk string of 1 bytes"},
      {"*3\r\n:1\r\n:0\r\n*1\r\n:0\r\n", "element 3 is an array of 1 elements"},
      {"*3\r\n$-1\r\n:0\r\n:0\r\n", "element 1 is a nil"},
      {"*3\r\n-ERR x\r\n:0\r\n:0\r\n", "element 1 is an error reply"},
      {"*3\r\n:3\r\n:0\r\n:0\r\n", "status 3 (expected 0, 1 or 2)"},
      {"*3\r\n:-1\r\n:0\r\n:0\r\n", "status -1 (expected 0, 1 or 2)"},
      {"*3\r\n:1\r\n:-5\r\n:0\r\n", "wait (us) -5 out of range"},
      {"*3\r\n:0\r\n:-9223372036854775808\r\n:0\r\n", "out of range"},
      // 100 years and one microsecond: would overflow nanoseconds plus a margin.
      {"*3\r\n:1\r\n:3153600000000001\r\n:0\r\n", "wait (us) 3153600000000001 out of range"},
  };
  for (const auto& c : cases) {
    const std::string what = decision_error(c.bytes, tb);
    EXPECT_NE(what.find("unexpected reply to token_bucket"), std::string::npos) << what;
    EXPECT_NE(what.find(c.says), std::string::npos)
        << testing::PrintToString(std::string(c.bytes)) << " gave: " << what;
  }
  // The longest accepted wait is exactly 100 years.
  reply_ptr r = parse("*3\r\n:1\r\n:3153600000000000\r\n:0\r\n");
  EXPECT_EQ(decode_decision("main", tb, *r).wait_us, longest_reply_us);
}

TEST(ScriptReply, ConcurrencyScriptNeverRefusesByRate) {
  const std::string what =
      decision_error("*3\r\n:0\r\n:100\r\n:0\r\n", decision_script::concurrency);
  EXPECT_NE(what.find("unexpected reply to concurrency: status 0"), std::string::npos) << what;
  const std::string short_form = decision_error(":-100\r\n", decision_script::concurrency);
  EXPECT_NE(short_form.find("unexpected reply to concurrency: the integer -100 (expected 0)"),
            std::string::npos)
      << short_form;
}

TEST(ScriptReply, StateOfARateLimiter) {
  reply_ptr r = parse("*4\r\n:3\r\n:0\r\n:400000\r\n:2\r\n");
  const auto st = decode_state("main", *r, false, 5);
  EXPECT_EQ(st.remaining, 3);
  EXPECT_EQ(st.retry_after.count(), 0);
  EXPECT_EQ(st.reset_after.count(), 400000);
  EXPECT_EQ(st.current_concurrent, 2);
}

TEST(ScriptReply, StateOfAConcurrencyLimiterCountsFreeSlots) {
  reply_ptr r = parse("*4\r\n:0\r\n:0\r\n:0\r\n:2\r\n");
  EXPECT_EQ(decode_state("main", *r, true, 5).remaining, 3);
  // More leases than this limiter's slots (another process configured more):
  // nothing remains, never a negative count.
  reply_ptr over = parse("*4\r\n:0\r\n:0\r\n:0\r\n:7\r\n");
  const auto st = decode_state("main", *over, true, 5);
  EXPECT_EQ(st.remaining, 0);
  EXPECT_EQ(st.current_concurrent, 7);
}

TEST(ScriptReply, WrongStateRepliesAreStoreErrors) {
  struct wrong {
    std::string_view bytes;
    std::string_view says;
  };
  const wrong cases[] = {
      {"*3\r\n:0\r\n:0\r\n:0\r\n", "expected an array of 4 integers, got an array of 3"},
      {"*4\r\n:0\r\n:0\r\n:0\r\n$1\r\n1\r\n", "element 4 is a bulk string"},
      {"*4\r\n:-1\r\n:0\r\n:0\r\n:0\r\n", "remaining -1 out of range"},
      {"*4\r\n:0\r\n:-1\r\n:0\r\n:0\r\n", "retry_after (us) -1 out of range"},
      {"*4\r\n:0\r\n:0\r\n:9223372036854775807\r\n:0\r\n", "reset_after (us)"},
      {"*4\r\n:0\r\n:0\r\n:0\r\n:-9223372036854775808\r\n", "leases held"},
      {"-NOSCRIPT No matching script\r\n", "Redis refused state: NOSCRIPT"},
  };
  for (const auto& c : cases) {
    const std::string what = state_error(c.bytes);
    EXPECT_NE(what.find(c.says), std::string::npos)
        << testing::PrintToString(std::string(c.bytes)) << " gave: " << what;
  }
}

} // namespace

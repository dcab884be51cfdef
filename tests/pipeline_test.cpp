// The request queue without a socket: batching, FIFO reply matching,
// cancellation before and after the write, deadlines, disconnects, and
// "every request completes exactly once" under a random mix of all of them.
#include <algorithm>
#include <functional>
#include <gtest/gtest.h>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "redis/errors.hpp"
#include "redis/pipeline.hpp"

namespace {

using namespace ratesync::redis;
using steady = std::chrono::steady_clock;
using time_point = steady::time_point;
using std::chrono::seconds;
using state = request::state;

const time_point t0 = time_point{} + std::chrono::hours(1);
const std::error_code cancelled = std::make_error_code(std::errc::operation_canceled);

// Records its completions; never completed more than once in a correct run.
class test_request : public request {
public:
  explicit test_request(std::string payload, time_point deadline = time_point::max(),
                        bool background = false)
      : request(std::move(payload), deadline, background) {}

  int completions = 0;
  std::error_code ec;
  reply_ptr reply;
  state state_seen = state::idle; // current() as complete() saw it
  std::function<void()> on_complete;

protected:
  void complete(std::error_code e, reply_ptr r) override {
    ++completions;
    ec = e;
    reply = std::move(r);
    state_seen = current();
    if (on_complete)
      on_complete();
  }
};

reply_ptr integer_reply(long long v) {
  reply_reader reader;
  const std::string wire = ":" + std::to_string(v) + "\r\n";
  reader.feed(wire.data(), wire.size());
  auto r = reader.next();
  return std::move(r.value());
}

void expect_reply(const test_request& r, long long v) {
  EXPECT_EQ(r.completions, 1);
  EXPECT_FALSE(r.ec) << r.ec.message();
  ASSERT_NE(r.reply, nullptr);
  EXPECT_EQ(r.reply->type, REDIS_REPLY_INTEGER);
  EXPECT_EQ(r.reply->integer, v);
  EXPECT_EQ(r.current(), state::done);
  EXPECT_EQ(r.state_seen, state::done);
}

void expect_failed(const test_request& r, std::error_code ec) {
  EXPECT_EQ(r.completions, 1);
  EXPECT_EQ(r.ec, ec);
  EXPECT_EQ(r.reply, nullptr);
  EXPECT_EQ(r.current(), state::done);
}

TEST(TransportErrors, CategoryAndMessages) {
  EXPECT_STREQ(transport_category().name(), "ratesync.redis");
  std::set<std::string> messages;
  for (int e = static_cast<int>(errc::timeout); e <= static_cast<int>(errc::shutting_down); ++e) {
    const std::error_code ec = static_cast<errc>(e);
    EXPECT_EQ(&ec.category(), &transport_category());
    EXPECT_FALSE(ec.message().empty());
    messages.insert(ec.message());
  }
  EXPECT_EQ(messages.size(), 9u); // one distinct message per errc
  EXPECT_FALSE(transport_category().message(999).empty());
  const std::error_code timeout = errc::timeout;
  EXPECT_TRUE(timeout == std::errc::timed_out);
  EXPECT_FALSE(std::error_code(errc::connection_lost) == std::errc::timed_out);
  EXPECT_TRUE(timeout == errc::timeout);
}

TEST(Pipeline, BatchesEverythingWaiting) {
  pipeline p;
  test_request a("AAA"), b("B"), c("CC");
  EXPECT_FALSE(p.has_waiting());
  EXPECT_EQ(p.take_write_batch(), "");
  p.push(a);
  p.push(b);
  p.push(c);
  EXPECT_EQ(a.current(), state::waiting);
  EXPECT_TRUE(p.has_waiting());
  EXPECT_EQ(p.size(), 3u);
  EXPECT_EQ(p.in_flight(), 0u);

  EXPECT_EQ(p.take_write_batch(), "AAABCC");
  for (auto* r : {&a, &b, &c}) {
    EXPECT_EQ(r->current(), state::written);
    EXPECT_EQ(r->completions, 0);
  }
  EXPECT_FALSE(p.has_waiting());
  EXPECT_EQ(p.in_flight(), 3u);
  EXPECT_EQ(p.size(), 3u);
  EXPECT_EQ(p.take_write_batch(), ""); // nothing written twice
}

// load() is size() without the background requests (releases nobody waits
// for), however each of them leaves: reply, cancellation, deadline,
// disconnect.
TEST(Pipeline, BackgroundRequestsAreNotLoad) {
  pipeline p;
  test_request a("a"), bg1("1", time_point::max(), true), bg2("2", t0, true),
      bg3("3", time_point::max(), true), bg4("4", time_point::max(), true);
  p.push(a);
  p.push(bg1);
  p.push(bg2);
  EXPECT_EQ(p.size(), 3u);
  EXPECT_EQ(p.load(), 1u);
  (void)p.take_write_batch();
  p.push(bg3);
  p.push(bg4);
  EXPECT_EQ(p.load(), 1u);
  EXPECT_TRUE(p.on_reply(integer_reply(1))); // a
  EXPECT_EQ(p.load(), 0u);
  EXPECT_TRUE(p.on_reply(integer_reply(1))); // bg1
  EXPECT_EQ(p.size(), 3u);
  EXPECT_EQ(p.load(), 0u);
  (void)p.expire(t0 + seconds(1)); // bg2 (written) times out
  p.cancel(bg3, cancelled);        // waiting
  EXPECT_EQ(p.load(), 1u) << "bg2's place stays (its reply may come) and counts as load";
  test_request b("b");
  p.push(b);
  EXPECT_EQ(p.load(), 2u);
  p.on_disconnect(cancelled, true);
  EXPECT_EQ(p.size(), 0u);
  EXPECT_EQ(p.load(), 0u);
  for (auto* r : {&a, &bg1, &bg2, &bg3, &bg4, &b})
    EXPECT_EQ(r->completions, 1);
}

TEST(Pipeline, RepliesMatchInWriteOrder) {
  pipeline p;
  test_request a("a"), b("b"), c("c"), d("d");
  p.push(a);
  p.push(b);
  (void)p.take_write_batch();
  p.push(c);
  p.push(d);
  EXPECT_EQ(p.take_write_batch(), "cd");

  EXPECT_TRUE(p.on_reply(integer_reply(1)));
  expect_reply(a, 1);
  EXPECT_EQ(b.completions, 0);
  EXPECT_TRUE(p.on_reply(integer_reply(2)));
  EXPECT_TRUE(p.on_reply(integer_reply(3)));
  EXPECT_TRUE(p.on_reply(integer_reply(4)));
  expect_reply(b, 2);
  expect_reply(c, 3);
  expect_reply(d, 4);
  EXPECT_EQ(p.size(), 0u);
  EXPECT_FALSE(p.on_reply(integer_reply(5)));
}

TEST(Pipeline, ReplyWithNothingExpectingIsRefused) {
  pipeline p;
  EXPECT_FALSE(p.on_reply(integer_reply(1)));
  test_request a("a");
  p.push(a); // waiting, not written: no reply can be for it
  EXPECT_FALSE(p.on_reply(integer_reply(1)));
  EXPECT_EQ(a.completions, 0);
  EXPECT_EQ(a.current(), state::waiting);
}

TEST(Pipeline, CancelWhileWaitingRemovesIt) {
  pipeline p;
  test_request a("a"), b("b"), c("c");
  p.push(a);
  p.push(b);
  p.push(c);
  p.cancel(b, cancelled);
  expect_failed(b, cancelled);
  EXPECT_EQ(p.size(), 2u);
  EXPECT_EQ(p.take_write_batch(), "ac");
  EXPECT_TRUE(p.on_reply(integer_reply(1)));
  EXPECT_TRUE(p.on_reply(integer_reply(2)));
  expect_reply(a, 1);
  expect_reply(c, 2);
  EXPECT_EQ(b.completions, 1);
}

TEST(Pipeline, CancellingEverythingWaitingLeavesNothingToWrite) {
  pipeline p;
  test_request a("a"), b("b");
  p.push(a);
  p.push(b);
  p.cancel(b, cancelled);
  p.cancel(a, cancelled);
  EXPECT_FALSE(p.has_waiting());
  EXPECT_EQ(p.size(), 0u);
  EXPECT_EQ(p.take_write_batch(), "");
  expect_failed(a, cancelled);
  expect_failed(b, cancelled);
}

TEST(Pipeline, CancelAfterWriteAbandonsAndDiscardsItsReply) {
  pipeline p;
  test_request a("a"), b("b"), c("c");
  p.push(a);
  p.push(b);
  p.push(c);
  (void)p.take_write_batch();
  p.cancel(b, cancelled);
  expect_failed(b, cancelled);  // completed at once, not when its reply comes
  EXPECT_EQ(p.in_flight(), 3u); // its reply is still expected

  EXPECT_TRUE(p.on_reply(integer_reply(1)));
  expect_reply(a, 1);
  EXPECT_TRUE(p.on_reply(integer_reply(2))); // b's: dropped
  EXPECT_EQ(b.completions, 1);
  EXPECT_EQ(b.reply, nullptr);
  EXPECT_EQ(c.completions, 0);
  EXPECT_TRUE(p.on_reply(integer_reply(3))); // the next one goes to c
  expect_reply(c, 3);
  EXPECT_FALSE(p.on_reply(integer_reply(4)));
}

TEST(Pipeline, CancelOfTheOldestWrittenSkipsExactlyOneReply) {
  pipeline p;
  test_request a("a"), b("b");
  p.push(a);
  p.push(b);
  (void)p.take_write_batch();
  p.cancel(a, cancelled);
  EXPECT_TRUE(p.on_reply(integer_reply(1)));
  EXPECT_EQ(b.completions, 0);
  EXPECT_TRUE(p.on_reply(integer_reply(2)));
  expect_reply(b, 2);
}

TEST(Pipeline, CancelIsHarmlessTwiceAndAfterCompletion) {
  pipeline p;
  test_request idle("i"), a("a"), b("b"), c("c");
  p.cancel(idle, cancelled); // never queued
  EXPECT_EQ(idle.completions, 0);
  EXPECT_EQ(idle.current(), state::idle);

  p.push(a);
  p.push(b);
  p.push(c);
  p.cancel(a, cancelled);
  p.cancel(a, cancelled);
  (void)p.take_write_batch();
  p.cancel(b, cancelled);
  p.cancel(b, cancelled);
  p.cancel(a, cancelled);
  EXPECT_TRUE(p.on_reply(integer_reply(1))); // b's, discarded
  EXPECT_TRUE(p.on_reply(integer_reply(2)));
  expect_reply(c, 2);
  p.cancel(c, cancelled); // already completed by its reply
  p.cancel(b, cancelled);
  expect_reply(c, 2);
  expect_failed(a, cancelled);
  expect_failed(b, cancelled);
}

TEST(Pipeline, CancelKeepsTheGivenErrorCode) {
  pipeline p;
  test_request a("a");
  p.push(a);
  p.cancel(a, errc::shutting_down);
  expect_failed(a, errc::shutting_down);
}

TEST(Pipeline, PushingAQueuedRequestIsALogicError) {
  pipeline p;
  test_request a("a");
  p.push(a);
  EXPECT_THROW(p.push(a), std::logic_error);
  (void)p.take_write_batch();
  EXPECT_THROW(p.push(a), std::logic_error);
  EXPECT_EQ(p.size(), 1u);
  EXPECT_TRUE(p.on_reply(integer_reply(1)));
  expect_reply(a, 1);
  // Once done it may be queued again (a retry with the same object).
  p.push(a);
  EXPECT_EQ(p.take_write_batch(), "a");
  EXPECT_TRUE(p.on_reply(integer_reply(2)));
  EXPECT_EQ(a.completions, 2);
  EXPECT_EQ(a.reply->integer, 2);
}

TEST(Pipeline, ExpireTimesOutWaitingAndWritten) {
  pipeline p;
  test_request a("a", t0 + seconds(1)), b("b", t0 + seconds(2)), c("c", t0 + seconds(3)),
      d("d", t0 + seconds(4));
  EXPECT_EQ(p.expire(t0), time_point::max());
  p.push(a);
  p.push(b);
  (void)p.take_write_batch();
  p.push(c);
  p.push(d);

  EXPECT_EQ(p.expire(t0), t0 + seconds(1));
  for (auto* r : {&a, &b, &c, &d})
    EXPECT_EQ(r->completions, 0);

  EXPECT_EQ(p.expire(t0 + seconds(1)), t0 + seconds(2)); // the deadline itself has passed
  expect_failed(a, errc::timeout);
  EXPECT_EQ(b.completions, 0);

  EXPECT_EQ(p.expire(t0 + seconds(3)), t0 + seconds(4));
  expect_failed(b, errc::timeout); // written
  expect_failed(c, errc::timeout); // waiting
  EXPECT_EQ(d.completions, 0);
  EXPECT_EQ(p.in_flight(), 2u); // a's and b's replies are still owed
  EXPECT_EQ(p.take_write_batch(), "d");

  EXPECT_TRUE(p.on_reply(integer_reply(1))); // a's: dropped
  EXPECT_TRUE(p.on_reply(integer_reply(2))); // b's: dropped
  EXPECT_EQ(d.completions, 0);
  EXPECT_TRUE(p.on_reply(integer_reply(4)));
  expect_reply(d, 4);
  EXPECT_EQ(a.completions, 1);
  EXPECT_EQ(b.completions, 1);
  EXPECT_EQ(p.expire(t0 + seconds(100)), time_point::max());
}

TEST(Pipeline, ExpireReturnsTheEarliestPendingDeadline) {
  pipeline p;
  test_request a("a", t0 + seconds(5)), b("b", t0 + seconds(7));
  p.push(a);
  p.push(b);
  EXPECT_EQ(p.expire(t0), t0 + seconds(5));
  p.cancel(a, cancelled);
  EXPECT_EQ(p.expire(t0), t0 + seconds(7));
  (void)p.take_write_batch();
  EXPECT_EQ(p.expire(t0), t0 + seconds(7));
  EXPECT_TRUE(p.on_reply(integer_reply(1)));
  EXPECT_EQ(p.expire(t0), time_point::max());
}

TEST(Pipeline, ExpireSkipsAbandonedWrittenRequests) {
  pipeline p;
  test_request a("a", t0 + seconds(1)), b("b", t0 + seconds(2));
  p.push(a);
  p.push(b);
  (void)p.take_write_batch();
  p.cancel(a, cancelled);
  EXPECT_EQ(p.expire(t0 + seconds(1)), t0 + seconds(2));
  EXPECT_EQ(a.completions, 1);
  EXPECT_EQ(a.ec, cancelled);
  EXPECT_EQ(p.expire(t0 + seconds(2)), time_point::max());
  expect_failed(b, errc::timeout);
}

TEST(Pipeline, ExpireWithDeadlinesOutOfOrderIsNeverEarly) {
  // Push order promises non-decreasing deadlines; if it is broken, a request
  // may expire late but never before its deadline, and never twice.
  std::mt19937 rng(7);
  for (int round = 0; round < 50; ++round) {
    pipeline p;
    std::vector<std::unique_ptr<test_request>> rs;
    for (int i = 0; i < 20; ++i) {
      rs.push_back(std::make_unique<test_request>(
          "x", t0 + seconds(std::uniform_int_distribution<int>(1, 30)(rng))));
      p.push(*rs.back());
      if (i % 7 == 6)
        (void)p.take_write_batch();
    }
    time_point now = t0;
    for (int step = 0; step < 40; ++step) {
      now += seconds(1);
      const time_point next = p.expire(now);
      EXPECT_GT(next, now);
      for (const auto& r : rs) {
        EXPECT_LE(r->completions, 1);
        if (r->completions == 1) {
          EXPECT_LE(r->deadline(), now);
        }
      }
    }
    for (const auto& r : rs)
      expect_failed(*r, errc::timeout); // all late at the latest by t0 + 40s
  }
}

TEST(Pipeline, DisconnectFailsWrittenKeepsWaiting) {
  pipeline p;
  test_request a("a"), b("b"), c("c"), d("d");
  p.push(a);
  p.push(b);
  (void)p.take_write_batch();
  p.push(c);
  p.push(d);
  p.cancel(a, cancelled); // abandoned: already completed, just dropped
  p.cancel(d, cancelled);

  p.on_disconnect(errc::connection_lost, false);
  expect_failed(a, cancelled);
  expect_failed(b, errc::connection_lost);
  EXPECT_EQ(c.completions, 0);
  EXPECT_EQ(c.current(), state::waiting);
  EXPECT_EQ(p.in_flight(), 0u);
  EXPECT_EQ(p.size(), 1u);
  EXPECT_FALSE(p.on_reply(integer_reply(9))); // nothing is owed on the new connection

  // The next connection writes what survived, never the failed ones.
  EXPECT_EQ(p.take_write_batch(), "c");
  EXPECT_TRUE(p.on_reply(integer_reply(3)));
  expect_reply(c, 3);
}

TEST(Pipeline, DisconnectWithFailWaitingFailsEverything) {
  pipeline p;
  test_request a("a"), b("b"), c("c");
  p.push(a);
  (void)p.take_write_batch();
  p.push(b);
  p.push(c);
  p.cancel(b, cancelled);
  p.on_disconnect(errc::shutting_down, true);
  expect_failed(a, errc::shutting_down);
  expect_failed(b, cancelled);
  expect_failed(c, errc::shutting_down);
  EXPECT_EQ(p.size(), 0u);
  EXPECT_FALSE(p.has_waiting());
  EXPECT_EQ(p.take_write_batch(), "");
  p.on_disconnect(errc::connection_lost, true); // nothing left: no-op
  EXPECT_EQ(a.completions, 1);
}

TEST(Pipeline, CompletionMayCallBackIntoThePipeline) {
  pipeline p;
  test_request a("a"), b("b"), c("c"), retry("r");
  p.push(a);
  p.push(b);
  (void)p.take_write_batch();
  p.push(c);
  // a's completion cancels b (already being failed) and c, and queues a retry.
  a.on_complete = [&] {
    p.cancel(b, cancelled);
    p.cancel(c, cancelled);
    p.push(retry);
  };
  p.on_disconnect(errc::connection_lost, false);
  expect_failed(a, errc::connection_lost);
  expect_failed(b, errc::connection_lost);
  expect_failed(c, cancelled);
  EXPECT_EQ(p.take_write_batch(), "r");
  EXPECT_TRUE(p.on_reply(integer_reply(1)));
  expect_reply(retry, 1);
}

// Deletes itself when completed, as a coroutine frame owning it might.
class self_deleting : public request {
public:
  self_deleting(std::string payload, int& completed, time_point deadline = time_point::max())
      : request(std::move(payload), deadline), completed_(completed) {}

protected:
  void complete(std::error_code, reply_ptr) override {
    ++completed_;
    delete this;
  }

private:
  int& completed_;
};

TEST(Pipeline, RequestMayDeleteItselfOnCompletion) {
  pipeline p;
  int completed = 0;
  auto* a = new self_deleting("a", completed, t0);
  auto* b = new self_deleting("b", completed);
  auto* c = new self_deleting("c", completed);
  auto* d = new self_deleting("d", completed);
  auto* e = new self_deleting("e", completed);
  auto* f = new self_deleting("f", completed);
  p.push(*a);
  p.push(*b);
  p.push(*c);
  p.push(*d);
  (void)p.take_write_batch();
  p.push(*e);
  p.push(*f);
  EXPECT_EQ(p.expire(t0), time_point::max()); // a abandoned and deleted
  p.cancel(*c, cancelled);                    // abandoned and deleted; its slot stays
  p.cancel(*e, cancelled);                    // removed and deleted
  EXPECT_EQ(completed, 3);
  EXPECT_TRUE(p.on_reply(integer_reply(1))); // a's slot
  EXPECT_TRUE(p.on_reply(integer_reply(2))); // b
  EXPECT_TRUE(p.on_reply(integer_reply(3))); // c's slot
  EXPECT_EQ(completed, 4);
  p.on_disconnect(errc::connection_lost, true); // d and f failed
  EXPECT_EQ(completed, 6);
  EXPECT_EQ(p.size(), 0u);
}

// The server of the stress test: reads the ids out of each batch and answers
// each with its id, so a misrouted reply is caught.
TEST(Pipeline, TenThousandRequestsWithCancelsCompleteExactlyOnce) {
  constexpr int total = 10'000;
  std::mt19937 rng(12345);
  pipeline p;
  std::vector<std::unique_ptr<test_request>> rs;
  std::vector<long long> server; // ids written and not yet answered, in order
  int next_id = 0;
  time_point now = t0;
  auto chance = [&](int percent) {
    return std::uniform_int_distribution<int>(0, 99)(rng) < percent;
  };

  while (next_id < total || p.size() > 0) {
    if (next_id < total && chance(60)) {
      const int id = next_id++;
      rs.push_back(std::make_unique<test_request>(std::to_string(id) + ";", now + seconds(1),
                                                  /*background=*/id % 3 == 0));
      p.push(*rs.back());
    }
    ASSERT_LE(p.load(), p.size());
    if (chance(25) && !rs.empty()) {
      // Any recent request: waiting, written, completed or abandoned.
      const auto back =
          std::uniform_int_distribution<std::size_t>(1, std::min<std::size_t>(rs.size(), 30))(rng);
      auto& r = *rs[rs.size() - back];
      p.cancel(r, cancelled);
    }
    if (chance(20)) {
      const std::string batch = p.take_write_batch();
      std::size_t pos = 0;
      while (pos < batch.size()) {
        const auto end = batch.find(';', pos);
        server.push_back(std::stoll(batch.substr(pos, end - pos)));
        pos = end + 1;
      }
    }
    if (chance(45) && !server.empty()) {
      const auto n = std::uniform_int_distribution<std::size_t>(1, server.size())(rng);
      for (std::size_t i = 0; i < n; ++i) {
        ASSERT_TRUE(p.on_reply(integer_reply(server.front())));
        server.erase(server.begin());
      }
    }
    if (chance(2)) {
      p.on_disconnect(errc::connection_lost, chance(30));
      server.clear(); // replies of the old connection never arrive
    }
    if (chance(10)) {
      now += seconds(1);
      (void)p.expire(now);
    }
    ASSERT_EQ(p.in_flight(), server.size());
    if (next_id >= total && chance(10))
      p.on_disconnect(errc::shutting_down, true);
  }
  EXPECT_EQ(p.load(), 0u) << "a background request left without being counted out";
  EXPECT_FALSE(p.on_reply(integer_reply(0)));

  int replied = 0;
  std::map<std::string, int> failures; // by cause: every path must be taken
  for (std::size_t id = 0; id < rs.size(); ++id) {
    const auto& r = *rs[id];
    ASSERT_EQ(r.completions, 1) << "request " << id;
    ASSERT_EQ(r.current(), state::done);
    if (r.reply) {
      ++replied;
      ASSERT_FALSE(r.ec);
      ASSERT_EQ(r.reply->integer, static_cast<long long>(id))
          << "reply routed to the wrong request";
    } else {
      ASSERT_TRUE(r.ec);
      ++failures[r.ec.message()];
    }
  }
  EXPECT_EQ(rs.size(), static_cast<std::size_t>(total));
  EXPECT_GT(replied, 1000);
  for (const std::error_code ec :
       {cancelled, std::error_code(errc::connection_lost), std::error_code(errc::timeout)})
    EXPECT_GT(failures[ec.message()], 10) << ec.message();
  int failed = 0;
  for (const auto& [cause, n] : failures)
    failed += n;
  EXPECT_EQ(replied + failed, total);
  for (const auto& [cause, n] : failures)
    std::cout << "  " << n << " " << cause << "\n";
  std::cout << "  " << replied << " replied\n";
}

} // namespace

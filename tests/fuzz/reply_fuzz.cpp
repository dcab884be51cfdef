// Fuzzes the reply path: bytes as if from a Redis server, through what the
// connection's reader does with them (reply_reader, then the pipeline that
// hands each reply to the oldest written request), into the decoders of every
// script's reply (src/redis/script_reply). An error reply, a wrong shape or a
// value out of range must be a store_error; bytes that are not RESP a
// protocol_error that stays (the connection is dropped). Anything else
// escaping, a crash, a leak or a hang is a finding.
//
// Input: byte 0 = the requests in flight (bits 0-2: 1..8; bit 3: the second
// is cancelled after it was written, so its reply is discarded); byte 1 = how
// the rest arrives (0: in one read; else read sizes drawn from it, 1..64
// bytes); then the server's bytes.
//
// Also checked: the replies do not depend on how the bytes were split into
// reads, and a decoded decision or state is within the documented ranges.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "redis/errors.hpp"
#include "redis/pipeline.hpp"
#include "redis/resp.hpp"
#include "redis/script_reply.hpp"

namespace {

using namespace ratesync::redis;

[[noreturn]] void violated(const char* property) {
  std::fprintf(stderr, "reply_fuzz: %s\n", property);
  std::abort();
}

struct decoded {
  std::vector<reply_ptr> replies;
  bool protocol_error = false;
};

// The bytes in reads of the sizes `split` draws (0: one read of everything),
// as the connection's reader_loop would get them from the socket.
decoded read_all(std::string_view bytes, std::uint8_t split) {
  decoded out;
  reply_reader reader;
  std::uint32_t state = split * 2654435761u + 1;
  std::size_t at = 0;
  do {
    std::size_t n = bytes.size() - at;
    if (split != 0) {
      state ^= state << 13;
      state ^= state >> 17;
      state ^= state << 5;
      n = std::min<std::size_t>(n, 1 + state % 64);
    }
    reader.feed(bytes.data() + at, n);
    at += n;
    try {
      while (auto r = reader.next())
        out.replies.push_back(std::move(*r));
    } catch (const protocol_error& e) {
      if (std::string_view(e.what()).empty())
        violated("a protocol_error without a message");
      // Sticky: the reader keeps failing, whatever comes next.
      reader.feed("+OK\r\n", 5);
      bool again = false;
      try {
        reader.next();
      } catch (const protocol_error&) {
        again = true;
      }
      if (!again)
        violated("reply_reader recovered after a protocol error");
      out.protocol_error = true;
      return out;
    }
  } while (at < bytes.size());
  return out;
}

bool same(const redisReply& a, const redisReply& b) {
  if (a.type != b.type || a.integer != b.integer || a.len != b.len || a.elements != b.elements)
    return false;
  if ((a.str == nullptr) != (b.str == nullptr))
    return false;
  if (a.str != nullptr && std::string_view(a.str, a.len) != std::string_view(b.str, b.len))
    return false;
  for (std::size_t i = 0; i < a.elements; ++i)
    if (!same(*a.element[i], *b.element[i]))
      return false;
  return true;
}

// What the engine does with a script's reply, for every script.
void interpret(const redisReply& r) {
  for (auto script : {decision_script::token_bucket, decision_script::sliding_window,
                      decision_script::concurrency}) {
    try {
      const decision d = decode_decision("fuzz", script, r);
      if (d.wait_us < 0 || d.wait_us > longest_reply_us)
        violated("a decision's wait out of range");
      if (script == decision_script::concurrency && d.status == decision::verdict::refused)
        violated("the concurrency script decoded as a refusal by rate");
    } catch (const ratesync::store_error& e) {
      if (e.store() != "fuzz" || std::string_view(e.what()).empty())
        violated("a store_error without its store or message");
    }
  }
  for (bool concurrency_only : {false, true}) {
    try {
      const ratesync::limiter_state st = decode_state("fuzz", r, concurrency_only, 3);
      if (st.remaining < 0 || st.current_concurrent < 0 || st.retry_after.count() < 0 ||
          st.reset_after.count() < 0 || st.retry_after.count() > longest_reply_us ||
          st.reset_after.count() > longest_reply_us)
        violated("a state out of range");
      if (concurrency_only && st.remaining > 3)
        violated("more slots remaining than max_concurrent");
    } catch (const ratesync::store_error& e) {
      if (e.store() != "fuzz" || std::string_view(e.what()).empty())
        violated("a store_error without its store or message");
    }
  }
}

class script_call final : public request {
public:
  script_call() : request("*1\r\n$4\r\nPING\r\n", std::chrono::steady_clock::time_point::max()) {}
  int completions = 0;

private:
  void complete(std::error_code ec, reply_ptr reply) override {
    ++completions;
    if (!ec && reply == nullptr)
      violated("a request completed without an error or a reply");
    if (reply)
      interpret(*reply);
  }
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2)
    return 0;
  const std::size_t in_flight = 1 + (data[0] & 7);
  const bool abandon_second = (data[0] & 8) != 0;
  const std::string_view bytes(reinterpret_cast<const char*>(data + 2), size - 2);

  const decoded whole = read_all(bytes, 0);
  decoded split = read_all(bytes, data[1]);
  if (whole.protocol_error != split.protocol_error || whole.replies.size() != split.replies.size())
    violated("the replies depend on how the bytes were split into reads");
  for (std::size_t i = 0; i < whole.replies.size(); ++i)
    if (!same(*whole.replies[i], *split.replies[i]))
      violated("a reply depends on how the bytes were split into reads");

  // The connection's side: requests written, replies matched in order; a
  // reply nobody asked for drops the connection (the rest fail).
  std::vector<std::unique_ptr<script_call>> calls;
  pipeline p;
  for (std::size_t i = 0; i < in_flight; ++i) {
    calls.push_back(std::make_unique<script_call>());
    p.push(*calls.back());
  }
  p.take_write_batch();
  if (abandon_second && in_flight > 1)
    p.cancel(*calls[1], make_error_code(errc::timeout));
  for (auto& r : split.replies)
    if (!p.on_reply(std::move(r)))
      break;
  p.on_disconnect(make_error_code(errc::connection_lost), true);
  for (const auto& c : calls)
    if (c->completions != 1)
      violated("a request completed other than exactly once");
  return 0;
}

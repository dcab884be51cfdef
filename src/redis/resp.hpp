// Private: RESP encoding (ours) and decoding (hiredis's reader). Every reply is owned by RAII and
// freed once; the reader's errors are sticky (drop the connection with it).
#pragma once

#include <hiredis/hiredis.h>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>

namespace ratesync::redis {

struct reply_deleter {
  void operator()(redisReply* r) const noexcept { freeReplyObject(r); }
};
using reply_ptr = std::unique_ptr<redisReply, reply_deleter>;

// Appends one command, RESP-encoded, to `out` (arguments are binary-safe).
void append_command(std::string& out, std::span<const std::string_view> args);
// The pieces of one: "*<n>\r\n", then n times "$<len>\r\n<bytes>\r\n".
void append_array_header(std::string& out, std::size_t n);
void append_bulk(std::string& out, std::string_view arg);
std::string encode_command(std::span<const std::string_view> args);

// The server sent something that is not RESP.
class protocol_error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

// Incremental RESP2 decoder.
class reply_reader {
public:
  // The most elements an array reply may announce. hiredis allocates an
  // array's element pointers when its header arrives, so "*2147483647\r\n"
  // alone made it allocate 16 GiB (found by tests/fuzz/reply_fuzz). ratesync's
  // replies have at most four; a larger header is a protocol_error.
  static constexpr long long max_array_elements = 1 << 20;

  reply_reader();
  ~reply_reader();
  reply_reader(const reply_reader&) = delete;
  reply_reader& operator=(const reply_reader&) = delete;

  void feed(const char* data, std::size_t size);
  // The next complete reply, or nullopt if more bytes are needed. Throws
  // protocol_error (and keeps throwing: the reader is then unusable).
  std::optional<reply_ptr> next();

private:
  static void* create_array(const redisReadTask* task, int elements);
  redisReader* reader_;
  long long refused_elements_ = 0; // an array header over the limit, if any
};

// Text of an error or status reply; empty for other types.
std::string_view reply_text(const redisReply& r) noexcept;

} // namespace ratesync::redis

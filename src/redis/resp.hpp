// Private: hiredis as the RESP codec only. Every reply is owned by RAII and
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
std::string encode_command(std::span<const std::string_view> args);

// The server sent something that is not RESP.
class protocol_error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

// Incremental RESP2 decoder.
class reply_reader {
public:
  reply_reader();
  ~reply_reader();
  reply_reader(const reply_reader&) = delete;
  reply_reader& operator=(const reply_reader&) = delete;

  void feed(const char* data, std::size_t size);
  // The next complete reply, or nullopt if more bytes are needed. Throws
  // protocol_error (and keeps throwing: the reader is then unusable).
  std::optional<reply_ptr> next();

private:
  redisReader* reader_;
};

// Text of an error or status reply; empty for other types.
std::string_view reply_text(const redisReply& r) noexcept;

} // namespace ratesync::redis

// hiredis as a codec: redisFormatCommandArgv to encode, its reader to decode.
// Nothing here touches a socket.
#include "redis/resp.hpp"

#include <climits>
#include <new>
#include <vector>

namespace ratesync::redis {

namespace {

struct command_deleter {
  void operator()(char* p) const noexcept { redisFreeCommand(p); }
};

} // namespace

void append_command(std::string& out, std::span<const std::string_view> args) {
  if (args.empty())
    throw std::invalid_argument("a Redis command needs at least one argument");
  if (args.size() > static_cast<std::size_t>(INT_MAX))
    throw std::length_error("too many arguments for one Redis command");
  // Explicit lengths: arguments may hold NUL bytes.
  std::vector<const char*> argv(args.size());
  std::vector<std::size_t> argvlen(args.size());
  for (std::size_t i = 0; i < args.size(); ++i) {
    argv[i] = args[i].data();
    argvlen[i] = args[i].size();
  }
  char* raw = nullptr;
  const int len =
      redisFormatCommandArgv(&raw, static_cast<int>(args.size()), argv.data(), argvlen.data());
  std::unique_ptr<char, command_deleter> cmd(raw);
  if (len < 0 || cmd == nullptr) {
    // hiredis returns -1 on allocation failure; -2 is not used by the argv form.
    throw std::bad_alloc();
  }
  out.append(cmd.get(), static_cast<std::size_t>(len));
}

std::string encode_command(std::span<const std::string_view> args) {
  std::string out;
  append_command(out, args);
  return out;
}

// redisReader's maxbuf (REDIS_READER_MAX_BUF, 16 KiB) is not a size limit: it
// only says when an emptied buffer is freed rather than kept, so a bulk reply
// of any size still decodes. Kept at the default.
reply_reader::reply_reader() : reader_(redisReaderCreate()) {
  if (reader_ == nullptr)
    throw std::bad_alloc();
}

reply_reader::~reply_reader() {
  redisReaderFree(reader_);
}

void reply_reader::feed(const char* data, std::size_t size) {
  // A failed reader (earlier protocol error, or out of memory here) refuses
  // the bytes and keeps its error; next() reports it.
  if (size != 0)
    redisReaderFeed(reader_, data, size);
}

std::optional<reply_ptr> reply_reader::next() {
  void* raw = nullptr;
  if (redisReaderGetReply(reader_, &raw) != REDIS_OK) {
    // hiredis keeps err/errstr set and answers REDIS_ERR from now on, so
    // every later call lands here again.
    if (raw != nullptr)
      freeReplyObject(raw);
    throw protocol_error(reader_->errstr[0] != '\0' ? reader_->errstr : "invalid RESP reply");
  }
  if (raw == nullptr)
    return std::nullopt;
  return reply_ptr(static_cast<redisReply*>(raw));
}

std::string_view reply_text(const redisReply& r) noexcept {
  if ((r.type == REDIS_REPLY_ERROR || r.type == REDIS_REPLY_STATUS) && r.str != nullptr)
    return {r.str, r.len};
  return {};
}

} // namespace ratesync::redis

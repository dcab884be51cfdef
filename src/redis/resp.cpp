// RESP: commands encoded here, replies decoded by hiredis's reader. Nothing
// here touches a socket.
#include "redis/resp.hpp"

#include <charconv>
#include <new>

namespace ratesync::redis {

namespace {

// "<prefix><n>\r\n"
void append_header(std::string& out, char prefix, std::size_t n) {
  char buf[24];
  buf[0] = prefix;
  const auto r = std::to_chars(buf + 1, buf + sizeof buf - 2, n);
  r.ptr[0] = '\r';
  r.ptr[1] = '\n';
  out.append(buf, static_cast<std::size_t>(r.ptr + 2 - buf));
}

} // namespace

// A RESP array of bulk strings, encoded here rather than by hiredis's
// redisFormatCommandArgv: that one formats every length with sprintf, which
// took 17-19 % of the client's CPU per request (docs/performance.md).
void append_command(std::string& out, std::span<const std::string_view> args) {
  if (args.empty())
    throw std::invalid_argument("a Redis command needs at least one argument");
  std::size_t size = 16;
  for (const auto a : args)
    size += a.size() + 16;
  out.reserve(out.size() + size);
  append_array_header(out, args.size());
  for (const auto a : args)
    append_bulk(out, a);
}

void append_array_header(std::string& out, std::size_t n) {
  append_header(out, '*', n);
}

void append_bulk(std::string& out, std::string_view arg) {
  append_header(out, '$', arg.size());
  out.append(arg); // binary-safe: the length is explicit
  out.append("\r\n", 2);
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
  // hiredis's own functions, but arrays go through create_array first. Its
  // defaults are a static table: copied once, from the first reader.
  struct functions {
    redisReplyObjectFunctions table;
    void* (*create_array)(const redisReadTask*, int);
  };
  static functions limited = [this] {
    functions f{*reader_->fn, reader_->fn->createArray};
    f.table.createArray = &reply_reader::create_array;
    return f;
  }();
  static void* (*const hiredis_create_array)(const redisReadTask*, int) = limited.create_array;
  (void)hiredis_create_array;
  reader_->fn = &limited.table;
  reader_->privdata = this; // reaches create_array as task->privdata
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

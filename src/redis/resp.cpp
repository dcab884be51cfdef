// RESP: commands encoded here, replies decoded by hiredis's reader. Nothing
// here touches a socket.
#include "redis/resp.hpp"

#include <array>
#include <charconv>
#include <new>

namespace ratesync::redis {

namespace {

// "<prefix><n>\r\n"
void append_header(std::string& out, char prefix, std::size_t n) {
  std::array<char, 24> buf{};
  buf[0] = prefix;
  const auto r = std::to_chars(buf.data() + 1, buf.data() + buf.size() - 2, n);
  r.ptr[0] = '\r';
  r.ptr[1] = '\n';
  out.append(buf.data(), static_cast<std::size_t>(r.ptr + 2 - buf.data()));
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

namespace {

// hiredis's reply functions (its defaults are one static table) with arrays
// going through reply_reader::create_array; set up once, from the first
// reader's defaults.
struct reader_functions {
  redisReplyObjectFunctions table;
  void* (*hiredis_create_array)(const redisReadTask*, int);
};

reader_functions& limited_functions(const redisReplyObjectFunctions* defaults,
                                    void* (*create_array)(const redisReadTask*, int)) {
  static reader_functions f = [&] {
    // The first call is reply_reader's constructor, with hiredis's defaults;
    // create_array's calls (null arguments) come from a reader made there.
    // NOLINTNEXTLINE(clang-analyzer-core.NonNullParamChecker)
    reader_functions r{*defaults, defaults->createArray};
    r.table.createArray = create_array;
    return r;
  }();
  return f;
}

} // namespace

// redisReader's maxbuf (REDIS_READER_MAX_BUF, 16 KiB) is not a size limit: it
// only says when an emptied buffer is freed rather than kept, so a bulk reply
// of any size still decodes. Kept at the default.
reply_reader::reply_reader() : reader_(redisReaderCreate()) {
  if (reader_ == nullptr)
    throw std::bad_alloc();
  reader_->fn = &limited_functions(reader_->fn, &reply_reader::create_array).table;
  reader_->privdata = this; // reaches create_array as task->privdata
}

void* reply_reader::create_array(const redisReadTask* task, int elements) {
  if (elements > max_array_elements) {
    static_cast<reply_reader*>(task->privdata)->refused_elements_ = elements;
    return nullptr; // hiredis fails the reader ("Out of memory"); next() says why
  }
  return limited_functions(nullptr, nullptr).hiredis_create_array(task, elements);
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
    if (refused_elements_ != 0)
      throw protocol_error("array reply of " + std::to_string(refused_elements_) +
                           " elements (more than " + std::to_string(max_array_elements) + ")");
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

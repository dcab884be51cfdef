// EVALSHA with one NOSCRIPT retry, as EVAL, on the same connection.
#include "redis/script.hpp"

#include <array>
#include <asio/experimental/as_tuple.hpp>
#include <asio/use_awaitable.hpp>
#include <charconv>
#include <openssl/sha.h>

namespace ratesync::redis {

std::string sha1_hex(std::string_view data) {
  std::array<unsigned char, SHA_DIGEST_LENGTH> digest{};
  // NOLINTNEXTLINE(cppcoreguidelines-pro-type-reinterpret-cast): char bytes as OpenSSL's uchar
  SHA1(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest.data());
  constexpr std::string_view hex = "0123456789abcdef";
  std::string out;
  out.reserve(2 * digest.size());
  for (const unsigned char b : digest) {
    out.push_back(hex[b >> 4]);
    out.push_back(hex[b & 0xf]);
  }
  return out;
}

script::script(std::string name, std::string source)
    : name_(std::move(name)), source_(std::move(source)), sha1_(sha1_hex(source_)) {
  append_bulk(evalsha_prefix_, "EVALSHA");
  append_bulk(evalsha_prefix_, sha1_);
}

namespace {

// EVALSHA sha or EVAL source (`head`, already encoded), then numkeys, keys, args.
std::string encode_script_call(std::string_view head, std::span<const std::string_view> keys,
                               std::span<const std::string_view> args) {
  std::array<char, 24> numkeys{};
  char* const end = std::to_chars(numkeys.data(), numkeys.data() + numkeys.size(), keys.size()).ptr;
  std::size_t size = 16 + head.size() + 16 * (keys.size() + args.size());
  for (const auto k : keys)
    size += k.size();
  for (const auto a : args)
    size += a.size();
  std::string out;
  out.reserve(size);
  append_array_header(out, 3 + keys.size() + args.size());
  out.append(head);
  append_bulk(out,
              std::string_view(numkeys.data(), static_cast<std::size_t>(end - numkeys.data())));
  for (const auto k : keys)
    append_bulk(out, k);
  for (const auto a : args)
    append_bulk(out, a);
  return out;
}

} // namespace

bool is_noscript(const reply_ptr& r) {
  return r && r->type == REDIS_REPLY_ERROR && reply_text(*r).substr(0, 8) == "NOSCRIPT";
}

std::string encode_evalsha(const script& s, std::span<const std::string_view> keys,
                           std::span<const std::string_view> args) {
  return encode_script_call(s.evalsha_prefix(), keys, args);
}

asio::awaitable<script_result> run_script(std::shared_ptr<connection> conn, const script& s,
                                          std::span<const std::string_view> keys,
                                          std::span<const std::string_view> args) {
  auto [ec, reply] = co_await conn->async_execute(
      encode_evalsha(s, keys, args), asio::experimental::as_tuple(asio::use_awaitable));
  if (ec || !is_noscript(reply))
    co_return script_result{ec, std::move(reply)};
  co_return co_await retry_as_eval(std::move(conn), s, keys, args);
}

// The retry is one EVAL: it runs the script and caches it again (the next
// EVALSHA finds it) in one atomic step. It used to be SCRIPT LOAD followed by
// EVALSHA, and a SCRIPT FLUSH from another client could come between the two,
// failing the retry with NOSCRIPT. (keys and args are read again here: like
// every reference parameter of these lazily started coroutines, they must
// outlive the co_await on them.)
asio::awaitable<script_result> retry_as_eval(std::shared_ptr<connection> conn, const script& s,
                                             std::span<const std::string_view> keys,
                                             std::span<const std::string_view> args) {
  std::string eval_head;
  append_bulk(eval_head, "EVAL");
  append_bulk(eval_head, s.source());
  auto [ec, reply] = co_await conn->async_execute(
      encode_script_call(eval_head, keys, args), asio::experimental::as_tuple(asio::use_awaitable));
  co_return script_result{ec, std::move(reply)};
}

} // namespace ratesync::redis

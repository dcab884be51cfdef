// EVALSHA with one NOSCRIPT retry on the same connection.
#include "redis/script.hpp"

#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/deferred.hpp>
#include <asio/experimental/parallel_group.hpp>
#include <asio/use_awaitable.hpp>
#include <openssl/sha.h>
#include <vector>

namespace ratesync::redis {

std::string sha1_hex(std::string_view data) {
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
  static constexpr char hex[] = "0123456789abcdef";
  std::string out(2 * SHA_DIGEST_LENGTH, '0');
  for (int i = 0; i < SHA_DIGEST_LENGTH; ++i) {
    out[2 * static_cast<std::size_t>(i)] = hex[digest[i] >> 4];
    out[2 * static_cast<std::size_t>(i) + 1] = hex[digest[i] & 0xf];
  }
  return out;
}

script::script(std::string name, std::string source)
    : name_(std::move(name)), source_(std::move(source)), sha1_(sha1_hex(source_)) {}

namespace {

std::string encode_evalsha(const script& s, std::span<const std::string_view> keys,
                           std::span<const std::string_view> args) {
  const std::string numkeys = std::to_string(keys.size());
  std::vector<std::string_view> argv;
  argv.reserve(3 + keys.size() + args.size());
  argv.push_back("EVALSHA");
  argv.push_back(s.sha1());
  argv.push_back(numkeys);
  argv.insert(argv.end(), keys.begin(), keys.end());
  argv.insert(argv.end(), args.begin(), args.end());
  return encode_command(argv);
}

bool is_noscript(const reply_ptr& r) {
  return r && r->type == REDIS_REPLY_ERROR && reply_text(*r).substr(0, 8) == "NOSCRIPT";
}

} // namespace

asio::awaitable<script_result> run_script(std::shared_ptr<connection> conn, const script& s,
                                          std::span<const std::string_view> keys,
                                          std::span<const std::string_view> args) {
  namespace ex = asio::experimental;
  std::string call = encode_evalsha(s, keys, args);
  auto [ec, reply] = co_await conn->async_execute(call, ex::as_tuple(asio::use_awaitable));
  if (ec || !is_noscript(reply))
    co_return script_result{ec, std::move(reply)};

  // SCRIPT LOAD and the retry go out back to back on this connection, in
  // that order, so the retry finds the script.
  std::vector<std::string_view> load_argv{"SCRIPT", "LOAD", s.source()};
  std::string load = encode_command(load_argv);
  auto [order, load_ec, load_reply, retry_ec, retry_reply] =
      co_await ex::make_parallel_group(conn->async_execute(std::move(load), ex::deferred),
                                       conn->async_execute(std::move(call), ex::deferred))
          .async_wait(ex::wait_for_all(), asio::use_awaitable);
  (void)order;
  (void)load_reply;
  if (retry_ec)
    co_return script_result{retry_ec, nullptr};
  if (load_ec)
    co_return script_result{load_ec, nullptr};
  co_return script_result{{}, std::move(retry_reply)};
}

} // namespace ratesync::redis

// Private: Lua scripts run with EVALSHA. The SHA1 is computed once; on
// NOSCRIPT (after a restart, failover or SCRIPT FLUSH) the call is retried
// once as EVAL on that connection, which runs the script and caches it again
// in one step: safe, since the EVALSHA did not run.
#pragma once

#include <asio/awaitable.hpp>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include "redis/connection.hpp"

namespace ratesync::redis {

class script {
public:
  script(std::string name, std::string source);

  const std::string& name() const noexcept { return name_; }
  const std::string& source() const noexcept { return source_; }
  const std::string& sha1() const noexcept { return sha1_; } // lowercase hex
  // "$7\r\nEVALSHA\r\n$40\r\n<sha1>\r\n": every call starts with it.
  const std::string& evalsha_prefix() const noexcept { return evalsha_prefix_; }

private:
  std::string name_;
  std::string source_;
  std::string sha1_;
  std::string evalsha_prefix_;
};

std::string sha1_hex(std::string_view data);

struct script_result {
  std::error_code error; // transport error; an error *reply* is a reply
  reply_ptr reply;
};

asio::awaitable<script_result> run_script(std::shared_ptr<connection> conn, const script& s,
                                          std::span<const std::string_view> keys,
                                          std::span<const std::string_view> args);

// run_script's parts, for callers that inline its fast path (one coroutine
// level less per call): the EVALSHA call encoded; whether a reply is
// NOSCRIPT; and the retry as EVAL that must then follow on the same
// connection.
std::string encode_evalsha(const script& s, std::span<const std::string_view> keys,
                           std::span<const std::string_view> args);
bool is_noscript(const reply_ptr& r);
asio::awaitable<script_result> retry_as_eval(std::shared_ptr<connection> conn, const script& s,
                                             std::span<const std::string_view> keys,
                                             std::span<const std::string_view> args);

} // namespace ratesync::redis

// Private: error codes of the Redis transport. Exceptions only at the
// user-facing edge; inside, every failure is an error_code of this category.
#pragma once

#include <string>
#include <system_error>

namespace ratesync::redis {

enum class errc {
  timeout = 1,       // no reply within the request's timeout
  connection_lost,   // the connection dropped after the request was written
  not_connected,     // no connection could be made (refused, DNS, TLS handshake, ...)
  connect_timeout,   // the connection's setup (lookup, connect, TLS, AUTH) took too long
  protocol_error,    // the server sent bytes that are not RESP: connection dropped
  auth_failed,       // AUTH refused (wrong password / user)
  tls_verify_failed, // the server's certificate did not verify
  server_error,      // the server answered with an error reply (message carried apart)
  shutting_down,     // the store is being destroyed
};

const std::error_category& transport_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), transport_category()};
}

} // namespace ratesync::redis

template <> struct std::is_error_code_enum<ratesync::redis::errc> : std::true_type {};

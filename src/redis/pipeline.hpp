// Private, sans-io: the request queue of one multiplexed connection.
// Requests move waiting -> written -> done; one cancelled after it was written
// becomes abandoned and keeps its place so that replies still match in order.
// The socket code only asks for the next write batch, feeds replies, reports
// a disconnect and the passing of deadlines; this class decides the rest and
// is tested without a socket.
#pragma once

#include <chrono>
#include <cstddef>
#include <deque>
#include <string>
#include <system_error>

#include "redis/resp.hpp"

namespace ratesync::redis {

class request {
public:
  enum class state { idle, waiting, written, abandoned, done };

  // `background`: nobody waits for it and the server answers it at once (a
  // ZREM of released leases); it does not count in load().
  request(std::string payload, std::chrono::steady_clock::time_point deadline,
          bool background = false)
      : payload_(std::move(payload)), deadline_(deadline), background_(background) {}
  virtual ~request() = default;
  request(const request&) = delete;
  request& operator=(const request&) = delete;

  state current() const noexcept { return state_; }
  std::chrono::steady_clock::time_point deadline() const noexcept { return deadline_; }
  const std::string& payload() const noexcept { return payload_; }

protected:
  // Called exactly once: with a reply, or with an error and no reply. The
  // pipeline does not touch the request afterwards (it may delete itself).
  virtual void complete(std::error_code ec, reply_ptr reply) = 0;

private:
  friend class pipeline;
  std::string payload_;
  std::chrono::steady_clock::time_point deadline_;
  bool background_;
  state state_ = state::idle;
};

class pipeline {
public:
  // It holds pointers to requests it must complete once: never copied.
  pipeline() = default;
  pipeline(const pipeline&) = delete;
  pipeline& operator=(const pipeline&) = delete;
  ~pipeline() = default;

  // Queues a request (state waiting). It will be written by the next batch.
  void push(request& r);

  // Everything waiting, concatenated in order, all marked written. Empty if
  // nothing waits. The second form writes it into `out` (cleared first),
  // reusing its capacity.
  std::string take_write_batch();
  void take_write_batch(std::string& out);
  bool has_waiting() const noexcept { return waiting_count_ > 0; }

  // A reply arrived: it belongs to the oldest written or abandoned request.
  // Returns false if no request was expecting one (the server is confused:
  // drop the connection).
  bool on_reply(reply_ptr reply);

  // The caller gave up. Waiting: removed, completed with operation_aborted.
  // Written: abandoned (its reply will be discarded), completed at once.
  void cancel(request& r, std::error_code ec);

  // Completes with errc::timeout every request whose deadline has passed.
  // Returns the earliest deadline still pending (time_point::max() if none).
  std::chrono::steady_clock::time_point expire(std::chrono::steady_clock::time_point now);

  // The connection dropped. Written requests fail with `ec` and are never
  // replayed (they may have run); waiting ones stay queued for the next
  // connection unless `fail_waiting` is set.
  void on_disconnect(std::error_code ec, bool fail_waiting);

  std::size_t in_flight() const noexcept { return written_.size(); }
  std::size_t size() const noexcept { return written_.size() + waiting_count_; }
  // size() without the background requests still queued or awaiting a reply:
  // what a new request would wait behind, for choosing a connection.
  std::size_t load() const noexcept { return size() - background_count_; }

private:
  static void finish(request& r, std::error_code ec, reply_ptr reply);
  // A live (queued or written) request leaves the queues.
  void leaves(const request& r) noexcept { background_count_ -= r.background_ ? 1 : 0; }
  std::deque<request*> waiting_; // may hold nullptr holes for cancelled entries
  std::size_t waiting_count_ = 0;
  std::deque<request*> written_;     // awaiting a reply, in write order
  std::size_t background_count_ = 0; // live background requests in both queues
};

} // namespace ratesync::redis

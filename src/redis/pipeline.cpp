// The request queue of one connection. Every completion goes through finish(),
// which marks the request done before calling it: from then on the pipeline
// never touches it (it may be deleted), and a later cancel() is a no-op.
// Requests that complete in a group are first taken out of the queues and then
// completed, so a complete() that calls back into the pipeline (push, cancel)
// sees consistent queues.
#include "redis/pipeline.hpp"
#include "redis/errors.hpp"

#include <algorithm>
#include <exception>
#include <stdexcept>
#include <vector>

namespace ratesync::redis {

namespace {

using time_point = std::chrono::steady_clock::time_point;

// Drops the nullptr holes at both ends (never those between live entries:
// that would cost a shift, and the holes go when the batch is taken).
void trim(std::deque<request*>& q) {
  while (!q.empty() && q.front() == nullptr)
    q.pop_front();
  while (!q.empty() && q.back() == nullptr)
    q.pop_back();
}

} // namespace

void pipeline::finish(request& r, std::error_code ec, reply_ptr reply) {
  r.state_ = request::state::done;
  r.complete(ec, std::move(reply));
}

void pipeline::push(request& r) {
  if (r.state_ != request::state::idle && r.state_ != request::state::done)
    throw std::logic_error("ratesync: request pushed while already queued");
  waiting_.push_back(&r);
  r.state_ = request::state::waiting;
  ++waiting_count_;
  background_count_ += r.background_ ? 1 : 0;
}

std::string pipeline::take_write_batch() {
  std::string batch;
  take_write_batch(batch);
  return batch;
}

void pipeline::take_write_batch(std::string& out) {
  out.clear();
  if (waiting_count_ == 0) {
    waiting_.clear();
    return;
  }
  std::size_t total = 0;
  for (const request* r : waiting_)
    if (r != nullptr)
      total += r->payload_.size();
  out.reserve(total);
  // All or nothing: if a push runs out of memory the pushed ones are taken
  // back, and every request is still waiting (and in waiting_ only).
  const std::size_t before = written_.size();
  try {
    for (request* r : waiting_)
      if (r != nullptr)
        written_.push_back(r);
  } catch (...) {
    written_.resize(before);
    out.clear();
    throw;
  }
  for (request* r : waiting_) {
    if (r == nullptr)
      continue;
    out += r->payload_; // reserved: does not throw
    r->state_ = request::state::written;
  }
  waiting_.clear();
  waiting_count_ = 0;
}

bool pipeline::on_reply(reply_ptr reply) {
  if (written_.empty())
    return false;
  request* r = written_.front();
  written_.pop_front();
  // nullptr: an abandoned request, already completed; `reply` is freed here.
  if (r != nullptr) {
    leaves(*r);
    finish(*r, {}, std::move(reply));
  }
  return true;
}

void pipeline::cancel(request& r, std::error_code ec) {
  switch (r.state_) {
  case request::state::waiting: {
    auto it = std::find(waiting_.begin(), waiting_.end(), &r);
    if (it == waiting_.end())
      return; // queued in another pipeline
    *it = nullptr;
    --waiting_count_;
    trim(waiting_);
    break;
  }
  case request::state::written: {
    auto it = std::find(written_.begin(), written_.end(), &r);
    if (it == written_.end())
      return;
    // The hole keeps the reply's place in the FIFO; on_reply() discards it.
    *it = nullptr;
    r.state_ = request::state::abandoned;
    break;
  }
  case request::state::idle:
  case request::state::abandoned:
  case request::state::done:
    return; // not queued, or already completed
  }
  leaves(r);
  finish(r, ec, nullptr);
}

namespace {

// Completes every request, even if one complete() throws; the first exception
// is rethrown afterwards.
template <class Finish> void finish_all(const std::vector<request*>& done, Finish&& finish_one) {
  std::exception_ptr first;
  for (request* r : done) {
    try {
      finish_one(*r);
    } catch (...) {
      if (!first)
        first = std::current_exception();
    }
  }
  if (first)
    std::rethrow_exception(first);
}

} // namespace

time_point pipeline::expire(time_point now) {
  // Deadlines are non-decreasing in push order and every written request was
  // pushed before every waiting one, so each scan stops at the first live
  // request still in time. If the order is violated, a request behind it only
  // expires later, once the ones before it have gone.
  std::vector<request*> expired;
  time_point earliest = time_point::max();

  for (auto& slot : written_) {
    if (slot == nullptr)
      continue; // abandoned, already completed
    if (slot->deadline_ > now) {
      earliest = std::min(earliest, slot->deadline_);
      break;
    }
    slot->state_ = request::state::abandoned; // its reply, if any, is discarded
    expired.push_back(slot);
    slot = nullptr;
  }

  for (auto& slot : waiting_) {
    if (slot == nullptr)
      continue;
    if (slot->deadline_ > now) {
      earliest = std::min(earliest, slot->deadline_);
      break;
    }
    expired.push_back(slot);
    slot = nullptr;
    --waiting_count_;
  }
  trim(waiting_);

  for (const request* r : expired)
    leaves(*r);
  const std::error_code ec = errc::timeout;
  finish_all(expired, [&](request& r) { finish(r, ec, nullptr); });
  return earliest;
}

void pipeline::on_disconnect(std::error_code ec, bool fail_waiting) {
  std::vector<request*> failed;
  // Written requests may have run: they fail and are never replayed.
  // Abandoned ones (holes) were completed when they were abandoned.
  for (request* r : written_)
    if (r != nullptr)
      failed.push_back(r);
  written_.clear();

  if (fail_waiting) {
    for (request* r : waiting_)
      if (r != nullptr)
        failed.push_back(r);
    waiting_.clear();
    waiting_count_ = 0;
  }

  for (const request* r : failed)
    leaves(*r);
  finish_all(failed, [&](request& r) { finish(r, ec, nullptr); });
}

} // namespace ratesync::redis

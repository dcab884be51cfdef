// The physical reference for latency at a fixed rate: the least a client can
// do to send EVALSHA at R calls/s, open loop, and time each reply. One
// thread, one TCP connection, no limit on calls in flight: each
// call is written when it is due (with any others due), replies are matched
// in order (hiredis's reader parses them), and each latency runs from the
// call's scheduled time, as api_bench --rate does. redis-benchmark cannot
// pace, so bench/run_api_bench.sh runs this beside ratesync's half-load rows:
// what is left of the p99 once the client does next to nothing is the
// server's and the machine's.
//
// --closed instead makes one call at a time, closed loop, as redis-benchmark
// -c 1 -P 1 does, and times each from its write to its reply: a single
// caller's reference at the clock's resolution. redis-benchmark's own
// percentiles come from 8 us buckets below about 16 ms (an HdrHistogram whose
// lowest discernible value is 10 us), reported as the bucket's top.
//
//   paced_reference [--host IPV4] --port P --rate R --seconds S [--warmup W] [--keys K]
//                   -- EVALSHA <sha> <numkeys> <key> ... <argv> ...
//   paced_reference [--host IPV4] --port P --closed --seconds S [--warmup W] [--keys K]
//                   -- EVALSHA ...
//
// Every "__rand_int__" in the command becomes a 12-digit number below K (as
// in redis-benchmark -r K); K = 0 leaves it as it is. Prints one line:
// calls/s, p50 / p99 / p99.9 from the scheduled time and p99 from the write,
// in microseconds (--closed: calls/s, p50 / p99 from the write). Exits 1 on
// any error reply or I/O error.
#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <random>
#include <string>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

namespace {

using steady = std::chrono::steady_clock;

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "paced_reference: %s\n", what.c_str());
  std::exit(1);
}

struct args {
  std::string host = "127.0.0.1";
  int port = 0;
  double rate = 0;
  double seconds = 1;
  double warmup = 0.2;
  std::uint64_t keys = 0;
  bool closed = false;
  std::vector<std::string> command;
};

args parse(int argc, char** argv) {
  args a;
  int i = 1;
  for (; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--")
      break;
    if (k == "--closed") {
      a.closed = true;
      continue;
    }
    if (i + 1 >= argc)
      die("missing value for " + k);
    const char* v = argv[++i];
    if (k == "--host")
      a.host = v;
    else if (k == "--port")
      a.port = std::atoi(v);
    else if (k == "--rate")
      a.rate = std::atof(v);
    else if (k == "--seconds")
      a.seconds = std::atof(v);
    else if (k == "--warmup")
      a.warmup = std::atof(v);
    else if (k == "--keys")
      a.keys = std::strtoull(v, nullptr, 10);
    else
      die("unknown option " + k);
  }
  for (++i; i < argc; ++i)
    a.command.emplace_back(argv[i]);
  if (a.port <= 0 || (a.closed ? a.rate != 0 : a.rate <= 0) || a.seconds <= 0 || a.warmup < 0 ||
      a.command.empty())
    die("usage: paced_reference --port P (--rate R | --closed) --seconds S [--warmup W] [--keys "
        "K] -- CMD...");
  return a;
}

// The command in RESP, with every __rand_int__ replaced.
std::string format(const args& a, std::mt19937_64& rng) {
  static const std::string marker = "__rand_int__";
  std::vector<std::string> words = a.command;
  if (a.keys > 0) {
    for (auto& w : words) {
      for (auto at = w.find(marker); at != std::string::npos; at = w.find(marker, at)) {
        char digits[24];
        std::snprintf(digits, sizeof digits, "%012llu",
                      static_cast<unsigned long long>(rng() % a.keys));
        w.replace(at, marker.size(), digits);
      }
    }
  }
  std::vector<const char*> argv;
  std::vector<std::size_t> lens;
  for (const auto& w : words) {
    argv.push_back(w.data());
    lens.push_back(w.size());
  }
  char* out = nullptr;
  const long long n =
      redisFormatCommandArgv(&out, static_cast<int>(argv.size()), argv.data(), lens.data());
  if (n < 0)
    die("cannot format the command");
  std::string s(out, static_cast<std::size_t>(n));
  redisFreeCommand(out);
  return s;
}

// Reads from `fd` into `reader` until it holds a whole reply, and checks it.
void await_reply(int fd, redisReader* reader) {
  char buf[1 << 12];
  for (;;) {
    void* reply = nullptr;
    if (redisReaderGetReply(reader, &reply) != REDIS_OK)
      die("protocol error");
    if (reply != nullptr) {
      const auto* r = static_cast<redisReply*>(reply);
      if (r->type == REDIS_REPLY_ERROR)
        die(std::string("error reply: ") + r->str);
      freeReplyObject(reply);
      return;
    }
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, -1) < 0 && errno != EINTR)
      die(std::string("poll: ") + std::strerror(errno));
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0)
      die("the server closed the connection");
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
      die(std::string("recv: ") + std::strerror(errno));
    if (n > 0)
      redisReaderFeed(reader, buf, static_cast<std::size_t>(n));
  }
}

double percentile(std::vector<double>& v, double p) {
  if (v.empty())
    return 0;
  const auto k = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

} // namespace

int main(int argc, char** argv) {
  const args a = parse(argc, argv);
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(a.port));
  if (::inet_pton(AF_INET, a.host.c_str(), &addr.sin_addr) != 1)
    die("--host takes an IPv4 address, not " + a.host);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    die(std::string("connect: ") + std::strerror(errno));
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  redisReader* reader = redisReaderCreate();

  std::mt19937_64 rng(1);
  const auto start = steady::now() + std::chrono::milliseconds(10);
  const auto measure_from =
      start + std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(a.warmup));
  const auto until = measure_from + std::chrono::duration_cast<steady::duration>(
                                        std::chrono::duration<double>(a.seconds));
  if (a.closed) {
    std::vector<double> lat;
    for (auto now = steady::now(); now < until; now = steady::now()) {
      const std::string cmd = format(a, rng);
      const auto written = steady::now();
      for (std::size_t at = 0; at < cmd.size();) {
        const ssize_t n = ::send(fd, cmd.data() + at, cmd.size() - at, MSG_NOSIGNAL);
        if (n < 0 && errno != EINTR)
          die(std::string("send: ") + std::strerror(errno));
        if (n > 0)
          at += static_cast<std::size_t>(n);
      }
      await_reply(fd, reader);
      if (written >= measure_from)
        lat.push_back(std::chrono::duration<double, std::micro>(steady::now() - written).count());
    }
    redisReaderFree(reader);
    ::close(fd);
    const std::size_t timed = lat.size();
    const double p50 = percentile(lat, 0.50);
    const double p99 = percentile(lat, 0.99);
    std::printf("paced_reference: closed loop, %.0f calls/s, p50 %.1f us, p99 %.1f us, %zu calls "
                "timed\n",
                static_cast<double>(timed) / a.seconds, p50, p99, timed);
    return 0;
  }
  const std::chrono::duration<double> interval(1.0 / a.rate);
  struct in_flight {
    steady::time_point scheduled, written;
  };
  std::deque<in_flight> pending;
  std::vector<double> from_schedule, from_write;
  from_schedule.reserve(static_cast<std::size_t>(a.rate * a.seconds * 1.1));
  from_write.reserve(from_schedule.capacity());
  std::string out;
  std::size_t out_at = 0;
  std::uint64_t due_count = 0;
  std::uint64_t counted = 0;
  char buf[1 << 16];
  for (;;) {
    auto now = steady::now();
    auto next_due = start + std::chrono::duration_cast<steady::duration>(
                                interval * static_cast<double>(due_count));
    while (next_due <= now && next_due < until) {
      out += format(a, rng);
      pending.push_back({next_due, now});
      ++due_count;
      next_due = start + std::chrono::duration_cast<steady::duration>(
                             interval * static_cast<double>(due_count));
    }
    if (out_at < out.size()) {
      const ssize_t n =
          ::send(fd, out.data() + out_at, out.size() - out_at, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
        die(std::string("send: ") + std::strerror(errno));
      if (n > 0)
        out_at += static_cast<std::size_t>(n);
      if (out_at == out.size()) {
        out.clear();
        out_at = 0;
      }
    }
    if (next_due >= until && pending.empty())
      break;
    // Wait for a reply or the next due call, whichever comes first.
    const auto wait = next_due < until ? next_due - now : std::chrono::milliseconds(100);
    const long long wait_ns =
        std::max<long long>(0, std::chrono::duration_cast<std::chrono::nanoseconds>(wait).count());
    pollfd p{fd, static_cast<short>(POLLIN | (out.empty() ? 0 : POLLOUT)), 0};
    const timespec ts{static_cast<time_t>(wait_ns / 1'000'000'000),
                      static_cast<long>(wait_ns % 1'000'000'000)};
    if (::ppoll(&p, 1, &ts, nullptr) < 0 && errno != EINTR)
      die(std::string("poll: ") + std::strerror(errno));
    if (!(p.revents & POLLIN))
      continue;
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0)
      die("the server closed the connection");
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        continue;
      die(std::string("recv: ") + std::strerror(errno));
    }
    redisReaderFeed(reader, buf, static_cast<std::size_t>(n));
    now = steady::now();
    for (;;) {
      void* reply = nullptr;
      if (redisReaderGetReply(reader, &reply) != REDIS_OK)
        die("protocol error");
      if (reply == nullptr)
        break;
      const auto* r = static_cast<redisReply*>(reply);
      if (r->type == REDIS_REPLY_ERROR)
        die(std::string("error reply: ") + r->str);
      freeReplyObject(reply);
      if (pending.empty())
        die("a reply nobody asked for");
      const in_flight f = pending.front();
      pending.pop_front();
      if (f.scheduled >= measure_from) {
        ++counted;
        from_schedule.push_back(
            std::chrono::duration<double, std::micro>(now - f.scheduled).count());
        from_write.push_back(std::chrono::duration<double, std::micro>(now - f.written).count());
      }
    }
  }
  redisReaderFree(reader);
  ::close(fd);
  const double p50 = percentile(from_schedule, 0.50);
  const double p99 = percentile(from_schedule, 0.99);
  const double p999 = percentile(from_schedule, 0.999);
  const double w99 = percentile(from_write, 0.99);
  std::printf("paced_reference: %.0f calls/s, p50 %.1f us, p99 %.1f us, p99.9 %.1f us (from the "
              "write: p99 %.1f us), %llu calls timed\n",
              static_cast<double>(counted) / a.seconds, p50, p99, p999, w99,
              static_cast<unsigned long long>(counted));
  return 0;
}

// Cross-process accuracy: several real OS processes (tests/accuracy_driver.cpp,
// each with its own registry, store connections and io_context) share one
// limiter on one fixture redis-server, and the merged admission times they
// print must obey the limit. Also: a holder killed with SIGKILL gives its slots
// back after lease_seconds, a live holder keeps its slot past lease_seconds, a
// process whose clock is two days off (faketime) cannot loosen the limit, and a
// waiter costs one script call.
//
// Every test runs alone (RUN_SERIAL, see tests/CMakeLists.txt): they measure
// timing with several busy processes on a small machine, and would disturb
// other timing-sensitive tests as much as those would disturb them.
//
// Each test prints its measurements as "[accuracy] ..." lines.
#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <poll.h>
#include <sstream>
#include <string>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "ratesync/ratesync.hpp"
#include "redis_server.hpp"
#include "test_support.hpp"

#ifndef RATESYNC_ACCURACY_DRIVER
#error "RATESYNC_ACCURACY_DRIVER must name the ratesync_accuracy_driver executable"
#endif

namespace {

using namespace std::chrono_literals;
using ratesync::test::redis_server;
using steady = std::chrono::steady_clock;

// Client lag, the one tolerance of the window checks. A driver prints an
// admission when its coroutine resumes with the permit, never before the
// moment Redis decided it (an immediate admission) or reserved it (a waiting
// one: the driver sleeps the wait Redis returned plus timing_margin_ms, 10 ms
// by default, then needs the CPU). So printed = real + m + d, where m is the
// margin (0 for an immediate admission) and 0 <= d <= lag is the delay of
// the process getting the CPU. The margin shifts the waiting admissions
// uniformly, and in these runs the immediate ones (the first `burst`) come
// before them, so it spreads admissions out, never compresses them; d can.
// Admissions printed within a closed window of length S - lag were therefore
// decided within a window of at most S: checking printed windows of S - lag
// against the bound for S is exact while no admission is printed more than
// `lag` late. (For S <= lag the printed window has length 0, which is all
// such a span can say from the outside.)
constexpr std::int64_t lag_us = 10'000;

// ---------------------------------------------------------------- processes

std::int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// One child process with a pipe to its stdin and one from its stdout; its
// stderr is the test's. Killed (SIGKILL) and reaped by the destructor.
class child {
public:
  explicit child(const std::vector<std::string>& args) {
    std::vector<char*> argv;
    for (const auto& a : args)
      argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    int in[2], out[2];
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0)
      throw std::runtime_error(std::string("pipe2: ") + std::strerror(errno));
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ == 0) {
      // Async-signal-safe calls only (the test process has threads).
      if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent)
        ::_exit(127);
      sigset_t none;
      ::sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      ::signal(SIGPIPE, SIG_DFL);
      if (::dup2(in[0], 0) < 0 || ::dup2(out[1], 1) < 0)
        ::_exit(127);
      ::syscall(SYS_close_range, 3U, ~0U, 0U);
      ::execvp(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(in[0]);
    ::close(out[1]);
    if (pid_ < 0) {
      ::close(in[1]);
      ::close(out[0]);
      throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
    }
    in_ = in[1];
    out_ = out[0];
    ::fcntl(out_, F_SETFL, ::fcntl(out_, F_GETFL) | O_NONBLOCK);
  }
  ~child() {
    kill(SIGKILL);
    wait_exit(5s);
    if (in_ >= 0)
      ::close(in_);
    if (out_ >= 0)
      ::close(out_);
  }
  child(const child&) = delete;
  child& operator=(const child&) = delete;

  pid_t pid() const { return pid_; }
  const std::vector<std::string>& lines() const { return lines_; }
  bool eof() const { return out_ < 0; }

  void kill(int sig) {
    if (pid_ > 0 && !status_)
      ::kill(pid_, sig);
  }
  void send(const std::string& s) {
    if (in_ >= 0 && ::write(in_, s.data(), s.size()) < 0) {
      // The child is gone; its output will tell.
    }
  }
  // Reads whatever is available; false at end of file.
  bool read_available() {
    if (out_ < 0)
      return false;
    char buf[65536];
    for (;;) {
      const ssize_t n = ::read(out_, buf, sizeof buf);
      if (n > 0) {
        partial_.append(buf, static_cast<std::size_t>(n));
        std::size_t nl;
        while ((nl = partial_.find('\n')) != std::string::npos) {
          lines_.push_back(partial_.substr(0, nl));
          partial_.erase(0, nl + 1);
        }
        continue;
      }
      if (n == 0) {
        ::close(out_);
        out_ = -1;
        return false;
      }
      if (errno == EINTR)
        continue;
      return true; // EAGAIN
    }
  }
  int out_fd() const { return out_; }

  // Reaps the child if it ended within `timeout`.
  bool wait_exit(std::chrono::milliseconds timeout) {
    if (status_)
      return true;
    const auto deadline = steady::now() + timeout;
    for (;;) {
      int st = 0;
      const pid_t r = ::waitpid(pid_, &st, WNOHANG);
      if (r == pid_ || (r < 0 && errno == ECHILD)) {
        status_ = st;
        return true;
      }
      if (steady::now() >= deadline)
        return false;
      std::this_thread::sleep_for(2ms);
    }
  }
  std::optional<int> status() const { return status_; }

private:
  pid_t pid_ = -1;
  int in_ = -1;
  int out_ = -1;
  std::string partial_;
  std::vector<std::string> lines_;
  std::optional<int> status_;
};

// Waits up to `timeout` for output from any of `cs`, reads it.
void pump(const std::vector<child*>& cs, std::chrono::milliseconds timeout) {
  std::vector<pollfd> fds;
  std::vector<child*> who;
  for (child* c : cs)
    if (!c->eof()) {
      fds.push_back(pollfd{c->out_fd(), POLLIN, 0});
      who.push_back(c);
    }
  if (fds.empty()) {
    std::this_thread::sleep_for(timeout);
    return;
  }
  const int r = ::poll(fds.data(), fds.size(), static_cast<int>(timeout.count()));
  if (r <= 0)
    return;
  for (std::size_t i = 0; i < fds.size(); ++i)
    if (fds[i].revents != 0)
      who[i]->read_available();
}

// The first line of `c` starting with `prefix`, from line `from` on.
std::optional<std::string> find_line(const child& c, const std::string& prefix,
                                     std::size_t from = 0) {
  for (std::size_t i = from; i < c.lines().size(); ++i)
    if (c.lines()[i].rfind(prefix, 0) == 0)
      return c.lines()[i];
  return std::nullopt;
}

// Waits until `c` printed a line starting with `prefix` (reading all of `cs`
// meanwhile, so that no pipe fills up).
std::optional<std::string> wait_line(const std::vector<child*>& cs, const child& c,
                                     const std::string& prefix, std::chrono::milliseconds timeout) {
  const auto deadline = steady::now() + timeout;
  for (;;) {
    if (auto l = find_line(c, prefix))
      return l;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady::now());
    if (left <= 0ms || (c.eof() && !find_line(c, prefix)))
      return find_line(c, prefix);
    pump(cs, std::min<std::chrono::milliseconds>(left, 20ms));
  }
}

// Reads all output until every child has exited, up to `timeout`.
bool finish_all(const std::vector<child*>& cs, std::chrono::milliseconds timeout) {
  const auto deadline = steady::now() + timeout;
  for (;;) {
    bool all_eof = true;
    for (child* c : cs)
      all_eof = all_eof && c->eof();
    if (all_eof)
      break;
    if (steady::now() >= deadline)
      return false;
    pump(cs, 50ms);
  }
  for (child* c : cs)
    if (!c->wait_exit(std::chrono::duration_cast<std::chrono::milliseconds>(
            std::max<steady::duration>(deadline - steady::now(), 100ms))))
      return false;
  return true;
}

std::string describe(const child& c) {
  std::string s = "pid " + std::to_string(c.pid()) + ": ";
  if (auto st = c.status()) {
    if (WIFEXITED(*st))
      s += "exit " + std::to_string(WEXITSTATUS(*st));
    else if (WIFSIGNALED(*st))
      s += "signal " + std::to_string(WTERMSIG(*st));
  } else {
    s += "running";
  }
  const auto& ls = c.lines();
  s += ", " + std::to_string(ls.size()) + " lines; last:";
  for (std::size_t i = ls.size() > 3 ? ls.size() - 3 : 0; i < ls.size(); ++i)
    s += " [" + ls[i] + "]";
  return s;
}

std::vector<std::string> driver_args(const redis_server& srv, const std::string& prefix,
                                     std::vector<std::string> more) {
  std::vector<std::string> a{
      RATESYNC_ACCURACY_DRIVER, "--url", srv.url(), "--prefix", prefix, "--wait-go"};
  a.insert(a.end(), more.begin(), more.end());
  return a;
}

// What one driver printed.
struct driver_output {
  std::vector<std::int64_t> admissions; // A
  std::vector<std::int64_t> enters;     // E
  std::vector<std::int64_t> leaves;     // L
  std::int64_t start = 0, end = 0;
  std::int64_t done = -1;
  std::map<std::string, double> metrics;
};

driver_output parse(const child& c) {
  driver_output o;
  for (const auto& l : c.lines()) {
    std::istringstream in(l);
    std::string tag;
    in >> tag;
    if (tag == "A" || tag == "E" || tag == "L" || tag == "START" || tag == "END" || tag == "DONE") {
      std::int64_t v = 0;
      in >> v;
      if (tag == "A")
        o.admissions.push_back(v);
      else if (tag == "E")
        o.enters.push_back(v);
      else if (tag == "L")
        o.leaves.push_back(v);
      else if (tag == "START")
        o.start = v;
      else if (tag == "END")
        o.end = v;
      else
        o.done = v;
    } else if (tag == "METRICS" || tag == "CPU") {
      std::string kv;
      while (in >> kv) {
        const auto eq = kv.find('=');
        if (eq != std::string::npos)
          o.metrics[kv.substr(0, eq)] = std::stod(kv.substr(eq + 1));
      }
    }
  }
  return o;
}

// Starts `n` drivers with the same arguments, waits until all are READY, then
// lets them go at once and collects their output. Returns them parsed; fails
// the test (ADD_FAILURE) on a driver that does not finish cleanly.
std::vector<driver_output> run_drivers(const std::vector<std::vector<std::string>>& argvs,
                                       std::chrono::milliseconds run_timeout,
                                       const std::function<void()>& before_go = {}) {
  std::vector<std::unique_ptr<child>> owned;
  std::vector<child*> cs;
  for (const auto& a : argvs) {
    owned.push_back(std::make_unique<child>(a));
    cs.push_back(owned.back().get());
  }
  for (child* c : cs) {
    if (!wait_line(cs, *c, "READY", 15s)) {
      c->kill(SIGKILL);
      c->wait_exit(2s);
      ADD_FAILURE() << "driver not READY: " << describe(*c);
      return {};
    }
  }
  if (before_go)
    before_go();
  for (child* c : cs)
    c->send("GO\n");
  const bool finished = finish_all(cs, run_timeout);
  std::vector<driver_output> outs;
  for (child* c : cs) {
    EXPECT_TRUE(finished) << "drivers did not finish in time: " << describe(*c);
    EXPECT_TRUE(c->status() && WIFEXITED(*c->status()) && WEXITSTATUS(*c->status()) == 0)
        << describe(*c);
    driver_output o = parse(*c);
    EXPECT_GE(o.done, 0) << "no DONE line: " << describe(*c);
    EXPECT_EQ(o.done, static_cast<std::int64_t>(o.admissions.size())) << describe(*c);
    // A store error on a fail-open limiter admits without the limit: the
    // measurement would be meaningless.
    EXPECT_EQ(o.metrics["store_errors"], 0) << describe(*c);
    outs.push_back(std::move(o));
  }
  return outs;
}

// Most elements of sorted `t` within any closed window [x, x + len].
std::size_t max_in_window(const std::vector<std::int64_t>& t, std::int64_t len) {
  std::size_t best = 0, lo = 0;
  for (std::size_t hi = 0; hi < t.size(); ++hi) {
    while (t[hi] - t[lo] > len)
      ++lo;
    best = std::max(best, hi - lo + 1);
  }
  return best;
}

std::vector<std::int64_t> merged_admissions(const std::vector<driver_output>& outs) {
  std::vector<std::int64_t> all;
  for (const auto& o : outs)
    all.insert(all.end(), o.admissions.begin(), o.admissions.end());
  std::sort(all.begin(), all.end());
  return all;
}

std::string metrics_summary(const driver_output& o) {
  std::ostringstream s;
  s << "admitted=" << o.admissions.size() << " denied=" << o.metrics.at("denied")
    << " avg_wait_ms=" << o.metrics.at("avg_wait_ms")
    << " max_wait_ms=" << o.metrics.at("max_wait_ms") << " cpu_user_ms=" << o.metrics.at("user_ms")
    << " cpu_sys_ms=" << o.metrics.at("sys_ms");
  return s.str();
}

void ignore_sigpipe() {
  static const bool once = [] {
    std::signal(SIGPIPE, SIG_IGN);
    return true;
  }();
  (void)once;
}

// ------------------------------------------------------- token bucket

void token_bucket_across_processes(double rate, std::int64_t burst, const std::string& prefix) {
  ignore_sigpipe();
  redis_server srv;
  constexpr int processes = 4;
  constexpr double seconds = 5.0;
  std::vector<std::vector<std::string>> argvs;
  for (int i = 0; i < processes; ++i)
    argvs.push_back(driver_args(srv, prefix,
                                {"--algo", "tb", "--rate", std::to_string(rate), "--burst",
                                 std::to_string(burst), "--seconds", std::to_string(seconds),
                                 "--coroutines", "50", "--mode", "hammer"}));
  const auto outs = run_drivers(argvs, 30s);
  ASSERT_EQ(outs.size(), static_cast<std::size_t>(processes));
  const auto all = merged_admissions(outs);
  ASSERT_FALSE(all.empty());

  std::int64_t max_start = 0, min_end = INT64_MAX, min_start = INT64_MAX, max_end = 0;
  for (const auto& o : outs) {
    max_start = std::max(max_start, o.start);
    min_start = std::min(min_start, o.start);
    min_end = std::min(min_end, o.end);
    max_end = std::max(max_end, o.end);
    std::printf("[accuracy] tb rate=%g burst=%lld process: %s\n", rate,
                static_cast<long long>(burst), metrics_summary(o).c_str());
  }

  // Upper bound: no window of length S holds more than burst + rate * S.
  const double interval = 1.0 / rate;
  for (double span : {0.0, interval, 0.1, 0.5, 1.0, 2.0, 5.0}) {
    const auto span_us = static_cast<std::int64_t>(span * 1e6);
    const std::int64_t shrunk = std::max<std::int64_t>(0, span_us - lag_us);
    const std::size_t got = max_in_window(all, shrunk);
    const std::size_t unshrunk = max_in_window(all, span_us);
    const auto bound =
        static_cast<std::size_t>(burst) + static_cast<std::size_t>(std::floor(rate * span + 1e-9));
    std::printf("[accuracy] tb rate=%g burst=%lld span=%.4fs: max %zu in %.4fs (%zu in the full "
                "span), bound %zu\n",
                rate, static_cast<long long>(burst), span, got, shrunk / 1e6, unshrunk, bound);
    EXPECT_LE(got, bound) << "span " << span << " s (checked as " << shrunk << " us)";
  }

  // Lower bound: while all processes hammered, the limiter let the rate
  // through. T is the period in which all four were running (the latest START
  // to the earliest planned END); admissions outside it only add.
  const double overlap = static_cast<double>(min_end - max_start) / 1e6;
  const double whole = static_cast<double>(max_end - min_start) / 1e6;
  const double ideal = static_cast<double>(burst) + rate * overlap;
  const double ideal_whole = static_cast<double>(burst) + rate * whole;
  std::printf("[accuracy] tb rate=%g burst=%lld: total %zu; overlap %.4fs ideal %.1f (%.1f%%); "
              "whole run %.4fs ideal %.1f (%.1f%%); start skew %.1f ms; first admission at first "
              "START%+.1f ms, last at last END%+.1f ms\n",
              rate, static_cast<long long>(burst), all.size(), overlap, ideal,
              100.0 * static_cast<double>(all.size()) / ideal, whole, ideal_whole,
              100.0 * static_cast<double>(all.size()) / ideal_whole,
              static_cast<double>(max_start - min_start) / 1e3,
              static_cast<double>(all.front() - min_start) / 1e3,
              static_cast<double>(all.back() - max_end) / 1e3);
  EXPECT_GE(static_cast<double>(all.size()), 0.95 * ideal)
      << "the limiter (or the CPU-bound client) admitted less than 95% of the rate";
}

TEST(AccuracyTest, TokenBucketAcrossProcessesRate5Burst1) {
  token_bucket_across_processes(5.0, 1, "acc-tb5");
}

TEST(AccuracyTest, TokenBucketAcrossProcessesRate100Burst10) {
  token_bucket_across_processes(100.0, 10, "acc-tb100");
}

TEST(AccuracyTest, TokenBucketAcrossProcessesRate2000Burst50) {
  token_bucket_across_processes(2000.0, 50, "acc-tb2000");
}

// ------------------------------------------------------- sliding window

TEST(AccuracyTest, SlidingWindowAcrossProcesses) {
  ignore_sigpipe();
  redis_server srv;
  constexpr int processes = 4;
  constexpr std::int64_t limit = 20;
  constexpr double window = 0.5, seconds = 5.0;
  std::vector<std::vector<std::string>> argvs;
  for (int i = 0; i < processes; ++i)
    argvs.push_back(driver_args(srv, "acc-sw",
                                {"--algo", "sw", "--limit", std::to_string(limit), "--window",
                                 std::to_string(window), "--seconds", std::to_string(seconds),
                                 "--coroutines", "50", "--mode", "hammer"}));
  const auto outs = run_drivers(argvs, 30s);
  ASSERT_EQ(outs.size(), static_cast<std::size_t>(processes));
  const auto all = merged_admissions(outs);
  for (const auto& o : outs)
    std::printf("[accuracy] sw process: %s\n", metrics_summary(o).c_str());

  // The window is (x - W, x]: a closed printed window of W - lag - 1 us maps
  // to decisions within less than W (see lag_us).
  const auto w_us = static_cast<std::int64_t>(window * 1e6);
  const std::size_t got = max_in_window(all, w_us - lag_us - 1);
  const std::size_t unshrunk = max_in_window(all, w_us - 1);
  std::printf("[accuracy] sw limit=%lld window=%gs: total %zu, max %zu in %.4fs (%zu in %.4fs)\n",
              static_cast<long long>(limit), window, all.size(), got, (w_us - lag_us - 1) / 1e6,
              unshrunk, (w_us - 1) / 1e6);
  EXPECT_LE(got, static_cast<std::size_t>(limit));
  // Not vacuous: the processes did hammer (a batch of `limit` per window).
  EXPECT_GE(static_cast<double>(all.size()), 0.9 * limit * seconds / window);
}

// ------------------------------------------------------- concurrency

TEST(AccuracyTest, ConcurrencyAcrossProcesses) {
  ignore_sigpipe();
  redis_server srv;
  constexpr int processes = 4;
  constexpr std::int64_t max_concurrent = 3;
  std::vector<std::vector<std::string>> argvs;
  for (int i = 0; i < processes; ++i)
    argvs.push_back(driver_args(srv, "acc-cc",
                                {"--algo", "cc", "--max-concurrent", std::to_string(max_concurrent),
                                 "--seconds", "3", "--coroutines", "10", "--hold-ms", "20",
                                 "--mode", "hammer"}));
  const auto outs = run_drivers(argvs, 30s);
  ASSERT_EQ(outs.size(), static_cast<std::size_t>(processes));

  // [E, L] lies inside the real holding time (E after the permit arrived, L
  // before it is given back), so overlapping printed intervals overlapped for
  // real: the bound is exact. On equal times E counts first (closed intervals).
  std::vector<std::pair<std::int64_t, int>> events;
  std::size_t admitted = 0;
  double busy_us = 0;
  for (const auto& o : outs) {
    EXPECT_EQ(o.enters.size(), o.leaves.size());
    admitted += o.admissions.size();
    for (auto t : o.enters)
      events.emplace_back(t, 0); // 0 sorts before 1: enter first
    for (auto t : o.leaves)
      events.emplace_back(t, 1);
    for (std::size_t i = 0; i < std::min(o.enters.size(), o.leaves.size()); ++i)
      busy_us += static_cast<double>(o.leaves[i] - o.enters[i]);
    std::printf("[accuracy] cc process: admitted=%zu max_concurrent_reached=%g avg_wait_ms=%g\n",
                o.admissions.size(), o.metrics.at("max_concurrent_reached"),
                o.metrics.at("avg_wait_ms"));
  }
  std::sort(events.begin(), events.end());
  int held = 0, most = 0;
  for (const auto& [t, kind] : events) {
    held += kind == 0 ? 1 : -1;
    most = std::max(most, held);
  }
  std::printf("[accuracy] cc max_concurrent=%lld: %zu admissions, at most %d held at once, "
              "slot utilisation %.1f%% of %lld slots over 3 s\n",
              static_cast<long long>(max_concurrent), admitted, most,
              100.0 * busy_us / (3e6 * static_cast<double>(max_concurrent)),
              static_cast<long long>(max_concurrent));
  EXPECT_LE(most, max_concurrent);
  EXPECT_EQ(most, max_concurrent) << "the slots were never all in use: not a real test";
  EXPECT_GE(admitted, 30u);
}

// ------------------------------------------------------- leases

// An in-process limiter "acc" on the same store and prefix as the drivers.
struct local_limiter {
  ratesync::registry reg;
  ratesync::limiter lim;
  local_limiter(const redis_server& srv, const std::string& prefix, std::int64_t max_concurrent,
                double lease_seconds)
      : lim(configure(reg, srv, prefix, max_concurrent, lease_seconds)) {}

  static ratesync::limiter configure(ratesync::registry& reg, const redis_server& srv,
                                     const std::string& prefix, std::int64_t max_concurrent,
                                     double lease_seconds) {
    ratesync::store_options s;
    s.engine = "redis";
    s.url = srv.url();
    s.key_prefix = prefix;
    reg.configure_store("redis", s);
    ratesync::limiter_options o;
    o.store = "redis";
    o.max_concurrent = max_concurrent;
    o.lease_seconds = lease_seconds;
    reg.configure_limiter("acc", o);
    return reg.get_limiter("acc");
  }

  // A fail-fast acquire; a permit it gets is given back at once.
  ratesync::acquire_result fail_fast() {
    ratesync::acquire_options o;
    o.timeout = ratesync::seconds_d(0);
    return ratesync::test::run(lim.try_acquire(o));
  }
};

TEST(AccuracyTest, KilledHolderSlotsReturnAfterLease) {
  ignore_sigpipe();
  redis_server srv;
  local_limiter local(srv, "acc-kill", 2, 2.0);
  child a(driver_args(srv, "acc-kill",
                      {"--algo", "cc", "--max-concurrent", "2", "--lease-seconds", "2", "--mode",
                       "hold", "--coroutines", "2", "--seconds", "30"}));
  std::vector<child*> cs{&a};
  ASSERT_TRUE(wait_line(cs, a, "READY", 15s)) << describe(a);
  a.send("GO\n");
  ASSERT_TRUE(wait_line(cs, a, "HELD", 10s)) << describe(a);
  a.kill(SIGKILL);
  const std::int64_t killed = now_us();
  ASSERT_TRUE(a.wait_exit(5s));
  const driver_output out = parse(a);
  ASSERT_EQ(out.admissions.size(), 2u);
  // Both leases were taken (and never renewed: the first renewal is due a
  // third of the lease after each) before the kill.
  const std::int64_t first_lease = out.admissions.front();

  auto r = local.fail_fast();
  EXPECT_FALSE(r.allowed) << "a slot came back at once after SIGKILL";
  EXPECT_EQ(r.reason, ratesync::denial_reason::concurrency_limited);

  std::this_thread::sleep_for(std::chrono::microseconds(killed + 1'500'000 - now_us()));
  r = local.fail_fast();
  EXPECT_FALSE(r.allowed) << "a slot came back 1.5 s after SIGKILL, before lease_seconds (2 s)";

  std::int64_t back = 0;
  while (now_us() < killed + 4'000'000) {
    const std::int64_t tried = now_us();
    if (local.fail_fast().allowed) {
      back = tried;
      break;
    }
    std::this_thread::sleep_for(10ms);
  }
  std::printf("[accuracy] SIGKILL: killed %.1f ms after the first lease; slot back %.1f ms after "
              "the kill, %.1f ms after the first lease (lease_seconds 2)\n",
              (killed - first_lease) / 1e3, (back - killed) / 1e3, (back - first_lease) / 1e3);
  ASSERT_NE(back, 0) << "the slot did not come back within 4 s of the kill";
  // The lease expires 2 s after Redis granted it, which is before the driver
  // printed A (by a round trip at most): allow 5 ms for that.
  EXPECT_GE(back - first_lease, 2'000'000 - 5'000);
  EXPECT_LE(back - killed, 2'500'000);
}

// Holds one permit of a max_concurrent 1 limiter for `hold_s` in a driver
// process while the test keeps trying fail-fast acquires; returns how long
// after the release the slot came back (us), or -1.
struct holder_result {
  std::int64_t held_for = 0;    // us, from the admission to the release
  int refused = 0;              // fail-fast acquires refused while held
  std::int64_t early = 0;       // time of an admission before the release (0: none)
  std::int64_t back_after = -1; // us from the release until a fail-fast acquire got in
};

holder_result hold_and_probe(const std::string& prefix, double lease_s, double hold_s,
                             double linger_ms) {
  redis_server srv;
  local_limiter local(srv, prefix, 1, lease_s);
  child h(driver_args(srv, prefix,
                      {"--algo", "cc", "--max-concurrent", "1", "--lease-seconds",
                       std::to_string(lease_s), "--mode", "hold", "--coroutines", "1", "--seconds",
                       std::to_string(hold_s), "--linger-ms", std::to_string(linger_ms)}));
  std::vector<child*> cs{&h};
  holder_result res;
  if (!wait_line(cs, h, "READY", 15s)) {
    ADD_FAILURE() << describe(h);
    return res;
  }
  h.send("GO\n");
  if (!wait_line(cs, h, "HELD", 10s)) {
    ADD_FAILURE() << describe(h);
    return res;
  }
  // Until the holder says it released ("RELEASED <time just before
  // release()>"), every fail-fast acquire must be refused; one admitted
  // before that time would be a second holder.
  const auto give_up =
      steady::now() + std::chrono::milliseconds(static_cast<int>(hold_s * 1000) + 5000);
  std::optional<std::string> released;
  while (!(released = find_line(h, "RELEASED")) && steady::now() < give_up) {
    const std::int64_t tried = now_us();
    if (local.fail_fast().allowed) {
      pump(cs, 200ms); // did the holder release before we asked?
      released = find_line(h, "RELEASED");
      if (!released || tried < std::stoll(released->substr(9)))
        res.early = tried;
      break;
    }
    ++res.refused;
    pump(cs, 50ms);
  }
  if (!released) {
    ADD_FAILURE() << "no RELEASED line: " << describe(h);
    return res;
  }
  const std::int64_t released_at = std::stoll(released->substr(9));
  res.held_for = released_at - parse(h).admissions.at(0);
  while (now_us() < released_at + 3'000'000) {
    const std::int64_t tried = now_us();
    if (local.fail_fast().allowed) {
      res.back_after = std::max<std::int64_t>(0, tried - released_at);
      break;
    }
    std::this_thread::sleep_for(2ms);
  }
  EXPECT_TRUE(h.wait_exit(5s)) << describe(h);
  return res;
}

// lease_seconds 1, held 3.5 s: the lease is renewed (every third of it), so
// no other process gets the slot meanwhile; after the release it is free.
// The holder stays alive for a second after releasing: this measures the
// release itself (see the next test for a release right before exit).
TEST(AccuracyTest, LiveHolderKeepsSlotPastLease) {
  ignore_sigpipe();
  const holder_result r = hold_and_probe("acc-live", 1.0, 3.5, 1000);
  std::printf("[accuracy] live holder: held %.1f ms with lease_seconds 1, %d fail-fast acquires "
              "refused meanwhile; slot back %.1f ms after the release\n",
              r.held_for / 1e3, r.refused, r.back_after / 1e3);
  EXPECT_EQ(r.early, 0) << "admitted while the live holder still held its slot";
  EXPECT_GE(r.held_for, 3'400'000);
  EXPECT_GE(r.refused, 40);
  ASSERT_GE(r.back_after, 0) << "the released slot did not come back within 3 s";
  EXPECT_LE(r.back_after, 100'000) << "the release did not reach Redis promptly";
}

// A permit released just before its process exits (the registry, and its
// redis store, destroyed right after the release) must free the slot at once,
// not after the lease expires (lease_seconds defaults to 30 s).
// DISABLED: fails today. ~redis_store stops the pool right after the release's
// fire-and-forget ZREM was submitted; connection::stop() closes the stream and
// fails the queued request (shutting_down) before the writer sent it, so the
// slot stays held until its lease expires (measured: 650-910 ms with
// lease_seconds 1, i.e. up to a whole lease). Run it with
// --gtest_also_run_disabled_tests; enable it once the store flushes pending
// releases on shutdown.
TEST(AccuracyTest, ReleaseJustBeforeExitFreesSlot) {
  ignore_sigpipe();
  const holder_result r = hold_and_probe("acc-exit", 1.0, 1.5, 0);
  std::printf("[accuracy] release then exit: slot back %.1f ms after the release "
              "(lease_seconds 1)\n",
              r.back_after / 1e3);
  EXPECT_EQ(r.early, 0);
  ASSERT_GE(r.back_after, 0) << "the released slot did not come back within 3 s";
  EXPECT_LE(r.back_after, 100'000)
      << "the release was lost at shutdown: the slot came back only when its lease expired";
}

// ------------------------------------------------------- faketime

std::optional<std::string> find_program(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string p = path ? path : "/usr/bin:/bin";
  std::istringstream in(p);
  std::string dir;
  while (std::getline(in, dir, ':')) {
    const std::string c = (dir.empty() ? "." : dir) + "/" + name;
    if (::access(c.c_str(), X_OK) == 0)
      return c;
  }
  return std::nullopt;
}

TEST(AccuracyTest, ClientClockTwoDaysOffCannotLoosenLimit) {
  ignore_sigpipe();
  const auto faketime = find_program("faketime");
  ASSERT_TRUE(faketime) << "faketime not found on PATH: apt-get install faketime";
  redis_server srv;
  constexpr double rate = 20.0, seconds = 4.0;
  const std::vector<std::string> common{"--algo",       "tb", "--rate",    "20",
                                        "--burst",      "1",  "--seconds", "4",
                                        "--coroutines", "20", "--mode",    "hammer"};
  std::vector<std::string> skewed{*faketime, "-m", "-f", "-2d"};
  const auto d = driver_args(srv, "acc-faketime", common);
  skewed.insert(skewed.end(), d.begin(), d.end());
  const auto outs = run_drivers({skewed, d}, 30s);
  ASSERT_EQ(outs.size(), 2u);
  // The skewed process really lives two days in the past.
  const double skew_s = static_cast<double>(outs[1].start - outs[0].start) / 1e6;
  EXPECT_NEAR(skew_s, 2 * 86400.0, 60.0) << "faketime did not shift the driver's clock";
  const std::size_t total = outs[0].admissions.size() + outs[1].admissions.size();
  const double ideal = 1 + rate * seconds;
  std::printf("[accuracy] faketime: clock skew %.1f s; skewed process %zu, normal process %zu, "
              "total %zu (ideal %.0f)\n",
              skew_s, outs[0].admissions.size(), outs[1].admissions.size(), total, ideal);
  // +2: the two processes start a few ms apart (one more slot at most) and
  // the last slot may fall exactly on the end.
  EXPECT_LE(static_cast<double>(total), ideal + 2);
  EXPECT_GE(static_cast<double>(total), 0.9 * ideal);
}

// ------------------------------------------------------- one call per waiter

TEST(AccuracyTest, WaitersAdmittedAtReservedTimesWithOneScriptCallEach) {
  ignore_sigpipe();
  redis_server srv;
  constexpr int waiters = 20;
  // timing_margin_ms 0: the margin delays every waiting admission but not the
  // first, immediate one, so with the default 10 ms the first gap is 30 ms.
  const auto argv =
      driver_args(srv, "acc-waiters",
                  {"--algo", "tb", "--rate", "50", "--burst", "1", "--margin-ms", "0", "--seconds",
                   "3", "--coroutines", std::to_string(waiters), "--mode", "once"});
  // The driver's warm-up (READY) has loaded the script; the statistics start
  // after it, so only the 20 waiters' calls are counted.
  const auto outs = run_drivers({argv}, 15s, [&] {
    ASSERT_EQ(srv.command({"CONFIG", "RESETSTAT"}), "+OK");
  });
  ASSERT_EQ(outs.size(), 1u);
  auto t = outs[0].admissions;
  ASSERT_EQ(t.size(), static_cast<std::size_t>(waiters));
  std::sort(t.begin(), t.end());
  std::string gaps;
  for (std::size_t i = 1; i < t.size(); ++i) {
    const double gap_ms = static_cast<double>(t[i] - t[i - 1]) / 1e3;
    gaps += (i > 1 ? " " : "") + std::to_string(gap_ms).substr(0, 5);
    EXPECT_NEAR(gap_ms, 20.0, 8.0) << "gap " << i;
  }
  const std::string stats = srv.command({"INFO", "commandstats"});
  auto count = [&](const std::string& name) -> long long {
    const auto at = stats.find(name + ":calls=");
    return at == std::string::npos ? 0 : std::stoll(stats.substr(at + name.size() + 7));
  };
  const std::string errors = srv.command({"INFO", "errorstats"});
  const long long evalsha = count("cmdstat_evalsha");
  const long long script = count("cmdstat_script");
  const long long eval = count("cmdstat_eval");
  std::printf("[accuracy] waiters: gaps (ms) %s; evalsha calls %lld, eval calls %lld, script "
              "calls %lld\n",
              gaps.c_str(), evalsha, eval, script);
  // One EVALSHA per waiter: the wait is reserved by the call and slept by the
  // client. The warm-up loaded the script before RESETSTAT, so NOSCRIPT is not
  // expected; were the cache flushed, the first EVALSHA would fail with
  // NOSCRIPT and be answered by a fallback (EVAL, or SCRIPT LOAD and a second
  // EVALSHA): at most 21 EVALSHA calls, and only with a NOSCRIPT error counted.
  EXPECT_GE(evalsha, waiters);
  EXPECT_LE(evalsha, waiters + 1);
  if (evalsha == waiters + 1) {
    EXPECT_NE(errors.find("errorstat_NOSCRIPT"), std::string::npos)
        << "an extra EVALSHA without NOSCRIPT\n"
        << stats;
  }
}

} // namespace

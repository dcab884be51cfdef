// Runs an example program against a private redis-server (tests/redis_server.hpp)
// and checks what it printed:
//
//   run_example_with_redis [--arg ARG]... EXAMPLE [EXPECTED]...
//
// starts the server, runs `EXAMPLE [ARG]... redis://127.0.0.1:PORT/0` (with
// REDIS_URL set to the same URL), and succeeds when the example exits 0 within
// 60 s and its standard output contains every EXPECTED text. The output is
// echoed for ctest's log. (The bench_smoke test runs bench/run_api_bench.sh
// --smoke this way.)
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include "redis_server.hpp"

extern char** environ;

namespace {

struct outcome {
  int status = -1;
  bool timed_out = false;
  std::string output;
};

outcome run(const std::string& exe, const std::vector<std::string>& args,
            std::chrono::seconds limit) {
  int pipe_fds[2];
  if (::pipe(pipe_fds) != 0)
    throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 1);
  posix_spawn_file_actions_addclose(&actions, pipe_fds[0]);
  posix_spawn_file_actions_addclose(&actions, pipe_fds[1]);
  std::vector<char*> argv{const_cast<char*>(exe.c_str())};
  for (const auto& a : args)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, exe.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(pipe_fds[1]);
  if (rc != 0) {
    ::close(pipe_fds[0]);
    throw std::runtime_error("cannot run " + exe + ": " + std::strerror(rc));
  }
  outcome out;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  char buf[4096];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) {
      out.timed_out = true;
      ::kill(pid, SIGKILL);
      break;
    }
    pollfd p{pipe_fds[0], POLLIN, 0};
    const int n = ::poll(&p, 1, static_cast<int>(left));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      continue; // the deadline is checked above
    const ssize_t got = ::read(pipe_fds[0], buf, sizeof buf);
    if (got < 0 && errno == EINTR)
      continue;
    if (got <= 0)
      break; // EOF: the example closed its output
    out.output.append(buf, static_cast<std::size_t>(got));
  }
  ::close(pipe_fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  out.status = status;
  return out;
}

} // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args;
  int first = 1;
  while (first + 1 < argc && std::strcmp(argv[first], "--arg") == 0) {
    args.emplace_back(argv[first + 1]);
    first += 2;
  }
  if (first >= argc) {
    std::fprintf(stderr, "usage: %s [--arg ARG]... EXAMPLE [EXPECTED]...\n", argv[0]);
    return 2;
  }
  try {
    ratesync::test::redis_server srv;
    const std::string url = srv.url() + "/0";
    ::setenv("REDIS_URL", url.c_str(), 1);
    args.push_back(url);
    const outcome r = run(argv[first], args, std::chrono::seconds(60));
    std::string command = argv[first];
    for (const auto& a : args)
      command += " " + a;
    std::printf("$ %s\n%s", command.c_str(), r.output.c_str());
    int failures = 0;
    if (r.timed_out) {
      std::printf("FAIL: still running after 60 s (killed)\n");
      ++failures;
    } else if (!WIFEXITED(r.status) || WEXITSTATUS(r.status) != 0) {
      std::printf("FAIL: the example %s %d\n",
                  WIFEXITED(r.status) ? "exited with status" : "was killed by signal",
                  WIFEXITED(r.status) ? WEXITSTATUS(r.status) : WTERMSIG(r.status));
      ++failures;
    }
    for (int i = first + 1; i < argc; ++i) {
      if (r.output.find(argv[i]) == std::string::npos) {
        std::printf("FAIL: no output line contains \"%s\"\n", argv[i]);
        ++failures;
      }
    }
    if (failures == 0)
      std::printf("OK: exit status 0 and %d expected text(s) found\n", argc - first - 1);
    return failures == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "run_example_with_redis: %s\n", e.what());
    return 1;
  }
}

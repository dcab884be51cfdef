// The test fixture itself: a private redis-server with TCP, unix socket, TLS,
// passwords and ACL users, stop/start/kill/pause, and nothing left behind.
#include "redis_server.hpp"

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <gtest/gtest.h>
#include <string>
#include <sys/wait.h>
#include <vector>

namespace {

using ratesync::test::redis_server;
using ratesync::test::redis_server_options;
using ratesync::test::redis_server_timeout;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  }
  return out + "'";
}

struct shell_result {
  int status = -1; // exit status, -1 if it did not exit normally
  std::string output;
};

// Runs a shell command line, stdout and stderr together.
shell_result sh(const std::string& cmd) {
  shell_result r;
  FILE* p = ::popen((cmd + " </dev/null 2>&1").c_str(), "r");
  if (p == nullptr) {
    return r;
  }
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) {
    r.output.append(buf, n);
  }
  int st = ::pclose(p);
  r.status = (st != -1 && WIFEXITED(st)) ? WEXITSTATUS(st) : -1;
  while (!r.output.empty() && (r.output.back() == '\n' || r.output.back() == '\r')) {
    r.output.pop_back();
  }
  return r;
}

// redis-cli, never interactive, never hanging (coreutils timeout).
shell_result cli(const std::string& args) {
  return sh("timeout 10 redis-cli --no-auth-warning " + args);
}

bool have_redis_cli() {
  return sh("command -v redis-cli").status == 0;
}

#define REQUIRE_REDIS_CLI()                                                                        \
  ASSERT_TRUE(have_redis_cli())                                                                    \
      << "redis-cli not found: install it with `apt-get install redis-server redis-tools`"

bool process_exists(pid_t pid) {
  return ::kill(pid, 0) == 0 || errno != ESRCH;
}

TEST(RedisServer, CommandsOverTcpAndUnixSocket) {
  REQUIRE_REDIS_CLI();
  redis_server srv;
  EXPECT_GT(srv.port(), 0);
  EXPECT_EQ(srv.tls_port(), 0);
  EXPECT_TRUE(srv.running());
  EXPECT_GT(srv.pid(), 0);
  EXPECT_EQ(srv.url(), "redis://127.0.0.1:" + std::to_string(srv.port()));
  EXPECT_EQ(srv.unix_url(), "unix://" + srv.unix_path());
  EXPECT_THROW((void)srv.tls_url(), std::logic_error);

  EXPECT_EQ(srv.command({"PING"}), "+PONG");
  EXPECT_EQ(srv.command({"SET", "greeting", "hello"}), "+OK");
  EXPECT_EQ(srv.command({"GET", "greeting"}), "$5 hello");
  EXPECT_EQ(srv.command({"GET", "missing"}), "$-1");
  EXPECT_EQ(srv.command({"INCRBY", "n", "3"}), ":3");
  EXPECT_EQ(srv.command({"RPUSH", "list", "a", "bc"}), ":2");
  EXPECT_EQ(srv.command({"LRANGE", "list", "0", "-1"}), "*2 [$1 a, $2 bc]");
  EXPECT_EQ(srv.command({"LRANGE", "nolist", "0", "-1"}), "*0 []");
  EXPECT_EQ(srv.command({"DBSIZE"}), ":3");
  EXPECT_EQ(srv.command({"SET", "ttl", "x", "EX", "100"}), "+OK");
  EXPECT_EQ(srv.command({"TTL", "ttl"}), ":100");
  EXPECT_EQ(srv.command({"NOSUCHCOMMAND"}).rfind("-ERR unknown command", 0), 0u);

  // Binary-safe arguments and the parsed form.
  std::string binary("a\0b\r\nc", 6);
  EXPECT_EQ(srv.command({"SET", "bin", binary}), "+OK");
  auto r = srv.query({"GET", "bin"});
  EXPECT_EQ(r.kind, redis_server::reply::type::bulk);
  EXPECT_EQ(r.str, binary);
  EXPECT_EQ(srv.query({"INCR", "n"}).integer, 4);

  // What the other tests use it for.
  EXPECT_EQ(srv.command({"CONFIG", "RESETSTAT"}), "+OK");
  EXPECT_EQ(srv.command({"SCRIPT", "FLUSH"}), "+OK");
  EXPECT_EQ(srv.command({"INFO", "commandstats"}).rfind("$", 0), 0u);
  EXPECT_EQ(srv.command({"CONFIG", "SET", "maxmemory", "2mb"}), "+OK");
  EXPECT_EQ(srv.command({"CONFIG", "GET", "maxmemory"}), "*2 [$9 maxmemory, $7 2097152]");
  EXPECT_EQ(srv.command({"DEBUG", "SLEEP", "0"}), "+OK");

  EXPECT_TRUE(std::filesystem::is_socket(srv.unix_path()));
  EXPECT_EQ(cli("-s " + quote(srv.unix_path()) + " GET greeting").output, "hello");
  EXPECT_EQ(cli("-p " + std::to_string(srv.port()) + " GET greeting").output, "hello");
  EXPECT_NE(srv.log_tail().find("Ready to accept connections"), std::string::npos);
}

TEST(RedisServer, ExtraArgsOverrideDefaults) {
  redis_server srv({.extra_args = {"--maxmemory", "1mb", "--maxmemory-policy", "noeviction"}});
  EXPECT_EQ(srv.command({"CONFIG", "GET", "maxmemory"}), "*2 [$9 maxmemory, $7 1048576]");
  EXPECT_EQ(srv.command({"CONFIG", "GET", "maxmemory-policy"}),
            "*2 [$16 maxmemory-policy, $10 noeviction]");
  EXPECT_EQ(srv.command({"CONFIG", "GET", "save"}), "*2 [$4 save, $0 ]");
  EXPECT_EQ(srv.command({"CONFIG", "GET", "appendonly"}), "*2 [$10 appendonly, $2 no]");
}

TEST(RedisServer, TwoServersAtOnceAreIndependent) {
  redis_server a;
  redis_server b;
  EXPECT_NE(a.port(), b.port());
  EXPECT_NE(a.dir(), b.dir());
  EXPECT_NE(a.unix_path(), b.unix_path());
  a.command({"SET", "k", "a"});
  EXPECT_EQ(b.command({"GET", "k"}), "$-1");
}

TEST(RedisServer, TlsWithTheRightCaOnly) {
  REQUIRE_REDIS_CLI();
  redis_server srv({.tls = true});
  ASSERT_GT(srv.tls_port(), 0);
  EXPECT_NE(srv.tls_port(), srv.port());
  EXPECT_EQ(srv.tls_url(), "rediss://127.0.0.1:" + std::to_string(srv.tls_port()));
  for (const auto& f : {srv.ca_file(), srv.other_ca_file(), srv.server_cert_file(),
                        srv.server_key_file(), srv.client_cert_file(), srv.client_key_file()}) {
    EXPECT_TRUE(std::filesystem::is_regular_file(f)) << f;
  }
  const std::string port = " -p " + std::to_string(srv.tls_port());

  auto ok = cli("--tls --cacert " + quote(srv.ca_file()) + port + " PING");
  EXPECT_EQ(ok.status, 0) << ok.output;
  EXPECT_EQ(ok.output, "PONG");
  // The certificate names localhost too.
  auto by_name = cli("--tls --cacert " + quote(srv.ca_file()) + " -h localhost --sni localhost" +
                     port + " PING");
  EXPECT_EQ(by_name.output, "PONG");

  auto wrong = cli("--tls --cacert " + quote(srv.other_ca_file()) + port + " PING");
  EXPECT_EQ(wrong.output.find("PONG"), std::string::npos) << wrong.output;
  EXPECT_NE(wrong.status, 0) << wrong.output;

  // Plain RESP on the TLS port gets nowhere; the plain port still works.
  EXPECT_NE(cli(port + " -t 1 PING").output, "PONG");
  EXPECT_EQ(srv.command({"PING"}), "+PONG");
}

TEST(RedisServer, TlsClientCertificateRequired) {
  REQUIRE_REDIS_CLI();
  redis_server srv({.tls = true, .tls_require_client_cert = true});
  const std::string base =
      "--tls --cacert " + quote(srv.ca_file()) + " -p " + std::to_string(srv.tls_port());

  auto without = cli(base + " PING");
  EXPECT_EQ(without.output.find("PONG"), std::string::npos) << without.output;

  auto with = cli(base + " --cert " + quote(srv.client_cert_file()) + " --key " +
                  quote(srv.client_key_file()) + " PING");
  EXPECT_EQ(with.output, "PONG");
}

TEST(RedisServer, PasswordAndAclUser) {
  REQUIRE_REDIS_CLI();
  redis_server srv(
      {.requirepass = "s3cret",
       .acl_lines = {"user app on >apppass ~rate_limit:* +@all", "reader on >r ~* +get"}});
  const std::string port = " -p " + std::to_string(srv.port());

  EXPECT_EQ(srv.command({"PING"}), "+PONG"); // the fixture sends AUTH itself
  EXPECT_EQ(cli(port + " -a s3cret PING").output, "PONG");
  EXPECT_EQ(cli(port + " PING").output.find("NOAUTH"), 0u);
  EXPECT_NE(cli(port + " -a wrong PING").output, "PONG");

  const std::string app = port + " --user app --pass apppass ";
  EXPECT_EQ(cli(app + "SET rate_limit:x 1").output, "OK");
  EXPECT_EQ(cli(app + "SET other 1").output.find("NOPERM"), 0u);
  EXPECT_EQ(cli("-s " + quote(srv.unix_path()) + " --user reader --pass r GET rate_limit:x").output,
            "1");
  EXPECT_EQ(srv.command({"GET", "rate_limit:x"}), "$1 1");
  EXPECT_EQ(srv.command({"ACL", "WHOAMI"}), "$7 default");
}

TEST(RedisServer, StopAndStartOnTheSamePorts) {
  redis_server srv({.tls = true});
  const int port = srv.port();
  const int tls_port = srv.tls_port();
  const pid_t old_pid = srv.pid();
  srv.command({"SET", "k", "v"});

  srv.stop();
  EXPECT_FALSE(srv.running());
  EXPECT_EQ(srv.pid(), -1);
  EXPECT_FALSE(process_exists(old_pid));
  EXPECT_THROW(srv.command({"PING"}, 500ms), std::runtime_error);
  srv.stop(); // idempotent

  srv.start();
  EXPECT_TRUE(srv.running());
  EXPECT_NE(srv.pid(), old_pid);
  EXPECT_EQ(srv.port(), port);
  EXPECT_EQ(srv.tls_port(), tls_port);
  EXPECT_EQ(srv.command({"PING"}), "+PONG");
  EXPECT_EQ(srv.command({"DBSIZE"}), ":0"); // no persistence
  srv.start();                              // no-op while running
  EXPECT_EQ(srv.port(), port);
}

TEST(RedisServer, PauseMakesCommandsTimeOut) {
  redis_server srv;
  srv.pause();
  EXPECT_TRUE(srv.paused());
  auto t0 = steady::now();
  EXPECT_THROW(srv.command({"PING"}, 300ms), redis_server_timeout);
  auto waited = steady::now() - t0;
  EXPECT_GE(waited, 290ms);
  EXPECT_LT(waited, 2s);

  srv.resume();
  EXPECT_FALSE(srv.paused());
  EXPECT_EQ(srv.command({"PING"}), "+PONG");

  // A paused server still stops promptly (SIGTERM + SIGCONT).
  srv.pause();
  t0 = steady::now();
  srv.stop();
  EXPECT_LT(steady::now() - t0, 2s);
  EXPECT_FALSE(srv.running());
}

TEST(RedisServer, KillAndRestart) {
  redis_server srv;
  const pid_t old_pid = srv.pid();
  srv.kill();
  EXPECT_EQ(srv.pid(), -1);
  EXPECT_FALSE(process_exists(old_pid)); // reaped: not even a zombie
  EXPECT_THROW(srv.command({"PING"}, 500ms), std::runtime_error);
  srv.kill(); // no-op

  srv.start(); // over the stale unix socket file
  EXPECT_EQ(srv.command({"PING"}), "+PONG");
  EXPECT_TRUE(std::filesystem::is_socket(srv.unix_path()));
}

TEST(RedisServer, MissingRedisServerFailsWithInstallHint) {
  ::setenv("RATESYNC_REDIS_SERVER", "/nonexistent/redis-server", 1);
  try {
    redis_server srv;
    ADD_FAILURE() << "started without a redis-server";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "redis-server not found: install it with "
                           "`apt-get install redis-server redis-tools`");
  }
  ::unsetenv("RATESYNC_REDIS_SERVER");
}

TEST(RedisServer, StartupErrorsCarryTheLog) {
  try {
    redis_server srv({.extra_args = {"--no-such-option", "1"}});
    ADD_FAILURE() << "started with a bad option";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("no-such-option"), std::string::npos) << e.what();
  }
}

TEST(RedisServer, DestructorLeavesNothingBehind) {
  pid_t pid = -1;
  pid_t paused_pid = -1;
  std::string dir;
  std::string paused_dir;
  {
    redis_server srv;
    pid = srv.pid();
    dir = srv.dir();
    EXPECT_TRUE(process_exists(pid));
    EXPECT_TRUE(std::filesystem::is_directory(dir));

    redis_server paused;
    paused_pid = paused.pid();
    paused_dir = paused.dir();
    paused.pause();
  }
  EXPECT_FALSE(process_exists(pid));
  EXPECT_FALSE(process_exists(paused_pid));
  EXPECT_FALSE(std::filesystem::exists(dir));
  EXPECT_FALSE(std::filesystem::exists(paused_dir));
}

} // namespace

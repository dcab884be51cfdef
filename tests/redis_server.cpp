// See redis_server.hpp. Standard library and POSIX (plus two Linux calls:
// prctl(PR_SET_PDEATHSIG) and close_range) only.
#include "redis_server.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <netinet/in.h>
#include <poll.h>
#include <sstream>
#include <string_view>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <utility>

namespace ratesync::test {
namespace {

using sclock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr auto ready_timeout = 10s;
constexpr auto stop_grace = 3s;

std::runtime_error sys_error(const std::string& what) {
  return std::runtime_error(what + ": " + std::strerror(errno));
}

class fd_guard {
public:
  explicit fd_guard(int fd = -1) : fd_(fd) {}
  fd_guard(fd_guard&& o) noexcept : fd_(o.release()) {}
  fd_guard& operator=(fd_guard&& o) noexcept {
    if (this != &o) {
      reset(o.release());
    }
    return *this;
  }
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;
  ~fd_guard() { reset(); }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    if (fd_ >= 0) {
      ::close(fd_);
    }
    fd_ = fd;
  }

private:
  int fd_;
};

bool is_executable_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

std::optional<std::string> find_program(const std::string& name) {
  if (const char* path = std::getenv("PATH")) {
    std::string_view rest(path);
    while (true) {
      auto colon = rest.find(':');
      std::string dir(rest.substr(0, colon));
      std::string candidate = (dir.empty() ? std::string(".") : dir) + "/" + name;
      if (is_executable_file(candidate)) {
        return candidate;
      }
      if (colon == std::string_view::npos) {
        break;
      }
      rest.remove_prefix(colon + 1);
    }
  }
  if (std::string fallback = "/usr/bin/" + name; is_executable_file(fallback)) {
    return fallback;
  }
  return std::nullopt;
}

std::string read_file_from(const std::string& path, std::uintmax_t offset = 0) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return {};
  }
  in.seekg(static_cast<std::streamoff>(offset));
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::uintmax_t file_size_or_zero(const std::string& path) {
  std::error_code ec;
  auto n = std::filesystem::file_size(path, ec);
  return ec ? 0 : n;
}

std::string last_lines(const std::string& text, std::size_t lines) {
  std::size_t end = text.size();
  while (end > 0 && text[end - 1] == '\n') {
    --end;
  }
  std::size_t begin = end;
  for (std::size_t n = 0; begin > 0; --begin) {
    if (text[begin - 1] == '\n' && ++n == lines) {
      break;
    }
  }
  return text.substr(begin, end - begin);
}

// Fork and exec `exe args...` with stdin from /dev/null, stdout and stderr
// appended to `output`, no other descriptors, default signal handling, and
// SIGKILL when the starting thread dies.
pid_t spawn(const std::string& exe, const std::vector<std::string>& args,
            const std::string& output) {
  // Everything the child touches is prepared here: after fork() in a possibly
  // multi-threaded process only async-signal-safe calls are allowed.
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(exe.c_str()));
  for (const auto& a : args) {
    argv.push_back(const_cast<char*>(a.c_str()));
  }
  argv.push_back(nullptr);
  fd_guard out(::open(output.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  if (out.get() < 0) {
    throw sys_error("redis_server: cannot open " + output);
  }
  fd_guard null_in(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (null_in.get() < 0) {
    throw sys_error("redis_server: cannot open /dev/null");
  }
  long max_fd = ::sysconf(_SC_OPEN_MAX);
  max_fd = max_fd < 0 ? 1024 : std::min(max_fd, 65536L);
  const pid_t parent = ::getpid();

  const pid_t pid = ::fork();
  if (pid == 0) {
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) {
      ::_exit(127);
    }
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int sig : {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD, SIGUSR1, SIGUSR2}) {
      ::signal(sig, SIG_DFL);
    }
    if (::dup2(null_in.get(), 0) < 0 || ::dup2(out.get(), 1) < 0 || ::dup2(out.get(), 2) < 0) {
      ::_exit(127);
    }
    // Keep none of the test's sockets alive in the server.
    if (::syscall(SYS_close_range, 3U, ~0U, 0U) != 0) {
      for (long fd = 3; fd < max_fd; ++fd) {
        ::close(static_cast<int>(fd));
      }
    }
    ::execv(exe.c_str(), argv.data());
    ::_exit(127);
  }
  if (pid < 0) {
    throw sys_error("redis_server: fork");
  }
  return pid;
}

// waitpid(pid) without WNOHANG, retrying on EINTR; ECHILD counts as reaped.
int wait_blocking(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      return -1;
    }
  }
  return status;
}

// True when the child has exited (and is reaped) within `timeout`.
bool wait_exit(pid_t pid, std::chrono::milliseconds timeout, int* status = nullptr) {
  const auto deadline = sclock::now() + timeout;
  while (true) {
    int st = 0;
    pid_t r = ::waitpid(pid, &st, WNOHANG);
    if (r == pid || (r < 0 && errno == ECHILD)) {
      if (status != nullptr) {
        *status = st;
      }
      return true;
    }
    if (sclock::now() >= deadline) {
      return false;
    }
    std::this_thread::sleep_for(5ms);
  }
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) {
    return "exited with status " + std::to_string(WEXITSTATUS(status));
  }
  if (WIFSIGNALED(status)) {
    return "killed by signal " + std::to_string(WTERMSIG(status));
  }
  return "ended";
}

void run_tool(const std::string& exe, const std::vector<std::string>& args,
              const std::string& output) {
  const auto before = file_size_or_zero(output);
  const pid_t pid = spawn(exe, args, output);
  const int status = wait_blocking(pid);
  if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::string cmd = exe;
    for (const auto& a : args) {
      cmd += " " + a;
    }
    throw std::runtime_error("redis_server: `" + cmd + "` failed (" + describe_status(status) +
                             "):\n" + last_lines(read_file_from(output, before), 20));
  }
}

// ---- Minimal blocking RESP2 client with one deadline for the whole exchange.

int remaining_ms(sclock::time_point deadline) {
  auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - sclock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left, 1 << 30));
}

// Waits for `events` on fd; false on timeout.
bool wait_fd(int fd, short events, sclock::time_point deadline) {
  while (true) {
    pollfd p{fd, events, 0};
    int r = ::poll(&p, 1, remaining_ms(deadline));
    if (r > 0) {
      return true;
    }
    if (r == 0) {
      return false;
    }
    if (errno != EINTR) {
      throw sys_error("redis_server: poll");
    }
  }
}

class resp_connection {
public:
  resp_connection(const sockaddr* addr, socklen_t len, sclock::time_point deadline,
                  std::string where)
      : deadline_(deadline), where_(std::move(where)) {
    fd_.reset(::socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (fd_.get() < 0) {
      throw sys_error("redis_server: socket");
    }
    if (::connect(fd_.get(), addr, len) == 0) {
      return;
    }
    if (errno != EINPROGRESS) {
      throw sys_error("redis_server: connect to " + where_);
    }
    if (!wait_fd(fd_.get(), POLLOUT, deadline_)) {
      throw redis_server_timeout("redis_server: timed out connecting to " + where_);
    }
    int err = 0;
    socklen_t err_len = sizeof err;
    if (::getsockopt(fd_.get(), SOL_SOCKET, SO_ERROR, &err, &err_len) != 0) {
      throw sys_error("redis_server: getsockopt");
    }
    if (err != 0) {
      errno = err;
      throw sys_error("redis_server: connect to " + where_);
    }
  }

  void send_command(const std::vector<std::string>& args) {
    // Appended piece by piece: g++ 12 -O3 reports a false -Wrestrict on
    // "literal" + std::to_string(...).
    std::string out = "*";
    out += std::to_string(args.size());
    out += "\r\n";
    for (const auto& a : args) {
      out += '$';
      out += std::to_string(a.size());
      out += "\r\n";
      out += a;
      out += "\r\n";
    }
    std::size_t sent = 0;
    while (sent < out.size()) {
      ssize_t n = ::send(fd_.get(), out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
      if (n > 0) {
        sent += static_cast<std::size_t>(n);
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (!wait_fd(fd_.get(), POLLOUT, deadline_)) {
          throw redis_server_timeout("redis_server: timed out sending to " + where_);
        }
      } else {
        throw sys_error("redis_server: send to " + where_);
      }
    }
  }

  redis_server::reply read_reply() {
    using type = redis_server::reply::type;
    redis_server::reply r;
    std::string line = read_line();
    if (line.empty()) {
      throw std::runtime_error("redis_server: empty reply line from " + where_);
    }
    const char tag = line[0];
    std::string body = line.substr(1);
    switch (tag) {
    case '+':
      r.kind = type::status;
      r.str = std::move(body);
      return r;
    case '-':
      r.kind = type::error;
      r.str = std::move(body);
      return r;
    case ':':
      r.kind = type::integer;
      r.integer = std::stoll(body);
      return r;
    case '$': {
      long long n = std::stoll(body);
      if (n < 0) {
        r.kind = type::nil;
        return r;
      }
      r.kind = type::bulk;
      r.str = read_exact(static_cast<std::size_t>(n) + 2);
      r.str.resize(static_cast<std::size_t>(n));
      return r;
    }
    case '*': {
      long long n = std::stoll(body);
      if (n < 0) {
        r.kind = type::nil_array;
        return r;
      }
      r.kind = type::array;
      for (long long i = 0; i < n; ++i) {
        r.elements.push_back(read_reply());
      }
      return r;
    }
    default:
      throw std::runtime_error("redis_server: unexpected reply from " + where_ + ": " + line);
    }
  }

private:
  void fill() {
    char chunk[16384];
    while (true) {
      ssize_t n = ::recv(fd_.get(), chunk, sizeof chunk, 0);
      if (n > 0) {
        buf_.append(chunk, static_cast<std::size_t>(n));
        return;
      }
      if (n == 0) {
        throw std::runtime_error("redis_server: connection to " + where_ + " closed by the server");
      }
      if (errno == EINTR) {
        continue;
      }
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        throw sys_error("redis_server: recv from " + where_);
      }
      if (!wait_fd(fd_.get(), POLLIN, deadline_)) {
        throw redis_server_timeout("redis_server: timed out waiting for a reply from " + where_);
      }
    }
  }

  std::string read_line() {
    while (true) {
      auto eol = buf_.find("\r\n", pos_);
      if (eol != std::string::npos) {
        std::string line = buf_.substr(pos_, eol - pos_);
        pos_ = eol + 2;
        return line;
      }
      fill();
    }
  }

  std::string read_exact(std::size_t n) {
    while (buf_.size() - pos_ < n) {
      fill();
    }
    std::string out = buf_.substr(pos_, n);
    pos_ += n;
    return out;
  }

  fd_guard fd_;
  sclock::time_point deadline_;
  std::string where_;
  std::string buf_;
  std::size_t pos_ = 0;
};

resp_connection connect_tcp(int port, sclock::time_point deadline) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  return resp_connection(reinterpret_cast<const sockaddr*>(&addr), sizeof addr, deadline,
                         "127.0.0.1:" + std::to_string(port));
}

resp_connection connect_unix(const std::string& path, sclock::time_point deadline) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return resp_connection(reinterpret_cast<const sockaddr*>(&addr), sizeof addr, deadline, path);
}

// A PING answered the way a live server of ours answers it.
bool is_alive_reply(const redis_server::reply& r) {
  using type = redis_server::reply::type;
  return (r.kind == type::status && r.str == "PONG") ||
         (r.kind == type::error && r.str.rfind("NOAUTH", 0) == 0);
}

} // namespace

// ---- reply

std::string redis_server::reply::to_string() const {
  switch (kind) {
  case type::status:
    return "+" + str;
  case type::error:
    return "-" + str;
  case type::integer:
    return ":" + std::to_string(integer);
  case type::bulk:
    return "$" + std::to_string(str.size()) + " " + str;
  case type::nil:
    return "$-1";
  case type::nil_array:
    return "*-1";
  case type::array: {
    std::string out = "*" + std::to_string(elements.size()) + " [";
    for (std::size_t i = 0; i < elements.size(); ++i) {
      if (i > 0) {
        out += ", ";
      }
      out += elements[i].to_string();
    }
    return out + "]";
  }
  }
  return "?";
}

// ---- redis_server

redis_server::redis_server(redis_server_options options) : options_(std::move(options)) {
  // RATESYNC_REDIS_SERVER=/path/to/redis-server picks another build.
  std::optional<std::string> exe;
  if (const char* env = std::getenv("RATESYNC_REDIS_SERVER"); env != nullptr && *env != '\0') {
    if (is_executable_file(env)) {
      exe = env;
    }
  } else {
    exe = find_program("redis-server");
  }
  if (!exe) {
    throw std::runtime_error(
        "redis-server not found: install it with `apt-get install redis-server redis-tools`");
  }
  exe_ = *exe;

  // The unix socket path must fit in sockaddr_un::sun_path (108 bytes).
  std::string root = "/tmp";
  if (const char* t = std::getenv("TMPDIR"); t != nullptr && *t != '\0' && std::strlen(t) < 60) {
    root = t;
  }
  std::string templ = root + "/ratesync-redis-XXXXXX";
  if (::mkdtemp(templ.data()) == nullptr) {
    throw sys_error("redis_server: mkdtemp " + templ);
  }
  dir_ = templ;
  unix_path_ = dir_ + "/redis.sock";

  try {
    if (options_.tls) {
      make_certificates();
    }
    write_config();
    start();
  } catch (...) {
    try {
      kill();
    } catch (...) {
    }
    remove_dir();
    throw;
  }
}

redis_server::~redis_server() {
  try {
    stop();
  } catch (...) {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      wait_blocking(pid_);
    }
  }
  remove_dir();
}

void redis_server::remove_dir() noexcept {
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

std::string redis_server::url() const {
  return "redis://127.0.0.1:" + std::to_string(port_);
}

std::string redis_server::tls_url() const {
  if (tls_port_ == 0) {
    throw std::logic_error("redis_server::tls_url: started without options.tls");
  }
  return "rediss://127.0.0.1:" + std::to_string(tls_port_);
}

std::string redis_server::unix_url() const {
  return "unix://" + unix_path_;
}

std::string redis_server::log_tail(std::size_t lines) const {
  return last_lines(read_file_from(log_file()), lines);
}

void redis_server::pick_ports() {
  // Hold every probe socket until all ports are known, so they differ.
  std::vector<fd_guard> probes;
  std::vector<int> ports;
  const int count = options_.tls ? 2 : 1;
  for (int i = 0; i < count; ++i) {
    fd_guard s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (s.get() < 0) {
      throw sys_error("redis_server: socket");
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof addr;
    if (::bind(s.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
        ::getsockname(s.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      throw sys_error("redis_server: picking a free port");
    }
    ports.push_back(ntohs(addr.sin_port));
    probes.push_back(std::move(s));
  }
  port_ = ports[0];
  tls_port_ = options_.tls ? ports[1] : 0;
}

void redis_server::make_certificates() {
  auto openssl = find_program("openssl");
  if (!openssl) {
    throw std::runtime_error("openssl not found: install it with `apt-get install openssl`");
  }
  const std::string cnf = dir_ + "/openssl.cnf";
  {
    std::ofstream out(cnf);
    out << "[req]\n"
           "distinguished_name = dn\n"
           "prompt = no\n"
           "[dn]\n"
           "CN = ratesync-test\n"
           "[v3_ca]\n"
           "basicConstraints = critical, CA:TRUE\n"
           "keyUsage = critical, keyCertSign, cRLSign\n"
           "subjectKeyIdentifier = hash\n"
           "[v3_server]\n"
           "basicConstraints = critical, CA:FALSE\n"
           "keyUsage = critical, digitalSignature, keyEncipherment\n"
           "extendedKeyUsage = serverAuth\n"
           "subjectAltName = IP:127.0.0.1, DNS:localhost\n"
           "subjectKeyIdentifier = hash\n"
           "authorityKeyIdentifier = keyid\n"
           "[v3_client]\n"
           "basicConstraints = critical, CA:FALSE\n"
           "keyUsage = critical, digitalSignature, keyEncipherment\n"
           "extendedKeyUsage = clientAuth\n"
           "subjectKeyIdentifier = hash\n"
           "authorityKeyIdentifier = keyid\n";
    if (!out.flush()) {
      throw std::runtime_error("redis_server: cannot write " + cnf);
    }
  }
  const std::string log = dir_ + "/openssl.log";
  const std::string d = dir_ + "/";
  // P-256 keys: as good as RSA for the tests and ~50x faster to generate.
  const std::vector<std::string> new_key = {"-newkey", "ec", "-pkeyopt",
                                            "ec_paramgen_curve:prime256v1", "-nodes"};
  auto make_ca = [&](const std::string& name, const std::string& cn) {
    std::vector<std::string> args = {"req", "-config", cnf, "-x509", "-new", "-sha256"};
    args.insert(args.end(), new_key.begin(), new_key.end());
    args.insert(args.end(), {"-keyout", d + name + ".key", "-out", d + name + ".crt", "-days", "2",
                             "-subj", "/CN=" + cn, "-extensions", "v3_ca"});
    run_tool(*openssl, args, log);
  };
  auto make_leaf = [&](const std::string& name, const std::string& cn, const std::string& ext,
                       const std::string& serial) {
    std::vector<std::string> req = {"req", "-config", cnf, "-new", "-sha256"};
    req.insert(req.end(), new_key.begin(), new_key.end());
    req.insert(req.end(),
               {"-keyout", d + name + ".key", "-out", d + name + ".csr", "-subj", "/CN=" + cn});
    run_tool(*openssl, req, log);
    run_tool(*openssl,
             {"x509", "-req", "-sha256", "-in", d + name + ".csr", "-CA", d + "ca.crt", "-CAkey",
              d + "ca.key", "-set_serial", serial, "-days", "2", "-extfile", cnf, "-extensions",
              ext, "-out", d + name + ".crt"},
             log);
  };
  make_ca("ca", "ratesync test CA");
  make_leaf("server", "localhost", "v3_server", "1001");
  make_leaf("client", "ratesync-test-client", "v3_client", "1002");
  make_ca("other-ca", "ratesync unrelated CA");
}

void redis_server::write_config() {
  const std::string conf = dir_ + "/redis.conf";
  std::ofstream out(conf);
  out << "# written by ratesync::test::redis_server; the rest is on the command line\n";
  for (const auto& line : options_.acl_lines) {
    out << (line.rfind("user ", 0) == 0 ? "" : "user ") << line << "\n";
  }
  if (!out.flush()) {
    throw std::runtime_error("redis_server: cannot write " + conf);
  }
}

void redis_server::start() {
  if (pid_ > 0) {
    return;
  }
  // First start: a clash means another process took the port between our
  // probe and redis' bind; pick new ports. Restart: the ports are promised to
  // the test's clients, so wait for them instead.
  const bool first = port_ == 0;
  const int attempts = first ? 8 : 30;
  for (int attempt = 1;; ++attempt) {
    if (first) {
      pick_ports();
    }
    if (launch() == launch_result::ready) {
      return;
    }
    if (attempt == attempts) {
      throw std::runtime_error("redis_server: port " + std::to_string(port_) +
                               (tls_port_ != 0 ? " or " + std::to_string(tls_port_) : "") +
                               " stays in use; last log lines:\n" + log_tail());
    }
    if (!first) {
      std::this_thread::sleep_for(100ms);
    }
  }
}

redis_server::launch_result redis_server::launch() {
  std::vector<std::string> args = {dir_ + "/redis.conf",
                                   "--port",
                                   std::to_string(port_),
                                   "--bind",
                                   "127.0.0.1",
                                   "--unixsocket",
                                   unix_path_,
                                   "--unixsocketperm",
                                   "700",
                                   "--save",
                                   "",
                                   "--appendonly",
                                   "no",
                                   "--daemonize",
                                   "no",
                                   "--dir",
                                   dir_,
                                   "--logfile",
                                   log_file(),
                                   "--enable-debug-command",
                                   "yes"};
  if (options_.requirepass) {
    args.insert(args.end(), {"--requirepass", *options_.requirepass});
  }
  if (options_.tls) {
    args.insert(args.end(),
                {"--tls-port", std::to_string(tls_port_), "--tls-cert-file", server_cert_file(),
                 "--tls-key-file", server_key_file(), "--tls-ca-cert-file", ca_file(),
                 "--tls-auth-clients", options_.tls_require_client_cert ? "yes" : "no"});
  }
  args.insert(args.end(), options_.extra_args.begin(), options_.extra_args.end());

  const std::string out_file = dir_ + "/redis.stdout";
  const auto log_start = file_size_or_zero(log_file());
  const auto out_start = file_size_or_zero(out_file);
  pid_ = spawn(exe_, args, out_file);
  paused_ = false;

  auto new_output = [&] {
    std::string out = last_lines(read_file_from(out_file, out_start), 10);
    std::string log = last_lines(read_file_from(log_file(), log_start), 20);
    return out.empty() || log.empty() ? out + log : out + "\n" + log;
  };
  const auto deadline = sclock::now() + ready_timeout;
  while (true) {
    int status = 0;
    if (wait_exit(pid_, 0ms, &status)) {
      pid_ = -1;
      std::string output = new_output();
      if (output.find("Address already in use") != std::string::npos) {
        return launch_result::address_in_use;
      }
      throw std::runtime_error("redis_server: " + exe_ + " " + describe_status(status) +
                               " at start-up:\n" + output);
    }
    // Redis binds TCP, then TLS, then the unix socket, exiting if any bind
    // fails; so an answer on our private socket proves the ports are ours.
    try {
      auto step = std::min(deadline, sclock::now() + 500ms);
      auto unix_conn = connect_unix(unix_path_, step);
      unix_conn.send_command({"PING"});
      if (is_alive_reply(unix_conn.read_reply())) {
        auto tcp = connect_tcp(port_, deadline);
        tcp.send_command({"PING"});
        if (is_alive_reply(tcp.read_reply())) {
          return launch_result::ready;
        }
      }
    } catch (const std::exception&) {
      // not up yet
    }
    if (sclock::now() >= deadline) {
      kill();
      throw std::runtime_error("redis_server: not answering PING after 10 s; last output:\n" +
                               new_output());
    }
    std::this_thread::sleep_for(10ms);
  }
}

void redis_server::reap_blocking() {
  wait_blocking(pid_);
  pid_ = -1;
  paused_ = false;
}

void redis_server::stop() {
  if (pid_ <= 0) {
    return;
  }
  ::kill(pid_, SIGTERM);
  if (paused_) {
    ::kill(pid_, SIGCONT);
  }
  if (wait_exit(pid_, stop_grace)) {
    pid_ = -1;
    paused_ = false;
    return;
  }
  ::kill(pid_, SIGKILL);
  reap_blocking();
}

void redis_server::kill() {
  if (pid_ <= 0) {
    return;
  }
  ::kill(pid_, SIGKILL);
  reap_blocking();
}

void redis_server::pause() {
  if (pid_ <= 0) {
    throw std::logic_error("redis_server::pause: not running");
  }
  if (paused_) {
    return;
  }
  if (::kill(pid_, SIGSTOP) != 0) {
    throw sys_error("redis_server::pause: kill(SIGSTOP)");
  }
  // Return only once it is really stopped.
  int status = 0;
  pid_t r;
  while ((r = ::waitpid(pid_, &status, WUNTRACED)) < 0 && errno == EINTR) {
  }
  if (r == pid_ && WIFSTOPPED(status)) {
    paused_ = true;
    return;
  }
  pid_ = -1;
  throw std::runtime_error("redis_server::pause: the server " +
                           (r == -1 ? std::string("is gone") : describe_status(status)));
}

void redis_server::resume() {
  if (pid_ <= 0 || !paused_) {
    return;
  }
  if (::kill(pid_, SIGCONT) != 0) {
    throw sys_error("redis_server::resume: kill(SIGCONT)");
  }
  paused_ = false;
}

namespace {

redis_server::reply run_command(resp_connection conn, const std::optional<std::string>& password,
                                const std::vector<std::string>& args) {
  if (password) {
    conn.send_command({"AUTH", *password});
  }
  conn.send_command(args);
  if (password) {
    auto auth = conn.read_reply();
    if (auth.kind == redis_server::reply::type::error) {
      throw std::runtime_error("redis_server::command: AUTH failed: " + auth.str);
    }
  }
  return conn.read_reply();
}

} // namespace

redis_server::reply redis_server::query_unix(const std::vector<std::string>& args,
                                             std::chrono::milliseconds timeout) {
  if (args.empty()) {
    throw std::invalid_argument("redis_server::query_unix: no arguments");
  }
  return run_command(connect_unix(unix_path_, sclock::now() + timeout), options_.requirepass, args);
}

redis_server::reply redis_server::query(const std::vector<std::string>& args,
                                        std::chrono::milliseconds timeout) {
  if (args.empty()) {
    throw std::invalid_argument("redis_server::command: no arguments");
  }
  const auto deadline = sclock::now() + timeout;
  auto conn = connect_tcp(port_, deadline);
  if (options_.requirepass) {
    conn.send_command({"AUTH", *options_.requirepass});
  }
  conn.send_command(args);
  if (options_.requirepass) {
    auto auth = conn.read_reply();
    if (auth.kind == reply::type::error) {
      throw std::runtime_error("redis_server::command: AUTH failed: " + auth.str);
    }
  }
  return conn.read_reply();
}

std::string redis_server::command(const std::vector<std::string>& args,
                                  std::chrono::milliseconds timeout) {
  return query(args, timeout).to_string();
}

} // namespace ratesync::test

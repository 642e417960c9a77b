#include "tests/support/sandbox.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/process.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace gpt::test {

namespace fs = std::filesystem;

TempDir::TempDir() : TempDir(fs::temp_directory_path().string()) {}

TempDir::TempDir(const std::string& parent) {
  std::string tmpl = parent + "/gptagent-test-XXXXXX";
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed in " + parent);
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

void write(const std::string& path, const std::string& content, int mode) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path, std::ios::binary | std::ios::trunc) << content;
  ::chmod(path.c_str(), static_cast<mode_t>(mode));
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string slurp_or_empty(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

void copy_tree(const std::string& from, const std::string& to) {
  fs::create_directories(to);
  fs::copy(from, to,
           fs::copy_options::recursive | fs::copy_options::copy_symlinks | fs::copy_options::overwrite_existing);
}

std::string source_path(const std::string& rel) { return std::string(SOURCE_DIR) + "/" + rel; }

std::map<std::string, std::string> snapshot(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (auto it = fs::recursive_directory_iterator(dir); it != fs::recursive_directory_iterator(); ++it) {
    const auto rel = fs::relative(it->path(), dir).string();
    struct stat st {};
    ::lstat(it->path().c_str(), &st);
    std::string mode = std::to_string(st.st_mode & 07777) + " ";
    if (it->is_symlink())
      out[rel] = "link " + fs::read_symlink(it->path()).string();
    else if (it->is_regular_file())
      out[rel] = mode + slurp(it->path().string());
    else if (it->is_directory())
      out[rel + "/"] = mode;
  }
  return out;
}

std::map<std::string, std::string> host_files(const std::string& root) {
  auto tree = snapshot(root);
  std::erase_if(tree, [](const auto& kv) {
    const std::string& p = kv.first;
    return p.rfind("var/lib/gptagent/", 0) == 0 || p.rfind("run/", 0) == 0 || p.rfind("proc/", 0) == 0 ||
           p.rfind("sys/", 0) == 0 || p.find(".gptagent-2") != std::string::npos;
  });
  std::erase_if(tree, [&](const auto& kv) {
    if (kv.first.empty() || kv.first.back() != '/') return false;
    return std::none_of(tree.begin(), tree.end(), [&](const auto& other) {
      return other.first != kv.first && other.first.rfind(kv.first, 0) == 0 && other.first.back() != '/';
    });
  });
  return tree;
}

std::string differences(const std::map<std::string, std::string>& a, const std::map<std::string, std::string>& b) {
  std::string out;
  for (const auto& [path, content] : a)
    if (!b.count(path))
      out += "  only before: " + path + "\n";
    else if (b.at(path) != content)
      out += "  differs: " + path + "\n";
  for (const auto& [path, content] : b)
    if (!a.count(path)) out += "  only after: " + path + "\n";
  return out;
}

SampleHost::SampleHost(const std::string& name) {
  const std::string demo = source_path("playbooks/sandbox/" + name);
  copy_tree(exists(demo) ? demo : source_path("tests/fixtures/hosts/" + name), dir.path());
}

ProcResult run_program(const std::string& program, const std::vector<std::string>& args,
                       const std::vector<std::string>& env) {
  namespace bp = boost::process;
  ProcResult r;
  // The environment changes go to env(1): Boost.Process 1.74's environment lookup reads past an
  // entry shorter than the name it looks for (ASan: heap-buffer-overflow in
  // basic_environment_impl::find, with ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED).
  std::vector<std::string> words{"-u", "NO_COLOR"};
  words.insert(words.end(), env.begin(), env.end());
  words.push_back(program);
  words.insert(words.end(), args.begin(), args.end());
  std::future<std::string> fout, ferr;
  boost::asio::io_context ios;
  bp::child c("/usr/bin/env", bp::args(words), bp::std_in.close(), bp::std_out > fout, bp::std_err > ferr, ios);
  ios.run();
  c.wait();
  r.exit_code = c.exit_code();
  r.out = fout.get();
  r.err = ferr.get();
  return r;
}

ProcResult run_agent(const std::vector<std::string>& args, const std::vector<std::string>& env) {
  return run_program(GPTAGENT_BIN, args, env);
}

bool wait_until(const std::function<bool()>& done, std::chrono::seconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

ProcResult sandbox_reboot(const std::string& root) {
  return run_program(source_path("scripts/sandbox-reboot"), {root});
}

}  // namespace gpt::test

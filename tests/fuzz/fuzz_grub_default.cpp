// /etc/default/grub: the shell syntax check the modules run first (agent/shell_syntax), the
// shell-aware lexer and the kernel-parameter editor (modules/grub_default).
//
// The first input byte picks the edit (which of a few real parameters must be present or absent,
// and which variable), the rest is the file. The syntax check takes any file in either dialect and
// an error it reports has a line. When the editor accepts the file, these must hold:
//  - the output is still shell the same lexer reads (no unterminated quote, nothing it refuses),
//    and sh takes it (to the syntax check) when it took the input;
//  - editing the output again changes nothing, byte for byte;
//  - the bytes outside the values of the variable's assignments are kept: with every value of the
//    variable cut out (by an independent, quote-aware statement splitter below), input and output
//    are the same text, except for one `KEY="..."` line added when the file had no assignment;
//  - the parameters the variable then holds are the old ones, less what the editor says it
//    removed and replaced, plus what it says it added: every present one is there, no absent one;
//  - the other variables keep the parameters they had.
#include <algorithm>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "agent/facts.hpp"
#include "agent/shell_syntax.hpp"
#include "modules/lib/grub_default.hpp"
#include "tests/fuzz/fuzz_common.hpp"

namespace {

using gpt::fuzz::check;
using gpt::fuzz::fail;

bool ident_start(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; }
bool ident_char(char c) { return ident_start(c) || (c >= '0' && c <= '9'); }
bool blank(char c) { return c == ' ' || c == '\t'; }

// The end of the assignment whose value starts at `p`: the value is one shell word (quotes and
// backslashes group, an unquoted blank, newline or operator ends it; a quoted or escaped newline
// does not), and the rest of the line where it ends is taken with it: a value followed by more
// words (`A=1 cmd`) is not what the editor edits, and what follows on that line is not another
// statement to it.
size_t logical_end(std::string_view t, size_t p) {
  const size_t n = t.size();
  while (p < n) {
    char c = t[p];
    if (c == '\\') {
      p += 2;
    } else if (c == '"') {
      for (++p; p < n && t[p] != '"'; ++p)
        if (t[p] == '\\') ++p;
      ++p;
    } else if (c == '\'') {
      size_t close = t.find('\'', p + 1);
      p = close == std::string_view::npos ? n : close + 1;
    } else if (blank(c) || c == '\n' || c == '\r' || c == ';' || c == '&' || c == '|' || c == '<' || c == '>' ||
               c == '(' || c == ')') {
      break;
    } else {
      ++p;
    }
  }
  if (p >= n) return n;
  size_t nl = t.find('\n', p);
  return nl == std::string_view::npos ? n : nl;
}

struct Statement {
  std::string name;  // the assigned variable, or "" for any other line
  size_t value_begin = 0, end = 0;
};

// The file's statements, each from its line's start: a comment, an assignment (NAME=... or
// export NAME=...), or anything else (up to its logical end: a multi-line quoted string is one).
std::vector<Statement> statements(std::string_view t) {
  std::vector<Statement> out;
  const size_t n = t.size();
  size_t pos = 0;
  while (pos < n) {
    size_t p = pos;
    while (p < n && blank(t[p])) ++p;
    Statement s;
    if (p < n && t[p] == '#') {
      size_t nl = t.find('\n', p);
      s.end = nl == std::string_view::npos ? n : nl;
    } else {
      if (t.substr(p, 7) == "export " || t.substr(p, 7) == "export\t") {
        p += 7;
        while (p < n && blank(t[p])) ++p;
      }
      size_t e = p;
      if (e < n && ident_start(t[e]))
        while (e < n && ident_char(t[e])) ++e;
      if (e > p && e < n && t[e] == '=') {
        s.name = std::string(t.substr(p, e - p));
        s.value_begin = e + 1;
        s.end = logical_end(t, e + 1);
      } else {
        size_t nl = t.find('\n', p);
        s.end = nl == std::string_view::npos ? n : nl;
      }
    }
    out.push_back(s);
    pos = s.end + 1;
  }
  return out;
}

// The text with the value of every assignment to `key` replaced by "\x01".
std::string skeleton(std::string_view t, const std::string& key) {
  std::string out;
  size_t copied = 0;
  for (const auto& s : statements(t)) {
    if (s.name != key) continue;
    out.append(t.substr(copied, s.value_begin - copied));
    out += '\x01';
    copied = s.end;
  }
  out.append(t.substr(copied));
  return out;
}

std::set<std::string> names_assigned(std::string_view t) {
  std::set<std::string> out;
  for (const auto& s : statements(t))
    if (!s.name.empty()) out.insert(s.name);
  return out;
}

// The kernel's view of a parameter, as the editor compares them: name with '-' == '_', and value.
std::string norm(const std::string& p) {
  auto eq = p.find('=');
  return gpt::param_name(p) + (eq == std::string::npos ? std::string() : "=" + p.substr(eq + 1));
}
bool has_value(const std::string& p) { return p.find('=') != std::string::npos; }

std::string show(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : " ") + x;
  return "[" + s + "]";
}

gpt::CmdlineEdit choose(uint8_t b) {
  gpt::CmdlineEdit e;
  static const char* const kPresent[] = {"intel_iommu=on", "iommu=pt", "vfio-pci.ids=10de:1b80,10de:10f0", "quiet"};
  static const char* const kAbsent[] = {"nomodeset", "splash", "amd_iommu=off", "rd.driver.blacklist"};
  for (int i = 0; i < 4; ++i)
    if (b & (1u << i)) e.present.push_back(kPresent[i]);
  // A present name is not also absent: the property below reads each list alone.
  for (int i = 0; i < 3; ++i)
    if (b & (1u << (4 + i))) e.absent.push_back(kAbsent[(i + (b >> 6)) % 4]);
  e.key = (b & 0x80) ? "GRUB_CMDLINE_LINUX_DEFAULT" : "GRUB_CMDLINE_LINUX";
  if (e.present.empty() && e.absent.empty()) e.present.push_back("intel_iommu=on");
  return e;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const gpt::CmdlineEdit edit = choose(data[0]);
  const std::string in = gpt::fuzz::text_of(data + 1, size - 1);
  const std::string ctx = " (edit " + show(edit.present) + " -" + show(edit.absent) + " on " + edit.key + ")";

  for (auto dialect : {gpt::ShellDialect::posix, gpt::ShellDialect::bash})
    if (auto e = gpt::find_shell_syntax_error(in, dialect))
      check(e->line >= 1 && !e->message.empty(),
            "a syntax error without a line or a message: " + std::to_string(e->line) + " '" + e->message + "'");
  const bool valid_shell = !gpt::find_shell_syntax_error(in);

  auto before = gpt::grub_cmdline_params(in, edit.key);
  auto res = gpt::edit_grub_cmdline(in, edit);
  if (!res) {
    (void)res.error();
    return 0;
  }
  check(before.ok(), "the editor accepted a file the reader refuses: " + (before ? "" : before.error()) + ctx);
  const std::string& out = res->text;
  check(res->changed() || out == in, "no change reported, but the text changed" + ctx);
  (void)res->summary();

  // The output is shell the lexer reads, and sh's syntax where the input was.
  auto after = gpt::grub_cmdline_params(out, edit.key);
  check(after.ok(), "the edited file does not lex: " + (after ? "" : after.error()) + ctx);
  if (valid_shell) {
    auto e = gpt::find_shell_syntax_error(out);
    check(!e, "the edit made a file sh takes into one it refuses: line " +
                  (e ? std::to_string(e->line) + ": " + e->message : "") + ctx);
  }

  // Editing again is a no-op.
  auto again = gpt::edit_grub_cmdline(out, edit);
  check(again.ok(), "editing the edited file fails: " + (again ? "" : again.error()) + ctx);
  check(!again->changed(), "editing the edited file changes it again: " + again->summary() + ctx);
  check(again->text == out, "editing the edited file changes its bytes" + ctx);

  // Bytes outside the variable's values are kept.
  const std::string sk_in = skeleton(in, edit.key), sk_out = skeleton(out, edit.key);
  if (sk_in != sk_out) {
    // Allowed: one whole `KEY=...` line added (after a newline added at a last line without one).
    const std::string line = edit.key + "=\x01\n";
    bool ok = false;
    for (size_t at = sk_out.find(line); at != std::string::npos && !ok; at = sk_out.find(line, at + 1)) {
      if (at != 0 && sk_out[at - 1] != '\n') continue;
      std::string rest = sk_out.substr(0, at) + sk_out.substr(at + line.size());
      ok = rest == sk_in || (!in.empty() && in.back() != '\n' && rest == sk_in + "\n");
    }
    check(ok, "bytes outside " + edit.key + "'s values changed" + ctx);
  }

  // The parameters: old - removed - replaced + added + replacements, as multisets.
  std::multiset<std::string> want, got;
  for (const auto& p : *before) want.insert(norm(p));
  auto take = [&](const std::vector<std::string>& v, const char* what) {
    for (const auto& p : v) {
      auto it = want.find(norm(p));
      if (it == want.end()) fail(std::string("the editor says it ") + what + " " + p + ", which was not there" + ctx);
      want.erase(it);
    }
  };
  take(res->removed, "removed");
  take(res->replaced_old, "replaced");
  for (const auto& p : res->added) want.insert(norm(p));
  for (const auto& p : res->replaced_new) want.insert(norm(p));
  for (const auto& p : *after) got.insert(norm(p));
  if (want != got) {
    std::vector<std::string> w(want.begin(), want.end()), g(got.begin(), got.end());
    fail("the parameters are " + show(g) + ", not " + show(w) + ctx);
  }
  for (const auto& p : edit.present) check(got.count(norm(p)) > 0, p + " is not there after the edit" + ctx);
  for (const auto& a : edit.absent)
    for (const auto& p : got) {
      const bool match = has_value(a) ? p == norm(a) : gpt::param_name(p) == gpt::param_name(a);
      check(!match || p.find('$') != std::string::npos, a + " is still there after the edit: " + p + ctx);
    }

  // Every other variable holds what it held.
  for (const auto& name : names_assigned(in)) {
    if (name == edit.key) continue;
    auto b = gpt::grub_cmdline_params(in, name), a = gpt::grub_cmdline_params(out, name);
    check(b.ok() && a.ok() && *a == *b, name + " changed with an edit of " + edit.key + ctx);
  }
  return 0;
}

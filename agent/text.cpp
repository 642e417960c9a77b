#include "agent/text.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>

namespace gpt {

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

std::vector<std::string_view> lines(std::string_view text) {
  std::vector<std::string_view> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    out.push_back(text.substr(pos, nl - pos));
    pos = nl + 1;
  }
  return out;
}

std::vector<std::string> words(std::string_view text, bool comments) {
  std::vector<std::string> out;
  bool in_comment = false;
  std::string cur;
  for (char c : text) {
    if (c == '\n') in_comment = false;
    if (comments && c == '#') in_comment = true;
    if (in_comment || c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      if (!cur.empty()) out.push_back(std::move(cur));
      cur.clear();
      continue;
    }
    cur += c;
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

std::string join(const std::vector<std::string>& items, std::string_view sep) {
  std::string out;
  for (const auto& i : items) {
    if (!out.empty()) out += sep;
    out += i;
  }
  return out;
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

Expected<uint64_t> parse_size(std::string_view text) {
  const std::string shown(text);
  const Error bad{"must be a size such as 20G, 512M, 1T or 4096 (bytes), not '" + shown + "'"};
  text = trim(text);
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  if (digits == 0) return bad;
  std::string unit = lower(trim(text.substr(digits)));
  int shift = 0;
  if (!unit.empty()) {
    const auto pos = std::string_view("kmgtp").find(unit[0]);
    if (pos != std::string_view::npos) {
      shift = 10 * static_cast<int>(pos + 1);
      unit.erase(0, 1);
    }
    if (!unit.empty() && unit != "b" && !(shift > 0 && unit == "ib")) return bad;  // "4096iB" is no size
  }
  const uint64_t limit = static_cast<uint64_t>(INT64_MAX) >> shift;
  uint64_t n = 0;
  for (size_t i = 0; i < digits; ++i) {
    n = n * 10 + static_cast<uint64_t>(text[i] - '0');
    if (n > limit) return Error{"'" + shown + "' is too large"};
  }
  if (n == 0) return Error{"must be larger than 0, not '" + shown + "'"};
  return n << shift;
}

std::optional<uint64_t> parse_hex(std::string_view text, size_t max_digits) {
  if (text.starts_with("0x")) text.remove_prefix(2);
  if (text.empty() || text.size() > max_digits) return std::nullopt;
  uint64_t v = 0;
  for (char c : text) {
    const int d = c >= '0' && c <= '9'   ? c - '0'
                  : c >= 'a' && c <= 'f' ? c - 'a' + 10
                  : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                         : -1;
    if (d < 0) return std::nullopt;
    v = v << 4 | static_cast<uint64_t>(d);
  }
  return v;
}

std::string size_text(uint64_t v) {
  static const char* const units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  while (u < 6 && v >= (uint64_t{1} << (10 * (u + 1)))) ++u;
  if (u == 0) return std::to_string(v) + " bytes";
  const uint64_t unit = uint64_t{1} << (10 * u);
  if (v % unit == 0) return std::to_string(v / unit) + " " + units[u];
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", static_cast<double>(v) / static_cast<double>(unit));
  return std::string(buf) + " " + units[u] + " (" + std::to_string(v) + " bytes)";
}

Expected<std::vector<ShellWord>> shell_split(std::string_view line, bool comments) {
  std::vector<ShellWord> out;
  ShellWord cur;
  bool in_word = false;
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
      if (in_word) out.push_back(std::move(cur));
      cur = {};
      in_word = false;
      continue;
    }
    if (comments && c == '#') break;
    in_word = true;
    if (c == '\'' || c == '"') {
      cur.quoted = true;
      size_t j = i + 1;
      for (; j < line.size() && line[j] != c; ++j) {
        // In double quotes a backslash escapes only '"' and '\' (POSIX shell rules).
        if (c == '"' && line[j] == '\\' && j + 1 < line.size() && (line[j + 1] == '"' || line[j + 1] == '\\')) ++j;
        cur.text += line[j];
      }
      if (j >= line.size()) return Error{"no closing quotation"};
      i = j;
    } else if (c == '\\') {
      if (i + 1 >= line.size()) return Error{"no escaped character after '\\'"};
      cur.text += line[++i];
    } else {
      cur.text += c;
    }
  }
  if (in_word) out.push_back(std::move(cur));
  return out;
}

}  // namespace gpt

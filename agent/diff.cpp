#include "agent/diff.hpp"

#include <dtl/dtl.hpp>
#include <sstream>
#include <vector>

namespace gpt {
namespace {

// Lines with their terminators, so a missing final newline shows up as a difference.
std::vector<std::string> lines_of(std::string_view text) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) {
      out.emplace_back(std::string(text.substr(pos)) + "\n\\ No newline at end of file");
      break;
    }
    out.emplace_back(text.substr(pos, nl - pos));
    pos = nl + 1;
  }
  return out;
}

}  // namespace

std::string unified_diff(std::string_view before, std::string_view after, std::string_view path) {
  return unified_diff(before, after, std::string(path) + " (before)", std::string(path) + " (after)");
}

std::string unified_diff(std::string_view before, std::string_view after, std::string_view from_label,
                         std::string_view to_label) {
  if (before == after) return {};
  std::vector<std::string> a = lines_of(before), b = lines_of(after);
  dtl::Diff<std::string> d(a, b);
  d.onHuge();
  d.compose();
  d.composeUnifiedHunks();
  std::ostringstream out;
  out << "--- " << from_label << "\n+++ " << to_label << "\n";
  for (const auto& hunk : d.getUniHunks()) {
    // dtl counts hunks the way diff -u does, except that an empty side starts at 0.
    out << "@@ -" << hunk.a << "," << hunk.b << " +" << hunk.c << "," << hunk.d << " @@\n";
    auto emit = [&](const auto& elems) {
      for (const auto& [line, info] : elems) {
        char mark = info.type == dtl::SES_ADD ? '+' : info.type == dtl::SES_DELETE ? '-' : ' ';
        out << mark << line << "\n";
      }
    };
    emit(hunk.common[0]);
    emit(hunk.change);
    emit(hunk.common[1]);
  }
  return out.str();
}

}  // namespace gpt

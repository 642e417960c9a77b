// Unified diffs of file contents for --diff and the JSON report.
#pragma once

#include <string>
#include <string_view>

namespace gpt {

// `diff -u` style: "--- PATH (before)", "+++ PATH (after)", hunks with 3 lines of context.
// Empty when the texts are equal.
std::string unified_diff(std::string_view before, std::string_view after, std::string_view path);
// The same with the header labels given ("/dev/null" for a file that is created or removed).
std::string unified_diff(std::string_view before, std::string_view after, std::string_view from_label,
                         std::string_view to_label);

}  // namespace gpt

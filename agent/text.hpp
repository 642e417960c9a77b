// Small string functions for reading config files, /proc and /sys text.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace gpt {

std::string_view trim(std::string_view s);
// The lines of a text, without their '\n' (a last line without one counts).
std::vector<std::string_view> lines(std::string_view text);
// Words separated by blanks and newlines; with `comments`, a '#' starts a comment to the line's end.
std::vector<std::string> words(std::string_view text, bool comments = false);
std::string lower(std::string_view s);
std::string join(const std::vector<std::string>& items, std::string_view sep);
bool ends_with(std::string_view s, std::string_view suffix);

}  // namespace gpt

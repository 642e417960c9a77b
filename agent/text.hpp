// Small string functions for reading config files, /proc and /sys text.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/expected.hpp"

namespace gpt {

std::string_view trim(std::string_view s);
// The lines of a text, without their '\n' (a last line without one counts).
std::vector<std::string_view> lines(std::string_view text);
// Words separated by blanks and newlines; with `comments`, a '#' starts a comment to the line's end.
std::vector<std::string> words(std::string_view text, bool comments = false);
std::string lower(std::string_view s);
std::string join(const std::vector<std::string>& items, std::string_view sep);
bool ends_with(std::string_view s, std::string_view suffix);
// A word of a shell-like line, and whether any of it was quoted.
struct ShellWord {
  std::string text;
  bool quoted = false;
};
// Splits a line as Python's shlex.split does, which Ansible uses for INI host lines and for
// ansible_ssh_common_args: blanks separate, quotes group, a backslash escapes; with `comments`,
// '#' outside quotes ends the line. An error for an unclosed quote or a trailing backslash.
Expected<std::vector<ShellWord>> shell_split(std::string_view line, bool comments);

// Hex digits with an optional "0x", at most `max_digits` of them: "0x030000" -> 0x030000; nullopt
// for anything else (blanks included).
std::optional<uint64_t> parse_hex(std::string_view text, size_t max_digits);

// "100G", "512M", "16GiB", "1T", "4096": bytes, with K/M/G/T/P as powers of 1024 (a trailing "B",
// or "iB" after a unit, any case). An error for anything else, zero, or more than 2^63-1 bytes.
Expected<uint64_t> parse_size(std::string_view text);
// 17179869184 -> "16 GiB"; 1610612736 -> "1.5 GiB (1610612736 bytes)": for messages.
std::string size_text(uint64_t bytes);

}  // namespace gpt

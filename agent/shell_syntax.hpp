// Whether sh would refuse to read a file, found without running a shell: a syntax check of the
// shell language that reports the line dash reports (`sh -n`), or bash's verdict for bash files.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "agent/expected.hpp"

namespace gpt {

// posix: the language of dash, Debian's and Ubuntu's /bin/sh, which grub-mkconfig (#! /bin/sh)
// sources /etc/default/grub with. bash: that and bash's own syntax (arrays, $'...', [[ ]], ((...)),
// `function`, <<<, &>, |&...), for files bash sources, such as /etc/mkinitcpio.conf.
enum class ShellDialect { posix, bash };

struct ShellSyntaxError {
  int line = 0;         // where the parser stood when it saw the error, counted the way dash counts
  std::string message;  // dash's words: "\"fi\" unexpected (expecting \"then\")", "unterminated quoted string"
};

// The first syntax error of `text`, or nothing when `sh -n` (`bash -n`) accepts it.
std::optional<ShellSyntaxError> find_shell_syntax_error(std::string_view text,
                                                        ShellDialect dialect = ShellDialect::posix);

// What the editors of shell files run before they edit one: "path:line: not valid shell: ..." when
// sh (bash) would refuse the file, which would then fail whatever sources it (update-grub).
Status check_shell_file(std::string_view path, std::string_view text, ShellDialect dialect = ShellDialect::posix);

}  // namespace gpt

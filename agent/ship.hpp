// What the fleet sends to a host: the agent's loadable image, gzip-compressed.
#pragma once

#include <string>
#include <string_view>

#include "agent/expected.hpp"

namespace gpt::ship {

// The bytes of an ELF executable that the kernel and the dynamic loader read: the ELF header, the
// program headers and every segment's file contents, with the section header table and every
// section no segment holds (.symtab, .strtab, .debug_*, .comment) left out, and the header's
// section fields zeroed. What runs is identical to what ran here; debuggers and `file` see an
// executable without sections. An error for anything that is not a well-formed ELF executable of
// this machine's byte order.
Expected<std::string> loadable_image(std::string_view elf);
// The same, read from the file at `path` (the whole file is never read: only its headers, then
// the image).
Expected<std::string> read_loadable_image(const std::string& path);

// `data` as a gzip stream (RFC 1952), as `gzip -6` writes it; `gzip -dc` restores it.
std::string gzip(std::string_view data);

}  // namespace gpt::ship

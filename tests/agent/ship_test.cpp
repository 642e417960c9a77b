// What the fleet ships (issue 24, "small on the wire"): the agent's loadable image, which runs as
// the agent does, and its gzip stream, which the hosts' own gzip restores.
#include "agent/ship.hpp"

#include <elf.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "tests/support/sandbox.hpp"

namespace gpt {
namespace {

using test::slurp;

Elf64_Ehdr header_of(const std::string& elf) {
  Elf64_Ehdr h;
  std::memcpy(&h, elf.data(), sizeof h);
  return h;
}

TEST(Ship, TheLoadableImageRunsAsTheAgentDoesWithoutSectionsOrDebugInformation) {
  const std::string agent = slurp(GPTAGENT_BIN);
  auto image = ship::loadable_image(agent);
  ASSERT_TRUE(image.ok()) << image.error();
  const auto before = header_of(agent), after = header_of(*image);
  ASSERT_GT(before.e_shnum, 0) << "the build's agent has a section table";
  EXPECT_EQ(after.e_shnum, 0);
  EXPECT_EQ(after.e_shoff, 0u);
  EXPECT_EQ(after.e_shstrndx, SHN_UNDEF);
  // Everything else is the agent's, byte for byte: the header's other fields, the program
  // headers, every segment.
  EXPECT_EQ(after.e_entry, before.e_entry);
  EXPECT_EQ(image->substr(sizeof(Elf64_Ehdr)), agent.substr(sizeof(Elf64_Ehdr), image->size() - sizeof(Elf64_Ehdr)));
  // (How much smaller depends on the build: 4.6 of 91 MB with RelWithDebInfo, 154 of 209 MB under
  // ASan at -O0, whose instrumented code is most of it.)
  EXPECT_LT(image->size(), agent.size()) << "the debug information of the build was shipped";
  EXPECT_EQ(image->find(".debug_info"), std::string::npos);

  test::TempDir dir;
  const std::string path = dir / "gptagent";
  test::write(path, *image, 0700);
  auto shipped = test::run_program(path, {"--version"}), built = test::run_program(GPTAGENT_BIN, {"--version"});
  EXPECT_EQ(shipped.exit_code, 0) << shipped.err;
  EXPECT_EQ(shipped.out, built.out);
  EXPECT_TRUE(shipped.out.starts_with("gptagent ")) << shipped.out;
  // Read from the file, the image is the same.
  auto read = ship::read_loadable_image(GPTAGENT_BIN);
  ASSERT_TRUE(read.ok()) << read.error();
  EXPECT_TRUE(*read == *image);
  EXPECT_EQ(ship::read_loadable_image(dir / "missing").error(),
            "cannot open " + (dir / "missing") + ": No such file or directory");
  test::write(dir / "cut", agent.substr(0, 200000));
  auto cut = ship::read_loadable_image(dir / "cut");
  ASSERT_FALSE(cut.ok());
  EXPECT_NE(cut.error().find("is not inside the file"), std::string::npos) << cut.error();
  // Stripping the image again changes nothing.
  auto again = ship::loadable_image(*image);
  ASSERT_TRUE(again.ok()) << again.error();
  EXPECT_TRUE(*again == *image);
}

TEST(Ship, TheGzipStreamIsWhatTheHostsGzipRestores) {
  auto image = ship::loadable_image(slurp(GPTAGENT_BIN));
  ASSERT_TRUE(image.ok()) << image.error();
  const std::string compressed = ship::gzip(*image);
  EXPECT_LT(compressed.size(), image->size() * 2 / 3);
  test::TempDir dir;
  test::write(dir / "agent.gz", compressed);
  auto restored = test::run_program("/bin/sh", {"-c", "gzip -dc < \"$0\" > \"$1\"", dir / "agent.gz", dir / "agent"});
  ASSERT_EQ(restored.exit_code, 0) << restored.err;
  EXPECT_TRUE(slurp(dir / "agent") == *image);
  // And the edge cases of the stream: nothing, and bytes that do not compress.
  for (const std::string& data : {std::string(), std::string("\x00\xff\x7f ELF", 8)}) {
    test::write(dir / "x.gz", ship::gzip(data));
    auto r = test::run_program("/bin/sh", {"-c", "gzip -dc < \"$0\"", dir / "x.gz"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, data);
  }
}

TEST(Ship, WhatIsNotAWellFormedExecutableIsAnErrorNeverARead) {
  EXPECT_EQ(ship::loadable_image("").error(), "not an ELF file");
  EXPECT_EQ(ship::loadable_image("#!/bin/sh\necho '{}'\n").error(), "not an ELF file");
  const std::string agent = slurp(GPTAGENT_BIN);
  const auto h = header_of(agent);
  // Every prefix that ends before the last program header is refused (under ASan: without a read
  // past the end).
  const size_t headers_end = h.e_phoff + size_t{h.e_phnum} * h.e_phentsize;
  for (size_t n = 0; n < headers_end; ++n) EXPECT_FALSE(ship::loadable_image(agent.substr(0, n)).ok()) << n << " bytes";
  // A file cut inside its segments.
  auto cut = ship::loadable_image(agent.substr(0, headers_end + 100));
  ASSERT_FALSE(cut.ok());
  EXPECT_NE(cut.error().find("is not inside the file"), std::string::npos) << cut.error();
  auto with = [&](auto change) {
    std::string elf = agent;
    auto hh = h;
    change(hh, elf);
    std::memcpy(elf.data(), &hh, sizeof hh);
    return ship::loadable_image(elf);
  };
  EXPECT_EQ(with([](Elf64_Ehdr& e, std::string&) { e.e_type = ET_REL; }).error(), "not an ELF executable");
  EXPECT_EQ(with([](Elf64_Ehdr& e, std::string&) { e.e_phoff = ~Elf64_Off{0} - 8; }).error(),
            "its program headers are not inside the file");
  EXPECT_EQ(with([](Elf64_Ehdr& e, std::string&) { e.e_phentsize = 7; }).error(),
            "its program headers are not inside the file");
  EXPECT_EQ(with([](Elf64_Ehdr& e, std::string&) { e.e_phnum = 0; }).error(),
            "its program headers are not inside the file");
  EXPECT_EQ(with([](Elf64_Ehdr& e, std::string&) { e.e_ident[EI_CLASS] = 7; }).error(),
            "an ELF file of an unknown class");
  EXPECT_EQ(with([](Elf64_Ehdr& e, std::string&) { e.e_ident[EI_DATA] = ELFDATA2MSB; }).error(),
            "an ELF file of the other byte order");
  // A segment whose offset and size overflow past the end of the file.
  auto overflowing = with([&](Elf64_Ehdr& e, std::string& elf) {
    Elf64_Phdr ph;
    std::memcpy(&ph, elf.data() + e.e_phoff, sizeof ph);
    ph.p_offset = ~Elf64_Off{0} - 4;
    ph.p_filesz = 16;
    std::memcpy(elf.data() + e.e_phoff, &ph, sizeof ph);
  });
  ASSERT_FALSE(overflowing.ok());
  EXPECT_EQ(overflowing.error(), "segment 0 is not inside the file");
}

// A 32-bit executable (built here by hand: one loadable segment and a section table after it)
// loses its section table the same way.
TEST(Ship, AThirtyTwoBitExecutableIsCutAfterItsLastSegment) {
  Elf32_Ehdr e{};
  std::memcpy(e.e_ident, ELFMAG, SELFMAG);
  e.e_ident[EI_CLASS] = ELFCLASS32;
  e.e_ident[EI_DATA] = ELFDATA2LSB;
  e.e_ident[EI_VERSION] = EV_CURRENT;
  e.e_type = ET_EXEC;
  e.e_machine = EM_386;
  e.e_version = EV_CURRENT;
  e.e_phoff = sizeof e;
  e.e_phentsize = sizeof(Elf32_Phdr);
  e.e_phnum = 1;
  e.e_ehsize = sizeof e;
  Elf32_Phdr load{};
  load.p_type = PT_LOAD;
  load.p_offset = 0;
  load.p_filesz = sizeof e + sizeof load + 16;
  const std::string code(16, '\x90'), sections(200, 'S');
  e.e_shoff = load.p_filesz;
  e.e_shnum = 5;
  e.e_shstrndx = 4;
  std::string elf(reinterpret_cast<const char*>(&e), sizeof e);
  elf.append(reinterpret_cast<const char*>(&load), sizeof load);
  elf += code + sections;
  auto image = ship::loadable_image(elf);
  ASSERT_TRUE(image.ok()) << image.error();
  ASSERT_EQ(image->size(), load.p_filesz);
  Elf32_Ehdr cut;
  std::memcpy(&cut, image->data(), sizeof cut);
  EXPECT_EQ(cut.e_shoff, 0u);
  EXPECT_EQ(cut.e_shnum, 0);
  EXPECT_EQ(cut.e_shstrndx, SHN_UNDEF);
  EXPECT_EQ(image->substr(sizeof e), elf.substr(sizeof e, load.p_filesz - sizeof e));
}

}  // namespace
}  // namespace gpt

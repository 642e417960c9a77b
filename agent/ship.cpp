#include "agent/ship.hpp"

#include <elf.h>
#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <stdexcept>

namespace gpt::ship {
namespace {

template <class T>
T read_at(std::string_view bytes, uint64_t offset) {
  T value;
  std::memcpy(&value, bytes.data() + offset, sizeof value);
  return value;
}

// `offset + size` ends inside `limit`, without overflowing.
bool fits(uint64_t offset, uint64_t size, uint64_t limit) { return offset <= limit && size <= limit - offset; }

template <class Ehdr, class Phdr>
Expected<std::string> strip(std::string_view elf) {
  if (elf.size() < sizeof(Ehdr)) return Error{"an ELF file shorter than its header"};
  auto header = read_at<Ehdr>(elf, 0);
  if (header.e_type != ET_EXEC && header.e_type != ET_DYN) return Error{"not an ELF executable"};
  if (header.e_phnum == 0 || header.e_phentsize != sizeof(Phdr) ||
      !fits(header.e_phoff, uint64_t{header.e_phnum} * sizeof(Phdr), elf.size()))
    return Error{"its program headers are not inside the file"};
  uint64_t end = std::max<uint64_t>(sizeof(Ehdr), header.e_phoff + uint64_t{header.e_phnum} * sizeof(Phdr));
  bool loads = false;
  for (unsigned i = 0; i < header.e_phnum; ++i) {
    auto ph = read_at<Phdr>(elf, header.e_phoff + uint64_t{i} * sizeof(Phdr));
    if (ph.p_filesz == 0) continue;
    if (!fits(ph.p_offset, ph.p_filesz, elf.size())) return Error{"segment " + std::to_string(i) + " is not inside the file"};
    end = std::max<uint64_t>(end, ph.p_offset + ph.p_filesz);
    loads = loads || ph.p_type == PT_LOAD;
  }
  if (!loads) return Error{"no loadable segment"};
  std::string image(elf.substr(0, end));
  header.e_shoff = 0;
  header.e_shnum = 0;
  header.e_shstrndx = SHN_UNDEF;
  std::memcpy(image.data(), &header, sizeof header);
  return image;
}

}  // namespace

Expected<std::string> loadable_image(std::string_view elf) {
  if (elf.size() < EI_NIDENT || std::memcmp(elf.data(), ELFMAG, SELFMAG) != 0) return Error{"not an ELF file"};
  const unsigned char native = std::endian::native == std::endian::little ? ELFDATA2LSB : ELFDATA2MSB;
  if (static_cast<unsigned char>(elf[EI_DATA]) != native) return Error{"an ELF file of the other byte order"};
  switch (elf[EI_CLASS]) {
    case ELFCLASS64: return strip<Elf64_Ehdr, Elf64_Phdr>(elf);
    case ELFCLASS32: return strip<Elf32_Ehdr, Elf32_Phdr>(elf);
    default: return Error{"an ELF file of an unknown class"};
  }
}

std::string gzip(std::string_view data) {
  z_stream z{};
  // 15 window bits + 16: a gzip header and trailer instead of zlib's.
  if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) throw std::bad_alloc();
  std::string out(deflateBound(&z, data.size()), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  if (rc != Z_STREAM_END) throw std::runtime_error("gzip: deflate did not finish");
  return out;
}

}  // namespace gpt::ship

#include "agent/ship.hpp"

#include <elf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cerrno>
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

// How many bytes at the start of an ELF file of `file_size` bytes, which starts with `head`, hold
// its header, program headers and segments.
template <class Ehdr, class Phdr>
Expected<uint64_t> image_size(std::string_view head, uint64_t file_size) {
  if (head.size() < sizeof(Ehdr)) return Error{"an ELF file shorter than its header"};
  const auto header = read_at<Ehdr>(head, 0);
  if (header.e_type != ET_EXEC && header.e_type != ET_DYN) return Error{"not an ELF executable"};
  if (header.e_phnum == 0 || header.e_phentsize != sizeof(Phdr) ||
      !fits(header.e_phoff, uint64_t{header.e_phnum} * sizeof(Phdr), head.size()))
    return Error{"its program headers are not inside the file"};
  uint64_t end = std::max<uint64_t>(sizeof(Ehdr), header.e_phoff + uint64_t{header.e_phnum} * sizeof(Phdr));
  bool loads = false;
  for (unsigned i = 0; i < header.e_phnum; ++i) {
    auto ph = read_at<Phdr>(head, header.e_phoff + uint64_t{i} * sizeof(Phdr));
    if (ph.p_filesz == 0) continue;
    if (!fits(ph.p_offset, ph.p_filesz, file_size))
      return Error{"segment " + std::to_string(i) + " is not inside the file"};
    end = std::max<uint64_t>(end, ph.p_offset + ph.p_filesz);
    loads = loads || ph.p_type == PT_LOAD;
  }
  if (!loads) return Error{"no loadable segment"};
  return end;
}

// The image (the first image_size() bytes) with the header's section fields zeroed.
template <class Ehdr>
void drop_sections(std::string& image) {
  auto header = read_at<Ehdr>(image, 0);
  header.e_shoff = 0;
  header.e_shnum = 0;
  header.e_shstrndx = SHN_UNDEF;
  std::memcpy(image.data(), &header, sizeof header);
}

Expected<uint64_t> checked_image_size(std::string_view head, uint64_t file_size) {
  if (head.size() < EI_NIDENT || std::memcmp(head.data(), ELFMAG, SELFMAG) != 0) return Error{"not an ELF file"};
  const unsigned char native = std::endian::native == std::endian::little ? ELFDATA2LSB : ELFDATA2MSB;
  if (static_cast<unsigned char>(head[EI_DATA]) != native) return Error{"an ELF file of the other byte order"};
  switch (head[EI_CLASS]) {
    case ELFCLASS64:
      return image_size<Elf64_Ehdr, Elf64_Phdr>(head, file_size);
    case ELFCLASS32:
      return image_size<Elf32_Ehdr, Elf32_Phdr>(head, file_size);
    default:
      return Error{"an ELF file of an unknown class"};
  }
}

std::string image_of(std::string image) {
  if (image[EI_CLASS] == ELFCLASS64)
    drop_sections<Elf64_Ehdr>(image);
  else
    drop_sections<Elf32_Ehdr>(image);
  return image;
}

}  // namespace

Expected<std::string> loadable_image(std::string_view elf) {
  auto size = checked_image_size(elf, elf.size());
  if (!size) return Error{size.error()};
  return image_of(std::string(elf.substr(0, *size)));
}

Expected<std::string> read_loadable_image(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Error{"cannot open " + path + ": " + std::strerror(errno)};
  struct Close {
    int fd;
    ~Close() { ::close(fd); }
  } closing{fd};
  // Reads [0, n) whole, or says why not.
  auto read_start = [&](uint64_t n) -> Expected<std::string> {
    std::string bytes(n, '\0');
    for (size_t done = 0; done < n;) {
      const ssize_t got = ::pread(fd, bytes.data() + done, n - done, static_cast<off_t>(done));
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) return Error{"cannot read " + path + ": " + std::strerror(errno)};
      if (got == 0) return Error{path + " became shorter while it was read"};
      done += static_cast<size_t>(got);
    }
    return bytes;
  };
  struct stat st {};
  if (::fstat(fd, &st) != 0) return Error{"cannot read " + path + ": " + std::strerror(errno)};
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  // The program headers follow the ELF header in every executable a linker makes.
  auto head = read_start(std::min<uint64_t>(file_size, 64 * 1024));
  if (!head) return Error{head.error()};
  auto size = checked_image_size(*head, file_size);
  if (!size) return Error{size.error()};
  auto image = read_start(*size);
  if (!image) return Error{image.error()};
  return image_of(std::move(*image));
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

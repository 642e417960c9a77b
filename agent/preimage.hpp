// Pre-images: what each file held before the agent first changed it, kept so that `gptagent
// revert` can put the host back as it was. FileChanges keeps one before its first change of a path
// (content, owner and mode, or that the file did not exist); later changes keep nothing more.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "agent/expected.hpp"
#include "agent/host.hpp"

namespace gpt {

constexpr const char* kPreimageDir = "/var/lib/gptagent/pre-images";

// Keeps `path`'s pre-image unless one is kept already. The agent's own files (/var/lib/gptagent,
// /run, the resume unit, which goes by itself once its run is finished) have none.
Status keep_preimage(const Root& root, const std::string& path);

struct Preimage {
  std::string path;
  std::optional<std::string> content;  // nullopt: the file did not exist
  mode_t mode = 0644;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<std::string>
      created_dirs;  // of a file that did not exist: its directories the change made, deepest first
};
// Every kept pre-image, by path.
Expected<std::vector<Preimage>> load_preimages(const Root& root);

}  // namespace gpt

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

// A systemd unit's state before the agent first enabled, disabled, started or stopped it (the
// service module): what `gptagent revert` puts back, in the same index.
struct UnitPreimage {
  std::string unit;              // foo.service
  std::string scope = "system";  // or user
  std::string user;              // of a user unit
  std::string enabled;           // what systemctl is-enabled said: enabled, disabled, static...
  std::string active;            // what is-active said; "" when it could not be asked (under --root)
};
// Keeps it unless one is kept for that unit (scope, user) already.
Status keep_unit_preimage(const Root& root, const UnitPreimage& u);
// Every kept one; an entry the agent would not write (a unit or user name with other characters)
// is an error naming it.
Expected<std::vector<UnitPreimage>> load_unit_preimages(const Root& root);

}  // namespace gpt

// A module's file changes, planned the same way in check and apply mode and written only on apply.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/expected.hpp"
#include "agent/host.hpp"

namespace gpt {

class FileChanges {
 public:
  explicit FileChanges(const Root& root) : root_(root) {}

  // Plans `path` to hold `after`, given what it holds now (nullopt: it does not exist). Nothing is
  // planned when it already does.
  void write(std::string path, std::optional<std::string> before, std::string after, mode_t create_mode = 0644);
  // Reads `path` and plans it to hold `after`.
  Status write(std::string path, std::string after, mode_t create_mode = 0644);
  // Reads `path` and plans it to hold `after` with the owner, group and mode `attrs` declares: a
  // file with that content and another mode (say) is a change too, its own line in the diff, made
  // through a descriptor of the file (a symlink at the path is refused, never followed).
  Status write(std::string path, std::string after, const FileAttrs& attrs);
  void remove(std::string path, std::string before);
  void rename(std::string from, std::string to, std::string before);

  bool empty() const { return planned_.empty(); }
  std::vector<std::string> paths() const;
  std::string diff() const;
  // Writes every planned change in order with backups; stops at the first failure. Records the
  // backups in data["backups"] (path -> backup) and the files it created in data["created"].
  Status apply(nlohmann::json& data) const;

 private:
  enum class Kind { write, remove, rename, attrs };
  struct Planned {
    Kind kind;
    std::string path, to;
    std::optional<std::string> before;
    std::string after;
    mode_t mode;
    FileAttrs attrs = {};
    std::vector<std::string> attr_changes = {};  // what differs, for the diff
  };
  const Root& root_;
  std::vector<Planned> planned_;
};

}  // namespace gpt

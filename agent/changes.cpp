#include "agent/changes.hpp"

#include "agent/diff.hpp"
#include "agent/preimage.hpp"

namespace gpt {

void FileChanges::write(std::string path, std::optional<std::string> before, std::string after, mode_t mode) {
  if (before && *before == after) return;
  planned_.push_back({Kind::write, std::move(path), {}, std::move(before), std::move(after), mode});
}

Status FileChanges::write(std::string path, std::string after, mode_t mode) {
  auto before = read_file_if_exists(root_, path);
  if (!before) return Error{before.error()};
  write(std::move(path), std::move(*before), std::move(after), mode);
  return {};
}

Status FileChanges::write(std::string path, std::string after, const FileAttrs& attrs) {
  auto before = read_file_if_exists(root_, path);
  if (!before) return Error{before.error()};
  std::vector<std::string> differs;
  if (*before) {
    auto now = stat_file(root_, path);
    if (!now) return Error{now.error()};
    differs = attr_changes(&*now, attrs);
  } else {
    differs = attr_changes(nullptr, attrs);
  }
  const bool same_content = *before && **before == after;
  if (same_content && differs.empty()) return {};
  const mode_t create_mode = attrs.mode ? *attrs.mode : 0644;
  if (same_content)
    planned_.push_back({Kind::attrs, std::move(path), {}, std::move(*before), {}, 0, attrs, std::move(differs)});
  else
    planned_.push_back({Kind::write,
                        std::move(path),
                        {},
                        std::move(*before),
                        std::move(after),
                        create_mode,
                        attrs,
                        std::move(differs)});
  return {};
}

void FileChanges::remove(std::string path, std::string before) {
  planned_.push_back({Kind::remove, std::move(path), {}, std::move(before), {}, 0});
}

void FileChanges::rename(std::string from, std::string to, std::string before) {
  planned_.push_back({Kind::rename, std::move(from), std::move(to), std::move(before), {}, 0});
}

std::vector<std::string> FileChanges::paths() const {
  std::vector<std::string> out;
  for (const auto& p : planned_) out.push_back(p.path);
  return out;
}

std::string FileChanges::diff() const {
  std::string out;
  for (const auto& p : planned_) {
    switch (p.kind) {
      case Kind::write:
        out += p.before ? unified_diff(*p.before, p.after, p.path)
                        : unified_diff("", p.after, "/dev/null", p.path + " (new file)");
        break;
      case Kind::remove:
        out += unified_diff(*p.before, "", p.path + " (before)", "/dev/null (removed)");
        break;
      case Kind::rename:
        out += "renamed " + p.path + " to " + p.to + "\n";
        break;
      case Kind::attrs:
        break;
    }
    for (const auto& change : p.attr_changes) out += p.path + ": " + change + "\n";
  }
  return out;
}

Status FileChanges::apply(nlohmann::json& data) const {
  for (const auto& p : planned_) {
    // What the host had before the agent's first change of each file, for `gptagent revert`.
    if (auto s = keep_preimage(root_, p.path); !s) return s;
    if (p.kind == Kind::rename)
      if (auto s = keep_preimage(root_, p.to); !s) return s;
    std::optional<std::string> backup;
    switch (p.kind) {
      case Kind::write: {
        WriteOptions wo;
        wo.create_mode = p.mode;
        wo.attrs = p.attrs;
        auto w = write_file_atomic(root_, p.path, p.after, wo);
        if (!w) return Error{w.error()};
        backup = w->backup_path;
        break;
      }
      case Kind::remove: {
        auto r = remove_file(root_, p.path);
        if (!r) return Error{r.error()};
        backup = *r;
        break;
      }
      case Kind::rename: {
        auto r = rename_file(root_, p.path, p.to);
        if (!r) return Error{r.error()};
        backup = *r;
        break;
      }
      case Kind::attrs:
        if (auto s = set_file_attrs(root_, p.path, p.attrs); !s) return s;
        break;
    }
    if (backup)
      data["backups"][p.path] = *backup;
    else if (p.kind == Kind::write && !p.before)
      data["created"].push_back(p.path);
  }
  return {};
}

}  // namespace gpt

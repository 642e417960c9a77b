#include "agent/preimage.hpp"

#include <fcntl.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "agent/state.hpp"
#include "agent/trial.hpp"

namespace gpt {
namespace {

using json = nlohmann::json;

const std::string kIndex = std::string(kPreimageDir) + "/index.json";

std::string content_path(const std::string& path) { return std::string(kPreimageDir) + "/" + sha256_hex(path); }

Expected<json> load_index(const Root& root) {
  auto fd = open_own_file(root, kIndex, O_RDONLY);
  if (!fd) return Error{fd.error()};
  if (fd->get() < 0) return json{{"version", 1}, {"files", json::object()}};
  auto text = read_open_file(fd->get(), kIndex, 16u << 20);
  if (!text) return Error{text.error()};
  json j = json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("files") || !j["files"].is_object())
    return Error{kIndex + " is not the agent's index of pre-images"};
  return j;
}

Status write_own(const Root& root, const std::string& path, const std::string& text) {
  WriteOptions wo;
  wo.backup = false;
  wo.no_follow = true;
  wo.create_mode = 0600;
  auto w = write_file_atomic(root, path, text, wo);
  if (!w) return Error{w.error()};
  return {};
}

std::string unit_key(const UnitPreimage& u) { return u.scope + (u.user.empty() ? "" : ":" + u.user) + "|" + u.unit; }

bool unit_text(const std::string& s, std::string_view extra) {
  return !s.empty() && s.size() <= 256 && s[0] != '-' && s.find("..") == std::string::npos &&
         std::all_of(s.begin(), s.end(), [&](char c) {
           return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  extra.find(c) != std::string_view::npos;
         });
}

}  // namespace

Status keep_unit_preimage(const Root& root, const UnitPreimage& u) {
  auto index = load_index(root);
  if (!index) return Error{index.error()};
  json& units = (*index)["units"];
  if (!units.is_object()) units = json::object();
  if (units.contains(unit_key(u))) return {};
  units[unit_key(u)] = {
      {"unit", u.unit}, {"scope", u.scope}, {"user", u.user}, {"enabled", u.enabled}, {"active", u.active}};
  return write_own(root, kIndex, index->dump(2, ' ', false, json::error_handler_t::replace) + "\n");
}

Expected<std::vector<UnitPreimage>> load_unit_preimages(const Root& root) {
  auto index = load_index(root);
  if (!index) return Error{index.error()};
  std::vector<UnitPreimage> out;
  if (!index->contains("units")) return out;
  try {
    for (const auto& [key, e] : (*index)["units"].items()) {
      UnitPreimage u{e.at("unit").get<std::string>(), e.at("scope").get<std::string>(), e.at("user").get<std::string>(),
                     e.at("enabled").get<std::string>(), e.at("active").get<std::string>()};
      const bool sane = unit_text(u.unit, ":-_.\\@") && (u.scope == "system" || u.scope == "user") &&
                        (u.scope == "user") == !u.user.empty() && (u.user.empty() || unit_text(u.user, "-_.")) &&
                        (u.enabled.empty() || unit_text(u.enabled, "-")) &&
                        (u.active.empty() || unit_text(u.active, "-"));
      if (!sane || key != unit_key(u)) return Error{kIndex + ": unit entry '" + key + "' is not one the agent writes"};
      out.push_back(std::move(u));
    }
  } catch (const json::exception& ex) {
    return Error{kIndex + " lacks what the agent records of units (" + ex.what() + ")"};
  }
  return out;
}

Status keep_preimage(const Root& root, const std::string& path) {
  if (path.rfind("/var/lib/gptagent/", 0) == 0 || path.rfind("/run/", 0) == 0 || path == kResumeUnit) return {};
  auto index = load_index(root);
  if (!index) return Error{index.error()};
  if ((*index)["files"].contains(path)) return {};
  auto now = read_file_if_exists(root, path);
  if (!now) return Error{"keeping what " + path + " held before the change: " + now.error()};
  json entry = {{"existed", now->has_value()}};
  if (!*now) {
    // The directories the change will make (write_file_atomic makes missing parents).
    json dirs = json::array();
    for (std::string dir = path.substr(0, path.rfind('/')); !dir.empty() && !path_exists(root, dir);
         dir = dir.substr(0, dir.rfind('/')))
      dirs.push_back(dir);
    entry["created_dirs"] = dirs;
  }
  if (*now) {
    auto info = stat_file(root, path);
    if (!info) return Error{info.error()};
    entry["mode"] = info->mode & 07777;
    entry["uid"] = info->uid;
    entry["gid"] = info->gid;
    // The content first, under a name made from the path: a run killed before the index names it
    // writes the same file again.
    if (auto s = write_own(root, content_path(path), **now); !s) return s;
  }
  (*index)["files"][path] = entry;
  return write_own(root, kIndex, index->dump(2, ' ', false, json::error_handler_t::replace) + "\n");
}

Expected<std::vector<Preimage>> load_preimages(const Root& root) {
  auto index = load_index(root);
  if (!index) return Error{index.error()};
  std::vector<Preimage> out;
  try {
    for (const auto& [path, e] : (*index)["files"].items()) {
      if (path.empty() || path[0] != '/' || path.find("/../") != std::string::npos)
        return Error{kIndex + ": '" + path + "' is not an absolute path"};
      Preimage p;
      p.path = path;
      for (const auto& d : e.value("created_dirs", json::array())) {
        const std::string dir = d.get<std::string>();
        if (path.rfind(dir + "/", 0) != 0) return Error{kIndex + ": '" + dir + "' is not a directory above " + path};
        p.created_dirs.push_back(dir);
      }
      if (e.at("existed").get<bool>()) {
        auto fd = open_own_file(root, content_path(path), O_RDONLY);
        if (!fd) return Error{fd.error()};
        if (fd->get() < 0) return Error{kIndex + ": the pre-image of " + path + " is missing"};
        auto text = read_open_file(fd->get(), content_path(path), 64u << 20);
        if (!text) return Error{text.error()};
        p.content = std::move(*text);
        p.mode = e.at("mode").get<mode_t>();
        p.uid = e.at("uid").get<uid_t>();
        p.gid = e.at("gid").get<gid_t>();
      }
      out.push_back(std::move(p));
    }
  } catch (const json::exception& ex) {
    return Error{kIndex + " lacks what the agent records (" + ex.what() + ")"};
  }
  return out;
}

}  // namespace gpt

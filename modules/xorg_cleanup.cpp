// xorg_cleanup: X11 configs that would make a display server take the NVIDIA GPU are neutralised:
// emptied (the walkthrough's advice), renamed to *.disabled, or removed — with a backup always.
#include <algorithm>
#include <cctype>

#include "agent/changes.hpp"
#include "agent/declare.hpp"
#include "agent/text.hpp"

namespace gpt {
namespace {

const char* kEmptied =
    "# Emptied by gptagent (GPU passthrough): no X server may take the GPU passed through to VMs.\n"
    "# The previous content is kept beside this file as *.gptagent-YYYYmmddTHHMMSS.\n";

// The lines X reads: comments and blanks dropped. Xorg keywords ignore case and underscores.
std::vector<std::string> active_lines(std::string_view text) {
  std::vector<std::string> out;
  for (std::string_view line : lines(text)) {
    line = trim(line.substr(0, line.find('#')));
    if (!line.empty()) out.emplace_back(line);
  }
  return out;
}

// Why a config makes X take an NVIDIA GPU, or empty when it does not.
std::string reason(std::string_view name, std::string_view text, const std::vector<std::string>& drivers) {
  auto lines = active_lines(text);
  for (const auto& line : lines) {
    std::string l = lower(line);
    l.erase(std::remove(l.begin(), l.end(), '_'), l.end());
    for (const auto& d : drivers) {
      if (l.rfind("driver", 0) == 0 && l.find("\"" + lower(d) + "\"") != std::string::npos)
        return "Driver \"" + d + "\"";
    }
    if (l.rfind("matchdriver", 0) == 0 && l.find("nvidia-drm") != std::string::npos) return "an nvidia-drm OutputClass";
  }
  if (lower(name).find("nvidia") != std::string::npos && !lines.empty()) return "an NVIDIA config";
  return {};
}

struct Candidate {
  std::string path;
  std::string why;
  std::string text;
};

struct Args {
  std::string mode = "empty";
  std::vector<std::string> paths;
  std::vector<std::string> dirs = {"/usr/share/X11/xorg.conf.d", "/etc/X11/xorg.conf.d"};
  std::vector<std::string> files = {"/etc/X11/xorg.conf"};
  std::vector<std::string> drivers = {"nvidia", "nouveau"};
};

std::optional<std::string> absolute_paths(const json& v) {
  for (const auto& p : v)
    if (p.get<std::string>().empty() || p.get<std::string>()[0] != '/') return "paths must be absolute";
  return std::nullopt;
}

const auto args_decl =
    ArgsDecl<Args>()
        .arg("mode", &Args::mode,
             "what becomes of a config that takes the GPU: emptied (with a comment), renamed to *.disabled, or "
             "removed; a backup is kept always",
             {.choices = {"empty", "disable", "remove"}})
        .arg("paths", &Args::paths, "more configs to neutralise whatever they say (absolute paths)",
             {.check = absolute_paths, .example = json::array({"/etc/X11/xorg.conf.d/20-gpu.conf"})})
        .arg("dirs", &Args::dirs, "directories whose *.conf files are looked at")
        .arg("files", &Args::files, "single configs that are looked at")
        .arg("drivers", &Args::drivers, "a config that names one of these drivers (Driver \"nvidia\") takes the GPU");

Expected<Result> converge(Context& ctx, const Args& args, bool apply) {
  const std::string& mode = args.mode;
  const auto& drivers = args.drivers;
  std::vector<std::string> paths;
  for (const auto& dir : args.dirs) {
    auto names = list_dir(ctx.root, dir);
    if (!names) return Error{names.error()};
    for (const auto& n : *names)
      if (ends_with(n, ".conf")) paths.push_back(dir + "/" + n);
  }
  for (const auto& f : args.files) paths.push_back(f);
  const std::vector<std::string>& explicit_paths = args.paths;
  paths.insert(paths.end(), explicit_paths.begin(), explicit_paths.end());

  std::vector<Candidate> found;
  for (const auto& p : paths) {
    if (std::any_of(found.begin(), found.end(), [&](const Candidate& c) { return c.path == p; })) continue;
    auto info = stat_file(ctx.root, p);
    if (!info) return Result::failed(info.error());
    if (!info->exists || !info->regular) continue;
    auto text = read_file(ctx.root, p);
    if (!text) return Result::failed(text.error());
    std::string name = p.substr(p.find_last_of('/') + 1);
    std::string why = reason(name, *text, drivers);
    const bool is_explicit = std::find(explicit_paths.begin(), explicit_paths.end(), p) != explicit_paths.end();
    if (why.empty() && is_explicit && !active_lines(*text).empty()) why = "listed in paths";
    if (!why.empty()) found.push_back({p, why, *text});
  }

  FileChanges changes(ctx.root);
  json files = json::array();
  for (const auto& c : found) {
    if (mode == "empty")
      changes.write(c.path, c.text, kEmptied);
    else if (mode == "disable")
      changes.rename(c.path, c.path + ".disabled", c.text);
    else
      changes.remove(c.path, c.text);
    files.push_back({{"path", c.path},
                     {"reason", c.why},
                     {"action", mode == "empty"     ? "emptied"
                                : mode == "disable" ? "disabled"
                                                    : "removed"}});
  }
  if (found.empty()) return Result::ok("no X11 config takes an NVIDIA GPU");
  std::vector<std::string> named;
  for (const auto& c : found) named.push_back(c.path + " (" + c.why + ")");
  const std::string list = join(named, ", ");
  const std::string verb = mode == "empty" ? "emptied " : mode == "disable" ? "renamed to *.disabled: " : "removed ";
  Result r = Result::changed(verb + list + "; restart the display manager for X to let go of the GPU");
  r.diff = changes.diff();
  r.data["files"] = files;
  if (apply) {
    if (auto s = changes.apply(r.data); !s) return Result::failed(s.error());
  }
  return r;
}

// What `gptagent doc xorg_cleanup` says beyond the arguments.
ModuleDocs docs() {
  return {
      .description =
          "Finds the X11 configs that make a display server take the NVIDIA GPU (in /usr/share/X11/xorg.conf.d/, "
          "/etc/X11/xorg.conf.d/, /etc/X11/xorg.conf, plus paths): *nvidia* files with content, any Driver "
          "\"nvidia\" / Driver \"nouveau\", any nvidia-drm OutputClass (X's case- and underscore-insensitive "
          "keywords; comments ignored).\n\n"
          "mode: empty (the default, the walkthrough's advice), disable (rename to *.disabled) or remove; a backup "
          "always. Each file, and why it was found, is in the report.",
      .examples = {"# Empty every X11 config that would make X take the NVIDIA GPU (a backup of each is kept)\n"
                   "- name: no X11 config may take the GPU\n"
                   "  xorg_cleanup:\n"
                   "    mode: empty\n",
                   "# Rename them to *.disabled, and a config of the user's whatever it says\n"
                   "- xorg_cleanup:\n"
                   "    mode: disable\n"
                   "    paths: [/etc/X11/xorg.conf.d/20-gpu.conf]\n"},
  };
}

const Registration registration{
    declare_module("xorg_cleanup", "neutralise X11 configs that make a display server take the NVIDIA GPU", args_decl,
                   converge),
    docs()};

}  // namespace
}  // namespace gpt

// kernel_install: writes a kernel's boot entry again with `kernel-install add RELEASE IMAGE`, so
// that it carries what /etc/kernel/cmdline says now (systemd-boot and other kernel-install hosts).
// The handler kernel_cmdline asks for on such hosts, and restore_files when it puts the file back.
#include "agent/declare.hpp"
#include "agent/text.hpp"
#include "modules/lib/handlers.hpp"

namespace gpt {
namespace {

std::optional<std::string> release_name(const json& v) {
  const std::string r = v.get<std::string>();
  if (r.empty()) return std::nullopt;
  const bool safe = std::all_of(r.begin(), r.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_' || c == '+' || c == '~';
  });
  if (!safe || r == "." || r == "..") return "'" + r + "' is not a kernel release";
  return std::nullopt;
}

}  // namespace

Expected<std::string> kernel_image(const Root& root, const std::string& release) {
  for (const std::string& image : {"/usr/lib/modules/" + release + "/vmlinuz", "/boot/vmlinuz-" + release})
    if (path_exists(root, image)) return image;
  return Error{"no image of kernel " + release + " (/usr/lib/modules/" + release + "/vmlinuz or /boot/vmlinuz-" +
               release + ")"};
}

namespace {

Expected<Result> converge(Context& ctx, const KernelInstallArgs& args, bool apply) {
  const std::string release = args.release.empty() ? ctx.facts.kernel_release : args.release;
  if (release.empty()) return Result::failed("the running kernel's release is not known: name one in release");
  if (!find_program(ctx.root, "kernel-install")) return Result::failed("kernel-install is not installed on this host");
  auto image = kernel_image(ctx.root, release);
  if (!image) return Result::failed(image.error());
  Result r = ctx.run_system(Command{{"kernel-install", "add", release, *image}, std::chrono::minutes(15)}, apply,
                            "wrote kernel " + release + "'s boot entry from /etc/kernel/cmdline");
  if (r.status == Outcome::changed) r.reboot_required = true;
  return r;
}

// What `gptagent doc kernel_install` says beyond the arguments.
ModuleDocs docs() {
  return {
      .description =
          "Writes a kernel's boot entry (and, through kernel-install's own plugins, its initramfs) again with "
          "kernel-install add RELEASE IMAGE, so that it carries what /etc/kernel/cmdline says now. The image is "
          "/usr/lib/modules/RELEASE/vmlinuz or /boot/vmlinuz-RELEASE; fails where kernel-install or the image is "
          "missing.\n\n"
          "The handler kernel_cmdline asks for on kernel-install hosts (systemd-boot) after it changed "
          "/etc/kernel/cmdline, and restore_files after it put that file back; in a stage booted as a trial it runs "
          "only once the trial boot passed the stage's checks. A playbook may also run it as a task. A change needs "
          "a reboot.",
      .examples = {"# The running kernel's entry again, from /etc/kernel/cmdline\n"
                   "- kernel_install: {}\n"},
      .reboot = true,
  };
}

}  // namespace

const ArgsDecl<KernelInstallArgs>& kernel_install_args() {
  static const auto decl = ArgsDecl<KernelInstallArgs>().arg(
      "release", &KernelInstallArgs::release, "the kernel whose entry is written (default: the running kernel)",
      {.check = release_name, .example = "6.9.7-arch1-1"});
  return decl;
}

namespace {

ModuleDef definition() {
  auto def = declare_module("kernel_install", "write a kernel's boot entry again (kernel-install add)",
                            kernel_install_args(), converge);
  def.regenerates_boot = true;
  def.handler_args = std::vector<std::string>{"release"};
  return def;
}
const Registration registration{definition(), docs()};

}  // namespace
}  // namespace gpt

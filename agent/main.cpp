// gptagent: prepares Linux hosts for GPU passthrough to libvirt/KVM virtual machines.

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <syslog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "agent/apply.hpp"
#include "agent/doc.hpp"
#include "agent/facts.hpp"
#include "agent/facts_view.hpp"
#include "agent/fleet.hpp"
#include "agent/handoff.hpp"
#include "agent/host.hpp"
#include "agent/inventory.hpp"
#include "agent/playbook.hpp"
#include "agent/report.hpp"
#include "agent/runner.hpp"
#include "agent/schema.hpp"

namespace {

using gpt::json;

struct Common {
  std::string root = "/";
  std::vector<std::string> extra;
  int verbosity = 0;
};

// Loads the playbook against the root's facts; prints the errors and returns nullopt on failure.
std::optional<gpt::Playbook> load(const std::string& path, const Common& c, const gpt::Facts& facts, bool json_out) {
  gpt::LoadOptions opts;
  opts.facts = facts.to_json();
  for (const auto& e : c.extra) {
    auto kv = gpt::parse_extra_var(e);
    if (!kv) {
      std::cerr << "gptagent: " << kv.error() << "\n";
      return std::nullopt;
    }
    opts.extra_vars.update(*kv);
  }
  auto res = gpt::load_playbook(path, opts);
  if (!res.ok()) {
    if (json_out)
      std::cout << json{{"playbook", path}, {"errors", res.errors}, {"exit_code", 1}}.dump(
                       2, ' ', false, nlohmann::json::error_handler_t::replace)
                << "\n";
    for (const auto& e : res.errors) std::cerr << e << "\n";
    std::cerr << "gptagent: " << path << ": " << res.errors.size() << (res.errors.size() == 1 ? " error" : " errors")
              << ", nothing was changed\n";
    return std::nullopt;
  }
  return std::move(res.playbook);
}

// std::cerr, and std::cout unless it carries JSON (which escapes its own, and must stay JSON), escape
// what people would otherwise get raw (see TerminalSafeBuf) until main ends (exit() included: a
// static goes before the standard streams' last flush).
class TerminalSafeStreams {
 public:
  explicit TerminalSafeStreams(bool json_out) : out_(std::cout.rdbuf()), err_(std::cerr.rdbuf()) {
    if (!json_out) std::cout.rdbuf(&out_);
    std::cerr.rdbuf(&err_);
  }
  ~TerminalSafeStreams() {
    std::cout.flush();
    std::cerr.flush();
    std::cout.rdbuf(out_sink_);
    std::cerr.rdbuf(err_sink_);
  }

 private:
  std::streambuf* out_sink_ = std::cout.rdbuf();
  std::streambuf* err_sink_ = std::cerr.rdbuf();
  gpt::TerminalSafeBuf out_, err_;
};

void setup_logging(int verbosity) {
  // Through std::cerr, so that log lines are escaped like everything else people read.
  auto logger =
      std::make_shared<spdlog::logger>("gptagent", std::make_shared<spdlog::sinks::ostream_sink_st>(std::cerr, true));
  logger->set_pattern("[%l] %v");
  spdlog::set_default_logger(logger);
  spdlog::set_level(verbosity >= 2 ? spdlog::level::debug : verbosity == 1 ? spdlog::level::info : spdlog::level::warn);
}

// Under --root no unit of the running system is stopped or started: each command is said as not
// run, and answered as a unit that is not active would be (nothing to stop).
class NotRunExec final : public gpt::Exec {
 public:
  explicit NotRunExec(std::string root) : root_(std::move(root)) {}
  gpt::ExecResult run(const gpt::Command& cmd) override {
    std::cerr << "gptagent handoff: not run under --root " << root_ << ": " << cmd.display() << "\n";
    return {3, false, "", ""};
  }

 private:
  std::string root_;
};

// What libvirt's qemu hook runs (modules/gpu_handoff.cpp installs it): the hand-off for the VM
// when it has a plan. Standard output stays empty (libvirt reads it as the domain's XML); what it
// does goes to the journal and to standard error, which libvirt logs when the hook fails.
int cmd_handoff(const Common& c, const std::vector<std::string>& hook) {
  // The domain XML libvirt writes to the hook's standard input: read, and left unused.
  char buf[65536];
  for (size_t total = 0; total < (64u << 20);) {
    const ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
    if (n <= 0) break;
    total += static_cast<size_t>(n);
  }
  if (auto ok = gpt::Root::check(c.root); !ok) {
    std::cerr << "gptagent: " << ok.error() << "\n";
    return 1;
  }
  gpt::Root root(c.root);
  ::openlog("gptagent-handoff", LOG_PID, LOG_DAEMON);
  // Under --root nothing of the running system is stopped or started: the commands are only said.
  gpt::ProcessExec system;
  NotRunExec not_run(root.dir());
  gpt::Exec& exec = root.sandboxed() ? static_cast<gpt::Exec&>(not_run) : system;
  gpt::HandoffIo io{exec, [](const std::string& line) {
                      const std::string shown = gpt::terminal_safe(line, false);
                      ::syslog(LOG_INFO, "%s", shown.c_str());
                      std::cerr << "gptagent handoff: " << line << "\n";
                    }};
  const int rc = gpt::run_handoff(root, io, hook[0], hook[1], hook[2]);
  ::closelog();
  return rc;
}

int cmd_validate(const std::string& playbook, const Common& c) {
  gpt::Root root(c.root);
  gpt::Facts facts = gpt::gather_facts(root);
  auto pb = load(playbook, c, facts, false);
  if (!pb) return 1;
  size_t tasks = 0;
  for (const auto& s : pb->stages) tasks += s.tasks.size();
  std::cout << playbook << ": valid (" << pb->stages.size() << (pb->stages.size() == 1 ? " stage, " : " stages, ")
            << tasks << (tasks == 1 ? " task)" : " tasks)") << "\n";
  return 0;
}

int cmd_facts(const Common& c, bool json_out, const std::string& capture) {
  if (auto ok = gpt::Root::check(c.root); !ok) {
    std::cerr << "gptagent: " << ok.error() << "\n";
    return 1;
  }
  gpt::Root root(c.root);
  if (!capture.empty()) {
    auto n = gpt::capture_facts(root, capture);
    if (!n) {
      std::cerr << "gptagent: " << n.error() << "\n";
      return 1;
    }
    std::cout << "captured " << *n << " files and links under " << capture
              << ": replay them with gptagent facts --root " << capture << "\n";
    return 0;
  }
  gpt::Facts facts = gpt::gather_facts(root);
  gpt::name_devices_from_host(root, facts);
  if (json_out)
    std::cout << facts.to_json().dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  else
    gpt::print_facts_table(std::cout, facts);
  return 0;
}

// `gptagent inventory -i INV --list`: the inventory as ansible-inventory --list shows it.
int cmd_inventory(const std::string& path) {
  auto inv = gpt::load_inventory(path);
  if (!inv) {
    std::cerr << "gptagent: " << inv.error() << "\n";
    return 1;
  }
  std::cout << gpt::inventory_list(*inv).dump(4, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  return 0;
}

// `gptagent apply PLAYBOOK -i INV --list-hosts`: the hosts a run would reach, as Ansible lists them.
int cmd_list_hosts(const std::string& path, const std::string& limit) {
  auto inv = gpt::load_inventory(path);
  if (!inv) {
    std::cerr << "gptagent: " << inv.error() << "\n";
    return 1;
  }
  auto hosts = gpt::select_hosts(*inv, limit.empty() ? "all" : limit);
  if (!hosts) {
    std::cerr << "gptagent: " << hosts.error() << "\n";
    return 1;
  }
  std::cout << "  hosts (" << hosts->size() << "):\n";
  for (const auto* h : *hosts) std::cout << "    " << h->name << "\n";
  return 0;
}

// `gptagent doc [MODULE]`, and the generated parts of the manual pages and completion words.
int cmd_doc(const CLI::App& app, const std::string& module, const std::string& roff, const std::string& words,
            bool json) {
  if (roff == "commands") gpt::write_roff_commands(std::cout, app);
  if (roff == "modules") gpt::write_roff_modules(std::cout);
  if (!roff.empty()) return 0;
  if (!words.empty()) {
    if (gpt::write_completion_words(std::cout, app, words)) return 0;
    std::cerr << "gptagent: --words takes commands, modules or a subcommand, not " << words << "\n";
    return 1;
  }
  if (json) {
    if (gpt::write_module_doc_json(std::cout, module)) return 0;
  } else if (module.empty()) {
    gpt::write_module_list(std::cout);
    return 0;
  } else if (gpt::write_module_doc(std::cout, module)) {
    return 0;
  }
  std::cerr << "gptagent: no module is named " << module << " (gptagent doc lists them)\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"gptagent: prepares Linux hosts for GPU passthrough to libvirt/KVM virtual machines"};
  app.set_version_flag("--version", std::string("gptagent ") + GPTAGENT_VERSION);
  app.require_subcommand(1);
  Common c;
  auto add_common = [&](CLI::App* sub, bool vars = true) {
    sub->add_option("--root", c.root, "Manage the host tree under DIR instead of / (sandbox; no system commands run)")
        ->type_name("DIR");
    if (vars)
      sub->add_option("-e,--extra-vars", c.extra, "Set a variable: key=value (repeatable)")->type_name("KEY=VALUE");
    sub->add_flag("-v,--verbose", c.verbosity, "More log output on stderr (-vv for debug)");
  };

  std::string playbook;
  gpt::ApplyOptions ao;
  auto* apply = app.add_subcommand("apply", "Converge the host to the playbook");
  apply->add_option("playbook", playbook, "Playbook (YAML)")->required();
  add_common(apply);
  apply->add_flag("-C,--check", ao.check, "Change nothing; report what would change (exit 2 on drift)");
  apply->add_flag("-D,--diff", ao.diff, "Show unified diffs of file changes");
  apply->add_flag("--json", ao.json, "Print one JSON document instead of the human report");
  apply->add_option("--color", ao.color, "Colour: auto (terminal, no NO_COLOR), always, never")
      ->check(CLI::IsMember({"auto", "always", "never"}))
      ->type_name("WHEN");
  apply->add_flag("--no-wait", ao.no_wait, "Fail at once when another run holds the lock");
  apply->add_option("-t,--tags", ao.tags, "Run only tasks with these tags")->delimiter(',')->type_name("TAGS");
  apply->add_option("--skip-tags", ao.skip_tags, "Skip tasks with these tags")->delimiter(',')->type_name("TAGS");
  apply->add_flag("--reboot", ao.reboot, "Reboot the host when a stage stops for a reboot (never under --root)");
  apply->add_flag("--no-trial", ao.no_trial,
                  "With --reboot: commit a stage's boot change directly instead of booting it once as a trial first");
  apply
      ->add_flag("--trial", ao.trial,
                 "Arm a trial boot for a stage's boot change: the caller reboots the host (the fleet controller does)")
      ->excludes("--no-trial");
  apply->add_flag("--reset-state", ao.reset_state, "Forget a recorded reboot and start from the first stage");
  apply->add_option("--from-stage", ao.from_stage, "Start at this stage, whatever was recorded")->type_name("NAME");
  apply
      ->add_option("--textfile", ao.textfile,
                   "After the run, write its metrics for node_exporter's textfile collector to PATH (under --root) "
                   "and record it for gptagent status")
      ->type_name("PATH");
  gpt::FleetOptions fo;
  apply
      ->add_option("-i,--inventory", fo.inventory,
                   "Provision the hosts of this Ansible inventory (YAML or INI) over SSH")
      ->type_name("INVENTORY");
  apply->add_option("-l,--limit", fo.limit, "Only the inventory hosts this pattern selects")->type_name("PATTERN");
  apply->add_option("-f,--forks", fo.forks, "Hosts at once (default 5)")->check(CLI::Range(1, 1000))->type_name("N");
  apply->add_option("--serial", fo.serial, "Hosts per batch, each batch finished before the next (default: all)")
      ->check(CLI::Range(1, 100000))
      ->type_name("N");
  apply->add_option("--reboot-timeout", fo.reboot_timeout, "Seconds to wait for a rebooted host (default 600)")
      ->check(CLI::Range(1, 86400))
      ->type_name("SECONDS");
  bool list_hosts = false;
  apply->add_flag("--list-hosts", list_hosts, "With -i: list the hosts the run would reach (after --limit) and stop");
  apply
      ->add_option("-c,--connect", ao.connect,
                   "libvirt URI for libvirt tasks without connect: (default qemu:///system)")
      ->type_name("URI");

  std::string inventory_path;
  auto* inventory = app.add_subcommand("inventory", "Show an Ansible inventory as ansible-inventory --list does");
  inventory->add_option("-i,--inventory", inventory_path, "The inventory (YAML, INI, directory or host list)")
      ->required()
      ->type_name("INVENTORY");
  bool inventory_list = false;  // the one output there is, required as by ansible-inventory
  inventory->add_flag("--list", inventory_list, "Every group and host with its variables, as JSON")->required();

  bool status_json = false;
  auto* status = app.add_subcommand("status", "Show whether a run waits for a reboot, and the last drift check");
  add_common(status, false);
  status->add_flag("--json", status_json, "As JSON");

  gpt::ApplyOptions ro;
  auto* revert =
      app.add_subcommand("revert",
                         "Put every file the agent changed back as it was before, regenerate grub.cfg and the "
                         "initramfs (a boot change, booted as a trial with --reboot)");
  add_common(revert, false);
  revert->add_flag("-C,--check", ro.check, "Change nothing; report what would change (exit 2 on drift)");
  revert->add_flag("-D,--diff", ro.diff, "Show unified diffs of file changes");
  revert->add_flag("--json", ro.json, "Print one JSON document instead of the human report");
  revert->add_flag("--reboot", ro.reboot, "Reboot the host when the revert needs it (never under --root)");
  revert->add_flag("--no-trial", ro.no_trial,
                   "With --reboot: commit the revert's boot change without a trial boot first");
  revert
      ->add_flag(
          "--trial", ro.trial,
          "Arm a trial boot for the revert's boot change: the caller reboots the host (the fleet controller does)")
      ->excludes("--no-trial");
  revert->add_flag("--no-wait", ro.no_wait, "Fail at once when another run holds the lock");
  gpt::FleetOptions rfo;
  revert
      ->add_option("-i,--inventory", rfo.inventory, "Revert the hosts of this Ansible inventory (YAML or INI) over SSH")
      ->type_name("INVENTORY");
  revert->add_option("-l,--limit", rfo.limit, "Only the inventory hosts this pattern selects")->type_name("PATTERN");
  revert->add_option("-f,--forks", rfo.forks, "Hosts at once (default 5)")->check(CLI::Range(1, 1000))->type_name("N");
  revert->add_option("--serial", rfo.serial, "Hosts per batch, each batch finished before the next (default: all)")
      ->check(CLI::Range(1, 100000))
      ->type_name("N");
  revert->add_option("--reboot-timeout", rfo.reboot_timeout, "Seconds to wait for a rebooted host (default 600)")
      ->check(CLI::Range(1, 86400))
      ->type_name("SECONDS");

  auto* resume = app.add_subcommand("resume",
                                    "Finish the run that stopped for a reboot: its checks, a trial boot's commit, the "
                                    "stages after it (the boot-time unit gptagent-resume.service runs it)");
  add_common(resume, false);
  bool resume_check = false;
  resume->add_flag("-C,--check", resume_check,
                   "Only the checks of the boot: change and commit nothing (exit 1 when one fails; what "
                   "gptagent-trial-check.service runs before systemd-boot may mark a trial entry good)");

  auto* validate = app.add_subcommand("validate", "Check a playbook (schema, variables) and touch nothing");
  validate->add_option("playbook", playbook, "Playbook (YAML)")->required();
  add_common(validate);

  bool facts_json = false;
  auto* facts = app.add_subcommand("facts", "Show what the agent sees on this host");
  add_common(facts);
  facts->add_flag("--json", facts_json, "All facts as JSON");
  std::string capture;
  facts->add_option("--capture", capture, "Copy what the agent reads of /proc and /sys into DIR (for bug reports)")
      ->type_name("DIR");

  std::string doc_module, doc_roff, doc_words;
  bool doc_json = false;
  auto* doc = app.add_subcommand("doc", "List the modules, or show a module's arguments");
  doc->add_option("module", doc_module, "The module to show")->type_name("MODULE");
  doc->add_option("--roff", doc_roff,
                  "Print the generated part of a manual page: commands (gptagent(1)) or modules (gptagent-playbook(5))")
      ->check(CLI::IsMember({"commands", "modules"}))
      ->type_name("PART");
  doc->add_option("--words", doc_words,
                  "Print words for shell completion, one a line: commands, modules, or a subcommand's options")
      ->type_name("WHAT");
  doc->add_flag("--json", doc_json, "Print the module's (or every module's) arguments as JSON, for programs");

  auto* schema = app.add_subcommand("schema", "Print the JSON Schema of the playbook format (for editors)");

  std::vector<std::string> hook_args;
  auto* handoff =
      app.add_subcommand("handoff", "Hand a VM's GPU over or back: what libvirt's hook from gpu_handoff runs");
  handoff->add_option("hook", hook_args, "libvirt's hook arguments: VM OPERATION SUB-OPERATION [EXTRA]")
      ->expected(3, 4)
      ->required()
      ->type_name("ARG");
  add_common(handoff, false);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 1;
  }
  static TerminalSafeStreams terminal_safe((*apply && ao.json) || (*revert && ro.json) || (*status && status_json) ||
                                           (*facts && facts_json) || *inventory || *doc || *schema);
  setup_logging(c.verbosity);
  if (*inventory) return cmd_inventory(inventory_path);
  if (*doc) return cmd_doc(app, doc_module, doc_roff, doc_words, doc_json);
  if (*schema) {
    std::cout << gpt::playbook_schema().dump(2) << "\n";
    return 0;
  }
  if (*apply && list_hosts) {
    if (fo.inventory.empty()) {
      std::cerr << "gptagent: --list-hosts lists the hosts of an inventory: give it with -i\n";
      return 1;
    }
    return cmd_list_hosts(fo.inventory, fo.limit);
  }
  if (*apply && !fo.inventory.empty()) {
    if (c.root != "/") {
      std::cerr
          << "gptagent: --root and -i exclude each other: a host's root is its gptagent_root inventory variable\n";
      return 1;
    }
    if (!ao.textfile.empty()) {
      std::cerr
          << "gptagent: --textfile is for a run on this host; each host of a fleet writes its own (see the README)\n";
      return 1;
    }
    for (const auto& e : c.extra)
      if (auto kv = gpt::parse_extra_var(e); !kv) {
        std::cerr << "gptagent: " << kv.error() << "\n";
        return 1;
      }
    fo.playbook = playbook;
    fo.check = ao.check;
    fo.diff = ao.diff;
    fo.json = ao.json;
    fo.color = ao.color;
    fo.tags = ao.tags;
    fo.skip_tags = ao.skip_tags;
    fo.reboot = ao.reboot;
    fo.no_trial = ao.no_trial;
    fo.reset_state = ao.reset_state;
    fo.from_stage = ao.from_stage;
    fo.connect = ao.connect;
    fo.no_wait = ao.no_wait;
    fo.extra_vars = c.extra;
    return gpt::run_fleet(fo, std::cout, std::cerr);
  }
  if (*apply) {
    ao.playbook = playbook;
    ao.root = c.root;
    for (const auto& e : c.extra) {
      auto kv = gpt::parse_extra_var(e);
      if (!kv) {
        std::cerr << "gptagent: " << kv.error() << "\n";
        return 1;
      }
      ao.extra_vars.update(*kv);
    }
    gpt::ProcessExec exec(&gpt::apply_interrupt());
    return gpt::run_apply(ao, exec, std::cout, std::cerr);
  }
  if (*status) return gpt::run_status(c.root, status_json, std::cout, std::cerr);
  if (*revert && !rfo.inventory.empty()) {
    if (c.root != "/") {
      std::cerr
          << "gptagent: --root and -i exclude each other: a host's root is its gptagent_root inventory variable\n";
      return 1;
    }
    rfo.revert = true;
    rfo.playbook = gpt::kRevertPlaybook;
    rfo.check = ro.check;
    rfo.diff = ro.diff;
    rfo.json = ro.json;
    rfo.color = "never";
    rfo.reboot = ro.reboot;
    rfo.no_trial = ro.no_trial;
    rfo.no_wait = ro.no_wait;
    return gpt::run_fleet(rfo, std::cout, std::cerr);
  }
  if (*revert) {
    ro.root = c.root;
    ro.color = "never";
    gpt::ProcessExec exec(&gpt::apply_interrupt());
    return gpt::run_revert(ro, exec, std::cout, std::cerr);
  }
  if (*resume) {
    gpt::ProcessExec exec(&gpt::apply_interrupt());
    gpt::ApplyOptions base;
    base.root = c.root;
    base.check = resume_check;
    return gpt::run_resume(base, exec, std::cout, std::cerr);
  }
  if (*validate) return cmd_validate(playbook, c);
  if (*handoff) return cmd_handoff(c, hook_args);
  if (*facts) return cmd_facts(c, facts_json, capture);
  return 1;
}

// gptagent schema: the checked-in playbooks/playbook.schema.json is what the agent prints, every
// shipped playbook validates against it with an independent validator (python3-jsonschema), and
// what the agent's loader refuses the schema refuses too, while the loader's lenient forms pass.
#include "agent/schema.hpp"

#include <gtest/gtest.h>

#include <filesystem>

#include "agent/module.hpp"
#include "agent/playbook.hpp"
#include "tests/support/sandbox.hpp"

namespace gpt {
namespace {

namespace fs = std::filesystem;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::string schema_file() { return test::source_path("playbooks/playbook.schema.json"); }

test::ProcResult validate(const std::vector<std::string>& playbooks) {
  std::vector<std::string> args = {test::source_path("tests/support/validate_playbook_schema.py"), schema_file()};
  args.insert(args.end(), playbooks.begin(), playbooks.end());
  return test::run_program("/usr/bin/python3", args);
}

// The loader's verdict, with facts enough for the templates the cases use.
std::vector<std::string> load_errors(const std::string& yaml) {
  LoadOptions opts;
  opts.facts = {{"gpus", nlohmann::json::array()}, {"distro", "debian"}, {"distro_like", nlohmann::json::array()}};
  return load_playbook_text(yaml, "case.yaml", opts).errors;
}

TEST(Schema, TheCheckedInSchemaIsWhatTheAgentPrints) {
  // The agent's own modules only: the test binary registers test modules of its own too.
  auto printed = test::run_agent({"schema"});
  EXPECT_EQ(printed.exit_code, 0);
  EXPECT_EQ(test::slurp(schema_file()), printed.out)
      << "regenerate it: build/gptagent schema > playbooks/playbook.schema.json";
}

TEST(Schema, EachModuleIsDescribedByItsSummaryAndDescription) {
  const auto schema = playbook_schema();
  for (const auto& name : Registry::instance().names()) {
    const ModuleDef* def = Registry::instance().find(name);
    EXPECT_EQ(schema["$defs"]["module_" + name]["description"],
              def->description.empty() ? def->summary : def->summary + "\n\n" + def->description)
        << name;
  }
  EXPECT_TRUE(contains(schema["$defs"]["module_vfio"]["description"].get<std::string>(), "softdep")) << schema.dump(2);
}

TEST(Schema, EveryShippedPlaybookValidatesAndNamesTheSchemaForEditors) {
  std::vector<std::string> playbooks;
  for (const char* dir : {"playbooks", "tests/lab/playbooks"})
    for (const auto& e : fs::directory_iterator(test::source_path(dir)))
      if (e.path().extension() == ".yaml") playbooks.push_back(e.path().string());
  playbooks.push_back(test::source_path("vagrant/lab.yaml"));
  ASSERT_GE(playbooks.size(), 11u);
  auto r = validate(playbooks);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  for (const auto& p : playbooks) {
    EXPECT_TRUE(contains(r.out, p + ": ok\n")) << r.out;
    const auto errors = load_errors(test::slurp(p));
    EXPECT_TRUE(errors.empty()) << p << ": " << (errors.empty() ? "" : errors[0]);
  }
  for (const char* p : {"playbooks/host.yaml", "playbooks/demo.yaml", "playbooks/seed-example.yaml",
                        "playbooks/cuda-vm.yaml", "playbooks/windows-gaming-vm.yaml"})
    EXPECT_TRUE(test::slurp(test::source_path(p)).starts_with("# yaml-language-server: $schema=playbook.schema.json\n"))
        << p;
}

struct Case {
  std::string name, yaml, pointer;  // pointer: where the validator must say it is wrong
};

TEST(Schema, WhatTheLoaderRefusesTheSchemaRefuses) {
  const std::vector<Case> cases = {
      {"unknown_module", "tasks:\n  - grub_cmdlin: {present: [iommu=pt]}\n", "/tasks/0"},
      {"unknown_argument", "tasks:\n  - grub_cmdline: {presnt: [iommu=pt]}\n", "/tasks/0/grub_cmdline"},
      {"not_a_choice", "tasks:\n  - xorg_cleanup: {mode: turbo}\n", "/tasks/0/xorg_cleanup/mode"},
      {"not_an_integer", "tasks:\n  - libvirt_domain: {name: vm, memory: 4G, vcpus: eight}\n",
       "/tasks/0/libvirt_domain/vcpus"},
      {"not_a_boolean", "tasks:\n  - service: {name: libvirtd, enabled: maybe}\n", "/tasks/0/service/enabled"},
      {"missing_required", "tasks:\n  - libvirt_domain: {name: vm, vcpus: 2}\n", "/tasks/0/libvirt_domain"},
      {"not_a_mapping", "tasks:\n  - libvirt_domain: [vm]\n", "/tasks/0/libvirt_domain"},
      {"two_modules", "tasks:\n  - xorg_cleanup: {}\n    preflight: {}\n", "/tasks/0"},
      {"bad_reboot", "stages:\n  - name: a\n    reboot: sometimes\n    tasks: [{xorg_cleanup: {}}]\n",
       "/stages/0/reboot"},
      {"stage_without_tasks", "stages:\n  - name: a\n", "/stages/0"},
      {"stages_and_tasks", "stages:\n  - tasks: [{xorg_cleanup: {}}]\ntasks: [{xorg_cleanup: {}}]\n", ""},
      {"unknown_top_key", "tasks: [{xorg_cleanup: {}}]\nhosts: all\n", ""},
      {"handler_without_name", "tasks: [{xorg_cleanup: {}}]\nhandlers:\n  - initramfs: {}\n", "/handlers/0"},
      {"facts_set", "vars: {facts: 1}\ntasks: [{xorg_cleanup: {}}]\n", "/vars"},
      {"exclusive_arguments", "tasks:\n  - libvirt_network: {name: n, address: 10.0.0.1/24, ip: 10.0.0.1}\n",
       "/tasks/0/libvirt_network"},
      {"one_of_required", "tasks:\n  - service: {name: libvirtd}\n", "/tasks/0/service"},
  };
  test::TempDir d;
  std::vector<std::string> files;
  for (const auto& c : cases) {
    EXPECT_FALSE(load_errors(c.yaml).empty()) << c.name << ": the loader takes it, so the case proves nothing";
    files.push_back(d / (c.name + ".yaml"));
    test::write(files.back(), c.yaml);
  }
  auto r = validate(files);
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_FALSE(contains(r.out, files[i] + ": ok\n")) << cases[i].name << "\n" << r.out;
    EXPECT_TRUE(contains(r.out, files[i] + ": " + (cases[i].pointer.empty() ? "/" : cases[i].pointer) + ": "))
        << cases[i].name << "\n"
        << r.out;
  }
}

TEST(Schema, WhatTheLoaderAcceptsTheSchemaAccepts) {
  const std::vector<std::string> cases = {
      // yes/on and digit strings, one item for a list, templates for typed values, null arguments.
      "vars: {mem: 4G, n: 2, flag: true, gpu: \"0000:01:00.0\"}\n"
      "tasks:\n"
      "  - name: defaults\n    xorg_cleanup:\n"
      "  - service: {name: libvirtd, enabled: yes, state: started}\n"
      "  - service: {name: libvirtd, enabled: \"{{ flag }}\"}\n"
      "  - libvirt_domain: {name: vm, memory: \"{{ mem }}\", vcpus: \"8\", gpus: [\"{{ gpu }}\"], rom: {file: "
      "/var/lib/libvirt/vbios/gpu.rom, bar: on}}\n"
      "  - libvirt_domain: {name: vm2, memory: 4096, vcpus: \"{{ n }}\", disks: [/var/lib/libvirt/images/a.qcow2],\n"
      "                     hyperv: true, interfaces: [{network: default}], graphics: {type: none}, video: none}\n"
      "  - vfio: {gpus: auto}\n    when: facts.gpus\n    tags: vfio\n    ignore_errors: on\n"
      "    notify: rebuild\n"
      "handlers:\n  - name: rebuild\n    initramfs:\n",
      "stages:\n  - name: host\n    reboot: when_needed\n    tasks:\n      - grub_cmdline: {iommu: auto}\n"
      "    handlers: []\n  - name: vm\n    tasks: [{preflight: {gpus: auto}}]\n",
  };
  test::TempDir d;
  std::vector<std::string> files;
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto errors = load_errors(cases[i]);
    EXPECT_TRUE(errors.empty()) << "case " << i << ": " << (errors.empty() ? "" : errors.front());
    files.push_back(d / ("case" + std::to_string(i) + ".yaml"));
    test::write(files.back(), cases[i]);
  }
  auto r = validate(files);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
}

}  // namespace
}  // namespace gpt

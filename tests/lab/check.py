#!/usr/bin/env python3
"""The quick tier's assertions: reads one layout's serial console (sections between @@LAB@@
markers, written by tests/lab/guest/init) and checks that what the agent said and did matches what
the real kernel shows for that PCI layout. Prints the failed checks with their evidence (every
check with -v or GPTAGENT_LAB_VERBOSE=1); exits 1 when any fails.
With --capture-into DIR, replaces DIR with the guest's `gptagent facts --capture`."""

import argparse
import base64
import io
import json
import os
import re
import shutil
import sys
import tarfile

CONSOLE = "0000:00:01.0"  # the host's own display (cirrus-vga, or std VGA in two-identical)
ROOT_PORT = "0000:00:1c.0"
GPU = "0000:01:00.0"  # the stand-in GPU behind the root port...
AUDIO = "0000:01:00.1"  # ...and its audio function
BRIDGE = "0000:01:00.0"  # gpu-shares-nic: the PCIe-to-PCI bridge behind the root port...
SHARED_GPU = "0000:02:01.0"  # ...a display controller...
NIC = "0000:02:02.0"  # ...and an e1000 behind it
VFIO_MODULES = ["vfio", "vfio_iommu_type1", "vfio_pci"]  # and vfio_virqfd before Linux 6.2 (vfio_modules)

PREFLIGHT = "preflight (automatic: the playbook takes GPUs)"
IOMMU_OFF_BIND = "vfio-pci can only take a device when the IOMMU is on, and it is off"


class Layout:
    def __init__(self, name, console_text):
        self.name = name
        self.sections = parse_sections(console_text)
        self.started = f"@@LAB@@ START {name}" in console_text
        self.done = f"@@LAB@@ DONE {name}" in console_text
        self.results = []  # (ok, what, evidence)
        self.notes = []

    # ---- reading the sections ----
    def text(self, name):
        return self.sections.get(name)

    def rc(self, step):
        t = self.text(step + ".rc")
        return int(t.strip()) if t and t.strip().lstrip("-").isdigit() else None

    def json(self, step):
        t = self.text(step)
        if t is None:
            return None
        try:
            return json.loads(t)
        except ValueError:
            return None

    def drivers(self, state):
        """address -> (driver, group) from STATE.drivers; '' for none."""
        t = self.text(state + ".drivers")
        if t is None:
            return None
        out = {}
        for line in t.splitlines():
            line = line.strip()
            if line.startswith("0000:") and " " not in line:  # `ls /sys/bus/pci/devices`
                out.setdefault(line, ("", ""))
            elif " -> " in line and "/sys/bus/pci/devices/" in line:  # `ls -l` of a driver or group link
                path, target = line.split(" -> ", 1)
                address, link = path.split("/sys/bus/pci/devices/", 1)[1].split("/", 1)
                driver, group = out.get(address, ("", ""))
                name = target.rstrip("/").rsplit("/", 1)[-1]
                out[address] = (name, group) if link == "driver" else (driver, name)
        return out

    def bound(self, state):
        d = self.drivers(state)
        return None if d is None else {a: drv for a, (drv, _) in d.items()}

    def vfio_groups(self, state):
        t = self.text(state + ".vfio")
        return None if t is None else sorted(n for n in t.split() if n.isdigit())

    def modules(self, state):
        t = self.text(state + ".modules")
        return None if t is None else [line.split()[0] for line in t.splitlines() if line.strip()]

    # ---- checking ----
    def check(self, ok, what, evidence=""):
        self.results.append((bool(ok), what, evidence))
        return bool(ok)

    def failed(self):
        return [r for r in self.results if not r[0]]


def parse_sections(text):
    out, name, buf = {}, None, []
    for line in text.replace("\r", "").split("\n"):
        if line.startswith("@@LAB@@ BEGIN "):
            name, buf = line[len("@@LAB@@ BEGIN "):].split()[0], []
        elif line.startswith("@@LAB@@ END ") and name is not None:
            out[name] = "\n".join(buf).rstrip("\n")
            name = None
        elif name is not None:
            buf.append(line)
    return out


def tasks(report):
    return [t for s in (report or {}).get("stages", []) for t in s.get("tasks", [])]


def task(report, module):
    return next((t for t in tasks(report) if t.get("module") == module and not t.get("handler")), None)


def summary(report):
    if report is None:
        return "no JSON report"
    return "; ".join(f"{t.get('module')}: {t.get('status')}: {t.get('msg')}" for t in tasks(report))


def json_difference(a, b, path=""):
    """Where two JSON values first differ, in words."""
    if type(a) is not type(b):
        return f"{path or '/'}: {a!r} vs {b!r}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return json_difference(a.get(k), b.get(k), f"{path}/{k}")
    elif isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return json_difference(x, y, f"{path}/{i}")
    elif a != b:
        return f"{path}: {a!r} vs {b!r}"
    return ""


def diff_drivers(before, after, words="{a}: {b} -> {n}"):
    lines = []
    for a in sorted(set(before or {}) | set(after or {})):
        b, n = (before or {}).get(a), (after or {}).get(a)
        if b != n:
            lines.append(words.format(a=a, b=b or "no driver", n=n or "no driver"))
    return ", ".join(lines) or "no driver changed"


def expect_drivers(lay, state, expected, what):
    got = lay.bound(state)
    if got is None:
        return lay.check(False, what, f"no {state}.drivers section")
    return lay.check(got == expected, what, diff_drivers(expected, got, "{a} is on {n}, not {b}") if got != expected else "")


def expect_apply(lay, step, rc, changed=None, evidence_extra=""):
    report = lay.json(step)
    got_rc = lay.rc(step)
    stats = (report or {}).get("stats", {})
    ok = got_rc == rc and report is not None
    if changed == 0:
        ok = ok and stats.get("changed") == 0
    elif changed == "some":
        ok = ok and stats.get("changed", 0) >= 1
    if rc == 0:
        ok = ok and stats.get("failed") == 0
    want = f"{rc}" + ("" if changed is None else f", changed {'>= 1' if changed == 'some' else changed}")
    evidence = f"exit {got_rc}, stats {stats}: {summary(report)}{evidence_extra}"
    if report is None:
        evidence += f"; stdout: {(lay.text(step) or '')[:300]!r}; stderr: {(lay.text(step + '.err') or '')[:300]!r}"
    lay.check(ok, f"{step}: apply exits {want}", "" if ok else evidence)
    return report


def file_text(lay, path):
    t = lay.text("file:" + path)
    return None if t is None or t == "(absent)" else t


# ---- facts: what every layout must show ----

def check_final_facts(lay):
    """After the runs, facts still read the drivers as sysfs has them (vfio-pci included)."""
    final = lay.json("facts-final")
    sysfs = lay.bound("final") or {}
    got = {d["address"]: d["driver"] for d in (final or {}).get("pci", [])}
    lay.check(final is not None and got == sysfs, "facts at the end: drivers as sysfs has them",
              diff_drivers(sysfs, got, "{a}: sysfs {b}, facts {n}"))


def vfio_modules(release):
    try:
        major, minor = (int(x) for x in release.split(".")[:2])
    except ValueError:
        return VFIO_MODULES
    return VFIO_MODULES + (["vfio_virqfd"] if (major, minor) < (6, 2) else [])


def check_facts_common(lay, release):
    facts = lay.json("facts")
    lay.check(lay.rc("facts") == 0 and facts is not None, "facts --json exits 0 with JSON",
              f"exit {lay.rc('facts')}: {lay.text('facts.err')}")
    if facts is None:
        return None
    uname = (lay.text("kernel") or "").strip()
    lay.check(uname == release and facts.get("kernel_release") == release, f"kernel {release} ran and facts name it",
              f"uname {uname!r}, facts {facts.get('kernel_release')!r}")
    lay.check(facts.get("cpu_vendor") == "intel" and facts.get("distro") == "debian", "facts: Intel CPU, Debian",
              f"{facts.get('cpu_vendor')}, {facts.get('distro')}")
    cmdline = (lay.text("cmdline") or "").split()
    lay.check(facts.get("cmdline") == cmdline, "facts: cmdline is /proc/cmdline", f"{facts.get('cmdline')} vs {cmdline}")
    sysfs = lay.drivers("boot") or {}
    pci = {d["address"]: d for d in facts.get("pci", [])}
    lay.check(sorted(pci) == sorted(sysfs), "facts: every PCI function in sysfs, no other",
              f"facts {sorted(pci)}, sysfs {sorted(sysfs)}")
    wrong = [f"{a}: facts {pci[a].get('driver')!r}/{pci[a].get('iommu_group')}, sysfs {drv!r}/{grp or None}"
             for a, (drv, grp) in sysfs.items() if a in pci and
             (pci[a].get("driver") != drv or pci[a].get("iommu_group") != (int(grp) if grp else None))]
    lay.check(not wrong, "facts: drivers and IOMMU groups as sysfs has them", "; ".join(wrong))
    groups = (lay.text("iommu_groups") or "").split()
    lay.check(facts["iommu"].get("groups") == len(groups), "facts: IOMMU group count as /sys/kernel/iommu_groups",
              f"facts {facts['iommu'].get('groups')}, sysfs {len(groups)}")
    lay.check(not facts.get("warnings"), "facts: nothing unread", f"{facts.get('warnings')}")
    replay = lay.json("replay")
    lay.check(replay == facts, "facts --root on the capture: the same facts as the kernel's sysfs gave",
              json_difference(facts, replay))
    return facts


def device(lay, facts, address, cls, vid, did):
    d = next((d for d in facts.get("pci", []) if d["address"] == address), None)
    return lay.check(d is not None and (d["class"], d["vendor"], d["device"]) == (cls, vid, did),
                     f"facts: {address} is {cls} {vid}:{did}",
                     "absent" if d is None else f"{d['class']} {d['vendor']}:{d['device']}")


def gpu(facts, address):
    return next((g for g in facts.get("gpus", []) if g["address"] == address), None)


def says(verdicts, level, text):
    return any(v["level"] == level and text in v["reason"] for v in verdicts or [])


def check_boot_vga_console(lay, facts, cid):
    device(lay, facts, CONSOLE, "0x030000", *cid.split(":"))
    g = gpu(facts, CONSOLE)
    lay.check(g is not None and g["boot_vga"] and not g["viable"] and says(g["verdicts"], "blocker", "it is the boot VGA device"),
              f"facts: {CONSOLE} is the boot VGA, blocked", json.dumps(g))


def check_gpu_alone(lay, facts, with_iommu=True):
    device(lay, facts, GPU, "0x030000", "1234", "1111")
    device(lay, facts, AUDIO, "0x040300", "8086", "2668")
    g = gpu(facts, GPU)
    if not lay.check(g is not None, f"facts: a GPU at {GPU}", f"GPUs: {[x['address'] for x in facts.get('gpus', [])]}"):
        return None
    lay.check(g["functions"] == [GPU, AUDIO] and not g["boot_vga"] and g["group_peers"] == [],
              f"facts: {GPU} has functions {GPU} {AUDIO}, is not the boot VGA, has no group peers",
              json.dumps({k: g[k] for k in ("functions", "boot_vga", "group_peers")}))
    if with_iommu:
        sysfs = lay.drivers("boot") or {}
        group = sysfs.get(GPU, ("", ""))[1]
        members = sorted(a for a, (_, grp) in sysfs.items() if grp == group)
        lay.check(group and members == [GPU, AUDIO] and sysfs.get(ROOT_PORT, ("", ""))[1] != group,
                  f"kernel: group {group} holds {GPU} and {AUDIO} only, the root port is apart", f"group {group}: {members}")
        lay.check(g["iommu_groups"] == [int(group or -1)] and g["viable"],
                  f"facts: {GPU} in group {group} alone, passthrough possible", json.dumps(g))
    return g


def expected_gpus(lay, facts, addresses):
    got = sorted(g["address"] for g in facts.get("gpus", []))
    lay.check(got == sorted(addresses), f"facts: GPUs {' '.join(sorted(addresses))}", f"{got}")


# ---- the runs: what the agent must do with each layout ----

def check_passes(lay, chosen, release):
    """The layout's GPU can go: vfio_bind binds it now; the vfio configuration, loaded by the real
    modprobe, gives vfio-pci exactly its functions; every later run is all ok."""
    base = lay.bound("boot") or {}
    groups = sorted({(lay.drivers("boot") or {}).get(a, ("", ""))[1] for a in chosen})
    bound = dict(base, **{a: "vfio-pci" for a in chosen})
    others = ", ".join(a for a in sorted(base) if a not in chosen)

    r = expect_apply(lay, "bind1", 0, "some")
    expect_drivers(lay, "bind1", bound, f"bind1: vfio_bind puts {' '.join(chosen)} on vfio-pci, leaves {others} alone")
    lay.check(set(groups) <= set(lay.vfio_groups("bind1") or []), f"bind1: /dev/vfio/{' '.join(groups)} appeared",
              f"/dev/vfio: {lay.text('bind1.vfio')!r}")
    lay.notes.append(f"vfio_bind: {summary(r)}")
    expect_apply(lay, "bind2", 0, 0)

    expect_drivers(lay, "released", base, "lab: vfio-pci released everything (drivers as at boot)")
    lay.check("vfio_pci" not in (lay.modules("released") or []), "lab: vfio_pci unloaded", lay.text("release"))

    r = expect_apply(lay, "vfio1", 0, "some")
    conf = file_text(lay, "/etc/modprobe.d/vfio.conf")
    lay.notes.append(f"vfio: {summary(r)}")
    lay.notes.append(f"/etc/modprobe.d/vfio.conf: {conf!r}")
    expect_drivers(lay, "vfio1", bound,
                   f"vfio1: the written configuration, loaded by modprobe, gives vfio-pci {' '.join(chosen)} and nothing else")
    lay.check(set(groups) <= set(lay.vfio_groups("vfio1") or []), f"vfio1: /dev/vfio/{' '.join(groups)} appeared",
              f"/dev/vfio: {lay.text('vfio1.vfio')!r}")
    modules = vfio_modules(release)
    loaded = lay.modules("vfio1") or []
    lay.check(all(m in loaded for m in modules), f"vfio1: {' '.join(modules)} loaded", f"{loaded}")
    load_conf = file_text(lay, "/etc/modules-load.d/vfio.conf") or ""
    lay.check(load_conf.split("\n")[1:] == modules, "vfio1: the modules listed for boot in modules-load.d",
              repr(load_conf))
    initramfs_modules = file_text(lay, "/etc/initramfs-tools/modules") or ""
    lay.check(all(m in initramfs_modules.split() for m in modules), "vfio1: the modules in /etc/initramfs-tools/modules",
              repr(initramfs_modules))

    expect_apply(lay, "quick1", 0, 0)  # vfio and vfio_bind after vfio alone: a second apply
    expect_apply(lay, "quick2", 0, 0)
    lay.check(lay.rc("quick-check") == 0, "quick-check: apply --check finds no drift",
              f"exit {lay.rc('quick-check')}: {summary(lay.json('quick-check'))}")
    expect_drivers(lay, "final", bound, f"final: {' '.join(chosen)} on vfio-pci, nothing else")
    g = gpu(lay.json("facts-final") or {}, chosen[0]) or {}
    lay.check(g.get("driver") == "vfio-pci" and g.get("viable") and says(g.get("verdicts"), "info", "bound to vfio-pci: ready for a VM"),
              f"facts at the end: {chosen[0]} on vfio-pci, ready for a VM", json.dumps(g))
    calls = (lay.text("update-initramfs.calls") or "").splitlines()
    lay.check(calls == ["update-initramfs -u -k all"], "the initramfs rebuilt once, when the configuration changed", f"{calls}")


def check_refused(lay, reason):
    """Nothing can go: every run fails early with the reason, and nothing is written or bound."""
    base = lay.bound("boot") or {}
    for step in ("bind1", "vfio1", "quick1", "quick2"):
        r = expect_apply(lay, step, 1, 0)
        first = tasks(r)[0] if tasks(r) else {}
        lay.check(first.get("name") == PREFLIGHT and first.get("status") == "failed" and reason in first.get("msg", "")
                  and len(tasks(r)) == 1,
                  f"{step}: the automatic preflight fails with '{reason}' and nothing runs after it", summary(r))
        if step == "bind1":
            lay.notes.append(f"preflight: {first.get('msg')}")
    for state in ("bind1", "vfio1", "final"):
        expect_drivers(lay, state, base, f"{state}: no driver changed")
        lay.check(lay.vfio_groups(state) == [], f"{state}: no /dev/vfio group", f"{lay.text(state + '.vfio')!r}")
    for path in ("/etc/modprobe.d/vfio.conf", "/etc/modules-load.d/vfio.conf"):
        lay.check(file_text(lay, path) is None, f"vfio1: {path} not written", repr(file_text(lay, path)))
    lay.check(not (lay.text("update-initramfs.calls") or "").strip(), "no initramfs rebuilt",
              lay.text("update-initramfs.calls"))


def check_iommu_off_in_kernel(lay):
    """The firmware has VT-d, the command line turns it off: the configuration for after the reboot
    is written, but the kernel gives vfio-pci nothing now, and vfio_bind refuses to unbind."""
    base = lay.bound("boot") or {}
    r = expect_apply(lay, "bind1", 1)
    t = task(r, "vfio_bind") or {}
    lay.check(t.get("status") == "failed" and IOMMU_OFF_BIND in t.get("msg", ""),
              f"bind1: vfio_bind refuses: '{IOMMU_OFF_BIND}'", summary(r))
    expect_drivers(lay, "bind1", base, "bind1: no driver changed")

    r = expect_apply(lay, "vfio1", 0, "some")
    lay.notes.append(f"vfio: {summary(r)}")
    conf = file_text(lay, "/etc/modprobe.d/vfio.conf") or ""
    ids = next((w.split("=", 1)[1].split(",") for line in conf.splitlines() if line.startswith("options vfio-pci")
                for w in line.split() if w.startswith("ids=")), [])
    lay.check(sorted(ids) == ["1234:1111", "8086:2668"], "vfio1: vfio.conf has ids=1234:1111,8086:2668 for after the reboot",
              repr(conf))
    lay.check("vfio_pci" in (lay.modules("vfio1") or []), "vfio1: vfio_pci loaded", lay.text("vfio1.modules"))
    expect_drivers(lay, "vfio1", base, "vfio1: the kernel gives vfio-pci nothing with the IOMMU off")
    lay.check(lay.vfio_groups("vfio1") == [], "vfio1: no /dev/vfio group", lay.text("vfio1.vfio"))

    r = expect_apply(lay, "quick1", 1)
    v, b = task(r, "vfio") or {}, task(r, "vfio_bind") or {}
    lay.check(v.get("status") == "ok" and b.get("status") == "failed" and IOMMU_OFF_BIND in b.get("msg", ""),
              "quick1: vfio ok (converged), vfio_bind refuses", summary(r))
    expect_drivers(lay, "final", base, "final: no driver changed")
    calls = (lay.text("update-initramfs.calls") or "").splitlines()
    lay.check(calls == ["update-initramfs -u -k all"], "the initramfs rebuilt once, when the configuration changed", f"{calls}")


# ---- the layouts ----

def gpu_alone(lay, facts, release):
    lay.check(facts["iommu"]["on"] and facts["iommu"]["units"] == ["dmar0"], "facts: IOMMU on (dmar0)", json.dumps(facts["iommu"]))
    expected_gpus(lay, facts, [CONSOLE, GPU])
    check_boot_vga_console(lay, facts, "1013:00b8")
    g = check_gpu_alone(lay, facts)
    if g:
        lay.notes.append(f"GPU {GPU} group {g['iommu_groups']}, viable {g['viable']}")
    check_passes(lay, [GPU, AUDIO], release)


def gpu_shares_nic(lay, facts, release):
    lay.check(facts["iommu"]["on"], "facts: IOMMU on", json.dumps(facts["iommu"]))
    expected_gpus(lay, facts, [CONSOLE, SHARED_GPU])
    check_boot_vga_console(lay, facts, "1013:00b8")
    device(lay, facts, BRIDGE, "0x060400", "1b36", "000e")
    device(lay, facts, SHARED_GPU, "0x038000", "1234", "1111")
    device(lay, facts, NIC, "0x020000", "8086", "100e")
    sysfs = lay.drivers("boot") or {}
    group = sysfs.get(SHARED_GPU, ("", ""))[1]
    members = sorted(a for a, (_, grp) in sysfs.items() if grp == group)
    lay.check(group and members == sorted([BRIDGE, SHARED_GPU, NIC]),
              f"kernel: bridge, display and NIC share group {group}", f"group {group}: {members}")
    g = gpu(facts, SHARED_GPU) or {}
    reason = f"IOMMU group {group} also holds {NIC} (Ethernet controller 8086:100e)"
    lay.check(g.get("group_peers") == [NIC] and not g.get("viable") and says(g.get("verdicts"), "blocker", reason),
              f"facts: {SHARED_GPU} blocked: '{reason}' (the bridge is no peer)", json.dumps(g))
    lay.notes.append(f"GPU {SHARED_GPU} group {group} with {members}")
    check_refused(lay, "gpus: auto found no GPU that can be passed through")
    r = lay.json("vfio1")
    first = tasks(r)[0] if tasks(r) else {}
    lay.check(reason in first.get("msg", ""), "vfio1: the preflight names the NIC sharing the group", first.get("msg", ""))


def two_identical(lay, facts, release):
    lay.check(facts["iommu"]["on"], "facts: IOMMU on", json.dumps(facts["iommu"]))
    expected_gpus(lay, facts, [CONSOLE, GPU])
    check_boot_vga_console(lay, facts, "1234:1111")
    g = check_gpu_alone(lay, facts)
    if g:
        lay.check(g["id"] == (gpu(facts, CONSOLE) or {}).get("id") == "1234:1111", "facts: both display devices are 1234:1111",
                  f"{g['id']}")
    check_passes(lay, [GPU, AUDIO], release)
    # The lab's control: `options vfio-pci ids=` alone takes the boot VGA too (the trap is real here).
    control = lay.bound("control") or {}
    lay.check(control.get(CONSOLE) == "vfio-pci" and control.get(GPU) == "vfio-pci",
              "lab control: `options vfio-pci ids=1234:1111` alone gives vfio-pci the boot VGA too",
              diff_drivers(lay.bound("boot"), control))


def iommu_off(lay, facts, release):
    reason = "the kernel runs with intel_iommu=on but found no IOMMU: enable VT-d in the firmware setup"
    i = facts["iommu"]
    lay.check(not i["on"] and i["groups"] == 0 and i["units"] == [], "facts: IOMMU off, no groups, no unit", json.dumps(i))
    lay.check(says(i["verdicts"], "blocker", reason), f"facts: IOMMU blocker '{reason}'", json.dumps(i["verdicts"]))
    expected_gpus(lay, facts, [CONSOLE, GPU])
    check_boot_vga_console(lay, facts, "1013:00b8")
    g = check_gpu_alone(lay, facts, with_iommu=False)
    if g:
        lay.check(not g["viable"] and g["iommu_groups"] == [] and says(g["verdicts"], "info", "its isolation is unknown"),
                  f"facts: {GPU} blocked by the firmware, isolation unknown", json.dumps(g["verdicts"]))
    check_refused(lay, reason)


def iommu_off_no_param(lay, facts, release):
    i = facts["iommu"]
    lay.check(not i["on"] and i["groups"] == 0 and i["units"] == [], "facts: IOMMU off, no groups, no unit", json.dumps(i))
    lay.check("intel_iommu=on" not in facts.get("cmdline", []), "the command line has no intel_iommu", f"{facts.get('cmdline')}")
    # Debian's kernel has the Intel IOMMU on by default: with no DMAR table, only the firmware can
    # help, and intel_iommu=on changes nothing.
    lay.check(says(i["verdicts"], "blocker", "firmware"),
              "facts: IOMMU blocker naming the firmware (no DMAR table; this kernel has the IOMMU on by default)",
              json.dumps(i["verdicts"]))
    expected_gpus(lay, facts, [CONSOLE, GPU])
    check_boot_vga_console(lay, facts, "1013:00b8")
    check_gpu_alone(lay, facts, with_iommu=False)
    check_refused(lay, "firmware")


def iommu_off_cmdline(lay, facts, release):
    reason = "intel_iommu=off on the kernel command line: replace it with intel_iommu=on"
    i = facts["iommu"]
    lay.check(not i["on"] and i["groups"] == 0, "facts: IOMMU off, no groups", json.dumps(i))
    lay.check(says(i["verdicts"], "warning", reason), f"facts: IOMMU warning '{reason}'", json.dumps(i["verdicts"]))
    expected_gpus(lay, facts, [CONSOLE, GPU])
    check_boot_vga_console(lay, facts, "1013:00b8")
    g = check_gpu_alone(lay, facts, with_iommu=False)
    if g:
        lay.check(g["viable"] and says(g["verdicts"], "info", "its isolation is unknown"),
                  f"facts: {GPU} possible once the IOMMU is on, isolation unknown", json.dumps(g["verdicts"]))
    check_iommu_off_in_kernel(lay)


def holder(lay, step):
    """(pid, comm) of the process the guest started to hold the GPU's card node, from STEP.holder."""
    first = (lay.text(step + ".holder") or "").split("\n")[0].split()
    return (int(first[0]), first[1]) if len(first) == 2 and first[0].isdigit() else (None, None)


def gpu_in_use(lay, facts, release):
    """The generic kernel's bochs drives the stand-in GPU and a process holds its card node: facts
    name the process, vfio_bind refuses until it is gone, and force: true unbinds it anyway."""
    lay.check(facts["iommu"]["on"] and facts["iommu"]["units"] == ["dmar0"], "facts: IOMMU on (dmar0)", json.dumps(facts["iommu"]))
    lay.check(release.endswith("-amd64") and not release.endswith("-cloud-amd64"), f"the generic kernel {release}", release)
    expected_gpus(lay, facts, [CONSOLE, GPU])
    check_boot_vga_console(lay, facts, "1013:00b8")
    g = check_gpu_alone(lay, facts) or {}
    lay.check(lay.rc("modprobe-bochs") == 0 and "bochs" in (lay.modules("boot") or []), "modprobe bochs: loaded",
              f"exit {lay.rc('modprobe-bochs')}: {lay.text('modprobe-bochs.err')!r}")
    base = lay.bound("boot") or {}
    lay.check(base.get(GPU) == "bochs-drm" and base.get(AUDIO) == "", f"kernel: {GPU} on bochs-drm, {AUDIO} on no driver",
              f"{GPU} {base.get(GPU)!r}, {AUDIO} {base.get(AUDIO)!r}")
    pid, comm = holder(lay, "boot")
    card = next((w.split("/dev/dri/")[1] for w in (lay.text("boot.holder") or "").split() if w.startswith("/dev/dri/")), None)
    lay.check(pid and comm == "sleep" and card and card.startswith("card"), "the guest: sleep holds the GPU's card node",
              lay.text("boot.holder"))
    lay.notes.append(f"holder: {comm} (pid {pid}) on /dev/dri/{card}")
    users = [{"pid": pid, "comm": "sleep", "nodes": [f"/dev/dri/{card}"]}]
    warning = f"GPU {GPU} is in use by sleep (pid {pid}): stop them before binding"
    lay.check(g.get("driver") == "bochs-drm" and g.get("in_use") == users, f"facts: {GPU} on bochs-drm, in use by sleep (pid {pid}) on /dev/dri/{card}",
              json.dumps({k: g.get(k) for k in ("driver", "in_use")}))
    lay.check(says(g.get("verdicts"), "warning", warning) and g.get("viable"), f"facts: warning '{warning}', passthrough still possible",
              json.dumps(g.get("verdicts")))
    lay.check((gpu(facts, CONSOLE) or {}).get("in_use") == [], f"facts: {CONSOLE} in use by nobody", json.dumps(gpu(facts, CONSOLE)))
    lay.check(f"in use by sleep (pid {pid})" in (lay.text("facts-table") or ""), "facts (table): names sleep and its pid",
              lay.text("facts-table"))

    # The holder alive: vfio_bind refuses, and nothing is unbound.
    r = expect_apply(lay, "held", 1)
    t = task(r, "vfio_bind") or {}
    refusal = f"GPU {GPU} is in use by sleep (pid {pid}): stop them before binding (nothing was unbound; force: true unbinds it anyway)"
    lay.check(t.get("status") == "failed" and t.get("msg") == refusal, f"held: vfio_bind refuses: '{refusal}'", summary(r))
    lay.notes.append(f"held: {summary(r)}")
    expect_drivers(lay, "held", base, f"held: {GPU} still on bochs-drm, nothing unbound")
    lay.check(lay.vfio_groups("held") == [], "held: no /dev/vfio group", lay.text("held.vfio"))

    # The holder gone: nobody uses it, the same apply binds it, a second is ok.
    free = gpu(lay.json("facts-free") or {}, GPU) or {}
    lay.check(free.get("in_use") == [] and free.get("driver") == "bochs-drm" and not says(free.get("verdicts"), "warning", "in use by"),
              f"facts after the holder ended: {GPU} on bochs-drm, in use by nobody", json.dumps(free))
    r = expect_apply(lay, "bind1", 0, "some")
    t = task(r, "vfio_bind") or {}
    lay.check(f"{GPU} (from bochs-drm)" in t.get("msg", ""), "bind1: vfio_bind unbinds bochs-drm", summary(r))
    lay.notes.append(f"bind1: {summary(r)}")
    bound = dict(base, **{GPU: "vfio-pci", AUDIO: "vfio-pci"})
    expect_drivers(lay, "bind1", bound, f"bind1: {GPU} {AUDIO} on vfio-pci, nothing else changed")
    group = (lay.drivers("boot") or {}).get(GPU, ("", ""))[1]
    lay.check(group in (lay.vfio_groups("bind1") or []), f"bind1: /dev/vfio/{group} appeared", lay.text("bind1.vfio"))
    expect_apply(lay, "bind2", 0, 0)

    # force: true with a holder alive: bochs-drm is unbound under it.
    expect_drivers(lay, "released", base, f"lab: {GPU} back on bochs-drm")
    pid2, comm2 = holder(lay, "forced")
    lay.check(pid2 and comm2 == "sleep", "the guest: a new sleep holds the card node", lay.text("forced.holder"))
    r = expect_apply(lay, "forced", 0, "some")
    t = task(r, "vfio_bind") or {}
    lay.check(f"(forced: it was in use by sleep (pid {pid2}))" in t.get("msg", ""), "forced: vfio_bind binds it and says whom it was in use by",
              summary(r))
    lay.notes.append(f"forced: {summary(r)}")
    expect_drivers(lay, "forced", bound, f"forced: {GPU} {AUDIO} on vfio-pci")
    after = (lay.text("forced.after") or "").split("\n")
    lay.check(after[0].strip() == "sleep", "forced: the holder lives on", lay.text("forced.after"))
    links = [re.sub(r".* (\d+ -> )", r"fd \1", line.strip()) for line in after if "/dev/dri/" in line]
    lay.notes.append(f"the holder after the forced unbind: {'; '.join(links) or 'no fd on /dev/dri'}"
                     + f", /dev/dri: {'gone' if 'No such file' in (lay.text('forced.dri') or '') else 'still there'}"
                     + f", killed at the end: {(lay.text('forced.exit') or '').strip()}")
    final = gpu(lay.json("facts-final") or {}, GPU) or {}
    lay.check(final.get("driver") == "vfio-pci" and final.get("in_use") == [],
              f"facts at the end: {GPU} on vfio-pci, in use by nobody (its DRM nodes went with bochs-drm)", json.dumps(final))
    # What the kernel said of bochs, its console and vfio-pci (the unbind under an open fd included).
    for line in (lay.text("dmesg") or "").splitlines():
        if any(w in line for w in ("bochs-drm", "Console: switching", "vfio-pci", "WARNING", "BUG", "Call Trace")):
            lay.notes.append("dmesg: " + line.strip())


LAYOUTS = {
    "gpu-alone": gpu_alone,
    "gpu-shares-nic": gpu_shares_nic,
    "two-identical": two_identical,
    "iommu-off": iommu_off,
    "iommu-off-no-param": iommu_off_no_param,
    "iommu-off-cmdline": iommu_off_cmdline,
    "gpu-in-use": gpu_in_use,
}


def unpack_capture(lay, dest):
    blob = lay.text("capture.tgz")
    if not blob or lay.rc("capture") != 0:
        return lay.check(False, f"capture saved to {dest}", f"no capture: {lay.text('capture.err')}")
    data = base64.b64decode("".join(blob.split()))
    tmp = dest + ".new"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for m in tar.getmembers():
            if not (m.isfile() or m.isdir() or m.issym()) or m.name.startswith("/") or ".." in m.name.split("/"):
                return lay.check(False, f"capture saved to {dest}", f"unexpected member {m.name}")
        tar.extractall(tmp)
    # Git keeps no empty directory: the fixture is what a checkout will hold.
    for root, dirs, files in os.walk(tmp, topdown=False):
        if not os.listdir(root) and root != tmp:
            os.rmdir(root)
    shutil.rmtree(dest, ignore_errors=True)
    os.rename(tmp, dest)
    count = sum(len(f) + len([d for d in ds if os.path.islink(os.path.join(r, d))]) for r, ds, f in os.walk(dest))
    lay.notes.append(f"capture saved to {os.path.relpath(dest)} ({count} files and links, {len(data)} bytes packed)")
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layout", required=True, choices=sorted(LAYOUTS))
    ap.add_argument("--console", required=True)
    ap.add_argument("--qemu-log")
    ap.add_argument("--release", required=True)
    ap.add_argument("--capture-into")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    text = open(a.console, errors="replace").read() if os.path.exists(a.console) else ""
    lay = Layout(a.layout, text)
    if lay.check(lay.started and lay.done, "the guest ran to the end",
                 f"started {lay.started}, done {lay.done}; last console lines: {text[-1500:]!r}; "
                 f"QEMU: {open(a.qemu_log).read()[-500:] if a.qemu_log and os.path.exists(a.qemu_log) else ''!r}"):
        facts = check_facts_common(lay, a.release)
        if facts is not None:
            try:
                LAYOUTS[a.layout](lay, facts, a.release)
                check_final_facts(lay)
            except (KeyError, TypeError, ValueError) as e:  # a report shaped unlike the agent's: a failure, with where
                lay.check(False, "the layout's checks ran", f"{type(e).__name__}: {e}")
        if a.capture_into:
            unpack_capture(lay, a.capture_into)
    steps = [(k[: -len(".seconds")], lay.text(k)) for k in lay.sections if k.endswith(".seconds")]
    if steps:
        lay.notes.insert(0, f"guest: /init at {lay.text('uptime.start')} s, " + ", ".join(f"{n} {t} s" for n, t in steps)
                         + f", poweroff at {lay.text('uptime.end')} s")
    bad = lay.failed()
    print(f"[lab] layout {a.layout}: {'PASS' if not bad else 'FAIL'} ({len(lay.results) - len(bad)} of {len(lay.results)} checks)")
    for note in lay.notes:
        print(f"    | {note}")
    for ok, what, evidence in lay.results:
        if not ok:
            print(f"    FAIL {what}\n         {evidence}")
        elif a.verbose or os.environ.get("GPTAGENT_LAB_VERBOSE"):
            print(f"    ok   {what}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

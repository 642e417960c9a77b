# gptagent.passthrough.apply: its documentation; the action plugin of the same name does the work.
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: apply
short_description: Run a gptagent playbook, or one gptagent module, on the host
description:
  - Copies the gptagent agent to the host by its SHA-256, unless the host's cache already holds it, and
    runs C(gptagent apply --json) there on a gptagent playbook or on a single gptagent module, as
    C(gptagent apply -i) does for each host of a fleet, with the same cache, so a host can be served by both.
  - The cache (C(remote_dir)) and every directory above it must belong to the remote user or root and be
    writable by no one else, else the task fails and nothing is copied or run. What is copied is the
    agent's loadable image (its ELF segments, no symbols or debug information), gzip-compressed when the
    host has gzip; it is decompressed under a name C(mktemp) makes, checked with C(sha256sum) and renamed
    into place. Each run works in a private C(mktemp -d) directory (mode 0700), where the copy that runs
    is hashed again right before it runs; the directory is removed afterwards.
  - Check mode runs C(gptagent apply --check); diff mode adds C(--diff) and returns each task's unified diff.
  - When a stage of the playbook stops for a reboot (the agent's exit 3), the task returns
    C(reboot_required=true) without failing. Reboot the host (M(ansible.builtin.reboot)), then run the
    task again; the agent checks what the reboot had to bring (the kernel command line, modules, devices
    bound to vfio-pci) and goes on with the next stage.
  - The agent runs as root; use C(become) when the remote user is not root. A C(become_user) other than
    root is refused.
  - The host's report is data, never trusted; a report that is not what the agent writes fails the task,
    and control characters in what the host sends are escaped as C(\xHH).
version_added: 0.1.0
author:
  - gptagent developers
options:
  playbook:
    description:
      - A gptagent playbook on the controller (as C(src) of M(ansible.builtin.copy), a relative path is
        looked for in the role's or play's C(files) directory). It is copied to the host for the run.
      - Exactly one of C(playbook) and C(module) is required.
    type: path
  module:
    description:
      - A single gptagent module to run instead of a playbook, such as C(grub_cmdline), C(vfio),
        C(xorg_cleanup), C(qemu_img) or C(libvirt_domain). It runs as the only task of a stage named after
        it with C(reboot=when_needed), so a change that needs a reboot stops there and is checked after it.
    type: str
  args:
    description: The arguments of C(module), as in a gptagent playbook.
    type: dict
    default: {}
  name:
    description: The name of the task of C(module) in the agent's report (default the module's name).
    type: str
  extra_vars:
    description:
      - Variables for the gptagent playbook, as C(gptagent apply -e) (C(inventory_hostname) is set unless
        given). Ansible's variables do not reach the playbook otherwise; with C(gptagent apply -i) the
        host's inventory variables do.
    type: dict
    default: {}
  agent:
    description:
      - The gptagent executable on the controller to copy to the host. It must run on the host's C(glibc), so
        ship the portable agent (C(scripts/build-portable) builds it for glibc 2.31 and newer).
      - Default the host variable C(gptagent_agent), else C(gptagent) found on the controller's C(PATH).
    type: path
  root:
    description:
      - The agent's C(--root) on the host (every host path is taken under it; commands that change the
        running system are only reported). Default the host variable C(gptagent_root), else C(/).
    type: str
  remote_dir:
    description:
      - Where the agent is cached on the host, as C(gptagent_remote_dir) of C(gptagent apply -i). Default
        the host variable C(gptagent_remote_dir), else C(~/.cache/gptagent) (the remote user's home).
    type: str
  remote_tmp:
    description:
      - Where the runs' private directories are made. Checked as the cache is, and it must allow execution.
        Default the host variable C(gptagent_remote_tmp), else C(tmp) in the agent cache.
    type: str
  tags:
    description: Run only the agent's tasks with these tags (C(--tags)).
    type: list
    elements: str
    default: []
  skip_tags:
    description: Skip the agent's tasks with these tags (C(--skip-tags)).
    type: list
    elements: str
    default: []
  connect:
    description: The libvirt URI of the agent's libvirt modules (C(--connect)).
    type: str
  no_wait:
    description: Fail at once when another gptagent run holds the host's lock (C(--no-wait)).
    type: bool
    default: false
  reset_state:
    description: Forget a recorded stop for a reboot and start at the first stage (C(--reset-state)).
    type: bool
    default: false
  from_stage:
    description: Start at this stage, forgetting a recorded stop for a reboot (C(--from-stage)).
    type: str
attributes:
  check_mode:
    support: full
    description: Runs C(gptagent apply --check), which changes nothing and predicts exactly what a run changes.
  diff_mode:
    support: full
    description: Returns the unified diff of every file a task changes (or would change).
  platform:
    platforms: posix
notes:
  - The host needs a POSIX shell, C(mktemp), C(stat), C(sha256sum) and C(gzip) (without gzip the agent is
    sent uncompressed). No Python is needed on the host for this module.
  - For a fleet that is not run by Ansible, C(gptagent apply PLAYBOOK -i INVENTORY) does the same over SSH
    with the same inventory, and reboots hosts itself with C(--reboot).
seealso:
  - module: ansible.builtin.reboot
'''

EXAMPLES = r'''
- name: Prepare the GPU hosts, 10 at a time
  hosts: gpus
  serial: 10
  max_fail_percentage: 10
  gather_facts: false
  become: true
  tasks:
    - name: The host side of GPU passthrough
      gptagent.passthrough.apply:
        playbook: host.yaml
        agent: /usr/local/lib/gptagent/gptagent
        extra_vars:
          gpu: "{{ gpu_address }}"
      register: gptagent

    - name: Reboot where a stage asked for it
      ansible.builtin.reboot:
      when: gptagent.reboot_required

    - name: The checks after the reboot, then the next stages
      gptagent.passthrough.apply:
        playbook: host.yaml
        agent: /usr/local/lib/gptagent/gptagent
        extra_vars:
          gpu: "{{ gpu_address }}"
      when: gptagent.reboot_required

- name: One gptagent module on its own
  gptagent.passthrough.apply:
    module: xorg_cleanup
    args: {}
'''

RETURN = r'''
changed:
  description: Whether a task of the agent changed something (in check mode, would change something).
  returned: always
  type: bool
msg:
  description: What happened in one line; on failure the failing task, its stage and its message.
  returned: always
  type: str
  sample: "task 'vfio-pci claims the GPU' of stage 'host' failed: PCI device 0000:09:00.0 does not exist"
reboot_required:
  description:
    - The agent stopped for a reboot (or still waits for one). Reboot the host, then run the task again.
  returned: always
  type: bool
exit_code:
  description: The agent's exit code (0 converged, 1 failed, 2 drift in check mode, 3 stopped for a reboot).
  returned: always
  type: int
diff:
  description: In diff mode, the unified diff of each task that changed a file.
  returned: when diff mode is on and a task changed (or would change) a file
  type: list
  elements: dict
  contains:
    prepared:
      description: The unified diff as the agent wrote it.
      type: str
stats:
  description: The agent's counts of tasks.
  returned: when the playbook ran
  type: dict
  sample: {ok: 3, changed: 2, failed: 0, skipped: 1, ignored: 0}
tasks:
  description: Every task the agent ran, in order.
  returned: when the playbook ran
  type: list
  elements: dict
  contains:
    stage:
      description: The stage (C(after the reboot (stage NAME)) for the checks after a reboot).
      type: str
    name:
      description: The task's name.
      type: str
    module:
      description: The gptagent module.
      type: str
    status:
      description: C(ok), C(changed), C(failed) or C(skipped).
      type: str
    msg:
      description: What the task found or did.
      type: str
agent_sha256:
  description: The SHA-256 of the agent run on the host (its cached name is C(gptagent-<sha256>)).
  returned: when the agent could be read
  type: str
agent_copied:
  description: Whether the agent had to be copied to the host on this run.
  returned: when the agent could be read
  type: bool
'''

if __name__ == '__main__':
    import json
    import sys

    # Only the action plugin of the same name runs this module, on the controller.
    print(json.dumps({'failed': True, 'msg': 'gptagent.passthrough.apply runs through its action plugin'}))
    sys.exit(1)

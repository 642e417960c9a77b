# shellcheck shell=bash
# pass and say never fail, so `test && pass || fail` is an if-then-else; KEEP is run's; single-quoted
# commands run in the guest.
# shellcheck disable=SC2015,SC2034,SC2016,SC2001
# The lab's full tier, sourced by tests/lab/run (which defines say, die, now, since, CLEANUP,
# CACHE_ROOT, GPTAGENT, REPO, LAB and the QEMU device arrays HOST_CONSOLE, IOMMU and
# GPU_BEHIND_ROOT_PORT).
#
# A minimal Debian 12 host built with debootstrap, booted through OVMF and a real GRUB that reads
# the guest's own /boot/grub/grub.cfg, reachable only over SSH on a loopback port. It has no QEMU,
# libvirt or OVMF, and no network: its only package source is a local repository in the image
# (`file:/srv/gptagent-repo`, the .deb files of the virtualization packages and their dependencies,
# fetched when the image is built and indexed with dpkg-scanpackages). From this machine, as a user
# would: `gptagent apply tests/lab/playbooks/software.yaml` installs them, starts libvirtd and
# defines a network; a domain `lab` is then defined there by hand (`virsh define`); then
# `gptagent apply tests/lab/playbooks/full.yaml -i INVENTORY --reboot` (its VM stage adopts `lab`),
# then the checks below, each an assertion.

# QEMU's own syntax separates a device's properties with commas.
# shellcheck disable=SC2054

# Bump when what goes into the cached image changes: the key then changes with it.
FULL_RECIPE=4
FULL_SUITE=bookworm
FULL_MIRROR=${GPTAGENT_LAB_MIRROR:-http://deb.debian.org/debian}
# What the guest is made of: a kernel, GRUB's tools (update-grub), initramfs-tools, sshd. The
# kernel a Debian server installs (generic, not cloud: the cloud kernel has no DRM driver, and the
# GPU hand-off needs the stand-in GPU's own, bochs, with its /dev/dri node).
FULL_PACKAGES=(
  linux-image-amd64 grub2-common initramfs-tools openssh-server kmod udev systemd-sysv
  ifupdown isc-dhcp-client
  # What a Debian server installed from its installer has and debootstrap's minbase has not.
  dbus libpam-systemd
  # initramfs-tools compresses with zstd by default and falls back to gzip, slower, without it.
  zstd
)
# The guest's local repository: what the packages module's `virtualization` and `tpm` sets are on
# Debian 12 (modules/packages.cpp), with every dependency and recommendation apt would install
# with them on that guest. None of it is installed in the image.
FULL_REPO=/srv/gptagent-repo
FULL_REPO_PACKAGES=(qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients ovmf swtpm swtpm-tools)
# The tools of this machine whose output goes into the image.
FULL_HOST_PACKAGES=(debootstrap grub-efi-amd64-bin e2fsprogs dpkg-dev)
FULL_GPU=0000:01:00.0
FULL_GPU_AUDIO=0000:01:00.1
FULL_PARAMS=(intel_iommu=on iommu=pt nouveau.modeset=0)

fail() {
  echo "[lab] FAIL: $*" >&2
  FULL_FAILED+=("$*")
}
pass() { say "ok: $*"; }

# ---- the cache: the disk image, the EFI system partition, the keys ----

full_versions() {
  {
    echo "recipe=$FULL_RECIPE"
    echo "suite=$FULL_SUITE"
    echo "mirror=$FULL_MIRROR"
    # The candidates of the guest's packages in this machine's apt lists (apt-get update moves
    # them), and the versions of the tools that build the image.
    # shellcheck disable=SC2016
    apt-cache show --no-all-versions "${FULL_PACKAGES[@]}" "${FULL_REPO_PACKAGES[@]}" 2>/dev/null |
      awk '/^Package:/ { p = $2 } /^Version:/ { print "guest:" p "=" $2 }'
    # shellcheck disable=SC2016
    dpkg-query -W -f='host:${Package}=${Version}\n' "${FULL_HOST_PACKAGES[@]}"
  } | sort -u
}

# The files the image gets beyond what debootstrap installs.
full_configure_root() {
  local root=$1 dir=$2
  echo lab >"$root/etc/hostname"
  printf '127.0.0.1 localhost\n127.0.1.1 lab\n' >"$root/etc/hosts"
  echo '/dev/vda / ext4 errors=remount-ro 0 1' >"$root/etc/fstab"
  printf 'auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n' >"$root/etc/network/interfaces"
  # /etc/default/grub as grub-pc and grub-efi-amd64 install it (their template), with the serial
  # console. no_timer_check: under TCG on a busy machine the kernel's timer test through the
  # remapped IO-APIC can miss its ticks and panic (see the quick tier).
  cp "$root/usr/share/grub/default/grub" "$root/etc/default/grub"
  sed -i -e 's/^GRUB_TIMEOUT=.*/GRUB_TIMEOUT=1/' \
    -e 's/^GRUB_CMDLINE_LINUX=.*/GRUB_CMDLINE_LINUX="console=ttyS0,115200 net.ifnames=0 no_timer_check"/' \
    -e 's/^#\{0,1\}GRUB_TERMINAL=.*/GRUB_TERMINAL=serial/' "$root/etc/default/grub"
  grep -q '^GRUB_TERMINAL=serial' "$root/etc/default/grub" || echo GRUB_TERMINAL=serial >>"$root/etc/default/grub"
  echo 'GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"' >>"$root/etc/default/grub"
  # The first grub.cfg, by hand: the guest's own update-grub replaces it on the first apply.
  mkdir -p "$root/boot/grub"
  cat >"$root/boot/grub/grub.cfg" <<'EOF'
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
set timeout=1
menuentry 'Debian (lab, first boot)' {
  linux /vmlinuz root=/dev/vda ro console=ttyS0,115200 net.ifnames=0 no_timer_check quiet
  initrd /initrd.img
}
EOF
  [ -e "$root/vmlinuz" ] && [ -e "$root/initrd.img" ] || die "debootstrap left no /vmlinuz or /initrd.img"
  # The guest's update-initramfs puts in what its own root device needs (MODULES=dep) rather than
  # most of the kernel's drivers: under TCG on a loaded 2-core machine `-u -k all` took 9.5 min
  # with MODULES=most and 2.8 min with dep. The initrd debootstrap made (most) boots the first time.
  echo MODULES=dep >"$root/etc/initramfs-tools/conf.d/lab.conf"
  # SSH: root with the lab's key only, and a host key made here (the controller verifies it).
  rm -f "$root"/etc/ssh/ssh_host_*
  ssh-keygen -q -t ed25519 -N '' -C lab-host -f "$root/etc/ssh/ssh_host_ed25519_key"
  cp "$root/etc/ssh/ssh_host_ed25519_key.pub" "$dir/host_key.pub"
  ssh-keygen -q -t ed25519 -N '' -C lab-controller -f "$dir/id_ed25519"
  install -d -m 700 "$root/root/.ssh"
  install -m 600 "$dir/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
  printf 'HostKey /etc/ssh/ssh_host_ed25519_key\nPasswordAuthentication no\nPermitRootLogin prohibit-password\nUseDNS no\n' \
    >"$root/etc/ssh/sshd_config.d/lab.conf"
  # Nothing on the guest's boot that the lab does not need: apt's timers, libvirt's NAT network
  # (no dnsmasq here).
  local unit
  for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
  done
  rm -f "$root/etc/libvirt/qemu/networks/autostart/default.xml"
  # Smaller: the downloaded packages, apt's lists, documentation.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/*
}

# The guest's only package source: FULL_REPO_PACKAGES and what apt would install with them on this
# root (dependencies and recommendations), downloaded by the root's own apt from the mirror while
# the image is built, indexed with dpkg-scanpackages, apt's lists made from it. Nothing installed.
full_build_repo() {
  local root=$1 repo=$1$FULL_REPO
  mkdir -p "$repo/partial"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  chroot "$root" apt-get update -qq >/dev/null || die "apt-get update in the image's root failed"
  chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --download-only \
    -o Dir::Cache::archives="$FULL_REPO/" "${FULL_REPO_PACKAGES[@]}" >/dev/null ||
    die "apt-get install --download-only ${FULL_REPO_PACKAGES[*]} in the image's root failed"
  rm -rf "$repo/partial" "$repo/lock"
  (cd "$repo" && dpkg-scanpackages --multiversion . /dev/null 2>/dev/null >Packages) || die "dpkg-scanpackages failed"
  echo "deb [trusted=yes] file:$FULL_REPO ./" >"$root/etc/apt/sources.list"
  rm -rf "$root"/var/lib/apt/lists/*
  chroot "$root" apt-get update -qq >/dev/null || die "apt-get update from the local repository failed"
  rm -f "$root"/var/cache/apt/*.bin
  : >"$root/etc/resolv.conf"
  local p
  for p in "${FULL_REPO_PACKAGES[@]}"; do
    grep -q "^Package: $p\$" "$repo/Packages" || die "the local repository has no $p"
    if dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
      die "$p is installed in the image: the guest must start without it"
    fi
  done
}

# GRUB for EFI as one file: its memdisk holds every module and an early config that finds the
# root file system by a file only it has and reads that file system's /boot/grub/grub.cfg (the one
# the guest's update-grub writes). Searching for /boot/grub/grub.cfg would find the memdisk's own.
# Once the root's /boot/grub holds GRUB's modules (full_trial_bad puts them there, as grub-install
# does), the prefix is the root's /boot/grub, as grub-install sets it: grub.cfg loads and saves the
# environment block (grub-reboot's next_entry) there, and the memdisk's would be read-only. Made
# for every run (a few seconds), so that the cached image does not depend on it.
full_build_esp() {
  local dir=$1
  mkdir -p "$dir/esp/EFI/BOOT"
  cat >"$dir/early.cfg" <<'EOF'
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
search --no-floppy --file --set=root /etc/debian_version
if [ -e ($root)/boot/grub/x86_64-efi/linux.mod ]; then set prefix=($root)/boot/grub; fi
configfile ($root)/boot/grub/grub.cfg
EOF
  grub-mkstandalone -O x86_64-efi -o "$dir/esp/EFI/BOOT/BOOTX64.EFI" "boot/grub/grub.cfg=$dir/early.cfg"
  rm "$dir/early.cfg"
}

full_build() {
  local dest=$1 tmp t
  tmp=$(mktemp -d "$CACHE_ROOT/.build-full.XXXXXX")
  CLEANUP+=("$tmp")
  chmod 755 "$tmp"
  mkdir -p "$tmp/out"
  t=$(now)
  local include
  include=$(
    IFS=,
    echo "${FULL_PACKAGES[*]}"
  )
  debootstrap --variant=minbase --include="$include" "$FULL_SUITE" "$tmp/root" "$FULL_MIRROR" >"$tmp/debootstrap.log" 2>&1 ||
    {
      tail -20 "$tmp/debootstrap.log" >&2
      die "debootstrap failed"
    }
  say "  debootstrap: $(since "$t")"
  t=$(now)
  full_configure_root "$tmp/root" "$tmp/out"
  say "  configured: $(since "$t")"
  t=$(now)
  full_build_repo "$tmp/root"
  say "  local repository: $(since "$t") ($(find "$tmp/root$FULL_REPO" -name '*.deb' | wc -l) packages, $(du -sm "$tmp/root$FULL_REPO" | cut -f1) MB)"
  t=$(now)
  # shellcheck disable=SC2016
  dpkg-query --admindir="$tmp/root/var/lib/dpkg" -W -f='${Package}=${Version}\n' >"$tmp/out/guest-packages.txt"
  mkfs.ext4 -q -F -L lab-root -d "$tmp/root" "$tmp/out/base.raw" 4G
  say "  image: $(since "$t") ($(du -m "$tmp/out/base.raw" | cut -f1) MB used of 4096)"
  t=$(now)
  full_build_esp "$tmp/out"
  say "  GRUB for EFI: $(since "$t")"
  echo "$FULL_VERSIONS" >"$tmp/out/versions.txt"
  rm -rf "$tmp/root"
  mv -T "$tmp/out" "$dest" 2>/dev/null || [ -f "$dest/base.raw" ] || die "cannot move the new cache entry to $dest"
  rm -rf "$tmp"
}

# Sets FULL_DIR, building the cache entry when it is missing.
full_cached() {
  FULL_VERSIONS=$(full_versions)
  echo "$FULL_VERSIONS" | grep -q '^guest:linux-image-amd64=' ||
    die "apt-cache knows no linux-image-amd64: run apt-get update"
  FULL_DIR=$CACHE_ROOT/full-$(echo "$FULL_VERSIONS" | sha256sum | cut -c1-16)
  if [ -f "$FULL_DIR/base.raw" ]; then
    say "cache: $FULL_DIR"
  else
    mkdir -p "$CACHE_ROOT" || die "cannot create $CACHE_ROOT (set GPTAGENT_LAB_CACHE to a writable directory)"
    [ "$(id -u)" -eq 0 ] || die "building the full tier's image needs root (debootstrap); a warm cache does not"
    say "cache: building $FULL_DIR (debootstrap $FULL_SUITE from $FULL_MIRROR)"
    full_build "$FULL_DIR"
  fi
}

# ---- the guest ----

full_stop_vm() {
  if [ -n "${FULL_QEMU_PID:-}" ] && kill -0 "$FULL_QEMU_PID" 2>/dev/null; then
    kill "$FULL_QEMU_PID" 2>/dev/null || true
    wait "$FULL_QEMU_PID" 2>/dev/null || true
  fi
  FULL_QEMU_PID=
}

full_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

full_start_vm() {
  cp /usr/share/OVMF/OVMF_VARS_4M.fd "$WORK/OVMF_VARS.fd"
  qemu-img create -q -f qcow2 -b "$FULL_DIR/base.raw" -F raw "$WORK/root.qcow2"
  [ -d "$WORK/esp" ] || full_build_esp "$WORK"
  PORT=$(full_free_port)
  # The whole guest's life under one timeout: every boot and reboot of the run.
  timeout --kill-after=10 "$FULL_TIMEOUT" qemu-system-x86_64 \
    -accel tcg -M q35,kernel-irqchip=split -cpu max,vendor=GenuineIntel -smp "$FULL_SMP" -m 2048 \
    -nodefaults -display none -monitor none -serial "file:$WORK/console.log" \
    "${IOMMU[@]}" "${HOST_CONSOLE[@]}" "${GPU_BEHIND_ROOT_PORT[@]}" \
    -drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
    -drive if=pflash,format=raw,unit=1,file="$WORK/OVMF_VARS.fd" \
    -drive file="$WORK/root.qcow2",format=qcow2,if=virtio \
    -drive file="fat:$WORK/esp",format=raw,if=virtio,readonly=on \
    -netdev user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:"$PORT"-:22 -device virtio-net-pci,netdev=n0 \
    -device virtio-rng-pci \
    </dev/null >"$WORK/qemu.log" 2>&1 &
  FULL_QEMU_PID=$!
  echo "[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$FULL_DIR/host_key.pub")" >"$WORK/known_hosts"
  SSH=(ssh -F /dev/null -i "$FULL_DIR/id_ed25519" -p "$PORT" -o BatchMode=yes -o ConnectTimeout=10
    -o UserKnownHostsFile="$WORK/known_hosts" -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes
    -o LogLevel=ERROR root@127.0.0.1)
}

guest() { timeout 120 "${SSH[@]}" "$@"; }
# For what runs long under TCG (dpkg's hooks build an initramfs and run update-grub; a revert
# regenerates both): 20 minutes.
guest_long() { timeout 1200 "${SSH[@]}" "$@"; }

# Waits until sshd answers; prints the guest's boot_id.
full_wait_ssh() {
  local deadline=$(($(date +%s) + $1)) id
  while [ "$(date +%s)" -lt "$deadline" ]; do
    kill -0 "$FULL_QEMU_PID" 2>/dev/null || {
      tail -5 "$WORK/console.log" >&2
      die "QEMU ended before SSH came up (see $WORK/console.log; --keep keeps it)"
    }
    if id=$(timeout 20 "${SSH[@]}" cat /proc/sys/kernel/random/boot_id 2>/dev/null) && [ -n "$id" ]; then
      echo "$id"
      return 0
    fi
    sleep 2
  done
  tail -20 "$WORK/console.log" >&2
  die "no SSH on 127.0.0.1:$PORT within $1 s"
}

full_inventory() {
  cat >"$WORK/inventory.yml" <<EOF
# The lab's guest: a Debian 12 host under QEMU, SSH forwarded to a loopback port.
all:
  hosts:
    lab:
      ansible_host: 127.0.0.1
      ansible_port: $PORT
      ansible_user: root
      ansible_ssh_private_key_file: $FULL_DIR/id_ed25519
      ansible_ssh_common_args: "-o UserKnownHostsFile=$WORK/known_hosts -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes"
EOF
}

# Ends the ssh masters the runs left for the next (gptagent_ssh_persist).
full_close_masters() {
  local s
  for s in "$WORK"/control/*; do
    [ -S "$s" ] && ssh -o ControlPath="$s" -O exit -- lab >/dev/null 2>&1 || true
  done
}

# Runs the agent against the lab inventory: `agent NAME ARGS...`; output in $WORK/NAME.out, exit
# code in RC, time in the phase line.
agent() {
  local name=$1 t
  shift
  t=$(now)
  RC=0
  ANSIBLE_SSH_CONTROL_PATH_DIR=$WORK/control timeout 1800 "$AGENT" apply "$PLAYBOOK" -i "$WORK/inventory.yml" --color never "$@" \
    >"$WORK/$name.out" 2>"$WORK/$name.err" || RC=$?
  say "phase $name: $(since "$t") (gptagent apply ${*:-}: exit $RC)"
  # The human report when asked for (a --json run's document stays in the work directory).
  if [ "${GPTAGENT_LAB_VERBOSE:-0}" = 1 ] && [ "$(head -c1 "$WORK/$name.out")" != "{" ]; then
    sed 's/^/    /' "$WORK/$name.out"
  fi
}

expect_rc() {
  local name=$1 want=$2
  if [ "$RC" -eq "$want" ]; then
    pass "$name exits $want"
  else
    fail "$name exits $RC, not $want"
    sed 's/^/    | /' "$WORK/$name.out" "$WORK/$name.err" | tail -40 >&2
  fi
}

# The JSON report's field for the lab host: `json_field NAME .stats.changed`
json_field() {
  python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))["hosts"]["lab"]
for k in sys.argv[2].strip(".").split("."): d = d[k]
print(d)' "$WORK/$1.out" "$2" 2>/dev/null || echo "?"
}

check_cmdline() {
  local when=$1 cmdline p
  cmdline=$(guest cat /proc/cmdline) || {
    fail "$when: cannot read /proc/cmdline"
    return
  }
  say "  /proc/cmdline ($when): $cmdline"
  for p in "${FULL_PARAMS[@]}" no_timer_check; do
    case " $cmdline " in
      *" $p "*) pass "$when: /proc/cmdline has $p" ;;
      *) fail "$when: /proc/cmdline lacks $p" ;;
    esac
  done
  # The guest's own update-grub wrote the entry GRUB booted: it names the kernel with BOOT_IMAGE
  # and the root by UUID, the hand-written first grub.cfg does neither.
  case $cmdline in
    *BOOT_IMAGE=/boot/vmlinuz-*root=UUID=*) pass "$when: booted from the grub.cfg update-grub wrote" ;;
    *) fail "$when: the command line is not from a grub.cfg update-grub wrote" ;;
  esac
}

check_vfio() {
  local when=$1 dev drv
  for dev in "$FULL_GPU" "$FULL_GPU_AUDIO"; do
    drv=$(guest "basename \"\$(readlink /sys/bus/pci/devices/$dev/driver)\"" 2>/dev/null || true)
    if [ "$drv" = vfio-pci ]; then
      pass "$when: $dev is on vfio-pci"
    else
      fail "$when: $dev is on '${drv:-no driver}', not vfio-pci"
    fi
  done
}

# What put the GPU on vfio-pci at boot: the initramfs the guest's update-initramfs built holds the
# vfio modules and the agent's modprobe.d file, and the kernel's log has vfio_pci taking the ids
# at load, before any agent ran.
check_initramfs() {
  local listing log
  listing=$(guest 'lsinitramfs /boot/initrd.img-$(uname -r)' 2>/dev/null || true)
  echo "$listing" | grep -q '/vfio-pci\.ko' && pass "the initramfs holds vfio-pci.ko" || fail "the initramfs has no vfio-pci.ko"
  echo "$listing" | grep -q 'etc/modprobe.d/vfio.conf$' && pass "the initramfs holds /etc/modprobe.d/vfio.conf" ||
    fail "the initramfs has no etc/modprobe.d/vfio.conf"
  log=$(guest 'dmesg | grep -E "vfio_pci: add \[1234:1111|vfio-pci 0000:01:00" | head -3' 2>/dev/null || true)
  echo "$log" | sed 's/^/    dmesg: /'
  echo "$log" | grep -q 'vfio_pci: add \[1234:1111' && pass "the kernel log has vfio_pci taking 1234:1111 at boot" ||
    fail "no 'vfio_pci: add [1234:1111' in the kernel log"
}

# The domain `lab` as a user writes it before any agent runs, defined with `virsh define` in the
# guest's own libvirtd: q35 under TCG, OVMF with an nvram of its own path, the disk the playbook's
# qemu_img makes (by then it does not exist: libvirt defines it anyway), a NIC on QEMU's user
# network (no bridge, no libvirt network), a Hyper-V block. The VM stage must adopt it: add the
# GPU, keep the rest.
FULL_MAC=52:54:00:1a:b0:19
FULL_VENDOR_ID=LabByHand01
FULL_NVRAM=/var/lib/libvirt/qemu/nvram/lab-by-hand_VARS.fd
# Reboots the guest as a person would (systemctl reboot) and waits for its new boot; prints the
# new boot_id.
full_reboot_by_hand() {
  local before id
  before=$(guest cat /proc/sys/kernel/random/boot_id)
  guest 'systemctl reboot' >/dev/null 2>&1 || true
  sleep 5
  while id=$(full_wait_ssh 600) && [ "$id" = "$before" ]; do sleep 2; done
  echo "$id"
}

# What a trial must leave as it found it: the GRUB files, the initramfs, what /boot holds, the
# one-shot in grubenv.
full_boot_files() {
  guest 'sha256sum /etc/default/grub /boot/grub/grub.cfg /boot/initrd.img-*; ls -a /boot /boot/grub; grep -v -e "^#" -e "^next_entry=\$" /boot/grub/grubenv || true'
}

# The command line GRUB gives the default entry: grub.cfg's first linux line, as the kernel sees it.
full_default_cmdline() {
  # shellcheck disable=SC2016
  guest "awk '/^[[:space:]]*linux[[:space:]]/ { \$1 = \"\"; sub(/^ /, \"\"); print \"BOOT_IMAGE=\" \$0; exit }' /boot/grub/grub.cfg"
}

# A boot change that stops the boot (tests/lab/playbooks/trial-bad.yaml), booted once as a trial:
# the kernel panics, panic=10 resets the guest, GRUB boots the previous default, the agent finds
# the trial did not come up and leaves the host as it was; one more reboot boots it as before.
full_trial_bad() {
  local t cmdline_before cmdline_after panics
  t=$(now)
  # The host as installed: GRUB's modules in /boot/grub (grub-install copies them from the same
  # package that made the guest's GRUB), grub.cfg written by its own update-grub (the image's first
  # one is the lab's, by hand).
  if tar -C /usr/lib/grub -cf - x86_64-efi | guest 'tar -C /boot/grub -xf - && test -e /boot/grub/x86_64-efi/linux.mod'; then
    pass "trial: GRUB's modules in the guest's /boot/grub, as grub-install puts them"
  else
    fail "trial: cannot copy GRUB's modules into the guest's /boot/grub"
  fi
  if guest 'grub-editenv /boot/grub/grubenv create && update-grub' >"$WORK/update-grub-first.out" 2>&1; then
    pass "trial: the guest's own update-grub wrote grub.cfg (and grubenv, as grub-install makes it)"
  else
    fail "trial: update-grub failed in the guest (see $WORK/update-grub-first.out)"
  fi
  full_boot_files >"$WORK/trial-before.txt" 2>&1
  # What the host boots by default (the guest runs the lab's first, hand-written entry now).
  cmdline_before=$(full_default_cmdline)
  FULL_CMDLINE_BEFORE=$cmdline_before
  full_etc_files >"$WORK/revert-before.txt" 2>&1
  PLAYBOOK=$LAB/playbooks/trial-bad.yaml
  agent trial-bad --reboot --reboot-timeout 600
  PLAYBOOK=$LAB/playbooks/full.yaml
  expect_rc trial-bad 1
  grep -q 'rebooted: \[lab\] 1 time' "$WORK/trial-bad.out" && pass "trial: the controller rebooted the guest once" ||
    fail "trial: no 'rebooted: [lab] 1 time' in the report"
  grep -q 'the trial boot did not come up: the host fell back to the previous entry' "$WORK/trial-bad.out" &&
    pass "trial: the run reports that the trial boot did not come up and the host fell back" ||
    fail "trial: the report does not say that the trial did not come up"
  grep -q "Booting \`gptagent trial boot (stage boot)'" "$WORK/console.log" &&
    pass "trial: GRUB booted the trial entry once (console: GRUB's menu)" ||
    fail "trial: the console shows no boot of the trial entry"
  panics=$(grep -c 'Kernel panic' "$WORK/console.log" || true)
  [ "$panics" -ge 1 ] && pass "trial: the trial boot panicked ($panics panic on the console) and the guest reset" ||
    fail "trial: no kernel panic on the console"
  full_boot_files >"$WORK/trial-after.txt" 2>&1
  if diff -u "$WORK/trial-before.txt" "$WORK/trial-after.txt" >"$WORK/trial-diff.txt"; then
    pass "trial: /etc/default/grub, grub.cfg, the initramfs, /boot and grubenv are byte-identical to before"
  else
    fail "trial: the host's boot files changed (see $WORK/trial-diff.txt)"
  fi
  cmdline_after=$(guest cat /proc/cmdline)
  [ "$cmdline_after" = "$cmdline_before" ] && pass "trial: the fallback boot has the default entry's command line, as before" ||
    fail "trial: /proc/cmdline is '$cmdline_after', not '$cmdline_before'"
  guest '~/.cache/gptagent/gptagent-* status' >"$WORK/trial-status.out" 2>&1 || true
  grep -q 'last trial boot: stage boot, failed' "$WORK/trial-status.out" && pass "trial: gptagent status shows the failed trial" ||
    fail "trial: gptagent status does not show the failed trial (see $WORK/trial-status.out)"
  # What /etc/default/grub now makes of the default entry: the same linux line as before.
  if [ "$(guest 'grub-mkconfig 2>/dev/null' | grep -m1 $'^\tlinux')" = "$(guest cat /boot/grub/grub.cfg | grep -m1 $'^\tlinux')" ]; then
    pass "trial: grub-mkconfig from /etc/default/grub gives the default entry's linux line as before"
  else
    fail "trial: grub-mkconfig would now give another default entry"
  fi
  full_reboot_by_hand >/dev/null
  cmdline_after=$(guest cat /proc/cmdline)
  [ "$cmdline_after" = "$cmdline_before" ] && pass "trial: after one more reboot, /proc/cmdline is the original one" ||
    fail "trial: after one more reboot /proc/cmdline is '$cmdline_after'"
  say "phase trial (a bad change, its trial, the fallback, one more reboot): $(since "$t")"
}

# The kernel-update guard: a second kernel package (Debian's cloud flavour, from the mirror the
# image came from) installed with dpkg after the setup. Its postinst runs /etc/kernel/postinst.d
# (update-grub, then the agent's zzz-gptagent-cmdline), dpkg's trigger builds its initramfs and
# runs /etc/initramfs/post-update.d (the agent's gptagent-vfio): both record that the new kernel
# keeps the setup.
full_kernel_guard() {
  local t pkg ver deb
  t=$(now)
  pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
  FULL_SECOND_KERNEL=$pkg
  ver=${pkg#linux-image-}
  rm -rf "$WORK/kernel" && mkdir -p "$WORK/kernel" && chmod 777 "$WORK/kernel"
  if [ -z "$pkg" ] || ! (cd "$WORK/kernel" && apt-get download "$pkg" >"$WORK/kernel-download.out" 2>&1); then
    fail "kernel guard: cannot download a second kernel package ($pkg) from the mirror"
    return
  fi
  deb=$(ls "$WORK"/kernel/*.deb)
  if guest 'cat >/root/second-kernel.deb' <"$deb" && guest_long 'dpkg -i /root/second-kernel.deb' >"$WORK/kernel-install.out" 2>&1; then
    pass "kernel guard: dpkg installed $pkg ($(du -m "$deb" | cut -f1) MB) and its hooks passed"
  else
    fail "kernel guard: dpkg -i $pkg failed (see $WORK/kernel-install.out)"
  fi
  guest "cat /var/lib/gptagent/kernel-guard/$ver" >"$WORK/kernel-guard-initramfs.txt" 2>&1 || true
  grep -q "^kind=initramfs$" "$WORK/kernel-guard-initramfs.txt" && grep -q "^missing=$" "$WORK/kernel-guard-initramfs.txt" &&
    pass "kernel guard: the new kernel's initramfs holds vfio, vfio_iommu_type1, vfio_pci (recorded by the hook)" ||
    fail "kernel guard: no clean initramfs record for $ver (see $WORK/kernel-guard-initramfs.txt)"
  guest "cat /var/lib/gptagent/kernel-guard/$ver.cmdline" >"$WORK/kernel-guard-cmdline.txt" 2>&1 || true
  grep -q "^what=.*vmlinuz-$ver .*iommu=pt" "$WORK/kernel-guard-cmdline.txt" && grep -q "^missing=$" "$WORK/kernel-guard-cmdline.txt" &&
    pass "kernel guard: the new kernel's GRUB entry carries the parameters (recorded by the hook)" ||
    fail "kernel guard: no clean GRUB entry record for $ver (see $WORK/kernel-guard-cmdline.txt)"
  guest '~/.cache/gptagent/gptagent-* status' >"$WORK/kernel-guard-status.out" 2>&1 || true
  grep -q "kernel guard: $ver: initramfs has everything the playbook wants" "$WORK/kernel-guard-status.out" &&
    pass "kernel guard: gptagent status shows the new kernel's records" ||
    fail "kernel guard: gptagent status does not show them (see $WORK/kernel-guard-status.out)"
  say "phase kernel guard (a second kernel installed with dpkg): $(since "$t")"
}

# What the agent may change in the guest's files, for the revert's comparison: /etc and grub.cfg,
# without the backups, what libvirt and the lab itself write there (domains, units, users, SSH),
# GRUB's environment block and the modules the lab put in /boot/grub.
full_etc_files() {
  # shellcheck disable=SC2016
  guest 'cd / && find etc boot/grub -xdev -type f ! -name "*.gptagent-*" ! -path "etc/libvirt/qemu/*" \
    ! -path "etc/systemd/*" ! -path "etc/ssh/*" ! -path "boot/grub/grubenv" ! -path "boot/grub/x86_64-efi/*" \
    ! -name ld.so.cache ! -regex "etc/\(passwd\|group\|shadow\|gshadow\|subuid\|subgid\)-?" |
    LC_ALL=C sort | xargs -d "\n" sha256sum'
}

# gptagent revert in the guest, as a person runs it on a lone host (--reboot): every file the agent
# changed put back, booted as a trial; the installed agent's gptagent-resume.service commits it at
# boot with nobody running anything; then the files are as before the agent's first change and,
# after one more reboot, /proc/cmdline is the original one.
full_revert() {
  local t boot_before id waited
  t=$(now)
  # The second kernel goes first: GRUB's default entry is the generic kernel's again.
  guest "dpkg --purge $FULL_SECOND_KERNEL" >"$WORK/kernel-purge.out" 2>&1 || fail "revert: cannot purge $FULL_SECOND_KERNEL"
  boot_before=$(guest cat /proc/sys/kernel/random/boot_id)
  guest_long '/usr/local/bin/gptagent revert --reboot' >"$WORK/revert.out" 2>&1 || true
  grep -q 'the next boot boots gptagent-trial once' "$WORK/revert.out" && pass "revert: armed as a trial boot" ||
    fail "revert: no trial armed (see $WORK/revert.out)"
  grep -q 'wrote /etc/systemd/system/gptagent-resume.service: /usr/local/bin/gptagent resume at boot' "$WORK/revert.out" &&
    pass "revert: gptagent-resume.service installed to finish the run at boot" || fail "revert: no resume unit (see $WORK/revert.out)"
  while id=$(full_wait_ssh 600) && [ "$id" = "$boot_before" ]; do sleep 2; done
  waited=0
  while guest test -e /var/lib/gptagent/state.json 2>/dev/null && [ $waited -lt 600 ]; do
    sleep 5
    waited=$((waited + 5))
  done
  guest 'journalctl -b -u gptagent-resume.service --no-pager' >"$WORK/revert-resume.log" 2>&1 || true
  grep -q 'committed: the default entry boots the stage' "$WORK/revert-resume.log" &&
    pass "revert: at boot, gptagent-resume.service verified the trial and committed it (nobody ran anything)" ||
    fail "revert: the resume unit did not commit (see $WORK/revert-resume.log)"
  guest 'test ! -e /etc/systemd/system/gptagent-resume.service && test ! -L /etc/systemd/system/multi-user.target.wants/gptagent-resume.service' &&
    pass "revert: the run finished, gptagent-resume.service removed itself" ||
    fail "revert: gptagent-resume.service is still installed after the run it finished"
  guest '/usr/local/bin/gptagent status' >"$WORK/revert-status.out" 2>&1 || true
  grep -q 'last trial boot: stage revert, committed' "$WORK/revert-status.out" && pass "revert: gptagent status shows the committed trial" ||
    fail "revert: status does not show the committed trial (see $WORK/revert-status.out)"
  full_etc_files >"$WORK/revert-after.txt" 2>&1
  if diff -u "$WORK/revert-before.txt" "$WORK/revert-after.txt" >"$WORK/revert-diff.txt"; then
    pass "revert: /etc and grub.cfg are byte-identical to before the agent's first change ($(wc -l <"$WORK/revert-after.txt") files)"
  else
    fail "revert: files differ from before the first run (see $WORK/revert-diff.txt)"
    sed 's/^/    | /' "$WORK/revert-diff.txt" | head -20 >&2
  fi
  full_reboot_by_hand >/dev/null
  [ "$(guest cat /proc/cmdline)" = "$FULL_CMDLINE_BEFORE" ] && pass "revert: after one more reboot, /proc/cmdline is the original one" ||
    fail "revert: /proc/cmdline is '$(guest cat /proc/cmdline)', not '$FULL_CMDLINE_BEFORE'"
  guest_long '/usr/local/bin/gptagent revert' >"$WORK/revert-again.out" 2>&1 || true
  grep -q 'changed=0' "$WORK/revert-again.out" && pass "revert: a second revert changes nothing" ||
    fail "revert: the second revert changed something (see $WORK/revert-again.out)"
  say "phase revert (trial boot, commit at boot by the unit, one more reboot): $(since "$t")"
}

full_define_by_hand() {
  guest 'cat >/root/lab-by-hand.xml' <<EOF
<domain type='qemu'>
  <name>lab</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>
    <nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>$FULL_NVRAM</nvram>
  </os>
  <features>
    <acpi/>
    <apic/>
    <hyperv mode='custom'>
      <relaxed state='on'/>
      <vapic state='on'/>
      <spinlocks state='on' retries='8191'/>
      <vendor_id state='on' value='$FULL_VENDOR_ID'/>
    </hyperv>
  </features>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/lab.qcow2'/>
      <target dev='vda' bus='virtio'/>
      <boot order='1'/>
    </disk>
    <interface type='user'>
      <mac address='$FULL_MAC'/>
      <model type='virtio'/>
    </interface>
    <serial type='pty'/>
    <console type='pty'/>
  </devices>
</domain>
EOF
  guest virsh -c qemu:///system define /root/lab-by-hand.xml >"$WORK/define-by-hand.out" 2>&1
}

# One part of a domain's XML, each element on a line as libvirt wrote it (without the whitespace
# after it): `domain_part FILE nvram|hyperv|interface|disk`. Nothing when the file is no domain.
domain_part() {
  python3 -c 'import sys, xml.etree.ElementTree as ET
paths = {"nvram": "./os/nvram", "hyperv": "./features/hyperv", "interface": "./devices/interface",
         "disk": "./devices/disk"}
for e in ET.parse(sys.argv[1]).getroot().findall(paths[sys.argv[2]]):
    e.tail = None
    print(" ".join(ET.tostring(e, encoding="unicode").split()))' "$1" "$2" 2>/dev/null || true
}

# The hand-made domain's parts in $WORK/domain-by-hand.xml against FILE: `check_kept WHEN FILE`.
check_kept() {
  local when=$1 file=$2 part before after
  for part in nvram hyperv interface disk; do
    before=$(domain_part "$WORK/domain-by-hand.xml" "$part")
    after=$(domain_part "$file" "$part")
    if [ -n "$before" ] && [ "$before" = "$after" ]; then
      pass "$when: the hand-made domain's $part is unchanged"
    else
      fail "$when: the hand-made domain's $part changed"
      diff <(echo "$before") <(echo "$after") | sed 's/^/    | /' >&2 || true
    fi
  done
}

# apt-get and dpkg in the guest replaced by wrappers that log each call to /root/pkg-calls (and
# then run the real one), or put back: `full_pkg_shims on|off`.
full_pkg_shims() {
  local t
  for t in /usr/bin/apt-get /usr/bin/dpkg; do
    if [ "$1" = on ]; then
      guest "mv $t $t.lab-real && cat >$t && chmod 755 $t" <<EOF
#!/bin/sh
echo "$t \$*" >>/root/pkg-calls
exec $t.lab-real "\$@"
EOF
    else
      guest "mv -f $t.lab-real $t"
    fi
  done
}

# Installed (dpkg's status says `install ok installed`) or not: `full_installed PACKAGE`.
full_installed() { guest "dpkg-query -W -f='\${Status}' $1 2>/dev/null" | grep -q 'install ok installed'; }

full_software() {
  local t p bare=1 changed
  t=$(now)
  for p in "${FULL_REPO_PACKAGES[@]}"; do full_installed "$p" && bare=0; done
  guest 'command -v virsh qemu-system-x86_64 >/dev/null' && bare=0
  [ "$bare" = 1 ] && pass "the guest starts without QEMU, libvirt or OVMF (${FULL_REPO_PACKAGES[*]} not installed)" ||
    fail "the guest already has some of ${FULL_REPO_PACKAGES[*]}"
  PLAYBOOK=$LAB/playbooks/software.yaml
  agent software-check --check --diff
  expect_rc software-check 2
  grep -q 'qemu-system-x86' "$WORK/software-check.out" && grep -q 'libvirt-daemon-system' "$WORK/software-check.out" &&
    pass "--check names the packages it would install (apt's simulation)" ||
    fail "--check does not name qemu-system-x86 and libvirt-daemon-system"
  full_installed qemu-system-x86 && fail "--check installed qemu-system-x86" || pass "--check installed nothing"
  agent software --json
  expect_rc software 0
  changed=$(json_field software .stats.changed)
  [ "$changed" -ge 2 ] 2>/dev/null && pass "first run: $changed tasks changed" || fail "first run: changed=$changed"
  local missing=()
  for p in "${FULL_REPO_PACKAGES[@]}"; do full_installed "$p" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && pass "installed from the local repository: ${FULL_REPO_PACKAGES[*]}" ||
    fail "not installed: ${missing[*]}"
  [ "$(guest systemctl is-enabled libvirtd.service 2>/dev/null)" = enabled ] &&
    [ "$(guest systemctl is-active libvirtd.service libvirtd.socket 2>/dev/null | grep -c '^active$')" -ge 1 ] &&
    pass "libvirtd is enabled and running (or listening on its socket)" || fail "libvirtd is not enabled and running"
  guest virsh -c qemu:///system net-info lab-nat >"$WORK/net-info.out" 2>&1 || true
  grep -qE '^Active: +yes' "$WORK/net-info.out" && grep -qE '^Autostart: +yes' "$WORK/net-info.out" &&
    pass "the network lab-nat is defined, active and started at boot" ||
    { fail "the network lab-nat is not active with autostart"; sed 's/^/    | /' "$WORK/net-info.out" >&2; }

  # The second run reads dpkg's database only: neither apt-get nor dpkg runs.
  full_pkg_shims on
  agent software-again --json
  expect_rc software-again 0
  changed=$(json_field software-again .stats.changed)
  [ "$changed" = 0 ] && pass "second run: changed=0" || fail "second run: changed=$changed"
  guest 'test ! -s /root/pkg-calls' && pass "second run: no apt-get or dpkg call" ||
    fail "second run called the package manager: $(guest cat /root/pkg-calls | tr '\n' ';')"
  agent software-check-again --check
  expect_rc software-check-again 0
  guest 'test ! -s /root/pkg-calls' && pass "--check after it: no apt-get or dpkg call" ||
    fail "--check called the package manager: $(guest cat /root/pkg-calls | tr '\n' ';')"
  full_pkg_shims off
  say "phase software (bare Debian 12 to libvirt): $(since "$t")"
}

# `packages: {absent: [swtpm-tools]}` removes it, and the next run is ok.
full_software_absent() {
  PLAYBOOK=$LAB/playbooks/software-absent.yaml
  agent software-absent
  expect_rc software-absent 0
  full_installed swtpm-tools && fail "swtpm-tools is still installed" || pass "packages absent: swtpm-tools removed"
  full_installed swtpm && pass "swtpm (which swtpm-tools needs, not the reverse) stays" || fail "swtpm went with swtpm-tools"
  agent software-absent-again --json
  expect_rc software-absent-again 0
  [ "$(json_field software-absent-again .stats.changed)" = 0 ] && pass "absent again: changed=0" ||
    fail "absent again: changed=$(json_field software-absent-again .stats.changed)"
  PLAYBOOK=$LAB/playbooks/full.yaml
}

# The driver a PCI device of the guest is bound to, or nothing.
full_driver() { guest "d=\$(readlink /sys/bus/pci/devices/$1/driver) && basename \$d" 2>/dev/null || true; }
full_unit_state() { guest "systemctl is-active $1" 2>/dev/null || true; }
# alice's own manager, reached as alice reaches it (the guest has no user D-Bus for --machine=).
FULL_ALICE='runuser -u alice -- env XDG_RUNTIME_DIR=/run/user/1000 systemctl --user'
full_user_unit_state() { guest "$FULL_ALICE is-active $1" 2>/dev/null || true; }

# 7. The GPU hand-off (gpu_handoff, tests/lab/playbooks/handoff.yaml): the stand-in GPU back on
# its own driver (bochs-drm, whose /dev/dri node a system unit holds open); starting the domain
# `lab` stops the unit, libvirt hands the GPU to vfio-pci; stopping it gives the GPU back and starts
# the unit again. A holder the plan does not name makes the hook fail: the domain does not start
# and the host stays as it was.
full_handoff() {
  local t drv state by_path=/dev/dri/by-path/pci-$FULL_GPU-card i
  t=$(now)
  guest "virsh -c qemu:///system destroy lab" >/dev/null 2>&1 || true
  # The installed agent the hook runs: root's, in a directory only root writes.
  guest 'cat >/usr/local/bin/gptagent.new && chmod 755 /usr/local/bin/gptagent.new && mv /usr/local/bin/gptagent.new /usr/local/bin/gptagent' <"$AGENT"
  # vfio-pci took the stand-in's functions at boot by their ids: without the ids, each goes back to
  # its own driver, as on a host whose GPU is the desktop's until a VM takes it.
  guest "modprobe -a bochs snd_hda_intel; echo 1234 1111 >/sys/bus/pci/drivers/vfio-pci/remove_id;
    echo 8086 2668 >/sys/bus/pci/drivers/vfio-pci/remove_id;
    for f in $FULL_GPU $FULL_GPU_AUDIO; do echo \$f >/sys/bus/pci/drivers/vfio-pci/unbind; echo \$f >/sys/bus/pci/drivers_probe; done;
    udevadm settle" >"$WORK/handoff-rebind.out" 2>&1 || true
  drv=$(full_driver $FULL_GPU)
  [ "$drv" = bochs-drm ] && pass "hand-off: $FULL_GPU back on its own driver, bochs-drm" ||
    fail "hand-off: $FULL_GPU is on '$drv', not bochs-drm"
  guest "printf '[Unit]\nDescription=holds the stand-in GPU (lab)\n[Service]\nExecStart=/bin/sh -c \"exec sleep infinity 3<$by_path\"\n' \
    >/etc/systemd/system/gpu-holder.service && systemctl daemon-reload && systemctl start gpu-holder" ||
    fail "hand-off: gpu-holder.service did not start"
  # A user's session holds it too: alice (in group video, which may open the card), her user
  # manager kept running (linger), a user unit of hers with the card open.
  guest "useradd -m -u 1000 -G video alice && loginctl enable-linger alice && for i in \$(seq 60); do
      [ -S /run/user/1000/systemd/private ] && break; sleep 1; done;
    printf '[Unit]\nDescription=holds the stand-in GPU in a user session (lab)\n[Service]\nExecStart=/bin/sh -c \"exec sleep infinity 4<$by_path\"\n' \
      >/etc/systemd/user/gpu-user-holder.service && $FULL_ALICE daemon-reload && $FULL_ALICE start gpu-user-holder" \
    >"$WORK/handoff-user.out" 2>&1 || fail "hand-off: alice's gpu-user-holder.service did not start"
  [ "$(full_user_unit_state gpu-user-holder)" = active ] && pass "hand-off: alice's user manager runs gpu-user-holder.service" ||
    fail "hand-off: alice's gpu-user-holder.service is $(full_user_unit_state gpu-user-holder)"
  guest "/usr/local/bin/gptagent facts" >"$WORK/handoff-facts-before.txt" 2>&1 || true
  grep -q "in use by sleep (pid" "$WORK/handoff-facts-before.txt" && pass "hand-off: facts names sleep (gpu-holder) as holding $FULL_GPU" ||
    fail "hand-off: facts does not see gpu-holder's sleep holding $FULL_GPU"

  PLAYBOOK=$LAB/playbooks/handoff.yaml
  agent handoff-apply
  expect_rc handoff-apply 0
  grep -q 'restart libvirtd (it reads its hooks when it starts)' "$WORK/handoff-apply.out" &&
    pass "hand-off: the new hook restarted libvirtd" || fail "hand-off: no restart of libvirtd in the report"
  guest test -x /etc/libvirt/hooks/qemu.d/gptagent-handoff && pass "hand-off: the hook is installed" ||
    fail "hand-off: no executable /etc/libvirt/hooks/qemu.d/gptagent-handoff"

  # The domain starts: the hook stops gpu-holder, libvirt moves the GPU to vfio-pci.
  if guest "virsh -c qemu:///system start lab" >"$WORK/handoff-start.out" 2>&1; then
    pass "hand-off: virsh start lab"
  else
    fail "hand-off: virsh start lab failed"
    sed 's/^/    | /' "$WORK/handoff-start.out" >&2
  fi
  state=$(guest "virsh -c qemu:///system domstate lab" 2>/dev/null | head -1 || true)
  [ "$state" = running ] && pass "hand-off: lab is running" || fail "hand-off: lab is '$state'"
  [ "$(full_unit_state gpu-holder)" = inactive ] && pass "hand-off: the hook stopped gpu-holder.service" ||
    fail "hand-off: gpu-holder.service is $(full_unit_state gpu-holder) while lab runs"
  [ "$(full_user_unit_state gpu-user-holder)" = inactive ] && pass "hand-off: the hook stopped alice's gpu-user-holder.service" ||
    fail "hand-off: alice's gpu-user-holder.service is $(full_user_unit_state gpu-user-holder) while lab runs"
  drv=$(full_driver $FULL_GPU)
  [ "$drv" = vfio-pci ] && pass "hand-off: $FULL_GPU on vfio-pci while lab runs" || fail "hand-off: $FULL_GPU is on '$drv' while lab runs"
  guest "/usr/local/bin/gptagent facts" >"$WORK/handoff-facts-running.txt" 2>&1 || true
  grep -q "stopped now, started again when the VM stops: gpu-holder.service" "$WORK/handoff-facts-running.txt" &&
    pass "hand-off: facts shows gpu-holder.service stopped for lab" || fail "hand-off: facts does not show what is stopped for lab"

  # The domain stops: the GPU goes back to bochs-drm, gpu-holder runs again.
  guest "virsh -c qemu:///system destroy lab" >"$WORK/handoff-destroy.out" 2>&1 || fail "hand-off: virsh destroy lab failed"
  for i in $(seq 30); do
    [ "$(full_unit_state gpu-holder)" = active ] && break
    sleep 1
  done
  [ "$(full_unit_state gpu-holder)" = active ] && pass "hand-off: gpu-holder.service runs again after lab stopped" ||
    fail "hand-off: gpu-holder.service is $(full_unit_state gpu-holder) after lab stopped"
  [ "$(full_user_unit_state gpu-user-holder)" = active ] && pass "hand-off: alice's gpu-user-holder.service runs again" ||
    fail "hand-off: alice's gpu-user-holder.service is $(full_user_unit_state gpu-user-holder) after lab stopped"
  drv=$(full_driver $FULL_GPU)
  [ "$drv" = bochs-drm ] && pass "hand-off: $FULL_GPU back on bochs-drm" || fail "hand-off: $FULL_GPU is on '$drv' after lab stopped"
  guest "journalctl -t gptagent-handoff --no-pager -o cat" >"$WORK/handoff-journal.txt" 2>&1 || true
  grep -q "lab: stopped gpu-holder.service" "$WORK/handoff-journal.txt" &&
    grep -q "lab: every unit stopped for it runs again" "$WORK/handoff-journal.txt" &&
    pass "hand-off: the journal has what the hook did at the start and at the stop" ||
    fail "hand-off: the journal lacks the hook's lines (see $WORK/handoff-journal.txt)"

  # A holder the plan does not name: the hook waits 3 s, starts gpu-holder again and fails.
  guest "systemd-run --unit=gpu-stubborn /bin/sh -c 'exec sleep infinity 3<$by_path'" >/dev/null 2>&1 ||
    fail "hand-off: gpu-stubborn did not start"
  agent handoff-short -e holder_timeout=3
  expect_rc handoff-short 0
  if guest "virsh -c qemu:///system start lab" >"$WORK/handoff-refused.out" 2>&1; then
    fail "hand-off: lab started while gpu-stubborn held the GPU"
  else
    pass "hand-off: virsh start lab fails while a holder outside the plan stays"
  fi
  grep -q "still held after 3 s: sleep (pid" "$WORK/handoff-refused.out" &&
    pass "hand-off: virsh says who still holds the GPU" || fail "hand-off: virsh's error does not name the holder"
  state=$(guest "virsh -c qemu:///system domstate lab" 2>/dev/null | head -1 || true)
  [ "$state" = "shut off" ] && pass "hand-off: lab did not start" || fail "hand-off: lab is '$state'"
  [ "$(full_unit_state gpu-holder)" = active ] && [ "$(full_driver $FULL_GPU)" = bochs-drm ] &&
    [ "$(full_unit_state gpu-stubborn)" = active ] && [ "$(full_user_unit_state gpu-user-holder)" = active ] &&
    pass "hand-off: as before: gpu-holder and alice's unit run again, the GPU on bochs-drm, gpu-stubborn untouched" ||
    fail "hand-off: the host is not as before (gpu-holder $(full_unit_state gpu-holder), GPU on $(full_driver $FULL_GPU))"
  guest "systemctl stop gpu-stubborn gpu-holder; $FULL_ALICE stop gpu-user-holder" >/dev/null 2>&1 || true
  say "phase handoff: $(since "$t")"
}

full() {
  local keep=0 start_vm=${GPTAGENT_LAB_START_VM:-1}
  while [ $# -gt 0 ]; do
    case $1 in
      --keep) keep=1 ;;
      --no-start) start_vm=0 ;;
      *) usage ;;
    esac
    shift
  done
  FULL_TIMEOUT=${GPTAGENT_LAB_FULL_TIMEOUT:-7200}
  FULL_SMP=${GPTAGENT_LAB_SMP:-2}
  FULL_FAILED=()
  local t0 t tool
  t0=$(now)
  for tool in qemu-system-x86_64 qemu-img debootstrap grub-mkstandalone mkfs.ext4 ssh ssh-keygen python3 timeout ldd strip; do
    command -v "$tool" >/dev/null || die "$tool is missing: run ./scripts/deps"
  done
  [ -f /usr/share/OVMF/OVMF_CODE_4M.fd ] || die "no OVMF: run ./scripts/deps"
  [ -x "$GPTAGENT" ] || die "no agent at $GPTAGENT: build it (./scripts/build) or set GPTAGENT"
  GPTAGENT=$(readlink -f "$GPTAGENT")
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/gptagent-lab-full.XXXXXX")
  CLEANUP+=("$WORK")
  KEEP=$keep
  # QEMU goes first (the shared connections to it end with it), then the files.
  trap 'full_stop_vm; full_close_masters; cleanup' EXIT

  # The agent the controller runs and copies to the guest: stripped (the debug info is most of the
  # binary), statically linked but for glibc.
  AGENT=$WORK/gptagent
  strip -o "$AGENT" "$GPTAGENT"
  local ldd_out bad
  ldd_out=$(ldd "$AGENT" 2>&1 || true)
  say "agent: $AGENT ($(stat -c %s "$AGENT") bytes stripped, $(stat -c %s "$GPTAGENT") unstripped)"
  # shellcheck disable=SC2001
  echo "$ldd_out" | sed 's/^/    ldd: /'
  bad=$(echo "$ldd_out" | awk '{ print $1 }' | grep -vE '^(linux-vdso\.so\.1|/lib64/ld-linux-x86-64\.so\.2|lib(c|m|pthread|dl|rt|resolv|util|anl)\.so\.[0-9]+)$' || true)
  if [ -n "$bad" ]; then
    fail "the agent links more than glibc: $(echo "$bad" | tr '\n' ' ')"
    die "a Debian host without those libraries cannot run it"
  fi
  pass "ldd lists only glibc"
  PLAYBOOK=$LAB/playbooks/full.yaml

  t=$(now)
  full_cached
  say "phase cache: $(since "$t")"

  t=$(now)
  full_start_vm
  local boot0 boot1 boot2
  boot0=$(full_wait_ssh 600)
  say "phase boot (OVMF, GRUB, Debian, sshd on 127.0.0.1:$PORT): $(since "$t")"
  full_inventory

  # 0. From a bare Debian 12: QEMU, libvirt and OVMF from the guest's local repository, libvirtd
  # enabled and running, a NAT network, all from tests/lab/playbooks/software.yaml.
  full_software
  PLAYBOOK=$LAB/playbooks/full.yaml

  # 1. A domain defined by hand before gptagent managed it (libvirtd starts on its socket).
  t=$(now)
  if full_define_by_hand; then
    pass "the domain 'lab' defined by hand with virsh define (a disk, a NIC, a Hyper-V block)"
  else
    fail "virsh define of the hand-made domain 'lab' failed"
    sed 's/^/    | /' "$WORK/define-by-hand.out" >&2
  fi
  guest virsh -c qemu:///system dumpxml --inactive lab >"$WORK/domain-by-hand.xml" 2>&1 || true
  grep -q "<mac address='$FULL_MAC'/>" "$WORK/domain-by-hand.xml" &&
    grep -q "<vendor_id state='on' value='$FULL_VENDOR_ID'/>" "$WORK/domain-by-hand.xml" &&
    ! grep -q '<hostdev' "$WORK/domain-by-hand.xml" && ! grep -q 'gptagent' "$WORK/domain-by-hand.xml" &&
    pass "virsh dumpxml --inactive lab: the MAC, the vendor_id, no hostdev, no record of the agent" ||
    fail "the hand-made domain's XML is not as defined (see $WORK/domain-by-hand.xml)"
  say "phase define by hand: $(since "$t")"

  # 1b. A boot change that stops the boot, booted as a trial: the host falls back, as it was.
  full_trial_bad

  # 2. The whole playbook with --reboot: host stage, its trial boot, checks, the commit, VM stage
  # (which adopts 'lab').
  agent apply-reboot --reboot --reboot-timeout 600
  expect_rc apply-reboot 0
  grep -q 'rebooted: \[lab\] 1 time' "$WORK/apply-reboot.out" && pass "the controller rebooted the guest once" ||
    fail "no 'rebooted: [lab] 1 time' in the report"
  # The expectations the host stage recorded, checked by the agent in the guest after the reboot
  # (fleet mode prints no stage names: the tasks are the checks' own).
  grep -q 'ok: \[lab\] the kernel command line has iommu=pt' "$WORK/apply-reboot.out" &&
    grep -q "ok: \[lab\] $FULL_GPU is bound to vfio-pci" "$WORK/apply-reboot.out" &&
    pass "the agent checked its expectations after the reboot (command line, vfio-pci)" ||
    fail "the report shows no post-reboot checks of the command line and of vfio-pci"
  boot1=$(guest cat /proc/sys/kernel/random/boot_id || true)
  [ -n "$boot1" ] && [ "$boot1" != "$boot0" ] && pass "new boot_id ($boot0 -> $boot1)" || fail "boot_id did not change ($boot0 -> $boot1)"
  check_cmdline "after the reboot"
  check_vfio "after the reboot"
  grep -q 'committed: the default entry boots the stage' "$WORK/apply-reboot.out" &&
    guest grep -q 'gptagent.trial=' /proc/cmdline &&
    pass "the host stage's change was booted as a trial, passed its checks and was committed" ||
    fail "the report shows no committed trial boot (or the guest did not boot the trial)"
  guest 'test ! -e /boot/grub/custom.cfg && ! ls /boot/*.gptagent-trial* 2>/dev/null' &&
    pass "the trial entry and its initramfs are gone after the commit" || fail "the trial entry or its initramfs is left"
  check_initramfs
  local xml
  xml=$(guest virsh -c qemu:///system dumpxml lab 2>&1 || true)
  echo "$xml" >"$WORK/domain-defined.xml"
  if echo "$xml" | grep -q "<hostdev mode='subsystem' type='pci' managed='yes'>" &&
    echo "$xml" | grep -qE "<address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>" &&
    echo "$xml" | grep -qE "<address domain='0x0000' bus='0x01' slot='0x00' function='0x1'/>"; then
    pass "the domain 'lab' in the guest's libvirtd has 01:00.0 and 01:00.1 as hostdevs"
  else
    fail "virsh dumpxml lab shows no hostdevs for 01:00.0/01:00.1"
  fi
  echo "$xml" | grep -q "<domain type='qemu'" && pass "the domain is type qemu" || fail "the domain is not type qemu"
  # Adopted, not replaced: what the playbook does not declare is the user's, byte for byte (the
  # disk is declared by its path only: adopted as it was), and the agent's record is in the
  # domain's own metadata.
  check_kept "adopted" "$WORK/domain-defined.xml"
  sed -n '/<metadata>/,/<\/metadata>/p' "$WORK/domain-defined.xml" | grep -q '<gptagent:managed' &&
    pass "the domain's <metadata> holds the agent's record <gptagent:managed>" ||
    fail "no <gptagent:managed> record in the domain's <metadata>"
  guest qemu-img info /var/lib/libvirt/images/lab.qcow2 2>/dev/null | grep -q '^file format: qcow2' &&
    pass "/var/lib/libvirt/images/lab.qcow2 is a qcow2 image" || fail "no qcow2 image at /var/lib/libvirt/images/lab.qcow2"
  # The fleet ships the agent's loadable image (agent/ship.hpp): the file up to the end of its last
  # segment, the ELF header's section fields zeroed. Computed here independently, from the program
  # headers, and compared with the guest's cached copy, whose name carries its SHA-256.
  local sha_local sha_remote name_remote
  sha_local=$(python3 - "$AGENT" <<'PY'
import hashlib, struct, sys
elf = open(sys.argv[1], "rb").read()
phoff, = struct.unpack_from("<Q", elf, 0x20)
phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
end = max(off + filesz for off, filesz in
          (struct.unpack_from("<8xQ16xQ", elf, phoff + i * phentsize) for i in range(phnum)))
image = bytearray(elf[:end])
image[0x28:0x30] = bytes(8)  # e_shoff
image[0x3C:0x40] = bytes(4)  # e_shnum, e_shstrndx
print(hashlib.sha256(image).hexdigest())
PY
  )
  sha_remote=$(guest 'sha256sum ~/.cache/gptagent/gptagent-* 2>/dev/null' | cut -c1-64 || true)
  name_remote=$(guest 'cd ~/.cache/gptagent && ls -d gptagent-*' 2>/dev/null || true)
  [ -n "$sha_local" ] && [ "$sha_local" = "$sha_remote" ] && [ "$name_remote" = "gptagent-$sha_local" ] &&
    pass "the guest runs the agent the controller copied: its loadable image (sha256 $(echo "$sha_local" | cut -c1-12))" ||
    fail "the guest's cached agent ($name_remote, sha256 $sha_remote) is not the controller's loadable image ($sha_local)"

  # 2b. A plain reboot: the default entry now carries the change.
  t=$(now)
  full_reboot_by_hand >/dev/null
  guest grep -q 'gptagent.trial=' /proc/cmdline && fail "the plain reboot booted a trial entry" ||
    pass "the plain reboot booted the default entry (no trial marker)"
  check_cmdline "after a plain reboot"
  check_vfio "after a plain reboot"
  say "phase plain reboot: $(since "$t")"

  # 3. A second run changes nothing.
  agent apply-again --json
  expect_rc apply-again 0
  local changed status
  changed=$(json_field apply-again .stats.changed)
  status=$(json_field apply-again .status)
  [ "$changed" = 0 ] && [ "$status" = ok ] && pass "second run: status ok, changed=0" ||
    fail "second run: status $status, changed=$changed"

  # 4. --check finds nothing.
  agent check --check
  expect_rc check 0

  # 5. An edit by hand: iommu=pt removed from /etc/default/grub. --check sees it, apply repairs it
  # (update-grub, a reboot, the checks), --check is clean again.
  guest "sed -i -E 's/ iommu=pt\b//; s/\biommu=pt //' /etc/default/grub"
  if guest grep -q 'iommu=pt' /etc/default/grub; then
    fail "the drift edit did not remove iommu=pt"
  else
    pass "drift: iommu=pt removed from the guest's /etc/default/grub by hand"
  fi
  agent check-drift --check --diff
  expect_rc check-drift 2
  grep -q 'iommu=pt' "$WORK/check-drift.out" && pass "--check --diff names iommu=pt" || fail "--check --diff does not mention iommu=pt"
  agent repair --reboot --reboot-timeout 600
  expect_rc repair 0
  guest grep -q '^GRUB_CMDLINE_LINUX=.*iommu=pt' /etc/default/grub && pass "repair: iommu=pt back in /etc/default/grub" ||
    fail "repair: iommu=pt not back in /etc/default/grub"
  boot2=$(guest cat /proc/sys/kernel/random/boot_id || true)
  [ -n "$boot2" ] && [ "$boot2" != "$boot1" ] && pass "repair rebooted the guest (new boot_id)" || fail "repair: boot_id did not change"
  check_cmdline "after the repair"
  check_vfio "after the repair"
  agent check-repaired --check
  expect_rc check-repaired 0

  # 6. The domain started: running, with the device attached.
  if [ "$start_vm" = 1 ]; then
    agent start -e vm_state=running
    expect_rc start 0
    local state
    state=$(guest virsh -c qemu:///system domstate lab 2>&1 | head -1 || true)
    [ "$state" = running ] && pass "the domain is running" || fail "the domain is '$state', not running"
    xml=$(guest virsh -c qemu:///system dumpxml lab 2>&1 || true)
    echo "$xml" >"$WORK/domain-running.xml"
    echo "$xml" | grep -q "<hostdev mode='subsystem' type='pci' managed='yes'>" && pass "the running domain has the hostdevs" ||
      fail "the running domain's XML has no hostdev"
    grep -q "<mac address='$FULL_MAC'/>" "$WORK/domain-running.xml" && pass "the running domain has the hand-made NIC ($FULL_MAC)" ||
      fail "the running domain has no NIC with $FULL_MAC"
    grep -q "<vendor_id state='on' value='$FULL_VENDOR_ID'/>" "$WORK/domain-running.xml" &&
      grep -q "<relaxed state='on'/>" "$WORK/domain-running.xml" &&
      pass "the running domain has the hand-made Hyper-V block (vendor_id $FULL_VENDOR_ID)" ||
      fail "the running domain has lost the hand-made Hyper-V block"
    grep -q ">$FULL_NVRAM</nvram>" "$WORK/domain-running.xml" && pass "the running domain uses the hand-made nvram $FULL_NVRAM" ||
      fail "the running domain's nvram is not $FULL_NVRAM"
    # shellcheck disable=SC2016 # $(...) runs in the guest
    guest 'ls -l /proc/$(pgrep -f "guest=lab" | head -1)/fd 2>/dev/null' | grep -q '/dev/vfio/' &&
      pass "the domain's QEMU holds /dev/vfio/<group> open" || fail "the domain's QEMU has no /dev/vfio file open"
    check_vfio "with the domain running"
  fi

  full_handoff
  full_software_absent
  full_kernel_guard
  full_revert

  say "total: $(since "$t0")"
  if [ ${#FULL_FAILED[@]} -gt 0 ]; then
    say "FAILED: ${#FULL_FAILED[@]} checks"
    printf '[lab]   %s\n' "${FULL_FAILED[@]}"
    return 1
  fi
  say "full: every check passed"
}

#!/usr/bin/env bash
# Puts the lab hosts' SSH host keys into a known_hosts file (default ~/.ssh/known_hosts) under
# their inventory addresses: gptagent's ssh checks host keys and never turns that off. The keys
# are read from each host's /etc/ssh through `vagrant ssh`, not scanned from the network; the
# file's old entries for those addresses (a lab destroyed and made again) are removed first.
# Usage, after `vagrant up`: vagrant/known-hosts.sh [KNOWN_HOSTS_FILE]
set -euo pipefail
known_hosts=${1:-$HOME/.ssh/known_hosts}
case $known_hosts in /*) ;; *) known_hosts=$PWD/$known_hosts ;; esac
cd "$(dirname "$0")"

# "NAME ADDRESS" for each host of inventory.yml: its "NAME:" line, then its "ansible_host:".
mapfile -t hosts < <(awk '
  /^[[:space:]]+[A-Za-z0-9_.-]+:[[:space:]]*$/ { name = $1; sub(/:$/, "", name) }
  /^[[:space:]]+ansible_host:/ { print name, $2 }' inventory.yml)
[ ${#hosts[@]} -gt 0 ] || { echo "known-hosts.sh: no ansible_host in inventory.yml" >&2; exit 1; }

mkdir -p "$(dirname "$known_hosts")"
touch "$known_hosts"
for entry in "${hosts[@]}"; do
  read -r name addr <<<"$entry"
  keys=$(vagrant ssh "$name" --no-tty -c 'cat /etc/ssh/ssh_host_*_key.pub' | tr -d '\r' |
         awk '$1 ~ /^(ssh-|ecdsa-)/ && NF >= 2 { print $1, $2 }')
  [ -n "$keys" ] || { echo "known-hosts.sh: no host key read from $name" >&2; exit 1; }
  ssh-keygen -R "$addr" -f "$known_hosts" >/dev/null 2>&1 || true
  awk -v addr="$addr" '{ print addr, $0 }' <<<"$keys" >>"$known_hosts"
  echo "$name ($addr): $(wc -l <<<"$keys") host keys added to $known_hosts"
done

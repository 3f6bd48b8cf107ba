#!/usr/bin/env bash
# Installs everything sandbench needs on Debian 12 (run as root) and creates .venv in the checkout.
# Idempotent: a second run only checks. Nothing here downloads outside Debian's and PyPI's registries.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  # runtimes
  runc crun docker.io containerd podman
  # checkpoint/restore through CRIU (runc, crun; `criu check` decides whether it works here)
  criu
  # namespace sandboxes and system containers (bwrap --seccomp needs libseccomp's bindings)
  bubblewrap firejail systemd-container lxc python3-seccomp
  # the default seccomp profile of Docker and Podman (/usr/share/containers/seccomp.json)
  golang-github-containers-common
  # image building and the in-sandbox helpers
  busybox-static gcc libc6-dev mmdebstrap e2fsprogs
  # workload tools run on the host side
  fio sysbench iperf3 wrk nginx-light mariadb-server mariadb-client hyperfine
  # VMs (TCG where KVM does not work)
  qemu-system-x86 qemu-utils cpio
  # networking and processes
  iproute2 procps util-linux kmod
  # report check in a real browser
  chromium
  python3-venv
  # the fleet test's own SSH server on loopback (never started as a service: see below)
  openssh-server
)

backports=/etc/apt/sources.list.d/sandbench-backports.sources
need_apt=0
for p in "${packages[@]}" runsc; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need_apt=1
done
# Debian 12's own runsc (2022) has no systrap platform: take the one in bookworm-backports.
runsc_ok=0
if command -v runsc >/dev/null && runsc help platforms 2>/dev/null | grep -q systrap; then runsc_ok=1; fi
if command -v runsc >/dev/null && dpkg-query -W -f='${Version}' runsc 2>/dev/null | grep -q '^0.0~2024'; then runsc_ok=1; fi

if [[ $need_apt == 1 || $runsc_ok == 0 ]]; then
  if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [[ -n $uri ]] || uri=http://deb.debian.org/debian
    cat >"$backports" <<SRC
Types: deb
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # Services must not start from package scripts: sandbench starts what it needs itself.
  # An existing policy-rc.d is the administrator's: it stays exactly as it is (and decides).
  # Ours is created with O_EXCL semantics (noclobber) and removed on any exit of this script.
  if [[ ! -e /usr/sbin/policy-rc.d ]] \
     && (set -o noclobber; printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d) 2>/dev/null; then
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    chmod 755 /usr/sbin/policy-rc.d
  fi
  apt-get install -y -q --no-install-recommends "${packages[@]}"
  apt-get install -y -q --no-install-recommends -t bookworm-backports runsc
fi

# crun refuses a hybrid cgroup layout while cgroup v2 still holds controllers (hugetlb on our
# machines): hand those controllers to v1 hierarchies. Lasts until reboot; runc and runsc are
# unaffected. Skipped on hosts that run cgroup v2 only.
if [[ -f /sys/fs/cgroup/unified/cgroup.controllers ]]; then
  for c in $(cat /sys/fs/cgroup/unified/cgroup.controllers); do
    mkdir -p "/sys/fs/cgroup/$c"
    mountpoint -q "/sys/fs/cgroup/$c" || mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c" || true
  done
fi

if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import sandbench, pytest, psutil, matplotlib, scipy, ansible_runner' 2>/dev/null \
   || [[ pyproject.toml -nt .venv/.installed ]]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev,fleet]'
  touch .venv/.installed
fi
echo "sandbench set-up done: $(.venv/bin/sandbench --version)"

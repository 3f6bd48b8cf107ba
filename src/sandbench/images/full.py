"""The full workload image: a Debian rootfs built by mmdebstrap from Debian's packages (fio,
sysbench, iperf3, nginx, MariaDB, iproute2, procps, systemd for the VM; python3, gcc and make
for devloop), plus the static helpers of the minimal image and devloop's pinned inputs
(devloop_inputs.py). Rebuilt only when the package list, suite, mirror or helpers
change. Usable as an OCI bundle rootfs, a `docker import`ed image and (vm.py) an ext4 disk.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from sandbench.images import devloop_inputs
from sandbench.images.base import (
    HELPERS,
    ImageBuilder,
    Progress,
    build_helpers,
    gcc_version,
    helper_source,
)

SUITE = "bookworm"
PACKAGES = [
    "fio",
    "sysbench",
    "iperf3",
    "nginx-light",
    "mariadb-server",
    "mariadb-client",
    "iproute2",
    "procps",
    "busybox",
    # The full QEMU VM boots this image with systemd, like the paper's Ubuntu server VM.
    "systemd-sysv",
    "udev",
    "kmod",
    # The devloop benchmark: a venv and pip install from wheels, a C build (Lua) with make.
    "python3",
    "python3-venv",
    "gcc",
    "libc6-dev",
    "make",
]
BUILD_TIMEOUT_S = 1800


def debian_mirror() -> str:
    """The mirror this machine's apt already uses (the only one reachable here)."""
    src = Path("/etc/apt/sources.list.d/debian.sources")
    if src.exists():
        for line in src.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    lst = Path("/etc/apt/sources.list")
    if lst.exists():
        for line in lst.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb":
                return parts[1]
    return "http://deb.debian.org/debian"


class FullImage(ImageBuilder):
    name = "full"
    recipe_version = 1

    def inputs(self) -> dict[str, str]:
        ins = {
            "suite": SUITE,
            "packages": ",".join(sorted(PACKAGES)),
            "mirror": debian_mirror(),
            "gcc": gcc_version(),
            "devloop": devloop_inputs.image_input(),
        }
        ins.update({f"helper:{h}": helper_source(h) for h in HELPERS})
        return ins

    def populate(self, rootfs: Path, progress: Progress) -> None:
        exe = shutil.which("mmdebstrap")
        if exe is None:
            raise RuntimeError("mmdebstrap not found; install Debian package mmdebstrap")
        progress(f"mmdebstrap {SUITE} with {len(PACKAGES)} packages (about a minute)")
        t0 = time.monotonic()
        argv = [
            exe,
            "--variant=minbase",
            "--mode=root",
            f"--include={','.join(PACKAGES)}",
            # Services must not start inside the build chroot.
            "--customize-hook=rm -f \"$1/usr/sbin/policy-rc.d\"",
            "--essential-hook=printf '#!/bin/sh\\nexit 101\\n' > \"$1/usr/sbin/policy-rc.d\" "
            "&& chmod +x \"$1/usr/sbin/policy-rc.d\"",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            SUITE,
            str(rootfs),
            debian_mirror(),
        ]
        log = rootfs.parent / "mmdebstrap.log"
        with open(log, "w") as fh:
            proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT)
            try:
                while proc.poll() is None:
                    if time.monotonic() - t0 > BUILD_TIMEOUT_S:
                        proc.kill()
                        raise RuntimeError(f"mmdebstrap ran past {BUILD_TIMEOUT_S} s")
                    time.sleep(2)
                    progress(f"  mmdebstrap running, {time.monotonic() - t0:.0f} s")
            except BaseException:
                proc.kill()
                proc.wait()
                raise
        if proc.returncode != 0:
            tail = log.read_text(errors="replace")[-800:]
            raise RuntimeError(f"mmdebstrap failed ({proc.returncode}): {tail}")
        progress("compiling helpers")
        build_helpers(rootfs / "sb")
        progress("devloop inputs (pinned wheels, Lua source), sha256 checked")
        devloop_inputs.install(rootfs, debian_mirror())
        (rootfs / "data").mkdir(exist_ok=True)

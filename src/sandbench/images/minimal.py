"""The minimal image: busybox-static plus the static helpers (startup probe, syscall timer)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from sandbench.images.base import (
    HELPERS,
    ImageBuilder,
    Progress,
    build_helpers,
    file_digest,
    gcc_version,
    helper_source,
)

BUSYBOX = Path("/bin/busybox")


class MinimalImage(ImageBuilder):
    name = "minimal"
    recipe_version = 3

    def inputs(self) -> dict[str, str]:
        if not BUSYBOX.exists():
            raise RuntimeError(
                f"{BUSYBOX} missing: install Debian's busybox-static (scripts/setup.sh does)"
            )
        ins = {"busybox": file_digest(BUSYBOX), "gcc": gcc_version()}
        ins.update({f"helper:{h}": helper_source(h) for h in HELPERS})
        return ins

    def populate(self, rootfs: Path, progress: Progress) -> None:
        # var/tmp and run: firejail --chroot refuses a root without them; usr:
        # systemd-nspawn refuses a tree without it.
        for d in ("bin", "sbin", "sb", "proc", "sys", "dev", "tmp", "etc", "data", "root",
                  "var", "var/tmp", "run", "usr"):
            (rootfs / d).mkdir(exist_ok=True)
        os.chmod(rootfs / "tmp", 0o1777)
        os.chmod(rootfs / "var" / "tmp", 0o1777)
        shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
        applets = subprocess.run(
            [str(BUSYBOX), "--list"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.split()
        for applet in applets:
            link = rootfs / "bin" / applet
            if not link.exists():
                link.symlink_to("busybox")
        progress("compiling helpers")
        build_helpers(rootfs / "sb")
        (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        (rootfs / "etc" / "group").write_text("root:x:0:\n")
        (rootfs / "etc" / "hosts").write_text("127.0.0.1 localhost\n")

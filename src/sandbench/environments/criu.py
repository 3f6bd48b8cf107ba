"""Whether CRIU can checkpoint processes on this host: the path runc, crun, Docker and Podman
take for checkpoint/restore (gVisor saves its own sentry instead and needs none of this).

Asked once per process with `criu check`, CRIU's own test of the kernel features it needs;
a failure names CRIU's version, the kernel and CRIU's first error, and what to install."""

from __future__ import annotations

import platform
import shutil
import subprocess
from functools import lru_cache

#: What makes CRIU work where Debian's does not (kernels from 6.13 changed the vDSO layout
#: that CRIU 3.x parses; fixed in CRIU 4.1).
INSTALL_HINT = ("install CRIU 4.1 or later (x86 kernels from 6.13 need it; Debian 12 ships "
                "3.17) and put it on PATH")


@lru_cache(maxsize=1)
def problem() -> str:
    """"" when `criu check` passes, else why checkpoints through CRIU cannot work here."""
    path = shutil.which("criu")
    kernel = platform.release()
    if path is None:
        return (f"criu not installed (Debian package criu; scripts/setup.sh installs it); "
                f"on kernel {kernel} {INSTALL_HINT}")
    try:
        ver = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
        cp = subprocess.run([path, "check"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"`criu check` could not run ({e}); {INSTALL_HINT}"
    version = ver.stdout.replace("Version:", "").split("\n")[0].strip() or "unknown version"
    if cp.returncode == 0:
        return ""
    first = next((ln.strip() for ln in (cp.stderr + cp.stdout).splitlines()
                  if "Error" in ln), (cp.stderr or cp.stdout).strip()[:200])
    return (f"`criu check` fails: CRIU {version} on kernel {kernel} ({first}); {INSTALL_HINT}")

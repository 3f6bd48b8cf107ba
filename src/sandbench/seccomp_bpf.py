"""Compile an OCI linux.seccomp profile to classic BPF for `bwrap --seccomp FD`.

libseccomp's Python bindings are Debian's python3-seccomp, built for the system interpreter
only (not on PyPI), so the compile step runs as a child of /usr/bin/python3 with the OCI
profile on stdin and the BPF program on stdout; sandbench's venv does not import it.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

SYSTEM_PYTHON = "/usr/bin/python3"

_COMPILER = r"""
import json, sys, seccomp
p = json.load(sys.stdin)
def act(a, errno):
    if a == "SCMP_ACT_ALLOW": return seccomp.ALLOW
    if a == "SCMP_ACT_ERRNO": return seccomp.ERRNO(errno)
    if a == "SCMP_ACT_KILL" or a == "SCMP_ACT_KILL_THREAD": return seccomp.KILL
    if a == "SCMP_ACT_KILL_PROCESS": return seccomp.KILL_PROCESS
    if a == "SCMP_ACT_TRAP": return seccomp.TRAP
    if a == "SCMP_ACT_LOG": return seccomp.LOG
    raise SystemExit("unsupported action " + a)
OPS = {"SCMP_CMP_NE": seccomp.NE, "SCMP_CMP_LT": seccomp.LT, "SCMP_CMP_LE": seccomp.LE,
       "SCMP_CMP_EQ": seccomp.EQ, "SCMP_CMP_GE": seccomp.GE, "SCMP_CMP_GT": seccomp.GT,
       "SCMP_CMP_MASKED_EQ": seccomp.MASKED_EQ}
f = seccomp.SyscallFilter(act(p["defaultAction"], p.get("defaultErrnoRet", 1)))
for r in p.get("syscalls", []):
    a = act(r["action"], r.get("errnoRet", 1))
    args = [seccomp.Arg(x["index"], OPS[x["op"]], x["value"], x.get("valueTwo", 0))
            for x in r.get("args", [])]
    for name in r["names"]:
        try:
            f.add_rule(a, name, *args)
        except (RuntimeError, ValueError, OSError):
            pass  # a name this libseccomp or architecture does not know
f.export_bpf(sys.stdout.buffer)
"""


def compile_bpf(profile: dict[str, Any], timeout: float = 30.0) -> bytes:
    """BPF bytes for profile; raises RuntimeError with libseccomp's message."""
    try:
        cp = subprocess.run([SYSTEM_PYTHON, "-c", _COMPILER], input=json.dumps(profile).encode(),
                            capture_output=True, timeout=timeout)
    except FileNotFoundError:
        msg = f"{SYSTEM_PYTHON} not found; install Debian package python3-seccomp"
        raise RuntimeError(msg) from None
    if cp.returncode != 0 or not cp.stdout:
        raise RuntimeError("compiling the seccomp profile failed: "
                           + cp.stderr.decode(errors="replace").strip()[-300:]
                           + " (install Debian package python3-seccomp)")
    return cp.stdout


def problem() -> str | None:
    cp = subprocess.run([SYSTEM_PYTHON, "-c", "import seccomp"], capture_output=True,
                        timeout=30, check=False) if _exists() else None
    if cp is None or cp.returncode != 0:
        return "python3-seccomp missing: apt-get install python3-seccomp"
    return None


def _exists() -> bool:
    import os
    return os.path.exists(SYSTEM_PYTHON)

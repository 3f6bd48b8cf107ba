"""The default seccomp profile of Docker and Podman, translated into an OCI spec's
linux.seccomp, so that runc and crun bundles run under the same filter as `docker run`.

The profile is the one Debian ships in golang-github-containers-common
(/usr/share/containers/seccomp.json). Its rules carry conditions (`includes`/`excludes` on
architecture, capability and kernel version) that an engine resolves for the container it
starts; an OCI runtime wants the resolved list. A rule is kept when every include condition
holds and no exclude condition does, for this machine's architecture and kernel and for the
capability set the bundle grants (the same semantics as the engines that read this file).
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

from sandbench import settings

PROFILE = Path(str(settings.value("SANDBENCH_SECCOMP_PROFILE")))
PACKAGE = "golang-github-containers-common"

#: uname machine -> (Go architecture name used by the profile's conditions, libseccomp name).
_ARCHES = {
    "x86_64": ("amd64", "SCMP_ARCH_X86_64"),
    "aarch64": ("arm64", "SCMP_ARCH_AARCH64"),
}


class ProfileMissing(RuntimeError):
    pass


def profile_problem(path: Path = PROFILE) -> str | None:
    """Why the default profile cannot be used here, or None."""
    if not path.is_file():
        return (f"seccomp profile {path} not found: install Debian package {PACKAGE} "
                "(scripts/setup.sh does), or run the study with seccomp off")
    if platform.machine() not in _ARCHES:
        return f"no seccomp architecture mapping for {platform.machine()}"
    return None


def _kernel() -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", platform.release())
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _kernel_at_least(spec: str, kernel: tuple[int, int]) -> bool:
    m = re.match(r"(\d+)\.(\d+)", spec)
    return m is not None and kernel >= (int(m.group(1)), int(m.group(2)))


def _applies(rule: dict[str, Any], arch: str, caps: set[str], kernel: tuple[int, int]) -> bool:
    inc = rule.get("includes") or {}
    exc = rule.get("excludes") or {}
    if exc.get("arches") and arch in exc["arches"]:
        return False
    if exc.get("caps") and caps.intersection(exc["caps"]):
        return False
    if exc.get("minKernel") and _kernel_at_least(exc["minKernel"], kernel):
        return False
    if inc.get("arches") and arch not in inc["arches"]:
        return False
    if inc.get("caps") and not caps.issuperset(inc["caps"]):
        return False
    return not (inc.get("minKernel") and not _kernel_at_least(inc["minKernel"], kernel))


def translate(
    profile: dict[str, Any], caps: Iterable[str], machine: str, kernel: tuple[int, int]
) -> dict[str, Any]:
    """The OCI linux.seccomp object for `profile` resolved for one container."""
    arch, scmp_arch = _ARCHES[machine]
    capset = set(caps)
    architectures = [scmp_arch]
    for entry in profile.get("archMap") or []:
        if entry.get("architecture") == scmp_arch:
            architectures += list(entry.get("subArchitectures") or [])
    out: dict[str, Any] = {"defaultAction": profile["defaultAction"],
                           "architectures": architectures, "syscalls": []}
    if profile.get("defaultErrnoRet") is not None:
        out["defaultErrnoRet"] = int(profile["defaultErrnoRet"])
    for rule in profile.get("syscalls") or []:
        if not _applies(rule, arch, capset, kernel):
            continue
        names = rule.get("names") or ([rule["name"]] if rule.get("name") else [])
        if not names:
            continue
        sc: dict[str, Any] = {"names": list(names), "action": rule["action"]}
        if rule.get("args"):
            sc["args"] = [
                {"index": a["index"], "value": a["value"], "valueTwo": a.get("valueTwo", 0),
                 "op": a["op"]}
                for a in rule["args"]
            ]
        if rule.get("errnoRet") is not None:
            sc["errnoRet"] = int(rule["errnoRet"])
        out["syscalls"].append(sc)
    return out


@lru_cache(maxsize=8)
def _default(caps: tuple[str, ...]) -> str:
    if problem := profile_problem():
        raise ProfileMissing(problem)
    profile = json.loads(PROFILE.read_text())
    return json.dumps(translate(profile, caps, platform.machine(), _kernel()))


def default_oci(caps: Iterable[str]) -> dict[str, Any]:
    """The default profile resolved for a bundle granting `caps` (cached per cap set).
    Raises ProfileMissing with an actionable message when the profile is not installed."""
    loaded: dict[str, Any] = json.loads(_default(tuple(sorted(caps))))
    return loaded


def describe() -> str:
    """What facts() records: the profile file and a digest of its content."""
    if profile_problem():
        return f"{PROFILE} (missing)"
    digest = hashlib.sha256(PROFILE.read_bytes()).hexdigest()[:12]
    return f"containers-common default ({PROFILE}, sha256 {digest})"

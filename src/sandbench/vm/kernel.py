"""The guest kernel: Debian's cloud kernel package, downloaded with apt and unpacked into the
cache (built in a temporary directory, then renamed, so an interrupted fetch is never used).

The cloud kernel builds the virtio drivers as modules; initramfs.py loads them. Only the
version Debian's `linux-image-cloud-amd64` currently depends on is fetched; set
SANDBENCH_VM_KERNEL_PACKAGE to pin another (e.g. linux-image-6.1.0-56-cloud-amd64).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sandbench import paths, settings
from sandbench.errors import SandboxError

META_PACKAGE = "linux-image-cloud-amd64"
_PKG_RE = re.compile(r"^linux-image-(6\.1\.0-\d+)-cloud-amd64$")
FETCH_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Kernel:
    package: str
    release: str  # e.g. 6.1.0-56-cloud-amd64
    directory: Path

    @property
    def vmlinuz(self) -> Path:
        return self.directory / "boot" / f"vmlinuz-{self.release}"

    @property
    def modules_dir(self) -> Path:
        return self.directory / "lib" / "modules" / self.release


def _run(argv: list[str], timeout: float, cwd: Path | None = None) -> str:
    try:
        cp = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False
        )
    except FileNotFoundError:
        raise SandboxError(f"{argv[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise SandboxError(f"{' '.join(argv[:3])} did not finish within {timeout:g} s") from None
    if cp.returncode != 0:
        raise SandboxError(f"{' '.join(argv[:3])} failed: {(cp.stderr or cp.stdout)[-400:]}")
    return cp.stdout


@functools.cache
def _meta_depends() -> str:
    """`apt-cache depends` of the meta package, asked once per process: it takes about half a
    second, and every VM start asks (inside the startup benchmark's prepare phase)."""
    try:
        return _run(["apt-cache", "depends", META_PACKAGE], timeout=30)
    except SandboxError:
        return ""


def package_name() -> str:
    """The kernel package to use: pinned by the environment, or the meta package's dependency,
    or the newest cached one when apt cannot answer."""
    pinned = settings.value("SANDBENCH_VM_KERNEL_PACKAGE")
    if pinned:
        if not _PKG_RE.match(pinned):
            raise SandboxError(
                f"SANDBENCH_VM_KERNEL_PACKAGE={pinned!r}: expected linux-image-6.1.0-N-cloud-amd64"
            )
        return pinned
    for line in _meta_depends().splitlines():
        word = line.split(":", 1)[-1].strip()
        if line.strip().startswith("Depends:") and _PKG_RE.match(word):
            return word
    cached = sorted(p.name for p in paths.cache("kernels").iterdir() if _PKG_RE.match(p.name))
    if cached:
        return cached[-1]
    raise SandboxError(
        f"cannot find the guest kernel: `apt-cache depends {META_PACKAGE}` names no "
        "linux-image-6.1.0-N-cloud-amd64 (run apt-get update, or set SANDBENCH_VM_KERNEL_PACKAGE)"
    )


def cached(package: str) -> Kernel | None:
    m = _PKG_RE.match(package)
    assert m is not None
    release = f"{m.group(1)}-cloud-amd64"
    d = paths.CACHE_DIR / "kernels" / package
    k = Kernel(package, release, d)
    return k if (d / "complete").exists() and k.vmlinuz.exists() else None


def index_sha256(package: str) -> str:
    """The SHA256 that apt's (signed) package index gives for the candidate version."""
    out = _run(["apt-cache", "show", "--no-all-versions", package], timeout=30)
    for line in out.splitlines():
        if line.startswith("SHA256:"):
            return line.split(":", 1)[1].strip()
    raise SandboxError(f"apt-cache show {package} gives no SHA256")


def verify_deb(deb: Path, package: str) -> None:
    """Refuse a downloaded .deb that is not the package apt's index describes."""
    h = hashlib.sha256()
    with open(deb, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    want = index_sha256(package)
    if h.hexdigest() != want:
        raise SandboxError(
            f"{deb.name}: SHA256 {h.hexdigest()} differs from apt's index ({want}); not unpacked",
            {"deb": str(deb), "sha256": h.hexdigest(), "index_sha256": want},
        )
    name = _run(["dpkg-deb", "-f", str(deb), "Package"], timeout=30).strip()
    if name != package:
        raise SandboxError(f"{deb.name} holds package {name!r}, not {package!r}; not unpacked")


def ensure(package: str | None = None) -> Kernel:
    """The unpacked kernel package, downloaded first when not cached."""
    pkg = package or package_name()
    have = cached(pkg)
    if have is not None:
        return have
    base = paths.cache("kernels")
    # mkdtemp makes a 0700 directory owned by root: nobody else can put a file where the
    # download lands. apt is told not to drop to _apt for this one download (it would need a
    # directory _apt can write), and the .deb is checked against the hash of the signed index
    # before dpkg-deb, running as root, unpacks it.
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{pkg}-", dir=base))
    try:
        dl = tmp / "deb"
        dl.mkdir(mode=0o700)
        _run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", pkg],
             timeout=FETCH_TIMEOUT_S, cwd=dl)  # fmt: skip
        debs = list(dl.glob("*.deb"))
        if len(debs) != 1:
            raise SandboxError(f"apt-get download {pkg} gave {len(debs)} files")
        verify_deb(debs[0], pkg)
        out = tmp / "tree"
        _run(["dpkg-deb", "-x", str(debs[0]), str(out)], timeout=120)
        (out / "complete").write_text(debs[0].name + "\n")
        final = base / pkg
        shutil.rmtree(final, ignore_errors=True)
        os.rename(out, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    k = cached(pkg)
    if k is None:
        raise SandboxError(f"{pkg}: unpacked package has no vmlinuz")
    return k

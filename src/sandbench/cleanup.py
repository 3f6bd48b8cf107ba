"""Find and remove what killed or crashed runs left behind, and nothing else.

Everything sandbench creates is either under its state directory or carries its prefix/label:
OCI containers live in the tool's own runtime state roots, Docker objects carry the label
org.sandbench.owned, namespaces and links are named `sb` + 10 hex digits, cgroups sit under
`sandbench/` in each hierarchy. A foreign container, namespace or link is never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import psutil

from sandbench import net, paths

#: Prefixes of the private directories the host environment's servers get under /tmp
#: (benchmarks/mysql.py app_layout); narrow on purpose: a user's own /tmp/sandbench-* stays.
HOST_PRIVATE_PREFIXES = ("sandbench-mysqld-", "sandbench-nginx-")


def _run(argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None


def _oci_leftovers() -> list[tuple[list[str], str]]:
    """(runtime command, container id) for containers in the tool's state roots."""
    from sandbench.environments.oci import VARIANTS, OciEnvironment

    found = []
    for v in VARIANTS:
        root = paths.STATE_DIR / "oci" / v.name
        if not root.is_dir() or not any(root.iterdir()):
            continue
        env = OciEnvironment(v)
        if env.binary_path() is None:
            continue
        cmd = env.command()
        cp = _run([*cmd, "list", "--format", "json"])
        if cp is None or cp.returncode != 0:
            continue
        for entry in json.loads(cp.stdout or "null") or []:
            cid = entry.get("id") or entry.get("ID")
            if cid:
                found.append((cmd, str(cid)))
    return found


def _docker_leftovers() -> tuple[list[str], list[str], list[str]]:
    if shutil.which("docker") is None:
        return [], [], []
    ping = _run(["docker", "version", "--format", "{{.Server.Version}}"], timeout=10)
    if ping is None or ping.returncode != 0:
        return [], [], []
    label = f"label={paths.DOCKER_LABEL}"
    conts = _run(["docker", "ps", "-aq", "--filter", label])
    nets = _run(["docker", "network", "ls", "-q", "--filter", label])
    imgs = _run(["docker", "images", "-q", "--filter", label])
    return (
        (conts.stdout.split() if conts else []),
        (nets.stdout.split() if nets else []),
        sorted(set(imgs.stdout.split())) if imgs else [],
    )


def _owned_dockerd() -> int | None:
    f = paths.STATE_DIR / "docker" / "owned"
    if not f.exists():
        return None
    with contextlib.suppress(ValueError, psutil.NoSuchProcess):
        pid = int(f.read_text().strip())
        if psutil.Process(pid).name() == "dockerd":
            return pid
    return None


def _stray_processes() -> list[int]:
    """runsc processes still pointing at the tool's state roots (sentries, gofers), and VMs."""
    root = str(paths.STATE_DIR / "oci")
    from sandbench.volume import VOLUME_ROOT

    marks = (
        f"{paths.STATE_DIR}/vm/",  # QEMU and Firecracker carry their agent socket path
        f"{paths.CACHE_DIR}/images/",  # the host environment runs helpers from the image
        *(f"{tempfile.gettempdir()}/{p}" for p in HOST_PRIVATE_PREFIXES),  # host-env servers
        f"{VOLUME_ROOT}/",
    )
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if p.info["pid"] == os.getpid():
            continue
        if f"--root={root}/" in cmd or f"--root {root}/" in cmd or any(m in cmd for m in marks):
            out.append(p.info["pid"])
    return out


def _mounts_under_state() -> list[str]:
    state = str(paths.STATE_DIR)
    found = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            mnt = line.split()[4]
            if mnt == state or mnt.startswith(state + "/"):
                found.append(mnt)
    return sorted(found, key=len, reverse=True)


def cgroup_dirs() -> list[Path]:
    """The tool's cgroups, children before parents."""
    out = []
    base = Path("/sys/fs/cgroup")
    for hier in [base, *base.iterdir()] if base.exists() else []:
        d = hier / "sandbench"
        if d.is_dir():
            out += sorted((p for p in d.iterdir() if p.is_dir()), reverse=True)
            out.append(d)
    return out


def remove_empty_cgroups(name: str = "sandbench") -> None:
    """Runtimes remove a container's cgroup but leave the shared parent (`sandbench/`, or
    `docker/` for a daemon we started): remove it when empty. A busy one stays (EBUSY)."""
    base = Path("/sys/fs/cgroup")
    for hier in [base, *base.iterdir()] if base.exists() else []:
        with contextlib.suppress(OSError):
            (hier / name).rmdir()


def clean(dry_run: bool = False) -> list[str]:
    """Remove leftovers; returns a line per item found (removed unless dry_run)."""
    found: list[str] = []

    def act(desc: str, fn: object) -> None:
        found.append(desc)
        if not dry_run and callable(fn):
            with contextlib.suppress(Exception):
                fn()

    for cmd, cid in _oci_leftovers():
        act(
            f"OCI container {cid} ({Path(cmd[0]).name})",
            lambda cmd=cmd, cid=cid: _run([*cmd, "delete", "--force", cid]),
        )
    conts, nets, imgs = _docker_leftovers()
    for c in conts:
        act(f"docker container {c}", lambda c=c: _run(["docker", "rm", "--force", c]))
    for n in nets:
        act(f"docker network {n}", lambda n=n: _run(["docker", "network", "rm", n]))
    for i in imgs:
        act(f"docker image {i}", lambda i=i: _run(["docker", "rmi", "--force", i]))
    pid = _owned_dockerd()
    if pid is not None:
        act(f"dockerd {pid} started by sandbench", lambda: _stop_dockerd(pid))
    for spid in _stray_processes():
        act(f"process {spid}", lambda spid=spid: os.kill(spid, signal.SIGKILL))
    for ns in net.owned_netns():
        act(f"network namespace {ns}", lambda ns=ns: _run(["ip", "netns", "del", ns]))
    for link in net.owned_links():
        act(f"link {link}", lambda link=link: _run(["ip", "link", "del", link]))
    for mnt in _mounts_under_state():
        act(f"mount {mnt}", lambda mnt=mnt: _run(["umount", "-l", mnt]))
    for cg in cgroup_dirs():
        act(f"cgroup {cg}", lambda cg=cg: cg.rmdir())
    from sandbench.volume import leftovers as volume_leftovers

    for vol in volume_leftovers():
        act(f"volume {vol}", lambda vol=vol: _rm(vol))
    for prefix in HOST_PRIVATE_PREFIXES:
        for tmp in sorted(Path(tempfile.gettempdir()).glob(f"{prefix}*")):
            act(f"host-environment directory {tmp}", lambda tmp=tmp: _rm(tmp))
    for sub in ("bundles", "net", "vm"):
        d = paths.STATE_DIR / sub
        if d.is_dir():
            for entry in sorted(d.iterdir()):
                act(f"state {entry}", lambda e=entry: _rm(e))
    return found


def _stop_dockerd(pid: int) -> None:
    """SIGTERM, then wait (bounded) for the daemon and its shims to go, as a run's close does."""
    proc = psutil.Process(pid)
    shims = [
        p
        for p in psutil.process_iter(["name"])
        if (p.info["name"] or "").startswith("containerd-shim")
    ]
    os.kill(pid, signal.SIGTERM)
    _gone, alive = psutil.wait_procs([proc, *shims], timeout=30)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    marker = paths.STATE_DIR / "docker" / "created-cgroup"
    if marker.exists():
        remove_empty_cgroups("docker")
        marker.unlink()
    (paths.STATE_DIR / "docker" / "owned").unlink(missing_ok=True)


def _rm(p: Path) -> None:
    if p.is_dir():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)

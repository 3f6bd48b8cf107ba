"""Kata Containers through containerd: `ctr run --runtime io.containerd.kata.v2` with the Kata
configuration of one hypervisor (`--runtime-config-path configuration-qemu.toml` or
`configuration-fc.toml`), in the containerd namespace `sandbench`.

The image is the tool's rootfs tarball wrapped as a one-layer OCI image archive and imported
with `ctr image import`. Each container joins a network namespace the tool creates (net.py,
`--with-ns network:PATH`); Kata bridges that veth into the guest. Memory counts the shim, the
hypervisor and virtiofsd (everything under the shim plus processes naming the container).

Kata is not packaged in Debian: the driver needs a user-installed containerd-shim-kata-v2 and
its configuration files, and says which is missing otherwise.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tarfile
import tomllib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import psutil

from sandbench import images, net, paths, procs, settings
from sandbench.environments.base import (
    IDLE_ARGV,
    Availability,
    Completed,
    Environment,
    Leftover,
    Limits,
    Sandbox,
    SandboxSpec,
    run_cmd,
)
from sandbench.errors import SandboxError
from sandbench.vm.kvm import kvm_unavailable

NAMESPACE = "sandbench"
RUNTIME = "io.containerd.kata.v2"
SHIM = "containerd-shim-kata-v2"
CONFIG_DIRS = [
    Path("/etc/kata-containers"),
    Path("/opt/kata/share/defaults/kata-containers"),
    Path("/usr/share/defaults/kata-containers"),
]
#: Which sandbench environment made a container (kata-qemu and kata-fc share the namespace).
ENV_LABEL = "sandbench.env"
DATA_DIR = "/data"
START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0


@dataclass(frozen=True)
class KataVariant:
    name: str
    hypervisor: str  # "qemu" or "fc": configuration-<hypervisor>.toml
    description: str


KATA_VARIANTS = [
    KataVariant("kata-qemu", "qemu", "Kata Containers with QEMU, through containerd"),
    KataVariant("kata-fc", "fc", "Kata Containers with Firecracker, through containerd"),
]


def config_dirs() -> list[Path]:
    env = settings.value("SANDBENCH_KATA_CONFIG_DIR")
    return ([Path(env)] if env else []) + CONFIG_DIRS


def config_path(hypervisor: str) -> Path | None:
    for d in config_dirs():
        p = d / f"configuration-{hypervisor}.toml"
        if p.is_file():
            return p
    return None


def run_argv(
    *,
    ctr: str,
    config: Path,
    netns_path: str,
    image_ref: str,
    container_id: str,
    argv: list[str],
    env: dict[str, str],
    env_name: str = "",
    limits: Limits | None = None,
    volume: Path | None = None,
) -> list[str]:
    """The `ctr run` command line that starts one Kata container, detached. The limits go to
    the container (Kata sizes the guest from them: vCPUs from the CFS quota, RAM from the
    memory limit); the volume is bind-mounted at /data (shared into the guest by Kata)."""
    cmd = [ctr, "--namespace", NAMESPACE, "run", "--detach",
           "--runtime", RUNTIME, "--runtime-config-path", str(config),
           "--with-ns", f"network:{netns_path}",
           "--label", f"{paths.DOCKER_LABEL}=1"]  # fmt: skip
    if env_name:
        cmd += ["--label", f"{ENV_LABEL}={env_name}"]
    for k, v in env.items():
        cmd += ["--env", f"{k}={v}"]
    if limits is not None and limits.cpus:
        cmd += ["--cpus", f"{limits.cpus:g}"]
    if limits is not None and limits.memory_mib:
        cmd += ["--memory-limit", str(limits.memory_mib << 20)]
    if volume is not None:
        cmd += ["--mount", f"type=bind,src={volume},dst={DATA_DIR},options=rbind:rw"]
    return [*cmd, image_ref, container_id, *argv]


def oci_archive(rootfs_tar: Path, ref: str, out: Path) -> None:
    """A one-layer OCI image-layout archive of a rootfs tarball, named `ref` for ctr import."""
    h = hashlib.sha256()
    size = 0
    with open(rootfs_tar, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    layer = f"sha256:{h.hexdigest()}"
    config = json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [layer]},
    }).encode()  # fmt: skip
    cdig = hashlib.sha256(config).hexdigest()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": f"sha256:{cdig}", "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer, "size": size}],
    }).encode()  # fmt: skip
    mdig = hashlib.sha256(manifest).hexdigest()
    index = json.dumps({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": f"sha256:{mdig}", "size": len(manifest),
                       "annotations": {"io.containerd.image.name": ref,
                                       "org.opencontainers.image.ref.name": ref}}],
    }).encode()  # fmt: skip

    def add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
        ti = tarfile.TarInfo(name)
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))

    with tarfile.open(out, "w") as tf:
        add(tf, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        add(tf, "index.json", index)
        add(tf, f"blobs/sha256/{cdig}", config)
        add(tf, f"blobs/sha256/{mdig}", manifest)
        tf.add(rootfs_tar, arcname=f"blobs/sha256/{h.hexdigest()}")


def remove_container(ctr: str, cid: str) -> None:
    """Kill the task, delete it and the container (each step tolerates what is gone)."""
    base = [ctr, "-n", NAMESPACE]
    for argv in (
        [*base, "task", "kill", "--signal", "SIGKILL", cid],
        [*base, "task", "delete", "--force", cid],
        [*base, "container", "delete", cid],
    ):
        with contextlib.suppress(SandboxError):
            run_cmd(argv, timeout=STOP_TIMEOUT, check=False)


def _ctr() -> str | None:
    return shutil.which("ctr")


def _containerd_listening() -> bool:
    """Whether the socket ctr talks to exists ($CONTAINERD_ADDRESS, which ctr reads too, or
    containerd's default). Without it no container of ours can be listed (nor have been
    made), and ctr would retry the connection for 10 s per call before failing."""
    sock = os.environ.get("CONTAINERD_ADDRESS") or "/run/containerd/containerd.sock"
    return Path(sock).is_socket()


def _containerd_pids() -> list[int]:
    return [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "containerd"]


class KataEnvironment(Environment):
    family = "vm"
    #: Container-in-VM; the VM is the isolation boundary.
    isolation_class = "VM"
    paper_lineage = "kata"

    def __init__(self, variant: KataVariant) -> None:
        self.v = variant
        self.name = variant.name
        self.description = variant.description
        self._imported: set[str] = set()

    def restore_unavailable(self, image: str) -> str:
        return ("Kata Containers implements no checkpoint and restore commands (a documented "
                "limitation, kata-containers/runtime#184)")

    def available(self) -> Availability:
        if shutil.which(SHIM) is None:
            return Availability.no(
                f"Kata Containers not installed: {SHIM} not on PATH (not packaged in Debian; "
                "install a Kata release, e.g. under /opt/kata, and link its shim into PATH)"
            )
        if _ctr() is None:
            return Availability.no("ctr not found; install Debian package containerd")
        if config_path(self.v.hypervisor) is None:
            where = ", ".join(str(d) for d in config_dirs())
            return Availability.no(
                f"no configuration-{self.v.hypervisor}.toml in {where} "
                "(or set SANDBENCH_KATA_CONFIG_DIR)"
            )
        if self.v.hypervisor == "fc" and shutil.which("firecracker") is None:
            return Availability.no("kata-fc needs firecracker on PATH")
        why = kvm_unavailable("Kata")
        if why is not None:
            return Availability.no(why)
        cp = run_cmd([_ctr() or "ctr", "version"], timeout=10, check=False)
        if cp.returncode != 0:
            return Availability.no(f"containerd does not answer: {cp.stderr.strip()[-200:]}")
        return Availability.yes()

    def facts(self) -> dict[str, Any]:
        cfg = config_path(self.v.hypervisor)
        return {
            "shim": shutil.which(SHIM),
            "runtime": RUNTIME,
            "config": str(cfg) if cfg else None,
            "hypervisor": self.v.hypervisor,
            "namespace": NAMESPACE,
            "driver": "ctr run",
            "network": "veth+tcfilter",
            "shared_fs": self.hypervisor_setting("shared_fs"),
            "default_vcpus": self.hypervisor_setting("default_vcpus"),
            "default_memory_mib": self.hypervisor_setting("default_memory"),
        }

    def hypervisor_setting(self, key: str) -> Any:
        """A key of the [hypervisor.*] table of the configuration file (None if absent)."""
        cfg = config_path(self.v.hypervisor)
        if cfg is None:
            return None
        try:
            data = tomllib.loads(cfg.read_text())
        except (OSError, tomllib.TOMLDecodeError):
            return None
        for table in (data.get("hypervisor") or {}).values():
            if isinstance(table, dict) and key in table:
                return table[key]
        return None

    def limits_applied(self, limits: Limits) -> dict[str, Any]:
        if not limits.cpus and not limits.memory_mib:
            return {}
        return {
            "cpus": limits.cpus,
            "memory_mib": limits.memory_mib,
            "how": "ctr run --cpus/--memory-limit: Kata adds vCPUs and guest RAM for the limits "
            "on top of the configuration's default_vcpus/default_memory and applies them to the "
            "container's cgroup inside the guest",
        }

    def memory_reserved_mib(self, limits: Limits) -> int | None:
        base = self.hypervisor_setting("default_memory")
        if not isinstance(base, int):
            return limits.memory_mib
        return base + (limits.memory_mib or 0)

    def leftovers(self) -> list[Leftover]:
        """Containers (and their tasks) of this environment in containerd's `sandbench`
        namespace, found by the environment label every container here carries."""
        ctr = _ctr()
        if ctr is None or not _containerd_listening():
            return []
        ls = run_cmd([ctr, "-n", NAMESPACE, "containers", "ls", "-q"], timeout=20, check=False)
        found = []
        for cid in ls.stdout.split() if ls.returncode == 0 else []:
            info = run_cmd([ctr, "-n", NAMESPACE, "containers", "info", cid], timeout=20,
                           check=False)  # fmt: skip
            try:
                labels = json.loads(info.stdout).get("Labels") or {}
            except ValueError:
                continue
            if labels.get(ENV_LABEL) == self.name:
                found.append(Leftover("container", f"{NAMESPACE}/{cid}",
                                      partial(remove_container, ctr, cid)))  # fmt: skip
        return found

    def shared_pids(self) -> list[int]:
        return _containerd_pids()

    def image_ref(self, name: str) -> str:
        img = images.ensure(name)
        ref = f"docker.io/{img.tag}"
        if ref in self._imported:
            return ref
        ctr = _ctr() or "ctr"
        have = run_cmd([ctr, "-n", NAMESPACE, "image", "ls", "-q"], timeout=30, check=False)
        if ref not in have.stdout.split():
            archive = paths.state("kata") / f"{img.key}.oci.tar"
            try:
                oci_archive(img.tarball, ref, archive)
                run_cmd([ctr, "-n", NAMESPACE, "image", "import", str(archive)], timeout=600)
            finally:
                archive.unlink(missing_ok=True)
        self._imported.add(ref)
        return ref

    def prepare(self, spec: SandboxSpec) -> KataSandbox:
        return KataSandbox(self, spec)


class KataSandbox(Sandbox):
    data_dir = DATA_DIR
    #: `ctr run --detach` creates and starts in one command.
    folded_phases = {"create": "start"}  # noqa: RUF012 - a class-level declaration

    def __init__(self, env: KataEnvironment, spec: SandboxSpec) -> None:
        super().__init__(paths.new_id(), env.name)
        self.env = env
        self.spec = spec
        self.created = False
        self.network_path = "veth+tcfilter"
        # Kata shares a bind mount into the guest through its shared file system (virtio-fs
        # by default), not as a block device.
        self.volume_kind = str(env.hypervisor_setting("shared_fs") or "virtio-fs")
        self.boot_timeout_s = START_TIMEOUT
        self.ctr = _ctr() or "ctr"
        cfg = config_path(env.v.hypervisor)
        if cfg is None:
            raise SandboxError(env.available().reason)
        self.config = cfg
        self.ref = env.image_ref(spec.image)
        self.link: net.Link | None = None
        try:
            self.link = net.create(self.name)
        except BaseException:
            self._stop()
            raise
        self._address = self.link.sandbox_ip
        self.host_address = self.link.host_ip

    def launch(self, argv: list[str] | None = None) -> None:
        assert self.link is not None
        cmd = run_argv(
            ctr=self.ctr,
            config=self.config,
            netns_path=self.link.netns_path,
            image_ref=self.ref,
            container_id=self.name,
            argv=argv or self.spec.argv or IDLE_ARGV,
            env=self.spec.env,
            env_name=self.env.name,
            limits=self.spec.limits,
            volume=self.spec.volume,
        )
        self.created = True
        # `ctr run --detach` creates and starts the task in one command.
        run_cmd(cmd, timeout=START_TIMEOUT)

    def limits_enforced(self) -> dict[str, Any]:
        return self.env.limits_applied(self.spec.limits)

    def describe_state(self) -> str:
        cp = run_cmd([self.ctr, "-n", NAMESPACE, "task", "ls"], timeout=20, check=False)
        row = next((ln for ln in cp.stdout.splitlines() if ln.split()[:1] == [self.name]), "")
        return row or f"no task {self.name} in namespace {NAMESPACE}"

    def exec(self, argv: list[str], timeout: float = 60.0) -> Completed:
        eid = f"x{os.urandom(4).hex()}"
        cp = run_cmd(
            [self.ctr, "-n", NAMESPACE, "task", "exec", "--exec-id", eid, self.name, *argv],
            timeout=timeout,
            check=False,
        )
        return Completed(argv, cp.returncode, cp.stdout, cp.stderr)

    def host_pids(self) -> list[int]:
        # The shim (its command line names the container id), and under it or naming the
        # sandbox: the hypervisor and virtiofsd.
        roots = procs.find_by_cmdline(SHIM, self.name) + procs.find_by_cmdline(
            f"sandbox-{self.name}"
        )
        return procs.descendants(roots)

    def _stop(self) -> None:
        if self.created:
            remove_container(self.ctr, self.name)
        if self.link is not None:
            net.destroy(self.link)

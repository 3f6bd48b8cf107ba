"""Podman (Debian's 4.3, CNI networking) with crun, its default runtime, or with gVisor's runsc.

Podman runs here with a store of sandbench's own: `--root` under the cache directory (imported
images survive between runs, like Docker's), `--runroot`/`--tmpdir` under the state directory,
and a network configuration directory of its own. The user's Podman (/var/lib/containers,
/etc/cni/net.d, `podman ps`) never sees sandbench's containers, images or network, and
`sandbench clean` never sees the user's. Two host paths Podman 4.3 cannot be pointed elsewhere
(the blob-info cache /var/lib/containers/cache written by `podman import`, and CNI's result
cache /var/lib/cni) are removed at close when sandbench created them.

Networking: sandbench writes the CNI configuration of its network itself rather than using
`podman network create`, which would add masquerading and firewall rules, pick a bridge name
without sandbench's mark and keep IPAM state in /var/lib/cni: bridge `sbpodman0`,
198.19.1.0/24 (the benchmarking range, next to Docker's 198.19.0.0/24), no masquerade, no
firewall plugin, IPAM state under the state directory. The default network (10.88.0.0/16)
is never used. Containers carry the label org.sandbench.owned and an owner label (pid and
start time of the sandbench process), which is how leftovers() tells a killed run's
container from a live one. crun needs explicit nofile/nproc ulimits here (Podman's defaults
exceed what this host lets a process raise to); runsc runs through the netstack wrapper.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import resource
import shutil
import subprocess
import time
from functools import partial
from pathlib import Path
from typing import Any

import psutil

from sandbench import cgroups, images, paths, procs
from sandbench.binaries import version_of
from sandbench.environments import criu, oci_spec
from sandbench.environments.base import (
    IDLE_ARGV,
    Availability,
    Completed,
    Environment,
    Leftover,
    Limits,
    Sandbox,
    SandboxSpec,
    engine_flags,
    live_sandboxes,
    run_cmd,
)
from sandbench.environments.oci import (
    GVISOR_DIRECT_IO_NOTE,
    OciEnvironment,
    Variant,
    hybrid_cgroup_problem,
)
from sandbench.environments.podman_store import (
    BRIDGE,
    CGROUP_PARENT,
    GATEWAY,
    NETWORK,
    OWNER_LABEL,
    STORE,
    SUBNET,
    PodmanStore,
    _owner_mark,
)
from sandbench.environments.runsc_wrap import wrapper
from sandbench.errors import SandboxError, StepTimeout, command_evidence

GVISOR_PLATFORM = "systrap"
SECCOMP_PROFILE = Path("/usr/share/containers/seccomp.json")
CNI_PLUGINS = Path("/usr/lib/cni")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
PROBE_TIMEOUT = 15.0


def _owner_alive(mark: str) -> bool:
    """Whether the sandbench process named by an owner label still runs (pid reuse checked
    against its start time). An unreadable mark counts as alive: never remove what we cannot
    attribute."""
    try:
        pid_s, start_s = mark.split(":", 1)
        return abs(psutil.Process(int(pid_s)).create_time() - float(start_s)) < 0.01
    except psutil.NoSuchProcess:
        return False
    except (ValueError, psutil.Error):
        return True


def _nofile() -> int:
    # The same limit as OCI bundles and the Docker driver.
    return oci_spec.nofile_limit()


def _nproc() -> int:
    # Podman's default for root (1048576) needs CAP_SYS_RESOURCE, which this host withholds;
    # Podman also caps its own RLIMIT_NPROC at pid_max (seen: 32768), and crun cannot raise
    # the container's above what conmon has.
    hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    try:
        pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    except (OSError, ValueError):
        pid_max = 32768
    return min(pid_max, hard if hard != resource.RLIM_INFINITY else pid_max)


def seccomp_description() -> str:
    if not SECCOMP_PROFILE.is_file():
        return f"podman's built-in default ({SECCOMP_PROFILE} missing)"
    digest = hashlib.sha256(SECCOMP_PROFILE.read_bytes()).hexdigest()[:12]
    return f"containers-common default ({SECCOMP_PROFILE}, sha256 {digest})"




class PodmanEnvironment(Environment):
    family = "container"

    def __init__(self, gvisor: bool) -> None:
        self.gvisor = gvisor
        if gvisor:
            self.name = "podman-gvisor"
            self.description = (
                f"Podman with gVisor runsc as its OCI runtime, {GVISOR_PLATFORM} platform, netstack"
            )
            self.family = "gvisor"
            self.isolation_class = "user-space kernel"
            self.paper_lineage = "gvisor"
        else:
            self.name = "podman"
            self.description = "Podman (Debian), default runtime crun"
        self.store = STORE

    # -- discovery -------------------------------------------------------------------------
    def _runsc(self) -> OciEnvironment:
        return OciEnvironment(
            Variant(f"gvisor-{GVISOR_PLATFORM}", "runsc", "", platform=GVISOR_PLATFORM)
        )

    def runtime_args(self) -> list[str]:
        """Global Podman flags naming the runtime: passed on every call for a container, since
        Podman keeps the runtime's path but not its flags with the container."""
        if not self.gvisor:
            return ["--runtime", "crun"]
        runsc = shutil.which("runsc")
        if runsc is None:
            raise SandboxError("runsc not found; install it from bookworm-backports")
        return [
            "--runtime", str(wrapper(runsc)),
            "--runtime-flag", f"root={paths.state('podman', 'runsc')}",
            "--runtime-flag", f"platform={GVISOR_PLATFORM}",
            "--runtime-flag", "network=sandbox",
        ]

    def command(self) -> list[str]:
        return [*self.store.base_args(), *self.runtime_args()]

    def restore_unavailable(self, image: str) -> str:
        if self.gvisor:
            return ("`podman container checkpoint` of a runsc container is not driven by "
                    "sandbench; gVisor's own checkpoint is measured as gvisor-*")
        problem = criu.problem()
        if problem:
            return f"podman container checkpoint goes through CRIU: {problem}"
        return ("`podman container checkpoint` is not driven by sandbench yet; runc's CRIU "
                "path is measured as runc")

    def available(self) -> Availability:
        for binary, pkg in (("podman", "podman"), ("conmon", "conmon")):
            if shutil.which(binary) is None:
                return Availability.no(
                    f"{binary} not found on PATH; install Debian package {pkg} "
                    "(scripts/setup.sh does)"
                )
        missing = [p for p in ("bridge", "host-local") if not (CNI_PLUGINS / p).exists()]
        if missing:
            return Availability.no(
                f"CNI plugins {', '.join(missing)} not found in {CNI_PLUGINS}; install Debian "
                "package containernetworking-plugins"
            )
        if self.gvisor:
            direct = self._runsc().available()
            if not direct.ok:
                return direct
        else:
            if shutil.which("crun") is None:
                return Availability.no("crun not found; install Debian package crun")
            if problem := hybrid_cgroup_problem():
                return Availability.no(problem)
        # A bounded call through sandbench's own store: a wedged store lock or a broken
        # install is found here, not in the middle of a benchmark.
        try:
            cp = run_cmd([*self.store.base_args(), "version", "--format", "{{.Client.Version}}"],
                         timeout=PROBE_TIMEOUT, check=False)
        except SandboxError as e:
            return Availability.no(f"podman did not answer: {e}")
        if cp.returncode != 0:
            return Availability.no(
                f"podman version failed ({cp.returncode}): {cp.stderr.strip()[-300:]}"
            )
        return Availability.yes()

    def facts(self) -> dict[str, Any]:
        podman = self.store.podman()
        f: dict[str, Any] = {
            "binary": podman,
            "version": version_of(podman) if podman else None,
            "driver": "podman",
            "conmon_version": version_of("conmon"),
            "cgroup_manager": "cgroupfs",
            "network": "netstack+podman-bridge" if self.gvisor else "podman-bridge",
            "network_backend": "cni",
            "subnet": SUBNET,
            "storage_root": str(paths.CACHE_DIR / "podman" / "storage"),
            "ulimits": {"nofile": _nofile(), "nproc": _nproc()},
        }
        if self.gvisor:
            runsc = shutil.which("runsc")
            f["runtime"] = "runsc (through sandbench's netstack wrapper)"
            f["runtime_version"] = version_of(runsc) if runsc else None
            f["platform"] = GVISOR_PLATFORM
            f["seccomp"] = (
                "not applied inside the sandbox: runsc ignores the OCI profile Podman passes "
                "(no --oci-seccomp); the sentry runs under runsc's own host seccomp filter"
            )
        else:
            f["runtime"] = "crun"
            f["runtime_version"] = version_of("crun")
            f["seccomp"] = seccomp_description()
        f["seccomp_off"] = "--security-opt seccomp=unconfined"
        return f

    def flags(self) -> list[str]:
        return []

    def limits_applied(self, limits: Limits) -> dict[str, Any]:
        if limits.cpus is None and limits.memory_mib is None:
            return {}
        rt = "runsc" if self.gvisor else "crun"
        return {"cpus": limits.cpus, "memory_mib": limits.memory_mib,
                "how": f"podman --cpus/--memory, cgroup v1 via cgroupfs ({rt})"}

    # -- lifecycle ---------------------------------------------------------------------------
    def setup(self) -> None:
        self.store.ensure_network()

    def prepare(self, spec: SandboxSpec) -> PodmanSandbox:
        self.setup()  # cached once done; callers outside the runner get it here
        tag = self.store.ensure_image(images.ensure(spec.image))
        return PodmanSandbox(self, spec, tag)

    def leftovers(self) -> list[Leftover]:
        """Containers of dead sandbench processes in sandbench's store, the network and its
        bridge when no live run owns them, and imported images whose cache entry is gone.
        Only the podman environment reports them, so that clean lists each once."""
        if self.gvisor or self.store.podman() is None:
            return []
        if not (paths.CACHE_DIR / "podman" / "storage").is_dir():
            return []
        found: list[Leftover] = []
        conts = self.store.containers()
        # A container without an owner label (made by a user from sandbench's image, which
        # carries the label) counts as alive and is never removed.
        dead = [c for c in conts if not _owner_alive((c.get("Labels") or {}).get(OWNER_LABEL, ""))]
        for c in dead:
            cid = str(c.get("Id", ""))
            names = c.get("Names") or [cid[:12]]
            found.append(Leftover("podman container", f"{names[0]} ({cid[:12]})",
                                  partial(_remove_container, cid)))
        if all(c in dead for c in conts if NETWORK in (c.get("Networks") or [])):
            found += self._network_leftovers()
        found += self._image_leftovers()
        return found

    def _network_leftovers(self) -> list[Leftover]:
        out: list[Leftover] = []
        path = paths.STATE_DIR / "podman" / "cni" / f"{NETWORK}.conflist"
        owner = ""
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            owner = json.loads(path.read_text())["args"]["podman_labels"][OWNER_LABEL]
        if path.exists() and not _owner_alive(owner):
            out.append(Leftover("podman network", f"{NETWORK} ({SUBNET})",
                                self.store.remove_network))
        elif not path.exists() and Path(f"/sys/class/net/{BRIDGE}").exists():
            out.append(Leftover("link", f"{BRIDGE} (podman bridge)", _remove_bridge))
        return out

    def _image_leftovers(self) -> list[Leftover]:
        cp = run_cmd([*self.store.base_args(), "images", "--format", "json",
                      "--filter", f"label={paths.DOCKER_LABEL}"], timeout=30, check=False)
        if cp.returncode != 0:
            return []
        out: list[Leftover] = []
        for img in json.loads(cp.stdout or "[]") or []:
            for tag in img.get("Names") or []:
                # localhost/sandbench/<name>:<key> is a copy of CACHE_DIR/images/<name>-<key>.
                repo, _, key = tag.rpartition(":")
                name = repo.rsplit("/", 1)[-1]
                if (paths.CACHE_DIR / "images" / f"{name}-{key}" / "complete").exists():
                    continue
                out.append(Leftover("podman image", tag, partial(_remove_image, tag)))
        return out

    def close(self) -> None:
        self.store.close()


def _remove_bridge() -> None:
    run_cmd(["ip", "link", "del", BRIDGE], timeout=20, check=False)


def _remove_image(tag: str) -> None:
    run_cmd([*PodmanStore.base_args(), "rmi", "--force", tag], timeout=60, check=False)


def _remove_container(cid: str) -> None:
    """Remove a container whatever its runtime (runsc needs its flags back)."""
    base = PodmanStore.base_args()
    cp = run_cmd([*base, "inspect", "--format", "{{.OCIRuntime}}", cid], timeout=30, check=False)
    rt: list[str] = []
    if cp.returncode == 0 and "runsc" in cp.stdout:
        rt = PodmanEnvironment(gvisor=True).runtime_args()
    run_cmd([*base, *rt, "rm", "--force", "--time", "0", cid], timeout=STOP_TIMEOUT, check=False)
    _wait_gone(cid, STOP_TIMEOUT)


def _wait_gone(cid: str, timeout: float, rm_error: str = "") -> None:
    """`podman rm` returns while conmon and its exit command still run: a stop means nothing
    of the container is left, so wait for every process naming it. Processes still alive at
    the deadline are a leak: raise with them (and rm's own error) as evidence, so the cell
    fails instead of the container living on unrecorded."""
    deadline = time.monotonic() + timeout
    alive: list[int] = []
    while time.monotonic() < deadline:
        alive = [p for p in procs.find_by_cmdline(cid) if _status(p) not in ("", "zombie")]
        if not alive:
            return
        time.sleep(0.02)
    raise SandboxError(
        f"podman container {cid} still has {len(alive)} process(es) {timeout:g} s after rm",
        {"container": cid, "pids": alive, "rm_error": rm_error[-2000:]},
    )


def _status(pid: int) -> str:
    try:
        return str(psutil.Process(pid).status())
    except psutil.NoSuchProcess:
        return ""


class PodmanSandbox(Sandbox):
    host_address = GATEWAY

    def __init__(self, env: PodmanEnvironment, spec: SandboxSpec, tag: str) -> None:
        super().__init__(paths.new_id(), env.name)
        self.env = env
        self.spec = spec
        self.tag = tag
        self.cmd = env.command()
        self.container_id: str | None = None
        self.launched = False
        self.network_path = "netstack+podman-bridge" if env.gvisor else "podman-bridge"
        if env.gvisor:
            self.direct_io = False
            self.direct_io_note = GVISOR_DIRECT_IO_NOTE
            self.stop_after_pause = True  # a paused sentry still runs

    @property
    def address(self) -> str:
        # Resolved lazily: an inspect inside launch() would count in the startup time.
        if not self._address:
            cp = run_cmd(
                [*self.cmd, "inspect", "--format",
                 '{{(index .NetworkSettings.Networks "' + NETWORK + '").IPAddress}}', self.name],
                timeout=15,
            )
            self._address = cp.stdout.strip()
        return self._address

    def create_argv(self, args: list[str]) -> list[str]:
        cmd = [
            *self.cmd, "create",
            "--name", self.name,
            "--label", f"{paths.DOCKER_LABEL}=1",
            "--label", f"{OWNER_LABEL}={_owner_mark()}",
            "--network", NETWORK,
            "--cgroup-parent", f"/{CGROUP_PARENT}",
            "--ulimit", f"nofile={_nofile()}:{_nofile()}",
            "--ulimit", f"nproc={_nproc()}:{_nproc()}",
        ]
        if not self.spec.seccomp:
            cmd += ["--security-opt", "seccomp=unconfined"]
        cmd += engine_flags(self.spec, self.data_dir)
        return [*cmd, self.tag, *args]

    def _step(self, argv: list[str], what: str) -> str:
        try:
            cp = subprocess.run(argv, capture_output=True, text=True, timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired as e:
            raise StepTimeout(
                f"podman {what} did not return within {START_TIMEOUT:g} s",
                command_evidence(argv, None, e.stdout, e.stderr, timeout_s=START_TIMEOUT),
            ) from None
        if cp.returncode != 0:
            raise SandboxError(
                f"podman {what} failed: {cp.stderr.strip()[-400:]}",
                command_evidence(argv, cp.returncode, cp.stdout, cp.stderr,
                                 state=self.describe_state()),
            )
        return cp.stdout.strip()

    def launch(self, argv: list[str] | None = None) -> None:
        args = argv or self.spec.argv or IDLE_ARGV
        self.launched = True
        self.container_id = self._step(self.create_argv(args), "create")
        self.mark("created")
        self._step([*self.cmd, "start", self.name], "start")

    def exec(self, argv: list[str], timeout: float = 60.0) -> Completed:
        cp = run_cmd([*self.cmd, "exec", self.name, *argv], timeout=timeout, check=False)
        return Completed(argv, cp.returncode, cp.stdout, cp.stderr)

    def host_pids(self) -> list[int]:
        # conmon (its command line carries the full container id) and everything under it:
        # the container's processes, or runsc's sandbox, gofer and stubs. conmons of exec
        # sessions and Podman's own cleanup calls also name the id; they are not the sandbox.
        if not self.container_id:
            return []
        roots = []
        for pid in procs.find_by_cmdline(self.container_id):
            try:
                p = psutil.Process(pid)
                if p.name() == "conmon" and "--exec-process-spec" not in " ".join(p.cmdline()):
                    roots.append(pid)
            except psutil.NoSuchProcess:
                continue
        return procs.descendants(roots)

    def describe_state(self) -> str:
        if not self.launched:
            return ""
        try:
            cp = run_cmd([*self.cmd, "inspect", "--format", "{{json .State}}", self.name],
                         timeout=15, check=False)
        except SandboxError as e:
            return str(e)
        return (cp.stdout or cp.stderr).strip()[-2000:]

    def limits_enforced(self) -> dict[str, Any]:
        pid = self._container_pid()
        if pid is None:
            return {}
        out = _cgroup_limits(pid)
        out["how"] = "cgroup v1 via cgroupfs, set by podman --cpus/--memory"
        return out

    def _container_pid(self) -> int | None:
        try:
            cp = run_cmd([*self.cmd, "inspect", "--format", "{{.State.Pid}}", self.name],
                         timeout=15, check=False)
            pid = int(cp.stdout.strip())
        except (SandboxError, ValueError):
            return None
        return pid or None

    def _pause(self) -> bool:
        # podman pause freezes the container's cgroup (cgroup v1 freezer; runsc pause for
        # gVisor); conmon stays runnable but idle. SIGSTOP (the base's) if it refuses.
        if not self.launched:
            return False
        cp = run_cmd([*self.cmd, "pause", self.name], timeout=STOP_TIMEOUT, check=False)
        return cp.returncode == 0

    def _resume(self) -> None:
        run_cmd([*self.cmd, "unpause", self.name], timeout=STOP_TIMEOUT, check=False)

    def _stop(self) -> None:
        if not self.launched:
            return
        rm_error = ""
        try:
            cp = run_cmd([*self.cmd, "rm", "--force", "--time", "0", "--ignore", self.name],
                         timeout=STOP_TIMEOUT, check=False)
            if cp.returncode != 0:
                rm_error = f"podman rm exited {cp.returncode}: {cp.stderr}"
        except SandboxError as e:  # timed out: whether anything is left decides below
            rm_error = str(e)
        _wait_gone(self.container_id or self.name, STOP_TIMEOUT, rm_error)
        if self.container_id:
            with contextlib.suppress(ValueError):
                cgroups.remove_tree(f"{CGROUP_PARENT}/libpod-{self.container_id}")
        if not any(sb.env_name.startswith("podman") for sb in live_sandboxes()):
            # conmon's cgroup (sandbench/podman/conmon) is shared by every container of ours.
            cgroups.remove_tree(CGROUP_PARENT)
            cgroups.remove_empty_cgroups()


def _cgroup_limits(pid: int) -> dict[str, Any]:
    """The CPU quota and memory limit the cgroups of pid enforce (cgroup v1)."""
    out: dict[str, Any] = {"cpus": None, "memory_mib": None}
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        _hid, ctrls, rel = line.split(":", 2)
        names = ctrls.split(",")
        base = next((Path("/sys/fs/cgroup") / c for c in (ctrls, *names)
                     if c and (Path("/sys/fs/cgroup") / c).is_dir()), None)
        if base is None:
            continue
        d = base / rel.lstrip("/")
        with contextlib.suppress(OSError, ValueError):
            if "cpu" in names:
                quota = int((d / "cpu.cfs_quota_us").read_text())
                period = int((d / "cpu.cfs_period_us").read_text())
                out["cgroup_cpu"] = str(d)
                if quota > 0:
                    out["cpus"] = round(quota / period, 3)
            if "memory" in names:
                lim = int((d / "memory.limit_in_bytes").read_text())
                out["cgroup_memory"] = str(d)
                if lim < 1 << 62:
                    out["memory_mib"] = lim // (1024 * 1024)
    return out

"""Docker Engine as the front end, with runc or runsc registered as runtimes: how the paper ran
Docker and gVisor.

The daemon is sandbench's own (docker_daemon.py: its own store, socket, containerd and bridge,
removed when the run ends), unless the user names theirs in SANDBENCH_DOCKER_HOST. Images come
from `docker import` of the tool's rootfs tarball, since no registry is reachable. Containers
join the daemon's default network, whose bridge sandbench made in 198.19.0.0/24.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from functools import partial
from typing import Any

import psutil

from sandbench import images, paths, procs, seccomp
from sandbench.environments import cgroup_limits, criu, oci_spec
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
)
from sandbench.environments.docker_daemon import (
    DAEMON,
    GATEWAY,
    NETWORK,
    PLATFORMS,
    STOP_TIMEOUT,
    cli,
    client,
    docker,
    external_host,
    runtime_name,
)
from sandbench.environments.oci import (
    GVISOR_DIRECT_IO_NOTE,
    GVISOR_SECCOMP,
    OciEnvironment,
    Variant,
    version_of,
)
from sandbench.environments.runsc_wrap import wrapper_overhead_ms
from sandbench.errors import SandboxError, StepTimeout, command_evidence

__all__ = ["DAEMON", "PLATFORMS", "DockerEnvironment", "DockerSandbox"]

START_TIMEOUT = 60.0


class DockerEnvironment(Environment):
    family = "container"

    def __init__(self, platform: str | None) -> None:
        self.platform = platform
        if platform is None:
            self.name = "docker"
            self.description = "Docker Engine, default runtime (runc)"
            self.runtime = "runc"
            self.paper_lineage = "runc"  # the paper's Docker ran runc
        else:
            self.name = f"docker-gvisor-{platform}"
            self.description = f"Docker Engine with gVisor runsc, {platform} platform, netstack"
            self.family = "gvisor"
            self.isolation_class = "user-space kernel"
            self.paper_lineage = "gvisor"
            self.runtime = runtime_name(platform)
        self.daemon = DAEMON

    def _gvisor(self) -> OciEnvironment:
        assert self.platform is not None
        return OciEnvironment(
            Variant(f"gvisor-{self.platform}", "runsc", "", platform=self.platform)
        )

    def restore_unavailable(self, image: str) -> str:
        if self.platform is not None:
            return ("`docker checkpoint` needs the daemon's experimental mode and is not driven "
                    "by sandbench; gVisor's own checkpoint is measured as gvisor-"
                    f"{self.platform}")
        problem = criu.problem()
        if problem:
            return f"docker checkpoint goes through CRIU: {problem}"
        return ("`docker checkpoint` needs the daemon's experimental mode, which sandbench's "
                "own dockerd does not enable; runc's CRIU path is measured as runc")

    def available(self) -> Availability:
        if client() is None or shutil.which("dockerd") is None \
                or shutil.which("containerd") is None:
            return Availability.no("docker/dockerd/containerd not found; install Debian "
                                   "packages docker.io and containerd (scripts/setup.sh)")
        if self.platform is not None:
            direct = self._gvisor().available()
            if not direct.ok:
                return direct
        if external_host() and self.platform is not None:
            if self.daemon.server_version() is None:
                return Availability.no(f"no dockerd answers at SANDBENCH_DOCKER_HOST="
                                       f"{external_host()}")
            if self.runtime not in self.daemon.runtimes():
                entry = {self.runtime: self.daemon.config()["runtimes"].get(self.runtime)}
                return Availability.no(
                    f"the dockerd named by SANDBENCH_DOCKER_HOST has no runtime {self.runtime}; "
                    f"register it in its daemon.json as {json.dumps(entry)}, or unset "
                    "SANDBENCH_DOCKER_HOST so sandbench starts its own")
        return Availability.yes()

    def facts(self) -> dict[str, Any]:
        f: dict[str, Any] = {
            "binary": shutil.which("dockerd"),
            "client": client(),
            "client_version": self.daemon.client_version(),
            "daemon": self.daemon.which(),
            "docker_version": self.daemon.server_version()
            or self.daemon.last_version
            or version_of("dockerd"),
            "runtime": self.runtime,
            "driver": "docker",
            "network": "docker-bridge" if self.platform is None else "netstack+docker-bridge",
            "daemon_started_by_sandbench": self.daemon.started_by_us,
        }
        # The binary's version: known before the daemon runs, so resume can compare it.
        f["version"] = version_of(f["binary"]) if f["binary"] else None
        if self.platform is not None:
            runsc = shutil.which("runsc")
            f["platform"] = self.platform
            f["runtime_version"] = version_of(runsc) if runsc else None
        else:
            f["runtime_version"] = version_of("runc")
        f.update(self._like_for_like_facts())
        return f

    def _like_for_like_facts(self) -> dict[str, Any]:
        """Seccomp, phases and freezing, said the same way as for the OCI environments."""
        f: dict[str, Any] = {
            "seccomp": GVISOR_SECCOMP if self.platform else
            f"{seccomp.describe()}, passed as --security-opt seccomp=FILE",
            "seccomp_when_off": GVISOR_SECCOMP if self.platform else
            "none (--security-opt seccomp=unconfined)",
            "start_phases": "prepare (daemon, network, image: before the clock) / docker "
            "create / docker start (includes the network namespace) / network",
            "freeze": "docker pause",
        }
        runsc = shutil.which("runsc")
        if self.platform is not None and runsc:
            f["direct_io"] = GVISOR_DIRECT_IO_NOTE
            f["wrapper_overhead_ms"] = wrapper_overhead_ms(runsc)
        return f

    def limits_applied(self, limits: Limits) -> dict[str, Any]:
        if limits.cpus is None and limits.memory_mib is None:
            return {}
        return {"cpus": limits.cpus, "memory_mib": limits.memory_mib,
                "how": f"docker --cpus/--memory -> container cgroup ({self.runtime})"}

    def shared_pids(self) -> list[int]:
        return self.daemon.shared_pids()

    def setup(self) -> None:
        self.daemon.ensure()

    def prepare(self, spec: SandboxSpec) -> DockerSandbox:
        self.setup()  # cached once done; callers outside the runner get it here
        tag = self.daemon.ensure_image(images.ensure(spec.image))
        return DockerSandbox(self, spec, tag)

    def close(self) -> None:
        self.daemon.close()

    def leftovers(self) -> list[Leftover]:
        """Labelled containers of killed runs in the daemon that answers (a user's named in
        SANDBENCH_DOCKER_HOST, or ours while it still runs), and what a killed run left of
        sandbench's own daemon. The Docker environments share one daemon: the plain one lists
        for all. Images are a cache: kept while the daemon runs, removed with its store."""
        if self.platform is not None or client() is None:
            return []
        found: list[Leftover] = []
        live = paths.live_ids()
        if self.daemon.server_version() is not None:
            label = f"label={paths.DOCKER_LABEL}"
            cp = docker("ps", "-a", "--filter", label, "--format", "{{.ID}} {{.Names}}")
            for line in cp.stdout.splitlines():
                cid, _, name = line.partition(" ")
                # Containers inherit the label from the tool's image: a foreign container
                # made from it has the label too, so the name (a sandbox id) must match.
                if cid and paths.is_sandbox_id(name) and name not in live:
                    found.append(Leftover("docker container", f"{cid} {name}",
                                          partial(_docker_rm, cid)))
        return found + self.daemon.leftovers()


def _docker_rm(cid: str) -> None:
    docker("rm", "--force", cid, timeout=STOP_TIMEOUT)


class DockerSandbox(Sandbox):
    host_address = GATEWAY

    def __init__(self, env: DockerEnvironment, spec: SandboxSpec, tag: str) -> None:
        super().__init__(paths.new_id(), env.name)
        self.env = env
        self.spec = spec
        self.tag = tag
        self.container_id: str | None = None
        self.launched = False
        self.network_path = "docker-bridge" if env.platform is None else "netstack+docker-bridge"
        if env.platform is not None:
            self.direct_io = False
            self.direct_io_note = GVISOR_DIRECT_IO_NOTE
            self.stop_after_pause = True  # a paused sentry still runs

    @property
    def address(self) -> str:
        # Resolved lazily: an inspect inside launch() would count in the startup time.
        if not self._address:
            cp = docker("inspect", "--format",
                        '{{(index .NetworkSettings.Networks "' + NETWORK + '").IPAddress}}',
                        self.name, timeout=15)
            self._address = cp.stdout.strip()
        return self._address

    def launch(self, argv: list[str] | None = None) -> None:
        """`docker create`, mark("created"), `docker start`: the same phase boundaries as the
        OCI runtimes. Docker's network namespace is made inside start (libnetwork joins the
        container to its network when it starts), so start holds what runc's prepare does."""
        args = argv or self.spec.argv or IDLE_ARGV
        cmd = [
            *cli("create"),
            "--name",
            self.name,
            "--label",
            f"{paths.DOCKER_LABEL}=1",
            "--runtime",
            self.env.runtime,
            "--network",
            NETWORK,
            "--ulimit",
            f"nofile={oci_spec.nofile_limit()}:{oci_spec.nofile_limit()}",
            "--security-opt",
            self._seccomp_opt(),
        ]
        cmd += [*engine_flags(self.spec, "/data"), self.tag, *args]
        self.launched = True
        cp = self._docker(cmd, "create")
        self.container_id = cp.stdout.strip()
        self.mark("created")
        self._docker(cli("start", self.name), "start")

    def _seccomp_opt(self) -> str:
        # The same profile file the OCI bundles are built from (sandbench.seccomp), not the
        # one compiled into dockerd, so runc, crun and Docker run under one filter.
        if not self.spec.seccomp:
            return "seccomp=unconfined"
        if problem := seccomp.profile_problem():
            raise SandboxError(problem, {"profile": str(seccomp.PROFILE)})
        return f"seccomp={seccomp.PROFILE}"

    def _docker(self, cmd: list[str], what: str) -> subprocess.CompletedProcess[str]:
        try:
            cp = subprocess.run(cmd, capture_output=True, text=True, timeout=START_TIMEOUT,
                                stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise StepTimeout(
                f"docker {what} did not return within {START_TIMEOUT:g} s",
                command_evidence(cmd, None, e.stdout, e.stderr, timeout_s=START_TIMEOUT,
                                 state=self.describe_state()),
            ) from None
        if cp.returncode != 0:
            self.env.daemon.forget()
            raise SandboxError(
                f"docker {what} failed: {cp.stderr.strip()[-400:]}",
                command_evidence(cmd, cp.returncode, cp.stdout, cp.stderr,
                                 state=self.describe_state()),
            )
        return cp

    def exec(self, argv: list[str], timeout: float = 60.0) -> Completed:
        cp = docker("exec", self.name, *argv, timeout=timeout, check=False)
        return Completed(argv, cp.returncode, cp.stdout, cp.stderr)

    def describe_state(self) -> str:
        if not self.launched:
            return "not created"
        cp = docker("inspect", "--format", "{{json .State}}", self.name, timeout=15,
                    check=False)
        return (cp.stdout or cp.stderr).strip()[-1000:]

    # docker pause: the cgroup freezer for runc, `runsc pause` through the shim for gVisor.
    # SIGSTOP of host_pids would also stop the containerd shim and leave docker hanging.
    def _pause(self) -> bool:
        if not self.container_id:
            return False
        docker("pause", self.name, timeout=STOP_TIMEOUT)
        return True

    def _resume(self) -> None:
        docker("unpause", self.name, timeout=STOP_TIMEOUT)

    def limits_enforced(self) -> dict[str, Any]:
        lim = self.spec.limits
        if (lim.cpus is None and lim.memory_mib is None) or not self.container_id:
            return {}
        cp = docker("inspect", "--format", "{{.State.Pid}}", self.name, timeout=15)
        got = cgroup_limits.limits_of(int(cp.stdout.strip()))
        return {**got, "how": self.env.limits_applied(lim).get("how", "")}

    def host_pids(self) -> list[int]:
        # The containerd shim (its command line carries the full container id) and everything
        # under it: container processes, or runsc's sandbox, gofer and stubs.
        if not self.container_id:
            return []
        roots = [
            pid
            for pid in procs.find_by_cmdline(self.container_id)
            if _name(pid) not in ("docker", "dockerd", "containerd")
        ]
        return procs.descendants(roots)

    def _stop(self) -> None:
        if not self.launched:
            return
        shims = []
        for pid in self._shim_pids():
            with contextlib.suppress(psutil.NoSuchProcess):  # exited since it was listed
                shims.append(psutil.Process(pid))
        argv = cli("rm", "--force", self.name)
        cp = docker("rm", "--force", self.name, timeout=STOP_TIMEOUT, check=False)
        if cp.returncode != 0 and "No such container" not in cp.stderr:
            raise SandboxError(f"docker rm {self.name} failed: {cp.stderr.strip()[-300:]}",
                               command_evidence(argv, cp.returncode, cp.stdout, cp.stderr))
        # `docker rm` returns before the shim has exited; a stop means nothing is left.
        _gone, alive = psutil.wait_procs(shims, timeout=STOP_TIMEOUT)
        if alive:
            raise SandboxError(
                f"containerd shim(s) of {self.name} still running {STOP_TIMEOUT:g} s after "
                "docker rm", {"shim_pids": [p.pid for p in alive], "container": self.name,
                              "container_id": self.container_id})

    def _shim_pids(self) -> list[int]:
        if not self.container_id:
            return []
        return [
            p
            for p in procs.find_by_cmdline(self.container_id)
            if _name(p).startswith("containerd-shim")
        ]


def _name(pid: int) -> str:
    try:
        return psutil.Process(pid).name()
    except psutil.NoSuchProcess:
        return ""

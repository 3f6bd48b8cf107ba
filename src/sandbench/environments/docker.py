"""Docker Engine as the front end, with runc or runsc registered as runtimes: how the paper ran
Docker and gVisor.

When no dockerd answers, sandbench starts its own with a config under the state directory
(runsc runtimes registered through the netstack wrapper, no iptables or masquerading) and stops
it when the run ends. Images come from `docker import` of the tool's rootfs tarball, since no
registry is reachable. Containers join a Docker network the tool owns in 198.19.0.0/24.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from functools import partial
from pathlib import Path
from typing import Any

import psutil

from sandbench import cgroups, images, paths, procs, seccomp
from sandbench.cgroups import remove_empty_cgroups
from sandbench.environments import cgroup_limits, oci_spec
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
    run_cmd,
    tail_file,
)
from sandbench.environments.oci import (
    GVISOR_DIRECT_IO_NOTE,
    GVISOR_SECCOMP,
    OciEnvironment,
    Variant,
    version_of,
)
from sandbench.environments.runsc_wrap import wrapper, wrapper_overhead_ms
from sandbench.errors import SandboxError, StepTimeout, command_evidence

NETWORK = "sandbench"
SUBNET = "198.19.0.0/24"
GATEWAY = "198.19.0.1"
DAEMON_START_TIMEOUT = 60.0
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
PLATFORMS = ("ptrace", "systrap", "kvm")
#: A unix socket path must fit in sun_path (108 bytes with the terminating zero).
_SUN_PATH_MAX = 107


def exec_root() -> Path:
    """The exec root of the dockerd sandbench starts, under the state directory: its managed
    containerd's socket, the shims' -address and the runtimes' state roots all lie below it,
    which is how clean tells this daemon's processes from any other containerd's."""
    return paths.STATE_DIR / "docker" / "exec"


def containerd_socket() -> Path:
    return exec_root() / "containerd" / "containerd.sock"


def _marked_processes() -> list[psutil.Process]:
    """Processes with an argument inside exec_root(): the daemon's containerd, its shims
    (-address <exec root>/containerd/containerd.sock), runtimes under its state roots."""
    mark = str(exec_root())
    found = []
    for pid, _name, _created, argv in procs.all_processes():
        if pid != os.getpid() and any(a == mark or a.startswith(mark + "/") for a in argv):
            with contextlib.suppress(psutil.NoSuchProcess):
                found.append(psutil.Process(pid))
    return found


def _owned_record() -> dict[str, Any] | None:
    """The record of the dockerd sandbench started (state dir docker/owned), if any."""
    state = paths.state_root_if_ours()
    f = state / "docker" / "owned" if state else None
    if f is None or not f.is_file():
        return None
    try:
        rec = json.loads(f.read_text())
        return rec if isinstance(rec, dict) and isinstance(rec.get("pid"), int) else {}
    except ValueError:
        return {}  # the old format (a bare pid) or torn: trusted for nothing


def _same_process(pid: Any, start: Any) -> psutil.Process | None:
    try:
        proc = psutil.Process(int(pid))
        return proc if abs(proc.create_time() - float(start)) < 0.01 else None
    except (psutil.NoSuchProcess, TypeError, ValueError):
        return None


def owned_dockerd() -> psutil.Process | None:
    """sandbench's dockerd, only when the record names a live process with the recorded
    start time, called dockerd and started with the recorded config file: a stale record
    whose pid now belongs to another daemon is not enough."""
    rec = _owned_record()
    if not rec:
        return None
    proc = _same_process(rec.get("pid"), rec.get("start"))
    try:
        if proc is None or proc.name() != "dockerd":
            return None
        return proc if procs.has_option(proc.cmdline(), "--config-file",
                                        str(rec.get("config"))) else None
    except psutil.Error:
        return None


def stop_owned_dockerd(proc: psutil.Process, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM sandbench's dockerd; wait for it and the processes carrying its exec root's
    mark; SIGKILL those left. Raises SandboxError naming the survivors."""
    marked = _marked_processes()
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.terminate()
    _gone, alive = psutil.wait_procs([proc, *marked], timeout=timeout)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    _gone, alive = psutil.wait_procs(alive, timeout=10)
    _forget_daemon()
    if alive:
        raise SandboxError(
            f"{len(alive)} process(es) of sandbench's dockerd survived SIGKILL",
            {"pids": [p.pid for p in alive], "dockerd_log": _log_tail()},
        )


def _forget_daemon() -> None:
    """The daemon is gone: its cgroup parent (when it made it) and its records go too."""
    state = paths.state_root_if_ours()
    if state is None:
        return
    d = state / "docker"
    if (d / "created-cgroup").exists():
        remove_empty_cgroups("docker")
        (d / "created-cgroup").unlink(missing_ok=True)
    (d / "owned").unlink(missing_ok=True)
    if _recorded_bridge() is None:  # a bridge still up stays recorded, for clean
        (d / "bridge").unlink(missing_ok=True)


def _bridge_record_path() -> Path | None:
    state = paths.state_root_if_ours()
    return state / "docker" / "bridge" if state else None


def _ifindex(name: str) -> int | None:
    """The kernel's index of link `name`; None when there is no such link."""
    try:
        return int(Path(f"/sys/class/net/{name}/ifindex").read_text())
    except (OSError, ValueError):
        return None


def _record_bridge() -> None:
    """Note the kernel bridge behind our network (name and ifindex): it outlives a dockerd
    killed with the run, and only this record lets clean tell it from a foreign link."""
    f = _bridge_record_path()
    cp = run_cmd(["docker", "network", "inspect", "--format",
                  f'{{{{.Id}}}} {{{{index .Labels "{paths.DOCKER_LABEL}"}}}}', NETWORK],
                 timeout=15, check=False)
    nid, _, label = cp.stdout.strip().partition(" ")
    if cp.returncode != 0 or label != "1":
        return  # a network of that name without our label is not ours to remember
    name = f"br-{nid[:12]}"
    ifindex = _ifindex(name)
    if ifindex is None:
        return  # no such bridge (another driver or daemon): nothing of ours to remember
    if f is not None:
        f.with_suffix(".tmp").write_text(json.dumps({"name": name, "ifindex": ifindex}))
        f.with_suffix(".tmp").replace(f)


def _recorded_bridge() -> tuple[str, int] | None:
    """The recorded bridge when a link with that name and ifindex still exists."""
    f = _bridge_record_path()
    if f is None:
        return None
    try:
        rec = json.loads(f.read_text())
        name, ifindex = str(rec["name"]), int(rec["ifindex"])
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return (name, ifindex) if _ifindex(name) == ifindex else None


def _del_bridge(name: str, ifindex: int) -> None:
    if _ifindex(name) == ifindex:  # the same link, not one made since under that name
        run_cmd(["ip", "link", "del", name], timeout=20)
    f = _bridge_record_path()
    if f is not None:
        f.unlink(missing_ok=True)


def _log_tail() -> str:
    state = paths.state_root_if_ours()
    return tail_file(state / "docker" / "dockerd.log", 2000) if state else ""


def runtime_name(platform: str) -> str:
    return f"sandbench-runsc-{platform}"


class DockerDaemon:
    """Finds a running dockerd or starts one the tool owns (and stops it in close())."""

    def __init__(self) -> None:
        self.owned: subprocess.Popen[bytes] | None = None
        #: Sticky facts for meta.json, which is rewritten after close() stopped the daemon.
        self.started_by_us = False
        self.last_version: str | None = None
        self._network_ready = False
        self._had_docker_cgroup = True
        # Asked once per daemon lifetime: each `docker` call costs 10-15 ms, and prepare()
        # runs inside the startup benchmark's timed interval.
        self._answered = False
        self._images: set[str] = set()

    @staticmethod
    def docker() -> str | None:
        return shutil.which("docker")

    def server_version(self) -> str | None:
        exe = self.docker()
        if exe is None:
            return None
        try:
            cp = subprocess.run(
                [exe, "version", "--format", "{{.Server.Version}}"],
                capture_output=True,
                text=True,
                timeout=10,
            )
        except subprocess.TimeoutExpired:
            return None
        version = cp.stdout.strip() if cp.returncode == 0 and cp.stdout.strip() else None
        if version:
            self.last_version = version
        return version

    def runtimes(self) -> dict[str, Any]:
        cp = run_cmd(["docker", "info", "--format", "{{json .Runtimes}}"], timeout=15)
        rt: dict[str, Any] = json.loads(cp.stdout or "{}")
        return rt

    def config(self) -> dict[str, Any]:
        runtimes: dict[str, Any] = {}
        runsc = shutil.which("runsc")
        if runsc:
            wrap = str(wrapper(runsc))
            for p in PLATFORMS:
                runtimes[runtime_name(p)] = {"path": wrap, "runtimeArgs": [f"--platform={p}"]}
        return {
            "runtimes": runtimes,
            "iptables": False,
            "ip-masq": False,
            # No docker0: containers use the tool's own network, removed in close().
            "bridge": "none",
            "exec-opts": ["native.cgroupdriver=cgroupfs"],
            "exec-root": str(exec_root()),
        }

    def ensure(self) -> str:
        """Server version of a dockerd that answers, starting one if none does."""
        if self._answered and self.last_version and (self.owned is None
                                                     or self.owned.poll() is None):
            return self.last_version
        version = self.server_version()
        if version:
            self._answered = True
            return version
        self.forget()  # none answers: what was known of the last daemon is void
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise SandboxError("dockerd not found; install Debian package docker.io")
        d = paths.state("docker")
        if len(str(containerd_socket())) > _SUN_PATH_MAX:
            raise SandboxError(
                f"the state directory {paths.STATE_DIR} is too long for dockerd's containerd "
                f"socket ({containerd_socket()}); use a shorter SANDBENCH_STATE_DIR",
                {"socket": str(containerd_socket())},
            )
        self._had_docker_cgroup = any((h / "docker").is_dir() for h in cgroups.hierarchies())
        if not self._had_docker_cgroup:
            # Lets `sandbench clean` remove the daemon's cgroup parent after a killed run.
            (d / "created-cgroup").write_text("")
        cfg = d / "daemon.json"
        cfg.write_text(json.dumps(self.config(), indent=2))
        log = open(d / "dockerd.log", "ab")  # noqa: SIM115 - handed to the daemon
        self.owned = subprocess.Popen(
            [dockerd, "--config-file", str(cfg), "--pidfile", str(d / "dockerd.pid")],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        me = psutil.Process()
        with contextlib.suppress(psutil.NoSuchProcess):  # an exit is found out just below
            record = {"pid": self.owned.pid,
                      "start": psutil.Process(self.owned.pid).create_time(),
                      "config": str(cfg), "run_pid": me.pid, "run_start": me.create_time()}
            (d / "owned.tmp").write_text(json.dumps(record))
            (d / "owned.tmp").replace(d / "owned")
        self.started_by_us = True
        deadline = time.monotonic() + DAEMON_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.owned.poll() is not None:
                raise SandboxError(f"dockerd exited at start: {tail_file(d / 'dockerd.log')}")
            version = self.server_version()
            if version:
                self._answered = True
                return version
            time.sleep(0.2)
        self.close()
        raise StepTimeout(f"dockerd did not answer within {DAEMON_START_TIMEOUT:g} s")

    def forget(self) -> None:
        """Ask the daemon again next time: after a docker command failed (a daemon not started
        by the tool may have stopped, or its image been removed) or a new daemon started."""
        self._answered = False
        self._images.clear()
        self._network_ready = False

    def ensure_network(self) -> None:
        if self._network_ready:
            return
        cp = run_cmd(["docker", "network", "inspect", NETWORK], timeout=15, check=False)
        if cp.returncode != 0:
            run_cmd(
                [
                    "docker",
                    "network",
                    "create",
                    "--driver",
                    "bridge",
                    "--subnet",
                    SUBNET,
                    "--gateway",
                    GATEWAY,
                    "--label",
                    f"{paths.DOCKER_LABEL}=1",
                    NETWORK,
                ],
                timeout=30,
            )
        if self.owned is not None and self.owned.poll() is None:
            _record_bridge()
        self._network_ready = True

    def ensure_image(self, image: images.Image) -> str:
        if image.tag in self._images:
            return image.tag
        cp = run_cmd(["docker", "image", "inspect", image.tag], timeout=15, check=False)
        if cp.returncode != 0:
            run_cmd(
                [
                    "docker",
                    "import",
                    "--change",
                    f"LABEL {paths.DOCKER_LABEL}=1",
                    str(image.tarball),
                    image.tag,
                ],
                timeout=600,
            )
        self._images.add(image.tag)
        return image.tag

    def shared_pids(self) -> list[int]:
        return [
            p.pid
            for p in psutil.process_iter(["name"])
            if p.info["name"] in ("dockerd", "containerd")
        ]

    def close(self) -> None:
        self.forget()
        if self.owned is None:
            return
        # Our network's bridge link would outlive the daemon: remove it while it answers.
        run_cmd(["docker", "network", "rm", NETWORK], timeout=30, check=False)
        owned, self.owned = self.owned, None
        try:
            proc = psutil.Process(owned.pid)
        except psutil.NoSuchProcess:
            owned.wait(timeout=10)  # reaped below; it exited on its own
            _forget_daemon()
            return
        try:
            stop_owned_dockerd(proc)
        finally:
            with contextlib.suppress(subprocess.TimeoutExpired):
                owned.wait(timeout=1)  # reap our child


DAEMON = DockerDaemon()


class DockerEnvironment(Environment):
    family = "container"

    def __init__(self, platform: str | None) -> None:
        self.platform = platform
        if platform is None:
            self.name = "docker"
            self.description = "Docker Engine, default runtime (runc)"
            self.runtime = "runc"
        else:
            self.name = f"docker-gvisor-{platform}"
            self.description = f"Docker Engine with gVisor runsc, {platform} platform, netstack"
            self.family = "gvisor"
            self.runtime = runtime_name(platform)
        self.daemon = DAEMON

    def _gvisor(self) -> OciEnvironment:
        assert self.platform is not None
        return OciEnvironment(
            Variant(f"gvisor-{self.platform}", "runsc", "", platform=self.platform)
        )

    def available(self) -> Availability:
        if shutil.which("docker") is None or shutil.which("dockerd") is None:
            return Availability.no(
                "docker/dockerd not found; install Debian package docker.io (scripts/setup.sh)"
            )
        if self.platform is not None:
            direct = self._gvisor().available()
            if not direct.ok:
                return direct
        foreign = self.daemon.owned is None and self.daemon.server_version() is not None
        if foreign and self.platform is not None and self.runtime not in self.daemon.runtimes():
            entry = {self.runtime: self.daemon.config()["runtimes"].get(self.runtime)}
            return Availability.no(
                f"a dockerd not started by sandbench is running without runtime "
                f"{self.runtime}; register it in /etc/docker/daemon.json as "
                f"{json.dumps(entry)} or stop that dockerd so sandbench starts its own"
            )
        return Availability.yes()

    def facts(self) -> dict[str, Any]:
        f: dict[str, Any] = {
            "binary": shutil.which("dockerd"),
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
        self.daemon.ensure_network()

    def prepare(self, spec: SandboxSpec) -> DockerSandbox:
        self.setup()  # cached once done; callers outside the runner get it here
        tag = self.daemon.ensure_image(images.ensure(spec.image))
        return DockerSandbox(self, spec, tag)

    def close(self) -> None:
        self.daemon.close()

    def leftovers(self) -> list[Leftover]:
        """Labelled containers and networks of killed runs in the daemon that answers, and
        the dockerd sandbench started (with everything carrying its exec root's mark) when
        the run that started it is gone. The Docker environments share one daemon: the
        plain one lists for all. Images are a cache, like the image directory: kept."""
        if self.platform is not None or shutil.which("docker") is None:
            return []
        found: list[Leftover] = []
        live = paths.live_ids()
        answers = self.daemon.server_version() is not None
        if answers:
            label = f"label={paths.DOCKER_LABEL}"
            cp = run_cmd(["docker", "ps", "-a", "--filter", label, "--format",
                          "{{.ID}} {{.Names}}"], timeout=30)
            for line in cp.stdout.splitlines():
                cid, _, name = line.partition(" ")
                # Containers inherit the label from the tool's image: a foreign container
                # made from it has the label too, so the name (a sandbox id) must match.
                if cid and paths.is_sandbox_id(name) and name not in live:
                    found.append(Leftover("docker container", f"{cid} {name}",
                                          partial(_docker_rm, cid)))
            cp = run_cmd(["docker", "network", "ls", "--filter", label, "--format",
                          "{{.ID}} {{.Name}}"], timeout=30)
            for line in cp.stdout.splitlines():
                nid, _, name = line.partition(" ")
                if nid and self.daemon.owned is None:  # this process's run still uses it
                    found.append(Leftover("docker network", f"{nid} {name}",
                                          partial(_docker_network_rm, nid)))
        rec = _owned_record()
        if rec is not None and _same_process(rec.get("run_pid"), rec.get("run_start")):
            return found  # the run that started it still runs
        bridge = _recorded_bridge()
        if bridge is not None and not answers:
            # Our daemon died (or stopped) without removing its network's kernel bridge.
            found.append(Leftover("link", f"{bridge[0]} (bridge of sandbench's dockerd)",
                                  partial(_del_bridge, *bridge)))
        if rec is None:
            return found
        proc = owned_dockerd()
        if proc is not None:
            found.append(Leftover("dockerd", f"{proc.pid} started by sandbench",
                                  partial(stop_owned_dockerd, proc)))
            return found
        for p in _marked_processes():
            with contextlib.suppress(psutil.Error):
                found.append(Leftover("process", f"{p.pid} {p.name()} (sandbench's dockerd)",
                                      partial(procs.kill_exact, p.pid, p.create_time())))
        found.append(Leftover("state", "record of sandbench's dockerd (exited)",
                              _forget_daemon))
        return found


def _docker_rm(cid: str) -> None:
    run_cmd(["docker", "rm", "--force", cid], timeout=STOP_TIMEOUT)


def _docker_network_rm(nid: str) -> None:
    run_cmd(["docker", "network", "rm", nid], timeout=STOP_TIMEOUT)


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
            cp = run_cmd(
                [
                    "docker",
                    "inspect",
                    "--format",
                    '{{(index .NetworkSettings.Networks "' + NETWORK + '").IPAddress}}',
                    self.name,
                ],
                timeout=15,
            )
            self._address = cp.stdout.strip()
        return self._address

    def launch(self, argv: list[str] | None = None) -> None:
        """`docker create`, mark("created"), `docker start`: the same phase boundaries as the
        OCI runtimes. Docker's network namespace is made inside start (libnetwork joins the
        container to its network when it starts), so start holds what runc's prepare does."""
        args = argv or self.spec.argv or IDLE_ARGV
        cmd = [
            "docker",
            "create",
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
        self._docker(["docker", "start", self.name], "start")

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
        cp = run_cmd(["docker", "exec", self.name, *argv], timeout=timeout, check=False)
        return Completed(argv, cp.returncode, cp.stdout, cp.stderr)

    def describe_state(self) -> str:
        if not self.launched:
            return "not created"
        cp = run_cmd(["docker", "inspect", "--format", "{{json .State}}", self.name],
                     timeout=15, check=False)
        return (cp.stdout or cp.stderr).strip()[-1000:]

    # docker pause: the cgroup freezer for runc, `runsc pause` through the shim for gVisor.
    # SIGSTOP of host_pids would also stop the containerd shim and leave docker hanging.
    def _pause(self) -> bool:
        if not self.container_id:
            return False
        run_cmd(["docker", "pause", self.name], timeout=STOP_TIMEOUT)
        return True

    def _resume(self) -> None:
        run_cmd(["docker", "unpause", self.name], timeout=STOP_TIMEOUT)

    def limits_enforced(self) -> dict[str, Any]:
        lim = self.spec.limits
        if (lim.cpus is None and lim.memory_mib is None) or not self.container_id:
            return {}
        cp = run_cmd(["docker", "inspect", "--format", "{{.State.Pid}}", self.name],
                     timeout=15)
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
        argv = ["docker", "rm", "--force", self.name]
        cp = run_cmd(argv, timeout=STOP_TIMEOUT, check=False)
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

"""The Docker daemon sandbench starts and owns: its own store, socket, containerd and bridge.

Nothing of a Docker installation the user may have is read or changed. Everything lives under
the marked state directory, STATE/docker/:

  docker.sock       the API socket (never /var/run/docker.sock)
  data/             dockerd's data-root (images, containers, networks), removed at the end
  exec/             dockerd's exec-root; exec/containerd/ holds our containerd's socket and state
  containerd.toml   our containerd's config: dockerd would otherwise use the system containerd
                    whenever /run/containerd/containerd.sock exists
  owned, containerd-owned   pid and start time of each daemon and of the run that started it

The daemon's default bridge is `sbdocker0`, a link sandbench creates with the alias below (the
link's own mark) and 198.19.0.1/24 (net.DOCKER_BIP), so Docker never touches docker0: the
"bridge": "none" setting would delete docker0 by name. IP forwarding, iptables and
masquerading stay off: the host's settings are not changed.

A dockerd the user runs is measured only when they name it (SANDBENCH_DOCKER_HOST); the facts
then say so. The client is the one packaged with the dockerd that is started (Debian's
/usr/bin/docker beside /usr/sbin/dockerd), not whichever `docker` comes first on PATH.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil

from sandbench import cgroups, images, net, paths, procs, settings
from sandbench.cgroups import remove_empty_cgroups
from sandbench.environments.base import Leftover, run_cmd, tail_file
from sandbench.environments.runsc_wrap import wrapper
from sandbench.errors import SandboxError, StepTimeout

DAEMON_START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
PLATFORMS = ("ptrace", "systrap", "kvm")
#: The default bridge of sandbench's dockerd, and the mark it carries (IFLA_IFALIAS).
BRIDGE = "sbdocker0"
BRIDGE_ALIAS = "made by sandbench for its dockerd"
#: Containers join the daemon's default network, whose bridge is BRIDGE.
NETWORK = "bridge"
GATEWAY = net.DOCKER_BIP.split("/")[0]
#: A unix socket path must fit in sun_path (108 bytes with the terminating zero).
_SUN_PATH_MAX = 107


def runtime_name(platform: str) -> str:
    return f"sandbench-runsc-{platform}"


def _dir() -> Path:
    return paths.STATE_DIR / "docker"


def exec_root() -> Path:
    """dockerd's exec root: the containerd we start keeps its socket and state below it, and
    every shim is given that socket as -address."""
    return _dir() / "exec"


def data_root() -> Path:
    return _dir() / "data"


def socket_path() -> Path:
    return _dir() / "docker.sock"


def containerd_socket() -> Path:
    return exec_root() / "containerd" / "containerd.sock"


def external_host() -> str | None:
    """The daemon the user asked to measure with (SANDBENCH_DOCKER_HOST), or None."""
    v = settings.value("SANDBENCH_DOCKER_HOST")
    return v.strip() if v and v.strip() else None


def client() -> str | None:
    """The docker client packaged with the dockerd we drive: beside it (…/sbin/dockerd ->
    …/bin/docker), else the first on PATH."""
    dockerd = shutil.which("dockerd")
    if dockerd:
        d = Path(dockerd).resolve().parent
        for cand in (d / "docker", d.parent / "bin" / "docker"):
            if cand.is_file() and os.access(cand, os.X_OK):
                return str(cand)
    return shutil.which("docker")


def cli(*args: str) -> list[str]:
    """argv of a docker command against sandbench's daemon (or the one the user named)."""
    host = external_host() or f"unix://{socket_path()}"
    return [client() or "docker", "-H", host, *args]


def docker(*args: str, timeout: float = 30, check: bool = True
           ) -> subprocess.CompletedProcess[str]:
    return run_cmd(cli(*args), timeout=timeout, check=check)


# -- records -----------------------------------------------------------------------------------


def _record(name: str) -> dict[str, Any] | None:
    """A daemon record under the marked state dir (owned, containerd-owned), if any; {} when
    torn or of an old format (trusted for nothing)."""
    state = paths.state_root_if_ours()
    f = state / "docker" / name if state else None
    if f is None or not f.is_file():
        return None
    try:
        rec = json.loads(f.read_text())
        return rec if isinstance(rec, dict) and isinstance(rec.get("pid"), int) else {}
    except ValueError:
        return {}


def _write_record(name: str, proc: subprocess.Popen[bytes], config: Path) -> None:
    me = psutil.Process()
    with contextlib.suppress(psutil.NoSuchProcess):  # an exit is found out by the caller
        rec = {"pid": proc.pid, "start": psutil.Process(proc.pid).create_time(),
               "config": str(config), "run_pid": me.pid, "run_start": me.create_time()}
        tmp = _dir() / f"{name}.tmp"
        tmp.write_text(json.dumps(rec))
        tmp.replace(_dir() / name)


def _same_process(pid: Any, start: Any) -> psutil.Process | None:
    try:
        proc = psutil.Process(int(pid))
        return proc if abs(proc.create_time() - float(start)) < 0.01 else None
    except (psutil.NoSuchProcess, TypeError, ValueError):
        return None


def _recorded_daemon(name: str, exe: str, option: str) -> psutil.Process | None:
    """The process a record names, only when it lives with the recorded start time, has the
    expected name and was started with the recorded config file."""
    rec = _record(name)
    if not rec:
        return None
    proc = _same_process(rec.get("pid"), rec.get("start"))
    try:
        if proc is None or proc.name() != exe:
            return None
        return proc if procs.has_option(proc.cmdline(), option, str(rec.get("config"))) else None
    except psutil.Error:
        return None


def owned_dockerd() -> psutil.Process | None:
    return _recorded_daemon("owned", "dockerd", "--config-file")


def owned_containerd() -> psutil.Process | None:
    return _recorded_daemon("containerd-owned", "containerd", "--config")


def run_alive() -> bool:
    """Whether the run that started the recorded daemon still runs."""
    rec = _record("owned") or _record("containerd-owned")
    if not rec:
        return False
    return _same_process(rec.get("run_pid"), rec.get("run_start")) is not None


def marked_processes() -> list[psutil.Process]:
    """Processes of our containerd by their exact marks: its shims (`-address <our socket>`)
    and the runtimes they run with our state roots. A path in an argv is not enough: a user's
    `tail -f` of a file in the state directory is not ours."""
    sock = str(containerd_socket())
    root = str(exec_root())
    found = []
    for pid, name, _created, argv in procs.all_processes():
        if pid == os.getpid():
            continue
        ours = (name.startswith("containerd-shim") and procs.has_option(argv, "-address", sock)) \
            or (name in ("runc", "runsc", "crun")
                and any(procs.has_option(argv, o, v) for o in ("--root", "-root")
                        for v in _runtime_roots(root)))
        if ours:
            with contextlib.suppress(psutil.NoSuchProcess):
                found.append(psutil.Process(pid))
    return found


def _runtime_roots(root: str) -> list[str]:
    base = Path(root) / "runtime-runc" / "moby"
    return [str(base), *(str(Path(root) / f"runtime-{runtime_name(p)}" / "moby")
                         for p in PLATFORMS)]


# -- the bridge --------------------------------------------------------------------------------


def _link_alias(name: str) -> str | None:
    try:
        return Path(f"/sys/class/net/{name}/ifalias").read_text().strip()
    except OSError:
        return None


def _bridge_record() -> Path:
    return _dir() / "bridge"


def our_bridge() -> bool:
    """BRIDGE exists and is ours: it carries our alias, or (a run killed between creating it
    and marking it) the record written before it was made names it with no alias set yet.
    A foreign link of that name is never ours."""
    alias = _link_alias(BRIDGE)
    if alias is None:
        return False
    if alias == BRIDGE_ALIAS:
        return True
    state = paths.state_root_if_ours()
    return alias == "" and state is not None and (state / "docker" / "bridge").is_file()


def _make_bridge() -> None:
    if our_bridge():
        run_cmd(["ip", "link", "del", BRIDGE], timeout=20)  # a killed run's: made anew
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        raise SandboxError(
            f"a network link named {BRIDGE} exists and was not made by sandbench (no alias "
            f"{BRIDGE_ALIAS!r}); remove or rename it so sandbench's dockerd can use that name",
            {"link": BRIDGE})
    # Recorded before it is made, marked (alias) right after: the kernel ignores an alias
    # given with `ip link add`, so there is an instant when only the record says it is ours.
    _bridge_record().write_text(BRIDGE + "\n")
    run_cmd(["ip", "link", "add", "name", BRIDGE, "type", "bridge"], timeout=20)
    run_cmd(["ip", "link", "set", BRIDGE, "alias", BRIDGE_ALIAS], timeout=20)
    run_cmd(["ip", "addr", "add", net.DOCKER_BIP, "dev", BRIDGE], timeout=20)
    run_cmd(["ip", "link", "set", BRIDGE, "up"], timeout=20)


def del_bridge() -> None:
    if our_bridge():
        run_cmd(["ip", "link", "del", BRIDGE], timeout=20)
    with contextlib.suppress(OSError):
        _bridge_record().unlink()


# -- mounts and the store ----------------------------------------------------------------------


def _mounts_below(root: Path) -> list[str]:
    prefix = str(root).rstrip("/") + "/"
    found = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            mnt = line.split()[4].replace("\\040", " ")
            if mnt.startswith(prefix) or mnt == str(root):
                found.append(mnt)
    return sorted(set(found), key=len, reverse=True)


def remove_store() -> None:
    """Unmount what the daemons left under their roots, then remove data and exec roots."""
    for root in (data_root(), exec_root()):
        for m in _mounts_below(root):
            run_cmd(["umount", "-l", m], timeout=30, check=False)
        shutil.rmtree(root, ignore_errors=True)


#: Directories the daemons make outside their roots, whatever their config says: containerd's
#: shim sockets (hard-coded in containerd 1.6) and dockerd's plugin discovery directory.
#: Those that did not exist before our daemons started are removed with them (when empty).
DAEMON_MADE_DIRS = (Path("/run/containerd/s"), Path("/run/containerd"),
                    Path("/run/docker/plugins"), Path("/run/docker"))


def _record_missing_dirs() -> None:
    missing = [str(d) for d in DAEMON_MADE_DIRS if not d.exists()]
    (_dir() / "created-system-dirs").write_text("".join(f"{m}\n" for m in missing))


def _remove_made_dirs(d: Path) -> None:
    f = d / "created-system-dirs"
    if not f.is_file():
        return
    made = set(f.read_text().split())
    for p in DAEMON_MADE_DIRS:  # deepest first
        if str(p) in made:
            with contextlib.suppress(OSError):  # not empty: someone else's now, kept
                p.rmdir()
    f.unlink(missing_ok=True)


def forget_daemon() -> None:
    """The daemons are gone: their store, bridge, cgroup parent (when we made it) and records
    go too."""
    state = paths.state_root_if_ours()
    if state is None:
        return
    d = state / "docker"
    remove_store()
    del_bridge()
    _remove_made_dirs(d)
    if (d / "created-cgroup").exists():
        remove_empty_cgroups("docker")
        (d / "created-cgroup").unlink(missing_ok=True)
    (d / "owned").unlink(missing_ok=True)
    (d / "containerd-owned").unlink(missing_ok=True)
    (d / "dockerd.pid").unlink(missing_ok=True)
    socket_path().unlink(missing_ok=True)


def stop_daemons(timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM our dockerd, then our containerd; wait for them and what carries their marks;
    SIGKILL those left; remove the store. Raises SandboxError naming survivors."""
    survivors: list[int] = []
    for find in (owned_dockerd, owned_containerd):
        proc = find()
        marked = marked_processes()
        if proc is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.terminate()
        _gone, alive = psutil.wait_procs([*([proc] if proc else []), *marked],
                                         timeout=timeout)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        _gone, alive = psutil.wait_procs(alive, timeout=10)
        survivors += [p.pid for p in alive]
    if survivors:
        raise SandboxError(f"{len(survivors)} process(es) of sandbench's dockerd survived SIGKILL",
                           {"pids": survivors, "dockerd_log": log_tail()})
    forget_daemon()


def log_tail() -> str:
    state = paths.state_root_if_ours()
    return tail_file(state / "docker" / "dockerd.log", 2000) if state else ""


class DockerDaemon:
    """sandbench's own dockerd (started on first use, stopped in close()), or the daemon the
    user named in SANDBENCH_DOCKER_HOST."""

    def __init__(self) -> None:
        self.owned: subprocess.Popen[bytes] | None = None
        self.containerd: subprocess.Popen[bytes] | None = None
        #: Sticky facts for meta.json, which is rewritten after close() stopped the daemon.
        self.started_by_us = False
        self.last_version: str | None = None
        # Asked once per daemon lifetime: each `docker` call costs 10-15 ms, and prepare()
        # runs inside the startup benchmark's timed interval.
        self._answered = False
        self._images: set[str] = set()
        self._had_docker_cgroup = True

    @staticmethod
    def docker() -> str | None:
        return client()

    def client_version(self) -> str | None:
        exe = client()
        if exe is None:
            return None
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            cp = subprocess.run([exe, "version", "--format", "{{.Client.Version}}"],
                                capture_output=True, text=True, timeout=10)
            return cp.stdout.strip() or None
        return None

    def server_version(self) -> str | None:
        if client() is None:
            return None
        if external_host() is None and not socket_path().exists():
            return None  # ours is not running: no need to ask
        try:
            cp = subprocess.run(cli("version", "--format", "{{.Server.Version}}"),
                                capture_output=True, text=True, timeout=10)
        except subprocess.TimeoutExpired:
            return None
        version = cp.stdout.strip() if cp.returncode == 0 and cp.stdout.strip() else None
        if version:
            self.last_version = version
        return version

    def runtimes(self) -> dict[str, Any]:
        cp = docker("info", "--format", "{{json .Runtimes}}", timeout=15)
        rt: dict[str, Any] = json.loads(cp.stdout or "{}")
        return rt

    def which(self) -> str:
        """Which daemon measures, for the facts and the report."""
        host = external_host()
        if host:
            return f"the user's dockerd at {host} (SANDBENCH_DOCKER_HOST), its own store"
        return (f"sandbench's own dockerd ({socket_path()}, data-root {data_root()}, its own "
                f"containerd, bridge {BRIDGE} {net.DOCKER_BIP})")

    def config(self) -> dict[str, Any]:
        runtimes: dict[str, Any] = {}
        runsc = shutil.which("runsc")
        if runsc:
            wrap = str(wrapper(runsc))
            for p in PLATFORMS:
                runtimes[runtime_name(p)] = {"path": wrap, "runtimeArgs": [f"--platform={p}"]}
        return {
            "runtimes": runtimes,
            "hosts": [f"unix://{socket_path()}"],
            "data-root": str(data_root()),
            "exec-root": str(exec_root()),
            "pidfile": str(_dir() / "dockerd.pid"),
            "containerd": str(containerd_socket()),
            "bridge": BRIDGE,
            "default-address-pools": [{"base": "198.19.128.0/17", "size": 24}],
            "iptables": False,
            "ip6tables": False,
            "ip-masq": False,
            "ip-forward": False,
            "userland-proxy": False,
            "live-restore": False,
            "exec-opts": ["native.cgroupdriver=cgroupfs"],
        }

    def containerd_config(self) -> str:
        state = exec_root() / "containerd"
        return "\n".join([
            "version = 2",
            f'root = "{data_root() / "containerd"}"',
            f'state = "{state / "daemon"}"',
            # Docker needs none of the CRI plugin; dockerd's own supervisor disables it too.
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
            "[grpc]",
            f'  address = "{containerd_socket()}"',
            "[ttrpc]",
            f'  address = "{containerd_socket()}.ttrpc"',
            "[debug]",
            f'  address = "{state / "debug.sock"}"',
            "[metrics]",
            '  address = ""',
            "",
        ])

    def ensure(self) -> str:
        """Server version of the daemon that measures, starting ours if it is not running."""
        if self._answered and self.last_version and (self.owned is None
                                                     or self.owned.poll() is None):
            return self.last_version
        if external_host():
            version = self.server_version()
            if version is None:
                raise SandboxError(f"no dockerd answers at SANDBENCH_DOCKER_HOST="
                                   f"{external_host()}; start it or unset the setting")
            self._answered = True
            return version
        if self.owned is not None and self.owned.poll() is None:
            version = self.server_version()
            if version:
                self._answered = True
                return version
        self.forget()
        for exe in ("dockerd", "containerd"):
            if shutil.which(exe) is None:
                raise SandboxError(f"{exe} not found; install Debian packages docker.io and "
                                   "containerd (scripts/setup.sh)")
        d = paths.state("docker")
        if len(str(containerd_socket()) + ".ttrpc") > _SUN_PATH_MAX:
            raise SandboxError(
                f"the state directory {paths.STATE_DIR} is too long for dockerd's containerd "
                f"socket ({containerd_socket()}); use a shorter SANDBENCH_STATE_DIR",
                {"socket": str(containerd_socket())},
            )
        if owned_dockerd() or owned_containerd():
            stop_daemons()  # a killed run's daemons: never two on one store
        forget_daemon()
        self._had_docker_cgroup = any((h / "docker").is_dir() for h in cgroups.hierarchies())
        if not self._had_docker_cgroup:
            # Lets `sandbench clean` remove the daemon's cgroup parent after a killed run.
            (d / "created-cgroup").write_text("")
        _record_missing_dirs()
        _make_bridge()
        self.started_by_us = True
        try:
            self._start_containerd(d)
            return self._start_dockerd(d)
        except BaseException:
            self.close()
            raise

    def _spawn(self, argv: list[str], log_name: str, record: str,
               config: Path) -> subprocess.Popen[bytes]:
        log = open(_dir() / log_name, "ab")  # noqa: SIM115 - handed to the daemon
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)
        log.close()
        _write_record(record, proc, config)
        return proc

    def _start_containerd(self, d: Path) -> None:
        cfg = d / "containerd.toml"
        cfg.write_text(self.containerd_config())
        containerd_socket().parent.mkdir(parents=True, exist_ok=True)
        self.containerd = self._spawn(["containerd", "--config", str(cfg)], "containerd.log",
                                      "containerd-owned", cfg)
        deadline = time.monotonic() + DAEMON_START_TIMEOUT
        while not containerd_socket().exists():
            if self.containerd.poll() is not None:
                raise SandboxError("sandbench's containerd exited at start: "
                                   f"{tail_file(d / 'containerd.log')}")
            if time.monotonic() > deadline:
                raise StepTimeout(f"containerd made no socket within {DAEMON_START_TIMEOUT:g} s")
            time.sleep(0.05)

    def _start_dockerd(self, d: Path) -> str:
        cfg = d / "daemon.json"
        cfg.write_text(json.dumps(self.config(), indent=2))
        dockerd = shutil.which("dockerd") or "dockerd"
        self.owned = self._spawn([dockerd, "--config-file", str(cfg)], "dockerd.log", "owned",
                                 cfg)
        deadline = time.monotonic() + DAEMON_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.owned.poll() is not None:
                raise SandboxError(f"dockerd exited at start: {tail_file(d / 'dockerd.log')}")
            version = self.server_version()
            if version:
                self._answered = True
                return version
            time.sleep(0.2)
        raise StepTimeout(f"dockerd did not answer within {DAEMON_START_TIMEOUT:g} s")

    def forget(self) -> None:
        """Ask the daemon again next time: after a docker command failed (a daemon not started
        by the tool may have stopped, or its image been removed) or a new daemon started."""
        self._answered = False
        self._images.clear()

    def ensure_image(self, image: images.Image) -> str:
        if image.tag in self._images:
            return image.tag
        cp = docker("image", "inspect", image.tag, timeout=15, check=False)
        if cp.returncode != 0:
            docker("import", "--change", f"LABEL {paths.DOCKER_LABEL}=1", str(image.tarball),
                   image.tag, timeout=600)
        self._images.add(image.tag)
        return image.tag

    def shared_pids(self) -> list[int]:
        return [p.pid for p in (owned_dockerd(), owned_containerd()) if p is not None]

    def close(self) -> None:
        """Stop our daemons and remove their store and bridge (nothing for a user's daemon)."""
        self.forget()
        owned, self.owned = self.owned, None
        ctd, self.containerd = self.containerd, None
        if owned is None and ctd is None:
            return
        try:
            stop_daemons()
        finally:
            for p in (owned, ctd):
                if p is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        p.wait(timeout=1)  # reap our children

    def leftovers(self) -> list[Leftover]:
        """What a killed run left of its daemons: the daemons themselves (stopped gracefully,
        store removed), processes with their exact marks, the bridge, the store, records."""
        if self.owned is not None or run_alive():
            return []  # this process's daemon, or a live run's
        found: list[Leftover] = []
        dockerd, ctd = owned_dockerd(), owned_containerd()
        for p, what in ((dockerd, "dockerd"), (ctd, "containerd")):
            if p is not None:
                found.append(Leftover(what, f"{p.pid} started by sandbench", stop_daemons))
        if found:
            return found[:1]  # one stop takes both daemons and their store
        for p in marked_processes():
            with contextlib.suppress(psutil.Error):
                found.append(Leftover("process", f"{p.pid} {p.name()} (sandbench's dockerd)",
                                      _kill(p)))
        if our_bridge():
            found.append(Leftover("link", f"{BRIDGE} (bridge of sandbench's dockerd)",
                                  del_bridge))
        state = paths.state_root_if_ours()
        if state is not None and any((state / "docker" / n).exists()
                                     for n in ("owned", "containerd-owned", "data", "exec",
                                               "created-system-dirs")):
            found.append(Leftover("state", "store and records of sandbench's dockerd",
                                  forget_daemon))
        return found


def _kill(p: psutil.Process) -> Any:
    created = p.create_time()
    return lambda: procs.kill_exact(p.pid, created)


DAEMON = DockerDaemon()

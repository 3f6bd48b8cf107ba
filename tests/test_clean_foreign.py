"""`sandbench clean` and a run's teardown touch only what carries sandbench's mark.

The foreign objects below are made by the test and look like sandbench's to a careless
matcher: a process called containerd-shim-runc-v2, an sbackup/ directory (and one named
like a volume, without an owner file) in the volume directory, cgroups named like a sandbox
outside sandbench/, a network namespace and a veth named like a sandbox without an owner
record, and (where Docker runs) a container without sandbench's label. All of them must
survive a clean, a kill -9 of a run followed by clean, and a run's own teardown.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from sandbench import cgroups, paths, volume
from sandbench.results import read_failures
from tests.conftest import REPO, SANDBENCH, assert_same_host, env_or_skip, host_state, run_cli

pytestmark = pytest.mark.runtime

FOREIGN_ID = "sb0f0f0f0f0f"  # sandbench's name pattern, but no owner record


@dataclass
class Foreign:
    shim: subprocess.Popen[bytes]
    backup: Path
    lookalike_volume: Path
    cgroup_dirs: list[Path] = field(default_factory=list)
    netns: str = FOREIGN_ID
    link: str = f"{FOREIGN_ID}h"

    def check_intact(self, clean_output: str = "") -> None:
        assert self.shim.poll() is None, "a foreign containerd-shim-runc-v2 was killed"
        assert (self.backup / "precious.txt").read_text() == "user data\n"
        assert self.lookalike_volume.is_dir()
        for d in self.cgroup_dirs:
            assert d.is_dir(), f"foreign cgroup {d} removed"
        assert self.netns in os.listdir("/var/run/netns"), "foreign namespace removed"
        assert Path(f"/sys/class/net/{self.link}").exists(), "foreign veth removed"
        for name in (FOREIGN_ID, "sbackup", str(self.shim.pid)):
            assert name not in clean_output, f"clean listed foreign {name}: {clean_output}"


@pytest.fixture
def foreign(tmp_path: Path) -> Iterator[Foreign]:
    assert paths.owner(FOREIGN_ID) is None
    exe = tmp_path / "containerd-shim-runc-v2"
    shutil.copy("/bin/sleep", exe)
    shim = subprocess.Popen([str(exe), "3600"], start_new_session=True)
    vroot = volume.VOLUME_ROOT
    paths.owned_dir(vroot, "SANDBENCH_VOLUME_DIR", adopt=vroot == volume.DEFAULT_ROOT)
    backup = vroot / "sbackup"
    backup.mkdir(exist_ok=True)
    (backup / "precious.txt").write_text("user data\n")
    lookalike = vroot / FOREIGN_ID  # a volume's name, but no owner file
    lookalike.mkdir(exist_ok=True)
    f = Foreign(shim, backup, lookalike)
    for h in cgroups.mounted():
        if h.version == 2 or h.controllers & {"pids", "cpu"}:
            d = h.path / FOREIGN_ID
            d.mkdir(exist_ok=True)
            f.cgroup_dirs.append(d)
    subprocess.run(["ip", "netns", "add", f.netns], check=True)
    subprocess.run(["ip", "link", "add", f.link, "type", "veth", "peer", "name",
                    f"{FOREIGN_ID}c"], check=True)
    try:
        yield f
    finally:
        shim.kill()
        shim.wait()
        shutil.rmtree(backup, ignore_errors=True)
        shutil.rmtree(lookalike, ignore_errors=True)
        for d in f.cgroup_dirs:
            d.rmdir()
        subprocess.run(["ip", "netns", "del", f.netns], check=False)
        subprocess.run(["ip", "link", "del", f.link], check=False, capture_output=True)


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*SANDBENCH, *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(pred: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(pred) and pred():
            return True
        time.sleep(0.05)
    return False


def test_clean_spares_foreign_objects(foreign: Foreign) -> None:
    cp = run_cli("clean", timeout=300)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    foreign.check_intact(cp.stdout)


def test_run_teardown_spares_foreign_objects(foreign: Foreign, tmp_path: Path) -> None:
    env_or_skip("runc")
    before = host_state()
    cp = run_cli("run", "--env", "runc", "--bench", "startup", "--rounds", "3",
                 "--out", str(tmp_path / "run"), "--no-report", timeout=600)
    assert cp.returncode == 0, cp.stderr
    foreign.check_intact()
    assert_same_host(before, host_state())


def test_kill_9_then_clean_spares_foreign_objects(foreign: Foreign, tmp_path: Path) -> None:
    env_or_skip("runc")
    before = host_state()
    proc = _start("run", "--env", "runc", "--bench", "memory", "--out", str(tmp_path / "r"),
                  "--no-report")
    assert _wait_for(lambda: len(host_state()["netns"] - before["netns"]) >= 2, 180)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert host_state()["netns"] - before["netns"], "the kill should leave sandboxes behind"
    cp = run_cli("clean", timeout=300)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "removed: netns sb" in cp.stdout
    foreign.check_intact(cp.stdout)
    assert_same_host(before, host_state())
    again = run_cli("clean", "--dry-run", timeout=120)
    assert "nothing left behind" in again.stdout, again.stdout


def test_clean_spares_unlabelled_docker_container(tmp_path: Path) -> None:
    env = env_or_skip("docker")
    from sandbench import images
    from sandbench.environments.docker_daemon import DAEMON, cli

    DAEMON.ensure()
    tag = DAEMON.ensure_image(images.ensure("minimal"))
    name = f"foreign-{os.getpid()}"
    subprocess.run(cli("create", "--name", name, tag, "/sb/probe", "idle"),
                   check=True, capture_output=True, timeout=60)
    try:
        cp = run_cli("clean", timeout=300)
        assert cp.returncode == 0, cp.stdout + cp.stderr
        st = subprocess.run(cli("inspect", "--format", "{{.Name}}", name),
                            capture_output=True, text=True, timeout=30)
        assert st.returncode == 0 and name in st.stdout, "the unlabelled container was removed"
        assert name not in cp.stdout
    finally:
        subprocess.run(cli("rm", "--force", name), capture_output=True, timeout=60)
        env.close()


def test_stale_dockerd_record_is_not_trusted(tmp_path: Path) -> None:
    """A record naming a live process called dockerd that sandbench did not start (another
    config, or another start time) is not sandbench's daemon: clean leaves it alone."""
    from sandbench.environments import docker_daemon

    exe = tmp_path / "dockerd"
    shutil.copy("/bin/sleep", exe)
    fake = subprocess.Popen([str(exe), "3600"], start_new_session=True)
    d = paths.state("docker")
    owned = d / "owned"
    saved = owned.read_bytes() if owned.exists() else None
    try:
        start = psutil.Process(fake.pid).create_time()
        owned.write_text(f'{{"pid": {fake.pid}, "start": {start!r}, "config": '
                         f'"{d}/daemon.json", "run_pid": 999999999, "run_start": 0}}')
        assert docker_daemon.owned_dockerd() is None
        owned.write_text(str(fake.pid))  # the old format: a bare pid
        assert docker_daemon.owned_dockerd() is None
        cp = run_cli("clean", "--dry-run", timeout=120)
        assert f"dockerd {fake.pid}" not in cp.stdout
        assert fake.poll() is None
    finally:
        if saved is None:
            owned.unlink(missing_ok=True)
        else:
            owned.write_bytes(saved)
        fake.kill()
        fake.wait()


_START_DAEMON = """
import time
from sandbench.environments.docker_daemon import DAEMON, owned_containerd
DAEMON.ensure()
print(DAEMON.owned.pid, owned_containerd().pid, flush=True)
time.sleep(600)
"""


def _start_daemon_in_child() -> tuple[subprocess.Popen[str], int, int]:
    child = subprocess.Popen([sys.executable, "-c", _START_DAEMON],
                             cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    dockerd, containerd = map(int, child.stdout.readline().split())
    return child, dockerd, containerd


def test_kill_9_of_run_and_dockerd_then_clean_removes_daemon_store_bridge(tmp_path: Path
                                                                         ) -> None:
    """sandbench's dockerd and the run that started it die by SIGKILL: its containerd, its
    store's mounts and its bridge outlive both. clean removes them all (the daemons by their
    records, the bridge by its mark); a foreign bridge named like Docker's survives."""
    env_or_skip("docker")
    from sandbench.environments import docker_daemon as dd

    before = host_state()
    lookalike = "br-0f0f0f0f0f0f"
    child, dockerd, containerd = _start_daemon_in_child()
    try:
        assert dd.our_bridge(), "sandbench's dockerd runs on its own marked bridge"
        assert dd.BRIDGE not in before["links"]
        subprocess.run(["ip", "link", "add", lookalike, "type", "bridge"], check=True)
        os.kill(dockerd, signal.SIGKILL)
        child.kill()
        child.wait(timeout=30)
        assert _wait_for(lambda: not psutil.pid_exists(dockerd), 30)
        assert psutil.pid_exists(containerd), "its containerd outlives the kill"
        cp = run_cli("clean", timeout=300)
        assert cp.returncode == 0, cp.stdout + cp.stderr
        assert f"containerd {containerd} started by sandbench" in cp.stdout, cp.stdout
        assert not psutil.pid_exists(containerd)
        assert not Path(f"/sys/class/net/{dd.BRIDGE}").exists()
        assert not dd.data_root().exists() and not dd.exec_root().exists()
        assert Path(f"/sys/class/net/{lookalike}").exists(), "foreign bridge removed"
        assert lookalike not in cp.stdout
    finally:
        child.kill()
        subprocess.run(["ip", "link", "del", lookalike], check=False, capture_output=True)
    assert_same_host(before, host_state())
    again = run_cli("clean", "--dry-run", timeout=120)
    assert "nothing left behind" in again.stdout, again.stdout


def test_teardown_fault_fails_the_cell_with_evidence_then_clean(tmp_path: Path) -> None:
    """A runtime whose delete fails: the cell fails with the evidence, the study finishes,
    and clean (with the real runtime) leaves nothing."""
    env_or_skip("runc")
    real = shutil.which("runc")
    assert real
    bindir = tmp_path / "bin"
    bindir.mkdir()
    wrapper = bindir / "runc"
    wrapper.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do [ "$a" = delete ] && { echo "injected delete fault" >&2; exit 1; }; '
        "done\n"
        f'exec {real} "$@"\n'
    )
    wrapper.chmod(0o755)
    before = host_state()
    out = tmp_path / "run"
    envp = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    cp = run_cli("run", "--env", "runc", "--bench", "startup", "--rounds", "2", "--out",
                 str(out), "--no-report", env=envp, timeout=600)
    try:
        assert cp.returncode == 0, f"the study must finish: {cp.stderr[-2000:]}"
        assert "Traceback" not in cp.stderr
        fails = [f for f in read_failures(out) if f.env == "runc"]
        assert fails, "the teardown fault must fail its cell"
        text = repr(fails)
        assert "injected delete fault" in text, text[-2000:]
        assert all(f.evidence.get("command") for f in fails)
    finally:
        cp2 = run_cli("clean", timeout=300)
    assert cp2.returncode == 0, cp2.stdout + cp2.stderr
    assert_same_host(before, host_state())


def test_doctor_probes_leave_nothing() -> None:
    """doctor with no cached verdict (as on a fresh boot) runs every probe, the gVisor KVM
    start included, and leaves no cgroup or other leftover behind."""
    from sandbench import cleanup

    for f in paths.state("probes").glob("*.json"):
        f.unlink()
    before_cg = {str(p) for p in cgroups.owned_dirs()}
    before = {str(i) for i in cleanup.find_leftovers()}
    cp = run_cli("doctor", timeout=600)
    assert "Traceback" not in cp.stderr, cp.stderr[-2000:]
    new_cg = {str(p) for p in cgroups.owned_dirs()} - before_cg
    assert not new_cg, f"doctor left cgroups: {sorted(new_cg)[:5]}"
    new = {str(i) for i in cleanup.find_leftovers()} - before
    assert not new, f"doctor left: {sorted(new)[:5]}"


def _system_docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/usr/bin/docker", "-H", "unix:///var/run/docker.sock", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_system_docker_store_bridge_and_user_processes_survive(tmp_path: Path) -> None:
    """A system Docker as Debian's docker.io leaves it (store in /var/lib/docker with a
    restart-policy container, docker0, the default socket), a user's process whose argv names
    the state directory and a directory in the cache dir: none of it is touched by a run of
    sandbench's own dockerd, a kill -9 of that run and its daemon, or clean."""
    env_or_skip("docker")
    from sandbench import images
    from sandbench.environments import docker_daemon as dd

    system_paths = [Path("/var/lib/docker"), Path("/var/run/docker.sock"),
                    Path("/var/run/docker"), Path("/sys/class/net/docker0")]
    if any(p.exists() for p in system_paths) or Path("/run/containerd").exists():
        pytest.skip("a system Docker is installed or was run here; this test makes one of "
                    "its own and removes it afterwards, so it needs a machine without one")
    tarball = images.ensure("minimal").tarball
    had_docker_cgroup = {h: (h / "docker").is_dir() for h in cgroups.hierarchies()}
    log = open(tmp_path / "system-dockerd.log", "wb")  # noqa: SIM115
    # As the system unit would start it: default data-root, socket, exec-root and docker0.
    # Only host-wide switches are off, and docker0 is kept out of Docker's default range.
    system = subprocess.Popen(["/usr/sbin/dockerd", "--iptables=false", "--ip-forward=false",
                               "--ip-masq=false", "--bip", "198.19.64.1/24"],
                              stdout=log, stderr=log, start_new_session=True)
    user = subprocess.Popen(["sh", "-c", "sleep 3600", f"{paths.STATE_DIR}/user-note"],
                            start_new_session=True)
    cache_dir = paths.cache("user-kept")
    (cache_dir / "precious.txt").write_text("user data\n")
    try:
        assert _wait_for(lambda: _system_docker("version").returncode == 0, 60)
        assert _system_docker("import", str(tarball), "user/img:1", timeout=300).returncode == 0
        cp = _system_docker("run", "-d", "--restart", "always", "--name", "user-app",
                            "user/img:1", "/sb/probe", "idle")
        assert cp.returncode == 0, cp.stderr
        cid = cp.stdout.strip()
        system.terminate()
        system.wait(timeout=60)
        docker0 = int(Path("/sys/class/net/docker0/ifindex").read_text())
        store = sorted(p.name for p in Path("/var/lib/docker/containers").iterdir())
        assert store == [cid]
        before = host_state()

        child, dockerd, _containerd = _start_daemon_in_child()
        ps = subprocess.run(dd.cli("ps", "-a", "--format", "{{.Names}}"),
                            capture_output=True, text=True, timeout=30)
        assert ps.returncode == 0 and "user-app" not in ps.stdout, "ours read the user's store"
        os.kill(dockerd, signal.SIGKILL)
        child.kill()
        child.wait(timeout=30)
        cp = run_cli("clean", timeout=300)
        assert cp.returncode == 0, cp.stdout + cp.stderr
        assert "user-kept" not in cp.stdout and str(user.pid) not in cp.stdout, cp.stdout

        assert user.poll() is None, "a user's process naming the state dir was killed"
        assert (cache_dir / "precious.txt").read_text() == "user data\n"
        assert int(Path("/sys/class/net/docker0/ifindex").read_text()) == docker0
        assert sorted(p.name for p in Path("/var/lib/docker/containers").iterdir()) == store
        assert not any(line.split()[4].startswith("/var/lib/docker")
                       for line in Path("/proc/self/mountinfo").read_text().splitlines()), \
            "a mount on the user's store"
        assert not Path("/var/run/docker.sock").exists() or \
            _system_docker("version").returncode != 0, "something started the user's daemon"
        assert_same_host(before, host_state())
    finally:
        user.kill()
        system.kill()
        system.wait(timeout=30)
        log.close()
        shutil.rmtree(cache_dir, ignore_errors=True)
        # Leave the machine as the test found it: without a system Docker.
        subprocess.run(["ip", "link", "del", "docker0"], capture_output=True)
        for p in ("/var/lib/docker", "/var/run/docker", "/var/run/docker.sock", "/run/containerd",
                  "/var/run/docker.pid"):
            subprocess.run(["rm", "-rf", p], capture_output=True)
        for h, had in had_docker_cgroup.items():
            if not had and (h / "docker").is_dir():
                with contextlib.suppress(OSError):
                    for d in sorted((h / "docker").glob("**/"), key=lambda x: -len(str(x))):
                        d.rmdir()

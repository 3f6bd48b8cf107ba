"""sandbench fleet run: bad input refused before anything is written, machines grouped by
their ids, and (runtime) a real fleet of two loopback hosts and an unreachable one through
an SSH server this test starts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbench.fleetrun import engine
from sandbench.fleetrun.orchestrate import machines
from tests.conftest import REPO, SANDBENCH, env_or_skip, run_cli

STUDY = 'envs = ["host", "runc"]\nbenches = ["startup"]\nrounds = 3\n'


def _need_ansible() -> None:
    why = engine.missing_engine()
    if why:
        pytest.skip(why)


def _one_line_exit_2(p: subprocess.CompletedProcess[str], *words: str) -> None:
    assert p.returncode == 2, p.stdout + p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sandbench: error:"), p.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_machines_groups_hosts_sharing_an_id() -> None:
    ids = {"a": ("m1", "b1"), "b": ("m1", "b2"), "c": ("m3", "b3"), "d": ("", "b3"),
           "e": ("m5", "b5")}
    assert machines(["a", "b", "c", "d", "e", "x"], ids) == [{"a", "b"}, {"c", "d"}, {"e"}]
    # empty ids never join hosts
    assert machines(["p", "q"], {"p": ("", ""), "q": ("", "")}) == [{"p"}, {"q"}]


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path: Path) -> None:
    _need_ansible()
    study = tmp_path / "s.toml"
    study.write_text(STUDY)
    inv = tmp_path / "inv.yml"
    inv.write_text("all:\n  hosts:\n    h1:\n      ansible_host: 127.0.0.1\n")
    out = tmp_path / "out"
    cases = [
        (["fleet", "run", str(tmp_path / "nope.ini"), "--study", str(study)], "no such file"),
        (["fleet", "run", str(inv), "--study", str(study), "--forks", "0"], "--forks"),
        (["fleet", "run", str(inv), "--study", str(study), "--forks", "x"], "--forks"),
        (["fleet", "run", str(inv), "--study", str(study), "--poll", "nan"], "--poll"),
        (["fleet", "run", str(inv)], "--study"),
        (["fleet", "run", "--study", str(study)], "INVENTORY"),
        (["fleet", "run", str(inv), "--study", str(tmp_path / "none.toml")], "no such file"),
        (["fleet", "run", str(inv), "--study", str(study), "--limit", "zzz"], "no hosts"),
        (["fleet", "run", "--resume", str(tmp_path), str(inv)], "INVENTORY"),
        (["fleet", "run", "--resume", str(tmp_path)], "fleet.json"),
    ]
    bad_study = tmp_path / "bad.toml"
    bad_study.write_text('envs = ["nosuch"]\n')
    cases.append((["fleet", "run", str(inv), "--study", str(bad_study)], "nosuch"))
    bad_inv = tmp_path / "bad.yml"
    bad_inv.write_text("all: [unclosed\n")
    cases.append((["fleet", "run", str(bad_inv), "--study", str(study)], "not usable"))
    for argv, word in cases:
        p = run_cli(*argv, "--out", str(out), timeout=120) if "--resume" not in argv \
            and argv[2:3] != ["--study"] else run_cli(*argv, timeout=120)
        _one_line_exit_2(p, word)
        assert not out.exists(), argv


def test_inventory_hosts_in_order_with_limit(tmp_path: Path) -> None:
    _need_ansible()
    from sandbench.fleetrun import inventory

    ini = tmp_path / "inv.ini"
    ini.write_text("[web]\nw1 ansible_host=127.0.0.1\nw2 ansible_host=127.0.0.1\n"
                   "[db]\nd1 ansible_host=127.0.0.1 ansible_port=2222\n")
    assert inventory.hosts(ini) == ["w1", "w2", "d1"]
    assert inventory.hosts(ini, "db") == ["d1"]
    yml = tmp_path / "inv.yml"
    yml.write_text("all:\n  children:\n    g:\n      hosts:\n        y1: {ansible_port: 22}\n")
    assert inventory.hosts(yml) == ["y1"]


# -- a real fleet over loopback ------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Debian's sshd on a free loopback port with its own host key, config and authorized
    key in a private directory; stopped at the end."""
    binary = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(binary) or not shutil.which("ssh-keygen"):
        pytest.skip("openssh-server is not installed (scripts/setup.sh installs it)")
    if engine.missing_engine():
        pytest.skip(str(engine.missing_engine()))
    if os.geteuid() != 0:
        pytest.skip("the fleet test logs in as root over loopback")
    d = tmp_path_factory.mktemp("sshd")
    os.chmod(d, 0o700)
    for key in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)],
                       check=True)
    shutil.copyfile(d / "client.pub", d / "authorized_keys")
    port = _free_port()
    (d / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {d}/host\n"
        f"AuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.pid\nUsePAM no\n"
        "StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n")
    os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
    proc = subprocess.Popen([binary, "-D", "-e", "-f", str(d / "sshd_config")],
                            stderr=open(d / "sshd.log", "w"))  # noqa: SIM115
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, (d / "sshd.log").read_text()
            assert time.monotonic() < deadline, "sshd did not listen"
            time.sleep(0.1)
        yield {"dir": str(d), "port": str(port)}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _inventory(sshd: dict[str, str], path: Path, unreachable: bool) -> Path:
    # The pushed tree is what runs; this machine is already set up, so the hosts skip
    # scripts/setup.sh and run it with the test's own Python (its dependencies installed).
    lines = ["[fleet]",
             f"a ansible_host=127.0.0.1 ansible_port={sshd['port']}",
             f"b ansible_host=127.0.0.1 ansible_port={sshd['port']}"]
    if unreachable:
        lines.append("c ansible_host=198.18.255.254 ansible_port=22")
    lines += ["[fleet:vars]", "ansible_user=root",
              f"ansible_ssh_private_key_file={sshd['dir']}/client",
              "ansible_ssh_common_args='-o StrictHostKeyChecking=no "
              "-o UserKnownHostsFile=/dev/null -o ConnectTimeout=3'",
              "ansible_python_interpreter=/usr/bin/python3",
              "sandbench_setup=false", f"sandbench_python={sys.executable}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def _fleet_argv(*args: str) -> list[str]:
    # No lock of its own: whoever runs the runtime tests serializes them with other jobs
    # (a lock taken here under a suite that holds it would wait forever).
    return [*SANDBENCH, "fleet", "run", *args, "--poll", "2"]


def _left_on_host(fleet: dict[str, object]) -> list[str]:
    hosts = fleet["hosts"]
    assert isinstance(hosts, dict)
    return [r["remote_work"] for r in hosts.values() if os.path.exists(r["remote_work"])]


def _remove_remote_results(fleet: dict[str, object]) -> None:
    """The results stay on the hosts by design; the test restores this machine."""
    shutil.rmtree(Path("/var/lib/sandbench-fleet") / str(fleet["run_id"]), ignore_errors=True)
    with_parent = Path("/var/lib/sandbench-fleet")
    if with_parent.is_dir() and not any(with_parent.iterdir()):
        with_parent.rmdir()


def _fleet_files(sshd: dict[str, str], tmp_path: Path,
                 unreachable: bool) -> tuple[Path, Path, Path]:
    """The tiny study, the inventory of the loopback hosts, the fleet's output directory."""
    env_or_skip("runc")
    study = tmp_path / "study.toml"
    study.write_text(STUDY)
    return study, _inventory(sshd, tmp_path / "inv.ini", unreachable=unreachable), \
        tmp_path / "fleet"


@pytest.mark.runtime
def test_fleet_of_two_loopback_hosts_and_an_unreachable_one(
        sshd: dict[str, str], tmp_path: Path) -> None:
    study, inv, out = _fleet_files(sshd, tmp_path, unreachable=True)
    p = subprocess.run(_fleet_argv(str(inv), "--study", str(study), "--out", str(out)),
                       capture_output=True, text=True, timeout=600, cwd=REPO)
    fleet = json.loads((out / "fleet.json").read_text())
    try:
        assert p.returncode == 1, p.stdout + p.stderr
        hosts = fleet["hosts"]
        assert hosts["a"]["state"] == hosts["b"]["state"] == "fetched", p.stdout
        assert hosts["c"]["state"] == "unreachable"
        assert "198.18.255.254" in hosts["c"]["why"] and hosts["c"]["evidence"]
        failed = [ln for ln in p.stderr.splitlines() if ln.startswith("sandbench: fleet: c ")]
        assert len(failed) == 1 and "unreachable" in failed[0], p.stderr
        # one machine: a and b one after another, with a warning
        assert "a, b are one machine" in p.stdout
        assert fleet["machines"] == [["a", "b"]]
        for h in ("a", "b"):
            meta = json.loads((out / h / "meta.json").read_text())
            assert meta["plan"]["envs"] == ["host", "runc"]
            assert meta.get("finished")
        report = (out / "report" / "report.md").read_text()
        assert ":a" in report and ":b" in report  # the merged report names both hosts
        # nothing of the fleet run left on the host but its results
        assert _left_on_host(fleet) == []
        for h in ("a", "b"):
            assert hosts[h]["cleanup"] == "done"
            assert os.path.isfile(Path(hosts[h]["remote_results"]) / "meta.json")
        dry = run_cli("clean", "--dry-run", timeout=120)
        assert "nothing left behind by sandbench" in dry.stdout, dry.stdout
    finally:
        _remove_remote_results(fleet)


@pytest.mark.runtime
def test_resume_after_a_killed_fleet_run_finishes_only_what_was_left(
        sshd: dict[str, str], tmp_path: Path) -> None:
    study, inv, out = _fleet_files(sshd, tmp_path, unreachable=False)
    proc = subprocess.Popen(_fleet_argv(str(inv), "--study", str(study), "--out", str(out)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=REPO, start_new_session=True)
    fleet: dict[str, object] = {}
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                fleet = json.loads((out / "fleet.json").read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                fleet = {}
            hosts = fleet.get("hosts") or {}
            assert isinstance(hosts, dict)
            if hosts.get("a", {}).get("state") == "fetched" \
                    and hosts.get("b", {}).get("state") == "running" \
                    and hosts["b"].get("job_id"):
                break
            assert proc.poll() is None, proc.communicate()[0]
            time.sleep(0.2)
        else:
            pytest.fail("the fleet run never reached: a fetched, b running")
        # killed mid-way: the controller and its plays, with no chance to clean up
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        a_journal = out / "a" / "results.jsonl"
        before = (a_journal.stat().st_mtime_ns, a_journal.read_bytes())
        p = subprocess.run(_fleet_argv("--resume", str(out)), capture_output=True, text=True,
                           timeout=600, cwd=REPO)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "1 host(s) left" in p.stdout and "already fetched: a" in p.stdout
        assert "b: waiting for the study job" in p.stdout
        assert "a: setting up" not in p.stdout  # a is not run again
        assert (a_journal.stat().st_mtime_ns, a_journal.read_bytes()) == before
        fleet = json.loads((out / "fleet.json").read_text())
        hosts = fleet["hosts"]
        assert isinstance(hosts, dict)
        assert hosts["b"]["state"] == "fetched"
        assert json.loads((out / "b" / "meta.json").read_text()).get("finished")
        report = (out / "report" / "report.md").read_text()
        assert ":a" in report and ":b" in report
        assert _left_on_host(fleet) == []
        # a differing study is refused
        other = tmp_path / "other.toml"
        other.write_text(STUDY.replace("rounds = 3", "rounds = 4"))
        refused = run_cli("fleet", "run", "--resume", str(out), "--study", str(other),
                          timeout=120)
        _one_line_exit_2(refused, "differs")
        dry = run_cli("clean", "--dry-run", timeout=120)
        assert "nothing left behind by sandbench" in dry.stdout, dry.stdout
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if fleet:
            _remove_remote_results(fleet)

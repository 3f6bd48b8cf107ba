"""Fault injection: killed runtimes, a killed tool, a full results disk, Ctrl-C, and a clean
that removes what the tool left and nothing else."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from sandbench.results import (
    CellEnd,
    Failure,
    NotApplicableCell,
    Record,
    Sample,
    Timing,
    read_failures,
    read_records,
    read_samples,
)
from tests.conftest import REPO, SANDBENCH, assert_same_host, env_or_skip, host_state, run_cli

pytestmark = pytest.mark.runtime


def _default_sigint() -> None:
    # A suite started in the background by a shell without job control inherits SIGINT
    # ignored, and Python then installs no Ctrl-C handler in the child: the Ctrl-C tests
    # would test the shell, not sandbench.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*SANDBENCH, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_default_sigint,  # noqa: PLW1509 - the test starts no threads meanwhile
    )


def _wait_for(pred: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(pred) and pred():
            return True
        time.sleep(0.05)
    return False


def _journal_lines(out: Path) -> int:
    f = out / "results.jsonl"
    return f.read_text().count("\n") if f.exists() else 0


def test_killed_runtime_fails_its_cells_and_run_goes_on(tmp_path: Path, clean_host: None) -> None:
    env_or_skip("runc")
    out = tmp_path / "run"
    proc = _start(
        "run",
        "--env",
        "host,runc",
        "--bench",
        "syscall",
        "--rounds",
        "150",
        "--out",
        str(out),
        "--no-report",
    )
    killed = []

    def container_init() -> bool:
        for p in psutil.process_iter(["pid", "cmdline"]):
            if (p.info["cmdline"] or [""])[0] == "/sb/probe":
                os.kill(p.info["pid"], signal.SIGKILL)
                killed.append(p.info["pid"])
                return True
        return False

    assert _wait_for(lambda: _journal_lines(out) > 10, 60)
    assert _wait_for(container_init, 30), "no runc container init found to kill"
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    failures = [f for f in read_failures(out) if f.env == "runc"]
    assert failures, "rounds after the kill must fail"
    assert all(f.error for f in failures)
    host = [s for s in read_samples(out) if s.env == "host" and s.metric == "getpid_latency"]
    assert len(host) == 150, "the other environment's rounds all ran"


def test_kill_9_then_clean_leaves_host_as_before(tmp_path: Path) -> None:
    env_or_skip("runc")
    envs = ["runc"]
    for name in ("gvisor-systrap", "docker"):
        try:
            env_or_skip(name)
            envs.append(name)
        except pytest.skip.Exception:
            pass
    before = host_state()
    out = tmp_path / "run"
    proc = _start(
        "run", "--env", ",".join(envs), "--bench", "memory", "--out", str(out), "--no-report"
    )
    # Kill while sandboxes are up: the memory benchmark holds ten at once.
    assert _wait_for(lambda: len(host_state()["netns"] - before["netns"]) >= 3, 120)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert host_state()["netns"] - before["netns"], "the kill should leave something behind"
    cp = run_cli("clean", timeout=300)
    assert cp.returncode == 0, cp.stderr
    assert "removed:" in cp.stdout
    assert_same_host(before, host_state())
    again = run_cli("clean", "--dry-run", timeout=120)
    assert "nothing left behind" in again.stdout


def test_ctrl_c_cleans_up_and_prints_resume(tmp_path: Path, clean_host: None) -> None:
    env_or_skip("runc")
    out = tmp_path / "run"
    proc = _start(
        "run",
        "--env",
        "host,runc",
        "--bench",
        "startup",
        "--rounds",
        "400",
        "--out",
        str(out),
        "--no-report",
    )
    assert _wait_for(lambda: _journal_lines(out) > 6, 60)
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert f"sandbench run --resume {out}" in stdout.replace("\n", "")
    assert list(read_records(out)), "finished samples are kept"


def test_sigterm_same_as_ctrl_c(tmp_path: Path, clean_host: None) -> None:
    env_or_skip("runc")
    out = tmp_path / "run"
    proc = _start(
        "run",
        "--env",
        "runc",
        "--bench",
        "syscall",
        "--rounds",
        "2000",
        "--out",
        str(out),
        "--no-report",
    )
    assert _wait_for(lambda: _journal_lines(out) > 4, 60)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 130


def test_resume_after_kill_gives_same_cells(tmp_path: Path) -> None:
    env_or_skip("runc")
    args = ["--env", "host,runc", "--bench", "startup,syscall", "--rounds", "8", "--no-report"]
    full = tmp_path / "full"
    cp = run_cli("run", *args, "--out", str(full))
    assert cp.returncode == 0, cp.stderr

    out = tmp_path / "killed"
    proc = _start("run", *args, "--out", str(out))
    assert _wait_for(lambda: _journal_lines(out) >= 20, 120)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    # A torn line at the end, as a kill during a write would leave.
    with open(out / "results.jsonl", "a") as fh:
        fh.write('{"type":"sample","env":"ru')
    assert run_cli("clean", timeout=300).returncode == 0
    done_before = _journal_lines(out)
    cp = run_cli("run", "--resume", str(out), "--no-report")
    assert cp.returncode == 0, cp.stderr
    assert _journal_lines(out) > done_before

    def cells(d: Path) -> Counter[tuple[str, str, str, int, str]]:
        # The resume cut the torn line before appending: the journal reads clean. Rounds
        # (samples, failures) and the cells' end records ("cell": rounds, stop reason).
        # Timing records say where a process's wall time went: a killed run's differ.
        def key(r: Record) -> tuple[str, str, str, int, str]:
            if isinstance(r, Sample):
                return (r.type, r.env, r.bench, r.round, r.metric)
            if isinstance(r, CellEnd):
                return (r.type, r.env, r.bench, r.rounds, r.stop_reason)
            if isinstance(r, Failure):
                return (r.type, r.env, r.bench, r.round, "")
            assert isinstance(r, NotApplicableCell)
            return (r.type, r.env, r.bench, -9, "")

        return Counter(key(r) for r in read_records(d) if not isinstance(r, Timing))

    assert cells(out) == cells(full)
    assert "dropping a torn last line" in cp.stderr


def test_resume_refuses_a_different_plan(tmp_path: Path) -> None:
    out = tmp_path / "r"
    cp = run_cli(
        "run",
        "--env",
        "host",
        "--bench",
        "syscall",
        "--rounds",
        "2",
        "--out",
        str(out),
        "--no-report",
        timeout=120,
    )
    assert cp.returncode == 0, cp.stderr
    cp = run_cli("run", "--resume", str(out), timeout=60)
    assert cp.returncode == 2 and "that run finished" in cp.stderr
    meta = (out / "meta.json").read_text().replace('"finished"', '"unfinished"')
    (out / "meta.json").write_text(meta)
    cp = run_cli("run", "--resume", str(out), "--env", "runc", timeout=60)
    assert cp.returncode == 2
    assert "--env 'runc' differs from the run's plan ('host')" in cp.stderr
    cp = run_cli("run", "--resume", str(out), "--rounds", "3", timeout=60)
    assert cp.returncode == 2 and "--rounds '3' differs" in cp.stderr


def test_results_disk_full(tmp_path: Path, clean_host: None) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mnt)], check=True)
    try:
        out = mnt / "run"
        cp = run_cli(
            "run",
            "--env",
            "host",
            "--bench",
            "syscall",
            "--rounds",
            "5000",
            "--out",
            str(out),
            "--no-report",
            timeout=300,
        )
        assert cp.returncode == 1, cp.stderr
        lines = cp.stderr.strip().splitlines()
        assert len(lines) == 1 and "results disk full" in lines[0], cp.stderr
        assert f"--resume {out}" in lines[0]
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            samples = read_samples(out)
        assert samples and all(s.unit in ("ns", "us") for s in samples)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_clean_touches_nothing_foreign(tmp_path: Path) -> None:
    """A foreign OCI container, namespace and link survive `sandbench clean`."""
    env_or_skip("runc")
    ns, link = "foreign-ns-test", "foreignlnk0"
    root = tmp_path / "runc-root"
    bundle = tmp_path / "bundle"
    import json

    from sandbench import images
    from sandbench.environments import oci_spec
    from sandbench.environments.base import IDLE_ARGV, Limits

    img = images.ensure("minimal")
    bundle.mkdir()
    cfg = oci_spec.build(
        rootfs=img.rootfs,
        args=IDLE_ARGV,
        env={},
        netns_path=None,
        cgroups_path=None,
        limits=Limits(),
        volume=None,
        hostname="foreign",
    )
    (bundle / "config.json").write_text(json.dumps(cfg))
    subprocess.run(["ip", "netns", "add", ns], check=True)
    # A veth pair (the dummy driver may be missing from the kernel).
    subprocess.run(["ip", "link", "add", link, "type", "veth", "peer", "name", link + "p"],
                   check=True)
    subprocess.run(
        ["runc", "--root", str(root), "run", "-d", "--bundle", str(bundle), "foreign1"],
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=30,
    )
    try:
        cp = run_cli("clean", timeout=300)
        assert cp.returncode == 0, cp.stderr
        assert ns in os.listdir("/var/run/netns")
        assert os.path.exists(f"/sys/class/net/{link}")
        st = subprocess.run(
            ["runc", "--root", str(root), "state", "foreign1"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert '"running"' in st.stdout
        assert "foreign" not in cp.stdout
    finally:
        subprocess.run(
            ["runc", "--root", str(root), "delete", "--force", "foreign1"],
            capture_output=True,
            timeout=30,
        )
        subprocess.run(["ip", "netns", "del", ns], check=False)
        subprocess.run(["ip", "link", "del", link], check=False)

"""The restore benchmarks: checkpoint a ready sandbox, restore it cold and warm, until the
workload answers the host again.

First without a runtime (registration, CRIU's verdict from its own `criu check`, the page
cache drop, which environments say why they cannot), then on the real runtimes (gVisor's
runsc checkpoint/restore and QEMU's migration to a file under TCG), a restore whose readiness
never comes, and a run killed during a checkpoint: run those under
`flock /tmp/sandbench-real.lock`."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from sandbench import net, volume
from sandbench.benchmarks.base import RunContext
from sandbench.benchmarks.registry import all_benchmarks
from sandbench.benchmarks.restore import (
    Restore,
    RestoreNginx,
    drop_from_cache,
    image_bytes,
    resident_bytes,
)
from sandbench.environments import criu
from sandbench.environments.base import Environment
from sandbench.environments.registry import all_environments
from sandbench.errors import NotApplicable, SandboxError
from sandbench.results import Measurement
from tests.conftest import REPO, SANDBENCH, env_or_skip, run_cli

FAKE_CRIU = """#!/bin/sh
case "$1" in
  --version) echo "Version: 3.17.1" ;;
  check) [ "$FAKE_CRIU_OK" = 1 ] && { echo "Looks good."; exit 0; }
         echo "Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds" >&2; exit 1 ;;
esac
"""


def _envs() -> dict[str, Environment]:
    return {e.name: e for e in all_environments()}


# ------------------------------------------------------------------------- without a runtime


def test_registered_after_exec_and_only_when_named() -> None:
    names = [b.name for b in all_benchmarks()]
    assert names.index("restore") == names.index("exec") + 1
    assert names.index("restore-nginx") == names.index("restore") + 1
    for b in (Restore(), RestoreNginx()):
        assert not b.default and b.headline == "restore_time"
    assert Restore().image == "minimal" and RestoreNginx().image == "full"


@pytest.mark.parametrize("ok", [False, True])
def test_criu_verdict_comes_from_criu_check(ok: bool, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "criu"
    fake.write_text(FAKE_CRIU)
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_CRIU_OK", "1" if ok else "0")
    criu.problem.cache_clear()
    try:
        said = criu.problem()
        runc = _envs()["runc"]
        if ok:
            assert said == "" and runc.restore_unavailable("minimal") == ""
        else:
            assert "CRIU 3.17.1" in said and os.uname().release in said
            assert "vDSO area bounds" in said and "CRIU 4.1 or later" in said
            assert said in runc.restore_unavailable("minimal")
    finally:
        criu.problem.cache_clear()


def test_criu_missing_says_what_to_install(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    criu.problem.cache_clear()
    try:
        assert "criu not installed" in criu.problem()
    finally:
        criu.problem.cache_clear()


def test_which_environments_say_why_not() -> None:
    envs = _envs()
    # gVisor saves its own sentry; QEMU's initramfs guest migrates to a file.
    for name in ("gvisor-systrap", "gvisor-ptrace", "qemu-microvm", "firecracker"):
        assert envs[name].restore_unavailable("minimal") == ""
    # A root disk behind a throw-away overlay is not carried by QEMU's migration.
    assert "snapshot=on" in envs["qemu-vm"].restore_unavailable("minimal")
    assert "snapshot=on" in envs["qemu-microvm"].restore_unavailable("full")
    assert "no checkpoint and restore" in envs["kata-qemu"].restore_unavailable("minimal")
    for name in ("bubblewrap", "firejail", "nspawn", "lxc", "docker", "podman"):
        if name in envs:
            reason = envs[name].restore_unavailable("minimal")
            assert reason and ("CRIU" in reason or "checkpoint" in reason), (name, reason)


def test_page_cache_drop_leaves_the_image_cold(tmp_path: Path) -> None:
    """On the host's disk (tmp_path is ext4 here; tmpfs keeps pages by nature)."""
    if volume.fs_type(tmp_path) in volume.MEMORY_FS:
        pytest.skip(f"{tmp_path} is memory-backed: its pages cannot be dropped")
    image = tmp_path / "img"
    (image / "sub").mkdir(parents=True)
    (image / "sub" / "pages").write_bytes(os.urandom(4 << 20))
    (image / "state").write_bytes(b"s" * 8192)
    assert image_bytes(image) == (4 << 20) + 8192
    assert resident_bytes(image) > 0  # just written: in the page cache
    assert drop_from_cache(image) == 0
    (image / "sub" / "pages").read_bytes()
    assert resident_bytes(image) >= 4 << 20  # read again: warm


def test_not_applicable_starts_nothing(tmp_path: Path) -> None:
    env = _envs()["bubblewrap"]
    ctx = RunContext(out=tmp_path, profile="quick")
    with pytest.raises(NotApplicable) as e, Restore().session(env, ctx,
                                                               Restore().params("quick")):
        pass
    assert str(e.value) == env.restore_unavailable("minimal")


# ------------------------------------------------------------------------------ real runtimes


def _rounds(bench: Restore, name: str, tmp_path: Path, rounds: int,
            **params: object) -> list[list[Measurement]]:
    env = env_or_skip(name)
    ctx = RunContext(out=tmp_path, profile="quick")
    got = []
    env.setup()
    try:
        with bench.session(env, ctx, bench.params("quick").replace(**params)) as fn:
            for rnd in range(rounds):
                got.append(list(fn(rnd)))
    finally:
        env.close()
    return got


@pytest.mark.runtime
@pytest.mark.parametrize("name", ["gvisor-systrap", "gvisor-ptrace", "qemu-microvm"])
def test_restore_cold_and_warm(name: str, tmp_path: Path, clean_host: None) -> None:
    rounds = _rounds(Restore(), name, tmp_path, rounds=2)
    for ms in rounds:
        by = {(m.metric, m.params.get("cache", "")): m for m in ms}
        assert set(by) == {("checkpoint_time", ""), ("checkpoint_size", ""),
                           ("restore_time", "cold"), ("after_restore_latency", "cold"),
                           ("restore_time", "warm"), ("after_restore_latency", "warm")}
        for m in by.values():
            assert math.isfinite(m.value) and m.value > 0, (m.metric, m.value)
        cold, warm = by[("restore_time", "cold")], by[("restore_time", "warm")]
        # The cold restore read an image the host had dropped; the warm one found it cached.
        assert cold.extra["image_resident_bytes"] in (0, -1)
        assert warm.extra["image_resident_bytes"] != 0
        assert 0 < cold.extra["restore_call_s"] <= cold.value < 60
        assert by[("checkpoint_time", "")].extra["how"]
        lat = by[("after_restore_latency", "cold")].extra
        assert lat["n"] == Restore().params("quick").requests and lat["p50"] <= lat["p99"]
        raw = json.loads((tmp_path / str(cold.raw)).read_text())
        assert raw["cold"]["restore_s"] == cold.value and raw["image_bytes"] > 0
        assert len(raw["warm"]["after_restore_s"]) == lat["n"]


@pytest.mark.runtime
def test_a_restore_that_never_answers_fails_with_evidence(
        tmp_path: Path, clean_host: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """gVisor's netstack takes the sandbox's address from its namespace at each restore:
    without net.readdress the restored sandbox has loopback only and never answers."""
    monkeypatch.setattr(net, "readdress", lambda link: None)
    with pytest.raises(SandboxError) as e:
        _rounds(Restore(), "gvisor-systrap", tmp_path, rounds=1, ready_timeout_s=3)
    assert "did not answer within 3 s of a cold restore" in str(e.value)
    ev = e.value.evidence
    assert ev["probe_answers"] is False and '"running"' in ev["state"]
    assert ev["image_files"] and ev["image"].startswith(str(volume.VOLUME_ROOT))


@pytest.mark.runtime
def test_a_run_killed_during_a_checkpoint_leaves_only_what_clean_removes(
        tmp_path: Path, clean_host: None) -> None:
    env_or_skip("gvisor-systrap")
    out = tmp_path / "run"
    proc = subprocess.Popen([*SANDBENCH, "run", "--env", "gvisor-systrap", "--bench", "restore",
                             "--rounds", "3", "--no-report", "--out", str(out)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    seen = False
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            # The first round's image directory exists: runsc checkpoint is writing into it.
            if any(volume.VOLUME_ROOT.glob("sb*/r000")):
                seen = True
                break
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert seen, "the run never reached its first checkpoint"
    dry = run_cli("clean", "--dry-run", timeout=300)
    assert "volume" in dry.stdout and "nothing left behind" not in dry.stdout, dry.stdout
    run_cli("clean", timeout=300)
    assert "nothing left behind" in run_cli("clean", "--dry-run", timeout=300).stdout


def test_report_draws_cold_start_against_restore(tmp_path: Path) -> None:
    from sandbench.report import write_report
    from tests.reportdata import meta, sample, write_run

    recs = []
    for rnd in range(3):
        for env, start, cold, warm in (("gvisor-systrap", 0.45, 0.18, 0.16),
                                       ("qemu-microvm", 2.4, 0.25, 0.19)):
            recs.append(sample(env, "startup", "startup_time", start + rnd / 100, "s", rnd))
            for cache, v in (("cold", cold), ("warm", warm)):
                recs.append(sample(env, "restore", "restore_time", v + rnd / 1000, "s", rnd,
                                   params={"cache": cache}, kind="time"))
    out = write_run(tmp_path / "run", recs, meta(["gvisor-systrap", "qemu-microvm"]))
    write_report(out)
    assert (out / "figures" / "restore_vs_start.png").stat().st_size > 0
    md = (out / "report.md").read_text()
    assert "Cold start against restore from a checkpoint" in md
    assert "restore_vs_start.png" in md

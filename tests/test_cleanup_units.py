"""Clean-up building blocks without a runtime: directory checks, volume matching, cgroup
hierarchies, the probe cache's expiry, and clean's report of what it could not remove."""

from __future__ import annotations

import json
import os
import subprocess
import time
from functools import partial
from pathlib import Path

import pytest

from sandbench import cgroups, cleanup, paths, volume
from sandbench.environments import probe_cache
from sandbench.environments.base import Availability, Leftover
from sandbench.errors import StepTimeout, UsageError


@pytest.mark.parametrize("bad", ["/", "/run", "/var", "/home", "/home/alice", "/tmp", "/usr",
                                 "/var/lib", "relative/dir"])
def test_system_directories_are_refused(bad: str) -> None:
    assert paths.unsafe_dir_reason(Path(bad)) is not None
    with pytest.raises(UsageError, match="SANDBENCH_STATE_DIR"):
        paths.owned_dir(Path(bad), "SANDBENCH_STATE_DIR")


def test_owned_dir_marks_new_and_refuses_foreign(tmp_path: Path) -> None:
    new = tmp_path / "state"
    assert paths.owned_dir(new, "X") == new and paths.is_marked(new)
    assert oct(new.stat().st_mode & 0o777) == "0o700"
    foreign = tmp_path / "data"
    foreign.mkdir()
    (foreign / "file").write_text("x")
    with pytest.raises(UsageError, match="not made by sandbench"):
        paths.owned_dir(foreign, "SANDBENCH_VOLUME_DIR")
    assert sorted(os.listdir(foreign)) == ["file"]
    empty = tmp_path / "empty"
    empty.mkdir()
    paths.owned_dir(empty, "X")
    assert paths.is_marked(empty)


def test_volume_leftovers_need_the_name_and_an_owner_file(tmp_path: Path) -> None:
    for name in ("sbackup", "sb0123456789", "sbabcdefabcd", "sb01234567890"):
        (tmp_path / name).mkdir()
    (tmp_path / "sbackup" / volume.OWNER_FILE).write_text("999999999")  # wrong name
    (tmp_path / "sbabcdefabcd" / volume.OWNER_FILE).write_text("999999999")
    (tmp_path / "sb01234567890" / volume.OWNER_FILE).write_text("999999999")  # 11 digits
    # sb0123456789 has no owner file: not a volume, whatever its name.
    assert volume.leftovers(tmp_path) == [tmp_path / "sbabcdefabcd"]


def test_volume_refuses_an_unmarked_user_directory(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    from sandbench.errors import SandboxError

    with pytest.raises(SandboxError, match="not made by sandbench"), \
            volume.volume(1 << 20, root=tmp_path):
        pass
    assert os.listdir(tmp_path) == ["photos"]


def test_sandbox_id_pattern() -> None:
    assert paths.is_sandbox_id(paths.new_id())
    for bad in ("sbackup", "sb0123", "sb0123456789a", "SB0123456789", "xb0123456789"):
        assert not paths.is_sandbox_id(bad)


def test_hierarchies_are_each_counted_once() -> None:
    hs = cgroups.mounted()
    if not hs:
        pytest.skip("no cgroup hierarchy mounted")
    reals = [h.path.resolve() for h in hs]
    assert len(reals) == len(set(reals))
    devs = [h.path.stat().st_dev for h in hs]
    assert len(devs) == len(set(devs)), "one hierarchy listed twice"


@pytest.mark.runtime
def test_a_hierarchy_mounted_twice_is_listed_once(tmp_path: Path) -> None:
    """A second mount of the same hierarchy (an alias) must not double-count cgroups."""
    src = next((h.path for h in cgroups.mounted() if "pids" in h.controllers), None)
    if src is None:
        pytest.skip("no v1 pids hierarchy here")
    alias = tmp_path / "pids-alias"
    alias.mkdir()
    subprocess.run(["mount", "--bind", str(src), str(alias)], check=True)
    try:
        cgroups.forget_mounts()  # read once per process otherwise
        assert any(str(alias) in ln for ln in Path("/proc/self/mountinfo").read_text()
                   .splitlines()), "the alias is mounted"
        paths_seen = [h.path for h in cgroups.mounted()]
        assert sum(1 for p in paths_seen if p in (src, alias)) == 1
    finally:
        subprocess.run(["umount", str(alias)], check=True)
        cgroups.forget_mounts()


def test_probe_cache_negative_verdicts_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"unit-probe-{os.getpid()}"
    calls: list[int] = []

    def fn() -> Availability:
        calls.append(1)
        return Availability.no("did not start")

    path = probe_cache._path(name, "1.0")
    try:
        first = probe_cache.probe(name, "1.0", fn)
        assert not first.ok and calls == [1]
        again = probe_cache.probe(name, "1.0", fn)
        assert calls == [1] and "did not start" in again.reason and "probed at" in again.reason
        data = json.loads(path.read_text())
        data["at"] = time.time() - probe_cache.NEGATIVE_TTL_S - 1
        path.write_text(json.dumps(data))
        probe_cache.probe(name, "1.0", fn)
        assert calls == [1, 1], "an expired negative verdict must be probed again"
    finally:
        path.unlink(missing_ok=True)


def test_probe_cache_reports_a_timeout_as_a_timeout() -> None:
    name = f"unit-probe-timeout-{os.getpid()}"

    def fn() -> Availability:
        raise StepTimeout("runsc did not start the sandbox within 15 s")

    path = probe_cache._path(name, "1.0")
    try:
        av = probe_cache.probe(name, "1.0", fn)
        assert not av.ok and "timed out" in av.reason and "15 s" in av.reason
    finally:
        path.unlink(missing_ok=True)


def test_clean_reports_what_it_could_not_remove(monkeypatch: pytest.MonkeyPatch) -> None:
    removed: list[str] = []
    state = {"stuck": True}

    def ok() -> None:
        removed.append("ok")

    def boom() -> None:
        raise OSError("device busy")

    def items() -> list[Leftover]:
        found = [Leftover("netns", "sbaaaaaaaaaa", ok)] if not removed else []
        found.append(Leftover("cgroup", "sandbench/sbbbbbbbbbbb", boom))
        if state["stuck"]:
            found.append(Leftover("process", "1234 x", lambda: None))  # silently no effect
        return found

    monkeypatch.setattr(cleanup, "find_leftovers", items)
    report = cleanup.clean()
    assert [str(i) for i in report.removed] == ["netns sbaaaaaaaaaa"]
    reasons = {str(i): why for i, why in report.failed}
    assert "device busy" in reasons["cgroup sandbench/sbbbbbbbbbbb"]
    assert reasons["process 1234 x"] == "still present after removal"
    assert not report.ok

    from rich.console import Console

    from sandbench import cli

    monkeypatch.setattr("sandbench.study.active_runs", lambda: [])
    args = cli.build_parser().parse_args(["clean"])
    removed.clear()
    assert cli.cmd_clean(args, Console(file=open(os.devnull, "w"))) == 1  # noqa: SIM115


def test_find_leftovers_runs_no_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    from sandbench.environments.base import Environment

    def no(self: Environment) -> Availability:
        raise AssertionError(f"{self.name}: available() called by find_leftovers")

    from sandbench.environments.registry import all_environments

    for cls in {type(e) for e in all_environments()}:
        monkeypatch.setattr(cls, "available", no)
    monkeypatch.setattr(probe_cache, "probe", lambda *a: (_ for _ in ()).throw(
        AssertionError("probe called")))
    cleanup.find_leftovers()


def test_clean_removes_independent_items_in_parallel_and_cgroups_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Containers and links of many sandboxes go at once (a barrier they all wait at would
    break one by one); cgroups, children before parents, keep their order."""
    import threading

    gone: list[str] = []
    barrier = threading.Barrier(4, timeout=10)

    def together(ident: str) -> None:
        barrier.wait()
        gone.append(ident)

    listed = [Leftover("container", f"runc/sb{i:010d}", partial(together, f"c{i}"))
              for i in range(4)]
    listed += [Leftover("cgroup", f"sandbench/{n}", partial(gone.append, n))
               for n in ("child", "parent")]

    monkeypatch.setattr(cleanup, "find_leftovers", lambda: listed if not gone else [])
    report = cleanup.clean()
    assert report.ok and len(report.removed) == 6
    assert sorted(gone[:4]) == ["c0", "c1", "c2", "c3"]
    assert gone[4:] == ["child", "parent"]

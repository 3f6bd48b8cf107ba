"""The terminal summary: one row per environment, one column per benchmark's headline metric,
the ratio to the baseline marked only where the difference is real, and a width that fits
100 columns whatever the number of environments (issue 27 item 7)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from rich.console import Console

from sandbench.summary import fmt, summary_table
from tests.conftest import run_cli
from tests.reportdata import PAPER_ENVS, meta, realistic_records, sample, write_run


def _render(d: Path, width: int = 100) -> str:
    console = Console(width=width, record=True)
    console.print(summary_table(d, "host", width=width))
    return console.export_text()


def _rows(text: str) -> dict[str, str]:
    return {line.split()[0]: line for line in text.splitlines() if line.strip()}


def _cell(env: str, v: float, n: int, kind: str = "rate") -> list:  # type: ignore[type-arg]
    return [replace(sample(env, "nginx", "requests_per_second", v * (1 + 0.01 * (i % 3)),
                           "1/s", i), kind=kind, direction={"rate": "higher"}.get(kind, ""))
            for i in range(n)]


def test_ratio_marked_only_where_significant(tmp_path: Path) -> None:
    envs = ["host", "docker", "runc", "crun"]
    recs = (_cell("host", 1000.0, 6) + _cell("docker", 500.0, 6) + _cell("runc", 1010.0, 6)
            + _cell("crun", 100.0, 1))
    text = _render(write_run(tmp_path / "r", recs, meta(envs, profile="quick")))
    rows = _rows(text)
    assert "0.5x-" in rows["docker"]  # docker: half the host's rate, p = 0.002
    assert "x" not in rows["runc"].replace("nginx", "")  # 1 %: no difference
    assert rows["crun"].rstrip().endswith("~")  # n = 1 cannot tell
    assert "medians (quick profile)" in text
    assert "nginx: requests_per_second (1/s, higher is better)" in " ".join(text.split())


def test_unknown_direction_is_not_called_worse(tmp_path: Path) -> None:
    recs = _cell("host", 1000.0, 6, kind="") + _cell("docker", 500.0, 6, kind="")
    text = _render(write_run(tmp_path / "r", recs, meta(["host", "docker"])))
    assert "0.5x*" in _rows(text)["docker"] and "0.5x-" not in text


def test_memory_is_summarised_per_round(tmp_path: Path) -> None:
    """Three sandboxes a round are one unit: 2 rounds of 3 are too few to test (~), where
    6 independent values a side would have given a significant ratio."""
    recs = [sample(e, "memory", "private_dirty", v + 0.01 * i, "MiB", rnd)
            for e, v in (("host", 1.0), ("runc", 5.0)) for rnd in range(2) for i in range(3)]
    text = _render(write_run(tmp_path / "r", recs, meta(["host", "runc"])))
    assert _rows(text)["runc"].rstrip().endswith("~"), text


def test_sixteen_environments_fit_100_columns(tmp_path: Path) -> None:
    envs = [*PAPER_ENVS, "crun", "gvisor-ptrace", "gvisor-systrap", "podman",
            "podman-gvisor", "bubblewrap", "firejail", "nspawn"]
    assert len(envs) == 16
    recs = []
    for e in envs:
        base = e if e in PAPER_ENVS else "runc"
        recs += [replace(r, env=e) for r in realistic_records([base], rounds=5)]
    d = write_run(tmp_path / "r", recs, meta(envs, profile="quick"))
    text = _render(d)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    for e in envs:
        assert sum(1 for line in lines if line.split()[:1] == [e]) == 2  # split over 2 tables
    # parameters and units in header and footer, never in a cell
    assert not any("=" in line for line in lines if line.split()[:1] == ["runc"])
    assert "fio: latency bs=16k pattern=randread (us, lower is better)" in " ".join(text.split())
    # the command prints the same for an existing run, piped: 100 columns
    cp = run_cli("report", str(d), "--terminal", timeout=120)
    assert cp.returncode == 0, cp.stderr
    assert max(len(line) for line in cp.stdout.splitlines()) <= 100
    assert not (d / "report.html").exists()


def test_numbers_stay_short() -> None:
    assert [fmt(x) for x in (122503.0, 1776.0, 59.8, 0.0787, 0.005, 2.4e-5, 0.0, 3.2e6)] == [
        "123k", "1776", "59.8", "0.0787", "0.0050", "2.4e-05", "0", "3.2M"]

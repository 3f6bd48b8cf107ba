"""The CLI's median table marks a ratio to the baseline only where the difference is real."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from rich.console import Console

from sandbench.summary import summary_table
from tests.reportdata import meta, sample, write_run


def _render(d: Path) -> str:
    console = Console(width=250, record=True)
    console.print(summary_table(d, "host"))
    return console.export_text()


def _cell(env: str, v: float, n: int, kind: str = "rate") -> list:  # type: ignore[type-arg]
    return [replace(sample(env, "nginx", "requests_per_second", v * (1 + 0.01 * (i % 3)),
                           "1/s", i), kind=kind, direction={"rate": "higher"}.get(kind, ""))
            for i in range(n)]


def test_ratio_marked_only_where_significant(tmp_path: Path) -> None:
    envs = ["host", "docker", "runc", "crun"]
    recs = (_cell("host", 1000.0, 6) + _cell("docker", 500.0, 6) + _cell("runc", 1010.0, 6)
            + _cell("crun", 100.0, 1))
    text = _render(write_run(tmp_path / "r", recs, meta(envs, profile="quick")))
    row = next(line for line in text.splitlines() if "requests_per_second" in line)
    assert "0.5x worse" in row  # docker: half the host's rate, p = 0.002
    # runc's 1 % is no difference; crun's n=1 cannot tell
    assert row.count("x worse") + row.count("x better") == 1
    assert "~" in row  # crun: too thin
    assert "medians (quick profile)" in text


def test_unknown_direction_is_not_called_worse(tmp_path: Path) -> None:
    recs = _cell("host", 1000.0, 6, kind="") + _cell("docker", 500.0, 6, kind="")
    text = _render(write_run(tmp_path / "r", recs, meta(["host", "docker"])))
    assert "0.5x changed" in text and "worse" not in text.split("ratio to")[0]

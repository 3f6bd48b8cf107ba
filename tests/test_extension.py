"""The seams hold: an environment registered from a test (no other module touched) appears in
doctor, runs a benchmark, gets a colour of its own in the report and has its leftovers removed
by clean; and the package has no import cycle."""

from __future__ import annotations

import ast
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbench import paths
from sandbench.cli import main
from sandbench.environments import registry
from sandbench.environments.base import Leftover
from sandbench.environments.host import HostEnvironment
from sandbench.results import read_samples

SRC = Path(__file__).resolve().parent.parent / "src" / "sandbench"


class ExtEnvironment(HostEnvironment):
    """A new environment as a third party would add it: its own name, description and
    leftovers (directories it marks with an owner file)."""

    name = "ext-test"
    description = "an environment registered by a test"
    family = "container"
    root: Path = Path("/nonexistent")

    def leftovers(self) -> list[Leftover]:
        out = []
        for d in sorted(self.root.glob("sb*")):
            if (d / "owner").is_file() and paths.is_sandbox_id(d.name):
                out.append(Leftover("directory", str(d),
                                    lambda d=d: shutil.rmtree(d)))  # type: ignore[misc]
        return out


@pytest.fixture
def ext(tmp_path: Path) -> Iterator[type[ExtEnvironment]]:
    root = tmp_path / "ext-state"
    root.mkdir()
    ExtEnvironment.root = root
    registry.register("ext-test", ExtEnvironment)
    try:
        yield ExtEnvironment
    finally:
        registry.unregister("ext-test")


@pytest.mark.runtime
def test_registered_environment_everywhere(ext: type[ExtEnvironment], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert "ext-test" in registry.names()
    assert main(["doctor"]) == 0
    doctor = capsys.readouterr().out
    assert "ext-test" in doctor

    out = tmp_path / "run"
    rc = main(["run", "--env", "host,ext-test", "--bench", "syscall", "--rounds", "2",
               "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    values = [s.value for s in read_samples(out)
              if s.env == "ext-test" and s.metric == "getpid_latency"]
    assert len(values) == 2 and all(v > 0 for v in values)

    from sandbench.report.envinfo import colours

    palette = colours(["host", "ext-test"])
    assert palette["ext-test"] != palette["host"]
    html = (out / "report.html").read_text()
    assert "ext-test" in html and palette["ext-test"].lower() in html.lower()

    # Its leftovers (marked) go; a look-alike without the mark stays.
    mine = ext.root / paths.new_id()
    mine.mkdir()
    (mine / "owner").write_text("1")
    foreign = ext.root / paths.new_id()
    foreign.mkdir()
    capsys.readouterr()
    assert main(["clean"]) == 0
    cleaned = capsys.readouterr().out
    assert str(mine) in cleaned
    assert not mine.exists() and foreign.exists()


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str) -> set[str]:
    """sandbench modules imported at module level (what runs on import)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in tree.body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("sandbench")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")
                base = ".".join(up[: len(up) - node.level + 1] + ([base] if base else []))
            if base.startswith("sandbench"):
                # A package is initialised before its modules: importing from one's own
                # ancestor package depends on the names imported, not on its __init__.
                if not module.startswith(base + "."):
                    found.add(base)
                found |= {f"{base}.{a.name}" for a in node.names}
    return found


def test_no_import_cycle() -> None:
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph = {m: {i for i in _imports(p, m) if i in modules and i != m}
             for m, p in modules.items()}
    seen: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(m: str) -> None:
        seen[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if seen.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if n not in seen:
                visit(n)
        stack.pop()
        seen[m] = 2

    for m in sorted(graph):
        if m not in seen:
            visit(m)
    assert len(graph) > 50  # the walk saw the package


ISOLATION_CLASSES = ("host", "process sandbox", "container", "user-space kernel",
                     "system container", "VM")


def test_every_environment_declares_its_isolation_class() -> None:
    """The report groups rows by the class each environment declares, never by its name."""
    from sandbench.environments.registry import all_environments

    for env in all_environments():
        assert env.isolation_class in ISOLATION_CLASSES, (env.name, env.isolation_class)
        if env.family == "gvisor":
            assert env.isolation_class == "user-space kernel", env.name
        if env.family == "vm":
            assert env.isolation_class == "VM", env.name
    by_name = {e.name: e.isolation_class for e in all_environments()}
    assert by_name["host"] == "host" and by_name["runc"] == "container"


def test_registered_benchmark_appears_in_report_without_touching_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 27 item 4: a benchmark declares its presentation (title, paper figure, figure
    metrics, headline, short) and the report's heatmap, figures, CSV and the terminal
    summary show it, with no list under report/ to edit."""
    from contextlib import contextmanager

    from sandbench.benchmarks import registry as benches
    from sandbench.benchmarks.base import Benchmark
    from sandbench.report import write_report
    from sandbench.report.model import load_run
    from sandbench.report.summary import heatmap
    from tests.reportdata import meta, sample, write_run

    class Widgets(Benchmark):
        name = "widgets"
        description = "widgets a sandbox makes per second"
        headline = "widgets_per_second"
        short = "wdg"
        title = "Widget throughput (a test's benchmark)"
        figure_metrics = ("widgets_per_second",)
        profiles = {"quick": {"rounds": 5}, "paper": {"rounds": 5}}

        @contextmanager
        def session(self, env, ctx, params):  # type: ignore[no-untyped-def, override]
            yield lambda rnd: []

    benches.register(Widgets())
    try:
        recs = [sample(e, "widgets", m, v * (1 + 0.01 * r), "1/s", r, kind="rate")
                for e, v in (("host", 100.0), ("runc", 50.0)) for r in range(6)
                for m in ("widgets_per_second", "gadgets")]
        d = write_run(tmp_path / "run", recs, meta(["host", "runc"], profile="quick"))
        run = load_run(d)
        assert run.headline("widgets") == "widgets_per_second"
        heat = heatmap(run)
        assert [c.bench for c in heat["columns"]] == ["widgets"]
        assert heat["columns"][0].metric == "widgets_per_second"
        write_report(d)
        assert "Widget throughput (a test's benchmark)" in (d / "report.md").read_text()
        assert any("widgets" in p.name for p in (d / "figures").glob("*.png"))
        assert "widgets_per_second" in (d / "summary.csv").read_text()
        assert main(["report", str(d), "--terminal"]) == 0
        out = capsys.readouterr().out
        assert "wdg" in out and "wdg: widgets_per_second (1/s, higher is better)" in " ".join(
            out.split())
    finally:
        benches.unregister("widgets")
    assert "widgets" not in benches.names()


def test_every_environment_declares_its_paper_lineage() -> None:
    """The scorecard compares versions with the paper's by the lineage an environment
    declares (journaled in its facts), never by its name."""
    from sandbench.report.scorecard import PAPER_VERSIONS, likely_cause

    got = {e.name: e.paper_lineage for e in registry.all_environments()}
    assert set(got.values()) <= {"", *PAPER_VERSIONS}
    assert got["runc"] == got["docker"] == "runc" and got["crun"] == got["podman"] == ""
    assert got["gvisor-ptrace"] == got["docker-gvisor-systrap"] == got["podman-gvisor"]
    assert got["gvisor-ptrace"] == "gvisor" and got["qemu-vm"] == "qemu"
    assert got["kata-qemu"] == "kata" and got["firecracker"] == "firecracker"
    assert got["bubblewrap"] == got["host"] == ""
    # A renamed environment keeps its lineage from the facts its run recorded.
    meta = {"host": {}, "environments": {"my-sandbox": {"version": "runsc release-20250101",
                                                        "paper_lineage": "gvisor"}}}
    assert "gVisor 20250101 is 5.0 years newer" in likely_cause(["my-sandbox"], meta)

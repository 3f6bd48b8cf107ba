"""The report from constructed, realistic results directories and from a real small run,
rendered in headless Chromium."""

from __future__ import annotations

import csv
import json
import re
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest

from sandbench.errors import UsageError
from sandbench.report import envinfo, summary, write_report
from sandbench.report.figures import scale_for
from sandbench.report.model import load_runs
from sandbench.report.screenshot import CHROMIUM, probe, screenshot
from sandbench.results import Failure, now_iso
from tests.conftest import env_or_skip, run_cli
from tests.reportdata import PAPER_ENVS, meta, realistic_records, sample, write_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALL_FIGURES = {"startup", "memory", "syscall", "network", "disk_seqread", "disk_seqwrite",
               "disk_randread", "disk_randwrite", "cpu", "mysql", "nginx"}


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    w, h = struct.unpack(">II", data[16:24])
    assert data.rstrip(b"\0").endswith(b"IEND\xaeB`\x82"), f"{path} is truncated"
    return w, h


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("run")
    recs: list[object] = list(realistic_records(PAPER_ENVS, rounds=6, emulated=["qemu-vm"]))
    recs.append(Failure(env="kata-fc", bench="nginx", round=3,
                        error="Traceback ...\nSandboxError: wrk exited 1: <refused>",
                        params={}, timestamp=now_iso()))
    write_run(d, recs,  # type: ignore[arg-type]
              meta(PAPER_ENVS, unavailable={"firecracker": "no /dev/kvm: load kvm_intel"},
                   virtualized=True))
    write_report(d)
    return d


def test_report_files_and_figures(full_run: Path) -> None:
    for name in ("report.html", "report.md", "summary.csv"):
        assert (full_run / name).stat().st_size > 0
    figs = {p.stem for p in (full_run / "figures").glob("*.png")}
    assert figs == ALL_FIGURES
    for p in (full_run / "figures").glob("*.png"):
        w, h = png_size(p)
        assert 200 < w <= 1400 and h > 200  # readable at the page's width


def test_html_is_self_contained_and_complete(full_run: Path) -> None:
    html = (full_run / "report.html").read_text()
    srcs = re.findall(r'<img[^>]+src="([^"]+)"', html)
    assert len(srcs) == len(ALL_FIGURES)
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "http://" not in html and "https://" not in html
    assert "<link" not in html
    for text in ("Test CPU i7-9750H", "6.1.0-test", "paper", "firecracker",
                 "no /dev/kvm: load kvm_intel", "wrk exited 1: &lt;refused&gt;",
                 "emulated", "not comparable", "nested-virt", "W3", "Reproduction scorecard"):
        assert text in html, text


def test_answers_first_facts_last(full_run: Path) -> None:
    html = (full_run / "report.html").read_text()
    order = ['id="summary"', "Scorecard:", "Run quality:", 'id="scorecard"', 'id="figures"',
             'id="cells"', 'id="machine"', 'id="environments"', 'id="warnings"']
    at = [html.index(x) for x in order]
    assert at == sorted(at), dict(zip(order, at, strict=True))
    # One line per kind of warning, the cells folded behind <details>.
    warnings = html[html.index('id="warnings"'):]
    kinds = re.findall(r"<li><b>([\w-]+)</b>", warnings)
    assert len(kinds) == len(set(kinds)) and {"emulated", "nested-virt"} <= set(kinds)
    assert warnings.count("<details>") == len(kinds)


def test_summary_colours_better_and_worse(full_run: Path) -> None:
    run = load_runs([full_run])
    heat = summary.heatmap(run)
    cols = {c.bench: i for i, c in enumerate(heat["columns"])}
    row = {r["env"]: r["cells"] for r in heat["rows"]}
    # docker starts 120x slower than host: worse, red; kata-fc's OLTP is 2x host's: better.
    docker_start = row["docker"][cols["startup"]]
    assert docker_start.verdict == "worse" and docker_start.colour.startswith("#d")
    assert row["kata-fc"][cols["mysql"]].verdict == "better"
    assert row["host"][cols["startup"]].verdict == "baseline"
    assert row["runc"][cols["cpu"]].verdict in ("same", "better", "worse")
    assert "[" in docker_start.interval  # the interval is shown
    disk = row["docker"][cols["disk"]]
    assert "over 16" in disk.interval  # 16 cells summarised with their range
    assert summary.shade(2.0) != summary.shade(0.5)
    assert all(r["cells"][cols["startup"]].emulated for r in heat["rows"]
               if r["env"] == "qemu-vm")


def test_quality_paragraph(full_run: Path) -> None:
    run = load_runs([full_run])
    word, text = summary.quality(run)
    assert word.startswith("usable with care")
    # the first screen keeps to counts; the names and reasons are in the details section
    assert "1 emulated (TCG)" in text and "1 cell rounds failed" in text
    assert "qemu-vm" not in text and len(text) < 300, text
    details = " ".join(summary.quality_details(run))
    assert "Emulated (TCG" in details and "qemu-vm" in details and "failed" in details
    html = (full_run / "report.html").read_text()
    assert html.index('id="summary"') < html.index('id="scorecard"') \
        < html.index('id="quality"') < html.index('id="figures"')
    assert "## Run quality" in (full_run / "report.md").read_text()


def _noisy_run(tmp_path: Path, noise: dict[str, Any] | None) -> Path:
    from sandbench.results import Journal, Sample, write_meta

    out = tmp_path / "noisy"
    out.mkdir()
    m: dict[str, Any] = {"profile": "quick", "plan": {"envs": ["host", "runc"],
                                                     "benches": ["syscall"]},
                         "host": {}, "environments": {}, "baseline": "host"}
    if noise is not None:
        m["plan"]["noise"] = noise
    write_meta(out, m)
    with Journal(out) as j:
        for r in range(8):
            for env in ("host", "runc"):
                # every other runc round busy: PID 1 twice, a cron job once, one quiet
                top = {1: "process_api(1) 0.031s", 3: "process_api(1) 0.020s",
                       5: "cron(77) 0.015s"}.get(r) if env == "runc" else None
                flags = ["noisy"] if top else []
                extra = {"other_cpu_pct": 5.0 if top else 0.1,
                         **({"other_cpu_top": [top]} if top else {})}
                j.append(Sample(env, "syscall", "getpid_latency", 80.0 + r, "ns", r, {}, "t",
                                flags=flags, extra=extra, kind="latency",
                                direction="lower"))
    return out


def test_noise_counts_on_top_offenders_and_resolution_below(tmp_path: Path) -> None:
    from sandbench import noise
    from sandbench.report.model import load_run

    run = load_run(_noisy_run(tmp_path, noise.rule(noise.SCHEDSTAT)))
    text = summary.quality(run)[1]
    assert "3 of 16 rounds noisy (measured at 1 ns, per-thread schedstat)" in text
    assert "process_api" not in text  # offenders are details, not the first screen
    details = summary.quality_details(run)[0]
    assert "more than 2% of one core" in details
    assert "process_api(1) (2), cron(77) (1)" in details and "runc 3" in details


def test_noise_resolution_of_an_older_run_is_the_tick(tmp_path: Path) -> None:
    from sandbench.report.model import load_run

    text = summary.quality(load_run(_noisy_run(tmp_path, None)))[1]
    assert "measured at 10 ms clock ticks" in text


def test_report_of_a_vm_host_names_the_likely_cause(tmp_path: Path) -> None:
    """Item 1 of issue 21: the scorecard's likely cause reaches report.html and report.md
    when the host meta says it is a VM, and is not invented when it is not."""
    seen = {}
    for virt in (True, False):
        d = tmp_path / f"virt-{virt}"
        write_run(d, list(realistic_records(PAPER_ENVS, rounds=6, emulated=["qemu-vm"])),
                  meta(PAPER_ENVS, virtualized=virt))
        html = write_report(d).read_text()
        md = (d / "report.md").read_text()
        assert "does not hold" in html  # the same data, so the same failing claims
        seen[virt] = (html, md)
    html, md = seen[True]
    assert "likely cause: this host is itself a VM" in html
    assert "likely cause: this host is itself a VM" in md
    assert "ptrace platform far costlier" in md
    assert "likely cause" not in seen[False][0] and "likely cause" not in seen[False][1]


def test_markdown_and_csv(full_run: Path) -> None:
    md = (full_run / "report.md").read_text()
    assert "![Startup time](figures/startup.png)" in md
    assert "| S1 |" in md and "| W3 |" in md
    assert "no /dev/kvm" in md and "wrk exited 1" in md
    assert md.index("Cost relative to") < md.index("## Reproduction scorecard") \
        < md.index("## Figures") < md.index("## Machine") < md.index("## Warnings")
    with open(full_run / "summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    docker = next(r for r in rows if r["env"] == "docker" and r["metric"] == "startup_time")
    host = next(r for r in rows if r["env"] == "host" and r["metric"] == "startup_time")
    assert float(host["ratio_to_baseline"]) == pytest.approx(1.0)
    assert float(docker["ratio_to_baseline"]) == pytest.approx(
        float(docker["median"]) / float(host["median"]))
    disk = [r for r in rows if r["bench"] == "disk" and r["metric"] == "latency"]
    assert len(disk) == len(PAPER_ENVS) * 16
    assert {r["params"] for r in disk} >= {"bs=16k pattern=seqread", "bs=1m pattern=randwrite"}


def test_env_order_follows_plan(full_run: Path) -> None:
    with open(full_run / "summary.csv", newline="") as fh:
        envs = [r["env"] for r in csv.DictReader(fh) if r["metric"] == "startup_time"]
    assert envs == PAPER_ENVS


def test_figure_captions_say_what_how_unit_and_scale(full_run: Path) -> None:
    html = (full_run / "report.html").read_text()
    caps = re.findall(r"<figcaption>(.*?)</figcaption>", html, re.S)
    assert len(caps) == len(ALL_FIGURES)
    for cap in caps:
        assert "Measured:" in cap and "n under each name" in cap
        assert cap.count("scale on every panel") == 1
    disk = next(c for c in caps if "seqwrite" in c)
    assert "latency (us; lower is better)" in disk and "Hatched" in disk


def test_scale_kind_is_one_per_figure() -> None:
    assert scale_for([1.0, 2.0, 3.0]) == "linear"
    assert scale_for([1.0, 50.0]) == "log"
    assert scale_for([0.0, 50.0]) == "linear"  # a log axis cannot show 0


def test_older_journal_without_directions_is_uncoloured(tmp_path: Path) -> None:
    envs = ["host", "runc", "docker"]
    d = write_run(tmp_path / "run", realistic_records(envs, rounds=5, directions=False),
                  meta(envs))
    heat = summary.heatmap(load_runs([d]))
    verdicts = {h.verdict for r in heat["rows"] for h in r["cells"]}
    assert verdicts <= {"unknown", "baseline", "none", "same"}
    write_report(d)
    assert "direction unknown" in (d / "report.html").read_text()


def test_unknown_environment_gets_a_colour_and_appears(tmp_path: Path) -> None:
    envs = ["host", "runc", "podman", "zz-new"]
    recs = [sample(e, "syscall", "getpid_latency", 50.0 + 3 * i + r, "ns", r)
            for i, e in enumerate(envs) for r in range(5)]
    recs += [sample(e, "startup", "startup_time", 0.1 + i, "s", r)
             for i, e in enumerate(envs) for r in range(5)]
    d = write_run(tmp_path / "run", recs, meta(envs))
    run = load_runs([d])
    colours = [run.colour(e) for e in envs]
    assert len(set(colours)) == len(envs)
    assert run.colour("podman") not in {run.colour(e) for e in envinfo.known_env_names()
                                        if e != "podman"}
    write_report(d)
    html = (d / "report.html").read_text()
    heat = html[html.index('id="summary"'):html.index('id="scorecard"')]
    assert "podman" in heat and "zz-new" in heat
    assert "podman" in (d / "report.md").read_text()


def test_too_few_samples_for_a_box_says_so(tmp_path: Path) -> None:
    envs = ["host", "runc"]
    recs = [sample(e, "syscall", "getpid_latency", 50.0 + r, "ns", r) for e in envs
            for r in range(3)]
    d = write_run(tmp_path / "run", recs, meta(envs))
    write_report(d)
    html = (d / "report.html").read_text()
    assert "Too few samples for a box (at most 3" in html


def test_unmeasured_baseline_does_not_crash(tmp_path: Path) -> None:
    envs = ["docker", "kata-fc"]
    d = write_run(tmp_path / "run", realistic_records(envs, rounds=3), meta(envs))
    write_report(d)
    html = (d / "report.html").read_text()
    assert "n/a" in html and "not measured in this run" in html
    with open(d / "summary.csv", newline="") as fh:
        assert all(r["ratio_to_baseline"] == "" for r in csv.DictReader(fh))
    write_report(d, baseline="no-such-env")  # also fine


def test_only_measured_benchmarks_get_figures(tmp_path: Path) -> None:
    envs = ["host", "runc"]
    recs = [sample(e, "syscall", "getpid_latency", 50.0 + i + (5 if e == "runc" else 0), "ns",
                   i) for e in envs for i in range(5)]
    d = write_run(tmp_path / "run", recs, meta(envs))
    write_report(d)
    assert {p.stem for p in (d / "figures").glob("*.png")} == {"syscall"}
    assert "not measured" in (d / "report.md").read_text()
    html = (d / "report.html").read_text()
    for absent in ('id="phases"', 'id="density"', 'id="burst"', "Other published figures"):
        assert absent not in html


def test_an_unknown_benchmark_gets_a_figure(tmp_path: Path) -> None:
    envs = ["host", "runc"]
    recs = [sample(e, "fork", "fork_latency", 80.0 + r + (9 if e == "runc" else 0), "us", r,
                   kind="latency") for e in envs for r in range(5)]
    d = write_run(tmp_path / "run", recs, meta(envs))
    write_report(d)
    assert {p.stem for p in (d / "figures").glob("*.png")} == {"fork"}


def test_empty_run(tmp_path: Path) -> None:
    d = write_run(tmp_path / "run", [], meta(["host"]))
    write_report(d)
    assert "No figures" in (d / "report.html").read_text()


# --- stop reasons, resources, phases, density, burst ------------------------------------------


def _extras_run(tmp_path: Path) -> Path:
    envs = ["host", "runc", "gvisor-systrap"]
    d = tmp_path / "run"
    (d / "raw").mkdir(parents=True)
    recs: list[Any] = []
    base = {"host": 0.001, "runc": 0.03, "gvisor-systrap": 0.15}
    for r in range(5):
        for e in envs:
            phases = {"phase_prepare": 0.2, "phase_create": 0.3, "phase_start": 0.4,
                      "phase_network": 0.1}
            for ph, share in phases.items():
                recs.append(sample(e, "startup", ph, base[e] * share, "s", r, kind="time"))
            recs.append(sample(e, "startup", "startup_time", base[e], "s", r))
            ramp = [{"n": n, "start_time_s": base[e] * (1 + n / 10),
                     "mem_available_mib": 20000 - n * (2 if e == "runc" else 25),
                     "psi_some_avg10": 0.0, "private_dirty_mib": 1.5}
                    for n in range(0, 40, 5)]
            ramp_path = f"raw/{e}-density-{r}.json"
            (d / ramp_path).write_text(json.dumps(ramp))
            recs.append(sample(e, "density", "max_sandboxes", 35 + r, "count", r, kind="amount",
                               raw=ramp_path, extra={"stop_reason": "memory", "knob": "cap",
                                                     "duration_s": 12.5}))
            recs.append(sample(e, "density", "memory_per_sandbox", 2.0, "MiB", r,
                               {"method": "memavailable"}, kind="size"))
            burst_path = f"raw/{e}-burst-{r}.json"
            (d / burst_path).write_text(json.dumps([base[e] * (1 + i / 20) for i in range(10)]))
            for metric in ("burst_start_time_p50", "burst_start_time_p99",
                           "burst_start_time_max"):
                recs.append(sample(e, "burst", metric, base[e] * 1.4, "s", r, {"k": 10},
                                   kind="time", raw=burst_path))
    m = meta(envs)
    m["plan"]["benches"] = ["startup", "density", "burst"]
    m["resources"] = {"requested": {"cpus": 1.0, "memory_mib": 512},
                      "by_env": {"runc": {"cgroup": "cpu.max 100000 100000"},
                                 "gvisor-systrap": {"cgroup": "memory.max 512M"}}}
    write_run(d, recs, m)
    with open(d / "results.jsonl", "a") as fh:
        for e, why in (("runc", "converged"), ("gvisor-systrap", "cap")):
            fh.write(json.dumps({"type": "cell", "env": e, "bench": "startup", "rounds": 5,
                                 "stop_reason": why, "rel_halfwidth": 0.04,
                                 "timestamp": now_iso()}) + "\n")
    return d


def test_phases_density_burst_resources_and_stop_reasons(tmp_path: Path) -> None:
    d = _extras_run(tmp_path)
    write_report(d)
    figs = {p.stem for p in (d / "figures").glob("*.png")}
    assert {"startup", "startup_phases", "density_start", "density_memory", "burst"} <= figs
    html = (d / "report.html").read_text()
    at = [html.index(x) for x in ('id="figures"', 'id="phases"', 'id="density"',
                                  'id="burst"', 'id="machine"')]
    assert at == sorted(at)
    for text in ("Why each ramp stopped", "memory", "12.5 s", "Other published figures",
                 "kubernetes-sigs/agent-sandbox", "146 ms", "1 CPUs, 512 MiB memory",
                 "cpu.max 100000 100000", "1 converged, 1 cap", "5 rounds, cap"):
        assert text in html, text
    # Published numbers are never scored: they are not in the scorecard table.
    card = html[html.index('id="scorecard"'):html.index('id="figures"')]
    assert "agent-sandbox" not in card


# --- many hosts -----------------------------------------------------------------------------


def _host_run(path: Path, hostname: str, kernel: str, seed: int,
              params: dict[str, Any] | None = None) -> Path:
    envs = ["host", "runc", "docker"]
    m = meta(envs, kernel=kernel)
    m["host"]["hostname"] = hostname
    m["plan"]["params"] = params or {"syscall": {"iterations": 10000}}
    return write_run(path, realistic_records(envs, rounds=5, seed=seed), m)


def test_merge_hosts_into_one_report(tmp_path: Path) -> None:
    a = _host_run(tmp_path / "a", "alpha", "6.1.0-a", 1)
    b = _host_run(tmp_path / "b", "beta", "6.12.0-b", 2)
    out = tmp_path / "merged"
    html_path = write_report([a, b], out=out)
    html = html_path.read_text()
    assert "host alpha" in html and "host beta" in html
    assert "Scorecard on alpha:" in html and "Scorecard on beta:" in html
    differ = re.search(r"The hosts differ in:</b> ([^<(]*)", html)
    assert differ is not None and {"hostname", "kernel"} <= set(differ.group(1).strip().split(", "))
    facts = html[html.index('id="machine"'):]
    assert facts.index("kernel") < facts.index("cpu_model")  # differing facts first
    with open(out / "summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["host"] for r in rows} == {"alpha", "beta"}
    # Each host's ratios are against its own baseline.
    assert all(float(r["ratio_to_baseline"]) == pytest.approx(1.0) for r in rows
               if r["env"] == "host" and r["ratio_to_baseline"])
    assert not (a / "report.html").exists()
    run = load_runs([a, b])
    assert run.hosts == ["alpha", "beta"]
    heat = summary.heatmap(run)
    assert [(r["host"], r["env"]) for r in heat["rows"]] == [
        (h, e) for h in ("alpha", "beta") for e in ("host", "runc", "docker")]
    assert len({c.bench for c in heat["columns"]}) == len(heat["columns"]) == 8
    assert run.colour("runc @ alpha") == run.colour("runc @ beta")


def test_two_runs_of_one_host_are_told_apart(tmp_path: Path) -> None:
    a = _host_run(tmp_path / "a", "alpha", "6.1", 1)
    b = _host_run(tmp_path / "b", "alpha", "6.1", 2)
    assert load_runs([a, b]).hosts == ["alpha:a", "alpha:b"]


def test_merge_refuses_different_parameters(tmp_path: Path) -> None:
    a = _host_run(tmp_path / "a", "alpha", "6.1", 1, {"disk": {"size": "128M"}})
    b = _host_run(tmp_path / "b", "beta", "6.1", 2, {"disk": {"size": "10G"}})
    with pytest.raises(UsageError, match=r"disk size: alpha \"128M\" vs beta \"10G\""):
        load_runs([a, b])
    write_report([a, b], out=tmp_path / "forced", force=True)
    cp = run_cli("report", str(a), str(b), "--out", str(tmp_path / "cli"), timeout=120)
    assert cp.returncode == 2
    lines = cp.stderr.strip().splitlines()
    assert len(lines) == 1 and "disk size" in lines[0] and "--force" in lines[0]
    cp = run_cli("report", str(a), str(b), timeout=120)
    assert cp.returncode == 2 and "needs --out" in cp.stderr
    cp = run_cli("report", str(a), str(b), "--out", str(tmp_path / "cli"), "--force",
                 timeout=300)
    assert cp.returncode == 0, cp.stderr
    assert (tmp_path / "cli" / "report.html").exists()


# --- headless Chromium --------------------------------------------------------------------


def assert_renders(report: Path, tmp_path: Path, first_screen: bool = True) -> int:
    """Render report.html in headless Chromium at 1280 px: every <img> loads, the console has
    no error, the summary is on the first screen, nothing overflows sideways; a screenshot
    of the first screen is taken. Returns the number of images."""
    if shutil.which(CHROMIUM) is None:
        pytest.skip(f"chromium not installed at {CHROMIUM} (apt-get install chromium)")
    seen = probe(report)
    assert seen["broken"] == 0, seen
    assert seen["errors"] == [] and seen["console"] == [], seen
    assert seen["scroll_width"] <= seen["viewport"][0], seen
    if first_screen:
        assert seen["summary"] is not None and seen["summary"][1] <= seen["viewport"][1], seen
    shot = screenshot(report, tmp_path / "first-screen.png")
    assert png_size(shot) == (1280, 800)
    return int(seen["images"])


def test_report_renders_in_headless_chromium(full_run: Path, tmp_path: Path) -> None:
    assert assert_renders(full_run / "report.html", tmp_path) == len(ALL_FIGURES)


@pytest.mark.runtime
def test_real_small_run_renders_in_chromium(tmp_path: Path) -> None:
    env_or_skip("runc")
    out = tmp_path / "run"
    cp = run_cli("run", "--env", "host,runc", "--bench", "startup,syscall", "--rounds", "3",
                 "--out", str(out), "--no-report", timeout=600)
    assert cp.returncode == 0, cp.stderr[-2000:]
    cp = run_cli("report", str(out), timeout=300)
    assert cp.returncode == 0, cp.stderr[-2000:]
    html = out / "report.html"
    assert assert_renders(html, tmp_path) >= 2
    text = html.read_text()
    assert "runc" in text[text.index('id="summary"'):text.index('id="scorecard"')]


def test_quality_names_where_a_start_varies(tmp_path: Path) -> None:
    """A bimodal create phase (33 or 64 ms) makes startup_time vary by ~20 %: the quality
    paragraph names that phase as the cause."""
    from sandbench.report.model import load_run
    from sandbench.report.summary import quality_details
    from sandbench.results import Journal, Sample, write_meta

    out = tmp_path / "run"
    out.mkdir()
    write_meta(out, {"profile": "quick", "plan": {"envs": ["host", "runc"],
                                                 "benches": ["startup"]},
                     "host": {}, "environments": {}, "baseline": "host"})
    with Journal(out) as j:
        for r in range(8):
            create = 0.064 if r % 3 else 0.033
            phases = {"phase_prepare": 0.015, "phase_create": create, "phase_start": 0.006,
                      "phase_network": 0.0}
            for env in ("host", "runc"):
                ph = phases if env == "runc" else {k: 0.001 for k in phases}
                for m, v in {**ph, "startup_time": sum(ph.values())}.items():
                    j.append(Sample(env, "startup", m, v, "s", r, {}, "t", kind="time",
                                    direction="lower"))
    text = " ".join(quality_details(load_run(out)))
    assert "runc startup CoV" in text and "is in create (33 to 64 ms)" in text

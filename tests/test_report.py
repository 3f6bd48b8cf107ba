"""The report from a constructed, realistic results directory, and rendered in Chromium."""

from __future__ import annotations

import csv
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from sandbench.report import write_report
from sandbench.results import Failure, now_iso
from tests.reportdata import PAPER_ENVS, meta, realistic_records, sample, write_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALL_FIGURES = {"startup", "memory", "memory_log", "syscall", "network", "disk_seqread",
               "disk_seqwrite", "disk_randread", "disk_randwrite", "cpu", "mysql", "nginx"}
CHROMIUM = "/usr/bin/chromium"


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
        assert w > 200 and h > 200


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


def test_markdown_and_csv(full_run: Path) -> None:
    md = (full_run / "report.md").read_text()
    assert "![Startup time distribution](figures/startup.png)" in md
    assert "| S1 |" in md and "| W3 |" in md
    assert "no /dev/kvm" in md and "wrk exited 1" in md
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


def test_empty_run(tmp_path: Path) -> None:
    d = write_run(tmp_path / "run", [], meta(["host"]))
    write_report(d)
    assert "No figures" in (d / "report.html").read_text()


# --- headless Chromium --------------------------------------------------------------------

_MARKER_SCRIPT = """<script>
window.addEventListener('load', function () {
  var imgs = document.images, ok = imgs.length > 0;
  for (var i = 0; i < imgs.length; i++) {
    if (!(imgs[i].complete && imgs[i].naturalWidth > 0)) { ok = false; }
  }
  document.body.setAttribute('data-images-loaded', ok ? 'all' : 'missing');
  document.body.setAttribute('data-images-count', String(imgs.length));
});
</script>"""


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=180, check=False)


def assert_renders(report: Path, tmp_path: Path) -> int:
    """Render report.html in headless Chromium: a screenshot is taken and every <img> loads.
    Returns the number of images. Works on a copy with a probe script, so the report itself
    stays free of test code."""
    if shutil.which(CHROMIUM) is None:
        pytest.skip("chromium not installed (apt-get install chromium)")
    html = report.read_text()
    probe = tmp_path / "report.html"
    probe.write_text(html.replace("</body>", _MARKER_SCRIPT + "\n</body>"))
    shot = tmp_path / "shot.png"
    res = _chromium([f"--screenshot={shot}", "--window-size=1400,4000", probe.as_uri()],
                    tmp_path / "profile1")
    assert shot.exists(), res.stderr[-2000:]
    assert png_size(shot) == (1400, 4000)
    res = _chromium(["--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                    tmp_path / "profile2")
    assert 'data-images-loaded="all"' in res.stdout, res.stderr[-2000:]
    m = re.search(r'data-images-count="(\d+)"', res.stdout)
    assert m is not None
    return int(m.group(1))


def test_report_renders_in_headless_chromium(full_run: Path, tmp_path: Path) -> None:
    assert assert_renders(full_run / "report.html", tmp_path) == len(ALL_FIGURES)

"""How much time does sandbench's own timing add to what it measures?

Runs the same `runc run` of the same bundle two ways, interleaved in blocks:
  external  hyperfine (--shell=none) times the whole command;
  sandbench the startup benchmark's own code path (Popen of the runtime command, the host-side
            listener and wait_for_probe), timing launch -> probe connect and launch -> exit.
The probe connects to the host listener and exits, so `runc run` returns when the container is
gone; both timers then cover the same work, and the difference of the means is the harness's
overhead. Prints a JSON summary; the README quotes the figure.

Usage (as root, after scripts/setup.sh):  .venv/bin/python bench/harness_overhead.py [--runs 50]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from sandbench import images, net, paths, spawn
from sandbench.benchmarks.startup import wait_for_probe
from sandbench.environments import oci_spec
from sandbench.environments.base import Limits
from sandbench.environments.registry import by_name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--env", default="runc", choices=["runc", "crun"])
    args = ap.parse_args()
    if shutil.which("hyperfine") is None:
        raise SystemExit("hyperfine not found: apt-get install hyperfine")

    env = by_name(args.env)
    if not env.available().ok:
        raise SystemExit(f"{args.env} unavailable: {env.available().reason}")
    img = images.ensure("minimal")
    sid = paths.new_id()
    link = net.create(sid)
    bundle = paths.state("bundles", sid)
    root = paths.state("oci", f"overhead-{args.env}")
    runtime = shutil.which(args.env)
    assert runtime is not None
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stop = threading.Event()
    try:
        ls.bind((link.host_ip, 0))
        ls.listen(64)
        port = ls.getsockname()[1]
        cfg = oci_spec.build(
            rootfs=img.rootfs,
            args=["/sb/probe", link.host_ip, str(port), "exit"],
            env={},
            netns_path=link.netns_path,
            cgroups_path=f"/sandbench/{sid}",
            limits=Limits(),
            volume=None,
            hostname=sid,
        )
        (bundle / "config.json").write_text(json.dumps(cfg))
        argv = [runtime, "--root", str(root), "run", "--bundle", str(bundle), sid]

        # --- sandbench's timer, the startup benchmark's code path ---------------------------
        def tool_round() -> tuple[float, float]:
            t0 = time.perf_counter_ns()
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            t1, _ = wait_for_probe(ls, 30)
            spawn.wait_exit(proc, 30)  # how sandbench waits for a runtime command
            t2 = time.perf_counter_ns()
            return (t1 - t0) / 1e6, (t2 - t0) / 1e6

        # --- the external timer: hyperfine; a thread answers the probes meanwhile ----------
        def acceptor() -> None:
            ls.settimeout(0.2)
            while not stop.is_set():
                try:
                    conn, _ = ls.accept()
                    conn.close()
                except TimeoutError:
                    continue

        for _ in range(3):  # warm caches for both
            tool_round()
        tool_startup: list[float] = []
        tool_total: list[float] = []
        ext_total: list[float] = []
        blocks = 5
        per = max(1, args.runs // blocks)
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(blocks):
                for _ in range(per):
                    s, t = tool_round()
                    tool_startup.append(s)
                    tool_total.append(t)
                stop.clear()
                th = threading.Thread(target=acceptor)
                th.start()
                try:
                    export = Path(tmp) / "hf.json"
                    subprocess.run(
                        [
                            "hyperfine",
                            "--shell=none",
                            "--runs",
                            str(per),
                            "--warmup",
                            "1",
                            "--export-json",
                            str(export),
                            "--style",
                            "none",
                            " ".join(argv),
                        ],
                        check=True,
                        capture_output=True,
                        timeout=600,
                    )
                    ext_total += [
                        x * 1000 for x in json.loads(export.read_text())["results"][0]["times"]
                    ]
                finally:
                    stop.set()
                    th.join()
        summary = {
            "env": args.env,
            "runs_each": len(tool_total),
            "sandbench_startup_ms_median": statistics.median(tool_startup),
            "sandbench_total_ms_mean": statistics.mean(tool_total),
            "hyperfine_total_ms_mean": statistics.mean(ext_total),
            "sandbench_total_ms_median": statistics.median(tool_total),
            "hyperfine_total_ms_median": statistics.median(ext_total),
            "overhead_ms_mean": statistics.mean(tool_total) - statistics.mean(ext_total),
            "overhead_ms_median": statistics.median(tool_total) - statistics.median(ext_total),
            "hyperfine_stdev_ms": statistics.stdev(ext_total),
        }
        print(json.dumps(summary, indent=2))
    finally:
        stop.set()
        ls.close()
        subprocess.run(
            [runtime, "--root", str(root), "delete", "--force", sid],
            capture_output=True,
            timeout=30,
        )
        net.destroy(link)
        shutil.rmtree(bundle, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
        from sandbench.cleanup import remove_empty_cgroups

        remove_empty_cgroups()


if __name__ == "__main__":
    main()

"""What the runner adds around every round: freezing the other environments' sandboxes and
thawing the measured one (isolate), and the CPU-time check of everything else on the host
(CpuWatch before and after). Neither is inside a benchmark's timed interval, but both add to
a study's wall time, and the watch's own cost must be small against a round.

Starts N idle runc sandboxes and M idle gvisor-systrap sandboxes (real ones), then times
`isolate()` alternating between the two environments, and a CpuWatch start/stop pair, R times
each. Prints a JSON summary; the README quotes the figures.

Usage (as root, after scripts/setup.sh):
    .venv/bin/python bench/runner_overhead.py [--boxes 3] [--repeat 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from sandbench.benchmarks.base import RunContext
from sandbench.environments.base import Sandbox
from sandbench.environments.registry import by_name
from sandbench.noise import CpuWatch
from sandbench.study import isolate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boxes", type=int, default=3, help="idle sandboxes per environment")
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    envs = [by_name("runc"), by_name("gvisor-systrap")]
    ctx = RunContext(out=__import__("pathlib").Path("/tmp"), profile="quick")
    boxes: list[Sandbox] = []
    try:
        for env in envs:
            if not env.available().ok:
                raise SystemExit(f"{env.name} unavailable here")
            boxes += [env.start(ctx.spec()) for _ in range(args.boxes)]
        switch_ms: list[float] = []
        watch_ms: list[float] = []
        for i in range(args.repeat):
            t0 = time.perf_counter_ns()
            isolate(envs[i % 2].name)
            switch_ms.append((time.perf_counter_ns() - t0) / 1e6)
            t0 = time.perf_counter_ns()
            CpuWatch([]).stop()
            watch_ms.append((time.perf_counter_ns() - t0) / 1e6)
        print(json.dumps({
            "sandboxes": len(boxes),
            "isolate_ms_median": round(statistics.median(switch_ms), 2),
            "isolate_ms_max": round(max(switch_ms), 2),
            "cpuwatch_ms_median": round(statistics.median(watch_ms), 2),
            "cpuwatch_ms_max": round(max(watch_ms), 2),
        }, indent=2))
    finally:
        for sb in boxes:
            sb.stop()


if __name__ == "__main__":
    main()

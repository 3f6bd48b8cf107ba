"""Memory footprint: N idle sandboxes at once; for each, Private_Dirty (the paper's measure) and
PSS summed over every host process that belongs to it, from /proc/PID/smaps_rollup.

Which processes count, per environment (see each Sandbox.host_pids):
  host            the idle process
  runc, crun      the container's processes (no shim: the runtime exits after start)
  gvisor-*        runsc-sandbox (sentry), runsc-gofer and their children (platform stubs)
  docker*         the containerd shim and everything under it (container, or runsc's
                  sandbox, gofer and stubs)
Shared daemons (dockerd, containerd) are measured once per round as their own metric.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from sandbench import procs
from sandbench.benchmarks.base import Benchmark, RoundFn, RunContext
from sandbench.environments.base import Environment, Sandbox, SandboxSpec
from sandbench.results import Measurement

KIB_PER_MIB = 1024.0


class Memory(Benchmark):
    name = "memory"
    description = "private dirty and PSS memory per idle sandbox (MiB)"
    profiles = {
        # VMs hold their whole guest memory: 100 x 700 MB does not fit most hosts, and under
        # emulation ten boots take minutes on two cores; they get their own count.
        "quick": {"rounds": 1, "count": 10, "vm_count": 3, "settle_s": 1.0},
        "paper": {"rounds": 1, "count": 100, "vm_count": 10, "settle_s": 2.0},
    }

    @contextmanager
    def session(
        self, env: Environment, ctx: RunContext, params: dict[str, Any]
    ) -> Iterator[RoundFn]:
        def one(rnd: int) -> list[Measurement]:
            out: list[Measurement] = []
            boxes: list[Sandbox] = []
            try:
                count = int(params["vm_count" if env.family == "vm" else "count"])
                for _ in range(count):
                    spec = SandboxSpec(
                        image=self.image, log=ctx.log_path(env.name, self.name, "console.log")
                    )
                    boxes.append(env.start(spec))
                # Let lazily started helpers (gofers, stubs) appear before counting.
                time.sleep(float(params["settle_s"]))
                for i, sb in enumerate(boxes):
                    use = procs.memory_of(sb.host_pids())
                    extra = {"sandbox": i, "of": count, "processes": use.processes}
                    out.append(
                        Measurement("private_dirty", use.private_dirty_kib / KIB_PER_MIB, "MiB",
                                    extra=extra)
                    )
                    out.append(Measurement("pss", use.pss_kib / KIB_PER_MIB, "MiB", extra=extra))
                shared = env.shared_pids()
                if shared:
                    use = procs.memory_of(shared)
                    out.append(
                        Measurement(
                            "shared_daemon_private_dirty",
                            use.private_dirty_kib / KIB_PER_MIB,
                            "MiB",
                            extra={"processes": use.processes},
                        )
                    )
            finally:
                # gVisor takes ~2 s to tear a sandbox down: stop them all at once.
                with ThreadPoolExecutor(max_workers=8) as pool:
                    list(pool.map(lambda sb: sb.stop(), boxes))
            return out

        yield one

"""Restore: what a platform pays to bring a prepared sandbox back from a checkpoint instead of
starting it (gVisor `runsc checkpoint`/`restore`, QEMU migration to a file, Firecracker
snapshots, CRIU under runc and crun), against the cold start the startup benchmark measures.

Two benchmarks, one per workload that must answer the host again: `restore` (the sandbox's
first process, the probe helper serving readiness: `probe serve PORT` answers every
connection "up ...") and `restore-nginx` (nginx started in it through exec, serving the nginx
benchmark's 4 KB page; ready at the first byte-exact page). One sandbox per environment for
all rounds. A round:

  1. checkpoint: Sandbox.checkpoint(image) into a fresh directory on the benchmark volume
     (the host's disk, never tmpfs); `checkpoint_time` is the call, `checkpoint_size` the
     image's bytes. The probe must stop answering (the workload really is in the image).
  2. cold restore: the image's files are written back and dropped from the host's page cache
     (fsync + POSIX_FADV_DONTNEED; what `fincore` still finds resident is recorded), then
     Sandbox.restore(image); `restore_time` runs from the call until the workload answers,
     then `requests` more asks are timed (`after_restore_latency`: lazy page-in shows there).
  3. warm restore: Sandbox.discard() ends the restored workload, the same image (now in the
     page cache, read by step 2) is restored again and measured the same way. The sandbox
     then runs on into the next round's checkpoint.

Readiness is observed from the host only after the runtime's restore command returned (the
runtime says the workload runs); each attempt is a TCP connect bounded by `poll_timeout_s`
(a SYN sent while the sandbox is down is lost, so the bound is also the resolution; recorded).
Every connection is closed by the host first: an endpoint the sandbox closed first would wait
in TIME_WAIT, a connected state gVisor refuses to checkpoint. A restore whose readiness never
comes fails the cell with the runtime's state, the image and (nginx) the server's log.

An environment without a checkpoint path here (Environment.restore_unavailable: runc and
crun when `criu check` fails, the namespace sandboxes) gets a "not applicable" cell with the
reason, never a number.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sandbench import volume
from sandbench.benchmarks.base import Benchmark, RoundFn, RunContext
from sandbench.benchmarks.exec import round_stats
from sandbench.benchmarks.nginx import NGINX_PORT, PAGE_PATH, page, start_nginx
from sandbench.benchmarks.params import BenchParams, Profile, RoundPolicy, param
from sandbench.benchmarks.servers import (
    LOG_LINES,
    keep_log,
    layout,
    process_alive,
    read_file,
    state_of,
    wait_until,
)
from sandbench.environments.base import Environment
from sandbench.errors import NotApplicable, SandboxError
from sandbench.results import Measurement

PROBE_PORT = 18081
MIB = 1 << 20
#: Room on the volume for a round's image: guest RAM for a VM, the sandbox's memory else.
IMAGE_ROOM_BYTES = 1 << 30


def ask_probe(address: str, port: int, timeout: float) -> bool:
    """Whether the probe answers "up" there within timeout."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(64).startswith(b"up ")
    except OSError:
        return False


def get_page(address: str, port: int, path: str, timeout: float) -> bytes | None:
    """The page's body, or None when it is not served with 200 (yet). HTTP/1.1 keep-alive,
    closed by this side first: nginx's end then closes passively instead of waiting in
    TIME_WAIT, a connected state gVisor refuses to checkpoint."""
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        return body if resp.status == 200 else None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def poll(ready: Callable[[], bool], bound_s: float) -> int | None:
    """perf_counter_ns when ready() first holds, None after bound_s; ready() is bounded."""
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        if ready():
            return time.perf_counter_ns()
        time.sleep(0.001)
    return None


def image_files(image: Path) -> list[Path]:
    return sorted(p for p in image.rglob("*") if p.is_file() and not p.is_symlink())


def image_bytes(image: Path) -> int:
    return sum(p.stat().st_size for p in image_files(image))


def drop_from_cache(image: Path) -> int:
    """Write the image's files back and drop them from the host's page cache; returns the
    bytes that stayed resident (util-linux fincore), -1 when fincore cannot say."""
    for p in image_files(image):
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return resident_bytes(image)


def resident_bytes(image: Path) -> int:
    files = [str(p) for p in image_files(image)]
    if not files or shutil.which("fincore") is None:
        return -1 if files else 0
    cp = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "--output", "RES",
                         *files], capture_output=True, text=True, timeout=30)
    if cp.returncode != 0:
        return -1
    return sum(int(x) for x in cp.stdout.split() if x.isdigit())


@dataclass(frozen=True)
class RestoreParams(BenchParams):
    requests: int = param(5, high=10_000, doc="asks timed after each restore")
    poll_timeout_s: float = param(0.02, unit="s", high=60.0, doc="one readiness poll's bound")
    ready_timeout_s: int = param(10, unit="s", high=86_400, doc="each readiness wait's bound")


class Restore(Benchmark):
    """The probe variant: the workload is the probe helper serving readiness."""

    name = "restore"
    short = "restore"
    title = "Restore from a checkpoint (probe)"
    converge_on = ("restore_time",)
    headline = "restore_time"
    headline_params = {"cache": "cold"}
    figure_metrics = ("restore_time", "checkpoint_time")
    description = ("checkpoint a ready sandbox, restore it from the image cold and warm, until "
                   "the probe inside answers the host again (s)")
    #: What must answer again after a restore: "probe" or "nginx".
    workload = "probe"
    #: Not in the default study: run it with --bench restore.
    default = False
    profiles = {
        # A round is one checkpoint and two restores (gVisor here: about 3 s); "requests"
        # asks are timed after each restore. "ready_timeout_s" bounds each readiness wait
        # (a VM under emulation: its boot bound, if longer).
        "quick": Profile(RoundPolicy(3, 4), RestoreParams()),
        "paper": Profile(RoundPolicy(10, 20), RestoreParams(requests=20, ready_timeout_s=60)),
    }
    Params = RestoreParams

    @contextmanager
    def session(
        self, env: Environment, ctx: RunContext, params: RestoreParams
    ) -> Iterator[RoundFn]:
        reason = env.restore_unavailable(self.image)
        if reason:
            raise NotApplicable(reason)
        requests = params.requests
        with volume.volume(IMAGE_ROOM_BYTES) as vol, env.prepare(ctx.spec(
                image=self.image, log=ctx.log_path(env.name, self.name, "console.log"))) as sb:
            sb.launch([sb.helper("probe"), "serve", str(PROBE_PORT)])  # the with stops it
            sb.wait_ready()
            # A VM under emulation answers a connect in tens of ms: its bound grows with it.
            poll_s = max(params.poll_timeout_s, 0.25 if sb.boot_timeout_s else 0.0)
            ready_s = max(params.ready_timeout_s, float(sb.boot_timeout_s))
            lay = layout(sb, "nginx")
            err_log = f"{lay.run}/error.log"
            served = page()
            what = (f"the probe (:{PROBE_PORT})" if self.workload == "probe"
                    else f"nginx (http://{sb.address}:{NGINX_PORT}{PAGE_PATH})")

            def answers(timeout: float) -> bool:
                if self.workload == "probe":
                    return ask_probe(sb.address, PROBE_PORT, timeout)
                return get_page(sb.address, NGINX_PORT, PAGE_PATH, timeout) == served

            def up() -> bool:
                return answers(max(poll_s, 0.1) if self.workload == "nginx" else poll_s)

            def not_ready(when: str, image: Path | None = None) -> SandboxError:
                log = read_file(sb, err_log, LOG_LINES) if self.workload == "nginx" else ""
                probe = ask_probe(sb.address, PROBE_PORT, 1.0)
                return SandboxError(
                    f"{env.name}: {what} did not answer within {ready_s:g} s {when} (the "
                    f"probe, the sandbox's first process, {'answers' if probe else 'does not'})"
                    + (f"; nginx log:\n{log}" if log else ""),
                    {"state": state_of(sb), "probe_answers": probe, "server_log_tail": log,
                     **({"image": str(image), "image_files": [str(p) for p in
                                                             image_files(image)]}
                        if image else {})})

            try:
                if self.workload == "nginx":
                    pid = start_nginx(sb, lay, NGINX_PORT)
                    if not wait_until(up, ready_s, process_alive(sb, pid)):
                        raise not_ready("of its start, before any checkpoint")
                elif poll(up, ready_s) is None:
                    raise not_ready("of its start, before any checkpoint")

                times: dict[str, Any] = {}

                def restored(image: Path, cache: str, resident: int) -> list[Measurement]:
                    t0 = time.perf_counter_ns()
                    sb.restore(image)
                    t_call = time.perf_counter_ns()
                    t_up = poll(up, ready_s)
                    if t_up is None:
                        raise not_ready(f"of a {cache} restore", image)
                    lat = []
                    for _ in range(requests):
                        t = time.perf_counter()
                        ok = answers(ready_s)
                        lat.append(time.perf_counter() - t)
                        if not ok:
                            raise not_ready(f"to a request after a {cache} restore", image)
                    cell = {"cache": cache}
                    times[cache] = {"restore_s": (t_up - t0) / 1e9,
                                    "restore_call_s": (t_call - t0) / 1e9,
                                    "after_restore_s": lat}
                    facts = {"restore_call_s": (t_call - t0) / 1e9, "poll_timeout_s": poll_s,
                             "image_resident_bytes": resident, "ready": what}
                    return [
                        Measurement.time("restore_time", (t_up - t0) / 1e9, "s",
                                         params=cell, extra=facts),
                        Measurement.latency("after_restore_latency", statistics.median(lat),
                                            "s", params=cell, extra=round_stats(lat)),
                    ]

                def one(rnd: int) -> list[Measurement]:
                    image = vol.path / f"r{rnd:03d}"
                    image.mkdir()
                    t0 = time.perf_counter_ns()
                    sb.checkpoint(image)
                    took = (time.perf_counter_ns() - t0) / 1e9
                    size = image_bytes(image)
                    if ask_probe(sb.address, PROBE_PORT, 0.2):
                        raise SandboxError(f"{env.name}: the probe still answers after the "
                                           "checkpoint: the workload was not saved and stopped",
                                           {"state": state_of(sb), "image": str(image)})
                    out = [Measurement.time("checkpoint_time", took, "s",
                                            extra={"how": sb.checkpoint_how}),
                           Measurement.size("checkpoint_size", size / MIB, "MiB",
                                            extra={"files": len(image_files(image))})]
                    times.clear()
                    out += restored(image, "cold", drop_from_cache(image))
                    sb.discard()
                    out += restored(image, "warm", resident_bytes(image))
                    shutil.rmtree(image, ignore_errors=True)
                    # Every time of the round, the first requests after each restore included.
                    raw = ctx.save_raw(env.name, self.name, rnd, "restore.json", json.dumps(
                        {"checkpoint_s": took, "image_bytes": size, **times}))
                    return [replace(m, raw=raw) for m in out]

                yield one
            finally:
                if self.workload == "nginx":
                    keep_log(ctx, env, self.name, "error.log", read_file(sb, err_log))


class RestoreNginx(Restore):
    """The nginx variant: the workload is nginx serving the nginx benchmark's 4 KB page; ready
    again at the first byte-exact page after the restore."""

    name = "restore-nginx"
    short = "rst-ngx"
    title = "Restore from a checkpoint (nginx)"
    description = ("checkpoint a sandbox serving a page with nginx, restore it from the image "
                   "cold and warm, until nginx serves the page again (s)")
    workload = "nginx"
    image = "full"

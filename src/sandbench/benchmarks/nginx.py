"""Nginx (benchmark 8): nginx inside the sandbox serves a 4 KB static page; wrk on the host.

nginx runs with one worker process and `worker_connections 1024` (the paper). The sandbox starts
idle; through `exec` the tool writes the config and the page into a run directory of its own
under Sandbox.scratch_dir (servers.py), where the pid file, temporary paths and error log live
too, and starts nginx (`daemon off`, so its pid is the master's) in the background of a fixed
`sh -c` string. nginx listens on a fixed high port on Sandbox.bind_address. Access logging is
off: a log line per request would add file writes that the paper's 4 KB page test is not about.

wrk runs on the host over the sandbox's link (gVisor: through its netstack) with the profile's
connections, threads and duration; its soft open-files limit is raised to the hard limit for it
alone. Socket errors (connect, read, write, timeout) and non-2xx/3xx answers are reported as
metrics, never hidden. At the end nginx is stopped by pid (servers.stop_server), then the sandbox.
"""

from __future__ import annotations

import shlex
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sandbench.benchmarks.base import Benchmark, RoundFn, RunContext
from sandbench.benchmarks.params import BenchParams, Profile, RoundPolicy, param
from sandbench.benchmarks.servers import (
    LOG_LINES,
    Layout,
    keep_log,
    layout,
    make_run_dir,
    process_alive,
    put_file,
    read_file,
    run_tool,
    start_background,
    state_of,
    stop_server,
    tool_evidence,
    wait_until,
)
from sandbench.environments.base import Environment, Sandbox
from sandbench.errors import SandboxError
from sandbench.parsers.wrk import parse_wrk
from sandbench.results import Measurement

NGINX_PORT = 18080
PAGE_PATH = "/page"
PAGE_BYTES = 4096
WORKER_CONNECTIONS = 1024
#: Open files wrk needs besides one per connection (epoll, pipes, stdio, libraries).
WRK_SPARE_FDS = 64


def page() -> bytes:
    """A 4096-byte HTML page."""
    head = b"<!DOCTYPE html>\n<html><head><title>sandbench</title></head><body><p>\n"
    tail = b"\n</p></body></html>\n"
    out = head + b"x" * (PAGE_BYTES - len(head) - len(tail)) + tail
    assert len(out) == PAGE_BYTES
    return out


def nginx_conf(lay: Layout, port: int) -> str:
    r = lay.run
    return f"""\
# Written by sandbench for the Nginx benchmark (paper: 1 worker, 1024 connections).
# The worker runs as root: its files are under the sandbox's private scratch directory, which
# an unprivileged user may not traverse; which user serves a static page does not matter here.
user root;
worker_processes 1;
worker_rlimit_nofile 4096;
daemon off;
pid {r}/nginx.pid;
error_log {r}/error.log warn;
events {{
    worker_connections {WORKER_CONNECTIONS};
}}
http {{
    default_type text/html;
    access_log off;
    sendfile on;
    keepalive_timeout 65;
    client_body_temp_path {r}/client_body;
    proxy_temp_path {r}/proxy;
    fastcgi_temp_path {r}/fastcgi;
    uwsgi_temp_path {r}/uwsgi;
    scgi_temp_path {r}/scgi;
    server {{
        listen {lay.bind}:{int(port)};
        root {r}/www;
        location / {{
        }}
    }}
}}
"""


def server_command(lay: Layout) -> str:
    """The nginx command line, from the tool's own paths only (quoted)."""
    r = lay.run
    args = ["/usr/sbin/nginx", "-e", f"{r}/error.log", "-c", f"{r}/nginx.conf"]
    return " ".join(shlex.quote(a) for a in args)


def start_nginx(sb: Sandbox, lay: Layout, port: int) -> int:
    """Write the config and the page into the run directory and start nginx in the
    background (the nginx and restore-nginx benchmarks); its pid inside the sandbox."""
    make_run_dir(sb, lay)
    put_file(sb, f"{lay.run}/nginx.conf", nginx_conf(lay, port))
    put_file(sb, f"{lay.run}/www{PAGE_PATH}", page().decode())
    return start_background(sb, server_command(lay), f"{lay.run}/nginx.out")


#: Straight to the sandbox: a proxy from the environment (http_proxy) must not be used.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch(url: str, timeout: float = 2.0) -> bytes | None:
    """The page's body, or None when nginx does not answer 200 (yet)."""
    try:
        with _DIRECT.open(url, timeout=timeout) as resp:
            body: bytes = resp.read()
            return body if resp.status == 200 else None
    except (OSError, urllib.error.URLError, ValueError):
        return None


@dataclass(frozen=True)
class NginxParams(BenchParams):
    threads: int = param(1, high=1024, doc="wrk threads")
    connections: int = param(100, high=100_000, doc="wrk connections")
    duration_s: int = param(1, unit="s", high=3600, doc="length of one wrk run")
    ready_timeout_s: int = param(120, unit="s", high=86_400, doc="bound of nginx's start")


class Nginx(Benchmark):
    name = "nginx"
    short = "nginx"
    title = "Nginx static page (wrk)"
    paper_figure = "Nginx requests/s"
    figure_metrics = ("requests_per_second",)
    converge_on = ("requests_per_second",)
    description = "wrk from the host against nginx (1 worker) serving a 4 KB page in the sandbox"
    image = "full"
    profiles = {
        # A quick round is one 1 s wrk run (tens of thousands of requests on the host,
        # thousands under gVisor); claims test at n >= 5.
        "quick": Profile(RoundPolicy(5, 10), NginxParams()),
        "paper": Profile(RoundPolicy(10, 20), NginxParams(connections=1000, duration_s=10,
                                                          ready_timeout_s=300)),
    }
    Params = NginxParams

    @contextmanager
    def session(
        self, env: Environment, ctx: RunContext, params: NginxParams
    ) -> Iterator[RoundFn]:
        port = NGINX_PORT
        spec = ctx.spec(image=self.image, log=ctx.log_path(env.name, self.name, "console.log"))
        with env.start(spec) as sb:
            lay = layout(sb, "nginx")
            pid: int | None = None
            err_log = f"{lay.run}/error.log"
            try:
                pid = start_nginx(sb, lay, port)
                url = f"http://{sb.address}:{port}{PAGE_PATH}"
                timeout = params.ready_timeout_s
                if not wait_until(lambda: fetch(url) == page(), timeout, process_alive(sb, pid)):
                    log = (f"{read_file(sb, err_log, LOG_LINES)}\n"
                           f"{read_file(sb, f'{lay.run}/nginx.out', LOG_LINES)}")
                    raise SandboxError(
                        f"nginx in {env.name} did not serve {url} within {timeout:g} s; its "
                        f"log:\n{log}",
                        {"server_log_tail": log, "state": state_of(sb)},
                    )
                yield self._round_fn(env, ctx, params, sb, url, lay)
            finally:
                keep_log(ctx, env, self.name, "error.log", read_file(sb, err_log))
                stop_server(sb, pid, lay)

    def _round_fn(
        self,
        env: Environment,
        ctx: RunContext,
        params: NginxParams,
        sb: Sandbox,
        url: str,
        lay: Layout,
    ) -> RoundFn:
        threads = params.threads
        connections = params.connections
        duration_s = params.duration_s
        run_params = {"connections": connections, "threads": threads, "duration_s": duration_s}

        def one(rnd: int) -> list[Measurement]:
            argv = [
                "wrk",
                f"-t{threads}",
                f"-c{connections}",
                f"-d{duration_s}s",
                "--latency",
                url,
            ]
            done = run_tool(argv, timeout=duration_s + 60.0, nofile=connections + WRK_SPARE_FDS)
            raw = ctx.save_raw(env.name, self.name, rnd, "wrk.txt", done.stdout)
            try:
                res = parse_wrk(done.stdout)
            except ValueError as exc:
                log = read_file(sb, f"{lay.run}/error.log", LOG_LINES)
                raise SandboxError(
                    f"wrk (exit {done.returncode}): {exc}\nnginx log:\n{log}",
                    tool_evidence(done, sb, server_log_tail=log),
                ) from None
            errs = res.socket_errors
            p = run_params
            extra = {
                "network": sb.network_path,
                "total_requests": res.total_requests,
                "elapsed_s": res.elapsed_s,
                "transfer_bytes_per_s": res.transfer_bytes_per_s,
                "latency_avg_ms": res.latency_avg_ms,
                "latency_max_ms": res.latency_max_ms,
            }
            out = [Measurement.rate("requests_per_second", res.requests_per_s, "1/s", raw=raw,
                                    params=p, extra=extra)]
            pct = res.latency_percentiles_ms
            if 50.0 in pct:
                out.append(Measurement.latency("latency_p50", pct[50.0], "ms", raw=raw, params=p))
            if 99.0 in pct:
                out.append(Measurement.latency("latency_p99", pct[99.0], "ms", raw=raw, params=p))
            breakdown = {
                "connect": errs.connect,
                "read": errs.read,
                "write": errs.write,
                "timeout": errs.timeout,
            }
            out.append(Measurement.count("socket_errors", errs.total, "count", raw=raw, params=p,
                                         extra=breakdown))
            # wrk counts answers that are neither 2xx nor 3xx.
            out.append(Measurement.count("non_2xx", res.non_2xx_3xx, "count", raw=raw, params=p))
            return out

        return one

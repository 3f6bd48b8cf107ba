"""Network throughput (benchmark 4): one TCP stream from the host to the sandbox.

An iperf3 server runs inside the sandbox in the background (servers.start_background; its
log in a run directory of its own under Sandbox.scratch_dir, bound to Sandbox.bind_address);
the host's iperf3 client sends one stream to the sandbox's address over its link (veth,
Docker bridge, gVisor's netstack behind either, loopback for the host) for the profile's
duration, and its `-J` output is parsed. The first client of a session doubles as the
readiness probe: "connection refused" is retried until the probe bound. The server is stopped
by its pid at the end (servers.stop_server).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sandbench.benchmarks.base import Benchmark, RoundFn, RunContext
from sandbench.benchmarks.params import BenchParams, Profile, RoundPolicy, param
from sandbench.benchmarks.servers import (
    free_port,
    is_alive,
    layout,
    make_run_dir,
    read_file,
    start_background,
    state_of,
    stop_server,
)
from sandbench.environments.base import Environment, Sandbox, run_cmd
from sandbench.errors import SandboxError, StepTimeout, command_evidence
from sandbench.parsers.iperf3 import Iperf3Result, parse_iperf3_json
from sandbench.results import Measurement

#: Name of the server's run directory (servers.layout adds the sandbox's unique name).
MARKER = "sandbench-iperf3"
CONNECT_TIMEOUT_MS = 5000
RETRY_S = 0.25
_NOT_LISTENING = ("Connection refused", "unable to connect", "No route to host")


def not_listening(text: str) -> bool:
    """Whether the client's output says no server listened (worth retrying at start)."""
    match = re.search(r'"error":\s*"([^"]*)"', text)
    said = match.group(1) if match else ("" if text.lstrip().startswith("{") else text)
    return any(s in said for s in _NOT_LISTENING)


class Iperf3Server:
    """An iperf3 server inside a sandbox, started and stopped through exec."""

    def __init__(self, sb: Sandbox, port: int) -> None:
        self.sb = sb
        self.port = port
        self.lay = layout(sb, "iperf3")
        self.logfile = f"{self.lay.run}/iperf3.log"
        self.pid: int | None = None
        self.starts = 0

    def start(self) -> None:
        if self.starts == 0:
            make_run_dir(self.sb, self.lay)
        argv = ["iperf3", "-s", "-p", str(self.port), "-B", self.lay.bind,
                "--logfile", self.logfile]
        self.pid = start_background(self.sb, " ".join(argv), f"{self.lay.run}/iperf3.out")
        self.starts += 1

    def alive(self) -> bool:
        return self.pid is not None and is_alive(self.sb, self.pid)

    def log_tail(self) -> str:
        said = read_file(self.sb, self.logfile, 15)
        return "" if said.startswith("(") else said

    def stop(self) -> None:
        stop_server(self.sb, self.pid, self.lay)


@dataclass(frozen=True)
class NetworkParams(BenchParams):
    duration_s: int = param(2, unit="s", high=3600, doc="length of one iperf3 stream")


class Network(Benchmark):
    name = "network"
    short = "iperf3"
    title = "TCP throughput, host to sandbox (iperf3)"
    paper_figure = "network throughput"
    figure_metrics = ("throughput",)
    converge_on = ("throughput",)
    description = "iperf3 TCP throughput, one stream from the host into the sandbox (Gbit/s)"
    image = "full"
    profiles = {
        # A quick round is one 2 s stream (claims test at n >= 5).
        "quick": Profile(RoundPolicy(5, 10), NetworkParams()),
        "paper": Profile(RoundPolicy(5, 10), NetworkParams(duration_s=40)),
    }
    Params = NetworkParams

    @contextmanager
    def session(
        self, env: Environment, ctx: RunContext, params: NetworkParams
    ) -> Iterator[RoundFn]:
        duration = params.duration_s
        spec = ctx.spec(image=self.image, log=ctx.log_path(env.name, self.name, "console.log"))
        with env.start(spec) as sb:
            server = Iperf3Server(sb, free_port())
            try:
                server.start()

                def one(rnd: int) -> list[Measurement]:
                    restarted = False
                    if not server.alive():
                        server.start()  # died in an earlier round: that round already failed
                        restarted = True
                    text = self._client(sb, server, duration, ctx.timeouts["probe"])
                    raw = ctx.save_raw(env.name, self.name, rnd, "iperf3.json", text)
                    try:
                        res = parse_iperf3_json(text)
                    except ValueError as exc:
                        said = server.log_tail()
                        raise SandboxError(
                            f"{exc}" + (f"; server log:\n{said}" if said else ""),
                            {"client_output_tail": text[-2000:], "server_log_tail": said,
                             "state": state_of(sb)},
                        ) from None
                    return self._measurements(res, raw, sb, restarted)

                yield one
            finally:
                server.stop()

    @staticmethod
    def _client(sb: Sandbox, server: Iperf3Server, duration: int, wait_s: float) -> str:
        """The client's -J output; retries while the server is not listening yet."""
        address = sb.address
        argv = [
            "iperf3", "-c", address, "-p", str(server.port), "-t", str(duration), "-J",
            "--connect-timeout", str(CONNECT_TIMEOUT_MS),
        ]
        deadline = time.monotonic() + wait_s
        while True:
            cp = run_cmd(argv, timeout=duration + 60.0, check=False)
            text = cp.stdout if cp.stdout.strip() else cp.stdout + cp.stderr
            if not not_listening(text):
                return text
            if time.monotonic() >= deadline:
                tail = server.log_tail()
                raise StepTimeout(
                    f"iperf3 server in the sandbox did not accept connections on "
                    f"{address}:{server.port} within {wait_s:g} s; client said: "
                    f"{text.strip()[-300:]}" + (f"; server log:\n{tail}" if tail else ""),
                    command_evidence(argv, cp.returncode, cp.stdout, cp.stderr,
                                     server_log_tail=tail, state=state_of(sb)),
                )
            time.sleep(RETRY_S)

    @staticmethod
    def _measurements(
        res: Iperf3Result, raw: str, sb: Sandbox, restarted: bool
    ) -> list[Measurement]:
        if res.received_gbit_s <= 0:
            raise SandboxError(f"iperf3 measured no throughput ({res.bytes_received} bytes)",
                               {"raw": raw, "state": state_of(sb)})
        extra: dict[str, Any] = {
            "network": sb.network_path,
            "sent_gbit_s": res.sent_gbit_s,
            "duration_s": res.duration_s,
            "receiver_cpu": res.receiver_cpu_percent,
            "streams": res.num_streams,
            "iperf3_version": res.version,
        }
        if restarted:
            extra["server_restarted"] = True
        out = [
            Measurement.rate("throughput", res.received_gbit_s, "Gbit/s", raw=raw, extra=extra),
            # CPU seconds per second the sender (on the host) used: less is better.
            Measurement.rate("sender_cpu", res.sender_cpu_percent, "%", raw=raw,
                             direction="lower", extra={"network": sb.network_path}),
        ]
        if res.retransmits is not None:
            out.append(Measurement.count("retransmits", float(res.retransmits), "count",
                                         raw=raw, extra={"network": sb.network_path}))
        return out

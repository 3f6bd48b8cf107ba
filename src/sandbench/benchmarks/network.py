"""Network throughput (benchmark 4): one TCP stream from the host to the sandbox.

An iperf3 server runs inside the sandbox as a daemon (`iperf3 -s -D`, pid file and log in the
sandbox's /tmp); the host's iperf3 client sends one stream to the sandbox's address over its
link (veth, Docker bridge, gVisor's netstack behind either, loopback for the host) for the
profile's duration, and its `-J` output is parsed. The first client of a session doubles as
the readiness probe: "connection refused" is retried until the probe bound. The server is
killed by its pid file at the end; on the bare host, where the daemon is a host process, any
process still carrying the pid file's name is killed as well.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sandbench import procs
from sandbench.benchmarks.base import Benchmark, RoundFn, RunContext
from sandbench.environments.base import Environment, Sandbox, SandboxSpec, run_cmd
from sandbench.errors import SandboxError, StepTimeout
from sandbench.parsers.iperf3 import Iperf3Result, parse_iperf3_json
from sandbench.results import Measurement

#: Marker in the server's pid/log file names: finds a daemon left on the host.
MARKER = "sandbench-iperf3"
CONNECT_TIMEOUT_MS = 5000
RETRY_S = 0.25
_NOT_LISTENING = ("Connection refused", "unable to connect", "No route to host")


def not_listening(text: str) -> bool:
    """Whether the client's output says no server listened (worth retrying at start)."""
    match = re.search(r'"error":\s*"([^"]*)"', text)
    said = match.group(1) if match else ("" if text.lstrip().startswith("{") else text)
    return any(s in said for s in _NOT_LISTENING)


def free_port() -> int:
    """A TCP port free on the host's loopback (matters for the bare host, which shares it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Iperf3Server:
    """An iperf3 daemon inside a sandbox, started and stopped through exec."""

    def __init__(self, sb: Sandbox, port: int, timeout: float) -> None:
        self.sb = sb
        self.port = port
        self.timeout = timeout
        self.pidfile = f"/tmp/{MARKER}-{sb.name}.pid"
        self.logfile = f"/tmp/{MARKER}-{sb.name}.log"
        self.starts = 0

    def start(self) -> None:
        # iperf3 refuses to start while its pid file names a live (or zombie) process.
        self.sb.exec(["rm", "-f", self.pidfile], timeout=self.timeout)
        argv = [
            "iperf3", "-s", "-D", "-p", str(self.port), "-B", self.sb.address,
            "-I", self.pidfile, "--logfile", self.logfile,
        ]
        self.sb.exec(argv, timeout=self.timeout).check()
        self.starts += 1

    def alive(self) -> bool:
        # A killed daemon can linger as a zombie (kill -0 succeeds): read its state too.
        script = (
            f'p="$(cat {self.pidfile} 2>/dev/null)" && [ -n "$p" ] && kill -0 "$p" 2>/dev/null'
            ' && ! grep -q "^State:[[:space:]]*[ZX]" "/proc/$p/status"'
        )
        done = self.sb.exec(["sh", "-c", script], timeout=self.timeout)
        return done.returncode == 0

    def log_tail(self) -> str:
        with contextlib.suppress(SandboxError):
            done = self.sb.exec(["tail", "-c", "800", self.logfile], timeout=self.timeout)
            if done.returncode == 0:
                return done.stdout.strip()
        return ""

    def stop(self) -> None:
        with contextlib.suppress(SandboxError):
            self.sb.exec(
                ["sh", "-c", f'test -s {self.pidfile} && kill "$(cat {self.pidfile})"; '
                 f"sleep 0.2; rm -f {self.pidfile} {self.logfile}"],
                timeout=self.timeout,
            )


def kill_stray_servers(name: str) -> None:
    """Host processes still holding this session's pid file name (the bare host's daemon)."""
    for pid in procs.find_by_cmdline(MARKER, name, "iperf3"):
        if pid != os.getpid():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


class Network(Benchmark):
    name = "network"
    description = "iperf3 TCP throughput, one stream from the host into the sandbox (Gbit/s)"
    image = "full"
    profiles = {"quick": {"rounds": 2, "duration_s": 5}, "paper": {"rounds": 5, "duration_s": 40}}

    @contextmanager
    def session(
        self, env: Environment, ctx: RunContext, params: dict[str, Any]
    ) -> Iterator[RoundFn]:
        duration = int(params["duration_s"])
        spec = SandboxSpec(image=self.image, log=ctx.log_path(env.name, self.name, "console.log"))
        sb = env.start(spec)
        try:
            server = Iperf3Server(sb, free_port(), ctx.timeouts["exec"])
            try:
                server.start()

                def one(rnd: int) -> list[Measurement]:
                    restarted = False
                    if server.starts and not server.alive():
                        server.start()  # died in an earlier round: that round already failed
                        restarted = True
                    text = self._client(sb.address, server, duration, ctx.timeouts["probe"])
                    raw = ctx.save_raw(env.name, self.name, rnd, "iperf3.json", text)
                    try:
                        res = parse_iperf3_json(text)
                    except ValueError as exc:
                        said = server.log_tail()
                        raise ValueError(
                            f"{exc}" + (f"; server log:\n{said}" if said else "")
                        ) from None
                    return self._measurements(res, raw, sb, restarted)

                yield one
            finally:
                server.stop()
        finally:
            sb.stop()
            kill_stray_servers(sb.name)

    @staticmethod
    def _client(address: str, server: Iperf3Server, duration: int, wait_s: float) -> str:
        """The client's -J output; retries while the server is not listening yet."""
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
                    f"{text.strip()[-300:]}" + (f"; server log:\n{tail}" if tail else "")
                )
            time.sleep(RETRY_S)

    @staticmethod
    def _measurements(
        res: Iperf3Result, raw: str, sb: Sandbox, restarted: bool
    ) -> list[Measurement]:
        if res.received_gbit_s <= 0:
            raise ValueError(f"iperf3 measured no throughput ({res.bytes_received} bytes)")
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
            Measurement("throughput", res.received_gbit_s, "Gbit/s", raw=raw, extra=extra),
            Measurement("sender_cpu", res.sender_cpu_percent, "%", raw=raw,
                        extra={"network": sb.network_path}),
        ]
        if res.retransmits is not None:
            out.append(Measurement("retransmits", float(res.retransmits), "count", raw=raw,
                                   extra={"network": sb.network_path}))
        return out

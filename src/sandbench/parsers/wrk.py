"""wrk 4.1.0: parse the text report of `wrk -t T -c C -d D --latency URL` (benchmark 8).

wrk prints numbers with unit suffixes chosen per value (units.c): times as us/ms/s (and m/h past
a minute), byte counts in binary units (B, KB = 1024 B, MB, ...), request rates with metric
suffixes (k = 1000). This parser converts latencies to milliseconds and byte counts to bytes.
A failed run prints no report but one line ("unable to connect to 127.0.0.1:18089 Connection
refused") or the usage text; the ValueError quotes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_QUOTE_MAX = 2000

_TIME_TO_MS: dict[str, float] = {
    "us": 1e-3,
    "ms": 1.0,
    "s": 1e3,
    "m": 60e3,
    "h": 3600e3,
}
_BINARY = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}
_METRIC = {"": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}

_NUM = r"[0-9]+(?:\.[0-9]+)?"
_TIME = rf"({_NUM})(us|ms|s|m|h)"
_BYTES = rf"({_NUM})([KMGTP]?)B"
# wrk prints "-nan%" for the +/- Stdev column when no request completed.
_PCT = rf"(-?nan|{_NUM})%"


@dataclass(frozen=True)
class WrkSocketErrors:
    connect: int = 0
    read: int = 0
    write: int = 0
    timeout: int = 0

    @property
    def total(self) -> int:
        return self.connect + self.read + self.write + self.timeout


@dataclass(frozen=True)
class WrkResult:
    url: str
    threads: int
    connections: int
    requests_per_s: float
    transfer_bytes_per_s: float
    total_requests: int
    total_read_bytes: float  # wrk prints it rounded, e.g. "520.94MB"
    elapsed_s: float  # the run's measured length ("125978 requests in 2.10s")
    latency_avg_ms: float
    latency_stdev_ms: float
    latency_max_ms: float
    # Share of requests within one stdev of the mean; None when wrk printed "-nan%".
    latency_within_stdev_percent: float | None
    # Requests per second per thread: wrk's "Req/Sec" row (avg, stdev, max).
    thread_req_per_s_avg: float
    thread_req_per_s_stdev: float
    thread_req_per_s_max: float
    # --latency distribution: percentile (50.0, 75.0, 90.0, 99.0) -> ms; empty without it.
    latency_percentiles_ms: dict[float, float] = field(default_factory=dict)
    # "Socket errors: ..." line; all zero when wrk printed none (it does so when there are none).
    socket_errors: WrkSocketErrors = field(default_factory=WrkSocketErrors)
    # "Non-2xx or 3xx responses: N"; 0 when absent.
    non_2xx_3xx: int = 0


def parse_wrk(text: str) -> WrkResult:
    """Parse wrk 4.1.0's report; ValueError quoting wrk's text when it printed no report."""
    header = re.search(r"^Running (\S+) test @ (\S+)\s*$", text, re.MULTILINE)
    summary = re.search(rf"^\s*([0-9]+) requests in {_TIME}, {_BYTES} read\s*$", text, re.MULTILINE)
    if header is None:
        raise ValueError(_no_report(text))
    if summary is None:
        raise ValueError("wrk output ends before its 'N requests in T, B read' line (truncated?)")
    setup = _search(text, r"^\s*([0-9]+) threads and ([0-9]+) connections\s*$")
    latency = _search(text, rf"^\s*Latency\s+{_TIME}\s+{_TIME}\s+{_TIME}\s+{_PCT}\s*$")
    per_thread = _search(
        text, rf"^\s*Req/Sec\s+({_NUM})([kMGTP]?)\s+({_NUM})([kMGTP]?)\s+({_NUM})([kMGTP]?)"
    )
    rps = _search(text, rf"^Requests/sec:\s*({_NUM})\s*$")
    transfer = _search(text, rf"^Transfer/sec:\s*{_BYTES}\s*$")

    percentiles: dict[float, float] = {}
    for pct, value, unit in re.findall(
        rf"^\s*({_NUM})%\s+{_TIME}\s*$", _distribution_block(text), re.MULTILINE
    ):
        percentiles[float(pct)] = _ms(value, unit)

    errors = WrkSocketErrors()
    socket = re.search(
        r"^\s*Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)",
        text,
        re.MULTILINE,
    )
    if socket is not None:
        errors = WrkSocketErrors(*(int(n) for n in socket.groups()))
    non_2xx = re.search(r"^\s*Non-2xx or 3xx responses: ([0-9]+)", text, re.MULTILINE)

    within = latency.group(7)
    return WrkResult(
        url=header.group(2),
        threads=int(setup.group(1)),
        connections=int(setup.group(2)),
        requests_per_s=float(rps.group(1)),
        transfer_bytes_per_s=_bytes(transfer.group(1), transfer.group(2)),
        total_requests=int(summary.group(1)),
        total_read_bytes=_bytes(summary.group(4), summary.group(5)),
        elapsed_s=_ms(summary.group(2), summary.group(3)) / 1000.0,
        latency_avg_ms=_ms(latency.group(1), latency.group(2)),
        latency_stdev_ms=_ms(latency.group(3), latency.group(4)),
        latency_max_ms=_ms(latency.group(5), latency.group(6)),
        latency_within_stdev_percent=None if "nan" in within else float(within),
        thread_req_per_s_avg=_metric(per_thread.group(1), per_thread.group(2)),
        thread_req_per_s_stdev=_metric(per_thread.group(3), per_thread.group(4)),
        thread_req_per_s_max=_metric(per_thread.group(5), per_thread.group(6)),
        latency_percentiles_ms=percentiles,
        socket_errors=errors,
        non_2xx_3xx=int(non_2xx.group(1)) if non_2xx else 0,
    )


def _distribution_block(text: str) -> str:
    # Only the lines under "Latency Distribution": a Lua script's own output could contain
    # lines that look like "  50%  1.00ms".
    block = re.search(r"^\s*Latency Distribution\s*\n((?:\s+[0-9.]+%.*\n?)+)", text, re.MULTILINE)
    return block.group(1) if block else ""


def _search(text: str, pattern: str) -> re.Match[str]:
    match = re.search(pattern, text, re.MULTILINE)
    if match is None:
        raise ValueError(f"wrk output has no line matching {pattern!r}")
    return match


def _ms(value: str, unit: str) -> float:
    return float(value) * _TIME_TO_MS[unit]


def _bytes(value: str, prefix: str) -> float:
    return float(value) * _BINARY[prefix]


def _metric(value: str, prefix: str) -> float:
    return float(value) * _METRIC[prefix]


def _no_report(text: str) -> str:
    said = text.strip()
    if not said:
        return "wrk printed nothing"
    if said.startswith("Usage: wrk"):
        what = "wrk printed its usage text (bad arguments)"
        said = said.splitlines()[0].strip()
    else:
        what = "wrk printed no report"
    if len(said) > _QUOTE_MAX:
        said = said[:_QUOTE_MAX] + " [...]"
    return f"{what}; wrk said:\n{said}"

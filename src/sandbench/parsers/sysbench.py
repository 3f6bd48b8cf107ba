"""sysbench 1.0: parse the text report of `sysbench cpu run` (benchmark 6) and of an OLTP run
(benchmark 7, sandbench's lua/oltp_mix.lua), and the per-thread statement counts that
oltp_mix.lua prints with --mix-report=on.

sysbench has no machine-readable output in 1.0, so these parsers read its fixed report layout
("    events per second: 45166.44") by label. Failures are printed as "FATAL: ..." lines (or, for a
bad option, a plain sentence) instead of a report; the ValueError quotes them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_QUOTE_MAX = 2000
_NUM = r"([0-9]+(?:\.[0-9]+)?)"


@dataclass(frozen=True)
class SysbenchLatency:
    """The "Latency (ms):" block."""

    min_ms: float
    avg_ms: float
    max_ms: float
    # The percentile sysbench was asked for (--percentile, 95 by default) and its value;
    # None when --percentile=0 turned it off.
    percentile: int | None
    percentile_ms: float | None
    sum_ms: float


@dataclass(frozen=True)
class SysbenchCpuResult:
    events_per_second: float
    total_events: int
    total_time_s: float
    latency: SysbenchLatency
    threads: int
    cpu_max_prime: int | None
    version: str


@dataclass(frozen=True)
class SysbenchOltpResult:
    # "queries performed": sysbench's own classification (SELECT = read; INSERT, UPDATE,
    # DELETE = write; BEGIN/COMMIT and the like = other).
    read_queries: int
    write_queries: int
    other_queries: int
    total_queries: int
    transactions: int
    transactions_per_s: float
    queries: int
    queries_per_s: float
    ignored_errors: int
    ignored_errors_per_s: float
    reconnects: int
    reconnects_per_s: float
    total_time_s: float
    total_events: int
    latency: SysbenchLatency
    threads: int
    version: str


@dataclass(frozen=True)
class OltpMixCounts:
    """Statements oltp_mix.lua issued, summed over its worker threads (--mix-report=on)."""

    select: int
    insert: int
    update: int
    delete: int
    threads: int

    @property
    def total(self) -> int:
        return self.select + self.insert + self.update + self.delete

    def fractions(self) -> dict[str, float]:
        """Share of each class in the paper's terms: select, insert, update+delete."""
        total = self.total
        if total == 0:
            return {"select": 0.0, "insert": 0.0, "update_delete": 0.0}
        return {
            "select": self.select / total,
            "insert": self.insert / total,
            "update_delete": (self.update + self.delete) / total,
        }


def parse_sysbench_cpu(text: str) -> SysbenchCpuResult:
    """Parse `sysbench cpu --cpu-max-prime=N --threads=T --time=S run`."""
    _raise_on_failure(text, "events per second:")
    prime = _optional(text, r"Prime numbers limit:\s*([0-9]+)")
    return SysbenchCpuResult(
        events_per_second=_float(text, r"events per second:\s*" + _NUM),
        total_events=_int(text, r"total number of events:\s*([0-9]+)"),
        total_time_s=_float(text, r"total time:\s*" + _NUM + "s"),
        latency=_latency(text),
        threads=_int(text, r"Number of threads:\s*([0-9]+)"),
        cpu_max_prime=int(prime) if prime is not None else None,
        version=_version(text),
    )


def parse_sysbench_oltp(text: str) -> SysbenchOltpResult:
    """Parse the report of a sysbench OLTP `run` (SQL statistics, general statistics, latency)."""
    _raise_on_failure(text, "SQL statistics:")
    transactions, tps = _count_rate(text, "transactions")
    queries, qps = _count_rate(text, "queries")
    ignored, ignored_ps = _count_rate(text, "ignored errors")
    reconnects, reconnects_ps = _count_rate(text, "reconnects")
    return SysbenchOltpResult(
        read_queries=_int(text, r"^\s*read:\s*([0-9]+)"),
        write_queries=_int(text, r"^\s*write:\s*([0-9]+)"),
        other_queries=_int(text, r"^\s*other:\s*([0-9]+)"),
        total_queries=_int(text, r"^\s*total:\s*([0-9]+)"),
        transactions=transactions,
        transactions_per_s=tps,
        queries=queries,
        queries_per_s=qps,
        ignored_errors=ignored,
        ignored_errors_per_s=ignored_ps,
        reconnects=reconnects,
        reconnects_per_s=reconnects_ps,
        total_time_s=_float(text, r"total time:\s*" + _NUM + "s"),
        total_events=_int(text, r"total number of events:\s*([0-9]+)"),
        latency=_latency(text),
        threads=_int(text, r"Number of threads:\s*([0-9]+)"),
        version=_version(text),
    )


_MIX_LINE = re.compile(
    r"^oltp_mix: thread=([0-9]+) select=([0-9]+) insert=([0-9]+) update=([0-9]+)"
    r" delete=([0-9]+)\s*$",
    re.MULTILINE,
)


def parse_oltp_mix_report(text: str) -> OltpMixCounts:
    """Sum the "oltp_mix: thread=N select=..." lines of a run with --mix-report=on."""
    rows = _MIX_LINE.findall(text)
    if not rows:
        raise ValueError(
            "no 'oltp_mix:' lines in the sysbench output (was the run started with "
            "--mix-report=on?)" + _quote(_failure_lines(text))
        )
    threads = {int(row[0]) for row in rows}
    if len(threads) != len(rows):
        raise ValueError("a thread reported its oltp_mix counts twice; output of several runs?")
    return OltpMixCounts(
        select=sum(int(row[1]) for row in rows),
        insert=sum(int(row[2]) for row in rows),
        update=sum(int(row[3]) for row in rows),
        delete=sum(int(row[4]) for row in rows),
        threads=len(rows),
    )


def _raise_on_failure(text: str, report_marker: str) -> None:
    failures = _failure_lines(text)
    if failures:
        raise ValueError("sysbench failed" + _quote(failures))
    if report_marker not in text:
        # No FATAL line, but no report either: a bad option ("Invalid value for the
        # 'cpu_max_prime' option") or a truncated output. Quote what sysbench did print.
        what = "empty output" if not text.strip() else f"no {report_marker!r} in the output"
        raise ValueError(f"sysbench printed no report ({what})" + _quote(_tail(text)))


def _failure_lines(text: str) -> str:
    return "\n".join(
        line.strip() for line in text.splitlines() if line.lstrip().startswith(("FATAL", "ALERT"))
    )


def _tail(text: str) -> str:
    # Everything but the banner line ("sysbench 1.0.20 (using ...)"), which says nothing.
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    return "\n".join(line for line in lines if not line.startswith("sysbench "))


def _quote(said: str) -> str:
    if not said:
        return ""
    if len(said) > _QUOTE_MAX:
        said = said[-_QUOTE_MAX:]
    return f"; sysbench said:\n{said}"


def _latency(text: str) -> SysbenchLatency:
    block = re.search(r"^Latency \(ms\):\n((?:[ \t]+\S.*\n?)+)", text, re.MULTILINE)
    if block is None:
        raise ValueError("sysbench output has no 'Latency (ms):' block")
    body = block.group(1)
    pct = re.search(r"^\s*([0-9]+)th percentile:\s*" + _NUM, body, re.MULTILINE)
    return SysbenchLatency(
        min_ms=_float(body, r"^\s*min:\s*" + _NUM),
        avg_ms=_float(body, r"^\s*avg:\s*" + _NUM),
        max_ms=_float(body, r"^\s*max:\s*" + _NUM),
        percentile=int(pct.group(1)) if pct else None,
        percentile_ms=float(pct.group(2)) if pct else None,
        sum_ms=_float(body, r"^\s*sum:\s*" + _NUM),
    )


def _count_rate(text: str, label: str) -> tuple[int, float]:
    # "    transactions:                        6458   (1290.82 per sec.)"
    match = re.search(rf"^\s*{label}:\s*([0-9]+)\s+\(\s*{_NUM} per sec\.\)", text, re.MULTILINE)
    if match is None:
        raise ValueError(f"sysbench output has no '{label}:' line with a rate")
    return int(match.group(1)), float(match.group(2))


def _optional(text: str, pattern: str) -> str | None:
    match = re.search(pattern, text, re.MULTILINE)
    return match.group(1) if match else None


def _float(text: str, pattern: str) -> float:
    value = _optional(text, pattern)
    if value is None:
        raise ValueError(f"sysbench output has no match for {pattern!r}")
    return float(value)


def _int(text: str, pattern: str) -> int:
    value = _optional(text, pattern)
    if value is None:
        raise ValueError(f"sysbench output has no match for {pattern!r}")
    return int(value)


def _version(text: str) -> str:
    return _optional(text, r"^sysbench ([0-9][^\s]*)") or ""

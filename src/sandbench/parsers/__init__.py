"""Pure parsers for the output of the benchmark tools (fio, iperf3, sysbench, wrk).

Each parser takes the tool's text and returns frozen dataclasses, or raises ValueError whose
message quotes the tool's own error text, ready for the journal.
"""

from sandbench.parsers.fio import (
    FIO_RW,
    PERCENTILES,
    FioJob,
    FioLatency,
    FioPattern,
    FioResult,
    fio_argv,
    parse_fio_json,
)
from sandbench.parsers.iperf3 import Iperf3Result, parse_iperf3_json
from sandbench.parsers.sysbench import (
    OltpMixCounts,
    SysbenchCpuResult,
    SysbenchLatency,
    SysbenchOltpResult,
    parse_oltp_mix_report,
    parse_sysbench_cpu,
    parse_sysbench_oltp,
)
from sandbench.parsers.wrk import WrkResult, WrkSocketErrors, parse_wrk

__all__ = [
    "FIO_RW",
    "PERCENTILES",
    "FioJob",
    "FioLatency",
    "FioPattern",
    "FioResult",
    "Iperf3Result",
    "OltpMixCounts",
    "SysbenchCpuResult",
    "SysbenchLatency",
    "SysbenchOltpResult",
    "WrkResult",
    "WrkSocketErrors",
    "fio_argv",
    "parse_fio_json",
    "parse_iperf3_json",
    "parse_oltp_mix_report",
    "parse_sysbench_cpu",
    "parse_sysbench_oltp",
    "parse_wrk",
]

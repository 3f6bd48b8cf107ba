"""Captured outputs of the real tools (Debian 12: fio 3.33, iperf3 3.12, sysbench 1.0.20,
wrk 4.1.0), read by the parser tests."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"


def captured(name: str) -> str:
    return (DATA / name).read_text()

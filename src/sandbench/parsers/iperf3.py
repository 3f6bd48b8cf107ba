"""iperf3: parse the client's `iperf3 -J` output (benchmark 4, network throughput).

iperf3 3.x reports a failure inside the JSON ({"error": "unable to connect to server: ..."}),
often with exit status 0, so the error key is what tells a failed run apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

_QUOTE_MAX = 2000


@dataclass(frozen=True)
class Iperf3Result:
    # Throughput as measured by the receiving end (end.sum_received): what the paper reports.
    received_gbit_s: float
    # Throughput as measured by the sending end (end.sum_sent).
    sent_gbit_s: float
    retransmits: int | None  # TCP only; None where iperf3 does not report it (UDP)
    # CPU utilisation (host_total/remote_total), assigned to sender and receiver: with -R the
    # client (host) is the receiver.
    sender_cpu_percent: float
    receiver_cpu_percent: float
    duration_s: float  # measured length of the transfer (end.sum_sent.seconds)
    bytes_sent: int
    bytes_received: int
    reverse: bool
    protocol: str
    num_streams: int
    version: str


def parse_iperf3_json(text: str) -> Iperf3Result:
    """Parse iperf3 -J client output; ValueError (with iperf3's error text) on failure."""
    doc = _load(text)
    error = doc.get("error")
    if error:
        raise ValueError(f"iperf3 failed: {error}")
    try:
        start = doc["start"]
        test = start.get("test_start", {})
        end = doc["end"]
        sent = end["sum_sent"]
        received = end["sum_received"]
        cpu = end["cpu_utilization_percent"]
        reverse = bool(test.get("reverse", 0))
        host_cpu = float(cpu["host_total"])
        remote_cpu = float(cpu["remote_total"])
        retransmits = sent.get("retransmits")
        return Iperf3Result(
            received_gbit_s=float(received["bits_per_second"]) / 1e9,
            sent_gbit_s=float(sent["bits_per_second"]) / 1e9,
            retransmits=int(retransmits) if retransmits is not None else None,
            sender_cpu_percent=remote_cpu if reverse else host_cpu,
            receiver_cpu_percent=host_cpu if reverse else remote_cpu,
            duration_s=float(sent["seconds"]),
            bytes_sent=int(sent["bytes"]),
            bytes_received=int(received["bytes"]),
            reverse=reverse,
            protocol=str(test.get("protocol", "")),
            num_streams=int(test.get("num_streams", 0)),
            version=str(start.get("version", "")),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"iperf3 JSON lacks an expected field ({exc!r})") from exc


def _load(text: str) -> dict[str, Any]:
    # The JSON object starts at the first "{"; anything before it (a stray warning when the
    # caller merged stderr into stdout) is quoted if the JSON turns out to be unusable.
    start = text.find("{")
    if start < 0:
        raise ValueError(_quote("iperf3 printed no JSON output", text))
    try:
        doc, _ = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError as exc:
        what = f"iperf3 output is not complete JSON ({exc.msg} at char {exc.pos})"
        raise ValueError(_quote(what, text[:start])) from exc
    if not isinstance(doc, dict):
        raise ValueError("iperf3 JSON output is not an object")
    return doc


def _quote(what: str, text: str) -> str:
    text = text.strip()
    if not text:
        return what
    if len(text) > _QUOTE_MAX:
        text = text[:_QUOTE_MAX] + " [...]"
    return f"{what}; iperf3 said:\n{text}"

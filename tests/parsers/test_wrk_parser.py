from __future__ import annotations

import pytest

from sandbench.parsers.wrk import WrkSocketErrors, parse_wrk
from tests.parsers.captures import captured

MB = 1024 * 1024


def test_nginx() -> None:
    r = parse_wrk(captured("wrk_nginx.txt"))
    assert r.url == "http://127.0.0.1:18080/index.html"
    assert (r.threads, r.connections) == (2, 100)
    assert r.requests_per_s == 60003.58
    assert r.transfer_bytes_per_s == pytest.approx(248.12 * MB)
    assert r.total_requests == 125978
    assert r.total_read_bytes == pytest.approx(520.94 * MB)
    assert r.elapsed_s == pytest.approx(2.10)
    # "Latency     2.09ms    4.35ms  92.40ms   98.43%"
    assert (r.latency_avg_ms, r.latency_stdev_ms, r.latency_max_ms) == pytest.approx(
        (2.09, 4.35, 92.40)
    )
    assert r.latency_within_stdev_percent == 98.43
    # "Req/Sec    30.18k     6.59k   40.61k"
    assert (r.thread_req_per_s_avg, r.thread_req_per_s_stdev, r.thread_req_per_s_max) == (
        pytest.approx((30180.0, 6590.0, 40610.0))
    )
    assert r.latency_percentiles_ms == pytest.approx(
        {50.0: 1.51, 75.0: 1.98, 90.0: 2.26, 99.0: 16.21}
    )
    assert r.socket_errors == WrkSocketErrors()
    assert r.socket_errors.total == 0
    assert r.non_2xx_3xx == 0


def test_404_counts_non_2xx_and_microseconds() -> None:
    r = parse_wrk(captured("wrk_404.txt"))
    assert r.non_2xx_3xx == 75491 == r.total_requests
    # "Latency   146.09us   73.28us   2.29ms": us converted to ms.
    assert (r.latency_avg_ms, r.latency_stdev_ms, r.latency_max_ms) == pytest.approx(
        (0.14609, 0.07328, 2.29)
    )
    assert r.latency_percentiles_ms == pytest.approx(
        {50.0: 0.135, 75.0: 0.164, 90.0: 0.193, 99.0: 0.269}
    )
    assert r.transfer_bytes_per_s == pytest.approx(20.16 * MB)
    assert r.elapsed_s == pytest.approx(1.10)


def test_overload_socket_errors_and_seconds() -> None:
    # 2000 connections against nginx with worker_connections 1024.
    r = parse_wrk(captured("wrk_overload.txt"))
    assert (r.threads, r.connections) == (2, 2000)
    assert r.socket_errors == WrkSocketErrors(connect=0, read=1216, write=0, timeout=0)
    assert r.socket_errors.total == 1216
    assert r.latency_max_ms == pytest.approx(1970.0)  # "1.97s"
    assert r.latency_percentiles_ms[99.0] == pytest.approx(1010.0)  # "1.01s " (trailing blank)
    assert r.requests_per_s == 45078.86
    assert r.total_requests == 94700


def test_no_request_completed() -> None:
    # A server that accepts and never answers: zeros and "-nan%", still a report.
    r = parse_wrk(captured("wrk_timeout.txt"))
    assert r.total_requests == 0
    assert r.requests_per_s == 0.0
    assert r.transfer_bytes_per_s == 0.0  # "0.00B"
    assert r.latency_within_stdev_percent is None
    assert r.elapsed_s == pytest.approx(3.01)


@pytest.mark.parametrize(
    ("line", "ms"),
    [("1.50m", 90_000.0), ("2.00h", 7_200_000.0), ("812.00us", 0.812), ("3.20s", 3200.0)],
)
def test_latency_units(line: str, ms: float) -> None:
    text = captured("wrk_nginx.txt").replace("92.40ms", line)
    assert parse_wrk(text).latency_max_ms == pytest.approx(ms)


@pytest.mark.parametrize(
    ("value", "nbytes"), [("512.00B", 512), ("20.16KB", 20.16 * 1024), ("1.50GB", 1.5 * 1024**3)]
)
def test_transfer_units(value: str, nbytes: float) -> None:
    text = captured("wrk_nginx.txt").replace("248.12MB", value)
    assert parse_wrk(text).transfer_bytes_per_s == pytest.approx(nbytes)


def test_without_latency_flag() -> None:
    text = captured("wrk_nginx.txt")
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if "Latency Distribution" in line)
    stripped = "".join(lines[:start] + lines[start + 5 :])
    r = parse_wrk(stripped)
    assert r.latency_percentiles_ms == {}
    assert r.total_requests == 125978


def test_socket_error_with_timeouts() -> None:
    text = captured("wrk_nginx.txt").replace(
        "Requests/sec:", "  Socket errors: connect 3, read 0, write 1, timeout 42\nRequests/sec:"
    )
    assert parse_wrk(text).socket_errors == WrkSocketErrors(3, 0, 1, 42)


def test_connection_refused_quotes_wrk() -> None:
    with pytest.raises(ValueError, match="no report") as info:
        parse_wrk(captured("wrk_refused.txt"))
    assert "unable to connect to 127.0.0.1:18089 Connection refused" in str(info.value)


def test_usage() -> None:
    with pytest.raises(ValueError, match="usage") as info:
        parse_wrk(captured("wrk_usage_error.txt"))
    assert "Usage: wrk <options> <url>" in str(info.value)


def test_empty_and_truncated() -> None:
    with pytest.raises(ValueError, match="printed nothing"):
        parse_wrk("")
    text = captured("wrk_nginx.txt")
    with pytest.raises(ValueError, match="truncated"):
        parse_wrk(text[: text.index("  125978 requests")])
    with pytest.raises(ValueError, match="Requests/sec"):
        parse_wrk(text[: text.index("Requests/sec:")])

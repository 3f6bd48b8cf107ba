from __future__ import annotations

import pytest

from sandbench.parsers.sysbench import (
    parse_oltp_mix_report,
    parse_sysbench_cpu,
    parse_sysbench_oltp,
)
from tests.parsers.captures import captured


def test_cpu() -> None:
    r = parse_sysbench_cpu(captured("sysbench_cpu.txt"))
    assert r.events_per_second == 45166.44
    assert r.total_events == 90376
    assert r.total_time_s == 2.0002
    assert r.threads == 1
    assert r.cpu_max_prime == 2000
    assert r.version == "1.0.20"
    lat = r.latency
    assert (lat.min_ms, lat.avg_ms, lat.max_ms) == (0.02, 0.02, 0.26)
    assert (lat.percentile, lat.percentile_ms) == (95, 0.02)
    assert lat.sum_ms == 1989.88


def test_cpu_bad_option_quotes_sysbench() -> None:
    with pytest.raises(ValueError, match="printed no report") as info:
        parse_sysbench_cpu(captured("sysbench_cpu_error.txt"))
    assert "Invalid value for the 'cpu_max_prime' option: 'abc'" in str(info.value)


def test_cpu_without_percentile_line() -> None:
    text = captured("sysbench_cpu.txt").replace(
        "         95th percentile:                        0.02\n", ""
    )
    lat = parse_sysbench_cpu(text).latency
    assert (lat.percentile, lat.percentile_ms) == (None, None)
    assert lat.sum_ms == 1989.88


@pytest.mark.parametrize("text", ["", "\n"])
def test_cpu_empty(text: str) -> None:
    with pytest.raises(ValueError, match="empty output"):
        parse_sysbench_cpu(text)


def test_cpu_truncated() -> None:
    text = captured("sysbench_cpu.txt")
    cut = text[: text.index("Latency (ms):")]
    with pytest.raises(ValueError, match="Latency"):
        parse_sysbench_cpu(cut)


def test_oltp_run() -> None:
    r = parse_sysbench_oltp(captured("sysbench_oltp_run.txt"))
    assert (r.read_queries, r.write_queries, r.other_queries, r.total_queries) == (
        45206,
        19374,
        12916,
        77496,
    )
    assert (r.transactions, r.transactions_per_s) == (6458, 1290.82)
    assert (r.queries, r.queries_per_s) == (77496, 15489.80)
    assert (r.ignored_errors, r.ignored_errors_per_s) == (0, 0.0)
    assert (r.reconnects, r.reconnects_per_s) == (0, 0.0)
    assert r.total_time_s == 5.0024
    assert r.total_events == 6458
    assert r.threads == 2
    lat = r.latency
    assert (lat.min_ms, lat.avg_ms, lat.max_ms, lat.sum_ms) == (0.56, 1.55, 18.30, 9991.20)
    assert (lat.percentile, lat.percentile_ms) == (95, 2.14)
    # oltp_mix.lua: 7 SELECTs (read) and 3 INSERT/UPDATE/DELETE (write) per transaction, plus
    # BEGIN and COMMIT (other).
    assert r.read_queries == 7 * r.transactions
    assert r.write_queries == 3 * r.transactions
    assert r.other_queries == 2 * r.transactions


def test_oltp_run_with_ignored_errors() -> None:
    # Captured while another session held the only row's lock (innodb_lock_wait_timeout=1).
    r = parse_sysbench_oltp(captured("sysbench_oltp_run_ignored_errors.txt"))
    assert (r.ignored_errors, r.ignored_errors_per_s) == (300, 59.95)
    assert (r.transactions, r.transactions_per_s) == (2120, 423.65)
    assert r.latency.max_ms == 2693.21


def test_oltp_single_thread() -> None:
    r = parse_sysbench_oltp(captured("sysbench_oltp_run_nomix.txt"))
    assert r.threads == 1
    assert (r.transactions, r.read_queries, r.write_queries) == (2568, 17976, 7704)
    assert r.latency.percentile_ms == 1.34


def test_mix_report_is_70_20_10() -> None:
    mix = parse_oltp_mix_report(captured("sysbench_oltp_run.txt"))
    # thread=1 select=22498 insert=6428 update=1607 delete=1607
    # thread=0 select=22708 insert=6488 update=1622 delete=1622
    assert (mix.select, mix.insert, mix.update, mix.delete) == (45206, 12916, 3229, 3229)
    assert mix.threads == 2
    assert mix.total == 64580
    assert mix.fractions() == pytest.approx({"select": 0.7, "insert": 0.2, "update_delete": 0.1})
    # The script's counts agree with sysbench's own read/write split.
    r = parse_sysbench_oltp(captured("sysbench_oltp_run.txt"))
    assert mix.select == r.read_queries
    assert mix.insert + mix.update + mix.delete == r.write_queries


def test_mix_report_missing() -> None:
    with pytest.raises(ValueError, match="--mix-report=on"):
        parse_oltp_mix_report(captured("sysbench_oltp_run_nomix.txt"))


def test_mix_report_twice_from_one_thread() -> None:
    line = "oltp_mix: thread=0 select=7 insert=2 update=1 delete=0\n"
    with pytest.raises(ValueError, match="twice"):
        parse_oltp_mix_report(line + line)


def test_mix_report_empty_counts() -> None:
    mix = parse_oltp_mix_report("oltp_mix: thread=0 select=0 insert=0 update=0 delete=0\n")
    assert mix.total == 0
    assert mix.fractions() == {"select": 0.0, "insert": 0.0, "update_delete": 0.0}


@pytest.mark.parametrize(
    ("name", "said"),
    [
        (
            "sysbench_oltp_error_connect.txt",
            "FATAL: error 2002: Can't connect to server on '127.0.0.1' (115)",
        ),
        (
            "sysbench_oltp_error_notable.txt",
            "FATAL: MySQL error: 1146 \"Table 'sbtest.sbtest1' doesn't exist\"",
        ),
    ],
)
def test_oltp_fatal_quotes_sysbench(name: str, said: str) -> None:
    with pytest.raises(ValueError, match="sysbench failed") as info:
        parse_sysbench_oltp(captured(name))
    assert said in str(info.value)
    # The mix parser reports the same failure instead of only "no lines".
    with pytest.raises(ValueError) as mix_info:
        parse_oltp_mix_report(captured(name))
    assert said in str(mix_info.value)


@pytest.mark.parametrize("name", ["sysbench_oltp_prepare.txt", "sysbench_oltp_cleanup.txt"])
def test_oltp_prepare_or_cleanup_is_not_a_run(name: str) -> None:
    with pytest.raises(ValueError, match="no 'SQL statistics:'"):
        parse_sysbench_oltp(captured(name))


def test_oltp_truncated_and_empty() -> None:
    text = captured("sysbench_oltp_run.txt")
    with pytest.raises(ValueError, match="transactions"):
        parse_sysbench_oltp(text[: text.index("    transactions:")])
    with pytest.raises(ValueError, match="empty output"):
        parse_sysbench_oltp("")

from __future__ import annotations

import pytest

from sandbench.parsers.iperf3 import parse_iperf3_json
from tests.parsers.captures import captured


def test_client_forward() -> None:
    r = parse_iperf3_json(captured("iperf3_client.json"))
    # end.sum_received.bits_per_second 14493618477.714222, sum_sent 14493843094.771141
    assert r.received_gbit_s == pytest.approx(14.493618477714222)
    assert r.sent_gbit_s == pytest.approx(14.493843094771141)
    assert r.retransmits == 18
    # Forward mode: the client (host_total) sends, the server (remote_total) receives.
    assert r.sender_cpu_percent == pytest.approx(94.4321339189757)
    assert r.receiver_cpu_percent == pytest.approx(39.44660739709811)
    assert r.duration_s == pytest.approx(2.000303)
    assert r.bytes_sent == r.bytes_received == 3624009728
    assert not r.reverse
    assert (r.protocol, r.num_streams, r.version) == ("TCP", 1, "iperf 3.12")


def test_client_reverse_swaps_cpu_roles() -> None:
    r = parse_iperf3_json(captured("iperf3_client_reverse.json"))
    assert r.reverse
    assert r.received_gbit_s == pytest.approx(15.7572548144326)
    assert r.sent_gbit_s == pytest.approx(15.738016842370153)
    assert r.retransmits == 12
    # -R: the server sends, so remote_total is the sender's CPU.
    assert r.sender_cpu_percent == pytest.approx(98.87343901427037)
    assert r.receiver_cpu_percent == pytest.approx(39.652317550303415)
    assert r.bytes_received == 3939368854


def test_error_json_quotes_iperf3() -> None:
    with pytest.raises(ValueError) as info:
        parse_iperf3_json(captured("iperf3_error_refused.json"))
    assert str(info.value) == "iperf3 failed: unable to connect to server: Connection refused"


def test_truncated() -> None:
    text = captured("iperf3_client.json")
    with pytest.raises(ValueError, match="not complete JSON"):
        parse_iperf3_json(text[: len(text) - 40])


@pytest.mark.parametrize("text", ["", "   \n", "iperf3: error - unable to connect\n"])
def test_empty_or_plain_text(text: str) -> None:
    with pytest.raises(ValueError, match="no JSON output") as info:
        parse_iperf3_json(text)
    assert text.strip() in str(info.value)


def test_missing_end_section() -> None:
    with pytest.raises(ValueError, match="lacks an expected field"):
        parse_iperf3_json('{"start": {}, "intervals": [], "end": {}}')


def test_udp_without_retransmits() -> None:
    # UDP reports carry no "retransmits"; the parser gives None rather than inventing 0.
    text = captured("iperf3_client.json").replace('"retransmits":\t18,', "")
    assert parse_iperf3_json(text).retransmits is None

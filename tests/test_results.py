"""The journal survives crashes and readers refuse what they do not understand."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from sandbench.errors import UsageError
from sandbench.raw_records import BurstStarts, RampStep, ramp_json, read_ramp
from sandbench.results import (
    SCHEMA_VERSION,
    CellEnd,
    Failure,
    Journal,
    NotApplicableCell,
    Sample,
    SchemaError,
    Timing,
    read_failures,
    read_meta,
    read_records,
    read_samples,
    write_meta,
)


def _sample(i: int) -> Sample:
    return Sample("runc", "syscall", "getpid_latency", 200.0 + i, "ns", i, {}, "t")


def test_journal_round_trip(tmp_path: Path) -> None:
    with Journal(tmp_path) as j:
        for i in range(3):
            j.append(_sample(i))
        j.append(Failure("crun", "syscall", 0, "boom", {}, "t"))
    samples = read_samples(tmp_path)
    assert [s.value for s in samples] == [200.0, 201.0, 202.0]
    assert all(s.unit == "ns" for s in samples)
    assert read_failures(tmp_path)[0].error == "boom"


def test_torn_last_line_is_skipped_with_warning(tmp_path: Path) -> None:
    with Journal(tmp_path) as j:
        j.append(_sample(0))
        j.append(_sample(1))
    with open(tmp_path / "results.jsonl", "a") as fh:
        fh.write('{"type": "sample", "env": "ru')  # a kill -9 mid-write
    with pytest.warns(UserWarning, match="torn last line"):
        recs = list(read_records(tmp_path))
    assert len(recs) == 2


def test_corrupt_middle_line_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "results.jsonl").write_text('{"type": "timing", "bench": "b", "wall_s": 1, '
                                            '"spans": {}, "timestamp": "t"}\nnot json\n'
                                            '{"type": "timing"}\n')
    with pytest.raises(SchemaError, match="line 2"):
        list(read_records(tmp_path))


def test_meta_schema_checked(tmp_path: Path) -> None:
    write_meta(tmp_path, {"profile": "quick"})
    assert read_meta(tmp_path)["schema"] == SCHEMA_VERSION
    data = json.loads((tmp_path / "meta.json").read_text())
    data["schema"] = 99
    (tmp_path / "meta.json").write_text(json.dumps(data))
    with pytest.raises(SchemaError, match="schema 99"):
        read_meta(tmp_path)
    with pytest.raises(SchemaError, match="not a sandbench results directory"):
        read_meta(tmp_path / "nothing")


def test_resume_append_drops_torn_tail(tmp_path: Path) -> None:
    with Journal(tmp_path) as j:
        j.append(_sample(0))
    with open(tmp_path / "results.jsonl", "a") as fh:
        fh.write('{"type": "sample", "env": "ru')
    with pytest.warns(UserWarning, match="dropping a torn last line"), Journal(tmp_path) as j:
        j.append(_sample(1))
    assert [r.round for r in read_samples(tmp_path)] == [0, 1]


def test_a_journal_in_the_written_format_reads_back_as_its_classes(tmp_path: Path) -> None:
    """Lines as sandbench has written them (before the readers were typed, and before kind,
    direction and evidence existed) come back as the classes, unchanged on disk."""
    lines = [
        '{"env":"runc","bench":"syscall","metric":"getpid_latency","value":212,"unit":"ns",'
        '"round":0,"params":{"calls":500},"timestamp":"t","raw":null,"flags":[],"type":"sample"}',
        '{"env":"runc","bench":"disk","round":-1,"error":"teardown: boom","params":{},'
        '"timestamp":"t","type":"failure"}',
        '{"env":"runc","bench":"syscall","rounds":5,"stop_reason":"converged",'
        '"rel_halfwidth":0.01,"timestamp":"t","type":"cell"}',
    ]
    (tmp_path / "results.jsonl").write_text("\n".join(lines) + "\n")
    before = (tmp_path / "results.jsonl").read_bytes()
    sample, failure, cell = read_records(tmp_path)
    assert sample == Sample("runc", "syscall", "getpid_latency", 212, "ns", 0, {"calls": 500},
                            "t")
    assert isinstance(failure, Failure) and failure.round == -1 and failure.evidence == {}
    assert isinstance(cell, CellEnd) and (cell.rounds, cell.stop_reason) == (5, "converged")
    assert (tmp_path / "results.jsonl").read_bytes() == before


def test_written_records_read_back_equal(tmp_path: Path) -> None:
    recs = [_sample(0), Failure("crun", "syscall", 0, "boom", {}, "t", {"exit_status": 1}),
            NotApplicableCell("bwrap", "exec", "no exec", "t"),
            CellEnd("runc", "syscall", 5, "cap", None, "t"),
            Timing("syscall", 1.5, {"rounds": 1.0}, "t")]
    with Journal(tmp_path) as j:
        j.append_many(recs)
    assert list(read_records(tmp_path)) == recs


@pytest.mark.parametrize(("line", "message"), [
    ('{"type":"sample","env":"runc","bench":"b","metric":"m","value":"fast","unit":"s",'
     '"round":0,"params":{},"timestamp":"t"}',
     "line 2: sample field 'value' must be a finite number, got \"fast\""),
    ('{"type":"failure","env":"runc","bench":"b","round":-2,"error":"x","params":{},'
     '"timestamp":"t"}', "line 2: failure field 'round' must be -1 or more, got -2"),
    ('{"type":"cell","env":"runc","bench":"b","stop_reason":"cap","rel_halfwidth":null,'
     '"timestamp":"t"}', "line 2: cell record without 'rounds'"),
    ('{"type":"verdict","env":"runc"}', "line 2: unknown record type \"verdict\""),
])
def test_a_record_it_cannot_read_is_one_line_naming_file_line_and_value(
        tmp_path: Path, line: str, message: str) -> None:
    good = json.dumps(asdict(_sample(0)))
    (tmp_path / "results.jsonl").write_text(good + "\n" + line + "\n")
    with pytest.raises(SchemaError) as err:
        read_samples(tmp_path)
    text = str(err.value)
    assert text.startswith(str(tmp_path / "results.jsonl")) and message in text
    assert "\n" not in text
    assert isinstance(err.value, UsageError)  # the CLI's exit status 2


def test_ramp_and_burst_raw_outputs_round_trip_and_refuse_other_shapes() -> None:
    steps = [RampStep(n=1, start_time_s=0.2, prepare_s=0.1, mem_available_mib=900.0,
                      psi_some_avg10=None, load_1m=0.5, t_s=0.3),
             RampStep(n=2, start_time_s=0.25, mem_available_mib=890.0, psi_some_avg10=0.0,
                      t_s=0.6, private_dirty_mib=4.0, pss_mib=5.0)]
    doc = json.loads(ramp_json(steps))
    # unmeasured memory fields stay absent, as in the ramps written before the class
    assert "memory_note" not in doc[0] and "private_dirty_mib" not in doc[0]
    assert doc[0]["psi_some_avg10"] is None and doc[1]["pss_mib"] == 5.0  # "no PSI": kept
    # a ramp older than load_1m, prepare_s and t_s still reads
    old = [{"n": 1, "start_time_s": 0.2, "mem_available_mib": 900, "psi_some_avg10": None}]
    assert read_ramp(old, "old.json")[0].load_1m is None
    assert read_ramp(list(reversed(doc)), "ramp.json") == steps
    with pytest.raises(SchemaError, match="ramp.json: step 2: ramp step field 'n' must be an "
                                          "integer, got \"2\""):
        read_ramp([doc[0], {**doc[1], "n": "2"}], "ramp.json")
    burst = BurstStarts((0.1, 0.2))
    assert BurstStarts.from_json(json.loads(burst.to_json()), "b.json") == burst
    with pytest.raises(SchemaError, match="b.json: start time 2 must be a finite number"):
        BurstStarts.from_json([0.1, None], "b.json")

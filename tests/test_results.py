"""The journal survives crashes and readers refuse what they do not understand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sandbench.results import (
    SCHEMA_VERSION,
    Failure,
    Journal,
    Sample,
    SchemaError,
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
    assert [s["value"] for s in samples] == [200.0, 201.0, 202.0]
    assert all(s["unit"] == "ns" for s in samples)
    assert read_failures(tmp_path)[0]["error"] == "boom"


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
    assert [r["round"] for r in read_records(tmp_path)] == [0, 1]

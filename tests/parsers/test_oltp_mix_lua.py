"""The Lua script of benchmark 7: its declared mix and its command-line surface. The live run
against MariaDB (captured in data/sysbench_oltp_run.txt) is checked in test_sysbench_parser."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "src" / "sandbench" / "lua" / "oltp_mix.lua"


def _mix() -> dict[str, int]:
    block = re.search(r"^local MIX = \{\n(.*?)^\}", SCRIPT.read_text(), re.MULTILINE | re.DOTALL)
    assert block is not None, "MIX table not found at the top of oltp_mix.lua"
    return {k: int(v) for k, v in re.findall(r"^\s*(\w+) = ([0-9]+),", block.group(1), re.M)}


def test_mix_is_the_papers_70_20_10() -> None:
    mix = _mix()
    assert mix == {"point_selects": 7, "inserts": 2, "updates_deletes": 1}
    total = sum(mix.values())
    assert mix["point_selects"] / total == pytest.approx(0.7)
    assert mix["inserts"] / total == pytest.approx(0.2)
    assert mix["updates_deletes"] / total == pytest.approx(0.1)


@pytest.mark.skipif(shutil.which("sysbench") is None, reason="sysbench is not installed")
def test_sysbench_loads_script_and_lists_options() -> None:
    # `help` loads and runs the script's top level without a database.
    proc = subprocess.run(
        ["sysbench", str(SCRIPT), "help"], capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for option in ("--table_size=N", "--mix_report[=on|off]", "--skip_trx[=on|off]"):
        assert option in proc.stdout

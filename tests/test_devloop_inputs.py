"""The devloop inputs' pins: the image's copies match their sha256, a changed file is named."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from sandbench import paths
from sandbench.images import devloop_inputs as di


def test_pins_are_sha256_and_cover_every_input() -> None:
    pins = di.pins()
    assert di.LUA_TARBALL in pins
    assert len(pins) == len(di.WHEELS) + 1
    assert all(re.fullmatch(r"[0-9a-f]{64}", v) for v in pins.values())
    assert di.image_input().count("=") == len(pins)


def test_downloaded_inputs_match_their_pins(tmp_path: Path) -> None:
    src = paths.CACHE_DIR / "downloads" / "devloop"
    if not (src / di.LUA_TARBALL).is_file():
        pytest.skip(f"no devloop downloads in {src}: build the full image first "
                    "(sandbench image build full)")
    assert di.mismatches(src) == []
    # A copy with one byte changed is named with both digests.
    copy = tmp_path / "d"
    shutil.copytree(src, copy)
    target = copy / di.LUA_TARBALL
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF
    target.write_bytes(bytes(data))
    bad = di.mismatches(copy)
    assert len(bad) == 1 and bad[0].startswith(f"{di.LUA_TARBALL}: sha256 ")
    assert di.LUA_SHA256 in bad[0]

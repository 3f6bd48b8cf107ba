"""Where sandbench keeps its state, caches and the names it gives to what it creates.

Everything the tool creates on the host carries the prefix below or lives under STATE_DIR,
which is how `sandbench clean` tells its own leftovers from what belongs to others.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

STATE_DIR = Path(os.environ.get("SANDBENCH_STATE_DIR", "/run/sandbench"))
CACHE_DIR = Path(os.environ.get("SANDBENCH_CACHE_DIR", "/var/cache/sandbench"))

#: Prefix of container ids, namespace names and link names the tool creates.
PREFIX = "sb"
DOCKER_LABEL = "org.sandbench.owned"

_SAFE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,47}$")


def new_id() -> str:
    """A fresh sandbox id: short enough for link names (IFNAMSIZ is 16)."""
    return f"{PREFIX}{secrets.token_hex(5)}"


def check_id(value: str) -> str:
    """Ids end up in paths and link names: refuse anything but [a-z0-9-]."""
    if not _SAFE_ID.match(value):
        raise ValueError(f"unsafe identifier {value!r}: allowed are [a-z0-9-], at most 48 chars")
    return value


def state(*parts: str) -> Path:
    p = STATE_DIR.joinpath(*parts)
    p.mkdir(parents=True, exist_ok=True, mode=0o700)
    return p


def cache(*parts: str) -> Path:
    p = CACHE_DIR.joinpath(*parts)
    p.mkdir(parents=True, exist_ok=True)
    return p

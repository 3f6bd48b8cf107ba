"""DIR/fleet.json: the fleet run's record, each host's state written as it changes.

States: queued, setting up, running (with the journal's line count), fetching, fetched,
failed (with Ansible's evidence), unreachable. Written whole to a temporary file and
renamed, so a reader (or a resume after a kill) never sees half a record."""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sandbench.errors import UsageError

SCHEMA = 1
STATES = ("queued", "setting up", "running", "fetching", "fetched", "failed", "unreachable")
#: States a resume runs again.
UNFINISHED = frozenset(STATES) - {"fetched"}
FILE = "fleet.json"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class FleetState:
    """The record and its lock: lanes run in threads and each updates its own host."""

    def __init__(self, directory: Path, data: dict[str, Any]) -> None:
        self.directory = directory
        self.data = data
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self.directory / FILE

    def host(self, name: str) -> dict[str, Any]:
        hosts: dict[str, dict[str, Any]] = self.data["hosts"]
        return hosts[name]

    def update(self, name: str, **fields: Any) -> None:
        with self._lock:
            self.data["hosts"][name].update(fields, updated=now())
            self._write()

    def set(self, **fields: Any) -> None:
        with self._lock:
            self.data.update(fields)
            self._write()

    def _write(self) -> None:
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=False) + "\n",
                       encoding="utf-8")
        os.replace(tmp, self.path)

    def write(self) -> None:
        with self._lock:
            self._write()


def load(directory: Path) -> FleetState:
    path = directory / FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--resume {str(directory)!r}: no {FILE} there; not a fleet run's "
                         "directory") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"--resume {str(directory)!r}: {FILE} unreadable: {e}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA \
            or not isinstance(data.get("hosts"), dict):
        raise UsageError(f"--resume {str(directory)!r}: {FILE} is not a fleet record of "
                         f"schema {SCHEMA}; this sandbench cannot resume it")
    return FleetState(directory, data)

"""Facts about the runtime binaries sandbench drives (one place for every environment)."""

from __future__ import annotations

import subprocess


def version_of(binary: str, flag: str = "--version") -> str:
    """The first line `binary --version` prints, or "unknown" when it cannot be run or says
    nothing: facts are recorded, never guessed."""
    try:
        cp = subprocess.run([binary, flag], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return cp.stdout.splitlines()[0].strip() if cp.stdout.strip() else "unknown"

"""Bounded waits for a freshly spawned VMM's control socket (QMP, Firecracker's API)."""

from __future__ import annotations

import time
from collections.abc import Callable

from sandbench.errors import SandboxError, StepTimeout

POLL_S = 0.005


def until_answers(
    try_once: Callable[[], object], bound: float, alive: Callable[[], bool] | None, what: str
) -> None:
    """Call try_once until it returns without OSError or SandboxError; a VMM that exited is
    reported at once, one that stays silent after `bound` seconds as a StepTimeout."""
    deadline = time.monotonic() + bound
    while True:
        try:
            try_once()
            return
        except (OSError, SandboxError) as e:
            if alive is not None and not alive():
                raise SandboxError(f"the VMM exited before {what} answered ({e})") from None
            if time.monotonic() > deadline:
                raise StepTimeout(f"{what} did not answer within {bound:g} s ({e})") from None
            time.sleep(POLL_S)

"""Errors a user can cause (exit 2, one line) versus failures of a measured environment."""

from __future__ import annotations

from typing import Any


class UsageError(Exception):
    """Bad input from the user: the CLI prints the message on one line and exits with 2."""


class SandboxError(Exception):
    """An environment failed to start, answer or stop: the cell fails, the study goes on.

    `evidence` is what a person needs to find the cause without rerunning: the command, its
    exit status, the tails of its stdout and stderr and, for a sandbox, its state. The runner
    stores it in the failure record of the journal."""

    def __init__(self, message: str, evidence: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.evidence: dict[str, Any] = dict(evidence or {})


class NotApplicable(Exception):
    """The benchmark has no meaning in this environment (e.g. it has no way to run a command
    in a running sandbox): the cell is recorded "not applicable" with the reason, never a
    number, and is not a failure. Raised by a benchmark's session before it measures."""

    def __init__(self, reason: str, evidence: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.evidence: dict[str, Any] = dict(evidence or {})


class PartialRound(SandboxError):
    """A round measured what it returns, then failed (e.g. a sandbox would not stop after its
    memory was read): the runner journals `measured` and this failure beside them, in one
    write, instead of discarding finished samples."""

    def __init__(self, message: str, measured: list[Any],
                 evidence: dict[str, Any] | None = None) -> None:
        super().__init__(message, evidence)
        self.measured = list(measured)


class StepTimeout(SandboxError):
    """An external step (runtime start, probe, tool) ran past its bound."""


#: How much of a command's output evidence keeps (the end is where the error is).
EVIDENCE_TAIL = 2000


def command_evidence(
    argv: list[str], returncode: int | None, stdout: str | bytes | None,
    stderr: str | bytes | None, **more: Any,
) -> dict[str, Any]:
    """The evidence of one external command, outputs cut to their last EVIDENCE_TAIL chars."""

    def tail(x: str | bytes | None) -> str:
        if x is None:
            return ""
        if isinstance(x, bytes):
            x = x.decode(errors="replace")
        return x[-EVIDENCE_TAIL:]

    return {"command": list(argv), "exit_status": returncode, "stdout_tail": tail(stdout),
            "stderr_tail": tail(stderr), **more}

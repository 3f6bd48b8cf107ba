"""Errors a user can cause (exit 2, one line) versus failures of a measured environment."""


class UsageError(Exception):
    """Bad input from the user: the CLI prints the message on one line and exits with 2."""


class SandboxError(Exception):
    """An environment failed to start, answer or stop: the cell fails, the study goes on."""


class StepTimeout(SandboxError):
    """An external step (runtime start, probe, tool) ran past its bound."""

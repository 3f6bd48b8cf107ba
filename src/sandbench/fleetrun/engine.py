"""One playbook on one host through ansible-runner's Python API.

ansible-runner rather than a bare `ansible-playbook` subprocess: its event stream gives each
task's result per host as a dict (no parsing of Ansible's human output), its `status`/`rc`
say how the play ended, and `cancel_callback` stops a play when the user interrupts."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

#: Longest tail of a task's output kept as evidence.
TAIL = 2000


def playbook(name: str) -> Path:
    """A playbook shipped as package data."""
    path = Path(str(resources.files("sandbench.fleetrun") / "playbooks" / name))
    if not path.is_file():
        raise FileNotFoundError(path)
    return path


def ansible_playbook_binary() -> str | None:
    """ansible-playbook of this Python's environment first (the venv setup.sh made), then
    PATH: the venv's bin is not on PATH when sandbench is run as .venv/bin/sandbench."""
    here = Path(sys.executable).parent / "ansible-playbook"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which("ansible-playbook")


def missing_engine() -> str | None:
    """Why the engine cannot run here, or None."""
    try:
        import ansible_runner  # noqa: F401
    except ImportError:
        return ("ansible-runner is not installed in this Python; run scripts/setup.sh (it "
                "installs the fleet extra: ansible-core, ansible-runner)")
    if ansible_playbook_binary() is None:
        return "ansible-playbook not found (install ansible-core: run scripts/setup.sh)"
    return None


def _tail(value: Any) -> Any:
    if isinstance(value, str) and len(value) > TAIL:
        return "..." + value[-TAIL:]
    return value


def evidence_of(res: dict[str, Any]) -> dict[str, Any]:
    """What a person needs from a failed task's result: message, command, status, tails."""
    keep = ("msg", "cmd", "rc", "stdout", "stderr", "module_stderr", "module_stdout",
            "unreachable", "finished", "ansible_job_id")
    return {k: _tail(res[k]) for k in keep if k in res and res[k] not in ("", None, [])}


@dataclass
class Outcome:
    """How one play on one host ended: `results` holds each task's last result by name."""

    status: str
    rc: int
    unreachable: bool = False
    failed_task: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return self.status == "successful" and self.rc == 0 and not self.unreachable

    def why(self) -> str:
        """One line: the failed task and Ansible's message."""
        if self.ok:
            return ""
        msg = str(self.evidence.get("msg") or self.evidence.get("stderr")
                  or self.evidence.get("module_stderr") or f"ansible status {self.status}")
        msg = " ".join(msg.split())[:300]
        where = f"task {self.failed_task!r}: " if self.failed_task else ""
        return f"{'unreachable: ' if self.unreachable else ''}{where}{msg}"


def run_play(
    name: str,
    inventory: Path,
    host: str,
    extravars: dict[str, Any],
    work: Path,
    cancelled: Callable[[], bool],
    on_task: Callable[[str], None] | None = None,
) -> Outcome:
    """Run playbook `name` on `host` only (`--limit`), with the private data directory
    `work` (a temporary directory of the fleet run, removed at its end)."""
    import ansible_runner

    outcome = Outcome(status="unknown", rc=-1)

    def handler(event: dict[str, Any]) -> bool:
        kind = str(event.get("event", ""))
        data = event.get("event_data") or {}
        task = str(data.get("task", ""))
        raw = data.get("res")
        res: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if kind == "playbook_on_task_start" and on_task is not None:
            on_task(task)
        elif kind == "runner_on_ok":
            outcome.results[task] = res
        elif kind == "runner_on_skipped":
            outcome.skipped.add(task)
        elif kind in ("runner_on_failed", "runner_on_unreachable"):
            if data.get("ignore_errors"):
                outcome.results[task] = res
            else:
                outcome.failed_task = task
                outcome.evidence = evidence_of(res)
                outcome.unreachable = kind == "runner_on_unreachable"
        return False  # ansible-runner keeps no event files for us: the outcome holds them

    envvars = {
        # Ansible's interpreter discovery warns on every host; Debian's python3 is expected.
        "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "True",
        "ANSIBLE_LOCAL_TEMP": str(work / "ansible-tmp"),
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        # ansible-runner spawns `ansible-playbook` by name: the one beside this Python first.
        "PATH": os.pathsep.join([str(Path(str(ansible_playbook_binary())).parent),
                                 os.environ.get("PATH", "/usr/bin:/bin")]),
    }
    r = ansible_runner.run(
        private_data_dir=str(work),
        playbook=str(playbook(name)),
        inventory=str(inventory.resolve()),
        limit=host,
        extravars=extravars,
        envvars=envvars,
        event_handler=handler,
        cancel_callback=cancelled,
        quiet=True,
        ident=f"{host}-{name.removesuffix('.yml')}-{os.getpid()}-{id(outcome)}",
        rotate_artifacts=1,
    )
    outcome.status = str(r.status)
    outcome.rc = int(r.rc) if r.rc is not None else -1
    if not outcome.ok and not outcome.evidence:
        # No task failed, yet the play did (a syntax error, a bad inventory, a cancel):
        # ansible-playbook's own output is the evidence.
        try:
            out = r.stdout.read()
        except (OSError, AttributeError, ValueError):
            out = ""
        outcome.evidence = {"msg": _tail(str(out).strip()) or f"ansible status {r.status}"}
    return outcome

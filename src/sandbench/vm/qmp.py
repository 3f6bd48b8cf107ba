"""A minimal QMP client (QEMU Machine Protocol, JSON lines over a unix socket).

One connection per command: QEMU's monitor socket serves one client at a time, and a
connection held open across a sandbox's life would make every other user (a person with
socat, `sandbench clean`) wait. Every wait is bounded.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sandbench.errors import SandboxError
from sandbench.vm.wait import until_answers

TIMEOUT_S = 10.0


class Qmp:
    def __init__(self, path: Path, timeout: float = TIMEOUT_S) -> None:
        self.path = path
        self.timeout = timeout

    def wait(self, bound: float, alive: Callable[[], bool] | None = None) -> None:
        """Until QEMU accepts a monitor connection (its devices are set up)."""
        until_answers(lambda: self.execute("query-status"), bound, alive, f"QMP {self.path}")

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run one command; its "return" value. An "error" reply raises SandboxError."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(self.timeout)
            s.connect(str(self.path))
            f = s.makefile("rwb")
            greeting = self._read(f)
            if "QMP" not in greeting:
                raise SandboxError(f"not a QMP greeting: {greeting}")
            self._call(f, "qmp_capabilities", None)
            return self._call(f, command, arguments)

    def _call(self, f: Any, command: str, arguments: dict[str, Any] | None) -> Any:
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        f.write(json.dumps(msg).encode() + b"\n")
        f.flush()
        while True:
            reply = self._read(f)
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                err = reply["error"]
                raise SandboxError(
                    f"QMP {command}: {err.get('class')}: {err.get('desc')}",
                    {"command": ["qmp", command, json.dumps(arguments or {})], "reply": reply},
                )
            # anything else is an asynchronous event: skip it

    @staticmethod
    def _read(f: Any) -> dict[str, Any]:
        line = f.readline()
        if not line:
            raise SandboxError("QEMU closed its monitor connection")
        data: dict[str, Any] = json.loads(line)
        return data

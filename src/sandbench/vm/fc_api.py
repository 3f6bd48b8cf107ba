"""Firecracker's API: HTTP/1.1 with JSON bodies over the unix socket given by --api-sock
(firecracker.yaml: PUT /boot-source, /machine-config, /drives/{id}, /network-interfaces/{id},
/vsock, /actions {"action_type": "InstanceStart"}; PATCH /vm {"state": "Paused"|"Resumed"}).
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sandbench.errors import SandboxError
from sandbench.vm.wait import until_answers

TIMEOUT_S = 10.0


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(str(self._path))
        self.sock = s


def requests_for(config: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """The API calls that set up the machine a --config-file JSON describes (the same objects
    are the PUT bodies), in the order the API accepts them; InstanceStart is not included."""
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("PUT", "/boot-source", config["boot-source"]),
        ("PUT", "/machine-config", config["machine-config"]),
    ]
    calls += [("PUT", f"/drives/{d['drive_id']}", d) for d in config.get("drives", [])]
    calls += [
        ("PUT", f"/network-interfaces/{n['iface_id']}", n)
        for n in config.get("network-interfaces", [])
    ]
    if "vsock" in config:
        calls.append(("PUT", "/vsock", config["vsock"]))
    return calls


#: A snapshot's two files in its image directory (Firecracker's snapshotting docs).
SNAPSHOT_STATE = "vmstate"
SNAPSHOT_MEMORY = "memory"


def snapshot_create_requests(image_dir: Path) -> list[tuple[str, str, dict[str, Any]]]:
    """Pause the running machine, then a full snapshot: device state and guest memory."""
    return [
        ("PATCH", "/vm", {"state": "Paused"}),
        ("PUT", "/snapshot/create", {"snapshot_type": "Full",
                                     "snapshot_path": str(image_dir / SNAPSHOT_STATE),
                                     "mem_file_path": str(image_dir / SNAPSHOT_MEMORY)}),
    ]


def snapshot_load_request(image_dir: Path) -> tuple[str, str, dict[str, Any]]:
    """The one call a fresh Firecracker process takes to become the snapshotted machine and
    run it (the memory file as a File backend; resume_vm: no separate PATCH /vm)."""
    return ("PUT", "/snapshot/load", {
        "snapshot_path": str(image_dir / SNAPSHOT_STATE),
        "mem_backend": {"backend_type": "File",
                        "backend_path": str(image_dir / SNAPSHOT_MEMORY)},
        "enable_diff_snapshots": False,
        "resume_vm": True,
    })


class FirecrackerApi:
    def __init__(self, path: Path, timeout: float = TIMEOUT_S) -> None:
        self.path = path
        self.timeout = timeout

    def call(self, method: str, url: str, body: dict[str, Any] | None = None) -> Any:
        conn = _UnixConnection(self.path, self.timeout)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json", "Accept": "application/json"}
            conn.request(method, url, body=payload, headers=headers)
            resp = conn.getresponse()
            text = resp.read().decode(errors="replace")
        finally:
            conn.close()
        if resp.status >= 300:
            try:
                fault = json.loads(text).get("fault_message", text)
            except ValueError:
                fault = text
            raise SandboxError(
                f"Firecracker API {method} {url}: HTTP {resp.status}: {fault}",
                {"command": ["firecracker-api", method, url, json.dumps(body)],
                 "exit_status": resp.status, "stdout_tail": text[-2000:]},
            )  # fmt: skip
        return json.loads(text) if text.strip() else None

    def wait(self, bound: float, alive: Callable[[], bool]) -> None:
        """Until the API answers GET / (the process is up and serving)."""
        until_answers(lambda: self.call("GET", "/"), bound, alive, f"Firecracker API {self.path}")

"""Host side of the guest agent protocol (helpers/agent.c), over QEMU's virtio-serial chardev
socket or Firecracker's vsock unix socket (`CONNECT <port>\\n` handshake, then the same frames).

Frames are a 4-byte big-endian length and that many bytes:
  request  kind:u8 id:u32 timeout_ms:u32 nargs:u32 nenv:u32, NUL-terminated argv then K=V env
  response status:u8 id:u32 rc:i32 out_len:u32 out err_len:u32 err
kind: P ping, X run and wait, B start in the background (stdio /dev/null; rc = its pid).
status: 0 done, 1 the agent killed the command at its timeout, 2 the agent could not start it.
Every wait on the host is bounded; a reply whose id is not the request's (a late answer to a
request the host gave up on) is skipped.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sandbench.errors import SandboxError, StepTimeout
from sandbench.sandbox_values import Completed

HEADER = struct.Struct(">BIIII")
REPLY = struct.Struct(">BIiI")
#: The host waits this much longer than the timeout the agent enforces itself.
MARGIN_S = 15.0
ST_DONE, ST_TIMEOUT, ST_NOSTART = 0, 1, 2


@dataclass(frozen=True)
class Reply:
    status: int
    rid: int
    rc: int
    stdout: bytes
    stderr: bytes


def encode_request(
    kind: str, rid: int, argv: list[str], env: dict[str, str] | None, timeout_s: float
) -> bytes:
    if kind not in ("P", "X", "B"):
        raise ValueError(f"unknown request kind {kind!r}")
    envs = [f"{k}={v}" for k, v in (env or {}).items()]
    for s in (*argv, *envs):
        if "\0" in s:
            raise ValueError("arguments and environment must not contain NUL")
    ms = max(0, min(int(timeout_s * 1000), 0xFFFFFFFF))
    body = HEADER.pack(ord(kind), rid, ms, len(argv), len(envs)) + b"".join(
        s.encode() + b"\0" for s in (*argv, *envs)
    )
    return struct.pack(">I", len(body)) + body


def decode_reply(body: bytes) -> Reply:
    if len(body) < REPLY.size + 4:
        raise SandboxError(f"agent sent a short reply ({len(body)} bytes)")
    status, rid, rc, olen = REPLY.unpack_from(body)
    o0 = REPLY.size
    out = body[o0 : o0 + olen]
    (elen,) = struct.unpack_from(">I", body, o0 + olen)
    err = body[o0 + olen + 4 : o0 + olen + 4 + elen]
    return Reply(status, rid, rc, out, err)


def encode_argv(argv: list[str]) -> str:
    """The first process for the kernel command line (sandbench.argv=HEX, read by the agent)."""
    return b"".join(a.encode() + b"\0" for a in argv).hex()


class AgentClient:
    """One connection at a time, one request at a time (a lock serializes callers)."""

    def __init__(
        self,
        path: Path,
        alive: Callable[[], bool] = lambda: True,
        vsock_port: int | None = None,
    ) -> None:
        self.path = path
        self.alive = alive
        self.vsock_port = vsock_port
        self.sock: socket.socket | None = None
        self.lock = threading.Lock()
        self.next_id = 1
        self.ready = False

    # -- connection --------------------------------------------------------------------------
    def _connect(self, deadline: float) -> socket.socket:
        if self.sock is not None:
            return self.sock
        last = "no socket yet"
        while time.monotonic() < deadline:
            if not self.alive():
                raise SandboxError("the VM exited before its agent answered")
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.settimeout(max(0.1, min(5.0, deadline - time.monotonic())))
                s.connect(str(self.path))
                if self.vsock_port is not None:
                    s.sendall(f"CONNECT {self.vsock_port}\n".encode())
                    line = self._readline(s, deadline)
                    if not line.startswith("OK"):
                        raise OSError(f"vsock handshake answered {line!r}")
                self.sock = s
                return s
            except OSError as e:
                last = str(e)
                s.close()
                time.sleep(0.05)
        raise StepTimeout(f"could not connect to the guest agent at {self.path}: {last}")

    @staticmethod
    def _readline(s: socket.socket, deadline: float) -> str:
        buf = b""
        while not buf.endswith(b"\n") and len(buf) < 256:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            chunk = s.recv(1)
            if not chunk:
                raise OSError("connection closed during the vsock handshake")
            buf += chunk
        return buf.decode(errors="replace").strip()

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None

    def _recv_exact(self, s: socket.socket, n: int, deadline: float) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            if not self.alive():
                raise SandboxError("the VM exited while waiting for its agent")
            s.settimeout(min(left, 1.0))
            try:
                chunk = s.recv(n - len(buf))
            except TimeoutError:
                continue
            if not chunk:
                raise SandboxError("the guest agent closed the connection")
            buf += chunk
        return bytes(buf)

    def request(
        self,
        kind: str,
        argv: list[str],
        env: dict[str, str] | None = None,
        timeout: float = 60.0,
        wait: float | None = None,
    ) -> Reply:
        """Send one request; the agent kills the command after `timeout`, the host gives up
        after `wait` (default timeout + MARGIN_S)."""
        with self.lock:
            deadline = time.monotonic() + (timeout + MARGIN_S if wait is None else wait)
            rid = self.next_id
            self.next_id += 1
            frame = encode_request(kind, rid, argv, env, timeout if kind == "X" else 0)
            s = self._connect(deadline)
            try:
                s.sendall(frame)
                while True:
                    (n,) = struct.unpack(">I", self._recv_exact(s, 4, deadline))
                    reply = decode_reply(self._recv_exact(s, n, deadline))
                    if reply.rid == rid:
                        return reply
            except TimeoutError:
                # A late reply is recognised by its id; the connection itself stays usable.
                raise StepTimeout(
                    f"the guest agent did not answer {argv[:1] or kind} in time"
                ) from None
            except (OSError, SandboxError):
                self.close()
                raise

    # -- what sandboxes use --------------------------------------------------------------------
    def wait_ready(self, timeout: float) -> float:
        """Ping until the agent answers (the guest has booted); seconds waited."""
        t0 = time.monotonic()
        if not self.ready:
            try:
                self.request("P", [], timeout=0, wait=timeout)
            except StepTimeout:
                raise StepTimeout(
                    f"the guest agent did not answer within {timeout:g} s of boot"
                ) from None
            self.ready = True
        return time.monotonic() - t0

    def run(
        self, argv: list[str], env: dict[str, str] | None = None, timeout: float = 60.0
    ) -> Completed:
        if not argv:
            raise ValueError("empty argv")
        r = self.request("X", argv, env, timeout)
        out, err = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
        if r.status == ST_TIMEOUT:
            raise StepTimeout(f"{argv[0]} did not finish within {timeout:g} s inside the VM")
        if r.status == ST_NOSTART:
            raise SandboxError(f"guest agent could not run {argv[0]}: {err.strip()}")
        return Completed(argv, r.rc, out, err)

    def background(self, argv: list[str], env: dict[str, str] | None = None) -> int:
        """Start argv detached inside the guest (stdio /dev/null); its guest pid."""
        r = self.request("B", argv, env, timeout=0, wait=30.0)
        if r.status != ST_DONE:
            raise SandboxError(f"guest agent could not start {argv[0]}: {r.stderr.decode()}")
        return r.rc

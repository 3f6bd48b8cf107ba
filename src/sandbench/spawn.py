"""Run a command with a time bound, woken the moment it exits.

`subprocess.run(..., timeout=T)` learns of a child's exit by polling: `Popen.wait(timeout)`
sleeps 0.5 ms, then 1, 2, 4 ... up to 50 ms between `waitpid(WNOHANG)` calls, so a runtime
command that takes 10 ms is seen to end up to several milliseconds late. Inside a timed phase
(`runc create`, `runc start`, `runsc exec`) that delay is the harness's, not the runtime's.
Here the kernel tells: a pidfd becomes readable when the process exits, and poll() returns
then (Linux 5.3+; where pidfd_open is missing the plain wait is used).
"""

from __future__ import annotations

import contextlib
import os
import select
import selectors
import subprocess
import time
from typing import IO, Any

Popen = subprocess.Popen


def wait_exit(proc: Popen[Any], timeout: float | None) -> int:
    """proc's exit status, waiting at most timeout seconds (TimeoutExpired after that)."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (OSError, AttributeError):
        return proc.wait(timeout)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        ms = None if timeout is None else max(0, int(timeout * 1000))
        if not poller.poll(ms):
            raise subprocess.TimeoutExpired(proc.args, timeout or 0.0)
    finally:
        os.close(fd)
    return proc.wait()  # the child has exited: this only reaps it


def _drain(proc: Popen[bytes], deadline: float | None, stdin_data: bytes | None,
           chunks: dict[IO[bytes], list[bytes]]) -> None:
    """Collect into chunks what proc writes to its pipes until both close (TimeoutExpired
    when the deadline passes first; chunks then hold what was read)."""
    with selectors.DefaultSelector() as sel:
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                chunks[pipe] = []
                sel.register(pipe, selectors.EVENT_READ)
        if proc.stdin is not None:
            if stdin_data:
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.write(stdin_data)
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
        while sel.get_map():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(proc.args, 0.0)
            for key, _ in sel.select(left):
                data = os.read(key.fd, 65536)
                if data:
                    chunks[key.fileobj].append(data)  # type: ignore[index]
                else:
                    sel.unregister(key.fileobj)


def run(argv: list[str], timeout: float | None = None, *, capture_output: bool = False,
        text: bool = False, input: str | bytes | None = None,  # noqa: A002 - subprocess's name
        **kw: Any) -> subprocess.CompletedProcess[Any]:
    """subprocess.run with the same arguments and errors (TimeoutExpired, FileNotFoundError),
    but the exit is noticed when it happens. On a timeout the child is killed and reaped,
    and the exception carries the output read so far."""
    if capture_output:
        kw["stdout"] = kw["stderr"] = subprocess.PIPE
    if input is not None:
        kw["stdin"] = subprocess.PIPE
    data = input.encode() if isinstance(input, str) else input
    deadline = None if timeout is None else time.monotonic() + timeout
    chunks: dict[IO[bytes], list[bytes]] = {}
    with subprocess.Popen(argv, **kw) as proc:

        def got(pipe: IO[bytes] | None) -> bytes:
            return b"".join(chunks.get(pipe, [])) if pipe is not None else b""

        try:
            if proc.stdout is not None or proc.stderr is not None or proc.stdin is not None:
                _drain(proc, deadline, data, chunks)
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            code = wait_exit(proc, left)
        except subprocess.TimeoutExpired:
            out, err = got(proc.stdout), got(proc.stderr)
            proc.kill()
            proc.wait()
            raise subprocess.TimeoutExpired(
                argv, timeout or 0.0,
                output=out.decode(errors="replace") if text else out,
                stderr=err.decode(errors="replace") if text else err) from None
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    out, err = got(proc.stdout), got(proc.stderr)
    if text:
        return subprocess.CompletedProcess(argv, code, out.decode(errors="replace"),
                                           err.decode(errors="replace"))
    return subprocess.CompletedProcess(argv, code, out if proc.stdout else None,
                                       err if proc.stderr else None)

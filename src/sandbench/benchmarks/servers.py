"""Servers inside a sandbox, driven from the host: what the application benchmarks (MySQL,
Nginx) and the network benchmark (iperf3) share.

A server's files live in a run directory made for it under the sandbox's own scratch
directory (Sandbox.scratch_dir: /tmp in a container, a private host directory for the bare
host), named after the sandbox, so that no name on the host is predictable and every process
the tool starts there carries the sandbox's unique name on its command line. The server
listens on Sandbox.bind_address and keeps its data on Sandbox.data_dir. Nothing here asks
which environment it runs in.

A server is started detached through exec (a fixed `sh -c` string built from the tool's own
quoted paths), its pid as seen inside the sandbox is kept, and it is stopped the same way
(TERM, bounded wait, KILL). Whatever still carries the run directory's name on the host
afterwards is killed by the tool too: on the bare host that is the server itself when exec
could not stop it.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from sandbench import procs
from sandbench.benchmarks.base import RunContext
from sandbench.environments.base import Completed, Environment, Sandbox
from sandbench.errors import SandboxError, StepTimeout, command_evidence

#: Bound for the small exec steps (write a file, start a server, read a log).
STEP_TIMEOUT = 60.0
#: Lines of a server's own log quoted when it fails.
LOG_LINES = 25
#: Seconds a server gets to exit on SIGTERM before SIGKILL.
STOP_GRACE_S = 10.0


@dataclass(frozen=True)
class Layout:
    """Where a server's files are, as seen inside the sandbox."""

    #: The benchmark volume (Sandbox.data_dir).
    data: str
    #: Private writable directory for config, sockets, pid file, temporary files and logs.
    run: str
    #: Address the server listens on inside the sandbox (Sandbox.bind_address).
    bind: str


def layout(sb: Sandbox, name: str) -> Layout:
    """The layout of server `name` in sb: its run directory carries the sandbox's unique
    name, which is what finds its processes on the host afterwards."""
    run = f"{sb.scratch_dir.rstrip('/')}/sandbench-{name}-{sb.name}"
    return Layout(data=sb.data_dir, run=run, bind=sb.bind_address)


def make_run_dir(sb: Sandbox, lay: Layout) -> None:
    """Create the run directory, readable by a server's unprivileged workers (nginx)."""
    done = exec_quiet(sb, ["/bin/sh", "-c", 'mkdir -p "$1" && chmod 755 "$1"', "sh", lay.run])
    if done.returncode != 0:
        raise SandboxError(f"could not create {lay.run} in {sb.env_name}",
                           evidence(sb, done))


def exec_quiet(sb: Sandbox, argv: list[str], timeout: float = STEP_TIMEOUT) -> Completed:
    """argv in the sandbox; a runtime failure (exec itself failed) becomes exit status -1
    with the error as its stderr, so that callers deal with one shape."""
    try:
        return sb.exec(argv, timeout=timeout)
    except SandboxError as exc:
        return Completed(argv, -1, "", str(exc))


def state_of(sb: Sandbox) -> str:
    """The sandbox's state as its runtime reports it, for evidence; never raises."""
    try:
        return sb.describe_state()
    except Exception as exc:  # noqa: BLE001 - the state is evidence, never a new failure
        return f"(could not describe the sandbox: {exc})"


def evidence(sb: Sandbox, done: Completed, **more: object) -> dict[str, object]:
    """A failed command's evidence with the sandbox's state."""
    return done.evidence(state=state_of(sb), **more)


def put_file(sb: Sandbox, path: str, content: str) -> None:
    """Write content to path inside the sandbox (its directory is created). The script is a
    fixed string; path and content travel as arguments, never through the shell's parser."""
    done = exec_quiet(
        sb,
        ["/bin/sh", "-c", 'mkdir -p "${1%/*}" && printf "%s" "$2" > "$1"', "sh", path, content],
    )
    if done.returncode != 0:
        raise SandboxError(f"could not write {path} in {sb.env_name}: "
                           f"{(done.stdout + done.stderr).strip()[-400:]}", evidence(sb, done))


def start_background(sb: Sandbox, command: str, out: str) -> int:
    """Start `command` (a fixed string built by the tool from its own quoted paths) detached
    inside the sandbox, stdio to the file `out`, so that exec returns at once; its pid as seen
    inside the sandbox."""
    done = exec_quiet(
        sb, ["/bin/sh", "-c", f"{command} </dev/null >>{shlex.quote(out)} 2>&1 & echo $!"]
    )
    said = done.stdout.strip()
    pid = said.splitlines()[-1] if said else ""
    if done.returncode != 0 or not pid.isdigit():
        raise SandboxError(
            f"could not start {command.split()[0]} in {sb.env_name}: "
            f"{(done.stdout + done.stderr).strip()[-400:]}",
            evidence(sb, done),
        )
    return int(pid)


# A zombie (its parent gone, the sandbox's idle first process does not reap) counts as dead.
_ALIVE_FN = (
    'alive() { s=$(cat /proc/"$1"/stat 2>/dev/null) || return 1; '
    'case "$s" in *") Z "*) return 1;; esac; return 0; }; '
)
_ALIVE = _ALIVE_FN + 'alive "$1"'


def is_alive(sb: Sandbox, pid: int) -> bool:
    """Whether pid runs inside the sandbox (bounded); a failing exec means dead."""
    return exec_quiet(sb, ["/bin/sh", "-c", _ALIVE, "sh", str(pid)], 15.0).returncode == 0


def process_alive(sb: Sandbox, pid: int, every_s: float = 2.0) -> Callable[[], bool]:
    """is_alive, asked at most every `every_s` seconds (for polling loops)."""
    last = [time.monotonic()]

    def alive() -> bool:
        if time.monotonic() - last[0] < every_s:
            return True
        last[0] = time.monotonic()
        return is_alive(sb, pid)

    return alive


_STOP = _ALIVE_FN + (
    'kill "$1" 2>/dev/null; i=0; '
    f'while alive "$1" && [ $i -lt {int(STOP_GRACE_S * 10)} ]; do sleep 0.1; i=$((i+1)); done; '
    'if alive "$1"; then kill -9 "$1" 2>/dev/null; fi; true'
)


def stop_server(sb: Sandbox, pid: int | None, lay: Layout) -> None:
    """Stop a server started with start_background: TERM inside the sandbox, up to
    STOP_GRACE_S for it to exit, then KILL; then kill whatever host process still carries
    the run directory's name (the bare host's server if exec could not stop it; a
    container's server is one of those too and goes with its sandbox anyway)."""
    if pid is not None:
        exec_quiet(sb, ["/bin/sh", "-c", _STOP, "sh", str(pid)], STOP_GRACE_S + 20.0)
    kill_marked(lay.run)


def kill_marked(marker: str) -> None:
    """SIGKILL host processes whose command line contains marker (a run directory carrying
    a sandbox's unique name: nothing foreign can match), and wait for them."""
    victims = []
    for pid in procs.find_by_cmdline(marker):
        if pid == os.getpid():
            continue
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            proc.send_signal(signal.SIGKILL)
            victims.append(proc)
    psutil.wait_procs(victims, timeout=10)


def read_file(sb: Sandbox, path: str, lines: int | None = None) -> str:
    """A file inside the sandbox (its last `lines` lines), or a note saying it could not be."""
    argv = ["tail", "-n", str(lines), path] if lines else ["cat", path]
    done = exec_quiet(sb, argv)
    out = done.stdout + done.stderr
    if done.returncode != 0:
        return f"(could not read {path}: {out.strip()[-200:]})"
    return done.stdout.rstrip() or f"({path}: empty)"


def keep_log(ctx: RunContext, env: Environment, bench: str, name: str, text: str) -> None:
    with contextlib.suppress(OSError):
        ctx.log_path(env.name, bench, name).write_text(text + "\n")


def wait_until(
    ready: Callable[[], bool], timeout: float, alive: Callable[[], bool] | None = None
) -> bool:
    """Poll ready() until it holds or timeout passes; stops early once alive() says the server
    is gone. Each ready() call must itself be bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return True
        if alive is not None and not alive():
            return ready()
        time.sleep(0.25)
    return False


def port_open(address: str, port: int) -> bool:
    """Whether something accepts TCP connections there (1 s bound)."""
    try:
        with socket.create_connection((address, port), timeout=1.0):
            return True
    except OSError:
        return False


def free_port() -> int:
    """A TCP port free on the host's loopback (matters for the bare host, which shares it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


_NOFILE_LOCK = threading.Lock()


def run_tool(
    argv: list[str], timeout: float, nofile: int | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a load generator on the host, stdout and stderr together, bounded by timeout.

    nofile: open files the tool needs. Its soft RLIMIT_NOFILE is then raised to the hard limit,
    for the tool's own process only (the soft limit of sandbench itself is put back as soon as
    the child exists). More than the hard limit cannot be had: that needs CAP_SYS_RESOURCE.
    """
    if shutil.which(argv[0]) is None:
        raise SandboxError(f"{argv[0]} not found on the host; install Debian package {argv[0]}",
                           command_evidence(argv, None, "", ""))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if nofile is not None and hard != resource.RLIM_INFINITY and nofile > hard:
        raise SandboxError(
            f"{argv[0]} needs about {nofile} open files but the hard RLIMIT_NOFILE is {hard}; "
            "raising it needs CAP_SYS_RESOURCE: raise it before starting sandbench "
            "(ulimit -Hn) or use fewer connections"
        )
    with _NOFILE_LOCK:
        raised = nofile is not None and soft != hard
        if raised:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        except OSError as exc:
            raise SandboxError(f"{argv[0]}: {exc}",
                               command_evidence(argv, None, "", str(exc))) from None
        finally:
            if raised:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise StepTimeout(
            f"{argv[0]} did not finish within {timeout:g} s; it printed: {out.strip()[-500:]}",
            command_evidence(argv, None, out, "", timeout_s=timeout),
        ) from None
    return subprocess.CompletedProcess(argv, proc.returncode, out, "")


def tool_evidence(
    done: subprocess.CompletedProcess[str], sb: Sandbox, **more: object
) -> dict[str, object]:
    """Evidence of a host-side tool's failed run against a sandbox (with its state)."""
    return command_evidence(list(done.args), done.returncode, done.stdout, done.stderr,
                            state=state_of(sb), **more)

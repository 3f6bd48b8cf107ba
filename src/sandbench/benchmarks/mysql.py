"""MySQL (benchmark 7): a MariaDB server inside the sandbox, sysbench on the host against it.

The sandbox starts idle, with the benchmark volume at /data. Through `exec` the tool writes the
server's init file into a private writable directory (/tmp/mysqld in containers, whose root file
system is read-only and shared), fills the data directory on the volume with
mariadb-install-db, and starts mariadbd in the background (a fixed `sh -c` string). mariadbd
listens on a fixed high port on all addresses of the sandbox's own network namespace (loopback
only on the host, where `exec` runs commands on the host itself and the "sandbox" paths are a
private host directory and the volume directory) and keeps its socket, pid file, temporary files
and log in the private directory.

sysbench runs on the host with sandbench's lua/oltp_mix.lua (the paper's 70/20/10 mix) over the
sandbox's link (gVisor: through its netstack). The table is loaded once per session; every round
is one `sysbench run` with --mix-report=on, whose per-type statement counts are kept with the
throughput sample. At the end the server is shut down with mariadb-admin (bounded), its log is
kept, and on the host whatever is left of it is killed by pid; in every other environment
stopping the sandbox removes it with everything else.

Helpers shared with the Nginx benchmark (layout, files and background servers in a sandbox,
bounded waits, host-side load generators) live here too.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import re
import resource
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from sandbench import volume as volumes
from sandbench.benchmarks.base import Benchmark, RoundFn, RunContext
from sandbench.environments.base import Environment, Sandbox, SandboxSpec
from sandbench.errors import SandboxError, StepTimeout
from sandbench.parsers.sysbench import parse_oltp_mix_report, parse_sysbench_oltp
from sandbench.results import Measurement

MYSQL_PORT = 13306
DB_USER = "sbtest"
DB_PASSWORD = "sbtest"
DB_NAME = "sbtest"
SHUTDOWN_TIMEOUT = 60.0
#: Bound for the small exec steps (write a file, start a server, read a log).
STEP_TIMEOUT = 60.0
#: Lines of a server's own log quoted when it fails.
LOG_LINES = 25
SERVER_NAMES = ("mariadbd", "mysqld")


# -- helpers shared by the application benchmarks -------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where a server's files are, as seen inside the sandbox."""

    #: The benchmark volume (/data; on the host, the volume directory itself).
    data: str
    #: Private writable directory for config, sockets, pid file, temporary files and logs.
    run: str
    #: Address the server listens on inside the sandbox.
    bind: str


@contextmanager
def app_layout(env: Environment, name: str, volume: Path | None = None) -> Iterator[Layout]:
    """Containers, gVisor and VMs: /data and /tmp/<name>, listening on all addresses of their
    own network namespace. The host runs `exec` commands on the host itself: there the private
    directory is a fresh host temporary directory (removed at the end), the data directory the
    volume, and the server listens on loopback only."""
    if env.family != "host":
        yield Layout(data="/data", run=f"/tmp/{name}", bind="0.0.0.0")  # noqa: S104 - own netns
        return
    with tempfile.TemporaryDirectory(prefix=f"sandbench-{name}-") as tmp:
        # Servers that drop privileges for their workers (nginx) must read what is in it.
        Path(tmp).chmod(0o755)
        yield Layout(data=str(volume) if volume else tmp, run=tmp, bind="127.0.0.1")


def _exec(sb: Sandbox, argv: list[str], timeout: float) -> tuple[int, str]:
    """(exit status, stdout+stderr) of argv in the sandbox; a runtime failure is status -1."""
    try:
        done = sb.exec(argv, timeout=timeout)
    except SandboxError as exc:
        return -1, str(exc)
    return done.returncode, (done.stdout + done.stderr)


def put_file(sb: Sandbox, path: str, content: str) -> None:
    """Write content to path inside the sandbox (its directory is created). The script is a
    fixed string; path and content travel as arguments, never through the shell's parser."""
    rc, out = _exec(
        sb,
        ["/bin/sh", "-c", 'mkdir -p "${1%/*}" && printf "%s" "$2" > "$1"', "sh", path, content],
        STEP_TIMEOUT,
    )
    if rc != 0:
        raise SandboxError(f"could not write {path} in {sb.env_name}: {out.strip()[-400:]}")


def start_background(sb: Sandbox, command: str, out: str) -> int:
    """Start `command` (a fixed string built by the tool from its own quoted paths) detached
    inside the sandbox, stdio to the file `out`, so that exec returns at once; its pid as seen
    inside the sandbox (on the host: a host pid)."""
    rc, said = _exec(
        sb,
        ["/bin/sh", "-c", f"{command} </dev/null >>{shlex.quote(out)} 2>&1 & echo $!"],
        STEP_TIMEOUT,
    )
    pid = said.strip().splitlines()[-1] if said.strip() else ""
    if rc != 0 or not pid.isdigit():
        raise SandboxError(f"could not start {command.split()[0]} in {sb.env_name}: {said[-400:]}")
    return int(pid)


# A zombie (its parent gone, the sandbox's idle first process does not reap) counts as dead.
_ALIVE = 's=$(cat /proc/"$1"/stat 2>/dev/null) || exit 1; case "$s" in *") Z "*) exit 1;; esac'


def process_alive(sb: Sandbox, pid: int, every_s: float = 2.0) -> Callable[[], bool]:
    """Whether the server process still runs inside the sandbox: asked through exec at most
    every `every_s` seconds (each bounded); a failing exec (the sandbox is gone) means dead."""
    last = [time.monotonic()]

    def alive() -> bool:
        if time.monotonic() - last[0] < every_s:
            return True
        last[0] = time.monotonic()
        rc, _ = _exec(sb, ["/bin/sh", "-c", _ALIVE, "sh", str(pid)], 15.0)
        return rc == 0

    return alive


def read_file(sb: Sandbox, path: str, lines: int | None = None) -> str:
    """A file inside the sandbox (its last `lines` lines), or a note saying it could not be."""
    argv = ["tail", "-n", str(lines), path] if lines else ["cat", path]
    rc, out = _exec(sb, argv, STEP_TIMEOUT)
    if rc != 0:
        return f"(could not read {path}: {out.strip()[-200:]})"
    return out.rstrip() or f"({path}: empty)"


def keep_log(ctx: RunContext, env: Environment, bench: str, name: str, text: str) -> None:
    with contextlib.suppress(OSError):
        ctx.log_path(env.name, bench, name).write_text(text + "\n")


def kill_host_server(env: Environment, pid: int | None, names: tuple[str, ...]) -> None:
    """On the host, where no runtime removes a server, kill it and its children by pid, if that
    pid is still the server (checked by name, so a recycled pid is never hit). Elsewhere the
    sandbox's stop removes it."""
    if env.family != "host" or pid is None:
        return
    try:
        proc = psutil.Process(pid)
        if proc.name() not in names:
            return
        victims = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return
    for victim in victims:
        with contextlib.suppress(psutil.Error):
            victim.kill()
    psutil.wait_procs(victims, timeout=10)


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
        raise SandboxError(f"{argv[0]} not found on the host; install Debian package {argv[0]}")
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
            raise SandboxError(f"{argv[0]}: {exc}") from None
        finally:
            if raised:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise StepTimeout(
            f"{argv[0]} did not finish within {timeout:g} s; it printed: {out.strip()[-500:]}"
        ) from None
    return subprocess.CompletedProcess(argv, proc.returncode, out, "")


# -- MySQL -----------------------------------------------------------------------------------------


def oltp_script() -> contextlib.AbstractContextManager[Path]:
    """sandbench's OLTP mix script as a file path sysbench can read."""
    return importlib.resources.as_file(
        importlib.resources.files("sandbench").joinpath("lua/oltp_mix.lua")
    )


INIT_SQL = f"""\
CREATE DATABASE IF NOT EXISTS {DB_NAME};
CREATE USER IF NOT EXISTS '{DB_USER}'@'%' IDENTIFIED BY '{DB_PASSWORD}';
GRANT ALL PRIVILEGES ON *.* TO '{DB_USER}'@'%';
FLUSH PRIVILEGES;
"""


def datadir(lay: Layout) -> str:
    return f"{lay.data}/mysql"


def install_argv(lay: Layout) -> list[str]:
    """mariadb-install-db into the volume, no configuration files read (--no-defaults), as root
    (the root file system is read-only: no chown to a mysql user needed), no host name lookup
    (--force: the sandbox's host name does not resolve)."""
    return [
        "/usr/bin/mariadb-install-db",
        "--no-defaults",
        "--user=root",
        f"--datadir={datadir(lay)}",
        f"--tmpdir={lay.run}",
        "--skip-test-db",
        "--skip-name-resolve",
        "--force",
    ]


def server_command(lay: Layout, port: int) -> str:
    """The mariadbd command line, from the tool's own paths (quoted) and numbers only. Server
    settings are MariaDB's defaults, as the paper kept MySQL's."""
    r = lay.run
    args = [
        "/usr/sbin/mariadbd",
        "--no-defaults",
        "--user=root",
        f"--datadir={datadir(lay)}",
        f"--socket={r}/mysqld.sock",
        f"--pid-file={r}/mysqld.pid",
        f"--tmpdir={r}",
        f"--port={int(port)}",
        f"--bind-address={lay.bind}",
        "--skip-name-resolve",
        f"--log-error={r}/mysqld.err",
        f"--init-file={r}/init.sql",
    ]
    return " ".join(shlex.quote(a) for a in args)


def innodb_aio(log: str) -> str:
    """How InnoDB does asynchronous I/O, from the server's log ("io_uring", "Linux native AIO"):
    it differs between environments (gVisor has no io_uring: InnoDB falls back to libaio)."""
    found = re.findall(r"InnoDB: Using (io_uring|Linux native AIO|simulated AIO)", log)
    return found[-1] if found else "unknown"


def volume_bytes(table_size: int) -> int:
    """Room the data directory needs: system tables, InnoDB's system and redo files (about
    250 MB together), and the table (about 250 bytes a row with its index), twice over."""
    return 256 * 1024 * 1024 + 2 * 250 * table_size


def client_args(address: str, port: int) -> list[str]:
    return [
        "--no-defaults",
        "--protocol=TCP",
        f"--host={address}",
        f"--port={port}",
        f"--user={DB_USER}",
        f"--password={DB_PASSWORD}",
    ]


def sysbench_args(address: str, port: int, script: Path, table_size: int) -> list[str]:
    return [
        "sysbench",
        str(script),
        "--db-driver=mysql",
        f"--mysql-host={address}",
        f"--mysql-port={port}",
        f"--mysql-user={DB_USER}",
        f"--mysql-password={DB_PASSWORD}",
        f"--mysql-db={DB_NAME}",
        f"--table-size={table_size}",
    ]


@dataclass
class _Server:
    sb: Sandbox
    lay: Layout
    address: str
    port: int
    pid: int | None = None

    @property
    def log(self) -> str:
        return f"{self.lay.run}/mysqld.err"


class Mysql(Benchmark):
    name = "mysql"
    description = "sysbench OLTP 70/20/10 mix from the host against MariaDB in the sandbox"
    image = "full"
    profiles = {
        "quick": {
            "rounds": 2,
            "table_size": 50_000,
            "threads": 2,
            "time_s": 5,
            "ready_timeout_s": 300,
            "prepare_timeout_s": 600,
        },
        "paper": {
            "rounds": 5,
            "table_size": 10_000_000,
            "threads": 8,
            "time_s": 60,
            "ready_timeout_s": 600,
            "prepare_timeout_s": 7200,
        },
    }

    @contextmanager
    def session(
        self, env: Environment, ctx: RunContext, params: dict[str, Any]
    ) -> Iterator[RoundFn]:
        table_size = int(params["table_size"])
        with (
            volumes.volume(volume_bytes(table_size)) as vol,
            oltp_script() as script,
            app_layout(env, "mysqld", vol.path) as lay,
        ):
            spec = SandboxSpec(
                image=self.image,
                volume=vol.path,
                log=ctx.log_path(env.name, self.name, "console.log"),
            )
            with env.start(spec) as sb:
                srv = _Server(sb, lay, sb.address, MYSQL_PORT)
                try:
                    self._start(srv, ctx, env, float(params["ready_timeout_s"]))
                    load = run_tool(
                        [*sysbench_args(srv.address, srv.port, script, table_size), "prepare"],
                        timeout=float(params["prepare_timeout_s"]),
                    )
                    keep_log(ctx, env, self.name, "prepare.log", load.stdout)
                    if load.returncode != 0:
                        raise SandboxError(
                            f"sysbench prepare exited {load.returncode}: "
                            f"{load.stdout.strip()[-800:]}\nserver log:\n"
                            f"{read_file(sb, srv.log, LOG_LINES)}"
                        )
                    aio = innodb_aio(read_file(sb, srv.log))
                    yield self._round_fn(env, ctx, params, srv, script, aio)
                finally:
                    self._shutdown(srv)
                    keep_log(ctx, env, self.name, "mysqld.err", read_file(sb, srv.log))
                    kill_host_server(env, srv.pid, SERVER_NAMES)

    def _start(self, srv: _Server, ctx: RunContext, env: Environment, timeout: float) -> None:
        sb, lay = srv.sb, srv.lay
        put_file(sb, f"{lay.run}/init.sql", INIT_SQL)
        t0 = time.monotonic()
        try:
            inst = sb.exec(install_argv(lay), timeout=timeout)
        except SandboxError as exc:
            raise SandboxError(f"mariadb-install-db in {env.name}: {exc}") from None
        keep_log(ctx, env, self.name, "install-db.log", inst.stdout + inst.stderr)
        if inst.returncode != 0:
            said = (inst.stdout + inst.stderr).strip().splitlines()[-LOG_LINES:]
            raise SandboxError(
                f"mariadb-install-db exited {inst.returncode} in {env.name}:\n" + "\n".join(said)
            )
        srv.pid = start_background(sb, server_command(lay, srv.port), f"{lay.run}/mysqld.out")
        left = max(10.0, timeout - (time.monotonic() - t0))
        if not wait_until(lambda: self._ready(srv), left, process_alive(sb, srv.pid)):
            raise SandboxError(
                f"MariaDB in {env.name} did not accept connections on {srv.address}:{srv.port} "
                f"within {timeout:g} s; its log:\n{read_file(sb, srv.log, LOG_LINES)}"
            )

    @staticmethod
    def _ready(srv: _Server) -> bool:
        """The server answers a query as the benchmark user in the benchmark database (so the
        init file has run), over TCP from the host."""
        try:
            cp = subprocess.run(
                [
                    "mariadb",
                    *client_args(srv.address, srv.port),
                    "--connect-timeout=2",
                    "--batch",
                    "--execute=SELECT 1",
                    DB_NAME,
                ],
                capture_output=True,
                text=True,
                timeout=10,
            )
        except subprocess.TimeoutExpired:
            return False
        except FileNotFoundError:
            raise SandboxError(
                "mariadb (client) not found on the host; install Debian package mariadb-client"
            ) from None
        return cp.returncode == 0

    def _shutdown(self, srv: _Server) -> None:
        """Stop the server cleanly (bounded), so that InnoDB is not killed mid-write; what is
        left afterwards is killed (host) or removed with the sandbox."""
        if srv.pid is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            subprocess.run(
                ["mariadb-admin", *client_args(srv.address, srv.port), "--connect-timeout=2",
                 "shutdown"],
                capture_output=True,
                timeout=SHUTDOWN_TIMEOUT,
            )
        alive = process_alive(srv.sb, srv.pid, every_s=0.5)
        wait_until(lambda: not alive(), SHUTDOWN_TIMEOUT)

    def _round_fn(
        self,
        env: Environment,
        ctx: RunContext,
        params: dict[str, Any],
        srv: _Server,
        script: Path,
        aio: str,
    ) -> RoundFn:
        table_size = int(params["table_size"])
        threads = int(params["threads"])
        time_s = int(params["time_s"])
        run_params = {"threads": threads, "table_size": table_size, "time_s": time_s}

        def one(rnd: int) -> list[Measurement]:
            argv = [
                *sysbench_args(srv.address, srv.port, script, table_size),
                f"--threads={threads}",
                f"--time={time_s}",
                "--report-interval=0",
                "--percentile=95",
                "--mix-report=on",
                "run",
            ]
            done = run_tool(argv, timeout=time_s + 120.0)
            raw = ctx.save_raw(env.name, self.name, rnd, "sysbench.txt", done.stdout)
            try:
                res = parse_sysbench_oltp(done.stdout)
                mix = parse_oltp_mix_report(done.stdout)
            except ValueError as exc:
                raise SandboxError(
                    f"sysbench run (exit {done.returncode}): {exc}\nserver log:\n"
                    f"{read_file(srv.sb, srv.log, LOG_LINES)}"
                ) from None
            if res.latency.percentile_ms is None:
                raise SandboxError("sysbench reported no 95th percentile latency")
            extra = {
                "network": srv.sb.network_path,
                "mix": {
                    "select": mix.select,
                    "insert": mix.insert,
                    "update": mix.update,
                    "delete": mix.delete,
                },
                "mix_fractions": mix.fractions(),
                "transactions": res.transactions,
                "queries": res.queries,
                "duration_s": res.total_time_s,
                "sysbench": res.version,
                "innodb_aio": aio,
            }
            p = run_params
            return [
                Measurement("tps", res.transactions_per_s, "1/s", raw, p, extra),
                Measurement("qps", res.queries_per_s, "1/s", raw, p),
                Measurement("latency_avg", res.latency.avg_ms, "ms", raw, p),
                Measurement("latency_p95", res.latency.percentile_ms, "ms", raw, p),
                Measurement("errors", res.ignored_errors, "count", raw, p),
                Measurement("reconnects", res.reconnects, "count", raw, p),
            ]

        return one

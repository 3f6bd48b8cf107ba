"""MySQL (benchmark 7): a MariaDB server inside the sandbox, sysbench on the host against it.

The sandbox starts idle, with the benchmark volume (a fresh directory on the host's disk file
system, sized from the profile) at Sandbox.data_dir. Through `exec` the tool writes the
server's init file into a run directory of its own under Sandbox.scratch_dir (servers.py),
fills the data directory on the volume with mariadb-install-db, and starts mariadbd in the
background (a fixed `sh -c` string). mariadbd listens on a fixed high port on
Sandbox.bind_address and keeps its socket, pid file, temporary files and log in the run
directory.

sysbench runs on the host with sandbench's lua/oltp_mix.lua (the paper's 70/20/10 mix) over the
sandbox's link (gVisor: through its netstack). The table is loaded once per session; every round
is one `sysbench run` with --mix-report=on, whose per-type statement counts are kept with the
throughput sample. At the end the server is shut down with mariadb-admin (bounded), its log is
kept, and what is left of it is stopped by pid (servers.stop_server).
"""

from __future__ import annotations

import contextlib
import importlib.resources
import re
import shlex
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sandbench import volume as volumes
from sandbench.benchmarks.base import Benchmark, RoundFn, RunContext
from sandbench.benchmarks.params import BenchParams, Profile, RoundPolicy, param
from sandbench.benchmarks.servers import (
    LOG_LINES,
    Layout,
    evidence,
    keep_log,
    layout,
    make_run_dir,
    process_alive,
    put_file,
    read_file,
    run_tool,
    start_background,
    state_of,
    stop_server,
    tool_evidence,
    wait_until,
)
from sandbench.environments.base import Environment, Sandbox
from sandbench.errors import SandboxError
from sandbench.parsers.sysbench import parse_oltp_mix_report, parse_sysbench_oltp
from sandbench.results import Measurement

MYSQL_PORT = 13306
DB_USER = "sbtest"
DB_PASSWORD = "sbtest"
DB_NAME = "sbtest"
SHUTDOWN_TIMEOUT = 60.0
MIB = 1024 * 1024


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


@dataclass(frozen=True)
class MysqlParams(BenchParams):
    table_size: int = param(50_000, high=1_000_000_000, doc="rows of the sysbench table")
    threads: int = param(2, high=1024, doc="sysbench threads")
    time_s: int = param(2, unit="s", high=86_400, doc="length of one sysbench run")
    ready_timeout_s: int = param(300, unit="s", high=86_400, doc="bound of mysqld's start")
    prepare_timeout_s: int = param(600, unit="s", high=86_400, doc="bound of the table's fill")


class Mysql(Benchmark):
    name = "mysql"
    short = "oltp"
    title = "MySQL (sysbench OLTP)"
    paper_figure = "MySQL throughput and latency"
    figure_metrics = ("tps", "latency_avg")
    converge_on = ("tps",)
    description = "sysbench OLTP 70/20/10 mix from the host against MariaDB in the sandbox"
    image = "full"
    profiles = {
        # A quick round is one 2 s sysbench run (claims test at n >= 5).
        "quick": Profile(RoundPolicy(5, 10), MysqlParams()),
        "paper": Profile(RoundPolicy(5, 10), MysqlParams(
            table_size=10_000_000, threads=8, time_s=60, ready_timeout_s=600,
            prepare_timeout_s=7200)),
    }
    Params = MysqlParams

    @contextmanager
    def session(
        self, env: Environment, ctx: RunContext, params: MysqlParams
    ) -> Iterator[RoundFn]:
        table_size = params.table_size
        need = volume_bytes(table_size)
        with volumes.volume(need) as vol, oltp_script() as script:
            spec = ctx.spec(
                image=self.image,
                volume=vol.path,
                volume_size_mib=-(-need // MIB),
                log=ctx.log_path(env.name, self.name, "console.log"),
            )
            with env.start(spec) as sb:
                srv = _Server(sb, layout(sb, "mysqld"), sb.address, MYSQL_PORT)
                try:
                    self._start(srv, ctx, env, params.ready_timeout_s)
                    load = run_tool(
                        [*sysbench_args(srv.address, srv.port, script, table_size), "prepare"],
                        timeout=params.prepare_timeout_s,
                    )
                    keep_log(ctx, env, self.name, "prepare.log", load.stdout)
                    if load.returncode != 0:
                        raise SandboxError(
                            f"sysbench prepare exited {load.returncode}: "
                            f"{load.stdout.strip()[-800:]}\nserver log:\n"
                            f"{read_file(sb, srv.log, LOG_LINES)}",
                            tool_evidence(load, sb),
                        )
                    aio = innodb_aio(read_file(sb, srv.log))
                    yield self._round_fn(env, ctx, params, srv, script, aio)
                finally:
                    self._shutdown(srv)
                    keep_log(ctx, env, self.name, "mysqld.err", read_file(sb, srv.log))
                    stop_server(sb, srv.pid, srv.lay)

    def _start(self, srv: _Server, ctx: RunContext, env: Environment, timeout: float) -> None:
        sb, lay = srv.sb, srv.lay
        make_run_dir(sb, lay)
        put_file(sb, f"{lay.run}/init.sql", INIT_SQL)
        t0 = time.monotonic()
        try:
            inst = sb.exec(install_argv(lay), timeout=timeout)
        except SandboxError as exc:
            raise SandboxError(f"mariadb-install-db in {env.name}: {exc}", exc.evidence) from None
        keep_log(ctx, env, self.name, "install-db.log", inst.stdout + inst.stderr)
        if inst.returncode != 0:
            said = (inst.stdout + inst.stderr).strip().splitlines()[-LOG_LINES:]
            raise SandboxError(
                f"mariadb-install-db exited {inst.returncode} in {env.name}:\n" + "\n".join(said),
                evidence(sb, inst),
            )
        srv.pid = start_background(sb, server_command(lay, srv.port), f"{lay.run}/mysqld.out")
        left = max(10.0, timeout - (time.monotonic() - t0))
        if not wait_until(lambda: self._ready(srv), left, process_alive(sb, srv.pid)):
            log = read_file(sb, srv.log, LOG_LINES)
            raise SandboxError(
                f"MariaDB in {env.name} did not accept connections on {srv.address}:{srv.port} "
                f"within {timeout:g} s; its log:\n{log}",
                {"server_log_tail": log, "state": state_of(sb)},
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
        left afterwards is stopped by pid."""
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
        params: MysqlParams,
        srv: _Server,
        script: Path,
        aio: str,
    ) -> RoundFn:
        table_size = params.table_size
        threads = params.threads
        time_s = params.time_s
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
                log = read_file(srv.sb, srv.log, LOG_LINES)
                raise SandboxError(
                    f"sysbench run (exit {done.returncode}): {exc}\nserver log:\n{log}",
                    tool_evidence(done, srv.sb, server_log_tail=log),
                ) from None
            if res.latency.percentile_ms is None:
                raise SandboxError("sysbench reported no 95th percentile latency",
                                   tool_evidence(done, srv.sb))
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
                Measurement.rate("tps", res.transactions_per_s, "1/s", raw=raw, params=p,
                                 extra=extra),
                Measurement.rate("qps", res.queries_per_s, "1/s", raw=raw, params=p),
                Measurement.latency("latency_avg", res.latency.avg_ms, "ms", raw=raw, params=p),
                Measurement.latency("latency_p95", res.latency.percentile_ms, "ms", raw=raw,
                                    params=p),
                Measurement.count("errors", res.ignored_errors, "count", raw=raw, params=p),
                Measurement.count("reconnects", res.reconnects, "count", raw=raw, params=p),
            ]

        return one


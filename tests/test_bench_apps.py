"""Application benchmarks (7: MySQL, 8: Nginx) at tiny scale on every environment this machine
has, plus the pieces that need no runtime (configs, command lines, the open-files limit).

Per environment: a short OLTP run against MariaDB in the sandbox returns tps > 0 with the
paper's 70/20/10 statement mix (counted by oltp_mix.lua's --mix-report), and a short wrk run
against nginx returns requests with no non-2xx answers. Afterwards nothing is left: no server
or client process, no sandbox, link, mount or volume.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from sandbench import volume as volumes
from sandbench.benchmarks.base import RunContext
from sandbench.benchmarks.mysql import (
    INIT_SQL,
    MYSQL_PORT,
    Mysql,
    MysqlParams,
    install_argv,
    server_command,
)
from sandbench.benchmarks.nginx import (
    NGINX_PORT,
    Nginx,
    NginxParams,
    nginx_conf,
    page,
)
from sandbench.benchmarks.nginx import server_command as nginx_command
from sandbench.benchmarks.registry import names
from sandbench.benchmarks.servers import Layout, run_tool
from sandbench.errors import SandboxError
from tests.conftest import ENV_NAMES, env_or_skip

#: What the application benchmarks start, told apart from other users' processes of the same
#: programs by their ports and paths.
APP_MARKS = (f"--port={MYSQL_PORT}", "sandbench-", "oltp_mix.lua", f":{NGINX_PORT}/")
APP_PROCESSES = (
    "mariadbd",
    "mysqld",
    "mariadb",
    "mariadb-admin",
    "mariadb-install-db",
    "nginx",
    "sysbench",
    "wrk",
)
TINY_MYSQL = MysqlParams(table_size=2000, threads=2, time_s=2, ready_timeout_s=300,
                         prepare_timeout_s=300)
TINY_NGINX = NginxParams(threads=1, connections=50, duration_s=2, ready_timeout_s=120)
CONTAINER = Layout(data="/data", run="/tmp/x", bind="0.0.0.0")


def app_processes() -> set[tuple[int, str]]:
    found = set()
    for p in psutil.process_iter(["name", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if p.info["name"] in APP_PROCESSES and any(m in cmd for m in APP_MARKS):
            found.add((p.pid, cmd[:200]))
    return found


def my_volumes() -> set[str]:
    """Volume directories owned by this test process (sandbench.volume writes the owner pid)."""
    root = volumes.VOLUME_ROOT
    mine = set()
    for entry in root.iterdir() if root.is_dir() else []:
        with contextlib.suppress(OSError):
            if (entry / volumes.OWNER_FILE).read_text().strip() == str(os.getpid()):
                mine.add(entry.name)
    return mine


@pytest.fixture
def no_app_leftovers(clean_host: None) -> Iterator[None]:
    """On top of clean_host: no server or load generator and no volume directory left."""
    procs = app_processes()
    yield
    assert not app_processes() - procs, "server or client processes left running"
    assert not my_volumes(), "volume directories left behind"


# -- without a runtime ----------------------------------------------------------------------------


def test_registered_after_the_paper_order() -> None:
    # The paper's eight in its order; density and burst (not part of the default study) follow.
    from sandbench.benchmarks.registry import all_benchmarks

    default = [b.name for b in all_benchmarks() if b.default]
    assert default[-2:] == ["mysql", "nginx"]
    assert names()[: len(default)] == default


def test_profiles() -> None:
    for bench, keys in (
        (Mysql(), {"table_size", "threads", "time_s"}),
        (Nginx(), {"threads", "connections", "duration_s"}),
    ):
        for profile in ("quick", "paper"):
            assert keys <= set(bench.params(profile).to_dict()), (bench.name, profile)
            assert bench.round_policy(profile).rounds >= 5, (bench.name, profile)
    assert Mysql().params("paper").table_size == 10_000_000
    paper = Nginx().params("paper")
    assert (paper.threads, paper.connections, paper.duration_s) == (1, 1000, 10)


def test_nginx_config_is_the_papers() -> None:
    conf = nginx_conf(CONTAINER, NGINX_PORT)
    assert "worker_processes 1;" in conf
    assert "user root;" in conf
    assert "worker_connections 1024;" in conf
    assert f"listen 0.0.0.0:{NGINX_PORT};" in conf
    assert "pid /tmp/x/nginx.pid;" in conf
    for line in conf.splitlines():
        if "_temp_path" in line or "error_log" in line:
            assert " /tmp/x/" in line, line
    assert len(page()) == 4096
    assert nginx_command(CONTAINER) == "/usr/sbin/nginx -e /tmp/x/error.log -c /tmp/x/nginx.conf"


def test_mariadb_command_lines() -> None:
    cmd = server_command(CONTAINER, MYSQL_PORT)
    for opt in (
        "--no-defaults",
        "--user=root",
        "--datadir=/data/mysql",
        "--socket=/tmp/x/mysqld.sock",
        "--pid-file=/tmp/x/mysqld.pid",
        "--tmpdir=/tmp/x",
        f"--port={MYSQL_PORT}",
        "--bind-address=0.0.0.0",
        "--skip-name-resolve",
    ):
        assert opt in cmd.split(), opt
    # Paths are quoted: a path with a space stays one argument.
    spaced = server_command(Layout("/d d", "/r", "127.0.0.1"), MYSQL_PORT)
    assert "'--datadir=/d d/mysql'" in spaced
    assert "--datadir=/data/mysql" in install_argv(CONTAINER)
    assert "'sbtest'@'%'" in INIT_SQL


def test_run_tool_raises_the_soft_open_files_limit_for_the_tool_only() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard < 2048:
        pytest.skip(f"hard RLIMIT_NOFILE is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        done = run_tool(["sh", "-c", "ulimit -n"], timeout=10, nofile=1500)
        assert done.stdout.strip() == str(hard)
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (1024, hard)
        with pytest.raises(SandboxError, match="hard RLIMIT_NOFILE"):
            run_tool(["sh", "-c", "true"], timeout=10, nofile=hard + 1)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -- on every environment -------------------------------------------------------------------------


@pytest.mark.runtime
@pytest.mark.parametrize("env_name", ENV_NAMES)
def test_apps_on_env(env_name: str, tmp_path: Path, no_app_leftovers: None) -> None:
    env = env_or_skip(env_name)
    ctx = RunContext(out=tmp_path, profile="quick")
    try:
        with Mysql().session(env, ctx, TINY_MYSQL) as one:
            got = {m.metric: m for m in one(0)}
        with Nginx().session(env, ctx, TINY_NGINX) as one:
            web = {m.metric: m for m in one(0)}
    finally:
        env.close()

    for m in [*got.values(), *web.values()]:
        assert m.kind and m.direction, m.metric
    assert (got["tps"].kind, got["latency_avg"].kind, got["errors"].kind) == (
        "rate", "latency", "count")
    assert (web["requests_per_second"].direction, web["latency_p99"].direction) == (
        "higher", "lower")
    assert {k: m.unit for k, m in got.items()} == {
        "tps": "1/s",
        "qps": "1/s",
        "latency_avg": "ms",
        "latency_p95": "ms",
        "errors": "count",
        "reconnects": "count",
    }
    assert got["tps"].value > 0 and got["qps"].value > got["tps"].value
    assert 0 < got["latency_avg"].value <= got["latency_p95"].value * 1.5
    mix = got["tps"].extra["mix_fractions"]
    assert mix["select"] == pytest.approx(0.7, abs=0.005)
    assert mix["insert"] == pytest.approx(0.2, abs=0.005)
    assert mix["update_delete"] == pytest.approx(0.1, abs=0.005)
    raw = got["tps"].raw
    assert raw and "oltp_mix: thread=" in (tmp_path / raw).read_text()

    assert {k: m.unit for k, m in web.items()} == {
        "requests_per_second": "1/s",
        "latency_p50": "ms",
        "latency_p99": "ms",
        "socket_errors": "count",
        "non_2xx": "count",
    }
    assert web["requests_per_second"].value > 0
    assert web["requests_per_second"].extra["total_requests"] > 0
    assert web["non_2xx"].value == 0
    assert set(web["socket_errors"].extra) == {"connect", "read", "write", "timeout"}
    raw = web["requests_per_second"].raw
    assert raw and "Requests/sec" in (tmp_path / raw).read_text()


@pytest.mark.runtime
def test_server_that_cannot_start_fails_with_its_log(
    tmp_path: Path, no_app_leftovers: None
) -> None:
    """Port taken on the host: mariadbd exits at once, the cell fails quoting the server's log."""
    env = env_or_skip("host")
    ctx = RunContext(out=tmp_path, profile="quick")
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            taken.bind(("127.0.0.1", MYSQL_PORT))
        except OSError:
            pytest.skip(f"port {MYSQL_PORT} is in use here")
        taken.listen(1)
        with (
            pytest.raises(SandboxError, match="did not accept connections") as err,
            Mysql().session(env, ctx, TINY_MYSQL.replace(ready_timeout_s=60)),
        ):
            pass
    assert "already in use" in str(err.value) or "Bind on TCP/IP" in str(err.value)

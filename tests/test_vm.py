"""VMs through the Sandbox interface: the pieces (cpio, modules, agent protocol, command lines)
without a guest, then real boots of qemu-microvm and qemu-vm under whatever acceleration the
machine allows (TCG here), checking that nothing is left behind."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from sandbench import paths
from sandbench.environments.base import SandboxSpec
from sandbench.environments.qemu import (
    MACHINES,
    QemuEnvironment,
    QemuSandbox,
    parse_systemd_analyze,
)
from sandbench.errors import StepTimeout
from sandbench.vm import agent_client, initramfs
from sandbench.vm.agent_client import AgentClient, decode_reply, encode_argv, encode_request
from sandbench.vm.kvm import MICROVM_TIMER_ARGS
from tests.conftest import env_or_skip, run_cli


def my_leftovers(mark: str) -> list[str]:
    """What VMs started by this test left: QEMU processes, VM state dirs (agent socket, data
    disk, command line) and taps. Other developers' runs share the machine, so only what
    names `mark` (the test's tmp_path: every VM here logs there) counts."""
    found = []
    for p in psutil.process_iter(["pid", "name", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if mark in cmd and (p.info["name"] or "").startswith("qemu-system"):
            found.append(f"process {p.info['pid']}")
    vm_dir = paths.STATE_DIR / "vm"
    for d in vm_dir.glob("*/*"):  # vm/<environment>/<sandbox id>
        cmdline = d / "cmdline"
        if cmdline.exists() and mark in cmdline.read_text():
            found.append(f"state {d}")
            if d.name + "h" in os.listdir("/sys/class/net"):
                found.append(f"tap {d.name}h")
    return found


@pytest.fixture
def clean_vm_host(tmp_path: Path) -> Iterator[None]:
    yield
    left = my_leftovers(str(tmp_path))
    assert not left, f"left behind: {left}"


# -- pieces, no guest ---------------------------------------------------------------------------
def test_cpio_archive_lists_with_busybox(tmp_path: Path) -> None:
    w = initramfs.CpioWriter()
    w.file("init", b"#!/bin/sh\n", 0o755)
    w.file("etc/sandbench/modules", b"virtio\n")
    w.symlink("bin/sh", "busybox")
    w.dir("proc")
    archive = tmp_path / "a.cpio"
    archive.write_bytes(w.finish())
    listing = subprocess.run(
        ["busybox", "cpio", "-t"], stdin=archive.open("rb"), capture_output=True, text=True
    )
    names = set(listing.stdout.split())
    assert {"init", "etc", "etc/sandbench", "etc/sandbench/modules", "bin/sh", "proc"} <= names
    assert len(archive.read_bytes()) % 4 == 0


def test_module_order_follows_dependencies() -> None:
    from sandbench.vm import kernel

    k = kernel.cached(kernel.package_name()) if (paths.CACHE_DIR / "kernels").exists() else None
    if k is None:
        pytest.skip("guest kernel not cached yet")
    order = [n for n, _ in initramfs.resolve_modules(k.modules_dir, initramfs.MODULES)]
    for need in ("virtio", "virtio_ring", "virtio_mmio", "virtio_pci", "virtio_blk",
                 "virtio_net", "failover", "net_failover", "virtio_console"):  # fmt: skip
        assert need in order
    pos = {n: i for i, n in enumerate(order)}
    for name, ko in initramfs.resolve_modules(k.modules_dir, initramfs.MODULES):
        for dep in initramfs.module_depends(ko):
            if dep in pos:
                assert pos[dep] < pos[name], f"{dep} must load before {name}"


def test_protocol_round_trip() -> None:
    frame = encode_request("X", 7, ["echo", "a b"], {"K": "V"}, 2.5)
    n = int.from_bytes(frame[:4], "big")
    assert n == len(frame) - 4
    assert frame[4:5] == b"X" and int.from_bytes(frame[5:9], "big") == 7
    assert int.from_bytes(frame[9:13], "big") == 2500
    assert frame.endswith(b"echo\0a b\0K=V\0")
    body = bytes([0]) + (7).to_bytes(4, "big") + (-9).to_bytes(4, "big", signed=True)
    body += (3).to_bytes(4, "big") + b"out" + (1).to_bytes(4, "big") + b"e"
    r = decode_reply(body)
    assert (r.status, r.rid, r.rc, r.stdout, r.stderr) == (0, 7, -9, b"out", b"e")
    hexed = encode_argv(["/sb/probe", "1.2.3.4", "5"])
    assert bytes.fromhex(hexed) == b"/sb/probe\x001.2.3.4\x005\x00"
    with pytest.raises(ValueError):
        encode_request("X", 1, ["a\0b"], None, 1)


@pytest.fixture
def local_agent(tmp_path: Path) -> Iterator[AgentClient]:
    """The real agent binary on the host, serving one unix connection (--serve-fd)."""
    exe = tmp_path / "agent"
    initramfs.build_agent(exe)
    path = tmp_path / "agent.sock"
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(str(path))
    ls.listen(1)
    procs: list[subprocess.Popen[bytes]] = []

    def serve() -> None:
        conn, _ = ls.accept()
        procs.append(
            subprocess.Popen([str(exe), "--serve-fd", str(conn.fileno())], pass_fds=[conn.fileno()])
        )
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    client = AgentClient(path)
    try:
        yield client
    finally:
        client.close()
        t.join(5)
        for p in procs:
            p.kill()
            p.wait(5)
        ls.close()


def test_agent_protocol_on_the_host(local_agent: AgentClient) -> None:
    assert local_agent.wait_ready(10) < 10
    done = local_agent.run(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=10)
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")
    # A server left in the background must not hold the reply back.
    t0 = time.monotonic()
    done = local_agent.run(["sh", "-c", "sleep 3 & echo started"], timeout=10)
    assert done.stdout == "started\n" and time.monotonic() - t0 < 5
    with pytest.raises(StepTimeout):
        local_agent.run(["sleep", "10"], timeout=0.5)
    # The channel still works after a timeout, and sequential commands keep their replies.
    for i in range(3):
        assert local_agent.run(["echo", str(i)]).stdout == f"{i}\n"
    assert local_agent.run(["/nonexistent"]).returncode == 127
    assert local_agent.run(["env"], env={"FOO": "bar"}).stdout.count("FOO=bar") == 1
    assert local_agent.background(["sleep", "1"]) > 0


def test_systemd_analyze_parse() -> None:
    text = "Startup finished in 3.148s (kernel) + 1min 2.471s (userspace) = 1min 5.619s\n" \
        "multi-user.target reached after 12.3s in userspace."
    r = parse_systemd_analyze(text)
    assert r["guest_kernel_s"] == pytest.approx(3.148)
    assert r["guest_userspace_s"] == pytest.approx(62.471)
    assert r["guest_boot_total_s"] == pytest.approx(65.619)


def test_command_lines_use_the_right_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    env = env_or_skip("qemu-microvm")
    assert isinstance(env, QemuEnvironment)
    for m in MACHINES:
        e = QemuEnvironment(m)
        with e.prepare(SandboxSpec()) as sb:
            assert isinstance(sb, QemuSandbox)
            cmd = " ".join(sb.vmm_command(["/sb/probe", "idle"]))
            assert sb.address.startswith("198.18.") and sb.host_address.startswith("198.18.")
            assert f"ifname={sb.name}h" in cmd and Path(f"/sys/class/net/{sb.name}h").exists()
            assert " -S " in cmd and f"-qmp unix:{sb.dir}/qmp.sock,server=on,wait=off" in cmd
            if m.microvm:
                assert "-M microvm,isa-serial=on,rtc=on" in cmd
                assert "virtio-net-device" in cmd and "virtio-serial-device" in cmd
                assert all(a in cmd for a in MICROVM_TIMER_ARGS)
                assert "-drive" not in cmd  # minimal image: the initramfs is the root
            else:
                assert "-M pc" in cmd and "virtio-blk-pci" in cmd and "-m 700" in cmd
                assert "snapshot=on" in cmd and "sandbench.init=systemd" in cmd
        assert not Path(f"/sys/class/net/{sb.name}h").exists() and not sb.dir.exists()


# -- real guests -------------------------------------------------------------------------------
@pytest.mark.runtime
def test_cli_startup_and_syscall_flagged_emulated(tmp_path: Path, clean_vm_host: None) -> None:
    for name in ("qemu-microvm", "qemu-vm"):
        env_or_skip(name)
    out = tmp_path / "res"
    cp = run_cli(
        "run", "--env", "qemu-microvm,qemu-vm", "--bench", "startup,syscall", "--rounds", "1",
        "--no-report", "--out", str(out), timeout=600,
    )  # fmt: skip
    assert cp.returncode == 0, cp.stderr[-2000:] + cp.stdout[-2000:]
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    samples = [r for r in rows if r.get("type") == "sample"]
    emulated = QemuEnvironment(MACHINES[0]).flags() == ["emulated"]
    for env in ("qemu-microvm", "qemu-vm"):
        got = {(r["bench"], r["metric"]) for r in samples if r["env"] == env}
        assert ("startup", "startup_time") in got and ("syscall", "getpid_latency") in got
        for r in samples:
            if r["env"] == env:
                assert ("emulated" in r["flags"]) == emulated
    meta = json.loads((out / "meta.json").read_text())
    facts = meta["environments"]["qemu-microvm"]
    assert facts["accel"] in ("tcg", "kvm") and facts["accel_reason"]
    assert facts["guest_memory_mib"] == 256


@pytest.mark.runtime
def test_microvm_agent_volume_and_background(tmp_path: Path, clean_vm_host: None) -> None:
    env = env_or_skip("qemu-microvm")
    with env.start(SandboxSpec(volume=tmp_path, log=tmp_path / "console.log")) as sb:
        assert isinstance(sb, QemuSandbox)
        assert sb.host_pids() and sb.data_disk is not None and sb.data_disk.exists()
        done = sb.exec(["sh", "-c", "grep ' /data ' /proc/mounts; echo hi > /data/f; cat /data/f"])
        assert done.returncode == 0 and "ext4" in done.stdout and "hi" in done.stdout
        t0 = time.monotonic()
        assert sb.exec(["sh", "-c", "sleep 300 & echo bg"], timeout=30).stdout == "bg\n"
        assert time.monotonic() - t0 < 10
        with pytest.raises(StepTimeout):
            sb.exec(["sleep", "30"], timeout=1)
        assert sb.exec(["/sb/syscall", "1000", "1"]).returncode == 0
        # The guest reaches the host over the tap.
        assert sb.exec(["ping", "-c", "1", "-W", "5", sb.host_address]).returncode == 0
        disk_file = sb.data_disk
    assert not disk_file.exists()


@pytest.mark.runtime
def test_qemu_vm_systemd_boot_report(tmp_path: Path, clean_vm_host: None) -> None:
    env = env_or_skip("qemu-vm")
    with env.start(SandboxSpec(log=tmp_path / "console.log")) as sb:
        assert isinstance(sb, QemuSandbox)
        report = sb.guest_boot_report()
        assert report["guest_boot_total_s"] > 0 and "Startup finished" in report["systemd_analyze"]
        assert sb.exec(["cat", "/proc/1/comm"]).stdout.strip() == "systemd"
        assert sb.exec(["findmnt", "-no", "SOURCE", "/"]).stdout.strip() == "/dev/vda"


def test_agent_client_gives_up_when_nothing_answers(tmp_path: Path) -> None:
    c = agent_client.AgentClient(tmp_path / "absent.sock")
    t0 = time.monotonic()
    with pytest.raises(StepTimeout):
        c.wait_ready(0.5)
    assert time.monotonic() - t0 < 5

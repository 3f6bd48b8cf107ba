"""Firecracker and Kata drivers: the configuration they generate, checked against the documented
formats (Firecracker's --config-file JSON and vsock handshake, ctr run for Kata), and the reason
available() gives on a machine without them."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest

from sandbench.environments import firecracker, kata
from sandbench.environments.base import Limits
from sandbench.environments.registry import names


def test_registered_after_docker() -> None:
    n = names()
    for name in ("qemu-vm", "qemu-microvm", "firecracker", "kata-qemu", "kata-fc"):
        assert name in n
    assert n.index("qemu-vm") > max(i for i, x in enumerate(n) if x.startswith("docker"))


def test_firecracker_config_matches_documented_format(tmp_path: Path) -> None:
    cfg = firecracker.vm_config(
        kernel_image=tmp_path / "vmlinux",
        initrd=tmp_path / "initrd.gz",
        boot_args=[*firecracker.BASE_BOOT_ARGS, "sandbench.vsock=52"],
        drives=[("rootfs", tmp_path / "root.ext4", False), ("data", tmp_path / "d.ext4", False)],
        tap="sb0123456789h",
        mac="52:54:00:00:00:01",
        vcpus=1,
        memory_mib=256,
        vsock_uds=tmp_path / "v.sock",
    )
    json.dumps(cfg)  # serialisable as the --config-file
    assert set(cfg) == {"boot-source", "drives", "network-interfaces", "machine-config", "vsock"}
    boot = cfg["boot-source"]
    assert boot["kernel_image_path"].endswith("vmlinux")
    assert boot["initrd_path"].endswith("initrd.gz")
    for arg in ("console=ttyS0", "reboot=k", "panic=1", "pci=off"):
        assert arg in boot["boot_args"].split()
    for d in cfg["drives"]:
        assert set(d) == {"drive_id", "path_on_host", "is_root_device", "is_read_only"}
        assert isinstance(d["is_root_device"], bool) and isinstance(d["is_read_only"], bool)
    assert sum(d["is_root_device"] for d in cfg["drives"]) <= 1
    (nic,) = cfg["network-interfaces"]
    assert nic == {"iface_id": "eth0", "host_dev_name": "sb0123456789h",
                   "guest_mac": "52:54:00:00:00:01"}  # fmt: skip
    assert cfg["machine-config"]["vcpu_count"] == 1 and cfg["machine-config"]["mem_size_mib"] == 256
    assert cfg["vsock"]["guest_cid"] >= 3 and cfg["vsock"]["uds_path"].endswith("v.sock")


def test_firecracker_boot_args_without_initrd(tmp_path: Path) -> None:
    cfg = firecracker.vm_config(
        kernel_image=tmp_path / "vmlinux", initrd=None, boot_args=["console=ttyS0"], drives=[],
        tap="t", mac="52:54:00:00:00:02", vcpus=2, memory_mib=128, vsock_uds=tmp_path / "v",
    )  # fmt: skip
    assert "initrd_path" not in cfg["boot-source"] and cfg["drives"] == []


def test_firecracker_unavailable_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SANDBENCH_FIRECRACKER", raising=False)
    monkeypatch.delenv("SANDBENCH_FC_KERNEL", raising=False)
    env = firecracker.FirecrackerEnvironment()
    if shutil.which("firecracker") is None:
        av = env.available()
        assert not av.ok and "SANDBENCH_FIRECRACKER" in av.reason and "PATH" in av.reason
    monkeypatch.setenv("SANDBENCH_FIRECRACKER", "/bin/true")
    av = env.available()
    assert not av.ok and "SANDBENCH_FC_KERNEL" in av.reason
    assert env.facts()["binary"] == "/bin/true"


def test_firecracker_vsock_handshake(tmp_path: Path) -> None:
    """The client speaks Firecracker's host-initiated protocol: CONNECT <port>\\n, OK <n>\\n."""
    import socket
    import threading

    from sandbench.vm.agent_client import AgentClient

    path = tmp_path / "v.sock"
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(str(path))
    ls.listen(1)
    seen: list[bytes] = []

    def fake_firecracker() -> None:
        conn, _ = ls.accept()
        with conn:
            buf = b""
            while not buf.endswith(b"\n"):
                buf += conn.recv(1)
            seen.append(buf)
            conn.sendall(b"OK 1073741824\n")
            n = int.from_bytes(conn.recv(4), "big")
            req = conn.recv(n)
            rid = req[1:5]
            body = b"\0" + rid + (0).to_bytes(4, "big") + (0).to_bytes(4, "big") * 2
            conn.sendall(len(body).to_bytes(4, "big") + body)

    t = threading.Thread(target=fake_firecracker, daemon=True)
    t.start()
    c = AgentClient(path, vsock_port=firecracker.VSOCK_PORT)
    c.wait_ready(5)
    c.close()
    t.join(5)
    ls.close()
    assert seen == [b"CONNECT 52\n"]


def test_kata_run_command(tmp_path: Path) -> None:
    cmd = kata.run_argv(
        ctr="ctr", config=Path("/opt/kata/share/defaults/kata-containers/configuration-fc.toml"),
        netns_path="/var/run/netns/sb0123456789", image_ref="docker.io/sandbench/minimal:abc",
        container_id="sb0123456789", argv=["/sb/probe", "idle"], env={"A": "1"},
        env_name="kata-fc", limits=Limits(cpus=1.5, memory_mib=512), volume=Path("/vol/x"),
    )  # fmt: skip
    assert cmd[:5] == ["ctr", "--namespace", "sandbench", "run", "--detach"]
    assert cmd[cmd.index("--runtime") + 1] == "io.containerd.kata.v2"
    assert cmd[cmd.index("--runtime-config-path") + 1].endswith("configuration-fc.toml")
    assert cmd[cmd.index("--with-ns") + 1] == "network:/var/run/netns/sb0123456789"
    assert cmd[cmd.index("--env") + 1] == "A=1"
    assert cmd[cmd.index("--memory-limit") + 1] == str(512 << 20)
    assert cmd[cmd.index("--cpus") + 1] == "1.5"
    assert "type=bind,src=/vol/x,dst=/data,options=rbind:rw" in cmd
    assert "sandbench.env=kata-fc" in cmd
    assert cmd[-4:] == ["docker.io/sandbench/minimal:abc", "sb0123456789", "/sb/probe", "idle"]


def test_kata_oci_archive_layout(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs.tar"
    with tarfile.open(rootfs, "w") as tf:
        f = tmp_path / "hello"
        f.write_text("hi")
        tf.add(f, arcname="hello")
    out = tmp_path / "img.tar"
    kata.oci_archive(rootfs, "docker.io/sandbench/minimal:abc", out)
    with tarfile.open(out) as tf:
        members = {m.name: m for m in tf.getmembers()}
        assert "oci-layout" in members and "index.json" in members
        index = json.loads(tf.extractfile("index.json").read())  # type: ignore[union-attr]
        (desc,) = index["manifests"]
        assert desc["annotations"]["io.containerd.image.name"] == "docker.io/sandbench/minimal:abc"
        manifest = json.loads(
            tf.extractfile("blobs/sha256/" + desc["digest"].split(":")[1]).read()  # type: ignore[union-attr]
        )
        layer = manifest["layers"][0]["digest"].split(":")[1]
        assert f"blobs/sha256/{layer}" in members
        config = json.loads(
            tf.extractfile("blobs/sha256/" + manifest["config"]["digest"].split(":")[1]).read()  # type: ignore[union-attr]
        )
        assert config["rootfs"]["diff_ids"] == [f"sha256:{layer}"]


@pytest.mark.parametrize("variant", kata.KATA_VARIANTS, ids=lambda v: v.name)
def test_kata_unavailable_reason(variant: kata.KataVariant) -> None:
    env = kata.KataEnvironment(variant)
    av = env.available()
    if shutil.which(kata.SHIM) is None:
        assert not av.ok and kata.SHIM in av.reason and "not installed" in av.reason
    facts = env.facts()
    assert facts["runtime"] == "io.containerd.kata.v2" and facts["hypervisor"] == variant.hypervisor


def test_kata_leftovers_ask_containerd_only_when_it_listens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No socket: no ctr call (ctr would retry for 10 s). A socket: containers are listed and
    only those labelled with this environment are ours."""
    import socket

    from sandbench.environments.base import Completed

    calls: list[list[str]] = []

    def fake_run(argv: list[str], **_: object) -> Completed:
        calls.append(argv)
        if argv[-2:] == ["ls", "-q"]:
            return Completed(argv, 0, "c-ours\nc-other\nc-foreign\n", "")
        env = {"c-ours": "kata-qemu", "c-other": "kata-fc"}.get(argv[-1])
        labels = {kata.ENV_LABEL: env} if env else {"app": "theirs"}
        return Completed(argv, 0, json.dumps({"Labels": labels}), "")

    monkeypatch.setattr(kata, "_ctr", lambda: "/usr/bin/ctr")
    monkeypatch.setattr(kata, "run_cmd", fake_run)
    sock_path = tmp_path / "containerd.sock"
    monkeypatch.setenv("CONTAINERD_ADDRESS", str(sock_path))
    env = kata.KataEnvironment(kata.KATA_VARIANTS[0])
    assert env.leftovers() == [] and calls == []
    with socket.socket(socket.AF_UNIX) as srv:
        srv.bind(str(sock_path))
        found = env.leftovers()
    assert [x.ident for x in found] == [f"{kata.NAMESPACE}/c-ours"]
    assert calls[0][:4] == ["/usr/bin/ctr", "-n", kata.NAMESPACE, "containers"]


# -- the Firecracker driver against a stand-in for its API ---------------------------------------
#: Serves Firecracker's API on --api-sock and records each request (method, path, body) as a
#: JSON line in the file named by FC_RECORD; it boots nothing, so only launch/freeze/stop can
#: be checked with it: what the driver sends, and when it marks the start "created".
STAND_IN = r'''#!/usr/bin/env python3
import json, os, socketserver, sys
from http.server import BaseHTTPRequestHandler
sock = sys.argv[sys.argv.index("--api-sock") + 1]
class H(BaseHTTPRequestHandler):
    def _any(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n)) if n else None
        with open(os.environ["FC_RECORD"], "a") as f:
            f.write(json.dumps([self.command, self.path, body]) + "\n")
        bad = self.path == "/drives/bad"
        code = 400 if bad else (200 if self.command == "GET" else 204)
        self.send_response(code)
        out = b'{"fault_message": "bad drive"}' if bad else (b"" if code == 204 else b"{}")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    do_GET = do_PUT = do_PATCH = _any
    def address_string(self):
        return "api"
class S(socketserver.UnixStreamServer):
    pass
S(sock, H).serve_forever()
'''


def test_firecracker_api_error_carries_the_fault(tmp_path: Path) -> None:
    import os
    import subprocess

    from sandbench.errors import SandboxError
    from sandbench.vm.fc_api import FirecrackerApi

    exe = tmp_path / "fc"
    exe.write_text(STAND_IN)
    exe.chmod(0o755)
    sock = tmp_path / "api.sock"
    p = subprocess.Popen([str(exe), "--api-sock", str(sock)],
                         env={**os.environ, "FC_RECORD": str(tmp_path / "rec")})  # fmt: skip
    try:
        api = FirecrackerApi(sock)
        api.wait(10, lambda: p.poll() is None)
        api.call("PUT", "/vsock", {"guest_cid": 3, "uds_path": "/x"})
        with pytest.raises(SandboxError) as e:
            api.call("PUT", "/drives/bad", {"drive_id": "bad"})
        assert "HTTP 400" in str(e.value) and "bad drive" in str(e.value)
        assert e.value.evidence["exit_status"] == 400
    finally:
        p.kill()
        p.wait(5)
    rec = [json.loads(x) for x in (tmp_path / "rec").read_text().splitlines()]
    assert ["PUT", "/vsock", {"guest_cid": 3, "uds_path": "/x"}] in rec


@pytest.mark.runtime
def test_firecracker_driver_configures_over_the_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Needs root (a tap) and the QEMU guest kernel cache (the initramfs); run under the lock."""
    import os

    from sandbench.environments.base import SandboxSpec

    if os.geteuid() != 0 or not Path("/dev/net/tun").exists():
        pytest.skip("needs root and /dev/net/tun for the VM's tap")
    exe = tmp_path / "firecracker"
    exe.write_text(STAND_IN)
    exe.chmod(0o755)
    (tmp_path / "vmlinux").write_bytes(b"\0")
    rec = tmp_path / "rec"
    monkeypatch.setenv("SANDBENCH_FIRECRACKER", str(exe))
    monkeypatch.setenv("SANDBENCH_FC_KERNEL", str(tmp_path / "vmlinux"))
    monkeypatch.setenv("FC_RECORD", str(rec))
    vol = tmp_path / "vol"
    vol.mkdir()
    env = firecracker.FirecrackerEnvironment()
    spec = SandboxSpec(volume=vol, volume_size_mib=64, limits=Limits(cpus=1.5, memory_mib=384))
    with env.prepare(spec) as sb:
        assert isinstance(sb, firecracker.FirecrackerSandbox)
        sb.launch()
        calls = [json.loads(x) for x in rec.read_text().splitlines()]
        urls = [(m, u) for m, u, _ in calls]
        assert urls[0] == ("GET", "/")
        assert urls[1:] == [("PUT", "/boot-source"), ("PUT", "/machine-config"),
                            ("PUT", "/drives/data"), ("PUT", "/network-interfaces/eth0"),
                            ("PUT", "/vsock"), ("PUT", "/actions")]  # fmt: skip
        body = dict(((m, u), b) for m, u, b in calls)
        assert body[("PUT", "/machine-config")]["vcpu_count"] == 2
        assert body[("PUT", "/machine-config")]["mem_size_mib"] == 384
        drive = body[("PUT", "/drives/data")]
        assert Path(drive["path_on_host"]).parent == vol and Path(drive["path_on_host"]).exists()
        args = body[("PUT", "/boot-source")]["boot_args"].split()
        assert "sandbench.data=vda" in args and "sandbench.vsock=52" in args
        assert body[("PUT", "/actions")] == {"action_type": "InstanceStart"}
        # "created" is marked once the machine is configured, before InstanceStart returns.
        assert "created" in sb.marks and sb.volume_kind == "virtio-disk" and not sb.direct_io
        sb.freeze()
        sb.thaw()
        tail = [json.loads(x) for x in rec.read_text().splitlines()][-2:]
        assert tail == [["PATCH", "/vm", {"state": "Paused"}],
                        ["PATCH", "/vm", {"state": "Resumed"}]]  # fmt: skip
        # The restore benchmark's path: a full snapshot ends the process; a fresh process
        # takes the snapshot in one call and runs it.
        img = tmp_path / "img"
        img.mkdir()
        first = sb.proc
        sb.checkpoint(img)
        assert first is not None and first.poll() is not None
        sb.restore(img)
        assert sb.proc is not first and sb.proc is not None and sb.proc.poll() is None
        tail = [json.loads(x) for x in rec.read_text().splitlines()][-4:]
        assert tail == [
            ["PATCH", "/vm", {"state": "Paused"}],
            ["PUT", "/snapshot/create", {"snapshot_type": "Full",
                                         "snapshot_path": str(img / "vmstate"),
                                         "mem_file_path": str(img / "memory")}],
            ["GET", "/", None],
            ["PUT", "/snapshot/load", {
                "snapshot_path": str(img / "vmstate"),
                "mem_backend": {"backend_type": "File", "backend_path": str(img / "memory")},
                "enable_diff_snapshots": False, "resume_vm": True}],
        ]
        assert not env.restore_unavailable("minimal") and "PUT /snapshot/load" in \
            sb.checkpoint_how
        disk_file, d = Path(drive["path_on_host"]), sb.dir
    assert sb.proc is not None and sb.proc.poll() is not None
    assert not disk_file.exists() and not d.exists()
    assert not Path(f"/sys/class/net/{sb.name}h").exists()
    assert not any(sb.name in x.ident for x in env.leftovers())

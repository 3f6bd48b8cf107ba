"""Network namespaces and veth links for sandboxes, in the benchmarking range 198.18.0.0/15.

Address plan (RFC 2544 range, reserved for benchmarks so it cannot collide with real networks):
  198.18.0.0/16   one /30 per sandbox link: .1 host side, .2 sandbox side (16384 links)
  198.19.0.0/24   the bridge of the Docker daemon sandbench starts
Names: namespace `sbXXXXXXXXXX` (the sandbox id), host link `<id>h`, sandbox link renamed eth0.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sandbench import paths
from sandbench.errors import SandboxError

NETNS_DIR = Path("/var/run/netns")
LINK_NET = ipaddress.ip_network("198.18.0.0/16")
DOCKER_BIP = "198.19.0.1/24"
_SLOTS = LINK_NET.num_addresses // 4


@dataclass(frozen=True)
class Link:
    netns: str
    host_if: str
    host_ip: str
    sandbox_ip: str
    slot: int

    @property
    def netns_path(self) -> str:
        return str(NETNS_DIR / self.netns)


def _slot_dir() -> Path:
    return paths.state("net")


def _claim_slot() -> int:
    """A free /30: claimed by creating a file with O_EXCL, so concurrent runs never collide."""
    start = int.from_bytes(os.urandom(2), "big") % _SLOTS
    for i in range(_SLOTS):
        slot = (start + i) % _SLOTS
        try:
            fd = os.open(_slot_dir() / str(slot), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            continue
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return slot
    raise SandboxError("no free /30 left in 198.18.0.0/16; run `sandbench clean`")


def _ip(args: list[str], batch: str | None = None) -> None:
    try:
        cp = subprocess.run(
            ["ip", *args], input=batch, capture_output=True, text=True, timeout=20
        )
    except subprocess.TimeoutExpired:
        raise SandboxError(f"ip {' '.join(args)} timed out") from None
    if cp.returncode != 0:
        raise SandboxError(f"ip {' '.join(args)}: {cp.stderr.strip()}")


def create(sandbox_id: str) -> Link:
    """Namespace + veth pair, sandbox side configured (eth0, lo, default route via host)."""
    paths.check_id(sandbox_id)
    slot = _claim_slot()
    base = LINK_NET.network_address + 4 * slot
    link = Link(sandbox_id, f"{sandbox_id}h", str(base + 1), str(base + 2), slot)
    peer = f"{sandbox_id}c"
    try:
        # Two `ip -batch` calls instead of eight processes: this is on the startup path.
        _ip(
            ["-batch", "-"],
            f"netns add {link.netns}\n"
            f"link add {link.host_if} type veth peer name {peer} netns {link.netns}\n"
            f"addr add {link.host_ip}/30 dev {link.host_if}\n"
            f"link set {link.host_if} up\n",
        )
        _ip(
            ["-n", link.netns, "-batch", "-"],
            f"link set {peer} name eth0\n"
            f"addr add {link.sandbox_ip}/30 dev eth0\n"
            "link set eth0 up\n"
            "link set lo up\n"
            f"route add default via {link.host_ip}\n",
        )
    except BaseException:
        destroy(link)
        raise
    return link


def destroy(link: Link) -> None:
    """Deleting the namespace destroys eth0 and with it the host end of the pair."""
    if (NETNS_DIR / link.netns).exists():
        subprocess.run(["ip", "netns", "del", link.netns], capture_output=True, timeout=20)
    if Path(f"/sys/class/net/{link.host_if}").exists():
        subprocess.run(["ip", "link", "del", link.host_if], capture_output=True, timeout=20)
    with contextlib.suppress(FileNotFoundError):
        (_slot_dir() / str(link.slot)).unlink()


def owned_netns() -> list[str]:
    if not NETNS_DIR.exists():
        return []
    return sorted(n for n in os.listdir(NETNS_DIR) if _is_ours(n))


def owned_links() -> list[str]:
    return sorted(n for n in os.listdir("/sys/class/net") if _is_ours(n[:-1]) and n[-1] in "hc")


def _is_ours(name: str) -> bool:
    rest = name[len(paths.PREFIX) :]
    return (
        name.startswith(paths.PREFIX)
        and len(rest) == 10
        and all(c in "0123456789abcdef" for c in rest)
    )

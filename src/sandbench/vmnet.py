"""Host side of a VM's network: a tap device in the host namespace holding the host end of a
/30 from net.py's allocator (198.18.0.0/16), the guest's virtio-net on the other end.

The tap is named like a sandbox link's host end (`<sandbox id>h`), so `sandbench clean` and
net.owned_links() find it the same way. Only addresses from LINK_NET are ever assigned.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sandbench import paths
from sandbench.net import LINK_NET, _claim_slot, _ip, _slot_dir


@dataclass(frozen=True)
class Tap:
    dev: str
    host_ip: str
    guest_ip: str
    slot: int
    prefix: int = 30

    @property
    def mac(self) -> str:
        """A locally administered MAC derived from the slot (unique among live taps)."""
        s = self.slot
        return f"52:54:00:{(s >> 16) & 0xFF:02x}:{(s >> 8) & 0xFF:02x}:{s & 0xFF:02x}"

    def kernel_args(self) -> list[str]:
        """How the guest's /init configures eth0 (see helpers/vminit.sh)."""
        return [f"sandbench.ip={self.guest_ip}/{self.prefix}", f"sandbench.gw={self.host_ip}"]


def tap_name(sandbox_id: str) -> str:
    return f"{paths.check_id(sandbox_id)}h"


def create(sandbox_id: str) -> Tap:
    """A tap with the host side of a fresh /30, up (no carrier until the VM attaches)."""
    if paths.owner(sandbox_id) is None:
        paths.claim(sandbox_id)  # before the slot: the slot is in use while this record lives
    slot = _claim_slot(sandbox_id)
    base = LINK_NET.network_address + 4 * slot
    tap = Tap(tap_name(sandbox_id), str(base + 1), str(base + 2), slot)
    try:
        _ip(
            ["-batch", "-"],
            f"tuntap add dev {tap.dev} mode tap\n"
            f"addr add {tap.host_ip}/{tap.prefix} dev {tap.dev}\n"
            f"link set {tap.dev} up\n",
        )
    except BaseException:
        destroy(tap)
        raise
    return tap


def destroy_dev(dev: str) -> None:
    """Delete a tap by name (a leftover whose slot is unknown: net.py frees dead slots)."""
    if Path(f"/sys/class/net/{dev}").exists():
        subprocess.run(["ip", "link", "del", dev], capture_output=True, timeout=20)


def destroy(tap: Tap) -> None:
    destroy_dev(tap.dev)
    with contextlib.suppress(FileNotFoundError):
        (_slot_dir() / str(tap.slot)).unlink()
    ident = tap.dev[:-1]
    rec = paths.owner(ident)
    gone = not Path(f"/sys/class/net/{tap.dev}").exists()
    if rec is not None and rec.pid == os.getpid() and gone:
        paths.release(ident)

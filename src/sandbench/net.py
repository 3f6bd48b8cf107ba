"""Network namespaces and veth links for sandboxes, in the benchmarking range 198.18.0.0/15.

Address plan (RFC 2544 range, reserved for benchmarks so it cannot collide with real networks):
  198.18.0.0/16   one /30 per sandbox link: .1 host side, .2 sandbox side (16384 links)
  198.19.0.0/24   the bridge of the Docker daemon sandbench starts
Names: namespace `sbXXXXXXXXXX` (the sandbox id), host link `<id>h`, sandbox link renamed eth0.
A name is not a mark on its own: create() writes the id's owner record (paths.claim) before
it makes anything, and clean removes a namespace or link only when that record exists and
its process is gone.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from sandbench import paths, procs
from sandbench.errors import SandboxError, StepTimeout, command_evidence
from sandbench.sandbox_values import Leftover

IP_TIMEOUT = 20.0

NETNS_DIR = Path("/var/run/netns")
LINK_NET = ipaddress.ip_network("198.18.0.0/16")
DOCKER_BIP = "198.19.0.1/24"
#: /30 links in LINK_NET: the most sandboxes with a link at once.
SLOTS = LINK_NET.num_addresses // 4


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


def _claim_slot(sandbox_id: str) -> int:
    """A free /30: claimed by creating a file with O_EXCL, so concurrent runs never collide.
    The file names its sandbox: it is in use exactly while that id's owner record is alive
    (create() writes the record first), so a slot claimed by a run interrupted at any
    instant is found by clean, and by the run's own last sweep."""
    start = int.from_bytes(os.urandom(2), "big") % SLOTS
    for i in range(SLOTS):
        slot = (start + i) % SLOTS
        try:
            fd = os.open(_slot_dir() / str(slot), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            continue
        try:
            os.write(fd, f"{os.getpid()} {sandbox_id}".encode())
        except BaseException:
            # A Ctrl-C between the create and the write: an empty file names nobody.
            (_slot_dir() / str(slot)).unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)
        return slot
    raise SandboxError("no free /30 left in 198.18.0.0/16; run `sandbench clean`",
                       {"slot_dir": str(_slot_dir()), "slots": SLOTS})


def _ip(args: list[str], batch: str | None = None, check: bool = True) -> int:
    """Run ip; a timeout or (with check) a failure is a SandboxError carrying the command,
    its batch input and output. Returns the exit status."""
    argv = ["ip", *args]
    more = {"stdin": batch} if batch else {}
    try:
        cp = subprocess.run(argv, input=batch, capture_output=True, text=True,
                            timeout=IP_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        raise StepTimeout(
            f"ip {' '.join(args)} did not finish within {IP_TIMEOUT:g} s",
            command_evidence(argv, None, e.stdout, e.stderr, timeout_s=IP_TIMEOUT, **more),
        ) from None
    except FileNotFoundError:
        raise SandboxError("ip not found; install Debian package iproute2",
                           command_evidence(argv, None, "", "")) from None
    if check and cp.returncode != 0:
        raise SandboxError(f"ip {' '.join(args)}: {cp.stderr.strip()[-300:]}",
                           command_evidence(argv, cp.returncode, cp.stdout, cp.stderr, **more))
    return cp.returncode


def create(sandbox_id: str) -> Link:
    """Namespace + veth pair, sandbox side configured (eth0, lo, default route via host)."""
    paths.check_id(sandbox_id)
    paths.claim(sandbox_id)
    try:
        slot = _claim_slot(sandbox_id)
    except BaseException:
        paths.release(sandbox_id)
        raise
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


def readdress(link: Link) -> None:
    """Give the sandbox side its address and default route again. gVisor's netstack takes
    them from the namespace's eth0 when a sandbox is made (and removes them from the kernel
    interface); a restore into the same namespace reads them afresh, and without this finds
    none and restores a sandbox with loopback only."""
    _ip(
        ["-n", link.netns, "-batch", "-"],
        f"addr replace {link.sandbox_ip}/30 dev eth0\n"
        "link set eth0 up\n"
        f"route replace default via {link.host_ip}\n",
    )


def destroy(link: Link) -> None:
    """Deleting the namespace destroys eth0 and with it the host end of the pair. Both steps
    are tried; a failure then raises SandboxError with the ip command's evidence, and the
    owner record and address slot stay, so that `sandbench clean` finds what is left.
    The slot goes before the owner record: a slot naming an id without a record is a
    leftover the run's own last sweep cannot attribute to itself."""
    _remove(link.netns, before_release=partial(_release_slot, link.slot))


def _release_slot(slot: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        (_slot_dir() / str(slot)).unlink()


def _remove(ident: str, before_release: Callable[[], None] | None = None) -> None:
    """Namespace `ident` and host link `<ident>h`, then (after `before_release`) its owner
    record."""
    errors: list[SandboxError] = []
    try:
        _del_netns(ident)
    except SandboxError as e:
        errors.append(e)
    try:
        _del_link(f"{ident}h")
    except SandboxError as e:
        errors.append(e)
    if errors:
        first = errors[0]
        if len(errors) > 1:
            first.evidence["also"] = [{"message": str(e), **e.evidence} for e in errors[1:]]
        raise first
    if before_release is not None:
        before_release()
    paths.release(ident)


def _ours(ident: str) -> bool:
    """An id's objects are sandbench's only with an owner record."""
    return paths.is_sandbox_id(ident) and paths.owner(ident) is not None


def owned_netns() -> list[str]:
    """Namespaces named like a sandbox id that have an owner record (live or not)."""
    if not NETNS_DIR.exists():
        return []
    return sorted(n for n in os.listdir(NETNS_DIR) if _ours(n))


def owned_links() -> list[str]:
    """Host links <id>h / <id>c whose id has an owner record."""
    return sorted(n for n in os.listdir("/sys/class/net") if n[-1:] in ("h", "c")
                  and _ours(n[:-1]))


def leftovers() -> list[Leftover]:
    """Namespaces and links of sandboxes whose owner process is gone; a live owner's are in
    use. Slot files of dead runs go too (they hold the claiming pid)."""
    live = paths.live_ids()
    found: list[Leftover] = []
    for ns in owned_netns():
        if ns not in live:
            found.append(Leftover("netns", ns, partial(_del_netns, ns)))
    for link in owned_links():
        if link[:-1] not in live:
            found.append(Leftover("link", link, partial(_del_link, link)))
    root = paths.state_root_if_ours()
    slots = root / "net" if root else None
    for f in sorted(slots.iterdir()) if slots and slots.is_dir() else []:
        if f.name.isdigit() and not _slot_in_use(f):
            who = _slot_owner(f)
            found.append(Leftover("address slot", f"{f} ({who})" if who else str(f), f.unlink))
    return found


def _del_netns(name: str) -> None:
    if (NETNS_DIR / name).exists():
        try:
            _ip(["netns", "del", name])
        except SandboxError:
            if (NETNS_DIR / name).exists():
                raise


def _del_link(name: str) -> None:
    # Deleting a namespace deletes the veth pair asynchronously: the link may vanish
    # between the check and the delete, which is success, not an error.
    if Path(f"/sys/class/net/{name}").exists():
        try:
            _ip(["link", "del", name])
        except SandboxError:
            if Path(f"/sys/class/net/{name}").exists():
                raise


def _slot_owner(slot: Path) -> str:
    try:
        fields = slot.read_text().split()
    except OSError:
        return ""
    return fields[1] if len(fields) == 2 and paths.is_sandbox_id(fields[1]) else ""


def slot_ids_of(pid: int) -> set[str]:
    """Sandbox ids of the address slots process `pid` claimed: a run's last sweep counts them
    as its own even when an interrupt left a slot whose owner record was already dropped."""
    root = paths.state_root_if_ours()
    d = root / "net" if root else None
    out: set[str] = set()
    for f in sorted(d.iterdir()) if d is not None and d.is_dir() else []:
        try:
            fields = f.read_text().split()
        except OSError:
            continue
        if len(fields) == 2 and fields[0] == str(pid) and paths.is_sandbox_id(fields[1]):
            out.add(fields[1])
    return out


def _slot_in_use(slot: Path) -> bool:
    ident = _slot_owner(slot)
    if not ident:
        return procs.pid_file_alive(slot)  # written by an earlier version: a bare pid
    rec = paths.owner(ident)
    return rec is not None and rec.alive()

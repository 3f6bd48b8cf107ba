"""Where sandbench keeps its state, caches and the names it gives to what it creates.

Everything the tool creates on the host carries the prefix below or lives under STATE_DIR,
which is how `sandbench clean` tells its own leftovers from what belongs to others.

Directories named by the user (SANDBENCH_STATE_DIR, SANDBENCH_VOLUME_DIR) are checked before
first use: an absolute path, never a system directory, and either made by sandbench (it
leaves a marker file in it) or empty when first adopted. clean removes and unmounts things
only inside a directory that carries the marker, so a mistaken setting (e.g. /run) makes
the tool refuse instead of unmounting what is there.

Names alone are not a mark: a namespace or link called sb<10 hex> is sandbench's only when
an owner record for that id exists (STATE_DIR/owners/<id>: the creating pid and its start
time). A record whose process is gone marks a leftover; one whose process lives marks a
sandbox in use, which clean leaves alone.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import psutil

from sandbench import settings
from sandbench.errors import UsageError

STATE_DIR = Path(str(settings.value("SANDBENCH_STATE_DIR")))
CACHE_DIR = Path(str(settings.value("SANDBENCH_CACHE_DIR")))
DEFAULT_STATE_DIR = Path("/run/sandbench")

#: Prefix of container ids, namespace names and link names the tool creates.
PREFIX = "sb"
DOCKER_LABEL = "org.sandbench.owned"
#: File in a directory sandbench made (state root, volume root): its mark.
MARKER = ".sandbench-owned"

_SAFE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,47}$")
_SANDBOX_ID = re.compile(rf"^{PREFIX}[0-9a-f]{{10}}$")
_ANY_ID = re.compile(rf"{PREFIX}[0-9a-f]{{10}}")

#: Directories no setting may make sandbench's own (removed from, unmounted under).
SYSTEM_DIRS = frozenset(
    Path(p)
    for p in (
        "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32",
        "/media", "/mnt", "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp",
        "/usr", "/var", "/run/user", "/run/lock", "/run/netns", "/var/run", "/var/lib",
        "/var/cache", "/var/log", "/var/tmp", "/var/spool", "/var/mail", "/var/opt",
        "/var/lib/docker", "/var/lib/containerd", "/run/containerd", "/run/docker",
        "/usr/local", "/usr/lib", "/usr/share", "/usr/bin", "/usr/sbin", "/sys/fs/cgroup",
    )
)


def new_id() -> str:
    """A fresh sandbox id: short enough for link names (IFNAMSIZ is 16)."""
    return f"{PREFIX}{secrets.token_hex(5)}"


def is_sandbox_id(name: str) -> bool:
    """Exactly sandbench's id pattern: sb + 10 lowercase hex digits."""
    return bool(_SANDBOX_ID.match(name))


def ids_in(text: str) -> set[str]:
    """Sandbox ids named anywhere in text (a path, a description)."""
    return set(_ANY_ID.findall(text))


def check_id(value: str) -> str:
    """Ids end up in paths and link names: refuse anything but [a-z0-9-]."""
    if not _SAFE_ID.match(value):
        raise ValueError(f"unsafe identifier {value!r}: allowed are [a-z0-9-], at most 48 chars")
    return value


# -- directories the user may name -----------------------------------------------------------


def unsafe_dir_reason(path: Path) -> str | None:
    """Why path cannot be a directory sandbench owns, or None."""
    if not path.is_absolute():
        return "not an absolute path"
    real = Path(os.path.realpath(path))
    for p in (path, real):
        if p in SYSTEM_DIRS:
            return f"{p} is a system directory"
        if p.parent == Path("/home"):
            return f"{p} is a home directory"
    return None


def is_marked(path: Path) -> bool:
    return (path / MARKER).is_file() and not (path / MARKER).is_symlink()


def owned_dir(path: Path, setting: str, adopt: bool = False) -> Path:
    """path, made and marked if missing. An existing unmarked directory is adopted only when
    it is empty (or `adopt`: the built-in default, made by earlier versions without a mark);
    anything else is refused with a UsageError naming the setting."""
    why = unsafe_dir_reason(path)
    if why is None and path.exists() and not path.is_dir():
        why = "exists and is not a directory"
    if why is None and path.is_dir() and not is_marked(path) and not adopt \
            and any(path.iterdir()):
        why = (f"exists, is not empty and was not made by sandbench (no {MARKER}); "
               "name a new directory, sandbench creates it")
    if why is not None:
        raise UsageError(f"{setting}={str(path)!r} cannot be used: {why}")
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not is_marked(path):
        fd = os.open(path / MARKER, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        os.write(fd, b"made by sandbench; `sandbench clean` works only in marked directories\n")
        os.close(fd)
    return path


_STATE_CHECKED = False


def state_root() -> Path:
    """STATE_DIR, checked (once) and marked."""
    global _STATE_CHECKED
    if not _STATE_CHECKED:
        owned_dir(STATE_DIR, "SANDBENCH_STATE_DIR", adopt=STATE_DIR == DEFAULT_STATE_DIR)
        _STATE_CHECKED = True
    return STATE_DIR


def state_root_if_ours() -> Path | None:
    """STATE_DIR when it exists, is safe and carries the mark (for clean, which creates
    nothing); None otherwise."""
    if unsafe_dir_reason(STATE_DIR) is None and STATE_DIR.is_dir() and (
        is_marked(STATE_DIR) or STATE_DIR == DEFAULT_STATE_DIR
    ):
        return STATE_DIR
    return None


def state(*parts: str) -> Path:
    p = state_root().joinpath(*parts)
    p.mkdir(parents=True, exist_ok=True, mode=0o700)
    return p


DEFAULT_CACHE_DIR = Path("/var/cache/sandbench")
_CACHE_CHECKED = False


def cache(*parts: str) -> Path:
    """A directory under CACHE_DIR, which is checked (once) and marked like the state dir."""
    global _CACHE_CHECKED
    if not _CACHE_CHECKED:
        owned_dir(CACHE_DIR, "SANDBENCH_CACHE_DIR", adopt=CACHE_DIR == DEFAULT_CACHE_DIR)
        _CACHE_CHECKED = True
    p = CACHE_DIR.joinpath(*parts)
    p.mkdir(parents=True, exist_ok=True)
    return p


# -- owner records -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Owner:
    ident: str
    pid: int
    start: float  # the process's start time (psutil create_time), against pid reuse

    def alive(self) -> bool:
        try:
            return abs(psutil.Process(self.pid).create_time() - self.start) < 0.01
        except psutil.NoSuchProcess:
            return False
        except psutil.Error:
            return True  # cannot tell: treat as in use, never remove


def _owners_dir() -> Path:
    return state("owners")


def claim(ident: str) -> None:
    """Record that this process made (and is using) sandbox `ident`."""
    if not is_sandbox_id(ident):
        raise ValueError(f"not a sandbox id: {ident!r}")
    me = psutil.Process()
    tmp = _owners_dir() / f".{ident}.{os.getpid()}"
    tmp.write_text(f"{me.pid} {me.create_time()!r}\n")
    os.replace(tmp, _owners_dir() / ident)


#: Above the kernel's largest pid_max (2**22): a record naming it has no live owner.
NO_PID = 2**22 + 1


def abandon_own_records() -> set[str]:
    """Hand this process's remaining owner records over to clean: their ids (returned) no
    longer count as in use. Called once a run's teardown is over."""
    me = psutil.Process()
    mine = {o.ident for o in owners() if o.pid == me.pid
            and abs(o.start - me.create_time()) < 0.01}
    for ident in mine:
        tmp = _owners_dir() / f".{ident}.{os.getpid()}"
        tmp.write_text(f"{NO_PID} 0.0\n")
        os.replace(tmp, _owners_dir() / ident)
    return mine


def release(ident: str) -> None:
    """Drop the owner record once everything of `ident` is removed."""
    if is_sandbox_id(ident):
        with contextlib.suppress(FileNotFoundError):
            (_owners_dir() / ident).unlink()


def owner(ident: str) -> Owner | None:
    """The owner record of `ident`, or None: no record means not sandbench's."""
    root = state_root_if_ours()
    if root is None or not is_sandbox_id(ident):
        return None
    try:
        pid_s, start_s = (root / "owners" / ident).read_text().split()
        return Owner(ident, int(pid_s), float(start_s))
    except (OSError, ValueError):
        return None


def owners() -> list[Owner]:
    root = state_root_if_ours()
    d = root / "owners" if root else None
    if d is None or not d.is_dir():
        return []
    return [o for n in sorted(os.listdir(d)) if (o := owner(n)) is not None]


def live_ids() -> set[str]:
    """Ids whose owner process still runs: sandboxes in use, not leftovers."""
    return {o.ident for o in owners() if o.alive()}

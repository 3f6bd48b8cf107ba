"""The exact sandbench that runs here, as a git archive, checksummed.

What is pushed is the checkout's tracked files as they are now: `git stash create` makes a
commit of the working tree's tracked changes without touching the tree or the stash (it
prints nothing when the tree is clean, and HEAD is archived). Untracked files are not
pushed; they are named in a warning, since code that runs here but not there would differ.
The tree id of what is archived is content-addressed: resume compares it to refuse a
different sandbench."""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

import sandbench
from sandbench.errors import UsageError


@dataclass(frozen=True)
class Bundle:
    path: Path
    sha256: str
    tree: str          # git tree id of what was archived
    untracked: tuple[str, ...]


def checkout() -> Path:
    """The git checkout this sandbench runs from (src/ layout: two levels above it)."""
    root = Path(sandbench.__file__).resolve().parent.parent.parent
    if not (root / ".git").exists() or not (root / "scripts" / "setup.sh").is_file():
        raise UsageError(f"fleet run pushes sandbench as a git archive, but it does not run "
                         f"from a git checkout ({root}); run it from a clone")
    return root


def _git(root: Path, *args: str) -> str:
    p = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                       timeout=120)
    if p.returncode != 0:
        raise UsageError(f"git {' '.join(args)} failed in {root}: {p.stderr.strip()[:300]}")
    return p.stdout.strip()


def source_tree() -> str:
    """The tree id `make` would archive now (for resume's comparison, without archiving)."""
    root = checkout()
    ref = _git(root, "stash", "create") or "HEAD"
    return _git(root, "rev-parse", f"{ref}^{{tree}}")


def make(dest: Path) -> Bundle:
    root = checkout()
    ref = _git(root, "stash", "create") or "HEAD"
    tree = _git(root, "rev-parse", f"{ref}^{{tree}}")
    untracked = tuple(
        ln for ln in _git(root, "ls-files", "--others", "--exclude-standard").splitlines()
        if ln.startswith(("src/", "scripts/", "pyproject.toml")))
    _git(root, "archive", "--format=tar.gz", "-o", str(dest), tree)
    digest = hashlib.sha256()
    with dest.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return Bundle(dest, digest.hexdigest(), tree, untracked)

"""The hosts of an ordinary Ansible inventory (INI or YAML), read by Ansible itself."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from sandbench.errors import UsageError
from sandbench.fleetrun.engine import ansible_playbook_binary

#: A host's results land in DIR/<inventory_hostname>/: the name must be a plain file name.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@-]{0,127}$")


def _ansible_inventory() -> str:
    playbook = ansible_playbook_binary()
    if playbook is None:
        raise UsageError("ansible-core is not installed (ansible-inventory not found); "
                         "run scripts/setup.sh")
    return str(Path(playbook).with_name("ansible-inventory"))


def hosts(inventory: Path, limit: str | None = None) -> list[str]:
    """The inventory's host names (`--limit` applied), in inventory order, or UsageError.

    Ansible's own parser reads the file (`ansible-inventory --list`), so every format and
    plugin Ansible accepts is accepted, and an unparsable file is refused here with Ansible's
    reason, before anything is written or pushed."""
    if not inventory.exists():
        raise UsageError(f"inventory {str(inventory)!r}: no such file")
    if not inventory.is_file():
        raise UsageError(f"inventory {str(inventory)!r} is not a file")
    argv = [_ansible_inventory(), "-i", str(inventory), "--list"]
    if limit is not None:
        if not limit.strip():
            raise UsageError("--limit is empty; give an Ansible host pattern (e.g. web:db)")
        argv += ["--limit", limit]
    # ANSIBLE_INVENTORY_UNPARSED_FAILED: an inventory Ansible cannot parse is an error, not a
    # warning followed by an empty host list.
    env = {"ANSIBLE_INVENTORY_UNPARSED_FAILED": "True", "ANSIBLE_NOCOLOR": "True",
           "ANSIBLE_DEPRECATION_WARNINGS": "False", "PATH": "/usr/bin:/bin"}
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    if p.returncode != 0:
        lines = [ln.strip() for ln in p.stderr.splitlines()
                 if ln.strip() and "Warning" not in ln and "from cryptography" not in ln]
        why = " ".join(lines)[-400:] or f"ansible-inventory exited {p.returncode}"
        raise UsageError(f"inventory {str(inventory)!r} not usable: {why}")
    try:
        data = json.loads(p.stdout)
    except json.JSONDecodeError:
        raise UsageError(f"inventory {str(inventory)!r}: ansible-inventory printed no JSON"
                         ) from None
    names = _walk(data, "all", set())
    if not names:
        what = f" matching --limit {limit!r}" if limit is not None else ""
        raise UsageError(f"inventory {str(inventory)!r} has no hosts{what}")
    for n in names:
        if not _SAFE_NAME.match(n) or n in (".", ".."):
            raise UsageError(f"inventory host name {n!r} cannot name a results directory; "
                             "use letters, digits and . _ - : @ (set ansible_host for the "
                             "address)")
    return names


def _walk(data: dict[str, object], group: str, seen: set[str]) -> list[str]:
    """Hosts of `group` and its children, depth first, each once: inventory order."""
    out: list[str] = []
    if group in seen:
        return out
    seen.add(group)
    entry = data.get(group)
    if not isinstance(entry, dict):
        return out
    for h in entry.get("hosts", []) or []:
        if isinstance(h, str):
            out.append(h)
    for child in entry.get("children", []) or []:
        if isinstance(child, str):
            out += _walk(data, child, seen)
    return list(dict.fromkeys(out))

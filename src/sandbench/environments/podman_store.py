"""sandbench's own Podman store and network, shared by both Podman environments: `--root`
under the cache directory, `--runroot`/`--tmpdir` under the state directory, a CNI
configuration directory of its own with the marked bridge sbpodman0 in 198.19.1.0/24 (no
masquerade, no firewall plugin), and the host paths Podman 4.3 cannot be pointed elsewhere,
removed at close when sandbench created them. podman.py holds the environments and their
sandboxes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import psutil

from sandbench import cgroups, images, paths
from sandbench.environments.base import (
    live_sandboxes,
    run_cmd,
)
from sandbench.errors import SandboxError, command_evidence

NETWORK = "sandbench"
BRIDGE = "sbpodman0"
SUBNET = "198.19.1.0/24"
GATEWAY = "198.19.1.1"
OWNER_LABEL = "org.sandbench.owner"
CGROUP_PARENT = "sandbench/podman"
#: Host directories Podman 4.3 writes outside its --root; removed at close when we made them.
SYSTEM_DIRS = (Path("/var/lib/containers"), Path("/var/lib/cni"))


def _owner_mark() -> str:
    me = psutil.Process()
    return f"{me.pid}:{me.create_time()!r}"


class PodmanStore:
    """sandbench's own Podman store and network, shared by both Podman environments."""

    def __init__(self) -> None:
        self._network_ready = False
        self._images: set[str] = set()

    @staticmethod
    def podman() -> str | None:
        return shutil.which("podman")

    @staticmethod
    def base_args() -> list[str]:
        return [
            "podman",
            "--root", str(paths.cache("podman", "storage")),
            "--runroot", str(paths.state("podman", "run")),
            "--tmpdir", str(paths.state("podman", "tmp")),
            "--network-config-dir", str(paths.state("podman", "cni")),
            "--cgroup-manager", "cgroupfs",
            "--events-backend", "file",
        ]

    def _note_system_dirs(self) -> None:
        """Before Podman first runs: remember which of its fixed host directories did not exist
        yet, so that close() removes only what sandbench made."""
        record = paths.cache("podman") / "created-system-dirs"
        made = set(record.read_text().split()) if record.exists() else set()
        made |= {str(d) for d in SYSTEM_DIRS if not d.exists()}
        record.write_text("".join(f"{d}\n" for d in sorted(made)))

    def conflist(self) -> dict[str, Any]:
        return {
            "cniVersion": "0.4.0",
            "name": NETWORK,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(paths.state("podman", "ipam")),
                        "routes": [{"dst": SUBNET}],
                        "ranges": [[{"subnet": SUBNET, "gateway": GATEWAY}]],
                    },
                }
            ],
            # Podman shows these as the network's labels.
            "args": {"podman_labels": {paths.DOCKER_LABEL: "1", OWNER_LABEL: _owner_mark()}},
        }

    def conflist_path(self) -> Path:
        return paths.state("podman", "cni") / f"{NETWORK}.conflist"

    def ensure_network(self) -> None:
        if self._network_ready and self.conflist_path().exists():
            return
        self._note_system_dirs()
        target = self.conflist_path()
        tmp = target.with_name(f".{target.name}.{os.getpid()}")
        tmp.write_text(json.dumps(self.conflist(), indent=2))
        os.replace(tmp, target)
        # CNI makes the bridge only when the first container joins, but benchmarks listen on
        # the host address before launch: make it now (the bridge plugin adopts it).
        if not Path(f"/sys/class/net/{BRIDGE}").exists():
            cp = run_cmd(["ip", "-batch", "-"], timeout=20, check=False,
                         input=f"link add {BRIDGE} type bridge\n"
                               f"addr add {GATEWAY}/{SUBNET.split('/')[1]} dev {BRIDGE}\n"
                               f"link set {BRIDGE} up\n")
            if cp.returncode != 0 and not Path(f"/sys/class/net/{BRIDGE}").exists():
                raise SandboxError(f"cannot create bridge {BRIDGE}: {cp.stderr.strip()}",
                                   command_evidence(["ip", "-batch", "-"], cp.returncode,
                                                    cp.stdout, cp.stderr))
        self._network_ready = True

    def ensure_image(self, image: images.Image) -> str:
        if image.tag in self._images:
            return image.tag
        cp = run_cmd([*self.base_args(), "image", "exists", image.tag], timeout=30, check=False)
        if cp.returncode != 0:
            run_cmd(
                [*self.base_args(), "import", "--quiet",
                 "--change", f"LABEL {paths.DOCKER_LABEL}=1", str(image.tarball), image.tag],
                timeout=600,
            )
        self._images.add(image.tag)
        return image.tag

    def containers(self) -> list[dict[str, Any]]:
        """Every container in sandbench's store carrying sandbench's label."""
        cp = run_cmd(
            [*self.base_args(), "ps", "--all", "--format", "json",
             "--filter", f"label={paths.DOCKER_LABEL}"],
            timeout=30, check=False,
        )
        if cp.returncode != 0:
            return []
        found: list[dict[str, Any]] = json.loads(cp.stdout or "[]") or []
        return found

    def network_users(self) -> list[dict[str, Any]]:
        """Containers attached to sandbench's network (labelled ones only: the label also
        reaches containers a user makes from sandbench's images, which we never touch)."""
        return [c for c in self.containers() if NETWORK in (c.get("Networks") or [])]

    def remove_network(self) -> None:
        """Remove the network and its bridge (CNI may leave the bridge behind)."""
        if self.conflist_path().exists():
            run_cmd([*self.base_args(), "network", "rm", "--force", NETWORK], timeout=30,
                    check=False)
            self.conflist_path().unlink(missing_ok=True)
        if Path(f"/sys/class/net/{BRIDGE}").exists():
            run_cmd(["ip", "link", "del", BRIDGE], timeout=20, check=False)
        shutil.rmtree(paths.STATE_DIR / "podman" / "ipam" / NETWORK, ignore_errors=True)
        self._network_ready = False

    def remove_system_dirs(self) -> None:
        """Remove the fixed host directories Podman made for us, if nothing else uses them:
        /var/lib/containers only while it holds nothing but the blob-info cache,
        /var/lib/cni only while its result cache is empty."""
        record = paths.CACHE_DIR / "podman" / "created-system-dirs"
        if not record.exists():
            return
        keep = []
        for d in map(Path, record.read_text().split()):
            if d == Path("/var/lib/containers"):
                used = {p.name for p in d.iterdir()} - {"cache"} if d.is_dir() else set()
                if not used:
                    shutil.rmtree(d, ignore_errors=True)
                else:
                    keep.append(d)
            elif d == Path("/var/lib/cni"):
                res = d / "results"
                if d.is_dir() and {p.name for p in d.iterdir()} <= {"results"} and (
                    not res.is_dir() or not any(res.iterdir())
                ):
                    shutil.rmtree(d, ignore_errors=True)
                elif d.is_dir():
                    keep.append(d)
        if keep:
            record.write_text("".join(f"{d}\n" for d in keep))
        else:
            record.unlink(missing_ok=True)

    def close(self) -> None:
        """End of run: remove the network when no container of ours is left in the store."""
        if self.podman() is None or not (paths.STATE_DIR / "podman").is_dir():
            return
        if any(sb.env_name.startswith("podman") for sb in live_sandboxes()):
            return
        if self.network_users():
            return
        self.remove_network()
        cgroups.remove_tree(CGROUP_PARENT)
        cgroups.remove_empty_cgroups()
        self.remove_system_dirs()


STORE = PodmanStore()

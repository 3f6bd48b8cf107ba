"""OCI runtimes driven directly with a bundle the tool writes: runc, crun and runsc (gVisor).

One driver, a table of variants. Each sandbox gets its own network namespace and veth pair
(see net.py); the bundle's config.json points the runtime at that namespace. gVisor runs with
its user-space netstack (`--network=sandbox`) through the wrapper in runsc_wrap.py.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbench import images, net, paths, procs
from sandbench.cleanup import remove_empty_cgroups
from sandbench.environments import oci_spec, probe_cache
from sandbench.environments.base import (
    Availability,
    Completed,
    Environment,
    Sandbox,
    SandboxSpec,
    run_cmd,
    tail_file,
)
from sandbench.environments.runsc_wrap import wrapper
from sandbench.errors import SandboxError, StepTimeout

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
IDLE_ARGV = ["/sb/probe", "idle"]


@dataclass(frozen=True)
class Variant:
    name: str
    binary: str
    description: str
    platform: str | None = None  # gVisor platform
    family: str = "container"
    extra_global: list[str] = field(default_factory=list)


VARIANTS = [
    Variant("runc", "runc", "runc driven directly (OCI bundle, no daemon)"),
    Variant("crun", "crun", "crun driven directly (OCI bundle, no daemon)"),
    *(
        Variant(
            f"gvisor-{p}",
            "runsc",
            f"gVisor runsc, {p} platform, netstack (--network=sandbox)",
            platform=p,
            family="gvisor",
        )
        for p in ("ptrace", "systrap", "kvm")
    ),
]


def version_of(binary: str) -> str:
    try:
        cp = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return "unknown"
    return cp.stdout.splitlines()[0].strip() if cp.stdout else "unknown"


def hybrid_cgroup_problem() -> str | None:
    """crun refuses hosts with cgroup v1 hierarchies while cgroup v2 still holds controllers."""
    ctl = Path("/sys/fs/cgroup/unified/cgroup.controllers")
    if ctl.exists() and ctl.read_text().split():
        held = " ".join(ctl.read_text().split())
        return (
            f"crun refuses hybrid cgroups while cgroup v2 holds controllers ({held}); move them "
            "to v1, e.g. `mkdir -p /sys/fs/cgroup/hugetlb && mount -t cgroup -o hugetlb "
            "cgroup /sys/fs/cgroup/hugetlb` (scripts/setup.sh does this), or boot cgroup v2 only"
        )
    return None


class OciEnvironment(Environment):
    def __init__(self, variant: Variant) -> None:
        self.v = variant
        self.name = variant.name
        self.description = variant.description
        self.family = variant.family

    # -- discovery -------------------------------------------------------------------------
    def binary_path(self) -> str | None:
        return shutil.which(self.v.binary)

    def available(self) -> Availability:
        path = self.binary_path()
        if path is None:
            pkg = "runsc (from bookworm-backports)" if self.v.binary == "runsc" else self.v.binary
            return Availability.no(
                f"{self.v.binary} not found on PATH; install Debian package {pkg} "
                "(scripts/setup.sh does)"
            )
        if self.v.binary == "crun" and (problem := hybrid_cgroup_problem()):
            return Availability.no(problem)
        if self.v.platform is not None:
            platforms = subprocess.run(
                [path, "help", "platforms"], capture_output=True, text=True, timeout=10
            ).stdout
            if self.v.platform not in platforms.split():
                return Availability.no(
                    f"{path} ({version_of(path)}) has no {self.v.platform} platform; install "
                    "runsc from bookworm-backports (2024 or newer)"
                )
            if self.v.platform == "kvm":
                return probe_cache.probe(self.name, version_of(path), self._probe_kvm)
        return Availability.yes()

    def _probe_kvm(self) -> Availability:
        if not Path("/dev/kvm").exists():
            return Availability.no("/dev/kvm is absent: enable KVM (or nested virtualization)")
        # The platform can hang at sandbox start with the CPU spinning: a bounded real start.
        spec = SandboxSpec(argv=["/bin/true"])
        try:
            sb = self.prepare(spec, start_timeout=15.0)
            with sb:
                sb.launch()
                sb.exec(["/bin/true"], timeout=15.0).check()
        except StepTimeout:
            return Availability.no(
                "gVisor's KVM platform did not start a sandbox within 15 s (guests stall under "
                "this hypervisor; needs working nested KVM)"
            )
        except SandboxError as e:
            return Availability.no(f"gVisor's KVM platform failed to start a sandbox: {e}")
        return Availability.yes()

    def facts(self) -> dict[str, Any]:
        path = self.binary_path()
        f: dict[str, Any] = {
            "binary": path,
            "version": version_of(path) if path else None,
            "driver": "oci-direct",
            "network": "netstack+veth" if self.v.platform else "veth",
        }
        if self.v.platform:
            f["platform"] = self.v.platform
        return f

    # -- lifecycle ---------------------------------------------------------------------------
    def global_args(self) -> list[str]:
        root = paths.state("oci", self.name)
        args = ["--root", str(root)]
        if self.v.platform:
            args += [f"--platform={self.v.platform}", "--network=sandbox"]
        return args

    def command(self) -> list[str]:
        path = self.binary_path()
        if path is None:
            raise SandboxError(f"{self.v.binary} not found")
        exe = str(wrapper(path)) if self.v.binary == "runsc" else path
        return [exe, *self.global_args()]

    def prepare(self, spec: SandboxSpec, start_timeout: float = START_TIMEOUT) -> OciSandbox:
        return OciSandbox(self, spec, start_timeout)


class OciSandbox(Sandbox):
    def __init__(self, env: OciEnvironment, spec: SandboxSpec, start_timeout: float) -> None:
        super().__init__(paths.new_id(), env.name)
        self.env = env
        self.spec = spec
        self.start_timeout = start_timeout
        # Everything _stop() looks at exists before anything is created, so an interrupt
        # (Ctrl-C lands anywhere) at any point below still cleans up what was made.
        self.link: net.Link | None = None
        self.created = False
        self.bundle = paths.STATE_DIR / "bundles" / self.name
        try:
            self.cmd = env.command()
            self.network_path = env.facts()["network"]
            self.rootfs = images.ensure(spec.image).rootfs
            paths.state("bundles", self.name)
            t0 = time.perf_counter_ns()
            self.link = net.create(self.name)
            self.prepare_time_s = (time.perf_counter_ns() - t0) / 1e9
        except BaseException:
            self._stop()
            raise
        assert self.link is not None
        self._address = self.link.sandbox_ip
        self.host_address = self.link.host_ip

    def launch(self, argv: list[str] | None = None) -> None:
        assert self.link is not None
        args = argv or self.spec.argv or IDLE_ARGV
        cfg = oci_spec.build(
            rootfs=self.rootfs,
            args=args,
            env=self.spec.env,
            netns_path=self.link.netns_path,
            cgroups_path=f"/sandbench/{self.name}",
            limits=self.spec.limits,
            volume=self.spec.volume,
            hostname=self.name,
        )
        (self.bundle / "config.json").write_text(json.dumps(cfg))
        log = self.spec.log or (self.bundle / "console.log")
        self.created = True
        with open(log, "ab") as out:
            try:
                cp = subprocess.run(
                    [*self.cmd, "run", "--detach", "--bundle", str(self.bundle), self.name],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    timeout=self.start_timeout,
                )
            except subprocess.TimeoutExpired:
                raise StepTimeout(
                    f"{self.env.name}: runtime did not start the sandbox within "
                    f"{self.start_timeout:g} s"
                ) from None
        if cp.returncode != 0:
            raise SandboxError(f"{self.env.name} run failed: {tail_file(log)}")

    def exec(self, argv: list[str], timeout: float = 60.0) -> Completed:
        cp = run_cmd([*self.cmd, "exec", self.name, *argv], timeout=timeout, check=False)
        return Completed(argv, cp.returncode, cp.stdout, cp.stderr)

    def state(self) -> dict[str, Any]:
        cp = run_cmd([*self.cmd, "state", self.name], timeout=15)
        st: dict[str, Any] = json.loads(cp.stdout)
        return st

    def host_pids(self) -> list[int]:
        # runc/crun: the container's processes. runsc: sandbox (sentry), gofer and their
        # children (systrap/ptrace stubs); both carry the bundle path on their command line.
        roots = [int(self.state()["pid"])]
        roots += procs.find_by_cmdline(f"--bundle={self.bundle}")
        return procs.descendants(roots)

    def _stop(self) -> None:
        if self.created:
            with contextlib.suppress(SandboxError):
                run_cmd([*self.cmd, "kill", self.name, "KILL"], timeout=STOP_TIMEOUT, check=False)
            with contextlib.suppress(SandboxError):
                run_cmd([*self.cmd, "delete", "--force", self.name], timeout=STOP_TIMEOUT)
        if self.link is not None:
            net.destroy(self.link)
        shutil.rmtree(self.bundle, ignore_errors=True)
        remove_empty_cgroups()


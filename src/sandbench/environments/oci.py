"""OCI runtimes driven directly with a bundle the tool writes: runc, crun and runsc (gVisor).

One driver, a table of variants. Each sandbox gets its own network namespace and veth pair
(see net.py); the bundle's config.json points the runtime at that namespace. gVisor runs with
its user-space netstack (`--network=sandbox`) through the wrapper in runsc_wrap.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from sandbench import cgroups, images, net, paths, procs, seccomp, spawn
from sandbench.binaries import version_of as version_of  # re-exported for docker.py
from sandbench.environments import cgroup_limits, criu, oci_spec, probe_cache
from sandbench.environments.base import (
    IDLE_ARGV,
    Availability,
    Completed,
    Environment,
    Leftover,
    Limits,
    Sandbox,
    SandboxSpec,
    run_cmd,
    tail_file,
)
from sandbench.environments.runsc_wrap import wrapper, wrapper_overhead_ms
from sandbench.errors import SandboxError, StepTimeout, command_evidence

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
PAUSE_TIMEOUT = 30.0

#: Why gVisor's disk samples are flagged: its gofer opens host files without O_DIRECT and no
#: runsc flag passes the flag through (gVisor issue 3626, open), so reads are served from a
#: page cache (the sentry's or the host's), never from the device.
GVISOR_DIRECT_IO_NOTE = (
    "gVisor does not pass O_DIRECT to the host file (google/gvisor#3626; no runsc flag in "
    "this release does): direct I/O inside the sandbox is served from a page cache"
)
#: What gVisor does with linux.seccomp, and so what the gVisor environments run with.
GVISOR_SECCOMP = (
    "none for the workload: runsc ignores an OCI seccomp profile unless --oci-seccomp is "
    "given, which neither sandbench nor Docker's runsc runtime passes (like for like with "
    "docker-gvisor-*); the sentry and gofer always run under gVisor's own host seccomp filters"
)


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
        # gVisor variants run on a user-space kernel; runc and crun are containers.
        self.isolation_class = "user-space kernel" if variant.family == "gvisor" else "container"
        self.paper_lineage = {"gvisor": "gvisor"}.get(variant.family,
                                                      "runc" if variant.name == "runc" else "")

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
                from sandbench.vm.kvm import kvm_problem

                if problem := kvm_problem():
                    return Availability.no(f"gVisor's KVM platform cannot run here: {problem}")
                return probe_cache.probe(self.name, version_of(path), self._probe_kvm)
        return Availability.yes()

    def _probe_kvm(self) -> Availability:
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
            "network": self.network_path(),
            "seccomp": self.seccomp_profile(True),
            "seccomp_when_off": self.seccomp_profile(False),
            "start_phases": "prepare (netns, veth, bundle) / create / start / network",
            "freeze": "runsc pause" if self.v.platform else f"{self.v.binary} pause "
            "(cgroup freezer)",
        }
        if self.v.platform:
            f["platform"] = self.v.platform
            f["direct_io"] = GVISOR_DIRECT_IO_NOTE
            if path:
                # Paid by create and by start; other calls pass straight through.
                f["wrapper_overhead_ms"] = wrapper_overhead_ms(path)
        return f

    def network_path(self) -> str:
        return "netstack+veth" if self.v.platform else "veth"

    def seccomp_profile(self, enabled: bool) -> str:
        """The seccomp filter a sandbox of this environment runs under."""
        if self.v.platform:
            return GVISOR_SECCOMP
        if not enabled:
            return "none (seccomp off for this study)"
        return f"{seccomp.describe()}, resolved for x86_64 and the bundle's capabilities"

    def limits_applied(self, limits: Limits) -> dict[str, Any]:
        if limits.cpus is None and limits.memory_mib is None:
            return {}
        how = ("OCI linux.resources -> cgroup of the sandbox (sentry, gofer and stubs), "
               "cpu.cfs_quota_us and memory.limit_in_bytes" if self.v.platform else
               "OCI linux.resources -> container cgroup, cpu.cfs_quota_us and "
               "memory.limit_in_bytes")
        return {"cpus": limits.cpus, "memory_mib": limits.memory_mib,
                "how": f"{how} ({self.v.binary})"}

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

    def restore_unavailable(self, image: str) -> str:
        # gVisor saves its own sentry (runsc checkpoint); runc and crun hand it to CRIU.
        if self.v.platform is not None:
            return ""
        problem = criu.problem()
        return f"{self.name} checkpoints through CRIU: {problem}" if problem else ""

    def leftovers(self) -> list[Leftover]:
        """Containers in this variant's own state root, and processes whose command line
        names that root (runsc sentries and gofers), of sandboxes no live process owns.
        Reads only: runs `list`, creates nothing (not even the root)."""
        state = paths.state_root_if_ours()
        root = state / "oci" / self.name if state else None
        if root is None or not root.is_dir():
            return []
        live = paths.live_ids()
        found: list[Leftover] = []
        path = self.binary_path()
        if path is not None and any(root.iterdir()):
            cmd = [path, "--root", str(root)]

            def delete(cid: str) -> None:
                run_cmd([*cmd, "delete", "--force", cid], timeout=STOP_TIMEOUT)

            cp = run_cmd([*cmd, "list", "--format", "json"], timeout=30)
            for entry in json.loads(cp.stdout or "null") or []:
                cid = str(entry.get("id") or entry.get("ID") or "")
                if cid and cid not in live:
                    found.append(Leftover(
                        "container", f"{cid} ({self.name}, {entry.get('status', '?')})",
                        partial(delete, cid)))
        for pid, name, created, argv in procs.all_processes():
            if procs.has_option(argv, "--root", str(root)) and pid != os.getpid() \
                    and not paths.ids_in(" ".join(argv)) & live:
                found.append(Leftover("process", f"{pid} {name} ({self.name})",
                                      partial(procs.kill_exact, pid, created)))
        return found


class OciSandbox(Sandbox):
    """prepare (constructor): namespace, veth, bundle. launch: `create`, mark, `start`."""

    def __init__(self, env: OciEnvironment, spec: SandboxSpec, start_timeout: float) -> None:
        super().__init__(paths.new_id(), env.name)
        self.env = env
        self.spec = spec
        self.start_timeout = start_timeout
        gvisor = env.v.platform is not None
        if gvisor:
            self.direct_io = False
            self.direct_io_note = GVISOR_DIRECT_IO_NOTE
            self.stop_after_pause = True  # a paused sentry still runs
        # Everything _stop() looks at exists before anything is created, so an interrupt
        # (Ctrl-C lands anywhere) at any point below still cleans up what was made.
        self.link: net.Link | None = None
        self.created = False
        self.bundle = paths.STATE_DIR / "bundles" / self.name
        self.cgroup = f"{cgroups.BASE}/{self.name}"
        self._written_args: list[str] | None = None
        self._roots: list[int] | None = None
        try:
            self.cmd = env.command()
            # Only create and start need the netstack workaround (runsc_wrap.py): the other
            # subcommands run runsc itself, so the wrapper's cost is not in their timings.
            self.direct_cmd = [env.binary_path() or env.v.binary, *env.global_args()]
            self.network_path = env.network_path()
            self.rootfs = images.ensure(spec.image).rootfs
            self._seccomp = self._seccomp_filter()
            paths.state("bundles", self.name)
            self.link = net.create(self.name)
            self._write_config(spec.argv or IDLE_ARGV)
        except BaseException:
            self._stop()
            raise
        self._address = self.link.sandbox_ip
        self.host_address = self.link.host_ip

    def _seccomp_filter(self) -> dict[str, Any] | None:
        if not self.spec.seccomp or self.env.v.platform is not None:
            return None
        try:
            return seccomp.default_oci(oci_spec.DEFAULT_CAPS)
        except seccomp.ProfileMissing as e:
            raise SandboxError(str(e), {"profile": str(seccomp.PROFILE)}) from None

    def _write_config(self, args: list[str]) -> None:
        assert self.link is not None
        cfg = oci_spec.build(
            rootfs=self.rootfs,
            args=args,
            env=self.spec.env,
            netns_path=self.link.netns_path,
            cgroups_path=f"/{self.cgroup}",
            limits=self.spec.limits,
            volume=self.spec.volume,
            hostname=self.name,
            seccomp=self._seccomp,
        )
        (self.bundle / "config.json").write_text(json.dumps(cfg))
        self._written_args = list(args)

    def _runtime(self, cmd: list[str], what: str, log: Path) -> None:
        """One runtime step whose output goes to the console log; failures carry evidence."""
        with open(log, "ab") as out:
            try:
                cp = spawn.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                               timeout=self.start_timeout)
            except subprocess.TimeoutExpired:
                raise StepTimeout(
                    f"{self.env.name}: `{what}` did not return within {self.start_timeout:g} s",
                    command_evidence(cmd, None, "", tail_file(log, 2000),
                                     timeout_s=self.start_timeout,
                                     state=self.describe_state()),
                ) from None
        if cp.returncode != 0:
            raise SandboxError(
                f"{self.env.name} {what} failed: {tail_file(log)}",
                command_evidence(cmd, cp.returncode, "", tail_file(log, 2000),
                                 state=self.describe_state()),
            )

    def launch(self, argv: list[str] | None = None) -> None:
        args = argv or self.spec.argv or IDLE_ARGV
        if args != self._written_args:
            self._write_config(args)
        log = self.spec.log or (self.bundle / "console.log")
        self.created = True
        self._roots = None
        # The first process's stdio is create's stdio (non-terminal, pass-through mode).
        self._runtime([*self.cmd, "create", "--bundle", str(self.bundle), self.name],
                      "create", log)
        self.mark("created")
        self._runtime([*self.cmd, "start", self.name], "start", log)

    # -- checkpoint and restore ------------------------------------------------------------
    @property
    def checkpoint_how(self) -> str:  # type: ignore[override]
        if self.env.v.platform:
            return ("runsc checkpoint --image-path=DIR (defaults: the workload stops, pages "
                    "file compressed flate-best-speed); runsc restore --detach "
                    "--image-path=DIR --bundle=B into the same netns and cgroup")
        return (f"{self.env.v.binary} checkpoint / restore --detach through CRIU "
                "(--image-path=DIR --work-path=DIR)")

    def checkpoint(self, image_dir: Path) -> None:
        log = self.spec.log or (self.bundle / "console.log")
        work = [] if self.env.v.platform else [f"--work-path={image_dir}"]
        self._runtime([*self.direct_cmd, "checkpoint", *work,
                       f"--image-path={image_dir}", self.name], "checkpoint", log)
        # Without --leave-running the workload is gone; the container's record goes too, so
        # that the restore can take the same id (and the same cgroup path and netns).
        self.discard()

    def restore(self, image_dir: Path) -> None:
        log = self.spec.log or (self.bundle / "console.log")
        self.created = True
        self._roots = None
        work = [] if self.env.v.platform else [f"--work-path={image_dir}"]
        if self.env.v.platform and self.link is not None:
            net.readdress(self.link)
        # Through the wrapper: a restore sets up the sandbox's network like create does.
        self._runtime([*self.cmd, "restore", "--detach", *work,
                       f"--image-path={image_dir}", "--bundle", str(self.bundle), self.name],
                      "restore", log)

    def discard(self) -> None:
        if self.created:
            run_cmd([*self.direct_cmd, "kill", self.name, "KILL"], timeout=STOP_TIMEOUT,
                    check=False)
            run_cmd([*self.direct_cmd, "delete", "--force", self.name], timeout=STOP_TIMEOUT)
            self.created = False
            self._roots = None

    def exec(self, argv: list[str], timeout: float = 60.0) -> Completed:
        cp = run_cmd([*self.direct_cmd, "exec", self.name, *argv], timeout=timeout,
                     check=False)
        return Completed(argv, cp.returncode, cp.stdout, cp.stderr)

    def state(self) -> dict[str, Any]:
        cp = run_cmd([*self.direct_cmd, "state", self.name], timeout=15)
        st: dict[str, Any] = json.loads(cp.stdout)
        return st

    def describe_state(self) -> str:
        if not self.created:
            return "not created"
        cp = run_cmd([*self.direct_cmd, "state", self.name], timeout=15, check=False)
        return (cp.stdout or cp.stderr).strip()[-1000:]

    def host_pids(self) -> list[int]:
        # runc/crun: the container's processes. runsc: sandbox (sentry), gofer and their
        # children (systrap/ptrace stubs); both carry the bundle path on their command line.
        # The roots live as long as the sandbox: found once (a walk of every process's
        # command line, long with thousands of sandboxes up), their descendants each time.
        if self._roots is None:
            roots = [int(self.state()["pid"])]
            if self.env.v.platform is None:
                self._roots = roots
            else:
                found = procs.find_by_cmdline(f"--bundle={self.bundle}")
                if not found:
                    return procs.descendants(roots)  # not up yet: ask again next time
                self._roots = roots + found
        return procs.descendants(self._roots)

    def freezer_cgroup(self) -> str | None:
        # runc, crun and runsc all put the sandbox's processes (for runsc: sentry, gofer and
        # stubs) in the bundle's cgroupsPath, the freezer hierarchy included.
        return self.cgroup if self.created else None

    # The runtimes' own pause, where the freezer cgroup is missing: runc/crun freeze the
    # container's cgroup too; runsc pauses every task in the sentry.
    def _pause(self) -> bool:
        if not self.created:
            return False
        run_cmd([*self.direct_cmd, "pause", self.name], timeout=PAUSE_TIMEOUT)
        return True

    def _resume(self) -> None:
        run_cmd([*self.direct_cmd, "resume", self.name], timeout=PAUSE_TIMEOUT)

    def limits_enforced(self) -> dict[str, Any]:
        lim = self.spec.limits
        if lim.cpus is None and lim.memory_mib is None:
            return {}
        got = cgroup_limits.limits_of(int(self.state()["pid"]))
        return {**got, "how": self.env.limits_applied(lim).get("how", "")}

    def _stop(self) -> None:
        failed: SandboxError | None = None
        if self.created:
            with contextlib.suppress(SandboxError):
                run_cmd([*self.direct_cmd, "kill", self.name, "KILL"], timeout=STOP_TIMEOUT,
                        check=False)
            try:
                run_cmd([*self.direct_cmd, "delete", "--force", self.name],
                        timeout=STOP_TIMEOUT)
            except SandboxError as exc:
                # A container the runtime still knows is a real teardown failure: the rest is
                # removed, then the cell fails with the evidence (clean finds the container
                # in sandbench's state root later).
                still = run_cmd([*self.direct_cmd, "state", self.name], timeout=STOP_TIMEOUT,
                                check=False)
                if still.returncode == 0:
                    exc.evidence.setdefault("state", still.stdout[-1000:])
                    failed = exc
        try:
            if self.link is not None:
                net.destroy(self.link)
        finally:
            shutil.rmtree(self.bundle, ignore_errors=True)
            cgroups.remove_tree(self.cgroup)
            cgroups.remove_base_if_empty()
        if failed is not None:
            raise SandboxError(f"{self.env.name}: removing the sandbox failed: {failed}",
                               failed.evidence)

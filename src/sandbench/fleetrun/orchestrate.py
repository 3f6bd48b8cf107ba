"""A fleet run: machine identities first, then each host's push, set-up, study, fetch and
clean-up, hosts of one machine one after another, machines `forks` at a time."""

from __future__ import annotations

import functools
import secrets
import shutil
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

import sandbench
from sandbench.errors import UsageError
from sandbench.fleetrun import bundle, engine, inventory
from sandbench.fleetrun.state import SCHEMA, UNFINISHED, FleetState, load, now

#: Where a host keeps what the fleet pushes (removed at the end) and its results (kept).
REMOTE_WORK = "/var/tmp/sandbench-fleet-{run}-{host}"
REMOTE_RESULTS = "/var/lib/sandbench-fleet/{run}/{host}"
#: Longest a study may run on a host before Ansible's async wrapper kills it.
MAX_STUDY_S = 7 * 24 * 3600
#: Polls in a row a host may miss (SSH hiccups) before it is called failed.
MAX_MISSED_POLLS = 5


@dataclass
class Options:
    poll_s: float
    force: bool


class Fleet:
    def __init__(self, state: FleetState, inventory_path: Path, bundle_: bundle.Bundle,
                 work: Path, opts: Options, console: Console) -> None:
        self.state = state
        self.inventory = inventory_path
        self.bundle = bundle_
        self.work = work
        self.opts = opts
        self.console = console
        self.cancel = threading.Event()
        self._print_lock = threading.Lock()

    # -- terminal and record ------------------------------------------------------------
    def say(self, host: str, text: str, style: str = "") -> None:
        with self._print_lock:
            line = f"{escape(host)}: {escape(text)}"
            self.console.print(f"[{style}]{line}" if style else line, highlight=False)

    def mark(self, host: str, state: str, note: str = "", **fields: Any) -> None:
        self.state.update(host, state=state, **fields)
        self.say(host, state + (f" ({note})" if note else ""),
                 "red" if state in ("failed", "unreachable") else "")

    def fail(self, host: str, outcome: engine.Outcome, what: str) -> None:
        state = "unreachable" if outcome.unreachable else "failed"
        why = f"{what}: {outcome.why()}"
        self.mark(host, state, why, why=why, failed_task=outcome.failed_task,
                  evidence=outcome.evidence)

    # -- plays --------------------------------------------------------------------------
    def extravars(self, host: str) -> dict[str, Any]:
        rec = self.state.host(host)
        return {
            "sb_work": rec["remote_work"],
            "sb_results": rec["remote_results"],
            "sb_bundle": str(self.bundle.path),
            "sb_sha256": self.bundle.sha256,
            "sb_study": str(self.state.directory / "study.toml"),
            "sb_max_s": MAX_STUDY_S,
            "sb_jid": rec.get("job_id") or "",
        }

    def play(self, name: str, host: str, extra: dict[str, Any] | None = None,
             on_task: Callable[[str], None] | None = None) -> engine.Outcome:
        work = Path(tempfile.mkdtemp(prefix="play-", dir=self.work))
        try:
            return engine.run_play(name, self.inventory, host,
                                   {**self.extravars(host), **(extra or {})}, work,
                                   self.cancel.is_set, on_task)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def identify(self, host: str) -> tuple[str, str] | None:
        """(machine id, boot id) of the host, or None when it failed (recorded)."""
        out = self.play("facts.yml", host)
        if not out.ok:
            self.fail(host, out, "reading its machine id")
            return None

        def text(task: str) -> str:
            res = out.results.get(task, {})
            return str(res.get("stdout", "")).strip() if res.get("rc") == 0 else ""

        ids = (text("read machine id"), text("read boot id"))
        self.state.update(host, machine_id=ids[0] or None, boot_id=ids[1] or None)
        return ids

    # -- one host -----------------------------------------------------------------------
    def host_flow(self, host: str) -> None:
        rec = self.state.host(host)
        try:
            if rec.get("job_id") and rec.get("state") == "running":
                # A run killed while this host's study ran: the async job outlives the
                # controller. Wait for it before deciding what is left to do.
                self.say(host, f"waiting for the study job {rec['job_id']} begun earlier")
                if self.wait_job(host) is None:
                    return
            self.mark(host, "setting up", "pushing sandbench " + self.bundle.sha256[:12])
            out = self.play("start.yml", host)
            if not out.ok:
                self.fail(host, out, "setting up")
                return
            action = (out.results.get("decide new run, resume or nothing left", {})
                      .get("ansible_facts", {}).get("sb_action", "new"))
            if action != "done":
                jid = out.results.get("start the study", {}).get("ansible_job_id")
                if not jid:
                    self.fail(host, out, "starting the study (no async job id)")
                    return
                self.mark(host, "running", f"{action} run, job {jid}", job_id=str(jid),
                          lines=0, action=action)
                if self.wait_job(host) is None:
                    return
            self.mark(host, "fetching")
            local = self.work / f"{host}.tar.gz"
            out = self.play("finish.yml", host, {"sb_local_fetch": str(local)})
            if not out.ok:
                self.fail(host, out, "fetching the results")
                return
            self.unpack(host, local)
            self.mark(host, "fetched", f"into {self.state.directory / host}", why=None,
                      evidence=None, failed_task=None)
        except Exception as e:  # noqa: BLE001 - one host's bug must not end the others
            self.mark(host, "failed", f"{type(e).__name__}: {e}",
                      why=f"{type(e).__name__}: {e}", evidence={"msg": repr(e)})
        finally:
            # Also after a failure, and after a wait for a job of a killed run (its pushed
            # tree is still there). Not on Ctrl-C: the study runs on and resume needs it.
            if not self.cancel.is_set():
                self.cleanup(host)

    def wait_job(self, host: str) -> dict[str, Any] | None:
        """Poll the host's async study job until it ends: its final status, or None when it
        failed or the fleet run was interrupted (the job then runs on; resume waits)."""
        missed = 0
        last_lines = -1
        while True:
            if self.cancel.wait(self.opts.poll_s):
                return None
            out = self.play("poll.yml", host)
            if not out.ok:
                missed += 1
                if missed > MAX_MISSED_POLLS:
                    self.fail(host, out, f"polling the study ({missed} polls in a row failed)")
                    return None
                self.say(host, f"poll missed ({out.why()}); trying again", "yellow")
                continue
            missed = 0
            wc = out.results.get("count journal lines", {})
            if wc.get("rc") == 0 and str(wc.get("stdout", "")).split():
                lines = int(str(wc["stdout"]).split()[0])
                if lines != last_lines:
                    last_lines = lines
                    self.mark(host, "running", f"journal {lines} lines", lines=lines)
            st = out.results.get("check the study job", {})
            if st.get("finished"):
                if st.get("rc") not in (0, None) or st.get("failed"):
                    ev = engine.evidence_of(st)
                    tail = " ".join(str(ev.get("stderr") or ev.get("msg") or "").split())
                    why = f"the study exited with status {st.get('rc')}: {tail[-300:]}"
                    self.mark(host, "failed", why, why=why, evidence=ev,
                              failed_task="start the study")
                    return None
                return st
            if "started" not in st:
                ev = engine.evidence_of(st)
                why = f"the study job is gone: {ev.get('msg', st)}"
                self.mark(host, "failed", why, why=why, evidence=ev)
                return None

    def unpack(self, host: str, archive: Path) -> None:
        """The fetched archive becomes DIR/<host>/: unpacked beside it, then renamed, so the
        directory is either whole or absent."""
        final = self.state.directory / host
        partial = self.state.directory / f".{host}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(mode=0o700)
        with tarfile.open(archive) as tf:
            tf.extractall(partial, filter="data")
        inner = [p for p in partial.iterdir()]
        if len(inner) != 1 or not (inner[0] / "meta.json").is_file():
            raise RuntimeError(f"fetched archive of {host} holds no results directory")
        if final.exists():
            shutil.rmtree(final)  # an earlier, unfinished fetch of this host's results
        inner[0].rename(final)
        partial.rmdir()
        archive.unlink()

    def cleanup(self, host: str) -> None:
        out = self.play("cleanup.yml", host)
        clean = out.results.get("sandbench clean", {})
        said = " ".join(str(clean.get("stdout", "")).split())[-300:]
        if out.ok:
            self.state.update(host, cleanup="done", clean_output=said)
            self.say(host, f"cleaned up ({said or 'sandbench clean skipped: no tree'})")
        else:
            self.state.update(host, cleanup=out.why())
            self.say(host, f"clean-up failed: {out.why()}", "yellow")

    # -- the fleet ----------------------------------------------------------------------
    def run(self, names: list[str], forks: int) -> None:
        machines = self.group(names, forks)
        if self.cancel.is_set():
            return
        lanes = [[h for h in names if h in group] for group in machines]
        for lane in lanes:
            if len(lane) > 1:
                with self._print_lock:
                    self.console.print(
                        f"[yellow]warning: {', '.join(lane)} are one machine (same machine "
                        "or boot id): they run one after another, never at once")
        self.state.set(machines=[list(lane) for lane in lanes])
        self.parallel([functools.partial(self.lane, lane) for lane in lanes], forks)

    def lane(self, hosts: list[str]) -> None:
        """One machine's hosts, one after another: never two measured at once."""
        for h in hosts:
            if self.cancel.is_set():
                return
            self.host_flow(h)

    def group(self, names: list[str], forks: int) -> list[set[str]]:
        ids: dict[str, tuple[str, str]] = {}

        def one(h: str) -> None:
            got = self.identify(h)
            if got is not None:
                ids[h] = got

        self.parallel([functools.partial(one, h) for h in names], forks)
        return machines(names, ids)

    def parallel(self, jobs: list[Callable[[], object]], forks: int) -> None:
        """Run jobs `forks` at a time; Ctrl-C stops launching, cancels running plays and
        waits for the threads (each records where its host stands)."""
        pool = ThreadPoolExecutor(max_workers=forks)
        futures: set[Future[object]] = {pool.submit(j) for j in jobs}
        try:
            while futures:
                done, futures = wait(futures, timeout=0.5, return_when=FIRST_COMPLETED)
                for f in done:
                    f.result()
        except KeyboardInterrupt:
            self.cancel.set()
            self.console.print("[yellow]interrupted: stopping the plays; studies already "
                               "running go on on their hosts (resume waits for them)")
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def machines(names: list[str], ids: dict[str, tuple[str, str]]) -> list[set[str]]:
    """Hosts grouped by machine, in inventory order; hosts without ids are left out.

    Two hosts are one machine when either id is equal: the boot id is the same for every
    name of one running kernel (two addresses, two ports, an alias), and a machine id
    shared by cloned images errs on the side of never measuring two hosts at once."""
    groups: list[set[str]] = []
    for h in names:
        if h not in ids:
            continue
        mid, bid = ids[h]
        joined = [g for g in groups
                  if any((mid and ids[o][0] == mid) or (bid and ids[o][1] == bid) for o in g)]
        merged = {h}.union(*joined) if joined else {h}
        groups = [g for g in groups if g not in joined] + [merged]
    return groups


def _validate_study(path: Path) -> None:
    """The study file, checked here by the same rules the hosts apply (availability of an
    environment is a host's matter, decided there)."""
    from sandbench.benchmarks.base import DEFAULT_TIMEOUTS
    from sandbench.benchmarks.registry import all_benchmarks
    from sandbench.environments.registry import all_environments
    from sandbench.study import PROFILES
    from sandbench.studyfile import load as load_study

    benches = all_benchmarks()
    load_study(path, [e.name for e in all_environments()],
               {b.name: b.Params for b in benches}, PROFILES, list(DEFAULT_TIMEOUTS))


def _slug(host: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in host)


def start(inventory_path: Path, study: Path, out: Path | None, limit: str | None,
          forks: int, opts: Options, console: Console) -> int:
    """A new fleet run. Every input is checked before anything is written or pushed."""
    from sandbench.cli import _check_out

    why = engine.missing_engine()
    if why:
        raise UsageError(why)
    _validate_study(study)
    names = inventory.hosts(inventory_path, limit)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = out or Path("results") / f"{stamp}-fleet"
    _check_out(out)
    bundle.checkout()
    run_id = f"{stamp}-{secrets.token_hex(3)}"
    work = Path(tempfile.mkdtemp(prefix="sandbench-fleet-"))
    try:
        b = bundle.make(work / "sandbench.tar.gz")
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copyfile(study, out / "study.toml")
        import hashlib

        data = {
            "schema": SCHEMA, "run_id": run_id, "started": now(),
            "sandbench_version": sandbench.__version__, "source_tree": b.tree,
            "bundle_sha256": b.sha256, "study": str(study.resolve()),
            "study_sha256": hashlib.sha256(study.read_bytes()).hexdigest(),
            "inventory": str(inventory_path.resolve()), "limit": limit, "forks": forks,
            "hosts": {h: {"state": "queued", "remote_work": REMOTE_WORK.format(
                run=run_id, host=_slug(h)), "remote_results": REMOTE_RESULTS.format(
                run=run_id, host=_slug(h)), "updated": now()} for h in names},
        }
        state = FleetState(out, data)
        state.write()
        console.print(f"fleet run {run_id}: {len(names)} host(s), results in {out}")
        console.print(f"pushing sandbench {b.tree[:12]} (git tree of the checkout's tracked "
                      f"files), archive sha256 {b.sha256[:16]}")
        if b.untracked:
            console.print(f"[yellow]warning: untracked files are not pushed: "
                          f"{', '.join(b.untracked[:5])}")
        return _drive(state, inventory_path, b, work, names, forks, opts, console)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def resume(directory: Path, study: Path | None, opts: Options, console: Console) -> int:
    """Run again only the hosts that did not finish, with this same sandbench and study."""
    import hashlib

    why = engine.missing_engine()
    if why:
        raise UsageError(why)
    state = load(directory)
    d = state.data
    if study is not None:
        try:
            digest = hashlib.sha256(study.read_bytes()).hexdigest()
        except OSError as e:
            raise UsageError(f"--study {str(study)!r}: {e.strerror}") from None
        if digest != d.get("study_sha256"):
            raise UsageError(f"--study {str(study)!r} differs from the study this fleet run "
                             f"began with ({d.get('study')}); a resume keeps the study")
    if d.get("sandbench_version") != sandbench.__version__:
        raise UsageError(f"--resume {str(directory)!r}: begun with sandbench "
                         f"{d.get('sandbench_version')}, this is {sandbench.__version__}")
    tree = bundle.source_tree()
    if tree != d.get("source_tree"):
        raise UsageError(f"--resume {str(directory)!r}: begun with sandbench tree "
                         f"{str(d.get('source_tree'))[:12]}, this checkout is {tree[:12]}; "
                         "check out the version it began with")
    inv = Path(str(d.get("inventory")))
    names = inventory.hosts(inv, d.get("limit"))
    left = [h for h, r in d["hosts"].items() if r.get("state") in UNFINISHED]
    gone = [h for h in left if h not in names]
    if gone:
        raise UsageError(f"--resume: host(s) {', '.join(gone)} are no longer in {inv}")
    forks = int(d.get("forks") or 1)
    work = Path(tempfile.mkdtemp(prefix="sandbench-fleet-"))
    try:
        b = bundle.make(work / "sandbench.tar.gz")
        state.set(bundle_sha256=b.sha256, resumed=now())
        done = [h for h in d["hosts"] if h not in left]
        console.print(f"resuming fleet run {d.get('run_id')}: {len(left)} host(s) left"
                      + (f"; already fetched: {', '.join(done)}" if done else ""))
        for h in left:
            keep_job = d["hosts"][h].get("state") == "running"
            state.update(h, state="running" if keep_job else "queued", why=None,
                         evidence=None, failed_task=None)
        return _drive(state, inv, b, work, left, forks, opts, console)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _drive(state: FleetState, inv: Path, b: bundle.Bundle, work: Path, names: list[str],
           forks: int, opts: Options, console: Console) -> int:
    fleet = Fleet(state, inv, b, work, opts, console)
    t0 = time.monotonic()
    try:
        if names:
            fleet.run(names, forks)
    except KeyboardInterrupt:
        state.set(interrupted=now())
        console.print(f"[yellow]interrupted; resume with: sandbench fleet run --resume "
                      f"{state.directory}")
        return 130
    status = _report(state, opts, console)
    elapsed = time.monotonic() - t0
    state.set(finished=now(), seconds=round(elapsed, 1))
    bad = {h: r for h, r in state.data["hosts"].items() if r.get("state") != "fetched"}
    console.print(f"fleet run took {elapsed:.0f} s: {len(state.data['hosts']) - len(bad)} "
                  f"fetched, {len(bad)} not")
    for h, r in bad.items():
        sys.stderr.write(f"sandbench: fleet: {h} {r.get('state')}: {r.get('why') or ''}\n")
    if bad:
        sys.stderr.write(f"sandbench: fleet: resume with: sandbench fleet run --resume "
                         f"{state.directory}\n")
        return 1
    return status


def _report(state: FleetState, opts: Options, console: Console) -> int:
    """One report of every fetched host, host as a dimension (report's merge path)."""
    from sandbench.report import write_report

    fetched = [state.directory / h for h, r in state.data["hosts"].items()
               if r.get("state") == "fetched"]
    if not fetched:
        console.print("[red]no host's results were fetched: no report")
        return 1
    from sandbench.results import read_meta

    baseline = str(read_meta(fetched[0]).get("baseline") or "host")
    try:
        path = write_report(fetched, baseline=baseline, out=state.directory / "report",
                            force=opts.force)
    except UsageError as e:
        sys.stderr.write(f"sandbench: error: report not merged: {e}\n")
        return 1
    state.set(report=str(path))
    console.print(f"report: {path}")
    return 0

"""Command line: doctor, image, run, report, compare, clean, fleet.

Errors a user can cause print one line naming the bad value and what is allowed, and exit 2,
before anything is written.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.table import Table

from sandbench import __version__
from sandbench.errors import UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: the message names the bad value.
        sys.stderr.write(f"sandbench: error: {message}\n")
        sys.exit(2)


def _split(value: str, known: list[str], what: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise UsageError(f"empty {what} list {value!r}; known: {', '.join(known)}")
    for n in names:
        if n not in known:
            raise UsageError(f"unknown {what} {n!r}; known: {', '.join(known)}")
    if len(set(names)) != len(names):
        raise UsageError(f"{what} listed twice in {value!r}")
    return names


def _positive_int(value: str, what: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise UsageError(f"{what} must be a positive integer, got {value!r}") from None
    if n <= 0:
        raise UsageError(f"{what} must be a positive integer, got {value!r}")
    return n


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        raise UsageError(f"--out {str(out)!r} already holds files; give a new or empty directory")
    parent = out if out.is_dir() else out.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"--out {str(out)!r} is not writable ({parent} denies writing)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sandbench", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--version", action="version", version=f"sandbench {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    d = sub.add_parser("doctor", help="which environments this machine can run, and why not")
    d.add_argument("--json", action="store_true", help="machine-readable output")

    i = sub.add_parser("image", help="build the images sandboxes boot from")
    isub = i.add_subparsers(dest="image_cmd", required=True, parser_class=_Parser)
    ib = isub.add_parser("build", help="build (or find cached) an image")
    ib.add_argument("name", help="image name (minimal, full)")
    ib.add_argument("--force", action="store_true", help="rebuild even if cached")

    r = sub.add_parser("run", help="run a study")
    r.add_argument("--profile", help="quick (minutes, the default) or paper (hours)")
    r.add_argument("--env", help="comma-separated environments (default: all available)")
    r.add_argument("--bench", help="comma-separated benchmarks (default: all)")
    r.add_argument("--rounds", help="fix every benchmark's number of rounds (no adaptive rounds)")
    r.add_argument("--budget", metavar="MINUTES",
                   help="time budget: adaptive rounds stop there (default: quick 12, paper none)")
    r.add_argument("--no-seccomp", action="store_true",
                   help="run every environment without its default seccomp profile")
    r.add_argument("--out", help="results directory (default: results/<time>-<profile>)")
    r.add_argument("--baseline", help="environment ratios are computed against (default host)")
    r.add_argument("--study", help="TOML study file (flags given as well override it)")
    r.add_argument("--resume", metavar="DIR", help="finish an interrupted run in DIR")
    r.add_argument("--force", action="store_true",
                   help="with --resume: accept a run begun on another machine or boot")
    r.add_argument("--no-report", action="store_true", help="skip writing the report at the end")

    rep = sub.add_parser("report", help="write report.html, report.md and figures for a run, "
                         "or one report merging several runs (hosts)")
    rep.add_argument("dir", nargs="+", help="results directory (several: merged, host by host)")
    rep.add_argument("--baseline", default=None, help="environment ratios are computed against")
    rep.add_argument("--terminal", action="store_true",
                     help="print the run's summary (one row per environment, one column per "
                     "benchmark) instead of writing the report")
    rep.add_argument("--out", default=None,
                     help="where to write the report (needed to merge several directories)")
    rep.add_argument("--force", action="store_true",
                     help="merge runs even when their benchmark parameters differ")

    c = sub.add_parser("compare", help="compare two runs cell by cell")
    c.add_argument("a", help="results directory A (before)")
    c.add_argument("b", help="results directory B (after)")
    c.add_argument("--factor", default="1.1", help="smallest ratio called a difference")
    c.add_argument("--force", action="store_true", help="compare despite differing facts")
    c.add_argument("--fail-on-regression", action="store_true", help="exit 1 on a regression")

    f = sub.add_parser("fleet", help="run one study on many hosts through Ansible")
    fsub = f.add_subparsers(dest="fleet_cmd", required=True, parser_class=_Parser)
    fr = fsub.add_parser("run", help="push sandbench to an inventory's hosts, run the study "
                         "on each, fetch the results and merge them into one report")
    fr.add_argument("inventory", nargs="?", help="Ansible inventory (INI or YAML)")
    fr.add_argument("--study", help="TOML study file run on every host")
    fr.add_argument("--out", help="fleet results directory (default: results/<time>-fleet)")
    fr.add_argument("--limit", help="Ansible host pattern: only these hosts")
    fr.add_argument("--forks", default="5", help="machines measured at once (default 5)")
    fr.add_argument("--poll", default="30", metavar="SECONDS",
                    help="seconds between looks at each host's study (default 30)")
    fr.add_argument("--resume", metavar="DIR", help="finish a fleet run: only hosts not fetched")
    fr.add_argument("--force", action="store_true",
                    help="merge hosts' results even when their benchmark parameters differ")

    cl = sub.add_parser("clean", help="remove what killed or crashed runs left behind")
    cl.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    cl.add_argument("--force", action="store_true", help="clean even while a run is active")
    return p


def cmd_doctor(args: argparse.Namespace, console: Console) -> int:
    from sandbench.environments.registry import all_environments
    from sandbench.hostfacts import host_facts

    rows: list[dict[str, Any]] = []
    for env in all_environments():
        av = env.available()
        rows.append(
            {
                "name": env.name,
                "available": av.ok,
                "reason": av.reason,
                "description": env.description,
                "facts": env.facts(),
            }
        )
    if args.json:
        print(json.dumps({"environments": rows, "host": host_facts()}, indent=2, default=str))
        return 0
    table = Table(title="sandbench doctor")
    table.add_column("environment")
    table.add_column("available")
    table.add_column("version / reason")
    for row in rows:
        facts = row["facts"]
        version = facts.get("version") or facts.get("kernel") or ""
        detail = str(version) if row["available"] else row["reason"]
        if row["available"] and facts.get("accel"):
            detail += f" [{facts['accel']}: {facts.get('accel_reason', '')}]"
        table.add_row(row["name"], "yes" if row["available"] else "[red]no", detail)
    console.print(table)
    from sandbench.settings import in_effect

    given = [f"{name}={value}" for name, value, by_user in in_effect() if by_user]
    if given:
        console.print("settings from the environment: " + ", ".join(given))
    return 0


def cmd_image(args: argparse.Namespace, console: Console) -> int:
    from sandbench.images import get_builder

    builder = get_builder(args.name)
    img = builder.ensure(force=args.force, progress=lambda m: console.print(f"  {m}"))
    console.print(f"image {img.name} {img.key}: {img.directory}")
    return 0


def resolve_plan(
    args: argparse.Namespace, before_probes: Any = None
) -> tuple[Any, list[str]]:
    """Validate every input and check availability; raises UsageError before any write."""
    from sandbench.benchmarks.base import DEFAULT_TIMEOUTS
    from sandbench.benchmarks.params import MAX_ROUNDS
    from sandbench.benchmarks.registry import all_benchmarks
    from sandbench.environments.registry import all_environments
    from sandbench.study import PROFILES, Plan
    from sandbench.studyfile import MAX_BUDGET_MIN, Study
    from sandbench.studyfile import load as load_study

    envs = all_environments()
    benches = all_benchmarks()
    env_names = [e.name for e in envs]
    study = Study()
    if args.study:
        study = load_study(
            Path(args.study),
            env_names,
            {b.name: b.Params for b in benches},
            PROFILES,
            list(DEFAULT_TIMEOUTS),
        )
    profile = args.profile or study.profile or "quick"
    if profile not in PROFILES:
        raise UsageError(f"unknown profile {profile!r}; allowed: {', '.join(PROFILES)}")
    args.profile = profile
    wanted_envs = _split(args.env, env_names, "environment") if args.env else study.envs
    wanted_benches = (
        _split(args.bench, [b.name for b in benches], "benchmark") if args.bench else study.benches
    )
    rounds = _positive_int(args.rounds, "--rounds") if args.rounds is not None else study.rounds
    if rounds is not None and rounds > MAX_ROUNDS:
        raise UsageError(f"--rounds must be at most {MAX_ROUNDS}, got {rounds}")
    budget_s = study.budget_s
    if getattr(args, "budget", None) is not None:
        try:
            minutes = float(args.budget)
        except ValueError:
            minutes = math.nan
        if not math.isfinite(minutes) or not 0 < minutes <= MAX_BUDGET_MIN:
            raise UsageError(f"--budget {args.budget!r}: must be a positive number of minutes, "
                             f"at most {MAX_BUDGET_MIN:g}")
        budget_s = minutes * 60.0
    seccomp = study.seccomp if study.seccomp is not None else True
    if getattr(args, "no_seccomp", False):
        seccomp = False
    args.baseline = args.baseline or study.baseline or "host"
    if args.baseline not in env_names:
        raise UsageError(f"unknown baseline {args.baseline!r}; known: {', '.join(env_names)}")
    args.out = args.out or study.out
    if args.out and not args.resume:
        _check_out(Path(args.out))

    if before_probes is not None:
        # Leftovers are looked for before any availability probe runs, so that a probe's own
        # sandbox is never mistaken for (or blamed on) an earlier run.
        before_probes()
    chosen = [e for e in envs if wanted_envs is None or e.name in wanted_envs]
    notes: list[str] = []
    unavailable: dict[str, str] = {}
    runnable = []
    for env in chosen:
        av = env.available()
        if av.ok:
            runnable.append(env)
        elif wanted_envs is not None:
            raise UsageError(f"environment {env.name!r} is not available here: {av.reason}")
        else:
            unavailable[env.name] = av.reason
            notes.append(f"skipping {env.name}: {av.reason}")
    plan = Plan(
        profile=args.profile,
        envs=runnable,
        benches=[b for b in benches
                 if (b.default if wanted_benches is None else b.name in wanted_benches)],
        rounds_override=rounds,
        unavailable=unavailable,
        baseline=args.baseline,
        overrides=study.bench,
        timeouts=study.timeouts,
        budget_s=budget_s,
        seccomp=seccomp,
    )
    plan.check()  # every benchmark's parameters and round policy, decoded before any write
    return plan, notes


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    """A run, and after it, whatever happened (an interrupt during availability probes or
    image builds included), nothing of this process left on the host."""
    from sandbench.study import remove_own_leftovers, shielded_from_signals, stop_live_sandboxes

    try:
        return _cmd_run(args, console)
    except KeyboardInterrupt:  # before the runner began: it says what was kept itself
        console.print("[yellow]interrupted before any measurement")
        return 130
    finally:
        with shielded_from_signals(console, reraise=False):
            stop_live_sandboxes(console)
            for line in remove_own_leftovers():
                console.print(f"[red]{line}")


def _cmd_run(args: argparse.Namespace, console: Console) -> int:
    if args.resume:
        return _cmd_resume(args, console)
    where: list[Path] = []

    def before_probes() -> None:
        # Every input is valid by now: make the results directory, then look for leftovers
        # (before any probe can create a sandbox of its own).
        where.append(_make_out(args))
        _warn_leftovers(console)

    try:
        plan, notes = resolve_plan(args, before_probes=before_probes)
        if not plan.envs:
            raise UsageError(
                "no environment is available on this machine; run `sandbench doctor`")
    except UsageError:
        # Nothing half-written: a results directory made for this run goes again.
        if where:
            with contextlib.suppress(OSError):
                where[0].rmdir()  # only if still empty
        raise
    out = where[0]
    for n in notes:
        console.print(f"[yellow]{n}")
    return _run_plan(plan, out, args, console, None)


def _cmd_resume(args: argparse.Namespace, console: Console) -> int:
    """The stored plan, rebuilt from meta.json (study.resume_plan), run on in its directory;
    flags given again must say what the run's plan says."""
    from sandbench.benchmarks.registry import all_benchmarks
    from sandbench.environments.registry import all_environments
    from sandbench.study import resume_meta, resume_plan

    if args.study:
        raise UsageError("--resume takes the plan from the run; do not give --study")
    given = {"--profile": args.profile, "--env": args.env, "--bench": args.bench,
             "--rounds": args.rounds, "--baseline": args.baseline, "--out": args.out}
    out = Path(args.resume)
    meta, _ = resume_meta(out, given, force=args.force)
    _warn_leftovers(console)  # before any availability probe, as for a new run
    plan = resume_plan(meta, all_environments(), all_benchmarks())
    args.baseline = plan.baseline
    return _run_plan(plan, out, args, console, meta)


def _run_plan(plan: Any, out: Path, args: argparse.Namespace, console: Console,
              previous: dict[str, Any] | None) -> int:
    from sandbench.study import Runner

    console.print(f"results: {out}")
    runner = Runner(plan, out, console, previous=previous)
    try:
        runner.run()
    except KeyboardInterrupt:
        console.print(
            f"[yellow]interrupted; every finished sample is kept in {out}. "
            f"Resume with: sandbench run --resume {out}"
        )
        return 130
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            sys.stderr.write(
                f"sandbench: error: results disk full writing {out} ({e.strerror}); samples "
                f"journaled before are intact; free space, then: sandbench run --resume {out}\n"
            )
            return 1
        return _internal_error(out, e)
    except Exception as e:  # noqa: BLE001 - one line, the journal kept, the way back given
        return _internal_error(out, e)
    print_summary(out, console, args.baseline or "host")
    from sandbench.timing import timing_lines

    lines = timing_lines(out)
    if lines:
        console.print("where the time went: " + "; ".join(lines))
    if not args.no_report:
        t0 = time.monotonic()
        _report(out, args.baseline, console)
        console.print(f"report written in {time.monotonic() - t0:.1f} s")
    console.print(f"results directory: {out}")
    return 0


def _make_out(args: argparse.Namespace) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) if args.out else Path("results") / f"{stamp}-{args.profile}"
    if not args.out:
        # Two runs started in the same second: mkdir without exist_ok is the arbiter, the
        # second takes the next free suffix, so no two runs ever share a directory.
        out.parent.mkdir(parents=True, exist_ok=True)
        base, n = out, 1
        while True:
            try:
                out.mkdir(mode=0o700)
                break
            except FileExistsError:
                n += 1
                out = base.with_name(f"{base.name}-{n}")
    try:
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(out, 0o700)  # results may name hosts and versions: owner only
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"--out {str(out)!r} is not writable: {e.strerror}") from None
    return out


def _internal_error(out: Path, exc: BaseException) -> int:
    """An unexpected error ends the run with one line, the traceback in the results
    directory, and the resume command: every journaled cell is kept."""
    import traceback

    log = out / "logs" / "internal-error.log"
    with contextlib.suppress(OSError):
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(traceback.format_exc())
    sys.stderr.write(
        f"sandbench: error: the run stopped on an unexpected error "
        f"({type(exc).__name__}: {str(exc).strip()[:300]}); traceback in {log}; every "
        f"finished sample is kept; resume with: sandbench run --resume {out}\n")
    return 1


def _warn_leftovers(console: Console) -> None:
    """Leftover sandboxes of an earlier run poison the next one (Kata's metrics lesson).
    Called before any availability probe, so nothing found can be this run's own."""
    from sandbench.cleanup import find_leftovers
    from sandbench.study import active_runs

    if active_runs():
        console.print("[yellow]another sandbench run is active; skipping the leftover check")
        return
    found = find_leftovers()
    if found:
        console.print(
            f"[yellow]the host is not clean: {len(found)} leftover(s) of earlier runs "
            f"(first: {found[0]}); run `sandbench clean` for a fair measurement"
        )


def _report(out: Path, baseline: str | None, console: Console) -> None:
    from sandbench.report import write_report

    path = write_report(out, baseline=baseline or "host")
    console.print(f"report: {path}")


def print_summary(out: Path, console: Console, baseline: str = "host") -> None:
    """Medians per environment and metric, with the ratio to the baseline marked only where
    the one significance function (stats.difference) finds a real difference."""
    from sandbench.results import read_failures, read_not_applicable
    from sandbench.summary import PIPED_WIDTH, summary_table

    width = console.width if console.is_terminal else PIPED_WIDTH
    console.print(summary_table(out, baseline, width=width), width=width)
    failures = read_failures(out)
    if failures:
        console.print(f"[red]{len(failures)} failed cell(s); see results.jsonl (each with its "
                      "evidence: command, exit status, output tails)")
    for na in read_not_applicable(out):
        console.print(f"{na.bench} on {na.env}: not applicable ({na.reason})")


#: What `report` writes into its output directory; a directory holding anything else is not
#: one of its outputs, and writing there would replace (figures/*.png) what is not its own.
REPORT_FILES = frozenset({"report.html", "report.md", "summary.csv", "figures"})


def _check_report_out(out: Path, dirs: list[Path]) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise UsageError(f"--out {str(out)!r} exists and is not a directory")
    if any(out.resolve() == d.resolve() for d in dirs):
        return  # a run's own directory: its report is rewritten, its results untouched
    foreign = sorted(p.name for p in out.iterdir() if p.name not in REPORT_FILES)
    figs = out / "figures"
    if figs.is_dir():
        foreign += sorted(f"figures/{p.name}" for p in figs.iterdir() if p.suffix != ".png")
    elif figs.exists():
        foreign.append("figures")
    if foreign:
        raise UsageError(f"--out {str(out)!r} holds files that are not a sandbench report "
                         f"({', '.join(foreign[:3])}); give a new or empty directory, or an "
                         "earlier report's")


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    from sandbench.report import write_report
    from sandbench.results import read_meta

    dirs = [Path(d) for d in args.dir]
    seen: dict[Path, Path] = {}
    for d in dirs:
        key = d.resolve()
        if key in seen:
            raise UsageError(f"results directory {str(d)!r} given twice (as {str(seen[key])!r}"
                             "); each run is merged once")
        seen[key] = d
    metas = [read_meta(d) for d in dirs]
    if args.terminal:
        if len(dirs) > 1 or args.out:
            raise UsageError("--terminal prints one run's summary: give one directory, no --out")
        print_summary(dirs[0], console, args.baseline or metas[0].get("baseline") or "host")
        return 0
    if len(dirs) > 1 and not args.out:
        raise UsageError(f"merging {len(dirs)} results directories needs --out DIR")
    if args.out:
        _check_report_out(Path(args.out), dirs)
    baseline = args.baseline or metas[0].get("baseline", "host")
    path = write_report(dirs, baseline=baseline, out=Path(args.out) if args.out else None,
                        force=args.force)
    console.print(f"report: {path}")
    return 0


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    from sandbench.compare import compare_runs

    try:
        factor = float(args.factor)
    except ValueError:
        raise UsageError(f"--factor must be a number above 1, got {args.factor!r}") from None
    if not math.isfinite(factor) or factor <= 1.0:
        raise UsageError(f"--factor must be a number above 1, got {args.factor!r}")
    cmp = compare_runs(Path(args.a), Path(args.b), factor=factor, force=args.force)
    console.print(cmp.render_text())
    if args.fail_on_regression and cmp.regressions:
        return 1
    return 0


def cmd_clean(args: argparse.Namespace, console: Console) -> int:
    from sandbench import paths
    from sandbench.cleanup import clean
    from sandbench.study import active_runs

    why = paths.unsafe_dir_reason(paths.STATE_DIR)
    if why is None and paths.STATE_DIR.is_dir() and paths.state_root_if_ours() is None:
        why = f"it was not made by sandbench (no {paths.MARKER} in it)"
    if why is not None:
        # clean unmounts and removes below the state directory: never in someone else's.
        raise UsageError(f"SANDBENCH_STATE_DIR={str(paths.STATE_DIR)!r} cannot be used: {why}")

    live = active_runs()
    if live and not args.force and not args.dry_run:
        pid, out = live[0]
        raise UsageError(
            f"a sandbench run is active (pid {pid}, {out}); stop it first or use --force"
        )

    report = clean(dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for item in report.removed:
        console.print(f"{verb}: {item}", markup=False, highlight=False)
    for item, why in report.failed:
        console.print(f"could not remove: {item}: {why}", markup=False, highlight=False)
    if not report.removed and not report.failed:
        console.print("nothing left behind by sandbench")
    if report.failed:
        # One line on stderr too, for scripts: clean did not finish its job.
        sys.stderr.write(f"sandbench: error: {len(report.failed)} leftover(s) could not be "
                         "removed (listed above)\n")
        return 1
    return 0


def cmd_fleet(args: argparse.Namespace, console: Console) -> int:
    from sandbench.fleetrun import orchestrate

    try:
        poll = float(args.poll)
    except ValueError:
        poll = math.nan
    if not math.isfinite(poll) or not 0.5 <= poll <= 3600:
        raise UsageError(f"--poll must be a number of seconds from 0.5 to 3600, got "
                         f"{args.poll!r}")
    opts = orchestrate.Options(poll_s=poll, force=args.force)
    if args.resume:
        extra = [n for n, v in (("INVENTORY", args.inventory), ("--out", args.out),
                                ("--limit", args.limit)) if v]
        if extra:
            raise UsageError(f"--resume takes the hosts and directory from the fleet run; do "
                             f"not give {', '.join(extra)}")
        return orchestrate.resume(Path(args.resume), Path(args.study) if args.study else None,
                                  opts, console)
    if not args.inventory:
        raise UsageError("fleet run needs an INVENTORY (or --resume DIR)")
    if not args.study:
        raise UsageError("fleet run needs --study FILE (the study every host runs)")
    forks = _positive_int(args.forks, "--forks")
    return orchestrate.start(Path(args.inventory), Path(args.study),
                             Path(args.out) if args.out else None, args.limit, forks, opts,
                             console)


COMMANDS = {
    "doctor": cmd_doctor,
    "image": cmd_image,
    "run": cmd_run,
    "report": cmd_report,
    "compare": cmd_compare,
    "clean": cmd_clean,
    "fleet": cmd_fleet,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Piped output (CI logs, files) gets a wide table instead of rich's 80-column default.
    console = Console() if sys.stdout.isatty() else Console(width=220)
    try:
        return COMMANDS[args.cmd](args, console)
    except UsageError as e:
        sys.stderr.write(f"sandbench: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        # After a command's own handling (a run's teardown and sweep are done by then):
        # e.g. while the last lines print. The usual status of an interrupted command.
        sys.stderr.write("sandbench: interrupted\n")
        return 130
    finally:
        # The command is over (a run's teardown and sweep included): an interrupt during the
        # interpreter's exit has nothing left to stop, and ends it with the usual status.
        # Only as a program (argv from sys.argv): main() called by a test leaves its caller's
        # handlers alone.
        if argv is None:
            signal.signal(signal.SIGINT, _exit_interrupted)


def _exit_interrupted(_signum: int, _frame: object) -> None:
    sys.stdout.flush()
    os._exit(130)


def exit_with(status: int) -> NoReturn:
    """End the program with `status`, also under `python -m`.

    CPython (3.8-3.12 at least) sets a flag when a KeyboardInterrupt ends code evaluated
    from a string (`exec`/`eval` of source: dataclass and namedtuple creation in a lazy
    import), even though a caller catches it; under `-m`, Py_RunMain then ignores the exit
    status and kills the process with SIGINT. A Ctrl-C that lands in such an import and is
    handled (teardown done, 130 returned) would read as an unhandled death. Each string
    evaluation clears the flag at its start, so one empty evaluation restores the status."""
    exec("")  # noqa: S102 - clears CPython's unhandled-KeyboardInterrupt flag, runs nothing
    sys.exit(status)


if __name__ == "__main__":
    exit_with(main())

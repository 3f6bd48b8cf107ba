"""devloop: a developer's loop inside the sandbox, three phases timed on the host's clock.

Each round lays the image's pinned inputs (images/devloop_inputs.py) out fresh on the
benchmark volume (untimed), then times around Sandbox.exec: install (python3 -m venv and pip
install --no-index of the pinned wheels), build (Lua 5.4's `make -j<cpus> posix`) and test
(compileall over the venv, imports and a small check per package, the built lua running a
script). Every phase's output is checked; a failing phase fails the cell with its evidence.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sandbench import volume
from sandbench.benchmarks.base import Benchmark, RoundFn, RunContext
from sandbench.benchmarks.params import BenchParams, Profile, RoundPolicy, param
from sandbench.benchmarks.servers import evidence, exec_quiet
from sandbench.environments.base import Completed, Environment, Sandbox
from sandbench.errors import SandboxError
from sandbench.images import devloop_inputs as di
from sandbench.results import Measurement

MIB = 1024 * 1024
VOLUME_MIB = 1024
#: Every phase runs with the same small environment in every sandbox (the host's PIP_* and
#: pip.conf would otherwise change what pip does).
ENV = ["env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
       "LC_ALL=C.UTF-8", "PIP_CONFIG_FILE=/dev/null", "PIP_NO_CACHE_DIR=1",
       "PIP_DISABLE_PIP_VERSION_CHECK=1", "PIP_NO_INPUT=1"]
LUA_CHECK = "local s=0 for i=1,100000 do s=s+i%7 end print('lua ok', s, _VERSION)"
LUA_EXPECT = "lua ok\t300000\tLua 5.4"
PY_CHECK = (
    "import " + ", ".join(w.module for w in di.WHEELS) + "\n"
    "import packaging.version\n"
    "assert jinja2.Template('{{ x|e }}').render(x='<a>') == '&lt;a&gt;'\n"
    "assert yaml.safe_load(yaml.safe_dump({'a': [1, 2]})) == {'a': [1, 2]}\n"
    "assert msgpack.unpackb(msgpack.packb([1, 'x'])) == [1, 'x']\n"
    "assert packaging.version.Version('1.10') > packaging.version.Version('1.9')\n"
    "print('python ok')\n"
)
LAYOUT = (
    'set -e; D="$1"; S="$2"; W="$3"; rm -rf "$D"/devloop-r*; mkdir -p "$W/tmp"; '
    f'cp -r "$S/wheels" "$W/wheels"; tar -xzf "$S/{di.LUA_TARBALL}" -C "$W"; '
    'if [ -n "$4" ]; then printf "this is not C\\n" > "$W/$4"; fi; sync'
)


def phase_argv(phase: str, work: str, cpus: int) -> list[str]:
    env = [*ENV, f"HOME={work}", f"TMPDIR={work}/tmp"]
    py = f"{work}/venv/bin/python"
    if phase == "install":
        reqs = [w.requirement for w in di.WHEELS]
        return [*env, "/bin/sh", "-c",
                'w="$1"; shift; python3 -m venv "$w/venv" && "$w/venv/bin/python" -m pip '
                'install -q --no-index --no-compile --find-links "$w/wheels" "$@"',
                "sh", work, *reqs]
    if phase == "build":
        return [*env, "make", "-s", "-C", f"{work}/{di.LUA_DIR}", f"-j{cpus}", "posix"]
    if phase == "test":
        return [*env, "/bin/sh", "-c",
                'set -e; "$1" -m compileall -q -j "$2" "$3/venv/lib"; "$1" -c "$4"; '
                f'"$3/{di.LUA_DIR}/src/lua" -e "$5"',
                "sh", py, str(cpus), work, PY_CHECK, LUA_CHECK]
    raise ValueError(f"unknown devloop phase {phase!r}")


def check(phase: str, done: Completed) -> str:
    """'' when the phase's output is what it must be, else what is wrong."""
    if done.returncode != 0:
        return f"exited {done.returncode}"
    if phase == "test":
        out = done.stdout
        if "python ok" not in out:
            return "the package checks did not print 'python ok'"
        if LUA_EXPECT not in out:
            return f"the built lua did not print {LUA_EXPECT!r}"
    return ""


@dataclass(frozen=True)
class DevloopParams(BenchParams):
    corrupt: str = param("", doc="a source file to break (a failing build, for tests); \"\": none")


class Devloop(Benchmark):
    name = "devloop"
    short = "devloop"
    description = ("a developer's loop: venv + pip install of pinned wheels, make of Lua 5.4, "
                   "compileall and checks; seconds per phase")
    image = "full"
    converge_on = ("devloop_time",)
    # Run only when named until the quick study's budget is shown to hold it: under TCG a
    # round of this is minutes, and the quick study of every environment must stay < 20 min.
    default = False
    profiles = {
        # About 10 s a round natively here; gVisor and TCG VMs take several times that, so
        # quick keeps few rounds (emulated environments are capped at 3 by the study).
        "quick": Profile(RoundPolicy(3, 5), DevloopParams()),
        "paper": Profile(RoundPolicy(10, 20), DevloopParams()),
    }
    Params = DevloopParams

    @contextmanager
    def session(
        self, env: Environment, ctx: RunContext, params: DevloopParams
    ) -> Iterator[RoundFn]:
        cpus = max(1, int(ctx.limits.cpus or os.cpu_count() or 1))
        corrupt = params.corrupt
        timeout = ctx.timeouts["tool"]
        with volume.volume(VOLUME_MIB * MIB) as vol:
            spec = ctx.spec(image=self.image, volume=vol.path, volume_size_mib=VOLUME_MIB,
                            log=ctx.log_path(env.name, self.name, "console.log"))
            with env.start(spec) as sb:

                def one(rnd: int) -> list[Measurement]:
                    work = f"{sb.data_dir.rstrip('/')}/devloop-r{rnd:03d}"
                    src = sb.helper("devloop")
                    lay = exec_quiet(sb, ["/bin/sh", "-c", LAYOUT, "sh", sb.data_dir, src,
                                          work, corrupt], timeout=timeout)
                    if lay.returncode != 0:
                        raise SandboxError(f"devloop layout exited {lay.returncode}: "
                                           f"{lay.stderr.strip()[-300:]}", evidence(sb, lay))
                    secs: dict[str, float] = {}
                    raws: dict[str, str] = {}
                    for phase in ("install", "build", "test"):
                        secs[phase], raws[phase] = timed(sb, ctx, env, rnd, phase,
                                                         phase_argv(phase, work, cpus), timeout)
                    extra = {"cpus": cpus, "lua": di.LUA_VERSION, "wheels": len(di.WHEELS),
                             "volume": {**vol.describe(), "kind": sb.volume_kind}}
                    out = [Measurement.time(f"devloop_{p}", s, "s", raw=raws[p], extra=extra)
                           for p, s in secs.items()]
                    out.append(Measurement.time("devloop_time", sum(secs.values()), "s",
                                                raw=raws["test"], extra=extra))
                    return out

                yield one


def timed(sb: Sandbox, ctx: RunContext, env: Environment, rnd: int, phase: str,
          argv: list[str], timeout: float) -> tuple[float, str]:
    t0 = time.perf_counter_ns()
    done = sb.exec(argv, timeout=timeout)
    secs = (time.perf_counter_ns() - t0) / 1e9
    raw = ctx.save_raw(env.name, "devloop", rnd, f"{phase}.txt",
                       done.stdout + ("\n" + done.stderr if done.stderr.strip() else ""))
    wrong = check(phase, done)
    if wrong:
        tail = (done.stderr or done.stdout).strip()[-400:]
        raise SandboxError(f"devloop {phase} {wrong}: {tail}", evidence(sb, done, phase=phase))
    return secs, raw

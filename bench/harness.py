"""Converged re-run benchmark: sparkprov against ansible-playbook and pyinfra on the same work.

Protocol: every tool converges each scenario once (unmeasured), then `--runs` measured re-runs, tools
interleaved run by run (the starting tool rotates) to spread machine noise. Each measured run must
change nothing, checked from the tool's own report. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import pstats
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from io import StringIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from bench.fleet import Inventories
    from tests.infra.fleet import Fleet

REPO = Path(__file__).resolve().parent.parent
BENCH_VENV = REPO / ".venv-bench"
TEST_VENV = REPO / ".venv-test"
COMMITTED_WORKLOADS = REPO / "bench" / "workloads"
PEER_PACKAGES = ("ansible-core", "pyinfra")
X10_SETS = 10
X10_PLAYBOOK = "converge_x10.yml"
X10_PYINFRA = "converge_x10_pyinfra.py"
COMMAND_TIMEOUT_S = 900
STARTUP_RUNS = 10
IMPORTTIME_RUNS = 5
PROFILE_TOP = 25
OWN_TOP = 15
IMPORTTIME_TOP = 15
REASON_CHARS = 240
LOCAL = "local"
LOCAL_X10 = "local 10x tasks"

# ---------------------------------------------------------------- model


@dataclass(frozen=True)
class Workload:
    """A playbook and its pyinfra twin, both inside the per-run copy of the workload directory."""

    playbook: Path
    pyinfra: Path


@dataclass(frozen=True)
class Target:
    """Where the tools run: localhost, or a fleet reached over SSH (inventories and env per tool)."""

    name: str
    hosts: int
    base: Path  # local target directory root: <base>/<tool>
    inventories: dict[str, Inventories] = field(default_factory=dict)  # by tool directory name
    env: dict[str, dict[str, str]] = field(default_factory=dict)  # extra environment, by tool directory

    @property
    def local(self) -> bool:
        return not self.inventories


@dataclass(frozen=True)
class Invocation:
    argv: list[str]
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    rc: int
    stdout: str
    stderr: str
    seconds: float


@dataclass
class Row:
    """Measurements of one tool in one scenario; `problem` ends its runs."""

    tool: str
    scenario: str
    peer: bool
    times: list[float] = field(default_factory=list)
    round_trips: list[int] = field(default_factory=list)
    problem: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None


# ---------------------------------------------------------------- tools


class Tool(ABC):
    """One command under test: how to invoke it, and how to tell from its output that nothing changed."""

    name: str
    peer = True  # compared with sparkprov apply in the ratio column

    def __init__(self, tool_dir: str) -> None:
        self.tool_dir = tool_dir  # its own target directory and SSH settings

    @abstractmethod
    def invocation(self, workload: Workload, target: Target) -> Invocation: ...

    @abstractmethod
    def unchanged(self, outcome: Outcome, target: Target) -> str | None:
        """None when the run succeeded and changed nothing, else what went wrong."""

    def round_trips(self, outcome: Outcome) -> list[int]:
        return []

    def base(self, target: Target) -> Path:
        return target.base / self.tool_dir


class Sparkprov(Tool):
    name = "sparkprov"
    peer = False

    def __init__(self, python: Path, command: str = "apply") -> None:
        super().__init__("sparkprov")
        self.python = python
        self.command = command
        if command != "apply":
            self.name = f"sparkprov {command}"

    def invocation(self, workload: Workload, target: Target) -> Invocation:
        argv = [str(self.python), "-m", "sparkprov", self.command, str(workload.playbook)]
        if target.local:
            argv += ["-e", f"anchors_base={self.base(target)}"]
        else:
            argv += ["-i", str(target.inventories[self.tool_dir].yaml), "-f", str(target.hosts)]
        env = {"PYTHONPATH": str(REPO), **target.env.get(self.tool_dir, {})}
        return Invocation([*argv, "--format", "json"], workload.playbook.parent, env)

    def unchanged(self, outcome: Outcome, target: Target) -> str | None:
        report = _json_document(outcome.stdout)
        if report is None:
            return failure_reason(outcome)
        if self.command == "validate":
            return None if report.get("valid") else failure_reason(outcome)
        stats: dict[str, dict[str, int]] = report.get("stats", {})
        if report.get("exit_code") != 0 or len(stats) != target.hosts:
            return failure_reason(outcome)
        changed = {host: s["changed"] for host, s in stats.items() if s.get("changed")}
        return f"changed on a converged run: {changed}" if changed else None

    def round_trips(self, outcome: Outcome) -> list[int]:
        report = _json_document(outcome.stdout) or {}
        return sorted(int(n) for n in report.get("round_trips", {}).values())


class Ansible(Tool):
    name = "ansible-playbook"
    _RECAP = re.compile(r"^(\S+)\s*:\s*ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)

    def __init__(self, venv: Path) -> None:
        super().__init__("ansible")
        self.venv = venv

    def invocation(self, workload: Workload, target: Target) -> Invocation:
        python = f"ansible_python_interpreter={self.venv / 'bin' / 'python'}"
        argv = [str(self.venv / "bin" / "ansible-playbook"), "-e", python]
        if target.local:
            argv += ["-i", "localhost,", "-c", "local", "-e", f"anchors_base={self.base(target)}"]
        else:
            argv += ["-i", str(target.inventories[self.tool_dir].yaml), "-f", str(target.hosts)]
        env = {"ANSIBLE_NOCOLOR": "1", **target.env.get(self.tool_dir, {})}
        return Invocation([*argv, str(workload.playbook)], workload.playbook.parent, env)

    def unchanged(self, outcome: Outcome, target: Target) -> str | None:
        recap = self._RECAP.findall(outcome.stdout)
        if outcome.rc != 0 or len(recap) != target.hosts:
            return failure_reason(outcome)
        bad = [line[0] for line in recap if any(int(n) for n in line[1:])]
        return f"changed/unreachable/failed on a converged run: {bad}" if bad else None


class Pyinfra(Tool):
    name = "pyinfra"
    _TOTAL = re.compile(r"Grand total\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)")

    def __init__(self, venv: Path) -> None:
        super().__init__("pyinfra")
        self.venv = venv

    def invocation(self, workload: Workload, target: Target) -> Invocation:
        argv = [str(self.venv / "bin" / "pyinfra"), "-y"]
        if target.local:
            argv += ["@local", str(workload.pyinfra), "--data", f"anchors_base={self.base(target)}"]
        else:
            inventory = target.inventories[self.tool_dir].pyinfra
            argv += ["--parallel", str(target.hosts), str(inventory), str(workload.pyinfra)]
        return Invocation(argv, workload.pyinfra.parent, target.env.get(self.tool_dir, {}))

    def unchanged(self, outcome: Outcome, target: Target) -> str | None:
        total = self._TOTAL.search(outcome.stderr + outcome.stdout)  # pyinfra logs to stderr
        if outcome.rc != 0 or total is None:
            return failure_reason(outcome)
        _, success, error, _ = total.groups()
        if {success, error} - {"-", "0"}:
            return f"changes or errors on a converged run (success={success}, error={error})"
        return None


def _json_document(text: str) -> dict[str, Any] | None:
    with contextlib.suppress(ValueError):
        document = json.loads(text)
        if isinstance(document, dict):
            return document
    return None


def failure_reason(outcome: Outcome) -> str:
    """Why a command failed, for the "unavailable (reason)" note: the failed hosts' messages from a JSON
    report (Ansible's json callback shape), else the last lines of its output."""
    report = _json_document(outcome.stdout) or {}
    found = _failed_messages(report) or [str(report.get("error") or "")]
    if not any(found):
        text = outcome.stderr + "\n" + outcome.stdout
        found = [line.strip() for line in text.splitlines() if line.strip()][-3:]
    return f"exit {outcome.rc}: {' | '.join(dict.fromkeys(found))}"[:REASON_CHARS]


def _failed_messages(report: dict[str, Any]) -> list[str]:
    """`host: msg` of every failed or unreachable task result, looking into loop items."""
    return [
        f"{host}: {_message(result)}"
        for play in report.get("plays", [])
        for task in play.get("tasks", [])
        for host, result in task.get("hosts", {}).items()
        if result.get("failed") or result.get("unreachable")
    ]


def _message(result: dict[str, Any]) -> str:
    items = [item for item in result.get("results", []) if item.get("failed")]
    return str((items[0] if items else result).get("msg", "failed"))


# ---------------------------------------------------------------- running


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def execute(invocation: Invocation) -> Outcome:
    env = {**os.environ, **invocation.env}
    started = time.perf_counter()
    done = subprocess.run(
        invocation.argv,
        cwd=invocation.cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    return Outcome(done.returncode, done.stdout, done.stderr, time.perf_counter() - started)


def converge(tool: Tool, workload: Workload, target: Target, row: Row, attempts: int = 2) -> None:
    """The unmeasured first run, tried twice (a failed first try is kept in `row.notes`); a tool that
    cannot converge is unavailable for the scenario."""
    for attempt in range(1, attempts + 1):
        outcome = execute(tool.invocation(workload, target))
        failed = outcome.rc != 0
        log(f"  {row.scenario}: converge {tool.name}: {outcome.seconds:.2f} s{' FAILED' if failed else ''}")
        if not failed:
            return
        reason = failure_reason(outcome)
        if attempt < attempts:
            row.notes.append(f"converge try {attempt} failed, retried: {reason}")
    row.problem = f"unavailable ({reason})"


def measure(tool: Tool, workload: Workload, target: Target, row: Row) -> None:
    outcome = execute(tool.invocation(workload, target))
    problem = tool.unchanged(outcome, target)
    if problem:
        row.problem = problem
        log(f"  {row.scenario}: {tool.name}: {problem}")
        return
    row.times.append(outcome.seconds)
    if not target.local:
        row.round_trips += tool.round_trips(outcome)
    log(f"  {row.scenario}: run {len(row.times)} {tool.name}: {outcome.seconds:.3f} s")


def bench_scenario(
    scenario: str, tools: Sequence[Tool], workload: Workload, target: Target, runs: int
) -> list[Row]:
    rows = [Row(tool.name, scenario, tool.peer) for tool in tools]
    pairs = list(zip(tools, rows))
    for tool, row in pairs:
        converge(tool, workload, target, row)
    for run in range(runs):
        shift = run % len(pairs)
        for tool, row in pairs[shift:] + pairs[:shift]:
            if row.problem is None:
                measure(tool, workload, target, row)
    return rows


# ---------------------------------------------------------------- start-up


@dataclass
class Startup:
    help_s: list[float]
    bare_python_s: list[float]
    import_ms: list[float]
    import_top: list[tuple[float, str]]

    @property
    def import_median_ms(self) -> float:
        return statistics.median(self.import_ms)


def time_startup(python: Path, runs: int = STARTUP_RUNS) -> Startup:
    env = {"PYTHONPATH": str(REPO)}
    help_argv = [str(python), "-m", "sparkprov", "--help"]
    bare_argv = [str(python), "-c", "pass"]
    help_s, bare_s = [], []
    execute(Invocation(help_argv, REPO, env))  # warms the bytecode cache
    for _ in range(runs):
        help_s.append(execute(Invocation(help_argv, REPO, env)).seconds)
        bare_s.append(execute(Invocation(bare_argv, REPO, env)).seconds)
    bare_modules = _importtime(str(python), "-c", "pass")
    samples = [_importtime(str(python), "-m", "sparkprov", "--help") for _ in range(IMPORTTIME_RUNS)]
    totals = [sum(us for name, us in s.items() if name not in bare_modules) / 1000 for s in samples]
    top = sorted(((us / 1000, name) for name, us in samples[-1].items()), reverse=True)
    return Startup(help_s, bare_s, totals, top[:IMPORTTIME_TOP])


def _importtime(python: str, *args: str) -> dict[str, int]:
    """Top-level imports of one start-up and their cumulative microseconds (`python -X importtime`)."""
    outcome = execute(Invocation([python, "-X", "importtime", *args], REPO, {"PYTHONPATH": str(REPO)}))
    modules: dict[str, int] = {}
    for line in outcome.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[1].strip().isdigit() and not parts[2].startswith("  "):
            modules[parts[2].strip()] = int(parts[1])
    return modules


# ---------------------------------------------------------------- profile


# Runs in sparkprov's interpreter instead of `python -m sparkprov`: one cProfile per thread (cProfile
# alone sees only the main thread, which just waits for the host workers), merged into argv[1].
_PROFILED_SPARKPROV = """
import cProfile, pstats, runpy, sys, threading
profiles = [cProfile.Profile()]
thread_run = threading.Thread.run
def run(self):
    profile = cProfile.Profile()
    profiles.append(profile)
    profile.runcall(thread_run, self)
threading.Thread.run = run
out, sys.argv = sys.argv[1], ["sparkprov", *sys.argv[2:]]
code = 0
try:
    profiles[0].runcall(runpy.run_module, "sparkprov", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
pstats.Stats(*profiles).dump_stats(out)
sys.exit(code)
"""


def profile_apply(tool: Sparkprov, workload: Workload, target: Target, work: Path) -> str:
    """sparkprov's converged apply under cProfile (all threads): top entries by cumulative and own time."""
    stats_file = work / "sparkprov.prof"
    invocation = tool.invocation(workload, target)
    python, _, _, *args = invocation.argv  # python -m sparkprov ARGS
    argv = [python, "-c", _PROFILED_SPARKPROV, str(stats_file), *args]
    outcome = execute(Invocation(argv, invocation.cwd, invocation.env))
    problem = tool.unchanged(outcome, target)
    if problem:
        return f"profile run failed: {problem}"
    views = (
        ("cumulative", PROFILE_TOP, None),
        ("cumulative", OWN_TOP, "sparkprov/"),
        ("tottime", OWN_TOP, None),
    )
    header = f"wall {outcome.seconds:.3f} s under cProfile (all threads merged; the main thread's wait for"
    header += " the host threads shows as lock acquire)"
    return "\n".join([header, *(_top(stats_file, *view) for view in views)])


def _top(stats_file: Path, key: str, count: int, only: str | None = None) -> str:
    """One pstats view; `only` keeps functions whose file path matches it (paths shown from the repo)."""
    text = StringIO()
    stats = pstats.Stats(str(stats_file), stream=text)
    if only is None:
        stats.strip_dirs()
    stats.sort_stats(key).print_stats(*([only] if only else []), count)
    body = text.getvalue()
    body = body[body.index("   ncalls") :].replace(f"{REPO}/", "").rstrip()
    return f"-- top {count} by {key}{f' in {only}' if only else ''} --\n{body}"


# ---------------------------------------------------------------- workloads


def workload_source() -> Path:
    """The shared reference workload: <repo>/../shared/bench, else $SPARKPROV_BENCH_DIR."""
    candidates = [REPO.parent / "shared" / "bench"]
    if os.environ.get("SPARKPROV_BENCH_DIR"):
        candidates.append(Path(os.environ["SPARKPROV_BENCH_DIR"]))
    for candidate in candidates:
        if (candidate / "converge.yml").is_file():
            return candidate
    raise SystemExit(f"no converge.yml in {' or '.join(map(str, candidates))} (set SPARKPROV_BENCH_DIR)")


def x10_playbook(source: Path) -> str:
    """converge.yml with its task list repeated 10 times, set NN writing under `{{ base_dir }}/sNN`:
    100 dirs, 100 templates, 50 copies, 10 guarded commands."""
    plays = yaml.safe_load(source.read_text())
    for play in plays:
        tasks = play["tasks"]
        play["tasks"] = [_task_in_set(task, n) for n in range(1, X10_SETS + 1) for task in tasks]
    header = (
        f"# Generated by `bench/run --write-workloads` from {source.name}: its tasks {X10_SETS} times,\n"
        "# set NN under {{ base_dir }}/sNN (100 dirs, 100 templates, 50 copies, 10 guarded commands).\n"
    )
    return header + yaml.dump(plays, Dumper=_BlockDumper, sort_keys=False, width=110)


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings as `|` blocks, so the generated playbook reads like converge.yml."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)


def _task_in_set(task: dict[str, Any], number: int) -> dict[str, Any]:
    moved: dict[str, Any] = _in_set(task, f"{{{{ base_dir }}}}/s{number:02d}")
    moved["name"] = f"{task.get('name', 'task')} s{number:02d}"
    return moved


def _in_set(value: Any, base: str) -> Any:
    """`value` with every `{{ base_dir }}` in its strings replaced by `base`."""
    if isinstance(value, str):
        return value.replace("{{ base_dir }}", base)
    if isinstance(value, list):
        return [_in_set(item, base) for item in value]
    if isinstance(value, dict):
        return {key: _in_set(item, base) for key, item in value.items()}
    return value


def prepare_workloads(work: Path) -> tuple[Workload, Workload]:
    """Copy the reference workload into `work`, add the generated 10x playbook and its pyinfra twin."""
    directory = work / "workload"
    source = workload_source()
    shutil.copytree(source, directory)
    (directory / X10_PLAYBOOK).write_text(x10_playbook(directory / "converge.yml"))
    shutil.copy(COMMITTED_WORKLOADS / X10_PYINFRA, directory / X10_PYINFRA)
    one = Workload(directory / "converge.yml", directory / "converge_pyinfra.py")
    ten = Workload(directory / X10_PLAYBOOK, directory / X10_PYINFRA)
    return one, ten


def write_committed_workloads() -> None:
    path = COMMITTED_WORKLOADS / X10_PLAYBOOK
    path.write_text(x10_playbook(workload_source() / "converge.yml"))
    print(f"wrote {path.relative_to(REPO)}")


# ---------------------------------------------------------------- environment


def sparkprov_python() -> Path:
    """The test venv's interpreter when there is one (it has sparkprov's dependencies), else ours."""
    candidate = TEST_VENV / "bin" / "python"
    return candidate if candidate.exists() else Path(sys.executable)


def ensure_peer_venv() -> Path:
    """`.venv-bench` with ansible-core and pyinfra from PyPI; reused when both are installed."""
    bin_dir = BENCH_VENV / "bin"
    if (bin_dir / "ansible-playbook").exists() and (bin_dir / "pyinfra").exists():
        return BENCH_VENV
    log(f"creating {BENCH_VENV} with {', '.join(PEER_PACKAGES)} ...")
    subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
    pip = [str(bin_dir / "python"), "-m", "pip", "install", "--quiet", *PEER_PACKAGES]
    subprocess.run(pip, check=True, timeout=COMMAND_TIMEOUT_S)
    return BENCH_VENV


def _output(argv: Sequence[str]) -> str:
    """A helper command's stdout, stripped; empty when it fails."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except OSError:
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def _proc_value(path: str, key: str) -> str:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    return ""


def _git_revision() -> str:
    commit = _output(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]) or "unknown commit"
    status = ["git", "--no-optional-locks", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"]
    dirty = _output(status)
    return f"{commit}, uncommitted changes" if dirty else commit


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine_info(python: Path, venv: Path, load_at_start: str) -> dict[str, str]:
    peers = "import importlib.metadata as m; print(m.version('ansible-core'), m.version('pyinfra'))"
    ansible_core, _, pyinfra = _output([str(venv / "bin" / "python"), "-c", peers]).partition(" ")
    ours = "import sparkprov, sys; print(sparkprov.__version__, sys.version.split()[0])"
    version, _, ours_python = _output([str(python), "-c", ours]).partition(" ")
    mem_kb = int((_proc_value("/proc/meminfo", "MemTotal") or "0").split()[0])
    cpu = _proc_value("/proc/cpuinfo", "model name") or platform.processor()
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "os": platform.platform(),
        "python": ours_python,
        "sparkprov": f"{version} ({_git_revision()})",
        "ansible-core": ansible_core,
        "pyinfra": pyinfra,
        "load average": f"{load_at_start} at start, {load_average()} at end (1, 5, 15 min)",
    }


# ---------------------------------------------------------------- report


def _seconds(value: float | None) -> str:
    return f"{value:.3f}" if value is not None else "-"


def _row_note(row: Row, rows: Sequence[Row]) -> tuple[str, str]:
    """The ratio column (peer/sparkprov in the same scenario) and the notes column of one row: round trips
    per host over SSH, the 10x-tasks/1x ratio, or why the row has no numbers."""
    if row.problem:
        return "-", row.problem
    notes = []
    if row.round_trips:
        notes.append(f"round trips/host {min(row.round_trips)}-{max(row.round_trips)}")
    if row.scenario == LOCAL_X10 and (x10 := _ratio(row.median, _median(rows, LOCAL, row.tool))):
        notes.append(f"10x tasks / 1x: {x10:.2f}")
    ratio = _ratio(row.median, _median(rows, row.scenario, "sparkprov")) if row.peer else None
    return (f"{ratio:.1f}x" if ratio else "-"), ", ".join(notes)


def render_table(rows: Sequence[Row]) -> str:
    header = ("tool", "scenario", "runs", "min s", "median s", "max s", "peer/sparkprov", "notes")
    lines: list[tuple[str, ...]] = [header]
    for row in rows:
        ratio, note = _row_note(row, rows)
        values = [min(row.times, default=None), row.median, max(row.times, default=None)]
        lines.append((row.tool, row.scenario, str(len(row.times)), *map(_seconds, values), ratio, note))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    cells = ("  ".join(cell.ljust(width) for cell, width in zip(line, widths)) for line in lines)
    return "\n".join(f"{text}  {line[-1]}".rstrip() for text, line in zip(cells, lines))


def render_startup(startup: Startup) -> str:
    help_ms = statistics.median(startup.help_s) * 1000
    bare_ms = statistics.median(startup.bare_python_s) * 1000
    return (
        f"start-up, median of {len(startup.help_s)}: `python -m sparkprov --help` {help_ms:.0f} ms wall, "
        f"bare `python -c pass` {bare_ms:.0f} ms, so sparkprov adds {help_ms - bare_ms:.0f} ms; "
        f"import time (-X importtime, modules a bare interpreter does not load) "
        f"{startup.import_median_ms:.0f} ms (median of {len(startup.import_ms)})"
    )


@dataclass(frozen=True)
class Goal:
    text: str
    value: float | None
    limit: float
    at_least: bool  # met when value >= limit, else when value < limit
    unit: str = "x"

    def render(self) -> str:
        if self.value is None:
            return f"  n/a   {self.text} (not measured)"
        met = self.value >= self.limit if self.at_least else self.value < self.limit
        return f"  {'MET ' if met else 'MISS'}  {self.text}: {self.value:.1f}{self.unit}"


def _median(rows: Sequence[Row], scenario: str, tool: str) -> float | None:
    return next((r.median for r in rows if r.scenario == scenario and r.tool == tool), None)


def _ratio(top: float | None, bottom: float | None) -> float | None:
    return top / bottom if top and bottom else None


def goals(rows: Sequence[Row], startup: Startup | None, ssh: str) -> list[Goal]:
    """The issue's targets, each as a ratio of medians from this run (or the import time)."""

    def versus(scenario: str, peer: str) -> float | None:
        return _ratio(_median(rows, scenario, peer), _median(rows, scenario, "sparkprov"))

    x10 = _ratio(_median(rows, LOCAL_X10, "sparkprov"), _median(rows, LOCAL, "sparkprov"))
    import_ms = startup.import_median_ms if startup else None
    return [
        Goal("local: ansible -c local / sparkprov >= 10x", versus(LOCAL, "ansible-playbook"), 10, True),
        Goal("local: pyinfra / sparkprov >= 2x", versus(LOCAL, "pyinfra"), 2, True),
        Goal("start-up: import time of sparkprov --help < 150 ms", import_ms, 150, False, " ms"),
        Goal(f"{ssh}: ansible (pipelining) / sparkprov >= 5x", versus(ssh, "ansible-playbook"), 5, True),
        Goal(f"{ssh}: pyinfra / sparkprov > 1x", versus(ssh, "pyinfra"), 1, True),
        Goal("sparkprov converged, 10x tasks / 1x < 2x", x10, 2, False),
    ]


# ---------------------------------------------------------------- main


@dataclass(frozen=True)
class Options:
    runs: int
    fleets: list[int]
    profile: bool
    x10_peers: bool
    json_file: Path | None
    keep: bool


def parse_args(argv: Sequence[str]) -> Options | None:
    """The options of a benchmark run; None after `--write-workloads`, which only writes files."""
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    add = parser.add_argument
    add("--runs", type=int, default=5, help="measured converged runs per tool (default 5)")
    add("--quick", action="store_true", help="2 runs, local only (smoke test)")
    add("--hosts", default="1,20", help="SSH fleet sizes, comma-separated (default 1,20)")
    add("--no-ssh", action="store_true", help="skip the SSH scenarios")
    add("--profile", action="store_true", help="cProfile a converged sparkprov apply; import times")
    add("--x10-peers", action="store_true", help="also time the peers on the 10x-tasks playbook")
    add("--json", type=Path, help="write the raw numbers to this file")
    add("--keep", action="store_true", help="keep the temporary work directory")
    add("--write-workloads", action="store_true", help=f"regenerate bench/workloads/{X10_PLAYBOOK}")
    args = parser.parse_args(argv)
    if args.write_workloads:
        write_committed_workloads()
        return None
    runs = 2 if args.quick else args.runs
    if runs < 1:
        parser.error("--runs must be at least 1")
    fleets = [] if args.quick or args.no_ssh else [int(n) for n in args.hosts.split(",") if n.strip()]
    return Options(runs, fleets, args.profile, args.x10_peers, args.json, args.keep)


@dataclass
class Bench:
    """One invocation: what runs, and what came out."""

    options: Options
    work: Path
    python: Path
    venv: Path
    one: Workload
    ten: Workload
    rows: list[Row] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)
    profile: str | None = None
    startup: Startup | None = None

    @property
    def apply(self) -> Sparkprov:
        return Sparkprov(self.python)

    def peers(self) -> list[Tool]:
        return [Ansible(self.venv), Pyinfra(self.venv)]

    def run_local(self) -> None:
        target = Target(LOCAL, 1, self.work / "targets" / "local")
        extra = [Sparkprov(self.python, "plan"), Sparkprov(self.python, "validate")]
        self.scenario(LOCAL, [self.apply, *self.peers(), *extra], self.one, target)
        x10_tools = [self.apply, *(self.peers() if self.options.x10_peers else [])]
        self.scenario(LOCAL_X10, x10_tools, self.ten, target)
        if self.options.profile:
            self.profile = profile_apply(self.apply, self.one, target, self.work)

    def run_fleets(self) -> None:
        if not self.options.fleets:
            return
        try:
            from bench import fleet as ssh
        except ImportError as exc:
            self.unavailable.append(f"ssh scenarios: unavailable (cannot load tests/infra: {exc})")
            return
        try:
            with ssh.fleet_network() as network:
                for count in self.options.fleets:
                    with ssh.running_fleet(network, count) as fleet:
                        target = ssh_target(fleet, self.work)
                        self.scenario(target.name, [self.apply, *self.peers()], self.one, target)
        except (ssh.FleetUnavailable, RuntimeError, OSError) as exc:  # incl. a fleet that fails to start
            self.unavailable.append(f"ssh scenarios: unavailable ({str(exc)[:REASON_CHARS]})")

    def scenario(self, name: str, tools: Sequence[Tool], workload: Workload, target: Target) -> None:
        log(f"{name}: {len(tools)} tool(s), {target.hosts} host(s), {self.options.runs} measured run(s)")
        rows = bench_scenario(name, tools, workload, target, self.options.runs)
        self.rows += rows
        self.unavailable += [
            f"{r.tool}, {name}: {note}" for r in rows for note in [*r.notes, r.problem] if note
        ]


def new_bench(options: Options, work: Path) -> Bench:
    one, ten = prepare_workloads(work)
    return Bench(options, work, sparkprov_python(), ensure_peer_venv(), one, ten)


def ssh_name(count: int) -> str:
    return f"ssh {count} host{'s' if count != 1 else ''}"


def ssh_target(fleet: Fleet, work: Path) -> Target:
    """The fleet as each tool sees it: own inventory and target directories, own SSH settings."""
    from bench import fleet as ssh

    name = ssh_name(len(fleet.hosts))
    directory = work / name.replace(" ", "-")
    inventories = {
        tool: ssh.write_inventories(fleet, directory / tool, directory / "targets" / tool)
        for tool in ("sparkprov", "ansible", "pyinfra")
    }
    env = {
        "sparkprov": ssh.sparkprov_ssh_env(fleet),
        "ansible": ssh.ansible_ssh_env(fleet, directory / "ansible-cp"),
    }
    return Target(name, len(fleet.hosts), directory / "targets", inventories, env)


def report(bench: Bench, info: dict[str, str]) -> str:
    parts = ["", *(f"{key:>13}: {value}" for key, value in info.items()), "", render_table(bench.rows)]
    if bench.startup:
        parts += ["", render_startup(bench.startup)]
    ssh = ssh_name(max(bench.options.fleets)) if bench.options.fleets else "ssh"
    parts += ["", "targets (ratios of medians from this run):"]
    parts += [goal.render() for goal in goals(bench.rows, bench.startup, ssh)]
    if bench.unavailable:
        parts += ["", "unavailable, failed or retried:", *(f"  {line}" for line in bench.unavailable)]
    if bench.profile:
        parts += ["", "profile: converged `sparkprov apply` (local) under cProfile:"]
        parts += [bench.profile]
    if bench.profile and bench.startup:
        parts += ["", "import time of `sparkprov --help`, top-level imports (cumulative ms):"]
        parts += [f"  {ms:8.1f}  {name}" for ms, name in bench.startup.import_top]
    return "\n".join(parts)


def write_json(path: Path, bench: Bench, info: dict[str, str]) -> None:
    document = {
        "machine": info,
        "runs": bench.options.runs,
        "rows": [asdict(row) | {"median": row.median} for row in bench.rows],
        "startup": asdict(bench.startup) if bench.startup else None,
        "unavailable": bench.unavailable,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


@contextlib.contextmanager
def workspace(keep: bool) -> Iterator[Path]:
    work = Path(tempfile.mkdtemp(prefix="sparkprov-bench-"))
    try:
        yield work
    finally:
        if keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def interrupt_on_signals() -> None:
    """SIGTERM and SIGHUP raise KeyboardInterrupt, so every `finally` (fleet teardown) runs."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)


def cache_bytecode(work: Path) -> None:
    """Let every tool keep its compiled bytecode (in `work`, not in the repo), as an installed package
    does: under PYTHONDONTWRITEBYTECODE a checkout would recompile all of sparkprov on every start."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(work / "pycache")


def run_bench(options: Options) -> int:
    """0 when every measured run was converged; 1 when a tool changed something or failed mid-way."""
    with workspace(options.keep) as work:
        cache_bytecode(work)
        load_at_start = load_average()
        bench = new_bench(options, work)
        bench.startup = time_startup(bench.python)
        bench.run_local()
        bench.run_fleets()
        info = machine_info(bench.python, bench.venv, load_at_start)
        print(report(bench, info))
        if options.json_file:
            write_json(options.json_file, bench, info)
    failed = [r for r in bench.rows if r.problem and not r.problem.startswith("unavailable")]
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(sys.argv[1:] if argv is None else argv)
    if options is None:
        return 0
    interrupt_on_signals()
    try:
        return run_bench(options)
    except KeyboardInterrupt:
        log("interrupted; what the benchmark started has been torn down")
        return 130


if __name__ == "__main__":
    sys.exit(main())

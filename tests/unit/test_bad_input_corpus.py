"""The bad-input corpus (tests/data/bad_input/cases.yml): broken playbooks, inventories, templates and
vars files, each run through the real CLI and through `load_inputs`. Every case must give exit code 4
and a message naming the file and line, take under a second, and touch no host (DESIGN.md, "Exit
codes"). Huge files and alias bombs are generated at test time instead of being committed."""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from sparkprov.errors import InputError, Problem
from sparkprov.executor.prepare import load_inputs
from sparkprov.playbook.yamlsrc import MAX_EXPANDED_NODES, MAX_FILE_BYTES

CORPUS = Path(__file__).resolve().parents[1] / "data" / "bad_input"
REPO = CORPUS.parents[2]
GOOD_PLAYBOOK = "playbook/good.yml"  # valid; its first task touches MARKER
MARKER = "playbook/touched"
COMMANDS = ("validate", "plan", "apply")

LOADER_LIMIT_S = 1.0  # in-process: the CPU time load_inputs may take to give up
CPU_LIMIT_S = 1.0  # the CLI process's own CPU time (user + system)
WALL_LIMIT_S = 1.5  # the CLI's wall time, interpreter start-up included, on a machine with CPUs to spare
DEADLINE_FACTOR = 2  # a run that used twice its CPU limit is stopped: a slow case costs little

# ---------------------------------------------------------------- generated inputs

HUGE_BYTES = MAX_FILE_BYTES * 3 // 4  # under the size limit, so the parser has to reject it
NESTING = 300  # deeper than Python's recursion limit allows PyYAML and Jinja to follow
BIG_INT_DIGITS = 5000  # more than Python's int <-> str conversion limit (4300)


def _good(root: Path) -> str:
    return (root / GOOD_PLAYBOOK).read_text(encoding="utf-8")


def _bomb(indent: str) -> str:
    """A 'billion laughs' mapping: 9 levels of 10 aliases each, 10**9 strings once expanded."""
    lines = [f'{indent}lol0: &lol0 "lol"']
    lines += [f"{indent}lol{i}: &lol{i} [{', '.join([f'*lol{i - 1}'] * 10)}]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


def _over_size_limit(root: Path) -> str:
    text = _good(root)
    comment = "#" * 99 + "\n"
    return text + comment * ((MAX_FILE_BYTES - len(text)) // len(comment) + 1)


def _huge_syntax_error(root: Path) -> str:
    task = "    - name: one of many\n      debug: {msg: hello}\n"
    return _good(root) + task * (HUGE_BYTES // len(task)) + "    - name: last\n\t  debug: {msg: hi}\n"


def _large_alias_free_list(root: Path) -> str:
    items = ", ".join(["1"] * (MAX_EXPANDED_NODES + 1))
    return _good(root) + "    - name: last\n      fiel: {path: /x}\n" + f"  vars:\n    ports: [{items}]\n"


# Generator name (cases.yml `generate`) -> the text of the case's `file`, given the case's root.
GENERATORS: dict[str, Callable[[Path], str]] = {
    "over_size_limit": _over_size_limit,
    "huge_syntax_error": _huge_syntax_error,
    "large_alias_free_list": _large_alias_free_list,
    "alias_bomb_play_vars": lambda root: _good(root) + "  vars:\n" + _bomb("    "),
    "alias_bomb_mapping": lambda root: _bomb(""),
    "alias_bomb_inventory": lambda root: (
        "all:\n  vars:\n" + _bomb("    ") + "  hosts:\n    localhost: {ansible_connection: local}\n"
    ),
    "deep_nesting": lambda root: _good(root) + "  vars:\n    deep: " + "[" * NESTING + "]" * NESTING + "\n",
    "huge_integer": lambda root: (
        _good(root)
        + "    - name: retry\n      debug: {msg: hi}\n      retries: "
        + "9" * BIG_INT_DIGITS
        + "\n"
    ),
    "huge_integer_expression": lambda root: (
        _good(root) + '    - name: big\n      debug: {msg: "{{ ' + "9" * BIG_INT_DIGITS + ' }}"}\n'
    ),
    "deep_expression": lambda root: (
        _good(root)
        + '    - name: nested\n      debug: {msg: "{{ '
        + "(" * NESTING
        + "1"
        + ")" * NESTING
        + ' }}"}\n'
    ),
}

# ---------------------------------------------------------------- the manifest


@dataclass(frozen=True)
class Case:
    """One entry of cases.yml (see the comment at its top)."""

    id: str
    playbook: str
    inventory: str | None
    extra: tuple[str, ...]
    command: str
    generate: str | None
    file: str
    line: int | str | None
    message: tuple[str, ...]
    xfail: str | None

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> Case:
        unknown = set(entry) - set(cls.__dataclass_fields__)
        assert not unknown, f"case {entry.get('id')}: unknown keys {sorted(unknown)}"
        playbook = entry.get("playbook", GOOD_PLAYBOOK)
        case = cls(
            id=entry["id"],
            playbook=playbook,
            inventory=entry.get("inventory"),
            extra=tuple(os.fsdecode(value) for value in entry.get("extra", ())),  # bytes: as argv has them
            command=entry.get("command", "apply"),
            generate=entry.get("generate"),
            file=entry.get("file", playbook),
            line=entry["line"],
            message=tuple(entry["message"]),
            xfail=entry.get("xfail"),
        )
        assert case.command in COMMANDS, case
        assert case.generate is None or case.generate in GENERATORS, case
        assert isinstance(case.line, int) or case.line in (None, "last"), case
        return case

    def argv(self) -> list[str]:
        argv = [self.command, self.playbook]
        if self.inventory:
            argv += ["-i", self.inventory]
        for value in self.extra:
            argv += ["-e", value]
        return argv

    def expected_line(self, root: Path) -> int | None:
        if self.line == "last":
            return (root / self.file).read_text(encoding="utf-8").count("\n")
        assert not isinstance(self.line, str)
        return self.line


def _cases() -> list[Any]:
    entries = yaml.safe_load((CORPUS / "cases.yml").read_text(encoding="utf-8"))
    cases = [Case.from_entry(entry) for entry in entries]
    ids = [case.id for case in cases]
    assert len(ids) == len(set(ids)), "duplicate case ids in cases.yml"
    return [
        pytest.param(
            case,
            id=case.id,
            marks=[pytest.mark.xfail(reason=f"engine bug: {case.xfail}", strict=True)] if case.xfail else [],
        )
        for case in cases
    ]


CASES = _cases()

# ---------------------------------------------------------------- running a case


@dataclass(frozen=True)
class Workspace:
    """A private copy of the corpus (the CLI's cwd) with the case's generated file, and a HOME."""

    root: Path
    home: Path

    def snapshot(self) -> dict[str, tuple[int, int]]:
        """(size, mtime) of every path under the copy and HOME: any write shows up."""
        return {
            str(path): (path.lstat().st_size, path.lstat().st_mtime_ns)
            for base in (self.root, self.home)
            for path in [base, *base.rglob("*")]
        }


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    root, home = tmp_path / "work", tmp_path / "home"
    shutil.copytree(CORPUS, root)
    home.mkdir()
    return Workspace(root, home)


def _prepare(case: Case, workspace: Workspace) -> None:
    if case.generate:
        (workspace.root / case.file).write_text(GENERATORS[case.generate](workspace.root), encoding="utf-8")


@dataclass(frozen=True)
class CliRun:
    rc: int
    stdout: str
    stderr: str
    wall_s: float
    cpu_s: float


def _wall_limit() -> float:
    """WALL_LIMIT_S, stretched by the load when other work oversubscribes the CPUs: with 10 runnable
    processes per CPU, a run waits for its turn about 10 times as long. The CPU limit never stretches."""
    return WALL_LIMIT_S * max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))


def _limit_cpu() -> None:
    """In the child: SIGXCPU kills it once it has used its CPU budget (a runaway case costs little)."""
    budget = int(CPU_LIMIT_S * DEADLINE_FACTOR)
    resource.setrlimit(resource.RLIMIT_CPU, (budget, budget + 1))


def _run_cli(workspace: Workspace, argv: list[str]) -> CliRun:
    """`python -m sparkprov ARGV` in the workspace, timed: wall clock and the child's own CPU time."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "SPARKPROV_"))}  # state: HOME
    env.update(HOME=str(workspace.home), NO_COLOR="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "sparkprov", *argv],
        cwd=workspace.root,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        preexec_fn=_limit_cpu,
        timeout=60,
        check=False,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode == -signal.SIGXCPU:
        pytest.fail(f"sparkprov {' '.join(argv)} killed after {cpu:.1f} s of CPU (limit {CPU_LIMIT_S} s)")
    return CliRun(proc.returncode, proc.stdout, proc.stderr, wall, cpu)


class DeadlineExceeded(Exception):
    pass


@contextmanager
def _cpu_deadline(seconds: float) -> Iterator[None]:
    """Interrupt the block (with DeadlineExceeded) once it has used `seconds` of CPU time."""

    def expire(signum: int, frame: object) -> None:
        raise DeadlineExceeded(f"still running after {seconds} s of CPU time")

    previous = signal.signal(signal.SIGPROF, expire)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


def _names_place(problem: Problem, case: Case, line: int | None) -> bool:
    return problem.place.file == case.file and (line is None or problem.place.line == line)


@pytest.mark.parametrize("case", CASES)
def test_cli_exits_4_naming_the_place_and_touches_nothing(case: Case, workspace: Workspace) -> None:
    _prepare(case, workspace)
    line = case.expected_line(workspace.root)
    before = workspace.snapshot()

    run = _run_cli(workspace, case.argv())

    report = f"{' '.join(case.argv())} -> exit {run.rc}\n{run.stderr[-3000:]}"
    assert run.rc == 4, report
    assert run.stderr.startswith("error: invalid input"), report
    assert "Nothing was run on any host." in run.stderr, report
    assert run.stdout == "", report
    where = rf":{line}(?::\d+)?" if line is not None else r"(?::\d+){0,2}"
    assert re.search(rf"(?m)^  {re.escape(case.file)}{where}: ", run.stderr), (
        f"no '{case.file}:{line}'\n{report}"
    )
    for fragment in case.message:
        assert fragment in run.stderr, f"{fragment!r} missing\n{report}"
    assert not (workspace.root / MARKER).exists(), "a task ran"
    assert workspace.snapshot() == before, "the run wrote files"
    assert run.cpu_s < CPU_LIMIT_S, f"took {run.cpu_s:.2f} s of CPU"
    limit = _wall_limit()
    assert run.wall_s < limit, (
        f"took {run.wall_s:.2f} s (limit {limit:.1f} s at load {os.getloadavg()[0]:.1f})"
    )


@pytest.mark.parametrize("case", CASES)
def test_load_inputs_raises_input_error_within_a_second(
    case: Case, workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    _prepare(case, workspace)
    line = case.expected_line(workspace.root)
    monkeypatch.chdir(workspace.root)  # paths as the CLI gets them, -e @file included
    monkeypatch.setenv("HOME", str(workspace.home))
    inventory = Path(case.inventory) if case.inventory else None

    started = time.process_time()  # CPU time: other work on the machine does not count
    with _cpu_deadline(LOADER_LIMIT_S * DEADLINE_FACTOR), pytest.raises(InputError) as info:
        load_inputs(Path(case.playbook), inventory, case.extra, None)
    took = time.process_time() - started

    found = info.value.problems
    assert found and all(isinstance(p, Problem) for p in found)
    assert any(_names_place(p, case, line) and all(f in str(p) for f in case.message) for p in found), (
        "\n".join(map(str, found))
    )
    assert took < LOADER_LIMIT_S, f"took {took:.2f} s of CPU time"

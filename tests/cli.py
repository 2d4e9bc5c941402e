"""Run the sparkprov CLI (or any other command) as a subprocess in tests, and read what it did.

Tests go through the real command line, as a user would: exit codes, the one JSON document of
`--format json` on stdout, progress and logs on stderr. `sparkprov()` runs it and returns a `CliRun`.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest
import yaml

from sparkprov.errors import InputError, Problem
from sparkprov.executor.prepare import Prepared, load_inputs
from sparkprov.secrets import is_secret_name

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_DATA = REPO_ROOT / "tests" / "data"
MODULE_PLAYBOOKS = TEST_DATA / "modules"  # where run_playbook() finds a playbook given by name

# Exit codes of DESIGN.md.
EXIT_OK, EXIT_FAILED, EXIT_PENDING, EXIT_INPUT = 0, 1, 2, 4

# A PATH for child processes that does not depend on the caller's (pyenv shims, venvs...).
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# The host a play runs on without an inventory (the implicit localhost, local connection).
LOCALHOST = "localhost"

# (task name, loop item label or None): one thing an apply changed or a plan reported pending.
ChangeKey = tuple[str, str | None]

_SHOWN_CHARS = 4000  # of each output stream, in assertion messages


# ---------------------------------------------------------------- a finished run


@dataclass(frozen=True, repr=False)
class CliRun:
    """A finished command: its argv, exit code and output. `doc` is stdout read as the JSON document
    of `--format json`; the other readers work on it. str() and repr() show the command, its exit
    code and the tail of each stream (pytest cuts `assert ..., run` to 240 characters unless -vv;
    `explain(run)` is not cut)."""

    argv: tuple[str, ...]
    rc: int
    stdout: str
    stderr: str

    @classmethod
    def of(cls, process: subprocess.CompletedProcess[str]) -> CliRun:
        """The run of a process started some other way (Popen, a terminal)."""
        args = process.args if isinstance(process.args, list | tuple) else [process.args]
        return cls(tuple(map(str, args)), process.returncode, process.stdout or "", process.stderr or "")

    def __str__(self) -> str:
        return (
            f"$ {shlex.join(self.argv)}\n[exit {self.rc}]\n"
            f"--- stdout ---\n{_tail(self.stdout)}\n--- stderr ---\n{_tail(self.stderr)}"
        )

    __repr__ = __str__

    @cached_property
    def doc(self) -> dict[str, Any]:
        """stdout as the one JSON object `--format json` prints (fails the test otherwise)."""
        try:
            value = json.loads(self.stdout)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"stdout is not one JSON document ({exc}):\n{self}") from None
        assert isinstance(value, dict), f"the JSON document is not an object:\n{self}"
        return value

    def results(self, host: str = LOCALHOST) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """(task header, host result) of every task and handler that reported for `host`, in order."""
        for play in self.doc["plays"]:
            for task in play["tasks"]:
                if host in task["hosts"]:
                    yield task["task"], task["hosts"][host]

    def result(self, name: str, host: str = LOCALHOST, *, handler: bool | None = None) -> dict[str, Any]:
        """The host result of the only task (or handler) called `name`."""
        found = [
            res
            for task, res in self.results(host)
            if task["name"] == name and (handler is None or task["handler"] is handler)
        ]
        assert len(found) == 1, f"expected one result of {name!r} on {host}, found {len(found)}:\n{self}"
        return found[0]

    def ran(self, host: str = LOCALHOST) -> list[str]:
        """Names of the tasks that reported a result for `host` (skipped ones included)."""
        return [task["name"] for task, _ in self.results(host)]

    def executed(self, host: str = LOCALHOST) -> list[str]:
        """Names of the tasks that ran for `host` and were not skipped."""
        return [task["name"] for task, res in self.results(host) if not res.get("skipped")]

    def stats(self, host: str = LOCALHOST) -> dict[str, int]:
        """The recap counters of `host` (ok, changed, failures, skipped, unreachable, ignored)."""
        stats = self.doc.get("stats", {})
        assert host in stats, f"no stats for {host}:\n{self}"
        return dict(stats[host])

    def changed_tasks(self, host: str = LOCALHOST) -> set[str]:
        return {task["name"] for task, res in self.results(host) if res["changed"]}

    def changed(self, host: str = LOCALHOST) -> set[ChangeKey]:
        """What an apply changed: (task, None) per changed task, (task, label) per changed loop item."""
        found: set[ChangeKey] = set()
        for task, res in self.results(host):
            items = res.get("results")
            if isinstance(items, list) and all("_ansible_item_label" in item for item in items):
                found.update((task["name"], item["_ansible_item_label"]) for item in items if item["changed"])
            elif res["changed"]:
                found.add((task["name"], None))
        return found

    def pending(self, host: str = LOCALHOST) -> set[ChangeKey]:
        """What a plan reported pending for `host`, from its `plan` list, keyed like `changed()`."""
        return {(entry["task"], entry["item"]) for entry in self.doc["plan"] if entry["host"] == host}


def _tail(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else f"[...]{text[-_SHOWN_CHARS:]}"


# ---------------------------------------------------------------- running


def cli_env(
    extra: Mapping[str, str] | None = None, *, home: Path | None = None, hide_secrets: bool = False
) -> dict[str, str]:
    """This process's environment with the repository first on PYTHONPATH and no colours; HOME=`home`
    when given; with `hide_secrets`, without variables whose names look secret (output would show
    their values masked); then `extra`."""
    env = {k: v for k, v in os.environ.items() if not (hide_secrets and is_secret_name(k))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["NO_COLOR"] = "1"
    env.pop("FORCE_COLOR", None)
    if home is not None:
        env["HOME"] = str(home)
    env.update(extra or {})
    return env


def run_command(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
) -> CliRun:
    """Run a command with captured text output and no stdin; never raises on a non-zero exit.
    `env` is the whole environment (default: this process's)."""
    args = tuple(map(str, argv))
    proc = subprocess.run(
        args,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return CliRun(args, proc.returncode, proc.stdout, proc.stderr)


def sparkprov(
    *args: str | os.PathLike[str],
    home: Path | None = None,
    env: Mapping[str, str] | None = None,
    extra_env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
    python: Sequence[str] = (sys.executable,),
) -> CliRun:
    """`python -m sparkprov ARGS`; never raises on a non-zero exit.

    The environment is `env` as given, else `cli_env(extra_env, home=home, hide_secrets=True)`. `home`
    is created and is the working directory unless `cwd` says otherwise. `python` is the interpreter's
    argv; it may start with a wrapper such as `runuser -u USER --`.
    """
    assert env is None or extra_env is None, "env is the whole environment: pass env or extra_env"
    if home is not None:
        home.mkdir(parents=True, exist_ok=True)
    if env is None:
        env = cli_env(extra_env, home=home, hide_secrets=True)
    return run_command([*python, "-m", "sparkprov", *args], env=env, cwd=cwd or home, timeout=timeout)


def run_playbook(
    command: str,
    playbook: str | Path,
    base: Path,
    extra: dict[str, Any] | None = None,
    *,
    cwd: Path | None = None,
    expect_rc: int | None = None,
    inventory: Path | None = None,
) -> CliRun:
    """`sparkprov COMMAND PLAYBOOK -e '{"base": BASE, **EXTRA}' --format json [-i INVENTORY]` in `cwd`
    (default: `base`). A playbook given by name is one of tests/data/modules. Extra variables travel
    as one JSON mapping, which keeps any value intact. The JSON document's exit code must be the
    process's (and `expect_rc`, when given). Without an inventory the play runs on the implicit
    localhost."""
    path = MODULE_PLAYBOOKS / playbook  # an absolute `playbook` stays as it is
    variables = json.dumps({"base": str(base), **(extra or {})})
    options = ("-i", str(inventory)) if inventory else ()
    run = sparkprov(command, path, "-e", variables, "--format", "json", *options, cwd=cwd or base)
    assert run.doc["exit_code"] == run.rc, str(run)
    if expect_rc is not None:
        assert run.rc == expect_rc, str(run)
    return run


def apply_twice(
    playbook: str | Path,
    base: Path,
    extra: dict[str, Any] | None = None,
    *,
    cwd: Path | None = None,
    inventory: Path | None = None,
) -> CliRun:
    """Apply (must succeed), then apply again and require that nothing changed; the first run."""
    first = run_playbook("apply", playbook, base, extra, cwd=cwd, expect_rc=0, inventory=inventory)
    second = run_playbook("apply", playbook, base, extra, cwd=cwd, expect_rc=0, inventory=inventory)
    assert second.stats()["changed"] == 0, f"second apply changed {sorted(second.changed(), key=str)}"
    return first


# ---------------------------------------------------------------- checks that take any finished process

Finished = CliRun | subprocess.CompletedProcess[str]


def _as_run(result: Finished) -> CliRun:
    return result if isinstance(result, CliRun) else CliRun.of(result)


def explain(result: Finished) -> str:
    """The command and the tail of its output, for assertion messages."""
    return str(_as_run(result))


def assert_exit(result: Finished, expected: int) -> None:
    run = _as_run(result)
    assert run.rc == expected, f"expected exit {expected}:\n{run}"


def assert_converged(result: Finished, host: str = LOCALHOST) -> None:
    """A `--format json` apply that succeeded and changed nothing."""
    run = _as_run(result)
    assert_exit(run, EXIT_OK)
    stats = run.stats(host)
    assert (stats["changed"], stats["failures"], stats["unreachable"]) == (0, 0, 0), (
        f"a second apply must change nothing: {stats}\n{run}"
    )


def json_report(result: Finished) -> dict[str, Any]:
    """`CliRun.doc` of any finished process."""
    return _as_run(result).doc


def host_stats(result: Finished, host: str = LOCALHOST) -> dict[str, int]:
    """`CliRun.stats` of any finished process."""
    return _as_run(result).stats(host)


# ---------------------------------------------------------------- files and trees


def write_text(path: Path, text: str) -> Path:
    """Write `text`, dedented and without its leading newline, making parent directories."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def local_inventory(
    path: Path, hosts: dict[str, dict[str, Any]], group_vars: dict[str, Any] | None = None
) -> Path:
    """A YAML inventory whose hosts all use the local connection."""
    body: dict[str, Any] = {
        "hosts": {name: {"ansible_connection": "local", **values} for name, values in hosts.items()}
    }
    if group_vars:
        body["vars"] = group_vars
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"all": body}, sort_keys=False), encoding="utf-8")
    return path


def lines(path: Path) -> list[str]:
    """The lines of a text file; none when it does not exist."""
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def mode_of(path: Path) -> int:
    """Permission bits, of a link itself rather than its target."""
    return stat.S_IMODE(path.lstat().st_mode)


def current_umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


@dataclass(frozen=True)
class Entry:
    """What a tree comparison looks at for one path: type, permissions, owner, content or link target,
    and the modification time when the snapshot was taken `with_times`."""

    type: str
    mode: str
    uid: int
    gid: int
    content: bytes | None = None
    link: str | None = None
    mtime_ns: int | None = None


def snapshot(root: Path, *, with_times: bool = False) -> dict[str, Entry]:
    """Every path below `root` (relative, root itself as "."), without following links.

    Link targets inside `root` are written relative to a `<root>` placeholder, so that two trees built
    under different directories compare equal. `with_times` adds modification times, to prove that
    nothing was touched.
    """
    entries: dict[str, Entry] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames] if Path(dirpath) == root else [*dirnames, *filenames]:
            path = Path(dirpath, name) if name != "." else root
            entries[str(path.relative_to(root))] = _entry(path, root, with_times)
    return entries


def _entry(path: Path, root: Path, with_times: bool) -> Entry:
    info = path.lstat()
    kind, content, link = "other", None, None
    if stat.S_ISLNK(info.st_mode):
        kind, link = "link", os.readlink(path).replace(str(root), "<root>")
    elif stat.S_ISDIR(info.st_mode):
        kind = "directory"
    elif stat.S_ISREG(info.st_mode):
        kind, content = "file", path.read_bytes()
    mtime_ns = info.st_mtime_ns if with_times else None
    return Entry(kind, oct(stat.S_IMODE(info.st_mode)), info.st_uid, info.st_gid, content, link, mtime_ns)


def tree_differences(expected: dict[str, Entry], actual: dict[str, Entry]) -> list[str]:
    """Human-readable differences between two snapshots; empty when they are the same."""
    problems = [f"only in the expected tree: {p}" for p in sorted(expected.keys() - actual.keys())]
    problems += [f"only in the actual tree: {p}" for p in sorted(actual.keys() - expected.keys())]
    for path in sorted(expected.keys() & actual.keys()):
        want, got = expected[path], actual[path]
        for field in ("type", "mode", "uid", "gid", "link", "content", "mtime_ns"):
            if getattr(want, field) != getattr(got, field):
                problems.append(f"{path}: {field} {getattr(want, field)!r} != {getattr(got, field)!r}")
    return problems


# ---------------------------------------------------------------- input checks without a subprocess

PLAYBOOK = "site.yml"  # the name prepare() gives the playbook


def prepare(
    root: Path,
    playbook: str | bytes,
    *,
    files: Mapping[str, str | bytes] | None = None,
    inventory: str | None = None,
    extra: tuple[str, ...] = (),
    limit: str | None = None,
) -> Prepared:
    """Write `playbook` as root/site.yml (plus `files`, relative name -> text or bytes) and run, in
    this process, everything the CLI does before hosts are touched."""
    for name, content in {PLAYBOOK: playbook, **(files or {})}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return load_inputs(root / PLAYBOOK, root / inventory if inventory else None, extra, limit)


def problems(root: Path, playbook: str | bytes, **kwargs: Any) -> list[Problem]:
    """The problems `prepare` reports; fails the test when the input is accepted."""
    with pytest.raises(InputError) as info:
        prepare(root, playbook, **kwargs)
    return info.value.problems

"""Running the sparkprov CLI (and its peer, ansible-playbook) as subprocesses, and reading what they did.

Integration tests go through the real command line, as a user would: exit codes, `--format json` on
stdout, progress on stderr. Everything here is plain functions and small dataclasses.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]

# Exit codes of DESIGN.md.
EXIT_OK, EXIT_FAILED, EXIT_PENDING, EXIT_INPUT = 0, 1, 2, 4

# A PATH for child processes that does not depend on the caller's (pyenv shims, venvs...).
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def run_cli(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run a command with captured text output and no stdin; never raises on a non-zero exit."""
    return subprocess.run(
        list(argv),
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def sparkprov(
    *args: str | os.PathLike[str],
    python: Sequence[str] = (sys.executable,),
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """`python -m sparkprov ARGS`; `python` is the interpreter argv (it may start with `runuser ...`)."""
    return run_cli([*python, "-m", "sparkprov", *map(str, args)], env=env, cwd=cwd, timeout=timeout)


def explain(result: subprocess.CompletedProcess[str], limit: int = 4000) -> str:
    """The command and the tail of its output, for assertion messages."""
    output = f"--- stdout ---\n{result.stdout[-limit:]}\n--- stderr ---\n{result.stderr[-limit:]}"
    return f"{' '.join(map(str, result.args))} exited with {result.returncode}\n{output}"


def assert_exit(result: subprocess.CompletedProcess[str], expected: int) -> None:
    assert result.returncode == expected, f"expected exit {expected}: {explain(result)}"


def json_report(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The one JSON document that `--format json` prints on stdout."""
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"stdout is not one JSON document ({exc}): {explain(result)}") from None
    assert isinstance(report, dict), f"the JSON report is not an object: {explain(result)}"
    return report


def host_stats(result: subprocess.CompletedProcess[str], host: str = "localhost") -> dict[str, int]:
    """`stats.HOST` of a `--format json` run (ok, changed, failures, skipped, unreachable)."""
    stats = json_report(result).get("stats", {})
    assert host in stats, f"no stats for {host}: {explain(result)}"
    return dict(stats[host])


def assert_converged(result: subprocess.CompletedProcess[str], host: str = "localhost") -> None:
    """A `--format json` apply that succeeded and changed nothing."""
    assert_exit(result, EXIT_OK)
    stats = host_stats(result, host)
    assert (stats["changed"], stats["failures"], stats["unreachable"]) == (0, 0, 0), (
        f"a second apply must change nothing: {stats}\n{explain(result)}"
    )


@dataclass(frozen=True)
class Entry:
    """What a tree comparison looks at for one path: type, permissions, owner, content or link target."""

    type: str
    mode: str
    uid: int
    gid: int
    content: bytes | None = None
    link: str | None = None


def snapshot(root: Path) -> dict[str, Entry]:
    """Every path below `root` (relative, root itself as "."), without following links.

    Link targets that point inside `root` are written relative to a `<root>` placeholder so that two
    trees built under different directories compare equal.
    """
    entries: dict[str, Entry] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames] if Path(dirpath) == root else [*dirnames, *filenames]:
            path = Path(dirpath, name) if name != "." else root
            entries[str(path.relative_to(root))] = _entry(path, root)
    return entries


def _entry(path: Path, root: Path) -> Entry:
    info = path.lstat()
    mode = oct(stat.S_IMODE(info.st_mode))
    if stat.S_ISLNK(info.st_mode):
        target = os.readlink(path).replace(str(root), "<root>")
        return Entry("link", mode, info.st_uid, info.st_gid, link=target)
    if stat.S_ISDIR(info.st_mode):
        return Entry("directory", mode, info.st_uid, info.st_gid)
    if stat.S_ISREG(info.st_mode):
        return Entry("file", mode, info.st_uid, info.st_gid, content=path.read_bytes())
    return Entry("other", mode, info.st_uid, info.st_gid)


def tree_differences(expected: dict[str, Entry], actual: dict[str, Entry]) -> list[str]:
    """Human-readable differences between two snapshots; empty when they are the same."""
    problems = [f"only in the expected tree: {p}" for p in sorted(expected.keys() - actual.keys())]
    problems += [f"only in the actual tree: {p}" for p in sorted(actual.keys() - expected.keys())]
    for path in sorted(expected.keys() & actual.keys()):
        want, got = expected[path], actual[path]
        for field in ("type", "mode", "uid", "gid", "link", "content"):
            if getattr(want, field) != getattr(got, field):
                problems.append(f"{path}: {field} {getattr(want, field)!r} != {getattr(got, field)!r}")
    return problems


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)

"""Run the sparkprov CLI as a subprocess on the local connection and read its `--format json` report.

Every run passes the test's own base directory as the extra variable `base`, so tests never share
files. Extra variables travel as one JSON mapping (`-e '{...}'`), which keeps any value intact.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[1] / "data" / "modules"
HOST = "localhost"

# (task name, loop item label or None): one thing a run changed or a plan reported pending.
ChangeKey = tuple[str, str | None]


@dataclass(frozen=True)
class CliRun:
    """One finished `sparkprov` command: its exit code, its JSON document and its stderr (logs)."""

    argv: tuple[str, ...]
    rc: int
    doc: dict[str, Any]
    stderr: str

    def __str__(self) -> str:
        return f"{' '.join(self.argv[2:])} -> exit {self.rc}\n{self.stderr[-4000:]}"

    def results(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(task name, this host's result) for every task and handler that ran, in order."""
        for play in self.doc["plays"]:
            for task in play["tasks"]:
                if HOST in task["hosts"]:
                    yield task["task"]["name"], task["hosts"][HOST]

    def result(self, name: str) -> dict[str, Any]:
        """This host's result of the one task called `name`."""
        found = [result for task, result in self.results() if task == name]
        assert len(found) == 1, f"expected one result for task {name!r}, got {len(found)}:\n{self}"
        return found[0]

    def has_result(self, name: str) -> bool:
        return any(task == name for task, _ in self.results())

    @property
    def stats(self) -> dict[str, int]:
        stats: dict[str, int] = self.doc["stats"][HOST]
        return stats

    def changed(self) -> set[ChangeKey]:
        """What an apply changed: (task, None) per changed task, (task, label) per changed loop item."""
        found: set[ChangeKey] = set()
        for name, result in self.results():
            items = result.get("results")
            if isinstance(items, list) and all("_ansible_item_label" in item for item in items):
                found.update((name, item["_ansible_item_label"]) for item in items if item["changed"])
            elif result["changed"]:
                found.add((name, None))
        return found

    def pending(self) -> set[ChangeKey]:
        """What a plan reported as pending, from its `plan` list."""
        return {(entry["task"], entry["item"]) for entry in self.doc["plan"] if entry["host"] == HOST}

    def changed_tasks(self) -> set[str]:
        return {name for name, result in self.results() if result["changed"]}


def sparkprov(
    command: str,
    playbook: str | Path,
    base: Path,
    extra: dict[str, Any] | None = None,
    *,
    cwd: Path | None = None,
    expect_rc: int | None = None,
    inventory: Path | None = None,
) -> CliRun:
    """`sparkprov COMMAND PLAYBOOK -e {base, **extra} --format json [-i INVENTORY]`; stdout must be one
    JSON document. Without an inventory the play runs on the implicit localhost (local connection)."""
    path = playbook if Path(playbook).is_absolute() else DATA / playbook
    variables = {"base": str(base), **(extra or {})}
    argv = (
        sys.executable,
        "-m",
        "sparkprov",
        command,
        str(path),
        "-e",
        json.dumps(variables),
        "--format",
        "json",
        *(("-i", str(inventory)) if inventory else ()),
    )
    proc = subprocess.run(
        argv, capture_output=True, text=True, cwd=cwd or base, timeout=120, env=_environment(), check=False
    )
    try:
        doc = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(
            f"stdout is not one JSON document ({exc}):\n{proc.stdout}\n{proc.stderr}"
        ) from None
    run = CliRun(argv, proc.returncode, doc, proc.stderr)
    assert doc["exit_code"] == proc.returncode, str(run)
    if expect_rc is not None:
        assert proc.returncode == expect_rc, str(run)
    return run


def _environment() -> dict[str, str]:
    """This interpreter's environment, with the repository importable and no colour codes."""
    repo = str(DATA.parents[2])
    env = dict(os.environ, NO_COLOR="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, env.get("PYTHONPATH")]))
    return env


def apply_twice(
    playbook: str | Path,
    base: Path,
    extra: dict[str, Any] | None = None,
    *,
    cwd: Path | None = None,
    inventory: Path | None = None,
) -> CliRun:
    """Apply (must succeed), then apply again and require that nothing changed; the first run."""
    first = sparkprov("apply", playbook, base, extra, cwd=cwd, expect_rc=0, inventory=inventory)
    second = sparkprov("apply", playbook, base, extra, cwd=cwd, expect_rc=0, inventory=inventory)
    assert second.stats["changed"] == 0, f"second apply changed {sorted(second.changed())}"
    return first


# (type, permission bits, uid, gid, size, mtime_ns, content or link target)
Entry = tuple[str, int, int, int, int, int, bytes | str | None]


def snapshot(root: Path) -> dict[str, Entry]:
    """Everything observable about a tree except access times: types, modes, owners, bytes, mtimes."""
    tree: dict[str, Entry] = {}
    for path in [root, *sorted(root.rglob("*"))]:
        info = path.lstat()
        content: bytes | str | None = None
        if stat.S_ISLNK(info.st_mode):
            kind, content = "link", os.readlink(path)
        elif stat.S_ISDIR(info.st_mode):
            kind = "directory"
        else:
            kind, content = "file", path.read_bytes()
        tree[str(path.relative_to(root))] = (
            kind,
            stat.S_IMODE(info.st_mode),
            info.st_uid,
            info.st_gid,
            info.st_size if kind == "file" else 0,
            info.st_mtime_ns,
            content,
        )
    return tree


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current

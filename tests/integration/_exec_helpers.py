"""Helpers for the executor and CLI tests: run `python -m sparkprov` and read what it printed.

Every run gets a clean environment: HOME points into the test's temporary directory and variables
whose names look secret (which the masker would hide wherever their values appear) are dropped,
so what a test sees does not depend on the shell it was started from.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "executor"
_SECRET_NAME = re.compile(r"API_KEY|TOKEN|SECRET|PASSWORD|PASSWD|PRIVATE_KEY", re.IGNORECASE)


@dataclass(repr=False)
class CliRun:
    """One finished `sparkprov` process."""

    args: list[str]
    rc: int
    stdout: str
    stderr: str

    @property
    def doc(self) -> dict[str, Any]:
        """stdout as the one JSON document `--format json` promises (fails the test otherwise)."""
        try:
            value = json.loads(self.stdout)
        except json.JSONDecodeError as exc:  # pragma: no cover - shown only when a test fails
            raise AssertionError(f"stdout is not one JSON document ({exc}):\n{self!r}") from None
        assert isinstance(value, dict), f"JSON document is not an object:\n{self}"
        return value

    def results(self, host: str = "localhost") -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """(task header, host result) for every task result of `host`, in order."""
        for play in self.doc["plays"]:
            for task in play["tasks"]:
                if host in task["hosts"]:
                    yield task["task"], task["hosts"][host]

    def result(self, name: str, host: str = "localhost", *, handler: bool | None = None) -> dict[str, Any]:
        """The host result of the only task (or handler) called `name`."""
        found = [
            res
            for task, res in self.results(host)
            if task["name"] == name and (handler is None or task["handler"] is handler)
        ]
        assert len(found) == 1, f"expected one result of {name!r} on {host}, found {len(found)}:\n{self}"
        return found[0]

    def ran(self, host: str = "localhost") -> list[str]:
        """Names of the tasks that reported a result for `host` (skipped ones included)."""
        return [task["name"] for task, _ in self.results(host)]

    def executed(self, host: str = "localhost") -> list[str]:
        """Names of the tasks that ran for `host` and were not skipped."""
        return [task["name"] for task, res in self.results(host) if not res.get("skipped")]

    def stats(self, host: str = "localhost") -> dict[str, int]:
        stats: dict[str, int] = self.doc["stats"][host]
        return stats

    def __repr__(self) -> str:
        return (
            f"$ sparkprov {' '.join(self.args)}\n[exit {self.rc}]\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not _SECRET_NAME.search(k)}
    env["HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["NO_COLOR"] = "1"
    env.pop("FORCE_COLOR", None)
    env.update(extra)
    return env


def sparkprov(
    *args: str | Path,
    home: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60,
) -> CliRun:
    """Run `python -m sparkprov ARGS` with HOME=`home` (created if missing) and return what it did."""
    home.mkdir(parents=True, exist_ok=True)
    argv = [str(a) for a in args]
    proc = subprocess.run(
        [sys.executable, "-m", "sparkprov", *argv],
        capture_output=True,
        text=True,
        env=clean_env(home, **(env or {})),
        cwd=cwd or home,
        timeout=timeout,
        check=False,
    )
    return CliRun(argv, proc.returncode, proc.stdout, proc.stderr)


def write_text(path: Path, text: str) -> Path:
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
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []

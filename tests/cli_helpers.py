"""Small helpers for the input-error tests: lay out a scenario, load it, or run the real CLI on it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from sparkprov.errors import InputError, Problem
from sparkprov.executor.prepare import Prepared, load_inputs

PLAYBOOK = "site.yml"


def write_files(root: Path, files: Mapping[str, str | bytes]) -> None:
    """Write `files` (relative name -> text or bytes) below `root`, making directories as needed."""
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def prepare(
    root: Path,
    playbook: str | bytes,
    *,
    files: Mapping[str, str | bytes] | None = None,
    inventory: str | None = None,
    extra: tuple[str, ...] = (),
    limit: str | None = None,
) -> Prepared:
    """Write `playbook` as root/site.yml (plus `files`) and run everything done before hosts are touched."""
    write_files(root, {PLAYBOOK: playbook, **(files or {})})
    return load_inputs(root / PLAYBOOK, root / inventory if inventory else None, extra, limit)


def problems(root: Path, playbook: str | bytes, **kwargs: Any) -> list[Problem]:
    """The problems `prepare` reports; fails the test when the input is accepted."""
    with pytest.raises(InputError) as info:
        prepare(root, playbook, **kwargs)
    return info.value.problems


def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m sparkprov ARGS` in `cwd`, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "sparkprov", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )

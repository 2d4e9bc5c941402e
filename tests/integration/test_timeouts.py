"""No command runs forever: a task's `timeout:`, else $SPARKPROV_COMMAND_TIMEOUT (default 4 hours)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.cli import assert_exit, sparkprov

PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: too slow
      command: sleep 30
{timeout}
"""


@pytest.mark.parametrize(
    ("task_timeout", "environment"),
    [("      timeout: 0.5", {}), ("", {"SPARKPROV_COMMAND_TIMEOUT": "0.5"})],
    ids=["task-timeout", "default-timeout"],
)
def test_a_command_that_runs_too_long_fails_saying_what_and_how_long(
    tmp_path: Path, task_timeout: str, environment: dict[str, str]
) -> None:
    playbook = tmp_path / "slow.yml"
    playbook.write_text(PLAYBOOK.format(timeout=task_timeout))
    started = time.monotonic()
    result = sparkprov("apply", playbook, "--format", "json", extra_env=environment, cwd=tmp_path, timeout=60)
    assert time.monotonic() - started < 20  # stopped, not waited for
    assert_exit(result, 1)
    task = result.doc["plays"][0]["tasks"][0]["hosts"]["localhost"]
    assert task["failed"]
    assert "run: sleep 30" in task["msg"] and "did not finish within 0.5s" in task["msg"]

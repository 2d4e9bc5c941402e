"""`retries` without `until` retries a failed task (as in Ansible), waiting `delay` seconds, multiplied by
`backoff` after each try: what flaky image and model pulls need."""

from __future__ import annotations

import time
from pathlib import Path

from tests.cli import assert_exit, sparkprov

PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: flaky
      shell: >-
        n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter};
        [ $n -ge {succeed_on} ]
      retries: {retries}
      delay: 0.2
      backoff: 2
"""


def _run(tmp_path: Path, succeed_on: int, retries: int) -> tuple[dict, float]:
    playbook = tmp_path / "flaky.yml"
    counter = tmp_path / "counter"
    playbook.write_text(PLAYBOOK.format(counter=counter, succeed_on=succeed_on, retries=retries))
    started = time.monotonic()
    result = sparkprov("apply", playbook, "--format", "json", cwd=tmp_path, timeout=60)
    elapsed = time.monotonic() - started
    assert_exit(result, 0 if succeed_on <= retries + 1 else 1)
    return result.doc["plays"][0]["tasks"][0]["hosts"]["localhost"], elapsed


def test_retries_without_until_retry_a_failed_task_with_growing_delays(tmp_path: Path) -> None:
    task, elapsed = _run(tmp_path, succeed_on=3, retries=3)
    assert not task["failed"] and task["attempts"] == 3
    assert elapsed >= 0.2 + 0.4  # the second wait was doubled


def test_a_task_that_keeps_failing_says_how_often_it_was_tried(tmp_path: Path) -> None:
    task, _ = _run(tmp_path, succeed_on=10, retries=2)
    assert task["failed"] and task["attempts"] == 3
    assert task["msg"].startswith("failed 3 times: ")

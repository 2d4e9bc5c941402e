"""The same Ansible playbook, using only file/copy/template/command tasks, runs unchanged under
`ansible-playbook` and `sparkprov apply` and leaves the same end state: the same paths, types, bytes,
modes, owners and link targets. sparkprov's second run changes nothing and its plan is then empty.

Playbooks: the shared convergence benchmark (`../shared/bench/converge.yml`, beside the clone) and
`tests/data/ansible_compat/site.yml`, which covers the modules' corners (touch with preserved times,
links, absent, symbolic modes, copy into a directory, template whitespace, creates/removes/chdir/argv)
and the task keywords (when, loop with loop_control, register, handlers).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.cli import (
    EXIT_OK,
    REPO_ROOT,
    assert_converged,
    assert_exit,
    run_command,
    snapshot,
    sparkprov,
    tree_differences,
)

pytestmark = pytest.mark.slow

BENCH_DIR = REPO_ROOT.parent / "shared" / "bench"
OWN_DIR = REPO_ROOT / "tests" / "data" / "ansible_compat"
CASES = [
    pytest.param(BENCH_DIR, "converge.yml", id="bench-converge"),
    pytest.param(OWN_DIR, "site.yml", id="core-modules"),
]


def _interpreter_of(script: Path) -> str:
    """The Python a console script runs under (its shebang), for `ansible_python_interpreter`: Ansible's
    own discovery may pick a pyenv shim that fails."""
    with script.open("rb") as handle:
        first_line = handle.readline()
    words = first_line[2:].decode(errors="replace").split() if first_line.startswith(b"#!") else []
    if words and Path(words[0]).name.startswith("python") and os.access(words[0], os.X_OK):
        return words[0]
    sibling = script.parent / "python3"
    return str(sibling) if os.access(sibling, os.X_OK) else sys.executable


def _run_ansible(ansible_playbook: Path, playbook: Path, target: Path, scratch: Path) -> None:
    """ansible-playbook on localhost with a local connection, its state kept under `scratch`."""
    env = {
        **os.environ,
        "ANSIBLE_HOME": str(scratch / "home"),
        "ANSIBLE_LOCAL_TEMP": str(scratch / "local-tmp"),
        "ANSIBLE_REMOTE_TMP": str(scratch / "remote-tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
    }
    argv = [str(ansible_playbook), "-i", "localhost,", "-c", "local"]
    argv += ["-e", f"ansible_python_interpreter={_interpreter_of(ansible_playbook)}"]
    argv += ["-e", f"anchors_base={target}", str(playbook)]
    assert_exit(run_command(argv, env=env, cwd=scratch, timeout=180), EXIT_OK)


@pytest.mark.parametrize(("source", "playbook_name"), CASES)
def test_same_end_state_as_ansible(
    ansible_playbook: Path, tmp_path: Path, source: Path, playbook_name: str
) -> None:
    if not (source / playbook_name).is_file():
        pytest.skip(f"{source / playbook_name} not found (shared/ is expected beside the repository)")
    playbook_dir = tmp_path / "playbook"
    shutil.copytree(source, playbook_dir)
    playbook = playbook_dir / playbook_name
    by_ansible, by_sparkprov = tmp_path / "ansible" / "root", tmp_path / "sparkprov" / "root"
    (tmp_path / "ansible").mkdir()
    (tmp_path / "sparkprov").mkdir()
    target = ("-e", f"anchors_base={by_sparkprov}")

    _run_ansible(ansible_playbook, playbook, by_ansible, tmp_path / "ansible")
    assert_exit(sparkprov("apply", playbook, *target, cwd=tmp_path), EXIT_OK)

    expected = snapshot(by_ansible)
    assert len(expected) > 1, f"ansible-playbook left nothing under {by_ansible}"
    differences = tree_differences(expected, snapshot(by_sparkprov))
    assert not differences, "sparkprov's end state differs from Ansible's:\n" + "\n".join(differences)

    assert_converged(sparkprov("apply", playbook, *target, "--format", "json", cwd=tmp_path))
    assert_exit(sparkprov("plan", playbook, *target, cwd=tmp_path), EXIT_OK)

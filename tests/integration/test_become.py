"""`become` on the local connection: as root it needs no sudo; as a normal user it goes through `sudo -n`
to root and to other users, tasks without become stay the user's own, and missing sudo rights fail
fast with sudo's message instead of waiting for a password."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.integration.conftest import SudoUser
from tests.integration.helpers import (
    EXIT_FAILED,
    EXIT_OK,
    assert_converged,
    assert_exit,
    explain,
    mode_of,
    sparkprov,
)

pytestmark = pytest.mark.root

OTHER_USER = "nobody"  # exists on every Debian/Ubuntu system


def _play(name: str, tasks: str, *, become: bool = False) -> str:
    header = f"- name: {name}\n  hosts: all\n  gather_facts: false\n"
    return header + ("  become: true\n" if become else "") + "  tasks:\n" + tasks


ROOT_TASKS = """\
    - name: root-owned file
      copy: {content: "root only\\n", dest: "{{ base }}/root.conf", owner: root, group: root, mode: "0600"}
    - name: who runs commands
      command: {argv: [/usr/bin/id, -u]}
      register: uid
      changed_when: false
    - name: record it
      copy: {content: "uid={{ uid.stdout }}\\n", dest: "{{ base }}/uid", mode: "0644"}
"""

OTHER_USER_TASKS = """\
    - name: a directory that user owns
      become: true
      file: {path: "{{ drop }}", state: directory, owner: "{{ other }}", mode: "0755"}
    - name: a file written as that user
      become: true
      become_user: "{{ other }}"
      copy: {content: "from {{ other }}\\n", dest: "{{ drop }}/greeting.txt", mode: "0640"}
"""

USER_TASKS = """\
    - name: note in my own home, no become
      copy: {content: "mine\\n", dest: "{{ home }}/note.txt", mode: "0644"}
    - name: my name
      command: id -un
      register: plain
      changed_when: false
    - name: my name with become
      become: true
      command: id -un
      register: escalated
      changed_when: false
    - name: record both
      copy: {content: "plain={{ plain.stdout }} become={{ escalated.stdout }}\\n", dest: "{{ home }}/ids.txt"}
    - name: directory under a root-only directory
      become: true
      file: {path: "{{ locked }}/app", state: directory, mode: "0750"}
    - name: file in it
      become: true
      copy: {content: "secret\\n", dest: "{{ locked }}/app/secret.conf", mode: "0600"}
"""

requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="runs sparkprov as root")


def _write(directory: Path, text: str) -> Path:
    playbook = directory / "playbook.yml"
    playbook.write_text(text)
    playbook.chmod(0o644)
    return playbook


def _assert_owned(path: Path, owner: str, mode: int, content: str | None = None) -> None:
    assert path.exists(), f"{path} was not created"
    assert (path.owner(), oct(mode_of(path))) == (owner, oct(mode)), f"{path}: owner/mode"
    if content is not None:
        assert path.read_text() == content


def _assert_other_user_file(drop: Path) -> None:
    _assert_owned(drop, OTHER_USER, 0o755)
    _assert_owned(drop / "greeting.txt", OTHER_USER, 0o640, f"from {OTHER_USER}\n")


@requires_root
def test_become_as_root_uses_no_sudo(tmp_path: Path) -> None:
    playbook = _write(tmp_path, _play("become while already root", ROOT_TASKS, become=True))
    no_sudo = tmp_path / "bin"  # PATH without sudo: any attempt to call it would fail the run
    no_sudo.mkdir()
    env = {**os.environ, "PATH": str(no_sudo)}

    first = sparkprov("apply", playbook, "-e", f"base={tmp_path}", env=env)
    assert_exit(first, EXIT_OK)
    _assert_owned(tmp_path / "root.conf", "root", 0o600, "root only\n")
    assert (tmp_path / "uid").read_text() == "uid=0\n"

    again = sparkprov("apply", playbook, "-e", f"base={tmp_path}", "--format", "json", env=env)
    assert_converged(again)


@requires_root
def test_become_user_from_root(shared_tmp: Path) -> None:
    if not shutil.which("sudo"):
        pytest.skip("become_user to a non-root user goes through sudo, which is not installed")
    playbook = _write(shared_tmp, _play("become another user", OTHER_USER_TASKS))
    extra = ["-e", f"drop={shared_tmp / 'drop'}", "-e", f"other={OTHER_USER}"]

    assert_exit(sparkprov("apply", playbook, *extra, cwd=shared_tmp), EXIT_OK)
    _assert_other_user_file(shared_tmp / "drop")
    assert_converged(sparkprov("apply", playbook, *extra, "--format", "json", cwd=shared_tmp))


def _locked_dir(parent: Path) -> Path:
    """A directory only root can enter."""
    locked = parent / "locked"
    locked.mkdir(mode=0o700)
    return locked


def test_become_from_normal_user_through_sudo(sudo_user: SudoUser, shared_tmp: Path) -> None:
    locked, drop = _locked_dir(shared_tmp), shared_tmp / "drop"
    playbook = _write(shared_tmp, _play("become from a normal user", USER_TASKS + OTHER_USER_TASKS))
    args = ["apply", str(playbook), "-e", f"home={sudo_user.home}", "-e", f"locked={locked}"]
    args += ["-e", f"drop={drop}", "-e", f"other={OTHER_USER}"]

    assert_exit(sudo_user.sparkprov(*args, cwd=shared_tmp), EXIT_OK)
    _assert_owned(sudo_user.home / "note.txt", sudo_user.name, 0o644, "mine\n")
    assert (sudo_user.home / "ids.txt").read_text() == f"plain={sudo_user.name} become=root\n"
    _assert_owned(locked, "root", 0o700)
    _assert_owned(locked / "app", "root", 0o750)
    _assert_owned(locked / "app/secret.conf", "root", 0o600, "secret\n")
    _assert_other_user_file(drop)

    assert_converged(sudo_user.sparkprov(*args, "--format", "json", cwd=shared_tmp))


@pytest.mark.parametrize(
    "module",
    [
        pytest.param("command: id -un", id="command"),
        pytest.param('file: {path: "{{ locked }}/app", state: directory}', id="file"),
    ],
)
def test_become_without_sudo_rights_fails_fast(sudo_user: SudoUser, shared_tmp: Path, module: str) -> None:
    locked = _locked_dir(shared_tmp)
    task = f"    - name: needs root\n      become: true\n      {module}\n"
    playbook = _write(shared_tmp, _play("no sudo rights", task))
    with sudo_user.without_sudo_rights():  # sudo -n: no prompt; a prompt would run into the timeout
        result = sudo_user.sparkprov("apply", playbook, "-e", f"locked={locked}", cwd=shared_tmp, timeout=60)

    assert_exit(result, EXIT_FAILED)
    assert "sudo: a password is required" in result.stdout + result.stderr, explain(result)
    assert not (locked / "app").exists()

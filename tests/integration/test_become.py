"""`become` on the local connection: as root it needs no sudo; as a normal user it goes through `sudo -n`
to root and to other users, tasks without become stay the user's own, and missing sudo rights fail
fast with sudo's message instead of waiting for a password."""

from __future__ import annotations

import fcntl
import os
import select
import shutil
import subprocess
import sys
import termios
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from tests.cli import (
    EXIT_FAILED,
    EXIT_INPUT,
    EXIT_OK,
    assert_converged,
    assert_exit,
    explain,
    mode_of,
    sparkprov,
)
from tests.integration.conftest import SudoUser

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


# ---------------------------------------------------------------- a sudo that asks for a password

SUDO_PASSWORD = "sudo pw 'with' $(quotes)"
BECOME_TASKS = """\
    - name: my name with become
      become: true
      command: id -un
      register: escalated
      changed_when: false
    - name: a root-only file
      become: true
      copy: {content: "{{ escalated.stdout }}\\n", dest: "{{ locked }}/who", mode: "0600"}
"""


def test_become_with_a_sudo_password_from_the_environment(sudo_user: SudoUser, shared_tmp: Path) -> None:
    locked = _locked_dir(shared_tmp)
    playbook = _write(shared_tmp, _play("sudo asks for a password", BECOME_TASKS))
    args = ("apply", playbook, "-e", f"locked={locked}")
    with sudo_user.with_sudo_password(SUDO_PASSWORD):
        refused = sudo_user.sparkprov(*args, cwd=shared_tmp, timeout=60)
        assert_exit(refused, EXIT_FAILED)
        assert "pass -K (--ask-become-pass) or set SPARKPROV_BECOME_PASSWORD" in refused.stdout, explain(
            refused
        )

        wrong = replace(sudo_user, env={**sudo_user.env, "SPARKPROV_BECOME_PASSWORD": "not it"})
        rejected = wrong.sparkprov(*args, cwd=shared_tmp, timeout=60)
        assert_exit(rejected, EXIT_FAILED)
        assert "rejected the password from $SPARKPROV_BECOME_PASSWORD" in rejected.stdout, explain(rejected)
        assert "not it" not in rejected.stdout + rejected.stderr

        right = replace(sudo_user, env={**sudo_user.env, "SPARKPROV_BECOME_PASSWORD": SUDO_PASSWORD})
        done = right.sparkprov(*args, cwd=shared_tmp)
        assert_exit(done, EXIT_OK)
        assert SUDO_PASSWORD not in done.stdout + done.stderr
        _assert_owned(locked / "who", "root", 0o600, "root\n")
        assert_converged(right.sparkprov(*args, "--format", "json", cwd=shared_tmp))


def test_become_with_the_password_an_ansible_inventory_sets(sudo_user: SudoUser, shared_tmp: Path) -> None:
    locked = _locked_dir(shared_tmp)
    playbook = _write(shared_tmp, _play("sudo asks for a password", BECOME_TASKS))
    inventory = shared_tmp / "inventory.yml"
    host_vars = {"ansible_connection": "local", "ansible_become_pass": SUDO_PASSWORD}
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"localhost": host_vars}}}))
    inventory.chmod(0o644)
    with sudo_user.with_sudo_password(SUDO_PASSWORD):
        done = sudo_user.sparkprov(
            "apply", playbook, "-i", inventory, "-e", f"locked={locked}", cwd=shared_tmp
        )
    assert_exit(done, EXIT_OK)
    assert SUDO_PASSWORD not in done.stdout + done.stderr
    _assert_owned(locked / "who", "root", 0o600, "root\n")


def test_ask_become_pass_asks_on_the_terminal(sudo_user: SudoUser, shared_tmp: Path) -> None:
    locked = _locked_dir(shared_tmp)
    playbook = _write(shared_tmp, _play("sudo asks for a password", BECOME_TASKS))
    argv = ["runuser", "-u", sudo_user.name, "--", *sudo_user.python, "-m", "sparkprov"]
    argv += ["apply", str(playbook), "-e", f"locked={locked}", "-K"]
    with sudo_user.with_sudo_password(SUDO_PASSWORD):
        rc, screen = _on_a_terminal(argv, sudo_user.env, shared_tmp, "BECOME password: ", SUDO_PASSWORD)
    assert rc == EXIT_OK, screen
    assert SUDO_PASSWORD not in screen  # not echoed, not printed
    _assert_owned(locked / "who", "root", 0o600, "root\n")


def test_ask_pass_without_a_terminal_is_an_input_error(shared_tmp: Path) -> None:
    playbook = _write(shared_tmp, _play("nothing", "    - debug: {msg: hi}\n"))
    argv = [sys.executable, "-m", "sparkprov", "apply", str(playbook), "-K"]
    # Its own session: no controlling terminal, as under cron or CI.
    result = subprocess.run(
        argv, cwd=shared_tmp, stdin=subprocess.DEVNULL, capture_output=True, text=True, start_new_session=True
    )
    assert_exit(result, EXIT_INPUT)
    expected = "-K asks on a terminal and there is none here; set SPARKPROV_BECOME_PASSWORD instead"
    assert expected in result.stderr, explain(result)


def _on_a_terminal(
    argv: list[str], env: dict[str, str], cwd: Path, prompt: str, answer: str
) -> tuple[int, str]:
    """Run argv with a pseudo-terminal as its controlling terminal; type `answer` once `prompt` shows.
    Returns the exit status and everything the terminal showed."""
    master, slave = os.openpty()
    process = subprocess.Popen(
        argv,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=cwd,
        start_new_session=True,
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
    )
    os.close(slave)
    shown, answered = b"", False
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 0.2)[0]:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every process holding the terminal has exited
                break
            if not chunk:
                break
            shown += chunk
            if not answered and prompt.encode() in shown:
                os.write(master, answer.encode() + b"\n")
                answered = True
        else:
            process.kill()
            raise AssertionError(f"{argv} still running after 120 s:\n{shown.decode(errors='replace')}")
        return process.wait(timeout=30), shown.decode(errors="replace")
    finally:
        os.close(master)

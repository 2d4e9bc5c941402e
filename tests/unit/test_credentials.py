"""Connection secrets (sparkprov/connection/credentials.py): read from the environment, never shown by
repr, and sudo given the become password on stdin only when the target user needs one."""

from __future__ import annotations

import re

import pytest

from sparkprov.connection.base import BecomeFailed, CommandResult
from sparkprov.connection.credentials import Credentials, Sudo, check_sudo
from sparkprov.secrets import is_secret_name

ENVIRONMENT = {
    "SPARKPROV_SSH_PASSWORD": "login-pw",
    "SPARKPROV_SSH_KEY_PASSPHRASE": "key-pp",
    "SPARKPROV_BECOME_PASSWORD": "sudo-pw",
}


def test_credentials_come_from_the_environment_and_repr_shows_none() -> None:
    found = Credentials.from_environment(ENVIRONMENT)
    assert (found.ssh_password, found.key_passphrase, found.become_password) == (
        "login-pw",
        "key-pp",
        "sudo-pw",
    )
    assert found.secrets() == ["login-pw", "key-pp", "sudo-pw"]
    assert found.become_password_source == "$SPARKPROV_BECOME_PASSWORD"
    assert not any(secret in repr(found) for secret in found.secrets())


def test_empty_variables_are_no_password() -> None:
    found = Credentials.from_environment({"SPARKPROV_SSH_PASSWORD": ""})
    assert found.ssh_password is None and found.secrets() == []


def test_sudo_without_a_password_never_prompts() -> None:
    sudo = Sudo(None, passwordless=lambda user: False)
    assert sudo.prefix("root") == (["sudo", "-n", "-H", "-u", "root", "--"], b"")


def test_sudo_sends_the_password_first_on_stdin_only_to_users_that_need_it() -> None:
    probed: list[str] = []

    def passwordless(user: str) -> bool:
        probed.append(user)
        return user == "nobody"

    sudo = Sudo("pw 'x' $(y)", passwordless)
    assert sudo.prefix("root") == (["sudo", "-k", "-S", "-p", "", "-H", "-u", "root", "--"], b"pw 'x' $(y)\n")
    assert sudo.prefix("nobody") == (["sudo", "-n", "-H", "-u", "nobody", "--"], b"")
    sudo.prefix("root")
    assert probed == ["root", "nobody"]  # once per user


def test_a_hosts_inventory_passwords_win_and_are_named_as_the_source() -> None:
    run = Credentials.from_environment(ENVIRONMENT)
    host = run.for_host({"ansible_become_pass": "host-sudo", "ansible_ssh_pass": "host-login", "x": 1})
    assert (host.become_password, host.become_password_source) == ("host-sudo", "ansible_become_pass")
    assert (host.ssh_password, host.ssh_password_source) == ("host-login", "ansible_ssh_pass")
    assert run.for_host({"ansible_password": ""}) == run  # an empty one changes nothing


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("ansible_become_pass", True),
        ("ansible_ssh_pass", True),
        ("ansible_password", True),
        ("bypass", False),
    ],
)
def test_ansibles_password_variables_are_secret_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


@pytest.mark.parametrize(
    ("stderr", "fix"),
    [
        ("sudo: a password is required\n", "pass -K (--ask-become-pass) or set SPARKPROV_BECOME_PASSWORD"),
        ("Sorry, try again.\nsudo: 1 incorrect password attempt\n", "rejected the password from -K"),
        ("sudo: unknown user nosuch\n", "there is no user 'nosuch' on h1"),
        ("spark is not in the sudoers file.\n", "spark may not sudo to 'nosuch' on h1 (sudoers)"),
    ],
)
def test_a_sudo_refusal_says_what_to_fix(stderr: str, fix: str) -> None:
    refused = CommandResult(("sudo",), 1, "", stderr, 0.1)
    credentials = Credentials(become_password_source="-K")
    with pytest.raises(BecomeFailed, match=re.escape(fix)):
        check_sudo(refused, user="nosuch", login="spark", host="h1", credentials=credentials)


def test_a_command_that_ran_and_failed_is_not_a_sudo_refusal() -> None:
    failed = CommandResult(("false",), 1, "", "sudo: this line came from the command\n", 0.1)
    check_sudo(failed, user="root", login="spark", host="h1", credentials=Credentials())

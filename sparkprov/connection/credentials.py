"""The secrets a connection may need, how sudo is asked to use one, and what it means when sudo refuses.

They come from the environment ($SPARKPROV_SSH_PASSWORD, $SPARKPROV_SSH_KEY_PASSPHRASE,
$SPARKPROV_BECOME_PASSWORD) or from the CLI's prompts (`-k`, `-K`), and travel only on stdin or
through paramiko, never in argv. Nothing here prints them: `repr` leaves them out.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sparkprov.connection.base import BecomeFailed, CommandResult

ENV_PASSWORD = "SPARKPROV_SSH_PASSWORD"
ENV_KEY_PASSPHRASE = "SPARKPROV_SSH_KEY_PASSPHRASE"
ENV_BECOME_PASSWORD = "SPARKPROV_BECOME_PASSWORD"
# Ansible's inventory variables for the same passwords (a host's own win over the run's).
HOST_SSH_PASSWORD_VARS = ("ansible_password", "ansible_ssh_pass", "ansible_ssh_password")
HOST_BECOME_PASSWORD_VARS = ("ansible_become_password", "ansible_become_pass")
# How a user gives each password (for hints).
ASK_PASSWORD = f"pass -k (--ask-pass) or set {ENV_PASSWORD}"
ASK_BECOME_PASSWORD = f"pass -K (--ask-become-pass) or set {ENV_BECOME_PASSWORD}"


@dataclass(frozen=True)
class Credentials:
    ssh_password: str | None = field(default=None, repr=False)
    key_passphrase: str | None = field(default=None, repr=False)
    become_password: str | None = field(default=None, repr=False)
    # Where each came from, for hints ("$SPARKPROV_SSH_PASSWORD", "the -k prompt"); never the value.
    ssh_password_source: str = ENV_PASSWORD
    become_password_source: str = ENV_BECOME_PASSWORD

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Credentials:
        env = os.environ if environ is None else environ
        return cls(
            ssh_password=env.get(ENV_PASSWORD) or None,
            key_passphrase=env.get(ENV_KEY_PASSPHRASE) or None,
            become_password=env.get(ENV_BECOME_PASSWORD) or None,
            ssh_password_source=f"${ENV_PASSWORD}",
            become_password_source=f"${ENV_BECOME_PASSWORD}",
        )

    def for_host(self, host_vars: Mapping[str, Any]) -> Credentials:
        """These credentials, with the passwords the host's inventory variables set instead."""
        found = self
        for name in HOST_SSH_PASSWORD_VARS:
            if host_vars.get(name):
                found = replace(found, ssh_password=str(host_vars[name]), ssh_password_source=name)
                break
        for name in HOST_BECOME_PASSWORD_VARS:
            if host_vars.get(name):
                found = replace(found, become_password=str(host_vars[name]), become_password_source=name)
                break
        return found

    def secrets(self) -> list[str]:
        """The values set, for the output masker."""
        return [s for s in (self.ssh_password, self.key_passphrase, self.become_password) if s]


class Sudo:
    """How to run a command as another user: `sudo -n` (never prompt: a prompt would hang the run), or,
    with a become password, `sudo -k -S -p ''` reading it as the first line of stdin (-k: sudo always
    asks, so the line is never left over for the command). A user that needs no password gets -n even
    then; whether it does is probed once per target user with `passwordless(user)`."""

    def __init__(self, password: str | None, passwordless: Callable[[str], bool]) -> None:
        self._password = password
        self._passwordless = passwordless
        self._known: dict[str, bool] = {}
        self._lock = threading.Lock()

    def prefix(self, user: str) -> tuple[list[str], bytes]:
        """The argv to put before the command, and what stdin must start with."""
        target = ["-H", "-u", user, "--"]
        if not self._password or self._needs_no_password(user):
            return ["sudo", "-n", *target], b""
        return ["sudo", "-k", "-S", "-p", "", *target], self._password.encode("utf-8") + b"\n"

    def _needs_no_password(self, user: str) -> bool:
        with self._lock:
            if user not in self._known:
                self._known[user] = self._passwordless(user)
            return self._known[user]


def check_sudo(result: CommandResult, *, user: str, login: str, host: str, credentials: Credentials) -> None:
    """Raise BecomeFailed, with the fix, when sudo itself refused (the command never ran) as `login`
    on `host` becoming `user`; a command that ran and failed is left to the caller."""
    problem = _sudo_problem(result)
    if problem is None:
        return
    fixes = {
        "missing": f"sudo is not installed on {host}; install it or log in as '{user}'",
        "password": f"becoming '{user}' needs {login}'s sudo password on {host}: {ASK_BECOME_PASSWORD}, "
        f"or allow {login} to sudo without a password (NOPASSWD)",
        "rejected": f"sudo on {host} rejected the password from {credentials.become_password_source} "
        f"for {login}",
        "denied": f"{login} may not sudo to '{user}' on {host} (sudoers)",
        "unknown user": f"there is no user '{user}' on {host}",
    }
    raise BecomeFailed(f"become failed: {fixes[problem]}; sudo said: {result.stderr.strip()[-500:]}")


def _sudo_problem(result: CommandResult) -> str | None:
    """Which way sudo itself failed, from its exit status and message."""
    text = result.stderr
    if result.rc == 127 and "sudo" in text and "not found" in text:
        return "missing"
    if result.rc != 1 or ("sudo" not in text and "Sorry, try again" not in text):
        return None
    if "a password is required" in text or "a terminal is required" in text:
        return "password"
    if "incorrect password" in text or "Sorry, try again" in text or "no password was provided" in text:
        return "rejected"
    if "not in the sudoers file" in text or "is not allowed to" in text or "may not run sudo" in text:
        return "denied"
    if "unknown user" in text:
        return "unknown user"
    return None

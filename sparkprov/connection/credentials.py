"""The secrets a connection may need, and how sudo is asked to use one.

They come from the environment ($SPARKPROV_SSH_PASSWORD, $SPARKPROV_SSH_KEY_PASSPHRASE,
$SPARKPROV_BECOME_PASSWORD) or from the CLI's prompts (`-k`, `-K`), and travel only on stdin or
through paramiko, never in argv. Nothing here prints them: `repr` leaves them out.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

ENV_PASSWORD = "SPARKPROV_SSH_PASSWORD"
ENV_KEY_PASSPHRASE = "SPARKPROV_SSH_KEY_PASSPHRASE"
ENV_BECOME_PASSWORD = "SPARKPROV_BECOME_PASSWORD"
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

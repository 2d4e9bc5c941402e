"""The local machine: subprocess without a shell, file operations in-process or via sudo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from sparkprov.connection import agent
from sparkprov.connection.base import (
    Become,
    BecomeFailed,
    CommandResult,
    CommandTimeout,
    Connection,
    HostUnreachable,
    sudo_refusal,
)

AGENT_SOURCE = Path(agent.__file__).read_text(encoding="utf-8")

# Under sudo the environment is reset, and putting VAR=value in argv would show secrets in `ps`.
# So the variables travel as the first line of stdin, read byte by byte before exec'ing the command.
ENV_FROM_STDIN = (
    "import json, os, sys\n"
    "line = b''\n"
    "while not line.endswith(b'\\n'):\n"
    "    byte = os.read(0, 1)\n"
    "    if not byte:\n"
    "        break\n"
    "    line += byte\n"
    "os.environ.update(json.loads(line))\n"
    "os.execvp(sys.argv[1], sys.argv[1:])\n"
)


def current_user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


class LocalConnection(Connection):
    is_local = True

    def __init__(self, host_name: str = "localhost") -> None:
        self.host_name = host_name
        self._user = current_user()

    def _needs_sudo(self, become: Become | None) -> bool:
        return become is not None and become.user != self._user

    def _sudo_prefix(self, become: Become) -> list[str]:
        if shutil.which("sudo") is None:
            raise BecomeFailed(
                f"become to '{become.user}' needs sudo, which is not installed on {self.host_name}; "
                "install sudo or run sparkprov as that user"
            )
        # -n: never prompt (a prompt would hang a provisioning run); -H: the target user's HOME.
        return ["sudo", "-n", "-H", "-u", become.user, "--"]

    def run(
        self,
        argv: list[str],
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
        become: Become | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
    ) -> CommandResult:
        full = list(argv)
        if self._needs_sudo(become):
            assert become is not None
            if env:
                full = ["python3", "-c", ENV_FROM_STDIN, *full]
                stdin = json.dumps(env).encode("utf-8") + b"\n" + (stdin or b"")
                env = None
            full = self._sudo_prefix(become) + full
        started = time.monotonic()
        self.round_trips += 1
        try:
            completed = subprocess.run(
                full,
                input=stdin if stdin is not None else b"",
                capture_output=True,
                timeout=timeout,
                cwd=cwd,
                env={**os.environ, **env} if env else None,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise CommandTimeout(f"command {argv[0]!r}", timeout or 0) from None
        except FileNotFoundError as exc:
            missing = cwd if cwd and not os.path.isdir(cwd) else argv[0]
            return CommandResult(
                tuple(argv), 127, "", f"{missing}: {exc.strerror}", time.monotonic() - started
            )
        except PermissionError as exc:
            return CommandResult(
                tuple(argv), 126, "", f"{argv[0]}: {exc.strerror}", time.monotonic() - started
            )
        stderr = completed.stderr.decode("utf-8", "replace")
        if become is not None and self._needs_sudo(become) and completed.returncode == 1:
            refusal = sudo_refusal(stderr)
            if refusal:
                raise BecomeFailed(
                    f"become to '{become.user}' failed on {self.host_name}: {refusal}; give this user "
                    "passwordless sudo (a NOPASSWD rule in /etc/sudoers.d/) or run sparkprov as that user"
                )
        return CommandResult(
            tuple(argv),
            completed.returncode,
            completed.stdout.decode("utf-8", "replace"),
            stderr,
            time.monotonic() - started,
        )

    def agent(self, ops: list[dict[str, Any]], *, become: Become | None = None) -> list[dict[str, Any]]:
        if not self._needs_sudo(become):
            return agent.run_ops(ops)
        assert become is not None
        # The host's python3 (found in sudo's secure_path), not ours: the target user may not be
        # able to run an interpreter that lives in the controlling user's home.
        result = self.run(
            ["python3", "-c", AGENT_SOURCE],
            stdin=json.dumps(ops).encode("utf-8"),
            become=become,
            timeout=600,
        )
        if result.rc != 0:
            raise HostUnreachable(
                f"file operations as '{become.user}' failed on {self.host_name}: "
                f"{result.stderr.strip() or 'exit code ' + str(result.rc)}"
            )
        return json.loads(result.stdout)

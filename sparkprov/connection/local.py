"""The local machine: subprocess without a shell, file operations in-process or via sudo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import IO, Any

from sparkprov.connection import agent
from sparkprov.connection.base import (
    STREAM_CHUNK,
    Become,
    BecomeFailed,
    ByteSource,
    CommandFailed,
    CommandResult,
    CommandTimeout,
    Connection,
    HostUnreachable,
    OnBytes,
    chunks_of,
)
from sparkprov.connection.credentials import Credentials, Sudo, check_sudo

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


# What a streamed command's stdout/stderr pipe keeps (the tail), when it is collected rather than streamed.
KEPT_OUTPUT_BYTES = 1024 * 1024


def command_with_preamble(
    argv: list[str], env: dict[str, str] | None, sudo: tuple[list[str], bytes] | None
) -> tuple[list[str], bytes]:
    """argv reading its environment from stdin (`ENV_FROM_STDIN`) and run under `sudo` (its argv
    prefix and password line, from `Sudo.prefix`), and what stdin must start with: the password
    line, then the environment as one JSON line. Secrets stay out of argv either way."""
    full, preamble = list(argv), b""
    if env:
        full = ["python3", "-c", ENV_FROM_STDIN, *full]
        preamble = json.dumps(env).encode("utf-8") + b"\n"
    if sudo is not None:
        prefix, password_line = sudo
        full, preamble = prefix + full, password_line + preamble
    return full, preamble


def _passwordless(user: str) -> bool:
    """Whether sudo runs commands as `user` without asking for a password (its own session: no tty)."""
    probe = subprocess.run(
        ["sudo", "-n", "-u", user, "--", "true"],
        capture_output=True,
        start_new_session=True,
        timeout=30,
        check=False,
    )
    return probe.returncode == 0


def current_user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


class LocalConnection(Connection):
    is_local = True

    def __init__(self, host_name: str = "localhost", *, credentials: Credentials | None = None) -> None:
        self.host_name = host_name
        self._user = current_user()
        self.credentials = credentials or Credentials.from_environment()
        self._sudo = Sudo(self.credentials.become_password, _passwordless)

    def _needs_sudo(self, become: Become | None) -> bool:
        return become is not None and become.user != self._user

    def _wrapped(
        self, argv: list[str], become: Become | None, env: dict[str, str] | None
    ) -> tuple[list[str], bytes, dict[str, str] | None]:
        """argv as it runs (under sudo when `become` needs it), what its stdin must start with (the
        sudo password line, then the environment as one JSON line, since sudo resets it), and the
        environment to start it with."""
        if become is None or not self._needs_sudo(become):
            return list(argv), b"", env
        if shutil.which("sudo") is None:
            raise BecomeFailed(
                f"become to '{become.user}' needs sudo, which is not installed on {self.host_name}; "
                "install sudo or run sparkprov as that user"
            )
        full, preamble = command_with_preamble(argv, env, self._sudo.prefix(become.user))
        return full, preamble, None

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
        full, preamble, env = self._wrapped(argv, become, env)
        if preamble:
            stdin = preamble + (stdin or b"")
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
                # Its own session: a Ctrl-C at the terminal stops sparkprov scheduling new tasks
                # but lets the running command finish, instead of killing it half way.
                start_new_session=True,
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
        result = CommandResult(
            tuple(argv),
            completed.returncode,
            completed.stdout.decode("utf-8", "replace"),
            completed.stderr.decode("utf-8", "replace"),
            time.monotonic() - started,
        )
        self._check_become(result, become)
        return result

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

    # ------------------------------------------------------------ streaming

    def run_with_input(
        self,
        argv: list[str],
        source: ByteSource,
        *,
        timeout: float | None = None,
        become: Become | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        on_progress: OnBytes | None = None,
    ) -> CommandResult:
        """`run` with stdin fed from `source` in chunks through a pipe (see `Connection`)."""
        started = time.monotonic()
        proc = self._spawn(argv, become, cwd, env, stdin=True)
        if isinstance(proc, CommandResult):
            return proc
        process, preamble = proc
        with _Watchdog(process, timeout) as watchdog:
            out, err = _Drain(process.stdout), _Drain(process.stderr)
            try:
                _feed(process, preamble, chunks_of(source), on_progress)
            except BaseException:
                process.kill()
                raise
            finally:
                with suppress(OSError):
                    process.stdin.close()  # type: ignore[union-attr]
                process.wait()
                out.join()
                err.join()
        if watchdog.fired:
            raise CommandTimeout(f"command {argv[0]!r}", timeout or 0)
        result = CommandResult(
            tuple(argv), process.returncode, out.text(), err.text(), time.monotonic() - started
        )
        self._check_become(result, become)
        return result

    def stream_output(
        self,
        argv: list[str],
        *,
        timeout: float | None = None,
        become: Become | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Iterator[bytes]:
        """The command's stdout in chunks from a pipe (see `Connection`)."""
        started = time.monotonic()
        proc = self._spawn(argv, become, cwd, env, stdin=False)
        if isinstance(proc, CommandResult):
            raise CommandFailed(proc)
        process, preamble = proc
        with _Watchdog(process, timeout) as watchdog:
            err = _Drain(process.stderr)
            try:
                _feed(process, preamble, iter(()), None)
                stdout = process.stdout
                assert stdout is not None
                while chunk := stdout.read1(STREAM_CHUNK):  # type: ignore[attr-defined]
                    yield chunk
            except BaseException:  # GeneratorExit included: a consumer that stops early stops it
                process.kill()
                raise
            finally:
                process.wait()
                err.join()
        if watchdog.fired:
            raise CommandTimeout(f"command {argv[0]!r}", timeout or 0)
        result = CommandResult(tuple(argv), process.returncode, "", err.text(), time.monotonic() - started)
        self._check_become(result, become)
        if result.rc != 0:
            raise CommandFailed(result)

    def _spawn(
        self,
        argv: list[str],
        become: Become | None,
        cwd: str | None,
        env: dict[str, str] | None,
        *,
        stdin: bool,
    ) -> tuple[subprocess.Popen[bytes], bytes] | CommandResult:
        """Start argv with pipes (stdin only when asked, or when the environment must travel on it:
        under sudo it goes first on stdin); a CommandResult (127/126) when it cannot start."""
        full, preamble, env = self._wrapped(argv, become, env)
        self.round_trips += 1
        try:
            process = subprocess.Popen(
                full,
                stdin=subprocess.PIPE if stdin or preamble else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env={**os.environ, **env} if env else None,
            )
        except FileNotFoundError as exc:
            missing = cwd if cwd and not os.path.isdir(cwd) else argv[0]
            return CommandResult(tuple(argv), 127, "", f"{missing}: {exc.strerror}", 0.0)
        except PermissionError as exc:
            return CommandResult(tuple(argv), 126, "", f"{argv[0]}: {exc.strerror}", 0.0)
        return process, preamble

    def _check_become(self, result: CommandResult, become: Become | None) -> None:
        """sudo refusing to run the command (as opposed to the command failing) is BecomeFailed."""
        if become is not None and self._needs_sudo(become):
            check_sudo(
                result, user=become.user, login=self._user, host=self.host_name, credentials=self.credentials
            )


def _feed(
    process: subprocess.Popen[bytes], preamble: bytes, chunks: Iterator[bytes], on_progress: OnBytes | None
) -> None:
    """Write the preamble, then each chunk, to the process's stdin; a command that stopped reading
    (exited) ends the feeding quietly: its exit status says why."""
    pipe = process.stdin
    if pipe is None:
        return
    sent = 0
    try:
        if preamble:
            pipe.write(preamble)
        for chunk in chunks:
            pipe.write(chunk)
            sent += len(chunk)
            if on_progress is not None:
                on_progress(sent)
        pipe.close()
    except BrokenPipeError:
        return


class _Drain(threading.Thread):
    """Reads a pipe to its end in the background, keeping the last KEPT_OUTPUT_BYTES."""

    def __init__(self, pipe: IO[bytes] | None) -> None:
        super().__init__(daemon=True)
        self.pipe = pipe
        self.data = bytearray()
        self.start()

    def run(self) -> None:
        if self.pipe is None:
            return
        while chunk := self.pipe.read1(STREAM_CHUNK):  # type: ignore[attr-defined]
            self.data += chunk
            if len(self.data) > KEPT_OUTPUT_BYTES:
                del self.data[:-KEPT_OUTPUT_BYTES]

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


class _Watchdog:
    """Kills the process when `timeout` seconds pass; `fired` tells whether it did."""

    def __init__(self, process: subprocess.Popen[bytes], timeout: float | None) -> None:
        self.process = process
        self.fired = False
        self._timer = threading.Timer(timeout, self._kill) if timeout else None

    def _kill(self) -> None:
        self.fired = True
        self.process.kill()

    def __enter__(self) -> _Watchdog:
        if self._timer is not None:
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()

"""The one interface every transport (local, ssh) implements.

Modules and facts never touch the filesystem or spawn processes themselves: they go through a
`Connection`. File operations are expressed as agent operations (see `agent.py`) so that the same
code path serves the local machine, a sudo'd local helper and a remote host over SSH.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    rc: int
    stdout: str
    stderr: str
    duration_s: float


@dataclass(frozen=True)
class Become:
    """Privilege escalation for one call: sudo to `user` unless the connection already is that user."""

    user: str = "root"


class HostUnreachable(Exception):
    """The host cannot be reached or the transport broke; the host is marked unreachable."""


class BecomeFailed(Exception):
    """Privilege escalation was refused (no sudo, no sudo rights, a password needed); the task fails."""


class CommandTimeout(Exception):
    def __init__(self, what: str, timeout_s: float) -> None:
        super().__init__(f"{what} did not finish within {timeout_s:g}s and was stopped")
        self.what = what
        self.timeout_s = timeout_s


class CommandFailed(Exception):
    """A command whose output was being streamed exited non-zero (or was killed); `result` says how.
    Raised by `stream_output` once the stream ends, so that a consumer never takes a cut-off stream
    for a whole one."""

    def __init__(self, result: CommandResult) -> None:
        reason = result.stderr.strip()[-500:] or f"exit status {result.rc}"
        super().__init__(f"{' '.join(result.argv[:2])} failed: {reason}")
        self.result = result


# What `run_with_input` streams to a command's stdin: a binary file object (read in chunks) or an
# iterable of byte chunks (a generator, another command's `stream_output`...).
ByteSource = BinaryIO | Iterable[bytes]
# Called with the number of bytes passed on so far.
OnBytes = Callable[[int], None]
STREAM_CHUNK = 1024 * 1024


def chunks_of(source: ByteSource, size: int = STREAM_CHUNK) -> Iterator[bytes]:
    """The chunks of `source`, one at a time (a file is read `size` bytes at a time, never whole)."""
    if hasattr(source, "read"):  # before iterating: a file would iterate by lines
        return _read_chunks(source.read, size)
    return iter(source)


def _read_chunks(read: Callable[[int], bytes], size: int) -> Iterator[bytes]:
    while chunk := read(size):
        yield chunk


class AgentError(Exception):
    """A file operation failed on the host (permission denied, no such directory, disk full...)."""

    def __init__(self, op: str, path: str, message: str, errno: int | None = None) -> None:
        super().__init__(f"{op} {path}: {message}")
        self.op = op
        self.path = path
        self.message = message
        self.errno = errno


@dataclass
class FileState:
    """What `stat` found at a path (lstat unless asked to follow links)."""

    path: str
    exists: bool
    type: str = "absent"  # file | directory | link | other | absent
    mode: int | None = None  # permission bits only (0o7777)
    uid: int | None = None
    gid: int | None = None
    owner: str | None = None
    group: str | None = None
    size: int | None = None
    mtime: float | None = None
    atime: float | None = None
    link_target: str | None = None
    sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_agent(cls, data: dict[str, Any]) -> FileState:
        fields = cls.__dataclass_fields__
        known = {k: v for k, v in data.items() if k in fields and k != "extra"}
        return cls(**known, extra={k: v for k, v in data.items() if k not in fields})


class Connection(abc.ABC):
    """A host we can run commands on and move files to and from."""

    host_name: str
    # True when the host is this machine, so local APIs (the Docker SDK, HTTP to 127.0.0.1) reach it.
    is_local: bool = False
    # Exchanges with the host (a process started, a remote command); reported per host in JSON.
    round_trips: int = 0

    @abc.abstractmethod
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
        """Run argv without a shell (each argument passed as is) and wait for it."""

    @abc.abstractmethod
    def agent(self, ops: list[dict[str, Any]], *, become: Become | None = None) -> list[dict[str, Any]]:
        """Run a batch of agent operations on the host; one result dict per op, in order."""

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
        """`run`, with stdin streamed from `source` chunk by chunk (never held whole in memory);
        `on_progress(bytes_sent)` after each chunk. An exception raised by `source` stops the command
        and propagates. Transports that cannot stream raise NotImplementedError."""
        raise NotImplementedError(f"{type(self).__name__} cannot stream input to a command")

    def stream_output(
        self,
        argv: list[str],
        *,
        timeout: float | None = None,
        become: Become | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Iterator[bytes]:
        """Run argv and yield its stdout in chunks as they arrive; raises CommandFailed at the end when
        it exited non-zero. Closing the iterator early stops the command. Transports that cannot
        stream raise NotImplementedError."""
        raise NotImplementedError(f"{type(self).__name__} cannot stream a command's output")

    def open(self) -> None:  # noqa: B027 - optional hook
        """Connect now (transports that connect lazily); raises HostUnreachable."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the transport."""

    def round_trip_count(self) -> int:
        """Exchanges with the host so far (wrappers ask the transport they wrap)."""
        return self.round_trips

    def invalidate(self) -> None:  # noqa: B027 - optional hook
        """The host may have changed (a change was applied): forget anything cached about it."""

    # Convenience wrappers over `agent`: the single-op cases every module needs.

    def stat(self, path: str, *, checksum: bool = False, become: Become | None = None) -> FileState:
        return self.stat_many([path], checksum=checksum, become=become)[0]

    def stat_many(
        self, paths: list[str], *, checksum: bool = False, become: Become | None = None
    ) -> list[FileState]:
        results = self._agent_checked(
            [{"op": "stat", "path": p, "checksum": checksum} for p in paths], become=become
        )
        return [FileState.from_agent(r) for r in results]

    def get(self, path: str, *, max_bytes: int = 64 * 1024 * 1024, become: Become | None = None) -> bytes:
        import base64

        result = self._agent_checked([{"op": "read", "path": path, "max_bytes": max_bytes}], become=become)[0]
        return base64.b64decode(result["data_b64"])

    def put(
        self,
        path: str,
        data: bytes,
        *,
        mode: int | None = None,
        owner: str | None = None,
        group: str | None = None,
        backup: bool = False,
        become: Become | None = None,
    ) -> dict[str, Any]:
        """Write `data` to `path` atomically (temp file in the same dir, fsync, rename)."""
        import base64

        op = {
            "op": "write",
            "path": path,
            "data_b64": base64.b64encode(data).decode("ascii"),
            "mode": mode,
            "owner": owner,
            "group": group,
            "backup": backup,
        }
        return self._agent_checked([op], become=become)[0]

    def _agent_checked(self, ops: list[dict[str, Any]], *, become: Become | None) -> list[dict[str, Any]]:
        results = self.agent(ops, become=become)
        for op, result in zip(ops, results):
            if "error" in result:
                raise AgentError(op["op"], op.get("path", ""), result["error"], result.get("errno"))
        return results

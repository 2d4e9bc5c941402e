"""One round trip for a converged host: the file states every task of a play will check are
fetched in one batch, and checks read them from here.

Checks are read-only, so what was fetched stays true until a change is applied; the executor
calls `invalidate()` after every apply, and later checks go to the host again.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from sparkprov.connection.base import Become, ByteSource, CommandResult, Connection


class CachingConnection(Connection):
    def __init__(self, inner: Connection) -> None:
        self.inner = inner
        self.host_name = inner.host_name
        self.is_local = inner.is_local
        self._stats: dict[tuple[str, str, bool], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def round_trip_count(self) -> int:
        return self.inner.round_trip_count()

    def run(self, argv: list[str], **kwargs: Any) -> CommandResult:
        return self.inner.run(argv, **kwargs)

    def run_with_input(self, argv: list[str], source: ByteSource, **kwargs: Any) -> CommandResult:
        return self.inner.run_with_input(argv, source, **kwargs)

    def stream_output(self, argv: list[str], **kwargs: Any) -> Iterator[bytes]:
        return self.inner.stream_output(argv, **kwargs)

    def open(self) -> None:
        self.inner.open()

    def close(self) -> None:
        self.inner.close()

    def invalidate(self) -> None:
        with self._lock:
            self._stats.clear()
        self.inner.invalidate()

    def prefetch(self, requests: list[tuple[str, bool]], *, become: Become | None) -> None:
        """Stat these (path, wants checksum) pairs in one batch and keep the answers."""
        wanted = {path: checksum for path, checksum in requests}
        if not wanted:
            return
        ops = [{"op": "stat", "path": path, "checksum": checksum} for path, checksum in wanted.items()]
        answers = self.inner.agent(ops, become=become)
        with self._lock:
            for op, answer in zip(ops, answers):
                if "error" not in answer:
                    self._stats[(_user(become), str(op["path"]), bool(op["checksum"]))] = answer

    def _cached(self, op: dict[str, Any], become: Become | None) -> dict[str, Any] | None:
        if op["op"] != "stat" or op.get("follow"):
            return None
        user, path = _user(become), op["path"]
        with self._lock:
            found = self._stats.get((user, path, True))
            if found is None:
                found = self._stats.get((user, path, False))
                # Only files have a checksum: a directory or an absent path answers either request.
                if found is not None and op.get("checksum") and found.get("type") == "file":
                    found = None
        return None if found is None else dict(found)

    def agent(self, ops: list[dict[str, Any]], *, become: Become | None = None) -> list[dict[str, Any]]:
        answers: list[dict[str, Any] | None] = [self._cached(op, become) for op in ops]
        missing = [op for op, answer in zip(ops, answers) if answer is None]
        fetched = iter(self.inner.agent(missing, become=become) if missing else [])
        return [answer if answer is not None else next(fetched) for answer in answers]


def _user(become: Become | None) -> str:
    return become.user if become else ""

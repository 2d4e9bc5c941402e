"""One round trip for a converged host: the file states every task of a play will check are
fetched in one batch, and checks read them from here.

Checks are read-only, so what was fetched stays true until a change is applied; the executor
calls `invalidate()` after every apply, and later checks go to the host again.
"""

from __future__ import annotations

import threading
from typing import Any

from sparkprov.connection.base import Become, Connection
from sparkprov.executor.layer import ConnectionLayer


class CachingConnection(ConnectionLayer):
    def __init__(self, inner: Connection) -> None:
        super().__init__(inner)
        self._stats: dict[tuple[str, str, bool], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        with self._lock:
            self._stats.clear()
        super().invalidate()

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

    def answer(self, op: dict[str, Any], become: Become | None) -> dict[str, Any] | None:
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


def _user(become: Become | None) -> str:
    return become.user if become else ""

"""Plan mode sees the host as it will be, not as it is.

On a fresh host, "create directory /x" followed by "write /x/f" must plan as two creations, not as
a failure because /x does not exist yet. While planning, each pending file change is recorded
here, and later checks on the same host read these predicted states before the real host's.
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

from sparkprov.connection.base import Become, CommandResult, Connection


def is_file_ops(payload: Any) -> bool:
    return isinstance(payload, list) and all(isinstance(op, dict) and "op" in op for op in payload)


class PlannedConnection(Connection):
    def __init__(self, inner: Connection) -> None:
        self.inner = inner
        self.host_name = inner.host_name
        self._states: dict[str, dict[str, Any]] = {}
        self._contents: dict[str, bytes] = {}

    def run(self, argv: list[str], **kwargs: Any) -> CommandResult:
        return self.inner.run(argv, **kwargs)

    def close(self) -> None:
        self.inner.close()

    def agent(self, ops: list[dict[str, Any]], *, become: Become | None = None) -> list[dict[str, Any]]:
        answers: list[dict[str, Any] | None] = [self._predicted(op) for op in ops]
        missing = [op for op, answer in zip(ops, answers) if answer is None]
        real = iter(self.inner.agent(missing, become=become) if missing else [])
        return [answer if answer is not None else next(real) for answer in answers]

    def _known(self, path: str) -> dict[str, Any] | None:
        path = os.path.normpath(path)
        if path in self._states:
            return self._states[path]
        parent = os.path.dirname(path)
        while parent and parent != path:
            state = self._states.get(parent)
            if state is not None and not state["exists"]:
                return {"path": path, "exists": False, "type": "absent"}
            path, parent = parent, os.path.dirname(parent)
        return None

    def _predicted(self, op: dict[str, Any]) -> dict[str, Any] | None:
        state = self._known(op.get("path", ""))
        if state is None:
            return None
        if op["op"] == "stat":
            return {**state, "path": op["path"]}
        if op["op"] == "read" and op["path"] in self._contents:
            return {"data_b64": base64.b64encode(self._contents[op["path"]]).decode("ascii")}
        return None

    def record(self, ops: list[dict[str, Any]], *, become: Become | None = None) -> None:
        """Remember what applying these agent operations will leave on the host."""
        for op in ops:
            path = os.path.normpath(op["path"])
            kind = op["op"]
            if kind == "mkdir":
                self._mkdir(path, op)
            elif kind == "write":
                data = base64.b64decode(op["data_b64"])
                self._contents[path] = data
                self._set(path, "file", op, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
            elif kind == "touch" and not self._exists(path, become):
                self._set(path, "file", op, sha256=hashlib.sha256(b"").hexdigest(), size=0)
            elif kind == "link":
                self._set(path, "link", op, link_target=op["src"])
            elif kind == "remove":
                self._states[path] = {"path": path, "exists": False, "type": "absent"}
                self._contents.pop(path, None)
            elif kind == "attrs":
                self._update_attrs(path, op, become)

    def _exists(self, path: str, become: Become | None) -> bool:
        return bool(self.stat(path, become=become).exists)

    def _mkdir(self, path: str, op: dict[str, Any]) -> None:
        current = path
        created = []
        while current and current not in self._states and current != os.path.dirname(current):
            created.append(current)
            current = os.path.dirname(current)
        for directory in created:
            self._set(directory, "directory", op)

    def _set(self, path: str, kind: str, op: dict[str, Any], **extra: Any) -> None:
        self._states[path] = {
            "path": path,
            "exists": True,
            "type": kind,
            "mode": op.get("mode"),
            "owner": _name(op.get("owner")),
            "group": _name(op.get("group")),
            "uid": _number(op.get("owner")),
            "gid": _number(op.get("group")),
            **extra,
        }

    def _update_attrs(self, path: str, op: dict[str, Any], become: Become | None) -> None:
        base = self._states.get(path) or self.inner.agent([{"op": "stat", "path": path}], become=become)[0]
        updated = dict(base)
        if op.get("mode") is not None:
            updated["mode"] = op["mode"]
        for key, id_key in (("owner", "uid"), ("group", "gid")):
            if op.get(key) is not None:
                updated[key], updated[id_key] = _name(op[key]), _number(op[key])
        self._states[path] = updated


def _name(value: Any) -> str | None:
    return None if value is None else str(value)


def _number(value: Any) -> int | None:
    return int(value) if isinstance(value, int) or (isinstance(value, str) and value.isdigit()) else None

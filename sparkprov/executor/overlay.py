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

from sparkprov.connection.base import Become, Connection
from sparkprov.executor.layer import ConnectionLayer


def file_ops_of(payload: Any) -> list[dict[str, Any]]:
    """The agent file operations in a change's payload: the payload itself when it is a list of
    them (file, copy, template...), or its `file_ops` (modules that also run commands)."""
    if isinstance(payload, list) and all(isinstance(op, dict) and "op" in op for op in payload):
        return payload
    ops = getattr(payload, "file_ops", None)
    return ops if isinstance(ops, list) else []


class PlannedConnection(ConnectionLayer):
    def __init__(self, inner: Connection) -> None:
        super().__init__(inner)
        self._states: dict[str, dict[str, Any]] = {}
        self._contents: dict[str, bytes] = {}
        self._identities: dict[str, dict[str, Any]] = {}

    def answer(self, op: dict[str, Any], become: Become | None) -> dict[str, Any] | None:
        return self._walk(op, become) if op["op"] == "walk" else self._predicted(op)

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
                self._mkdir(path, op, become)
            elif kind == "write":
                data = base64.b64decode(op["data_b64"])
                self._contents[path] = data
                self._set(path, "file", op, become, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
            elif kind == "touch" and not self._current(path, become)["exists"]:
                self._set(path, "file", op, become, sha256=hashlib.sha256(b"").hexdigest(), size=0)
            elif kind == "link" and op.get("hard"):
                source = self._current(op["src"], become, checksum=True)
                self._set(path, "file", op, become, sha256=source.get("sha256"), size=source.get("size"))
            elif kind == "link":
                self._set(path, "link", op, become, link_target=op["src"])
            elif kind == "remove":
                self._states[path] = {"path": path, "exists": False, "type": "absent"}
                self._contents.pop(path, None)
            elif kind == "attrs":
                self._states[path] = {**self._current(path, become), **_attrs(op)}

    def _current(self, path: str, become: Become | None, *, checksum: bool = False) -> dict[str, Any]:
        """The state a later check would see: predicted if known, else the real host's."""
        op = {"op": "stat", "path": path, "checksum": checksum}
        return self._predicted(op) or self.inner.agent([op], become=become)[0]

    def _identity(self, become: Become | None) -> dict[str, Any]:
        """Who file operations run as (owner of new files) and their umask; asked once per user."""
        key = become.user if become else ""
        if key not in self._identities:
            self._identities[key] = self.inner.agent([{"op": "identity"}], become=become)[0]
        return self._identities[key]

    def _mkdir(self, path: str, op: dict[str, Any], become: Become | None) -> None:
        """`mkdir -p` creates the missing directories only; existing parents keep their attributes."""
        missing = []
        current = path
        while current != os.path.dirname(current) and not self._current(current, become)["exists"]:
            missing.append(current)
            current = os.path.dirname(current)
        for directory in missing:
            self._set(directory, "directory", op, become)

    def _set(self, path: str, kind: str, op: dict[str, Any], become: Become | None, **extra: Any) -> None:
        """A path the change creates or rewrites: attributes given, else kept, else the defaults."""
        existing = self._current(path, become)
        if existing["exists"] and existing["type"] == kind:
            base = {k: existing.get(k) for k in ("mode", "owner", "group", "uid", "gid")}
        else:
            identity = self._identity(become)
            full = 0o777 if kind == "directory" else 0o666
            base = {
                "mode": full & ~identity["umask"],
                "owner": identity["user"],
                "group": identity["group"],
                "uid": identity["uid"],
                "gid": identity["gid"],
            }
        self._states[path] = {"path": path, "exists": True, "type": kind, **base, **_attrs(op), **extra}

    def _walk(self, op: dict[str, Any], become: Become | None) -> dict[str, Any]:
        """The real tree under a path, with the paths pending changes create, alter or remove."""
        root = os.path.normpath(op["path"])
        known = self._known(root)
        if known is not None and not known["exists"]:
            return {"path": root, "entries": []}
        real = self.inner.agent([op], become=become)[0]
        entries = {e["path"]: e for e in real.get("entries", []) if self._known(e["path"]) is None}
        for path, state in self._states.items():
            if path.startswith(root + os.sep):
                entries[path] = state
        return {"path": root, "entries": [e for _, e in sorted(entries.items()) if e.get("exists", True)]}


def _attrs(op: dict[str, Any]) -> dict[str, Any]:
    """The attributes an agent operation sets explicitly."""
    found: dict[str, Any] = {}
    if op.get("mode") is not None:
        found["mode"] = op["mode"]
    for key, id_key in (("owner", "uid"), ("group", "gid")):
        value = op.get(key)
        if value is not None:
            found[key] = str(value)
            found[id_key] = int(value) if isinstance(value, int) or str(value).isdigit() else None
    return found

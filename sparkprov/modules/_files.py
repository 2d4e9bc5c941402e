"""What file, copy, template and lineinfile share: modes, ownership, and planning a file write."""

from __future__ import annotations

import hashlib
import re
import stat as stat_module
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparkprov.connection.base import AgentError, FileState
from sparkprov.modules.base import Change, Diff, ModuleFailure, Outcome, TaskContext
from sparkprov.resources import locate_source

MAX_DIFF_BYTES = 256 * 1024
_SYMBOLIC = re.compile(r"^([ugoa]*)([-+=])([rwxXst]*)$")
_WHO = {"u": 0o4700, "g": 0o2070, "o": 0o1007}


def parse_mode(mode: Any, current: int | None, is_dir: bool) -> int | None:
    """Ansible's `mode`: an int as YAML gave it, an octal string, or symbolic (u+rwx,g-w)."""
    if mode is None or mode == "preserve":
        return None
    if isinstance(mode, int):
        return mode
    text = str(mode).strip()
    if re.fullmatch(r"0?[0-7]{3,4}", text):
        return int(text, 8)
    result = current or 0
    for clause in text.split(","):
        match = _SYMBOLIC.match(clause)
        if not match:
            raise ModuleFailure(f"invalid mode '{mode}': expected octal ('0644') or symbolic ('u=rw,g=r')")
        who, op, perms = match.groups()
        result = _apply_clause(result, who or "ugo", op, perms, is_dir)
    return result


def _apply_clause(mode: int, who: str, op: str, perms: str, is_dir: bool) -> int:
    bits = 0
    mask = 0
    for person in "ugo" if "a" in who else who:
        mask |= _WHO[person]
        shift = {"u": 6, "g": 3, "o": 0}[person]
        for perm in perms:
            if perm == "r":
                bits |= 4 << shift
            elif perm == "w":
                bits |= 2 << shift
            elif perm == "x" or (perm == "X" and (is_dir or mode & 0o111)):
                bits |= 1 << shift
            elif perm == "s" and person in "ug":
                bits |= stat_module.S_ISUID if person == "u" else stat_module.S_ISGID
            elif perm == "t" and person == "o":
                bits |= stat_module.S_ISVTX
    if op == "+":
        return mode | bits
    if op == "-":
        return mode & ~bits
    return (mode & ~mask) | bits


def mode_text(mode: int | None) -> str:
    return "-" if mode is None else f"{mode:04o}"


@dataclass(frozen=True)
class Attrs:
    """Wanted mode/owner/group; None means "leave as it is"."""

    mode: Any = None
    owner: Any = None
    group: Any = None

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> Attrs:
        return cls(args.get("mode"), args.get("owner"), args.get("group"))

    def differences(self, state: FileState) -> dict[str, tuple[str, str]]:
        """{attribute: (current, wanted)} for each attribute that must change."""
        found: dict[str, tuple[str, str]] = {}
        wanted_mode = parse_mode(self.mode, state.mode, state.type == "directory")
        if wanted_mode is not None and wanted_mode != state.mode:
            found["mode"] = (mode_text(state.mode), mode_text(wanted_mode))
        if self.owner is not None and str(self.owner) not in (state.owner, str(state.uid)):
            found["owner"] = (str(state.owner), str(self.owner))
        if self.group is not None and str(self.group) not in (state.group, str(state.gid)):
            found["group"] = (str(state.group), str(self.group))
        return found

    def op_args(self, current: int | None, is_dir: bool) -> dict[str, Any]:
        return {"mode": parse_mode(self.mode, current, is_dir), "owner": self.owner, "group": self.group}


def attrs_diff(path: str, changes: dict[str, tuple[str, str]]) -> Diff:
    before = "".join(f"{k}: {old}\n" for k, (old, _) in changes.items())
    after = "".join(f"{k}: {new}\n" for k, (_, new) in changes.items())
    return Diff(path, before, after)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _as_text(data: bytes) -> str | None:
    if len(data) > MAX_DIFF_BYTES or b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def content_diff(
    ctx: TaskContext, path: str, state: FileState, new: bytes, before: bytes | None = None
) -> Diff:
    if before is None:
        before = b""
        if state.exists and state.type == "file" and ctx.want_diff and (state.size or 0) <= MAX_DIFF_BYTES:
            before = ctx.conn.get(path, become=ctx.become)
    old_text, new_text = _as_text(before), _as_text(new)
    if old_text is None or new_text is None:
        return Diff(path, f"<binary or large file, sha256 {state.sha256 or '-'}>\n", f"<{len(new)} bytes>\n")
    return Diff(path, old_text, new_text)


def plan_write(
    ctx: TaskContext,
    path: str,
    data: bytes,
    attrs: Attrs,
    *,
    state: FileState,
    backup: bool = False,
    force: bool = True,
    before: bytes | None = None,
) -> Change | None:
    """The change that makes `path` hold `data` with `attrs`, given its current `state` (and, when
    the caller already read it, its current content `before`)."""
    if state.type == "directory":
        raise ModuleFailure(f"{path} is a directory; give the full file name as destination")
    if state.exists and (state.sha256 == sha256(data) or not force):
        differences = attrs.differences(state)
        if not differences:
            return None
        ops = [{"op": "attrs", "path": path, **attrs.op_args(state.mode, False)}]
        summary = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in differences.items())
        return Change(f"{path}: {summary}", [attrs_diff(path, differences)], ops, {"path": path})
    mode = parse_mode(attrs.mode, state.mode if state.exists else 0o644, False)
    write = {
        "op": "write",
        "path": path,
        "data_b64": _b64(data),
        "mode": mode,
        "owner": attrs.owner,
        "group": attrs.group,
        "backup": backup and state.exists,
    }
    verb = "update" if state.exists else "create"
    summary = f"{verb} {path} ({len(data)} bytes{', mode ' + mode_text(mode) if mode is not None else ''})"
    return Change(
        summary, [content_diff(ctx, path, state, data, before)], [write], {"path": path, "dest": path}
    )


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")


def run_ops(change: Change, ctx: TaskContext) -> Outcome:
    """Apply a change whose payload is a list of agent operations."""
    results = ctx.conn.agent(change.payload, become=ctx.become)
    data = dict(change.data)
    for op, result in zip(change.payload, results):
        if "error" in result:
            raise ModuleFailure(str(AgentError(op["op"], op.get("path", ""), result["error"])))
        if "backup_file" in result:
            data["backup_file"] = result["backup_file"]
    return Outcome(changed=True, msg=change.summary, data=data)


def find_source(ctx: TaskContext, src: str, subdir: str) -> Path:
    path, tried = locate_source(ctx.search_dirs, src, subdir)
    if path is None:
        raise ModuleFailure(f"could not find '{src}' on the controller; looked in: {', '.join(tried)}")
    return path


def merge_file_changes(changes: list[Change]) -> Change | None:
    """One Change doing several file changes in order (their payloads are agent operations)."""
    if not changes:
        return None
    if len(changes) == 1:
        return changes[0]
    summary = f"{len(changes)} changes: " + "; ".join(c.summary for c in changes[:3])
    if len(changes) > 3:
        summary += "; ..."
    return Change(
        summary,
        [d for c in changes for d in c.diffs],
        [op for c in changes for op in c.payload],
        {k: v for c in changes for k, v in c.data.items()},
    )

"""lineinfile: ensure one line is present in (or absent from) a text file, as Ansible does it.

The edit mirrors ansible.builtin.lineinfile's present()/absent() on the file's bytes, line by line
(lines keep their endings, as `readlines()` gives them). The new content is then planned with
`plan_write`, so the diff, the backup and the atomic write are the ones every file module uses.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sparkprov.connection.base import FileState
from sparkprov.modules._files import Attrs, attrs_diff, plan_write, run_ops
from sparkprov.modules.base import Change, Module, ModuleFailure, Outcome, TaskContext

_MAX_LINK_HOPS = 40  # the kernel's own limit (ELOOP)

# A line matcher returns something truthy (a Match, or True for search_string) when a line matches.
Matcher = Callable[[bytes], "re.Match[bytes] | bool | None"]


@dataclass(frozen=True)
class _Request:
    """The arguments of one present() edit, as bytes and compiled patterns."""

    line: bytes
    matcher: Matcher | None
    anchor: re.Pattern[bytes] | None  # insertafter/insertbefore when it is a regex
    insertafter: str | None
    insertbefore: str | None
    backrefs: bool
    firstmatch: bool


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _compile(pattern: str, what: str) -> re.Pattern[bytes]:
    try:
        return re.compile(_b(pattern))
    except re.error as exc:
        raise ModuleFailure(f"invalid regular expression in '{what}' ({pattern!r}): {exc}") from None


def _matcher(args: dict[str, Any]) -> Matcher | None:
    if args.get("regexp") is not None:
        return _compile(args["regexp"], "regexp").search
    if args.get("search_string") is not None:
        needle = _b(args["search_string"])
        return lambda cur: needle in cur
    return None


def _request(args: dict[str, Any]) -> _Request:
    after, before = args.get("insertafter"), args.get("insertbefore")
    if after is None and before is None:
        after = "EOF"
    anchor = None
    if after not in (None, "BOF", "EOF"):
        anchor = _compile(after, "insertafter")
    elif before not in (None, "BOF"):
        anchor = _compile(before, "insertbefore")
    return _Request(
        line=_b(args["line"]),
        matcher=_matcher(args),
        anchor=anchor,
        insertafter=after,
        insertbefore=before,
        backrefs=bool(args.get("backrefs")),
        firstmatch=bool(args.get("firstmatch")),
    )


def _search(lines: list[bytes], req: _Request) -> tuple[int, re.Match[bytes] | bool | None]:
    """Where regexp/search_string matches: the last matching line, or the first with firstmatch."""
    index, match = -1, None
    if req.matcher is None:
        return index, match
    for lineno, cur in enumerate(lines):
        found = req.matcher(cur)
        if found:
            index, match = lineno, found
            if req.firstmatch:
                break
    return index, match


def _scan(lines: list[bytes], req: _Request) -> tuple[int, int]:
    """(last exact copy of the line, insertion point from the anchor), -1 when not found."""
    index, insert_at = -1, -1
    for lineno, cur in enumerate(lines):
        if cur.rstrip(b"\r\n") == req.line:
            index = lineno
        elif req.anchor is not None and req.anchor.search(cur):
            insert_at = lineno + 1 if req.insertafter is not None else lineno
            if req.firstmatch:
                break
    return index, insert_at


def edit_present(lines: list[bytes], req: _Request) -> str:
    """Ansible's present(): edit `lines` in place; return its msg ('' when nothing changed)."""
    index, match = _search(lines, req)
    insert_at = -1
    if not match:
        index, insert_at = _scan(lines, req)
    if index != -1:
        new = match.expand(req.line) if req.backrefs and isinstance(match, re.Match) else req.line
        if not new.endswith(b"\n"):
            new += b"\n"
        if lines[index] == new:
            return ""
        lines[index] = new
        return "line replaced"
    if req.backrefs:
        return ""  # without a match the backreferences cannot be filled in
    if "BOF" in (req.insertafter, req.insertbefore):
        at = 0
    elif req.insertafter == "EOF" or insert_at == -1:
        at = len(lines)
    else:
        # With firstmatch the scan stops at the anchor, before it could see the line right after it.
        neighbour = lines[insert_at - 1] if insert_at == len(lines) else lines[insert_at]
        if req.insertafter is not None and neighbour.rstrip(b"\r\n") == req.line:
            return ""
        at = insert_at
    # Ansible does this for EOF only; an anchor on an unterminated last line would otherwise be
    # glued to the new line ("lastline" + "line\n").
    if at == len(lines) and lines and not lines[-1].endswith((b"\n", b"\r")):
        lines[-1] += b"\n"
    lines.insert(at, req.line + b"\n")
    return "line added"


def edit_absent(lines: list[bytes], args: dict[str, Any]) -> int:
    """Ansible's absent(): drop every matching line from `lines`; return how many went."""
    matcher = _matcher(args)
    if matcher is None:
        wanted = _b(args["line"])

        def matcher(cur: bytes) -> bool:
            return cur.rstrip(b"\r\n") == wanted

    kept = [cur for cur in lines if not matcher(cur)]
    removed = len(lines) - len(kept)
    lines[:] = kept
    return removed


def _resolve(ctx: TaskContext, path: str) -> FileState:
    """Stat `path`, following symlinks as Ansible does (it edits the link's target, not the link)."""
    state = ctx.conn.stat(path, checksum=True, become=ctx.become)
    for _ in range(_MAX_LINK_HOPS):
        if state.type != "link" or state.link_target is None:
            return state
        target = os.path.normpath(os.path.join(os.path.dirname(state.path), state.link_target))
        state = ctx.conn.stat(target, checksum=True, become=ctx.become)
    raise ModuleFailure(f"{path}: too many levels of symbolic links; point it at a regular file")


def _attrs_msg(changed: dict[str, tuple[str, str]]) -> str:
    return " and ".join(changed) + " changed" if changed else ""


class LineInFileModule(Module):
    name = "lineinfile"

    def probe(self, args: dict[str, Any]) -> list[tuple[str, bool]]:
        return [(args["path"], True)]

    def check(self, args: dict[str, Any], ctx: TaskContext) -> Change | None:
        path = args["path"]
        state = _resolve(ctx, path)
        if state.type == "directory":
            raise ModuleFailure(f"{path} is a directory; lineinfile edits a file, give the file's path")
        absent = args.get("state") == "absent"
        if not state.exists and not absent and not args.get("create"):
            raise ModuleFailure(f"{path} does not exist; set 'create: true' to create it with just this line")
        original = ctx.conn.get(state.path, become=ctx.become) if state.exists else b""
        lines = io.BytesIO(original).readlines()
        extra: dict[str, Any] = {}
        if absent:
            extra["found"] = edit_absent(lines, args)
            msg = f"{extra['found']} line(s) removed" if extra["found"] else ""
        else:
            msg = edit_present(lines, _request(args))
        if not state.exists and not msg:
            return None  # absent from a missing file, or backrefs that matched nothing: nothing to create
        change = self._plan(ctx, state, original, b"".join(lines), args, msg)
        if change is not None:
            change.data.update(extra)
            if not state.exists:
                self._make_parent(ctx, change)
        return change

    def _plan(
        self, ctx: TaskContext, state: FileState, original: bytes, data: bytes, args: dict[str, Any], msg: str
    ) -> Change | None:
        attrs = Attrs.from_args(args)
        change = plan_write(
            ctx, state.path, data, attrs, state=state, backup=bool(args.get("backup")), before=original
        )
        if change is None:
            return None
        changed_attrs = attrs.differences(state) if state.exists else {}
        if msg and changed_attrs:
            change.diffs.append(attrs_diff(state.path, changed_attrs))
        msg = " and ".join(filter(None, [msg, _attrs_msg(changed_attrs)]))
        change.summary = f"{args['path']}: {msg}"
        change.data.update(msg=msg, backup="")
        return change

    @staticmethod
    def _make_parent(ctx: TaskContext, change: Change) -> None:
        """`create` makes missing parent directories too, as Ansible's does."""
        parent = os.path.dirname(change.data["path"])
        if parent and not ctx.conn.stat(parent, become=ctx.become).exists:
            change.payload.insert(0, {"op": "mkdir", "path": parent})

    def apply(self, change: Change, ctx: TaskContext) -> Outcome:
        outcome = run_ops(change, ctx)
        # Ansible's lineinfile names the backup `backup` (copy and template say `backup_file`).
        outcome.data["backup"] = outcome.data.pop("backup_file", "")
        outcome.msg = change.data["msg"]
        return outcome

    def predicted(self, change: Change, args: dict[str, Any]) -> Outcome:
        outcome = super().predicted(change, args)
        outcome.msg = change.data["msg"]
        return outcome

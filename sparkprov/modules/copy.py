"""ansible.builtin.copy: a file holds given `content` or a controller file's bytes (or a tree of them)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sparkprov.connection.base import FileState
from sparkprov.modules._files import Attrs, find_source, merge_file_changes, parse_mode, plan_write, run_ops
from sparkprov.modules.base import Change, Diff, Module, ModuleFailure, Outcome, TaskContext


def content_bytes(content: Any) -> bytes:
    """Ansible writes non-string content (mappings, lists, numbers) as JSON."""
    if isinstance(content, str):
        return content.encode("utf-8")
    return json.dumps(content).encode("utf-8")


class CopyModule(Module):
    name = "copy"

    def check(self, args: dict[str, Any], ctx: TaskContext) -> Change | None:
        dest = args["dest"]
        if "content" in args:
            return self._single(ctx, args, dest, content_bytes(args["content"]), None)
        source = find_source(ctx, args["src"], "files")
        if source.is_dir():
            return self._tree(ctx, args, source, dest)
        if dest.endswith("/"):
            dest = dest + source.name
        return self._single(
            ctx, args, dest, source.read_bytes(), source, make_parent=args["dest"].endswith("/")
        )

    def apply(self, change: Change, ctx: TaskContext) -> Outcome:
        return run_ops(change, ctx)

    def probe(self, args: dict[str, Any]) -> list[tuple[str, bool]]:
        dest = args["dest"]
        if dest.endswith("/") or args.get("src", "").endswith("/"):
            return []  # the target's name depends on the source: it is checked on its own
        return [(dest, True), (os.path.dirname(dest) or "/", False)]

    def unchanged(self, args: dict[str, Any], ctx: TaskContext) -> Outcome:
        return Outcome(changed=False, data={"dest": args["dest"]})

    def _single(
        self,
        ctx: TaskContext,
        args: dict[str, Any],
        dest: str,
        data: bytes,
        source: Path | None,
        *,
        make_parent: bool = False,
    ) -> Change | None:
        """One file. `make_parent`: dest was written as a directory ('dir/'), which Ansible creates."""
        state, parent = ctx.conn.stat_many(
            [dest, os.path.dirname(dest.rstrip("/")) or "/"], checksum=True, become=ctx.become
        )
        if state.type == "directory" or (state.type == "link" and dest.endswith("/")):
            if source is None:
                raise ModuleFailure(f"cannot write 'content' to {dest}: it is a directory; give a file name")
            dest = os.path.join(dest, source.name)
            state = ctx.conn.stat(dest, checksum=True, become=ctx.become)
        elif not parent.exists and make_parent:
            write = plan_write(ctx, dest, data, self._attrs(args, source), state=state)
            return merge_file_changes([self._mkdir(parent.path, args), *([write] if write else [])])
        elif not parent.exists:
            raise ModuleFailure(
                f"destination directory {parent.path} does not exist",
                hint="create it first with a 'file: state=directory' task, or end dest with '/'",
            )
        return plan_write(
            ctx,
            dest,
            data,
            self._attrs(args, source),
            state=state,
            backup=bool(args.get("backup")),
            force=args.get("force", True),
        )

    @staticmethod
    def _attrs(args: dict[str, Any], source: Path | None) -> Attrs:
        attrs = Attrs.from_args(args)
        if args.get("mode") == "preserve" and source is not None:
            return Attrs(source.stat().st_mode & 0o7777, attrs.owner, attrs.group)
        return attrs

    def _tree(self, ctx: TaskContext, args: dict[str, Any], source: Path, dest: str) -> Change | None:
        """Ansible's rule: 'src/' copies the directory's contents, 'src' the directory itself."""
        root = dest if args["src"].endswith("/") else os.path.join(dest, source.name)
        files = sorted(p for p in source.rglob("*") if p.is_file())
        dirs = sorted(
            {root, *(os.path.normpath(os.path.join(root, str(p.parent.relative_to(source)))) for p in files)}
        )
        targets = [os.path.join(root, str(p.relative_to(source))) for p in files]
        states = ctx.conn.stat_many(dirs + targets, checksum=True, become=ctx.become)
        dir_states: dict[str, FileState] = dict(zip(dirs, states[: len(dirs)]))
        changes = [self._mkdir(path, args) for path, state in dir_states.items() if not state.exists]
        for path, target, state in zip(files, targets, states[len(dirs) :]):
            change = plan_write(
                ctx,
                target,
                path.read_bytes(),
                self._attrs(args, path),
                state=state,
                backup=bool(args.get("backup")),
                force=args.get("force", True),
            )
            if change is not None:
                changes.append(change)
        return merge_file_changes([c for c in changes if c is not None])

    @staticmethod
    def _mkdir(path: str, args: dict[str, Any]) -> Change:
        mode = parse_mode(args.get("directory_mode"), None, True)
        op = {
            "op": "mkdir",
            "path": path,
            "owner": args.get("owner"),
            "group": args.get("group"),
            "mode": mode,
        }
        return Change(f"create directory {path}", [Diff(path, "state: absent\n", "state: directory\n")], [op])

"""ansible.builtin.file: a path is a directory, a file, a link, touched, or absent."""

from __future__ import annotations

from typing import Any

from sparkprov.connection.base import FileState
from sparkprov.modules._files import Attrs, attrs_diff, mode_text, run_ops
from sparkprov.modules.base import Change, Diff, Module, ModuleFailure, Outcome, TaskContext


class FileModule(Module):
    name = "file"

    def check(self, args: dict[str, Any], ctx: TaskContext) -> Change | None:
        path = args["path"]
        state = ctx.conn.stat(path, become=ctx.become)
        wanted = args.get("state") or self._default_state(args, state)
        handler = {
            "absent": self._absent,
            "directory": self._directory,
            "file": self._file,
            "touch": self._touch,
            "link": self._link,
            "hard": self._link,
        }[wanted]
        change = handler(args, state, ctx)
        if change is not None:
            change.data.setdefault("path", path)
            change.data.setdefault("state", wanted)
        return change

    def apply(self, change: Change, ctx: TaskContext) -> Outcome:
        return run_ops(change, ctx)

    def probe(self, args: dict[str, Any]) -> list[tuple[str, bool]]:
        return [(args["path"], False)]

    def unchanged(self, args: dict[str, Any], ctx: TaskContext) -> Outcome:
        return Outcome(changed=False, data={"path": args["path"], "state": args.get("state", "file")})

    @staticmethod
    def _default_state(args: dict[str, Any], state: FileState) -> str:
        if args.get("recurse"):
            return "directory"
        return "directory" if state.type == "directory" else "file"

    def _absent(self, args: dict[str, Any], state: FileState, ctx: TaskContext) -> Change | None:
        if not state.exists:
            return None
        path = args["path"]
        diff = Diff(path, f"state: {state.type}\n", "state: absent\n")
        return Change(f"remove {state.type} {path}", [diff], [{"op": "remove", "path": path}])

    def _directory(self, args: dict[str, Any], state: FileState, ctx: TaskContext) -> Change | None:
        path, attrs = args["path"], Attrs.from_args(args)
        if not state.exists:
            op = {"op": "mkdir", "path": path, **attrs.op_args(None, True)}
            if op["mode"] is None:
                op.pop("mode")
            after = "state: directory\n"
            summary = f"create directory {path}"
            if "mode" in op:
                after += f"mode: {mode_text(op['mode'])}\n"
                summary += f" (mode {mode_text(op['mode'])})"
            return Change(summary, [Diff(path, "state: absent\n", after)], [op])
        if state.type == "link" and ctx.conn.stat(path, become=ctx.become).type != "directory":
            raise ModuleFailure(f"{path} is a link to something that is not a directory")
        if state.type not in ("directory", "link"):
            raise ModuleFailure(f"{path} exists and is a {state.type}, not a directory; remove it first")
        return self._attributes(args, state, ctx, recurse=bool(args.get("recurse")))

    def _file(self, args: dict[str, Any], state: FileState, ctx: TaskContext) -> Change | None:
        path = args["path"]
        if not state.exists:
            raise ModuleFailure(
                f"file {path} is absent, cannot continue",
                hint="use 'state: touch' to create an empty file, or copy/template to write one",
            )
        return self._attributes(args, state, ctx)

    def _attributes(
        self, args: dict[str, Any], state: FileState, ctx: TaskContext, *, recurse: bool = False
    ) -> Change | None:
        attrs = Attrs.from_args(args)
        targets = [state]
        if recurse and any(v is not None for v in (attrs.mode, attrs.owner, attrs.group)):
            targets += [entry for entry in self._tree(args["path"], ctx) if entry.type != "link"]
        ops, diffs = [], []
        for target in targets:
            differences = attrs.differences(target)
            if differences:
                # A symbolic mode (u=rwX) is worked out per path: X differs for files and directories.
                ops.append(
                    {
                        "op": "attrs",
                        "path": target.path,
                        **attrs.op_args(target.mode, target.type == "directory"),
                    }
                )
                diffs.append(attrs_diff(target.path, differences))
        if not ops:
            return None
        summary = ", ".join(line.strip() for line in diffs[0].after.splitlines())
        if len(ops) > 1:
            summary = f"{len(ops)} paths under {args['path']}: {summary}"
        return Change(f"{args['path']}: {summary}", diffs, ops)

    @staticmethod
    def _tree(path: str, ctx: TaskContext) -> list[FileState]:
        result = ctx.conn.agent([{"op": "walk", "path": path}], become=ctx.become)[0]
        if "error" in result:
            raise ModuleFailure(f"cannot read the tree under {path}: {result['error']}")
        return [FileState.from_agent(entry) for entry in result["entries"]]

    def _touch(self, args: dict[str, Any], state: FileState, ctx: TaskContext) -> Change | None:
        path, attrs = args["path"], Attrs.from_args(args)
        mtime, atime = args.get("modification_time"), args.get("access_time")
        preserve = mtime == "preserve" and atime == "preserve"
        if state.exists and preserve:
            return self._attributes(args, state, ctx)
        op = {"op": "touch", "path": path, **attrs.op_args(state.mode, False)}
        if mtime or atime:
            op.update(
                mtime="preserve" if mtime == "preserve" else None,
                atime="preserve" if atime == "preserve" else None,
            )
        before = f"state: {state.type}\n"
        verb = "update times of" if state.exists else "create empty file"
        return Change(f"{verb} {path}", [Diff(path, before, "state: touch\n")], [op])

    def _link(self, args: dict[str, Any], state: FileState, ctx: TaskContext) -> Change | None:
        path, src = args["path"], args["src"]
        hard = args.get("state") == "hard"
        if hard:
            target = ctx.conn.stat(src, become=ctx.become)
            if not target.exists:
                raise ModuleFailure(f"cannot hard-link {path} to {src}: {src} does not exist")
            if state.exists and (state.extra.get("ino"), state.extra.get("dev")) == (
                target.extra.get("ino"),
                target.extra.get("dev"),
            ):
                return None
        elif state.type == "link" and state.link_target == src:
            return None
        if state.exists and state.type != "link" and not args.get("force"):
            raise ModuleFailure(
                f"cannot link: a {state.type} exists at {path}",
                hint="set 'force: true' to replace it with the link",
            )
        kind = "hard link" if hard else "symlink"
        before = f"{state.type}{' -> ' + state.link_target if state.link_target else ''}\n"
        op = {"op": "link", "path": path, "src": src, "hard": hard, "force": bool(args.get("force"))}
        return Change(f"{kind} {path} -> {src}", [Diff(path, before, f"link -> {src}\n")], [op])

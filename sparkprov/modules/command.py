"""ansible.builtin.command and ansible.builtin.shell: run something, guarded by creates/removes.

A command's effect cannot be predicted, so `check` reports "will run" unless a `creates`/`removes`
guard says it is not needed; `changed_when`/`failed_when` on the task refine the result after it ran.
"""

from __future__ import annotations

import datetime
import os
import re
import shlex
from typing import Any

from sparkprov.connection.base import CommandTimeout
from sparkprov.modules.base import Change, Module, ModuleFailure, Outcome, TaskContext

DEFAULT_COMMAND_TIMEOUT_S = 4 * 3600.0


def default_command_timeout() -> float:
    """No command runs forever: without a task `timeout:` it gets $SPARKPROV_COMMAND_TIMEOUT seconds
    (default 4 hours), then fails saying what it was running and for how long."""
    try:
        return float(os.environ.get("SPARKPROV_COMMAND_TIMEOUT", DEFAULT_COMMAND_TIMEOUT_S))
    except ValueError:
        return DEFAULT_COMMAND_TIMEOUT_S


def _exists(ctx: TaskContext, pattern: str) -> bool:
    if any(ch in pattern for ch in "*?["):
        script = 'for p in "$@"; do [ -e "$p" ] && exit 0; done; exit 1'
        # The shell expands the (quoted-in) pattern as a glob on the host; nothing else is evaluated.
        result = ctx.conn.run(
            ["/bin/sh", "-c", f"set -- {_glob_words(pattern)}; {script}"], become=ctx.become
        )
        return result.rc == 0
    return ctx.conn.stat(pattern, become=ctx.become).exists


def _glob_words(pattern: str) -> str:
    """Quote every part of a pattern except its glob characters."""
    parts = []
    for piece in re.split(r"([*?]|\[[^\]]*\])", pattern):
        if piece and (piece in "*?" or (piece.startswith("[") and piece.endswith("]"))):
            parts.append(piece)
        elif piece:
            parts.append(shlex.quote(piece))
    return "".join(parts)


class CommandModule(Module):
    name = "command"
    free_form = "cmd"

    def argv(self, args: dict[str, Any]) -> list[str]:
        if "argv" in args:
            return [str(a) for a in args["argv"]]
        try:
            return shlex.split(args["cmd"])
        except ValueError as exc:
            raise ModuleFailure(f"cannot split command {args['cmd']!r}: {exc}") from None

    def describe(self, args: dict[str, Any]) -> str:
        return args.get("cmd") or shlex.join(self.argv(args))

    def probe(self, args: dict[str, Any]) -> list[tuple[str, bool]]:
        guards = (args.get("creates"), args.get("removes"))
        return [(path, False) for path in guards if path and not any(ch in path for ch in "*?[")]

    def check(self, args: dict[str, Any], ctx: TaskContext) -> Change | None:
        creates, removes = args.get("creates"), args.get("removes")
        if creates and _exists(ctx, creates):
            return None
        if removes and not _exists(ctx, removes):
            return None
        command = self.describe(args)
        stdin = args.get("stdin")
        if stdin is not None and args.get("stdin_add_newline", True):
            stdin += "\n"
        payload = {
            "argv": self.argv(args),
            "stdin": stdin,
            "chdir": args.get("chdir"),
            "strip_empty_ends": args.get("strip_empty_ends", True),
        }
        return Change(f"run: {command}", payload=payload, data={"cmd": command})

    def apply(self, change: Change, ctx: TaskContext) -> Outcome:
        payload = change.payload
        started = datetime.datetime.now()
        try:
            result = ctx.conn.run(
                payload["argv"],
                stdin=payload["stdin"].encode("utf-8") if payload["stdin"] is not None else None,
                timeout=ctx.timeout if ctx.timeout is not None else default_command_timeout(),
                become=ctx.become,
                cwd=payload["chdir"],
                env=ctx.environment or None,
            )
        except CommandTimeout as exc:
            raise ModuleFailure(f"{change.summary}: {exc}") from None
        ended = datetime.datetime.now()
        strip = payload["strip_empty_ends"]
        stdout = result.stdout.rstrip("\r\n") if strip else result.stdout
        stderr = result.stderr.rstrip("\r\n") if strip else result.stderr
        data = {
            "cmd": change.data["cmd"],
            "rc": result.rc,
            "stdout": stdout,
            "stderr": stderr,
            "stdout_lines": stdout.splitlines(),
            "stderr_lines": stderr.splitlines(),
            "start": started.isoformat(sep=" "),
            "end": ended.isoformat(sep=" "),
            "delta": str(ended - started),
        }
        failed = result.rc != 0
        msg = f"non-zero return code {result.rc}" if failed else ""
        return Outcome(changed=True, failed=failed, msg=msg, data=data)

    def unchanged(self, args: dict[str, Any], ctx: TaskContext) -> Outcome:
        if args.get("creates"):
            guard = f"skipped, since {args['creates']} exists"
        else:
            guard = f"skipped, since {args.get('removes')} does not exist"
        data = {"cmd": self.describe(args), "rc": 0, "stdout": guard, "stderr": ""}
        return Outcome(changed=False, msg=guard, data={**data, "stdout_lines": [guard], "stderr_lines": []})

    def predicted(self, change: Change, args: dict[str, Any]) -> Outcome:
        return Outcome(changed=True, msg=change.summary, data={"cmd": change.data["cmd"]})


class ShellModule(CommandModule):
    name = "shell"

    def argv(self, args: dict[str, Any]) -> list[str]:
        return [args.get("executable", "/bin/sh"), "-c", args["cmd"]]

    def describe(self, args: dict[str, Any]) -> str:
        return str(args["cmd"])

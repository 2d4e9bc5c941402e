"""drop_caches: `sync; echo N > /proc/sys/vm/drop_caches`, reporting MemAvailable before and after.

On a DGX Spark the page cache competes with GPU allocations for the one unified memory pool, so the
course drops caches before loading big models. There is no state to converge to: the task always
acts when reached (the plan says so), and needs root. `check` finds out, read-only, whether the write
can work here (root, /proc/sys writable: not so in an unprivileged container), so a plan fails where
the apply would, with the same message.
"""

from __future__ import annotations

from typing import Any

from sparkprov.connection.base import CommandResult
from sparkprov.modules.base import Change, Module, ModuleFailure, Outcome, TaskContext

DROP_CACHES = "/proc/sys/vm/drop_caches"
MEMINFO = "/proc/meminfo"
LEVELS = {1: "page cache", 2: "dentries and inodes", 3: "page cache, dentries and inodes"}
_NOT_PERMITTED = ("Read-only file system", "Permission denied", "Operation not permitted")
# Read-only probe, run as the user the write will run as: its uid, and whether the file is writable.
_PROBE = f"id -u; if [ -w {DROP_CACHES} ]; then echo writable; else echo not-writable; fi"


def level_of(args: dict[str, Any]) -> int:
    raw = args.get("level", 3)
    try:
        level = 0 if isinstance(raw, bool) else int(raw)
    except (TypeError, ValueError):
        level = 0
    if level not in LEVELS:
        raise ModuleFailure(
            f"level must be 1, 2 or 3, got {raw!r}",
            hint="; ".join(f"{n}: {what}" for n, what in LEVELS.items()),
        )
    return level


def not_permitted(detail: str) -> ModuleFailure:
    return ModuleFailure(
        f"not permitted: {DROP_CACHES} is not writable here (running in a container?): {detail}",
        hint="run it on the host, or in a container started with --privileged (a writable /proc/sys)",
    )


def _needs_become(ctx: TaskContext, uid: str) -> ModuleFailure:
    who = f"become_user '{ctx.become.user}'" if ctx.become else "the connection user"
    return ModuleFailure(
        f"needs become: true (root): dropping caches writes {DROP_CACHES}, and {who} is uid {uid}",
        hint="add 'become: true' to the task or play (and leave become_user as root)",
    )


def _failure(result: CommandResult, what: str) -> str:
    return (result.stderr or result.stdout).strip() or f"{what} exited with {result.rc}"


def mem_available_kib(ctx: TaskContext) -> int:
    """MemAvailable from /proc/meminfo, in KiB."""
    for line in ctx.conn.get(MEMINFO).decode("ascii", "replace").splitlines():
        key, _, value = line.partition(":")
        if key == "MemAvailable":
            return int(value.split()[0])
    raise ModuleFailure(f"{MEMINFO} has no MemAvailable line (Linux 3.14 or later has it)")


def gib(kib: int) -> str:
    return f"{kib / 2**20:.1f} GiB"


class DropCachesModule(Module):
    name = "drop_caches"

    def check(self, args: dict[str, Any], ctx: TaskContext) -> Change | None:
        level = level_of(args)
        result = ctx.conn.run(["/bin/sh", "-c", _PROBE], become=ctx.become, timeout=ctx.timeout)
        lines = result.stdout.split()
        if result.rc != 0 or len(lines) != 2:
            raise ModuleFailure(f"cannot check {DROP_CACHES}: {_failure(result, 'the check')}")
        uid, writable = lines
        if uid != "0":
            raise _needs_become(ctx, uid)
        if writable != "writable":
            raise not_permitted("even root cannot write it (/proc/sys is read-only or restricted here)")
        return Change(f"sync; echo {level} > {DROP_CACHES}", payload=level, data={"level": level})

    def apply(self, change: Change, ctx: TaskContext) -> Outcome:
        level = int(change.payload)
        if level not in LEVELS:  # the payload is check's own; never let anything else reach the shell
            raise ModuleFailure(f"invalid drop_caches level {level!r}")
        before = mem_available_kib(ctx)
        result = ctx.conn.run(
            ["/bin/sh", "-c", f"sync && echo {level} > {DROP_CACHES}"], become=ctx.become, timeout=ctx.timeout
        )
        if result.rc != 0:
            detail = _failure(result, "sync && echo")
            if any(text in detail for text in _NOT_PERMITTED):
                raise not_permitted(detail)
            raise ModuleFailure(f"dropping caches failed: {detail}")
        after = mem_available_kib(ctx)
        data = {
            "level": level,
            "mem_available_before_kib": before,
            "mem_available_after_kib": after,
            "freed_kib": after - before,
        }
        return Outcome(changed=True, msg=f"MemAvailable {gib(before)} -> {gib(after)}", data=data)

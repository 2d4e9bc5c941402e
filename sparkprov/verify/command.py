"""`command`: run something on the host and judge its exit code and output.

    - name: docker is running
      command: {cmd: "systemctl is-active docker", expect: {stdout: active}}
    - name: the driver module is loaded
      command: {argv: [grep, -q, nvidia, /proc/modules]}        # expect rc 0 by default

`cmd` is a shell string (run with /bin/sh -c, pipes allowed); `argv` runs a program without a shell.
Measured: `rc`, `stdout` and `stderr` (with trailing newlines removed; reports show an excerpt).
"""

from __future__ import annotations

from typing import Any

from sparkprov.connection.base import CommandResult, CommandTimeout
from sparkprov.verify.base import Step, StepContext, StepResult, judge

EXCERPT_CHARS = 2000
DEFAULT_TIMEOUT_S = 120.0


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """The end of a long output (where errors and results usually are), marked as cut."""
    return text if len(text) <= limit else "..." + text[-(limit - 3) :]


def output_measurements(result: CommandResult) -> tuple[dict[str, Any], dict[str, Any]]:
    """(measured, shown) for a finished command: full outputs are judged, excerpts reported."""
    stdout, stderr = result.stdout.rstrip("\r\n"), result.stderr.rstrip("\r\n")
    measured = {"rc": result.rc, "stdout": stdout, "stderr": stderr}
    return measured, {"stdout": excerpt(stdout), "stderr": excerpt(stderr)}


class CommandStep(Step):
    name = "command"
    free_form = "cmd"
    default_expect = {"rc": 0}

    def run(self, args: dict[str, Any], ctx: StepContext) -> StepResult:
        expectations = self.expectations(args)
        argv = [str(a) for a in args["argv"]] if "argv" in args else ["/bin/sh", "-c", str(args["cmd"])]
        stdin = args.get("stdin")
        timeout = float(args.get("timeout") or ctx.timeout or DEFAULT_TIMEOUT_S)
        try:
            result = ctx.conn.run(
                argv,
                stdin=stdin.encode("utf-8") if isinstance(stdin, str) else None,
                timeout=timeout,
                become=ctx.become,
                cwd=args.get("chdir"),
                env=ctx.environment or None,
            )
        except CommandTimeout as exc:
            return StepResult.fail(f"on {ctx.host}: {exc}")
        measured, shown = output_measurements(result)
        return judge(expectations, measured, shown=shown, details={"argv": argv})

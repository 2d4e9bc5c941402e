"""Human output: live task lines (Ansible's layout), diffs, plan summary and the PLAY RECAP."""

from __future__ import annotations

import sys
import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, TextIO

import click

from sparkprov.executor.results import Mode, RunResult, Status, TaskResult, VerifyResult
from sparkprov.playbook.model import Play, Task
from sparkprov.report.masking import Masker
from sparkprov.units import human_bytes
from sparkprov.verify.base import StepStatus

if TYPE_CHECKING:
    from sparkprov.executor.journal import HostRecord, PendingHandler, RunRecord

_COLOURS = {
    Status.OK: "green",
    Status.CHANGED: "yellow",
    Status.FAILED: "red",
    Status.SKIPPED: "cyan",
    Status.UNREACHABLE: "red",
}

_VERIFY_COLOURS = {StepStatus.PASS: "green", StepStatus.FAIL: "red", StepStatus.SKIP: "cyan"}


PROGRESS_INTERVAL_S = 5.0
BAR_WIDTH = 30


def _amount(done: int, total: int | None) -> str:
    if total:
        return f"{human_bytes(done)} / {human_bytes(total)} ({100 * done / total:.0f}%)"
    return human_bytes(done)


def _short(value: Any, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class TextReporter:
    """Prints as results arrive; safe to call from the host threads."""

    def __init__(
        self,
        mode: Mode,
        *,
        show_diff: bool,
        masker: Masker,
        stream: TextIO | None = None,
        colour: bool | None = None,
    ) -> None:
        self.mode = mode
        self.show_diff = show_diff
        self.masker = masker
        self.stream = stream or sys.stdout
        self.colour = colour
        self._lock = threading.Lock()
        self._current: tuple[int, bool] | None = None
        self._interactive = self.stream.isatty()
        self._bar_open = False
        self._last_progress: dict[tuple[str, str], float] = {}

    def _echo(self, text: str = "", **style: Any) -> None:
        text = self.masker.text(text)
        click.echo(click.style(text, **style) if style else text, file=self.stream, color=self.colour)

    def play_started(self, play: Play, hosts: list[str]) -> None:
        with self._lock:
            self._current = None
            self._echo()
            self._echo(f"PLAY [{play.name}] " + "*" * max(3, 60 - len(play.name)), bold=True)
            if not hosts:
                self._echo("skipping: no hosts matched", fg="cyan")

    def _task_header(self, task: Task, name: str, handler: bool, kind: str = "") -> None:
        key = (id(task), handler)
        if self._current == key:
            return
        self._current = key
        kind = kind or ("RUNNING HANDLER" if handler else "TASK")
        title = f"{kind} [{name}]"
        self._echo()
        self._echo(title + " " + "*" * max(3, 60 - len(title)), bold=True)

    def task_finished(self, result: TaskResult) -> None:
        shown = result.censored() if result.task.no_log else result
        with self._lock:
            self._end_bar()
            self._task_header(result.task, result.name, result.handler)
            if shown.looped:
                for item in shown.items:
                    self._line(
                        item.status, shown.host, f"(item={_short(item.label)})", item.msg, item.pending
                    )
                    self._diffs(item.diffs)
                if not shown.items:
                    self._line(Status.SKIPPED, shown.host, "(empty loop)", "", False)
            else:
                item = shown.items[0]
                resumed = item.data.get("skip_reason") == "resumed"
                self._line(
                    item.status,
                    shown.host,
                    "",
                    item.msg,
                    item.pending,
                    verbose=shown.task.module == "debug",
                    word="skipped (resumed)" if resumed else None,
                )
                self._diffs(item.diffs)
            if shown.ignored:
                self._echo("...ignoring", fg="cyan")

    def verify_finished(self, result: VerifyResult) -> None:
        """`pass: [host]`, or `fail:`/`skip:` with the reason, under a VERIFY [step] header."""
        shown = result.shown()
        with self._lock:
            self._end_bar()
            self._task_header(shown.task, shown.name, False, kind="VERIFY")
            line = f"{shown.status.value}: [{shown.host}]"
            if shown.item is not None:
                line += f" => (item={_short(shown.item)})"
            if shown.status is not StepStatus.PASS and shown.step.reason:
                line += f" {'-' if shown.item is not None else '=>'} {shown.step.reason}"
            self._echo(line, fg=_VERIFY_COLOURS[shown.status])
            if shown.ignored:
                self._echo("...ignoring", fg="cyan")

    def progress(self, host: str, task: Task, what: str, done: int, total: int | None) -> None:
        """A bar redrawn in place on a terminal; otherwise a line at most every few seconds."""
        now = time.monotonic()
        key = (host, what)
        finished = total is not None and done >= total
        with self._lock:
            self._task_header(task, task.name, False)
            if not self._interactive:
                last = self._last_progress.get(key, 0.0)
                if not finished and now - last < PROGRESS_INTERVAL_S:
                    return
                self._last_progress[key] = now
                self._echo(f"  [{host}] {what}: {_amount(done, total)}")
                return
            bar = ""
            if total:
                filled = int(BAR_WIDTH * min(done, total) / total)
                bar = "[" + "#" * filled + "." * (BAR_WIDTH - filled) + "] "
            line = f"\r  [{host}] {_short(what, 60)} {bar}{_amount(done, total)}"
            self.stream.write(self.masker.text(line.ljust(110)) + ("\n" if finished else ""))
            self.stream.flush()
            self._bar_open = not finished

    def interrupted(self) -> None:
        """The first Ctrl-C: nothing new starts; what runs is waited for."""
        with self._lock:
            self._end_bar()
            self._echo()
            self._echo(
                "Interrupted: no new task starts; waiting for the running ones to finish "
                "(Ctrl-C again to stop now).",
                fg="yellow",
                bold=True,
            )

    def unfinished_run(self, run: RunRecord, dropped: list[tuple[str, PendingHandler]], resume: bool) -> None:
        """On stderr before an apply starts: the previous apply of this playbook on this inventory did
        not finish; what each host got done, and the handlers that will still run."""
        how = {
            "killed": "it was killed or crashed (no end was recorded)",
            "interrupted": "it was interrupted (Ctrl-C)",
        }.get(run.outcome, f"it ended ({run.outcome}) with work left")
        lines = [
            f"NOTE: the last apply of this playbook on this inventory did not finish: {how}; "
            f"started {_local_time(run.started)}, pid {run.pid}."
        ]
        lines += [f"  {host}: {_host_summary(record)}" for host, record in run.hosts.items()]
        lines += [
            f"  {host}: handler '{p.name}' (play {p.play + 1}) is no longer in the playbook or inventory: "
            "it will not run"
            for host, p in dropped
        ]
        if resume:
            lines.append(
                "Resuming: the tasks that run finished are skipped (tasks that register results or set "
                "facts run again); pending handlers run at the end of their play."
            )
        elif any(r.pending_handlers for r in run.hosts.values()):
            lines.append(
                "Pending handlers run at the end of their play. "
                "`sparkprov apply --resume` would also skip the tasks already done."
            )
        elif any(r.done for r in run.hosts.values()):
            lines.append("`sparkprov apply --resume` would skip the tasks already done.")
        for line in lines:
            click.echo(self.masker.text(line), err=True)

    def nothing_to_resume(self) -> None:
        click.echo("--resume: the last apply finished; nothing to resume, every task runs.", err=True)

    def _end_bar(self) -> None:
        """A bar that never reached 100% (the pull failed) must not swallow the next line."""
        if self._bar_open:
            self.stream.write("\n")
            self._bar_open = False

    def _line(
        self,
        status: Status,
        host: str,
        item: str,
        msg: str,
        pending: bool,
        verbose: bool = False,
        word: str | None = None,
    ) -> None:
        shown = "would change" if pending and status is Status.CHANGED else status.value
        if status is Status.FAILED:
            shown = "fatal" if not item else "failed"
        word = word or shown
        line = f"{word}: [{host}]"
        if item:
            line += f" => {item}"
        detail = (
            msg
            if (pending or verbose or status in (Status.FAILED, Status.UNREACHABLE, Status.CHANGED))
            else ""
        )
        if detail:
            line += f" {'=>' if not item else '-'} {detail}"
        self._echo(line, fg=_COLOURS[status])

    def _diffs(self, diffs: list[Any]) -> None:
        if not self.show_diff:
            return
        for diff in diffs:
            for line in diff.unified().splitlines():
                colour = "green" if line.startswith("+") else "red" if line.startswith("-") else None
                self._echo(line, fg=colour) if colour else self._echo(line)

    def finished(self, result: RunResult) -> None:
        self._verify_section(result)
        self._echo()
        self._echo("PLAY RECAP " + "*" * 50, bold=True)
        width = max((len(h) for h in result.stats), default=0)
        for host, stats in result.stats.items():
            colour = (
                "red" if stats.failures or stats.unreachable else ("yellow" if stats.changed else "green")
            )
            self._echo(
                f"{host.ljust(width)} : ok={stats.ok:<4} changed={stats.changed:<4} "
                f"unreachable={stats.unreachable:<4} failed={stats.failures:<4} skipped={stats.skipped:<4} "
                f"ignored={stats.ignored}",
                fg=colour,
            )
        self._summary(result)

    def _verify_section(self, result: RunResult) -> None:
        """One line per step and host: PASS/FAIL/SKIP, then expected vs measured (or the reason)."""
        if not result.verify:
            return
        self._echo()
        self._echo("VERIFY " + "*" * 54, bold=True)
        for verified in result.verify:
            shown = verified.shown()
            label = shown.name + (f" (item={_short(shown.item)})" if shown.item is not None else "")
            word = shown.status.name + (" (ignored)" if shown.ignored else "")
            line = f"{word} [{shown.host}] {label}"
            detail = shown.step.summary()
            self._echo(line + (f": {detail}" if detail else ""), fg=_VERIFY_COLOURS[shown.status])
        counts = {status: sum(1 for r in result.verify if r.status is status) for status in StepStatus}
        ignored = sum(1 for r in result.verify if r.ignored)
        self._echo(
            f"verify: {counts[StepStatus.PASS]} passed, {counts[StepStatus.FAIL] - ignored} failed, "
            f"{counts[StepStatus.SKIP]} skipped" + (f", {ignored} failed but ignored" if ignored else ""),
            bold=True,
            fg="red" if result.failed_verifications else None,
        )

    def _summary(self, result: RunResult) -> None:
        pending = result.pending
        if result.mode is Mode.APPLY:
            return
        self._echo()
        hosts = len({r.host for r in pending})
        if result.failed_hosts:
            failed = ", ".join(result.failed_hosts)
            self._echo(
                f"Incomplete: the run failed on {failed}; the hosts were not fully checked.",
                fg="red",
                bold=True,
            )
            if not pending:
                return
        if not pending and result.failed_verifications:
            count = len(result.failed_verifications)
            self._echo(
                f"No changes, but {count} verify step(s) failed (see VERIFY above).", fg="red", bold=True
            )
            return
        if not pending:
            self._echo("No changes. The hosts match the playbook.", fg="green", bold=True)
            return
        label = "Plan" if result.mode is Mode.PLAN else "Drift"
        self._echo(
            f"{label}: {len(pending)} task(s) would change on {hosts} host(s). "
            "Run `sparkprov apply` to apply them.",
            fg="yellow",
            bold=True,
        )


def _local_time(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    except ValueError:
        return iso


def _host_summary(record: HostRecord) -> str:
    """`3 task(s) done, last 'write config'; stopped while running 'nap'; handlers to run: restart`."""
    parts = [f"{len(record.done)} task(s) done" + (f", last '{record.last.name}'" if record.last else "")]
    if record.running is not None:
        parts.append(f"stopped while running '{record.running.name}'")
    if record.unreachable:
        parts.append("unreachable")
    pending = record.pending_handlers
    if pending:
        parts.append("handlers to run: " + ", ".join(p.name for p in pending))
    return "; ".join(parts)

"""Results of a run as values: per item, per task and host, per play, and the recap."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from sparkprov.modules.base import Diff
from sparkprov.playbook.model import Play, Task
from sparkprov.playbook.templating import UnknownResult
from sparkprov.verify.base import StepResult, StepStatus

NO_LOG_MESSAGE = (
    "the output has been hidden due to the fact that 'no_log: true' was specified for this result"
)


class Status(str, enum.Enum):
    OK = "ok"
    CHANGED = "changed"
    FAILED = "failed"
    SKIPPED = "skipped"
    UNREACHABLE = "unreachable"


class Mode(str, enum.Enum):
    APPLY = "apply"
    PLAN = "plan"
    VERIFY = "verify"


@dataclass
class ItemResult:
    """One execution of a module: the whole task, or one loop item."""

    status: Status
    msg: str = ""
    diffs: list[Diff] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    item: Any = None
    label: str | None = None
    pending: bool = False  # plan mode: a change is predicted (counts as pending)
    predicted: bool = False  # plan mode: the module did not really run, so its outputs are unknown
    attempts: int = 1
    duration_s: float = 0.0
    loop_vars: dict[str, Any] = field(default_factory=dict)  # loop_var, index_var, ansible_loop...

    def registered(self, name: str = "") -> dict[str, Any]:
        """The value Ansible would `register` for this result (outputs unknown when only planned)."""
        value: dict[str, Any] = UnknownResult(name, self.data) if self.predicted else dict(self.data)
        value.update(
            changed=self.status is Status.CHANGED,
            failed=self.status is Status.FAILED,
            skipped=self.status is Status.SKIPPED,
        )
        if self.msg:
            value.setdefault("msg", self.msg)
        if self.attempts > 1:
            value["attempts"] = self.attempts
        if self.item is not None or self.label is not None:
            value["item"] = self.item
            value.update(self.loop_vars)
        if self.pending:
            value["pending"] = True
        return value


@dataclass
class TaskResult:
    task: Task
    host: str
    status: Status
    items: list[ItemResult]
    looped: bool = False
    handler: bool = False
    ignored: bool = False  # failed, but ignore_errors let the host go on
    msg: str = ""
    duration_s: float = 0.0
    name: str = ""  # the task's name as rendered for this host ("install {{ pkg }}" -> "install jq")

    def __post_init__(self) -> None:
        self.name = self.name or self.task.name

    @property
    def pending(self) -> bool:
        return any(i.pending and i.status is Status.CHANGED for i in self.items)

    @property
    def diffs(self) -> list[Diff]:
        return [d for item in self.items for d in item.diffs]

    def registered(self) -> dict[str, Any]:
        name = self.task.register or self.task.name
        if not self.looped:
            return self.items[0].registered(name) if self.items else {"skipped": True, "changed": False}
        results = [i.registered(name) for i in self.items]
        return {
            "results": results,
            "changed": any(r["changed"] for r in results),
            "failed": any(r["failed"] for r in results),
            "skipped": bool(results) and all(r["skipped"] for r in results),
            "msg": "All items completed"
            if not any(r["failed"] for r in results)
            else "One or more items failed",
        }

    def censored(self) -> TaskResult:
        """The shape shown to people and written to reports for `no_log` tasks."""
        items = [
            ItemResult(
                i.status,
                NO_LOG_MESSAGE,
                [],
                {"censored": NO_LOG_MESSAGE},
                None,
                None,
                i.pending,
                attempts=i.attempts,
                duration_s=i.duration_s,
            )
            for i in self.items
        ]
        return TaskResult(
            self.task,
            self.host,
            self.status,
            items,
            self.looped,
            self.handler,
            self.ignored,
            NO_LOG_MESSAGE if self.msg else "",
            self.duration_s,
            self.name,
        )


@dataclass
class HostStats:
    ok: int = 0
    changed: int = 0
    failures: int = 0
    skipped: int = 0
    unreachable: int = 0
    ignored: int = 0
    rescued: int = 0

    def count(self, result: TaskResult) -> None:
        if result.status is Status.UNREACHABLE:
            self.unreachable += 1
        elif result.status is Status.FAILED and result.ignored:
            self.ignored += 1
        elif result.status is Status.FAILED:
            self.failures += 1
        elif result.status is Status.SKIPPED:
            self.skipped += 1
        else:
            self.ok += 1
            if result.status is Status.CHANGED:
                self.changed += 1


@dataclass
class PlayRun:
    play: Play
    hosts: list[str]
    results: list[TaskResult] = field(default_factory=list)


@dataclass
class VerifyResult:
    """One verification step on one host (one per loop item): expected vs measured and the verdict."""

    task: Task  # the verify entry; `task.module` is the step ("gpu", "http"...)
    host: str
    play: str
    name: str  # as rendered for this host
    step: StepResult
    duration_s: float = 0.0
    item: str | None = None  # the loop item's label
    ignored: bool = False  # failed, but ignore_errors: reported, not counted as a failure

    @property
    def status(self) -> StepStatus:
        return self.step.status

    @property
    def failed(self) -> bool:
        return self.step.status is StepStatus.FAIL and not self.ignored

    def censored(self) -> VerifyResult:
        """What people and reports see of a `no_log` step: the verdict, not the values."""
        hidden = StepResult(self.step.status, reason=NO_LOG_MESSAGE if self.step.reason else "")
        return VerifyResult(
            self.task, self.host, self.play, self.name, hidden, self.duration_s, None, self.ignored
        )

    def shown(self) -> VerifyResult:
        return self.censored() if self.task.no_log else self


@dataclass
class RunResult:
    mode: Mode
    plays: list[PlayRun] = field(default_factory=list)
    stats: dict[str, HostStats] = field(default_factory=dict)
    interrupted: bool = False
    aborted: bool = False  # Ctrl-C twice: tasks still running were not waited for (the CLI exits now)
    round_trips: dict[str, int] = field(default_factory=dict)  # per host: exchanges with the host
    verify: list[VerifyResult] = field(default_factory=list)

    @property
    def pending(self) -> list[TaskResult]:
        return [r for play in self.plays for r in play.results if r.pending]

    @property
    def failed_hosts(self) -> list[str]:
        return [h for h, s in self.stats.items() if s.failures or s.unreachable]

    @property
    def failed_verifications(self) -> list[VerifyResult]:
        return [r for r in self.verify if r.failed]

    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        if self.failed_hosts or self.failed_verifications:
            return 1
        if self.mode is Mode.PLAN and self.pending:
            return 2
        if self.mode is Mode.VERIFY and self.pending:
            return 1  # verify: drift from the declared state is a failed verification
        return 0

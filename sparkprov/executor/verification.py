"""Running one verify step of a play on one host: vars, loop items, `when`, rendering, the step.

Verify entries are `Task` values whose `module` is the step's name. They see the host's variables
as the play's tasks left them (registered results included) and are rendered the same way; what a
task's module does with `check`/`apply`, a step does with `run`, which only measures. The executor
decides when steps run (after the play's handlers; in apply and verify mode, never in plan mode).
"""

from __future__ import annotations

import time
from typing import Any

from sparkprov.connection.base import BecomeFailed, CommandTimeout, HostUnreachable
from sparkprov.executor.results import VerifyResult
from sparkprov.executor.task import (
    TaskFailure,
    TaskRunner,
    TaskSettings,
    _loop_vars,
    loop_items,
    rendered_args,
)
from sparkprov.playbook.model import Task
from sparkprov.playbook.templating import KnownAfterApply, Scope, TemplateError, evaluate_condition
from sparkprov.verify import get_step
from sparkprov.verify.base import StepContext, StepFailure, StepResult, StepStatus
from sparkprov.verify.expect import ExpectationError


class VerificationRunner:
    def __init__(self, settings: TaskSettings) -> None:
        self.settings = settings
        # Become, environment and timeout of a step are worked out exactly as a task's are.
        self._tasks = TaskRunner(settings)

    def run(self, task: Task, host: str, play: str, scope: Scope) -> list[VerifyResult]:
        """One result per loop item (one when the step has no loop)."""
        task_vars = {k: v for k, v in task.vars.items() if not self.settings.outranks_task_vars(k)}
        task_scope = scope.child(task_vars) if task_vars else scope
        name = TaskRunner._name(task, task_scope)
        started = time.monotonic()
        try:
            items = loop_items(task, task_scope)
        except (TaskFailure, KnownAfterApply) as exc:
            only = _unknown(exc) if isinstance(exc, KnownAfterApply) else StepResult.fail(str(exc))
            return [self._result(task, host, play, name, only, started, task_scope)]
        if items is None:
            return [self._result(task, host, play, name, self._item(task, task_scope), started, task_scope)]
        results = []
        for index, item in enumerate(items):
            if index and task.loop_control.pause:
                self.settings.sleep(task.loop_control.pause)
            item_scope = task_scope.child(_loop_vars(task, items, index))
            started = time.monotonic()
            outcome = self._item(task, item_scope)
            label = TaskRunner._label(task, item_scope, item)
            results.append(self._result(task, host, play, name, outcome, started, item_scope, label))
        return results

    def _result(
        self,
        task: Task,
        host: str,
        play: str,
        name: str,
        step: StepResult,
        started: float,
        scope: Scope,
        item: str | None = None,
    ) -> VerifyResult:
        ignored = step.status is StepStatus.FAIL and TaskRunner._ignored(task, scope)
        duration = time.monotonic() - started
        return VerifyResult(task, host, play, name, step, duration, item, ignored)

    def _item(self, task: Task, scope: Scope) -> StepResult:
        try:
            if task.when and not evaluate_condition(task.when, scope):
                return StepResult.skip("Conditional result was False", skip_reason="when")
            args = self._args(task, scope)
            context = self._tasks._context(task, scope)
            ctx = StepContext(
                conn=context.conn,
                become=context.become,
                scope=scope,
                timeout=context.timeout,
                environment=context.environment,
                sleep=self.settings.sleep,
            )
            return get_step(task.module).run(args, ctx)
        except KnownAfterApply as exc:
            return _unknown(exc)
        except TemplateError as exc:
            return StepResult.fail(f"cannot evaluate verify step '{task.name}' ({task.place}): {exc}")
        except (TaskFailure, StepFailure, ExpectationError, CommandTimeout, BecomeFailed) as exc:
            return StepResult.fail(str(exc))
        except HostUnreachable as exc:
            return StepResult.fail(f"host unreachable: {exc}")

    @staticmethod
    def _args(task: Task, scope: Scope) -> dict[str, Any]:
        schema = f"verify/{task.module}"
        return rendered_args(task, scope, schema, f"verify step '{task.module}' of '{task.name}'")


def _unknown(exc: KnownAfterApply) -> StepResult:
    return StepResult.skip(f"known after apply: uses {exc.what}, the output of a task this run did not apply")

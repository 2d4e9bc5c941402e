"""Running one task on one host: loop items, `when`, rendering, check/apply, retries, overrides.

The module's `check` decides what would change; in plan mode the Change is reported, in apply
mode that same Change is applied. Nothing here knows what a module does inside.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparkprov.connection.base import Become, BecomeFailed, CommandTimeout, Connection
from sparkprov.errors import describe_value
from sparkprov.executor.overlay import PlannedConnection, file_ops_of
from sparkprov.executor.results import ItemResult, Status, TaskResult
from sparkprov.modules import get_module
from sparkprov.modules.base import Module, ModuleFailure, Outcome, TaskContext
from sparkprov.playbook.model import Task
from sparkprov.playbook.schema import coerce, validate
from sparkprov.playbook.templating import (
    KnownAfterApply,
    Scope,
    TemplateError,
    evaluate_condition,
    is_template,
    render,
    truthy,
)

OMIT = "__omit_place_holder__sparkprov"
MAX_DELAY_S = 300.0


@dataclass
class TaskSettings:
    """What the host run tells each task: mode, play defaults, where files are looked up."""

    conn: Connection
    check_mode: bool
    want_diff: bool
    play_become: Any
    play_become_user: str
    play_environment: dict[str, Any]
    search_dirs: tuple[Path, ...]
    # Extra vars and the host's registered/set_fact values outrank task vars (Ansible's precedence).
    outranks_task_vars: Callable[[str], bool] = lambda key: False
    progress: Callable[[Task, str, int, int | None], None] = lambda task, what, done, total: None
    secret: Callable[[str], None] = lambda value: None
    sleep: Callable[[float], None] = time.sleep
    peer: Callable[[str], Connection] | None = None  # another inventory host's connection, by name


class TaskFailure(Exception):
    """The task cannot even start (bad loop, undefined variable...): fail it with this message."""


def _where(task: Task) -> str:
    return f"task '{task.name}' ({task.place})"


def _template_failure(exc: TemplateError, task: Task, what: str) -> TaskFailure:
    if exc.variable:
        return TaskFailure(f"undefined variable '{exc.variable}' in {what} of {_where(task)}: {exc}")
    return TaskFailure(f"cannot evaluate {what} of {_where(task)}: {exc}")


def loop_items(task: Task, scope: Scope) -> list[Any] | None:
    if task.loop is None:
        return None
    raw = task.loop
    kind = "loop"
    if isinstance(raw, dict) and len(raw) == 1 and next(iter(raw)).startswith("__with_"):
        kind, raw = next(iter(raw.items()))
    try:
        value = render(raw, scope)
    except TemplateError as exc:
        raise _template_failure(exc, task, "the loop") from None
    if kind == "__with_dict__":
        if not isinstance(value, dict):
            raise TaskFailure(f"with_dict of {_where(task)} needs a mapping, got {describe_value(value)}")
        return [{"key": k, "value": v} for k, v in value.items()]
    if kind == "__with_items__" and not isinstance(value, (list, tuple)):
        return [value]  # Ansible's with_items treats a single value as a one-item list
    if isinstance(value, str):
        raise TaskFailure(f"loop of {_where(task)} must be a list, got {describe_value(value)}")
    if not isinstance(value, (list, tuple)):
        raise TaskFailure(f"loop of {_where(task)} must be a list, got {describe_value(value)}")
    if kind == "__with_items__":
        return [x for v in value for x in (v if isinstance(v, list) else [v])]
    return list(value)


def _loop_vars(task: Task, items: list[Any], index: int) -> dict[str, Any]:
    control = task.loop_control
    values: dict[str, Any] = {control.loop_var: items[index], "ansible_loop_var": control.loop_var}
    if control.index_var:
        values[control.index_var] = index
        values["ansible_index_var"] = control.index_var
    if control.extended:
        size = len(items)
        values["ansible_loop"] = {
            "allitems": items,
            "index": index + 1,
            "index0": index,
            "revindex": size - index,
            "revindex0": size - index - 1,
            "first": index == 0,
            "last": index == size - 1,
            "length": size,
            "previtem": items[index - 1] if index > 0 else None,
            "nextitem": items[index + 1] if index < size - 1 else None,
        }
    return values


class TaskRunner:
    def __init__(self, settings: TaskSettings) -> None:
        self.settings = settings

    def run(self, task: Task, host: str, scope: Scope, *, handler: bool = False) -> TaskResult:
        started = time.monotonic()
        task_vars = {k: v for k, v in task.vars.items() if not self.settings.outranks_task_vars(k)}
        task_scope = scope.child(task_vars) if task_vars else scope
        try:
            items = loop_items(task, task_scope)
        except (TaskFailure, KnownAfterApply) as exc:
            only = (
                self._known_after_apply(task, exc)
                if isinstance(exc, KnownAfterApply)
                else (ItemResult(Status.FAILED, str(exc)))
            )
            return TaskResult(
                task,
                host,
                only.status,
                [only],
                handler=handler,
                msg=only.msg,
                duration_s=time.monotonic() - started,
            )
        if items is None:
            results = [self._run_item(task, task_scope)]
        else:
            results = []
            for index, item in enumerate(items):
                if index and task.loop_control.pause:
                    self.settings.sleep(task.loop_control.pause)
                loop_vars = _loop_vars(task, items, index)
                item_scope = task_scope.child(loop_vars)
                result = self._run_item(task, item_scope)
                result.item = item
                result.loop_vars = loop_vars
                result.label = self._label(task, item_scope, item)
                results.append(result)
        status = _overall(results)
        name = self._name(task, task_scope)
        msg = results[0].msg if len(results) == 1 else ""
        return TaskResult(
            task,
            host,
            status,
            results,
            looped=items is not None,
            handler=handler,
            msg=msg,
            ignored=status is Status.FAILED and self._ignored(task, task_scope),
            duration_s=time.monotonic() - started,
            name=name,
        )

    @staticmethod
    def _name(task: Task, scope: Scope) -> str:
        """Ansible templates task names; one that cannot be rendered yet is shown as written."""
        if task.generated_name or not is_template(task.name):
            return task.name
        try:
            return str(render(task.name, scope))
        except (TemplateError, KnownAfterApply):
            return task.name

    @staticmethod
    def _label(task: Task, scope: Scope, item: Any) -> str:
        if task.loop_control.label is None:
            return str(item)
        try:
            return str(render(task.loop_control.label, scope))
        except TemplateError:
            return str(item)

    @staticmethod
    def _ignored(task: Task, scope: Scope) -> bool:
        try:
            return truthy(render(task.ignore_errors, scope))
        except TemplateError:
            return False

    def _run_item(self, task: Task, scope: Scope) -> ItemResult:
        started = time.monotonic()
        try:
            if task.when and not evaluate_condition(task.when, scope):
                return ItemResult(
                    Status.SKIPPED, "Conditional result was False", data={"skip_reason": "when"}
                )
            result = self._attempts(task, scope)
        except TaskFailure as exc:
            result = ItemResult(Status.FAILED, str(exc))
        except KnownAfterApply as exc:
            result = self._known_after_apply(task, exc)
        except TemplateError as exc:
            result = ItemResult(Status.FAILED, str(_template_failure(exc, task, "a condition")))
        result.duration_s = time.monotonic() - started
        return result

    def probe(self, task: Task, scope: Scope) -> list[tuple[str, bool, Become | None]]:
        """The paths this task's checks will stat (for every loop item), when they can already be
        worked out; tasks that depend on earlier results are simply left to fetch their own."""
        module = get_module(task.module)
        task_scope = scope.child(task.vars) if task.vars else scope
        try:
            items = loop_items(task, task_scope)
            scopes = (
                [task_scope]
                if items is None
                else [task_scope.child(_loop_vars(task, items, i)) for i in range(len(items))]
            )
            found: list[tuple[str, bool, Become | None]] = []
            for item_scope in scopes:
                args = render(task.args, item_scope)
                become = self._context(task, item_scope).become
                found.extend(
                    (path, checksum, become) for path, checksum in module.probe(args) if isinstance(path, str)
                )
            return found
        except Exception:  # a probe is only an optimisation: the check itself reports real errors
            return []

    @staticmethod
    def _known_after_apply(task: Task, exc: KnownAfterApply) -> ItemResult:
        msg = f"known after apply: uses {exc.what}, the output of a task plan does not run"
        if get_module(task.module).controller_only:
            return ItemResult(Status.OK, msg, predicted=True)
        return ItemResult(Status.CHANGED, msg, pending=True, predicted=True)

    def _attempts(self, task: Task, scope: Scope) -> ItemResult:
        module = get_module(task.module)
        retries = int(render(task.retries, scope)) if task.retries is not None else 0
        attempts = 1 + retries
        delay = float(render(task.delay, scope))
        backoff = float(render(task.backoff, scope))
        for attempt in range(1, attempts + 1):
            result = self._once(task, module, scope)
            result.attempts = attempt
            if result.predicted or self._done(task, scope, result):
                return result
            if attempt < attempts:
                # A flaky pull gets more time each try: delay, delay*backoff, ... capped at MAX_DELAY_S.
                self.settings.sleep(min(delay * backoff ** (attempt - 1), MAX_DELAY_S))
        if task.until:
            result.status = Status.FAILED
            result.msg = f"retried {attempts} times, 'until' condition never held: {result.msg}".rstrip(": ")
        elif attempts > 1:
            result.msg = f"failed {attempts} times: {result.msg}"
        return result

    @staticmethod
    def _done(task: Task, scope: Scope, result: ItemResult) -> bool:
        """`until` decides; without it (retries alone, as in Ansible) a result that did not fail."""
        if not task.until:
            return result.status is not Status.FAILED
        check_scope = scope.child({task.register: result.registered()} if task.register else {})
        return result.status is not Status.FAILED and evaluate_condition(task.until, check_scope)

    def _context(self, task: Task, scope: Scope) -> TaskContext:
        settings = self.settings
        become_flag = task.become if task.become is not None else settings.play_become
        become = None
        if truthy(render(become_flag, scope)):
            become = Become(str(render(task.become_user or settings.play_become_user, scope)))
        environment = render({**settings.play_environment, **task.environment}, scope)
        return TaskContext(
            conn=settings.conn,
            become=become,
            scope=scope,
            search_dirs=settings.search_dirs,
            want_diff=settings.want_diff,
            timeout=float(render(task.timeout, scope)) if task.timeout is not None else None,
            environment={str(k): str(v) for k, v in environment.items()},
            progress=lambda what, done, total: settings.progress(task, what, done, total),
            secret=settings.secret,
            peer=settings.peer,
        )

    def _args(self, task: Task, scope: Scope) -> dict[str, Any]:
        return rendered_args(
            task, scope, f"modules/{task.module}", f"module '{task.module}' of task '{task.name}'"
        )

    def _once(self, task: Task, module: Module, scope: Scope) -> ItemResult:
        try:
            args = self._args(task, scope)
            ctx = self._context(task, scope)
        except TemplateError as exc:
            raise _template_failure(exc, task, "task keywords") from None
        check_only = self.settings.check_mode if task.check_mode is None else task.check_mode
        try:
            change = module.check(args, ctx)
            if change is None:
                outcome, pending = module.unchanged(args, ctx), False
            elif check_only:
                outcome, pending = module.predicted(change, args), True
                if isinstance(ctx.conn, PlannedConnection):
                    ctx.conn.record(file_ops_of(change.payload), become=ctx.become)
            else:
                try:
                    outcome, pending = module.apply(change, ctx), False
                finally:
                    ctx.conn.invalidate()  # what checks fetched before may no longer be true
        except ModuleFailure as exc:
            return ItemResult(Status.FAILED, str(exc), data=dict(exc.data))
        except (CommandTimeout, BecomeFailed) as exc:
            return ItemResult(Status.FAILED, f"{_where(task)}: {exc}")
        diffs = change.diffs if change is not None and self.settings.want_diff else []
        return self._overrides(task, scope, outcome, pending, diffs)

    def _overrides(
        self, task: Task, scope: Scope, outcome: Outcome, pending: bool, diffs: list[Any]
    ) -> ItemResult:
        """Apply changed_when / failed_when, which see the result under its `register` name."""
        status = Status.FAILED if outcome.failed else (Status.CHANGED if outcome.changed else Status.OK)
        result = ItemResult(
            status, outcome.msg, diffs, dict(outcome.data), pending=pending, predicted=pending
        )
        if task.changed_when is None and task.failed_when is None:
            return result
        if pending:
            # The command has not run: only a constant changed_when can be honoured in a plan.
            if task.changed_when is not None and all(isinstance(c, bool) for c in task.changed_when):
                result.status = Status.CHANGED if all(task.changed_when) else Status.OK
                result.pending = result.status is Status.CHANGED
            return result
        check_scope = scope.child({task.register: result.registered()} if task.register else {})
        if task.failed_when is not None:
            failed = evaluate_condition(task.failed_when, check_scope)  # a list means all must hold
            result.status = Status.FAILED if failed else (Status.CHANGED if outcome.changed else Status.OK)
            if not failed and outcome.failed:
                result.msg = ""
        if task.changed_when is not None and result.status is not Status.FAILED:
            result.status = (
                Status.CHANGED if evaluate_condition(task.changed_when, check_scope) else Status.OK
            )
        return result


def _overall(results: list[ItemResult]) -> Status:
    statuses = {r.status for r in results}
    if Status.FAILED in statuses:
        return Status.FAILED
    if Status.CHANGED in statuses:
        return Status.CHANGED
    if statuses == {Status.SKIPPED} or not results:
        return Status.SKIPPED
    return Status.OK


def rendered_args(task: Task, scope: Scope, schema: str, what: str) -> dict[str, Any]:
    """The task's arguments rendered for this host, `omit` dropped, coerced to the schema's types
    and validated against it (a TaskFailure names every problem and the task's place)."""
    try:
        args = render(task.args, scope)
    except TemplateError as exc:
        raise _template_failure(exc, task, "the arguments") from None
    args = coerce({k: v for k, v in args.items() if v != OMIT}, schema)
    problems = validate(args, schema, root=None, base_path=[], fallback=task.place, what=what)
    if problems:
        raise TaskFailure(
            "; ".join(f"{p.message}{' (' + p.hint + ')' if p.hint else ''}" for p in problems)
            + f" [{task.place}]"
        )
    return args

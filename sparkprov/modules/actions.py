"""Controller-side actions Ansible playbooks use everywhere: debug, set_fact, assert, fail.

They touch no host, so they are never a pending change; they report through `unchanged`.
"""

from __future__ import annotations

from typing import Any

from sparkprov.modules.base import Change, Module, ModuleFailure, Outcome, TaskContext
from sparkprov.playbook.templating import evaluate, evaluate_condition


class _Action(Module):
    controller_only = True

    def check(self, args: dict[str, Any], ctx: TaskContext) -> Change | None:
        return None

    def apply(self, change: Change, ctx: TaskContext) -> Outcome:  # pragma: no cover - never pending
        raise AssertionError(f"{self.name} never returns a change")


class DebugAction(_Action):
    name = "debug"

    def unchanged(self, args: dict[str, Any], ctx: TaskContext) -> Outcome:
        if "var" in args:
            name = str(args["var"])
            value = evaluate(name, ctx.scope)
            return Outcome(changed=False, msg=f"{name}: {value!r}", data={name: value})
        message = args.get("msg", "Hello world!")
        return Outcome(changed=False, msg=str(message), data={"msg": message})


class SetFactAction(_Action):
    name = "set_fact"

    def unchanged(self, args: dict[str, Any], ctx: TaskContext) -> Outcome:
        facts = {k: v for k, v in args.items() if k != "cacheable"}
        return Outcome(changed=False, data={"ansible_facts": facts})


class AssertAction(_Action):
    name = "assert"

    def unchanged(self, args: dict[str, Any], ctx: TaskContext) -> Outcome:
        conditions = args["that"] if isinstance(args["that"], list) else [args["that"]]
        for condition in conditions:
            if not evaluate_condition(condition, ctx.scope):
                message = args.get("fail_msg") or args.get("msg") or f"Assertion failed: {condition}"
                raise ModuleFailure(str(message), assertion=condition)
        return Outcome(changed=False, msg=str(args.get("success_msg", "All assertions passed")))


class FailAction(_Action):
    name = "fail"

    def unchanged(self, args: dict[str, Any], ctx: TaskContext) -> Outcome:
        raise ModuleFailure(str(args.get("msg", "Failed as requested from task")))

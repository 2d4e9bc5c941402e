"""`--format json`: the shape of Ansible's `json` stdout callback, plus plan, verify and exit_code."""

from __future__ import annotations

import json
from typing import Any

from sparkprov.executor.results import ItemResult, RunResult, TaskResult, VerifyResult
from sparkprov.report.masking import Masker


def _diff(item: ItemResult) -> list[dict[str, str]]:
    return [
        {"before_header": d.path, "after_header": d.path, "before": d.before, "after": d.after}
        for d in item.diffs
    ]


def _host_result(result: TaskResult) -> dict[str, Any]:
    shown = result.censored() if result.task.no_log else result
    body: dict[str, Any] = {"action": result.task.module, **shown.registered()}
    body["duration"] = round(result.duration_s, 6)
    if result.status.value == "unreachable":
        body["unreachable"] = True
    if shown.ignored:
        body["ignored"] = True
    if shown.looped:
        for entry, item in zip(body["results"], shown.items):
            entry["diff"] = _diff(item)
            entry["_ansible_item_label"] = item.label
    else:
        body["diff"] = _diff(shown.items[0]) if shown.items else []
    if result.task.no_log:
        body["_ansible_no_log"] = True
    return body


def _tasks(results: list[TaskResult]) -> list[dict[str, Any]]:
    tasks: dict[tuple[int, bool], dict[str, Any]] = {}
    for result in results:
        key = (id(result.task), result.handler)
        entry = tasks.setdefault(
            key,
            {
                "task": {
                    "name": result.name,
                    "action": result.task.module,
                    "handler": result.handler,
                    "path": str(result.task.place),
                },
                "hosts": {},
            },
        )
        entry["hosts"][result.host] = _host_result(result)
    return list(tasks.values())


def _plan(result: RunResult) -> list[dict[str, Any]]:
    entries = []
    for task_result in result.pending:
        hidden = task_result.task.no_log
        for item in task_result.items:
            if item.pending:
                entries.append(
                    {
                        "host": task_result.host,
                        "task": task_result.name,
                        "action": task_result.task.module,
                        "path": str(task_result.task.place),
                        "handler": task_result.handler,
                        "item": None if hidden else item.label,
                        "change": "hidden (no_log)" if hidden else item.msg,
                        "diff": [] if hidden else _diff(item),
                    }
                )
    return entries


def verify_entry(result: VerifyResult) -> dict[str, Any]:
    """One step on one host: `{host, play, name, step, status, expected, measured, verdicts, reason,
    duration}`, plus `item`, `ignored`, `details` and `path` where they apply."""
    shown = result.shown()
    step = shown.step
    entry: dict[str, Any] = {
        "host": shown.host,
        "play": shown.play,
        "name": shown.name,
        "step": shown.task.module,
        "status": step.status.value,
        "expected": step.expected,
        "measured": step.measured,
        "verdicts": {metric: verdict.as_dict() for metric, verdict in step.verdicts.items()},
        "reason": step.reason,
        "duration": round(shown.duration_s, 6),
        "path": str(shown.task.place),
    }
    if shown.item is not None:
        entry["item"] = shown.item
    if shown.ignored:
        entry["ignored"] = True
    if step.details:
        entry["details"] = step.details
    return entry


def render_json(result: RunResult, masker: Masker) -> str:
    return json.dumps(masker.data(json_document(result)), indent=2, default=str)


def json_document(result: RunResult) -> dict[str, Any]:
    """The `--format json` document, unmasked (report.json adds to it)."""
    return {
        "plays": [
            {
                "play": {"name": run.play.name, "hosts": run.hosts, "path": str(run.play.place)},
                "tasks": _tasks(run.results),
            }
            for run in result.plays
        ],
        "stats": {host: vars(stats) for host, stats in result.stats.items()},
        "mode": result.mode.value,
        "round_trips": result.round_trips,
        "plan": _plan(result),
        "verify": [verify_entry(r) for r in result.verify],
        "exit_code": result.exit_code(),
    }


def render_error_json(kind: str, problems: list[dict[str, Any]], exit_code: int, masker: Masker) -> str:
    return json.dumps(masker.data({"error": kind, "problems": problems, "exit_code": exit_code}), indent=2)

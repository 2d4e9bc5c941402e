"""The verification-step registry: step names as written in a play's `verify:` list.

A verify entry has the task syntax: `name`, exactly one step key (its arguments are checked against
`schemas/verify/<step>.json`) and the keywords in `KEYWORDS`.
"""

from __future__ import annotations

from functools import cache
from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sparkprov.verify.base import Step

# name -> "python module:class". Kept as strings so start-up imports nothing it does not use.
_STEPS = {
    "gpu": "sparkprov.verify.gpu:GpuStep",
    "command": "sparkprov.verify.command:CommandStep",
    "http": "sparkprov.verify.http:HttpStep",
    "container": "sparkprov.verify.container:ContainerStep",
    "memory": "sparkprov.verify.memory:MemoryStep",
    "preflight": "sparkprov.verify.preflight:PreflightStep",
    "testinfra": "sparkprov.verify.testinfra_step:TestinfraStep",
    "ollama_bench": "sparkprov.verify.ollama_bench:OllamaBenchStep",
}

# The task keywords a verify step may carry (the rest — register, notify, retries... — mean nothing
# for a check; a step that retries does so through its own arguments).
KEYWORDS = frozenset(
    {
        "name",
        "when",
        "tags",
        "ignore_errors",
        "no_log",
        "vars",
        "loop",
        "with_items",
        "with_list",
        "with_dict",
        "loop_control",
        "become",
        "become_user",
        "become_method",
        "environment",
        "timeout",
    }
)


def step_names() -> list[str]:
    return sorted(_STEPS)


def is_step(name: str) -> bool:
    return name in _STEPS


@cache
def get_step(name: str) -> Step:
    module_path, class_name = _STEPS[name].split(":")
    cls = getattr(import_module(module_path), class_name)
    return cls()

"""Typed playbook objects. Everything after `playbook/` works on these, never on raw YAML."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparkprov.errors import Place


@dataclass(frozen=True)
class LoopControl:
    loop_var: str = "item"
    index_var: str | None = None
    label: str | None = None
    extended: bool = False
    pause: float = 0.0


@dataclass(frozen=True)
class Task:
    """One task, handler or verify step. Templated fields stay raw until run time."""

    name: str
    module: str  # canonical module name, e.g. "copy" for "ansible.builtin.copy"
    args: dict[str, Any]
    place: Place
    when: list[Any] = field(default_factory=list)
    loop: Any = None  # list or template string; None means "no loop"
    loop_control: LoopControl = LoopControl()
    register: str | None = None
    notify: tuple[str, ...] = ()
    listen: tuple[str, ...] = ()
    tags: frozenset[str] = frozenset()
    become: Any = None  # None: inherit from the play
    become_user: str | None = None
    retries: Any = None
    delay: Any = 5
    backoff: Any = 1.0  # sparkprov: each retry waits `backoff` times longer than the one before
    until: list[Any] = field(default_factory=list)
    ignore_errors: Any = False
    no_log: bool = False
    check_mode: bool | None = None
    changed_when: list[Any] | None = None
    failed_when: list[Any] | None = None
    vars: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None
    generated_name: bool = False  # no `name:` was written; `name` was made from the module and args

    @property
    def label(self) -> str:
        return f"'{self.name}' ({self.place})"


@dataclass(frozen=True)
class Play:
    name: str
    hosts: tuple[str, ...]
    place: Place
    vars: dict[str, Any]
    vars_files: tuple[str, ...]
    tasks: tuple[Task, ...]
    handlers: tuple[Task, ...]
    verify: tuple[Task, ...]
    var_places: dict[str, Place] = field(default_factory=dict)
    become: Any = False
    become_user: str = "root"
    gather_facts: bool = True
    serial: tuple[int | str, ...] = ()
    max_fail_percentage: float | None = None
    any_errors_fatal: bool = False
    tags: frozenset[str] = frozenset()
    environment: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Playbook:
    path: Path
    plays: tuple[Play, ...]

    @property
    def directory(self) -> Path:
        return self.path.parent

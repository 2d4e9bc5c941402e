"""What every module is: a schema, a read-only `check` that returns the exact `Change`, and `apply`.

`plan` is the list of Changes that `check` returned; `apply` applies those same Change objects, so
what was predicted and what is done cannot disagree.
"""

from __future__ import annotations

import abc
import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from sparkprov.connection.base import Become, Connection
from sparkprov.playbook.templating import Scope


@dataclass(frozen=True)
class Diff:
    """Before/after text of one thing a change touches (a file, a setting)."""

    path: str
    before: str
    after: str

    def unified(self) -> str:
        lines = difflib.unified_diff(
            self.before.splitlines(keepends=True),
            self.after.splitlines(keepends=True),
            fromfile=f"before: {self.path}",
            tofile=f"after: {self.path}",
        )
        return "".join(
            line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines
        )


@dataclass
class Change:
    """A change `apply` will make, as predicted by `check` (read-only)."""

    summary: str
    diffs: list[Diff] = field(default_factory=list)
    payload: Any = None  # module-private: what apply needs to carry the change out
    data: dict[str, Any] = field(default_factory=dict)  # result fields known before applying


@dataclass
class Outcome:
    """What a module reports after acting (or after finding nothing to do)."""

    changed: bool
    msg: str = ""
    failed: bool = False
    data: dict[str, Any] = field(default_factory=dict)


def _no_progress(what: str, done: int, total: int | None) -> None:
    return None


def _no_secret(value: str) -> None:
    return None


@dataclass
class TaskContext:
    """Everything a module may use while checking or applying one task on one host."""

    conn: Connection
    become: Become | None
    scope: Scope
    search_dirs: tuple[Path, ...]  # where relative `src` files and templates are looked up
    want_diff: bool = True
    timeout: float | None = None
    environment: dict[str, str] = field(default_factory=dict)
    # Long operations report progress (what, done, total-or-None); the report layer draws it.
    progress: Callable[[str, int, int | None], None] = _no_progress
    # A module that handles a secret (a registry key, a token) registers it so output masks it.
    secret: Callable[[str], None] = _no_secret
    # The run's connection to another inventory host by name (opened on first use, shared with that
    # host's own tasks); KeyError for a name the inventory lacks. None outside the executor.
    peer: Callable[[str], Connection] | None = None


class ModuleFailure(Exception):
    """The module could not do its job on this host; the message says why and what to do."""

    def __init__(self, message: str, *, hint: str | None = None, **data: Any) -> None:
        super().__init__(f"{message}; {hint}" if hint else message)
        self.data = data


class Module(abc.ABC):
    name: ClassVar[str]
    # The argument a free-form string fills (`command: ls -l`); None means "k=v pairs".
    free_form: ClassVar[str | None] = None
    # Executor-side actions (debug, set_fact, assert, fail) touch no host and are never "pending".
    controller_only: ClassVar[bool] = False

    @abc.abstractmethod
    def check(self, args: dict[str, Any], ctx: TaskContext) -> Change | None:
        """Read-only: the exact change `apply` would make, or None when the host is converged."""

    @abc.abstractmethod
    def apply(self, change: Change, ctx: TaskContext) -> Outcome:
        """Carry out a change that `check` returned."""

    def probe(self, args: dict[str, Any]) -> list[tuple[str, bool]]:
        """Paths `check` will stat, and whether it needs their checksum. The executor fetches them
        for all tasks of a play in one batch, so a converged host costs one round trip."""
        return []

    def unchanged(self, args: dict[str, Any], ctx: TaskContext) -> Outcome:
        """The result reported (and registered) when `check` found nothing to do."""
        return Outcome(changed=False, data=dict(args))

    def predicted(self, change: Change, args: dict[str, Any]) -> Outcome:
        """The result reported in plan mode for a pending change."""
        return Outcome(changed=True, msg=change.summary, data={**args, **change.data})

"""Error types that cross layers. `InputError` is the one type the CLI maps to exit code 4."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Place:
    """Where something was written: file, 1-based line and column."""

    file: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        if self.line is None:
            return self.file
        if self.column is None:
            return f"{self.file}:{self.line}"
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Problem:
    """One invalid-input finding: where, which key or value, what is wrong, and what to do."""

    place: Place
    message: str
    key: str | None = None
    hint: str | None = None

    def __str__(self) -> str:
        text = f"{self.place}: {self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class InputError(Exception):
    """Invalid input found before any host is touched (exit code 4). Carries every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

    @classmethod
    def single(
        cls, place: Place, message: str, *, key: str | None = None, hint: str | None = None
    ) -> InputError:
        return cls([Problem(place, message, key, hint)])


class TaskError(Exception):
    """A task failed on a host for a reason the module can explain (not a bug)."""


def describe_value(value: Any) -> str:
    """How a value reads in an error message: 'a mapping', 'a list', "the string 'x'"..."""
    if isinstance(value, dict):
        return "a mapping" if value else "an empty mapping"
    if isinstance(value, (list, tuple)):
        return "a list" if value else "an empty list"
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"the string {shown!r}"
    if isinstance(value, (int, float)):
        try:
            return f"the number {value!r}"
        except ValueError:  # more digits than Python will print
            return "the number (too many digits to show)"
    return type(value).__name__

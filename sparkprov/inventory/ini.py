"""Ansible's INI inventory format, read line by line as Ansible's `ini` plugin reads it.

Hosts before any section are 'ungrouped'; `[group]` lists hosts (`name[:port] key=value ...`, shell
quoting, ranges), `[group:vars]` one `key=value` per line, `[group:children]` one group per line. Values
go through `ast.literal_eval` as in Ansible (`22` is a number, `True` a boolean, anything else a string).
A group named under `:children`, or given `:vars`, must be declared by its own `[group]` or
`[group:children]` section somewhere in the file. Every problem is reported with its line.
"""

from __future__ import annotations

import ast
import re
import shlex
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sparkprov.errors import Place, Problem
from sparkprov.inventory.hostnames import expand_host
from sparkprov.inventory.model import Inventory, InventoryProblem

_SECTION = re.compile(r"^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:#.*)?$")
_GROUP_NAME = re.compile(r"^([^:\]\s]+)\s*(?:#.*)?$")
_COMMENT = ("#", ";")
_KINDS = ("hosts", "vars", "children")


@dataclass
class _Pending:
    """A group used (under `:children` or by `:vars`) before its own section declared it."""

    line: int
    kind: str
    parents: list[str] = field(default_factory=list)


def read_ini(inventory: Inventory, text: str, file: str) -> list[Problem]:
    return _IniReader(inventory, file).read(text)


class _IniReader:
    def __init__(self, inventory: Inventory, file: str) -> None:
        self.inventory = inventory
        self.file = file
        self.group = "ungrouped"
        self.kind: str | None = "hosts"  # None after a bad section header: skip to the next one
        self.pending: dict[str, _Pending] = {}
        self.problems: list[Problem] = []

    def read(self, text: str) -> list[Problem]:
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if line and not line.startswith(_COMMENT):
                self._guarded(number, self._line, line, number)
        for name, pending in self.pending.items():
            self.problems.append(self._undeclared(name, pending))
        return self.problems

    def _guarded(self, number: int, action: Callable[..., object], *args: Any) -> None:
        try:
            action(*args)
        except InventoryProblem as exc:
            self.problems.append(Problem(Place(self.file, number), str(exc), hint=exc.hint))

    def _line(self, line: str, number: int) -> None:
        section = _SECTION.match(line)
        if section:
            self._section(section.group(1), section.group(2) or "hosts", number)
        elif line.startswith("[") and line.endswith("]"):
            self.kind = None
            raise InventoryProblem(
                f"invalid section header {line}",
                hint="a section is [group], [group:vars] or [group:children], with no spaces inside",
            )
        elif self.kind == "hosts":
            self._hosts(line, Place(self.file, number))
        elif self.kind == "vars":
            self._var(line, Place(self.file, number))
        elif self.kind == "children":
            self._child(line, number)

    def _section(self, name: str, kind: str, number: int) -> None:
        self.kind = None
        if kind not in _KINDS:
            raise InventoryProblem(
                f"section [{name}:{kind}] has unknown type '{kind}'",
                hint="use [group:vars] or [group:children]",
            )
        if name not in self.inventory.groups:
            if kind == "vars" and name not in self.pending:
                self.pending[name] = _Pending(number, "vars")
            self.inventory.add_group(name)
        self.group, self.kind = name, kind
        pending = self.pending.get(name)
        if pending is not None and kind != "vars":
            del self.pending[name]
            for parent in pending.parents if pending.kind == "children" else []:
                self._guarded(pending.line, self.inventory.add_child, parent, name)

    def _hosts(self, line: str, place: Place) -> None:
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError as exc:
            raise InventoryProblem(f"cannot read host line: {exc}", hint="check the quotes") from None
        if not tokens:
            return
        names, port = _host_entry(tokens[0])
        variables = dict(_assignment(token) for token in tokens[1:])
        for name in names:
            self.inventory.add_host(name, self.group, port).set_vars(
                variables, dict.fromkeys(variables, place)
            )

    def _var(self, line: str, place: Place) -> None:
        key, sep, raw = line.partition("=")
        if not sep or not key.strip():
            raise InventoryProblem(
                f"expected key=value in [{self.group}:vars], got {line!r}",
                hint="a :vars section holds one name=value per line; hosts go in a [group] section",
            )
        self.inventory.set_group_var(self.group, key.strip(), parse_value(raw.strip()), place)

    def _child(self, line: str, number: int) -> None:
        found = _GROUP_NAME.match(line)
        if not found:
            raise InventoryProblem(
                f"expected a group name in [{self.group}:children], got {line!r}",
                hint="a :children section lists one group per line; hosts go in a [group] section",
            )
        child = found.group(1)
        if child in self.inventory.groups:
            self.inventory.add_child(self.group, child)
        else:
            self.pending.setdefault(child, _Pending(number, "children")).parents.append(self.group)

    def _undeclared(self, name: str, pending: _Pending) -> Problem:
        if pending.kind == "vars":
            message = f"section [{name}:vars] is for group '{name}', which is never declared"
        else:
            message = f"section [{pending.parents[-1]}:children] includes undefined group '{name}'"
        hint = f"declare it with a [{name}] section (it may be empty) or a [{name}:children] section"
        return Problem(Place(self.file, pending.line), message, hint=hint)


def _host_entry(text: str) -> tuple[list[str], int | None]:
    if text.strip() == "---":
        raise InventoryProblem("'---' is not a host name", hint="this looks like a YAML file; name it .yml")
    names, port = expand_host(text)
    if text.endswith(":") and port is None:
        raise InventoryProblem(
            f"host '{text}' ends with ':' but gives no port", hint="write name:port, e.g. spark01:2222"
        )
    return names, port


def _assignment(token: str) -> tuple[str, Any]:
    key, sep, raw = token.partition("=")
    if not sep or not key:
        raise InventoryProblem(
            f"expected key=value host variable, got {token!r}",
            hint='quote values with spaces: name="two words"',
        )
    return key, parse_value(raw)


def parse_value(text: str) -> Any:
    """An INI value as Ansible reads it: a Python literal when it is one, else the text itself."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            value = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return text
    return _plain(value)


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if value is Ellipsis:
        return "..."
    if isinstance(value, complex):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value

"""Ansible's YAML inventory shape: `GROUP: {hosts: {PATTERN: {vars}}, vars: {...}, children: {GROUP: ...}}`.

Host keys may carry a port and ranges (`spark[01:04]:2222`); a section may be a single name
(`hosts: spark01`). Where Ansible only warns (unknown keys, a group that is not a mapping) this is an
error, with the place of the offending key or value.
"""

from __future__ import annotations

from typing import Any

from sparkprov.errors import Place, Problem, describe_value
from sparkprov.inventory.hostnames import expand_host
from sparkprov.inventory.model import Inventory, InventoryProblem
from sparkprov.playbook.yamlsrc import place_of

SHAPE_HINT = "all:\n    hosts:\n      spark1: {ansible_host: 10.0.0.5}"


def read_yaml(inventory: Inventory, data: Any, file: str) -> list[Problem]:
    if not isinstance(data, dict):
        where = getattr(data, "place", Place(file, 1))
        return [
            Problem(
                where,
                "an inventory must be a mapping with an 'all' group (Ansible's YAML inventory shape)",
                hint=SHAPE_HINT,
            )
        ]
    if "plugin" in data:
        return [
            Problem(
                place_of(data, ["plugin"], key=True) or Place(file),
                "this is an inventory plugin configuration ('plugin:'), which sparkprov does not run",
                key="plugin",
                hint="list the hosts in a YAML or INI inventory",
            )
        ]
    reader = _YamlReader(inventory, data, file)
    for name, body in data.items():
        reader.group(str(name), body, None, [name])
    return reader.problems


class _YamlReader:
    def __init__(self, inventory: Inventory, root: Any, file: str) -> None:
        self.inventory = inventory
        self.root = root
        self.file = file
        self.problems: list[Problem] = []

    def place(self, path: list[Any], *, key: bool = False) -> Place:
        return place_of(self.root, path, key=key) or Place(self.file)

    def problem(self, path: list[Any], exc: InventoryProblem, *, key: bool = False) -> None:
        self.problems.append(Problem(self.place(path, key=key), str(exc), hint=exc.hint))

    def group(self, name: str, body: Any, parent: str | None, path: list[Any]) -> None:
        try:
            self.inventory.add_group(name)
            if parent is not None:
                self.inventory.add_child(parent, name)
        except InventoryProblem as exc:
            self.problem(path, exc, key=True)
            return
        if body is None:
            return
        if not isinstance(body, dict):
            self.problems.append(
                Problem(self.place(path), f"group '{name}' must be a mapping of hosts/vars/children")
            )
            return
        readers = {"hosts": self.read_hosts, "vars": self.read_vars, "children": self.read_children}
        for key, value in body.items():
            if key not in readers:
                self.problems.append(
                    Problem(
                        self.place([*path, key], key=True),
                        f"unknown key '{key}' in group '{name}'",
                        key=str(key),
                        hint="a group has 'hosts', 'vars' and 'children'",
                    )
                )
                continue
            section = self.section(name, str(key), value, [*path, key])
            readers[key](name, section, [*path, key])

    def section(self, group: str, key: str, value: Any, path: list[Any]) -> dict[Any, Any]:
        if value is None:
            return {}
        if isinstance(value, str):
            return {value: None}
        if not isinstance(value, dict):
            self.problems.append(
                Problem(
                    self.place(path),
                    f"'{key}' of group '{group}' must be a mapping, got {describe_value(value)}",
                    key=key,
                )
            )
            return {}
        return value

    def read_hosts(self, group: str, hosts: dict[Any, Any], path: list[Any]) -> None:
        for entry, host_vars in hosts.items():
            where = [*path, entry]
            if not isinstance(entry, str):
                self.problems.append(
                    Problem(
                        self.place(where, key=True),
                        f"host name {entry!r} must be a string",
                        hint="quote names that YAML reads as numbers",
                    )
                )
                continue
            if host_vars is not None and not isinstance(host_vars, dict):
                self.problems.append(Problem(self.place(where), f"vars of host '{entry}' must be a mapping"))
                continue
            try:
                names, port = expand_host(entry)
                places = getattr(host_vars, "value_places", {})
                for name in names:
                    self.inventory.add_host(name, group, port).set_vars(host_vars or {}, places)
            except InventoryProblem as exc:
                self.problem(where, exc, key=True)

    def read_vars(self, group: str, variables: dict[Any, Any], path: list[Any]) -> None:
        for key, value in variables.items():
            try:
                self.inventory.set_group_var(group, key, value, self.place([*path, key]))
            except InventoryProblem as exc:
                self.problem([*path, key], exc)

    def read_children(self, group: str, children: dict[Any, Any], path: list[Any]) -> None:
        for child, body in children.items():
            self.group(str(child), body, group, [*path, child])

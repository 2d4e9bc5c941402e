"""Inventories in Ansible's YAML shape, host patterns, and per-host variables.

`all: {hosts: {NAME: {vars}}, vars: {...}, children: {GROUP: {hosts: ..., vars: ..., children: ...}}}`.
Without an inventory, the implicit inventory holds `localhost` on the local connection.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparkprov.errors import InputError, Place, Problem
from sparkprov.playbook.yamlsrc import load_yaml_file, place_of

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass
class Host:
    name: str
    vars: dict[str, Any] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)  # outermost first, so later groups win

    def var(self, name: str, default: Any = None) -> Any:
        """A connection variable, with or without the `ansible_` prefix."""
        for key in (f"ansible_{name}", name):
            if key in self.vars:
                return self.vars[key]
        return default

    @property
    def connection(self) -> str:
        default = "local" if self.name in LOCAL_NAMES else "ssh"
        return str(self.var("connection", default))


@dataclass
class Group:
    name: str
    vars: dict[str, Any] = field(default_factory=dict)
    hosts: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)


@dataclass
class Inventory:
    source: str
    hosts: dict[str, Host]
    groups: dict[str, Group]

    def group_vars_for(self, host: Host) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for group in ["all", *[g for g in host.groups if g != "all"]]:
            merged.update(self.groups[group].vars if group in self.groups else {})
        return merged

    def host_vars(self, host: Host) -> dict[str, Any]:
        return {**self.group_vars_for(host), **host.vars}

    def group_names(self, host: Host) -> list[str]:
        return sorted(g for g in host.groups if g != "all")

    def members(self, group: str) -> list[str]:
        found: list[str] = []
        stack = [group]
        seen = set()
        while stack:
            name = stack.pop()
            if name in seen or name not in self.groups:
                continue
            seen.add(name)
            found.extend(h for h in self.groups[name].hosts if h not in found)
            stack.extend(reversed(self.groups[name].children))
        return found

    def match(self, pattern: str) -> list[str]:
        """Ansible host patterns: 'all', names, groups, globs, 'a:b', 'a:&b', 'a:!b', 'a,b'."""
        selected: list[str] = []
        parts = [p for p in pattern.replace(",", ":").split(":") if p]
        for part in sorted(parts, key=lambda p: p[:1] in "&!"):  # unions first, then & and !
            if part.startswith("&"):
                keep = set(self._match_one(part[1:]))
                selected = [h for h in selected if h in keep]
            elif part.startswith("!"):
                drop = set(self._match_one(part[1:]))
                selected = [h for h in selected if h not in drop]
            else:
                selected.extend(h for h in self._match_one(part) if h not in selected)
        return selected

    def _match_one(self, term: str) -> list[str]:
        if term in ("all", "*"):
            return list(self.hosts)
        if term in self.groups:
            return self.members(term)
        if term in self.hosts:
            return [term]
        if any(ch in term for ch in "*?["):
            names = [h for h in self.hosts if fnmatch.fnmatchcase(h, term)]
            for group in self.groups:
                if fnmatch.fnmatchcase(group, term):
                    names.extend(h for h in self.members(group) if h not in names)
            return names
        return []


def implicit_localhost() -> Inventory:
    host = Host("localhost", {"ansible_connection": "local"}, ["all", "ungrouped"])
    return Inventory(
        "implicit localhost",
        {"localhost": host},
        {"all": Group("all", children=["ungrouped"]), "ungrouped": Group("ungrouped", hosts=["localhost"])},
    )


def load_inventory(path: Path) -> Inventory:
    data = load_yaml_file(path, what="inventory file")
    file = str(path)
    if not isinstance(data, dict):
        raise InputError.single(
            getattr(data, "place", Place(file, 1)),
            "an inventory must be a mapping with an 'all' group (Ansible's YAML inventory shape)",
            hint="all:\n    hosts:\n      spark1: {ansible_host: 10.0.0.5}",
        )
    inventory = Inventory(file, {}, {})
    problems: list[Problem] = []
    for name, body in data.items():
        _read_group(inventory, str(name), body, None, data, [name], problems)
    all_group = inventory.groups.setdefault("all", Group("all"))
    ungrouped = inventory.groups.setdefault("ungrouped", Group("ungrouped"))
    for group in list(inventory.groups.values()):
        if (
            group.name != "all"
            and group.name not in all_group.children
            and not _is_child(inventory, group.name)
        ):
            all_group.children.append(group.name)
    grouped = {h for g in inventory.groups.values() if g.name not in ("all", "ungrouped") for h in g.hosts}
    ungrouped.hosts.extend(h for h in inventory.hosts if h not in grouped and h not in ungrouped.hosts)
    for host in inventory.hosts.values():
        host.groups = _ancestry(inventory, host.name)
    if problems:
        raise InputError(problems)
    return inventory


def _is_child(inventory: Inventory, name: str) -> bool:
    return any(name in g.children for g in inventory.groups.values())


def _ancestry(inventory: Inventory, host: str) -> list[str]:
    """Groups containing `host`, parents before children, so child group vars override."""
    direct = [g.name for g in inventory.groups.values() if host in g.hosts]
    order: list[str] = []

    def visit(group: str) -> None:
        for parent in inventory.groups.values():
            if group in parent.children:
                visit(parent.name)
        if group not in order:
            order.append(group)

    for group in direct:
        visit(group)
    return ["all", *[g for g in order if g != "all"]]


_GROUP_KEYS = ("hosts", "vars", "children")


def _read_group(
    inventory: Inventory,
    name: str,
    body: Any,
    parent: str | None,
    root: Any,
    path: list[Any],
    problems: list[Problem],
) -> None:
    place = place_of(root, path) or Place(inventory.source)
    group = inventory.groups.setdefault(name, Group(name))
    if parent is not None and name not in inventory.groups[parent].children:
        inventory.groups[parent].children.append(name)
    if body is None:
        return
    if not isinstance(body, dict):
        problems.append(Problem(place, f"group '{name}' must be a mapping of hosts/vars/children"))
        return
    for key in body:
        if key not in _GROUP_KEYS:
            problems.append(
                Problem(
                    place_of(root, [*path, key], key=True) or place,
                    f"unknown key '{key}' in group '{name}'",
                    key=str(key),
                    hint="a group has 'hosts', 'vars' and 'children'",
                )
            )
    for host_name, host_vars in (body.get("hosts") or {}).items():
        host = inventory.hosts.setdefault(str(host_name), Host(str(host_name), groups=["all"]))
        if host_vars is not None and not isinstance(host_vars, dict):
            problems.append(
                Problem(
                    place_of(root, [*path, "hosts", host_name]) or place,
                    f"vars of host '{host_name}' must be a mapping",
                )
            )
            continue
        host.vars.update(host_vars or {})
        if str(host_name) not in group.hosts:
            group.hosts.append(str(host_name))
    group_vars = body.get("vars") or {}
    if not isinstance(group_vars, dict):
        problems.append(
            Problem(place_of(root, [*path, "vars"]) or place, f"vars of group '{name}' must be a mapping")
        )
    else:
        group.vars.update(group_vars)
    for child, child_body in (body.get("children") or {}).items():
        _read_group(inventory, str(child), child_body, name, root, [*path, "children", child], problems)

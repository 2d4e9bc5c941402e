"""The inventory as values: hosts, groups, and the variables each host sees.

The readers (`ini.py`, `yamlfile.py`) build an `Inventory` through `add_group`, `add_host`, `add_child`
and `set_group_var`, then `reconcile()` settles `all`/`ungrouped` and each host's group order once, as
Ansible's `InventoryData` does. After that the inventory is only read.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparkprov.errors import Place, describe_value

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
PRIORITY_VAR = "ansible_group_priority"


class InventoryProblem(ValueError):
    """A mistake in inventory content; the reader that found it adds the file and line."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


@dataclass
class Host:
    name: str
    vars: dict[str, Any] = field(default_factory=dict)  # the inventory's own vars for this host
    groups: list[str] = field(
        default_factory=list
    )  # every group holding it, in precedence order ('all' first)
    inventory: Inventory | None = field(default=None, init=False, repr=False, compare=False)
    var_places: dict[str, Place] = field(default_factory=dict, repr=False, compare=False)

    def set_vars(self, variables: Mapping[str, Any], places: Mapping[str, Place]) -> None:
        """The inventory's own variables for this host, with where each value is written."""
        self.vars.update(variables)
        self.var_places.update((key, places[key]) for key in variables if key in places)

    def var(self, name: str, default: Any = None) -> Any:
        """A connection variable, with or without the `ansible_` prefix, as the host sees it
        (group vars, `group_vars/` and `host_vars/` included once the host belongs to an inventory)."""
        values = self.inventory.host_vars(self) if self.inventory is not None else self.vars
        for key in (f"ansible_{name}", name):
            if key in values:
                return values[key]
        return default

    @property
    def connection(self) -> str:
        default = "local" if self.name in LOCAL_NAMES else "ssh"
        return str(self.var("connection", default))


@dataclass
class Group:
    name: str
    vars: dict[str, Any] = field(default_factory=dict)
    hosts: list[str] = field(default_factory=list)  # direct members, in the order they were listed
    children: list[str] = field(default_factory=list)
    priority: int = 1  # `ansible_group_priority`: among groups of one depth, the higher one wins
    var_places: dict[str, Place] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class VarsDir:
    """The `group_vars/` and `host_vars/` found in one folder (next to the inventory or the playbook)."""

    base: Path
    group_vars: dict[str, dict[str, Any]]
    host_vars: dict[str, dict[str, Any]]
    group_var_places: dict[str, dict[str, Place]] = field(default_factory=dict, compare=False)
    host_var_places: dict[str, dict[str, Place]] = field(default_factory=dict, compare=False)


@dataclass
class Inventory:
    source: str
    hosts: dict[str, Host]
    groups: dict[str, Group]
    vars_dirs: list[VarsDir] = field(default_factory=list)  # later folders win

    def __post_init__(self) -> None:
        for host in self.hosts.values():
            host.inventory = self

    # ------------------------------------------------------------------ reading

    def host_vars(self, host: Host) -> dict[str, Any]:
        """Every inventory variable of `host`, merged with Ansible's precedence (later wins)."""
        merged: dict[str, Any] = {}
        for values, _ in self._var_layers(host):
            merged.update(values)
        return merged

    def host_var_places(self, host: Host) -> dict[str, Place]:
        """Where each of `host_vars(host)` is written (the place of the value that wins)."""
        places: dict[str, Place] = {}
        for values, written in self._var_layers(host):
            places.update((key, written[key]) for key in values if key in written)
            places.update((key, Place(self.source)) for key in values if key not in written)
        return places

    def _var_layers(self, host: Host) -> Iterator[tuple[Mapping[str, Any], Mapping[str, Place]]]:
        # Ansible's default VARIABLE_PRECEDENCE, then host vars: 'all' < other groups (depth, priority,
        # name) < group_vars/all < group_vars/<group> < the host's own < host_vars/<host>; in each
        # step the inventory's folder comes before the playbook's.
        groups = [g for g in host.groups if g != "all" and g in self.groups]
        if "all" in self.groups:
            yield self.groups["all"].vars, self.groups["all"].var_places
        yield from ((self.groups[g].vars, self.groups[g].var_places) for g in groups)
        for folder in self.vars_dirs:
            yield folder.group_vars.get("all", {}), folder.group_var_places.get("all", {})
        for folder in self.vars_dirs:
            yield from ((folder.group_vars.get(g, {}), folder.group_var_places.get(g, {})) for g in groups)
        yield host.vars, host.var_places
        for folder in self.vars_dirs:
            yield folder.host_vars.get(host.name, {}), folder.host_var_places.get(host.name, {})

    def group_names(self, host: Host) -> list[str]:
        return sorted(g for g in host.groups if g != "all")

    def members(self, group: str) -> list[str]:
        """Hosts of `group` and its descendants: its own first, then each generation's (Ansible's order)."""
        found: dict[str, None] = {}
        for name in self._descendants(group, include_self=True):
            found.update(dict.fromkeys(self.groups[name].hosts))
        return list(found)

    def match(self, pattern: str) -> list[str]:
        """Ansible host patterns (see `patterns.py`); hosts come back in inventory order."""
        from sparkprov.inventory.patterns import match_hosts

        return match_hosts(self, pattern)

    def _descendants(self, group: str, *, include_self: bool = False) -> list[str]:
        if group not in self.groups:
            return []
        order = [group]
        level = [group]
        while level:
            level = [c for name in level for c in self.groups[name].children if c in self.groups]
            level = [c for c in dict.fromkeys(level) if c not in order]
            order.extend(level)
        return order if include_self else order[1:]

    # ------------------------------------------------------------------ building

    def add_group(self, name: str) -> Group:
        if not name:
            raise InventoryProblem("a group needs a name")
        return self.groups.setdefault(name, Group(name))

    def add_host(self, name: str, group: str | None = None, port: int | None = None) -> Host:
        """Add `name` (once; a port given when it is first seen becomes `ansible_port`) to `group`."""
        if not name:
            raise InventoryProblem("a host needs a name")
        host = self.hosts.get(name)
        if host is None:
            host = self.hosts[name] = Host(name, {"ansible_port": port} if port is not None else {})
            host.inventory = self
        if group is not None and name not in self.add_group(group).hosts:
            self.groups[group].hosts.append(name)
        return host

    def add_child(self, parent: str, child: str) -> None:
        if child == "all":
            raise InventoryProblem(f"'all' holds every group; it cannot be a child of '{parent}'")
        if child == parent or parent in self._descendants(child):
            raise InventoryProblem(
                f"making '{child}' a child of '{parent}' creates a loop of groups",
                hint=f"'{parent}' is already inside '{child}'",
            )
        children = self.add_group(parent).children
        self.add_group(child)
        if child not in children:
            children.append(child)

    def set_group_var(self, group: str, key: str, value: Any, place: Place | None = None) -> None:
        if key != PRIORITY_VAR:
            found = self.add_group(group)
            found.vars[key] = value
            if place is not None:
                found.var_places[key] = place
            return
        try:
            self.add_group(group).priority = int(value)
        except (TypeError, ValueError):
            raise InventoryProblem(
                f"{PRIORITY_VAR} of group '{group}' must be a whole number, got {describe_value(value)}"
            ) from None

    def reconcile(self) -> None:
        """Once every source is read: groups without a parent go under 'all', hosts without a group
        into 'ungrouped' (and out of it when they have one), and each host learns its groups."""
        self.add_group("all")
        ungrouped = self.add_group("ungrouped")
        parents = self._parents()
        for name in list(self.groups):
            if name != "all" and not parents[name]:
                self.add_child("all", name)
                parents[name].append("all")
        direct = self._direct_groups()
        kept = [h for h in ungrouped.hosts if not set(direct[h]) - {"all", "ungrouped"}]
        alone = [h for h in self.hosts if set(direct[h]) <= {"all"}]
        ungrouped.hosts = kept + alone
        direct = self._direct_groups()
        depths = _depths(parents)
        for host in self.hosts.values():
            holding = _with_ancestors(direct[host.name], parents) | {"all"}
            others = sorted(holding - {"all"}, key=lambda g: (depths[g], self.groups[g].priority, g))
            host.groups = ["all", *others]

    def _parents(self) -> dict[str, list[str]]:
        parents: dict[str, list[str]] = {name: [] for name in self.groups}
        for group in self.groups.values():
            for child in group.children:
                parents[child].append(group.name)
        return parents

    def _direct_groups(self) -> dict[str, list[str]]:
        direct: dict[str, list[str]] = {name: [] for name in self.hosts}
        for group in self.groups.values():
            for host in group.hosts:
                direct[host].append(group.name)
        return direct


def _with_ancestors(groups: list[str], parents: dict[str, list[str]]) -> set[str]:
    found: set[str] = set()
    stack = list(groups)
    while stack:
        name = stack.pop()
        if name not in found:
            found.add(name)
            stack.extend(parents[name])
    return found


def _depths(parents: dict[str, list[str]]) -> dict[str, int]:
    """Longest path from 'all' (Ansible's `Group.depth`): deeper groups' vars win."""
    depths: dict[str, int] = {}

    def depth(name: str) -> int:
        if name not in depths:
            depths[name] = 1 + max((depth(p) for p in parents[name]), default=-1)
        return depths[name]

    for name in parents:
        depth(name)
    return depths


def implicit_localhost() -> Inventory:
    host = Host("localhost", {"ansible_connection": "local"}, ["all", "ungrouped"])
    return Inventory(
        "implicit localhost",
        {"localhost": host},
        {"all": Group("all", children=["ungrouped"]), "ungrouped": Group("ungrouped", hosts=["localhost"])},
    )


def empty_inventory(source: str) -> Inventory:
    """What every inventory starts from: the groups 'all' and 'ungrouped', as in Ansible."""
    return Inventory(source, {}, {"all": Group("all"), "ungrouped": Group("ungrouped")})

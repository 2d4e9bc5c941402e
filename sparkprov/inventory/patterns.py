"""Ansible host patterns: what `-l` and a play's `hosts:` select.

`all`/`*`, host and group names, globs (`spark*`), regexes (`~spark0[1-3]`), subscripts (`gpu[0]`,
`gpu[1:3]`, `gpu[-1]`), joined by `,` or `:` with `&` (and) and `!` (not) prefixes, evaluated as
`InventoryManager` does: plain terms first, then `&`, then `!`; only `&`/`!` terms start from `all`.
Unknown names match nothing. The result lists hosts in inventory order.
"""

from __future__ import annotations

import fnmatch
import re
from functools import lru_cache
from typing import TYPE_CHECKING

from sparkprov.inventory.hostnames import parse_address

if TYPE_CHECKING:
    from sparkprov.inventory.model import Inventory

_SUBSCRIPT = re.compile(r"^(.+)\[(?:(-?[0-9]+)|([0-9]+)([:-])([0-9]*))\]$")
_COLON_TERM = re.compile(r"(?:[^\s:\[\]]|\[[^\]]*\])+")
_GLOB_CHARS = (".", "?", "*", "[")

Subscript = tuple[int, int | None]


def split_host_pattern(pattern: str) -> list[str]:
    """'a,b[1], c' -> ['a', 'b[1]', 'c']; ':' separates only when the whole is no host address."""
    if "," in pattern:
        terms = pattern.split(",")
    elif parse_address(pattern) is not None:
        terms = [pattern]
    else:
        terms = _COLON_TERM.findall(pattern)
    return [t.strip() for t in terms if t.strip()]


def match_hosts(inventory: Inventory, pattern: str) -> list[str]:
    selected: dict[str, None] = {}
    for term in _ordered(split_host_pattern(pattern)):
        if term in inventory.hosts:
            selected[term] = None
            continue
        found = dict.fromkeys(_match_term(inventory, term[1:] if term[0] in "&!" else term))
        if term[0] == "!":
            selected = {h: None for h in selected if h not in found}
        elif term[0] == "&":
            selected = {h: None for h in selected if h in found}
        else:
            selected.update(found)
    return [h for h in inventory.hosts if h in selected]


def _ordered(terms: list[str]) -> list[str]:
    plain = [t for t in terms if t[0] not in "&!"] or ["all"]
    return plain + [t for t in terms if t[0] == "&"] + [t for t in terms if t[0] == "!"]


def _match_term(inventory: Inventory, term: str) -> list[str]:
    expression, subscript = _split_subscript(term)
    found = _enumerate(inventory, expression)
    return _apply_subscript(found, subscript) if subscript else found


def _enumerate(inventory: Inventory, expression: str) -> list[str]:
    """Hosts of every group the expression matches; hosts by name too when no group matched or
    it is a glob or a regex."""
    regex = _compile(expression)
    if regex is None:
        return []
    groups = [g for g in inventory.groups if regex.match(g)]
    found = dict.fromkeys(h for g in groups for h in inventory.members(g))
    if not groups or expression[0] == "~" or any(c in expression for c in _GLOB_CHARS):
        found.update(dict.fromkeys(h for h in inventory.hosts if regex.match(h)))
    return list(found)


@lru_cache(maxsize=256)
def _compile(expression: str) -> re.Pattern[str] | None:
    try:
        return re.compile(expression[1:] if expression[0] == "~" else fnmatch.translate(expression))
    except re.error:
        return None


def _split_subscript(term: str) -> tuple[str, Subscript | None]:
    found = None if term[0] == "~" else _SUBSCRIPT.match(term)
    if found is None:
        return term, None
    expression, index, start, _, end = found.groups()
    if index is not None:
        return expression, (int(index), None)
    return expression, (int(start), int(end) if end else -1)


def _apply_subscript(hosts: list[str], subscript: Subscript) -> list[str]:
    """`[i]` one host, `[i:j]` hosts i..j inclusive, `[i:]` from i on; out of range selects nothing."""
    start, end = subscript
    if end:  # Ansible treats an end of 0 like no end: g[2:0] is g[2]
        return hosts[start : (len(hosts) - 1 if end == -1 else end) + 1]
    try:
        return [hosts[start]]
    except IndexError:
        return []

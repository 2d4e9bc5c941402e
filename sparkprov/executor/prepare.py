"""Everything that is read and checked before the first host is touched.

Loading the playbook, the inventory, `-e` and `vars_files`, then the static checks: any problem
anywhere is an `InputError` (exit code 4) listing all of them, and no connection has been made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sparkprov.connection.credentials import HOST_BECOME_PASSWORD_VARS, HOST_SSH_PASSWORD_VARS
from sparkprov.errors import InputError, Place, Problem
from sparkprov.facts.host import ANSIBLE_FACT_NAMES
from sparkprov.inventory import Inventory, implicit_localhost, load_inventory, load_vars_dirs
from sparkprov.playbook.loader import load_playbook
from sparkprov.playbook.model import Play, Playbook
from sparkprov.playbook.static import StaticChecker
from sparkprov.playbook.templating import Scope, TemplateError, is_template, render_string
from sparkprov.playbook.variables import load_vars_file_placed, parse_extra_vars
from sparkprov.resources import default_playbook

T = TypeVar("T")


@dataclass
class Prepared:
    playbook: Playbook
    inventory: Inventory
    extra_vars: dict[str, Any]
    play_vars_files: list[dict[str, Any]]


def load_inputs(
    playbook_path: Path | None, inventory_path: Path | None, extra: tuple[str, ...], limit: str | None
) -> Prepared:
    problems: list[Problem] = []
    playbook = _collect(problems, lambda: load_playbook(playbook_path or default_playbook()))
    inventory = _collect(
        problems, lambda: load_inventory(inventory_path) if inventory_path else implicit_localhost()
    )
    extra_vars = _collect(problems, lambda: parse_extra_vars(extra)) or {}
    if playbook is not None and inventory is not None:
        # group_vars/ and host_vars/ next to the playbook count too, as in Ansible
        _collect(problems, lambda: load_vars_dirs(inventory, playbook.directory))
    if problems:
        raise InputError(problems)
    assert playbook is not None and inventory is not None
    if limit and not inventory.match(limit):
        raise InputError.single(
            Place(f"-l {limit}"),
            f"host pattern '{limit}' matches no host in {inventory.source}",
            hint=f"hosts: {', '.join(inventory.hosts) or '(none)'}; groups: {', '.join(inventory.groups)}",
        )
    problems.extend(_templated_passwords(inventory))
    play_vars_files = [_vars_files(play, playbook, extra_vars, problems) for play in playbook.plays]
    problems.extend(
        StaticChecker(
            playbook, external=_external_vars(inventory, _extra_origins(extra)), facts=ANSIBLE_FACT_NAMES
        ).check(play_vars_files)
    )
    if problems:
        raise InputError(problems)
    return Prepared(playbook, inventory, extra_vars, play_vars_files)


def _external_vars(
    inventory: Inventory, extra_vars: dict[str, tuple[Any, str]]
) -> dict[str, tuple[Any, Place]]:
    """Variables set outside the playbook, with where: the inventory's (every host's), then -e (wins)."""
    found: dict[str, tuple[Any, Place]] = {}
    for host in inventory.hosts.values():
        places = inventory.host_var_places(host)
        for key, value in inventory.host_vars(host).items():
            found.setdefault(key, (value, places[key]))
    found.update((key, (value, Place(where))) for key, (value, where) in extra_vars.items())
    return found


def _templated_passwords(inventory: Inventory) -> list[Problem]:
    """Connection passwords in the inventory are used as written: a template in one is an input error
    (it would be sent to the host as the password)."""
    found: dict[tuple[str, Place], Problem] = {}
    for host in inventory.hosts.values():
        values, places = inventory.host_vars(host), inventory.host_var_places(host)
        for name in (*HOST_SSH_PASSWORD_VARS, *HOST_BECOME_PASSWORD_VARS):
            value = values.get(name)
            if isinstance(value, str) and ("{{" in value or "{%" in value):
                found[(name, places[name])] = Problem(
                    places[name],
                    f"'{name}' is used as written: templates in connection passwords are not supported",
                    key=name,
                    hint="write the password out, or give it with -k/-K or SPARKPROV_SSH_PASSWORD/"
                    "SPARKPROV_BECOME_PASSWORD",
                )
    return list(found.values())


def _extra_origins(extra: tuple[str, ...]) -> dict[str, tuple[Any, str]]:
    """Each -e variable's value and which -e set it ('-e #2'); a later -e wins, as when merged."""
    origins: dict[str, tuple[Any, str]] = {}
    for index, value in enumerate(extra, start=1):
        origins.update((key, (found, f"-e #{index}")) for key, found in parse_extra_vars((value,)).items())
    return origins


def _collect(problems: list[Problem], load: Callable[[], T]) -> T | None:
    """Run one loading step; its input problems join the others so all are reported at once."""
    try:
        return load()
    except InputError as exc:
        problems.extend(exc.problems)
        return None


class VarsFiles(dict):
    """The variables of a play's vars files, with where each value is written."""

    def __init__(self) -> None:
        super().__init__()
        self.places: dict[str, Place] = {}


def _vars_files(
    play: Play, playbook: Playbook, extra_vars: dict[str, Any], problems: list[Problem]
) -> dict[str, Any]:
    merged = VarsFiles()
    for name in play.vars_files:
        if is_template(name):
            try:
                name = str(render_string(name, Scope([extra_vars, play.vars])))
            except TemplateError as exc:
                problems.append(Problem(play.place, f"cannot resolve vars_files entry {name!r}: {exc}"))
                continue
        path = Path(name).expanduser()
        if not path.is_absolute():
            path = playbook.directory / path
        try:
            values, places = load_vars_file_placed(path)
        except InputError as exc:
            problems.extend(
                Problem(
                    p.place, f"{p.message} (vars_files of play '{play.name}', {play.place})", p.key, p.hint
                )
                for p in exc.problems
            )
            continue
        merged.update(values)
        merged.places.update(places)
    return merged

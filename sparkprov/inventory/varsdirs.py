"""`group_vars/` and `host_vars/` folders, read as Ansible's `host_group_vars` vars plugin reads them.

For a group or host NAME, the first of `NAME`, `NAME.yml`, `NAME.yaml`, `NAME.json` that exists is
used; when it is a folder, every file in it (recursively, sorted; hidden files, `~` backups and other
extensions skipped) is merged, later files winning. Only names the inventory knows are looked up.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sparkprov.errors import InputError, Place, Problem
from sparkprov.inventory.model import Inventory, VarsDir
from sparkprov.playbook.variables import load_vars_file_placed

VARS_SUFFIXES = (".yml", ".yaml", ".json")


def load_vars_dirs(inventory: Inventory, base_dir: Path) -> None:
    """Add `base_dir/group_vars/` and `base_dir/host_vars/` to `inventory`'s variables.

    The inventory's own folder is read by `load_inventory`; the executor calls this for the playbook's
    folder, whose files then win over the inventory folder's (Ansible's precedence). A folder already
    read is not read twice. Raises `InputError` listing every unreadable or malformed file.
    """
    base = base_dir.resolve()
    if any(folder.base == base for folder in inventory.vars_dirs):
        return
    problems: list[Problem] = []
    group_vars, group_var_places = _read_named(base / "group_vars", inventory.groups, problems)
    host_vars, host_var_places = _read_named(base / "host_vars", inventory.hosts, problems)
    folder = VarsDir(base, group_vars, host_vars, group_var_places, host_var_places)
    if problems:
        raise InputError(problems)
    inventory.vars_dirs.append(folder)


def _read_named(
    folder: Path, names: Iterable[str], problems: list[Problem]
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Place]]]:
    """The variables of each name that has a file in `folder`, and where each value is written."""
    found: dict[str, dict[str, Any]] = {}
    places: dict[str, dict[str, Place]] = {}
    if not folder.is_dir():
        return found, places
    for name in names:
        files = _files_for(folder, name) if "/" not in name and not name.startswith(".") else []
        if files:
            found[name], places[name] = _merge(files, problems)
    return found, places


def _files_for(folder: Path, name: str) -> list[Path]:
    for candidate in (folder / name, *(folder / f"{name}{suffix}" for suffix in VARS_SUFFIXES)):
        if candidate.is_dir():
            return _folder_files(candidate)
        if candidate.exists():
            return [candidate]
    return []


def _folder_files(folder: Path) -> list[Path]:
    found: list[Path] = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.name.endswith("~"):
            continue
        if entry.is_dir() and not entry.suffix:
            found.extend(_folder_files(entry))
        elif entry.is_file() and entry.suffix in ("", *VARS_SUFFIXES):
            found.append(entry)
    return found


def _merge(files: list[Path], problems: list[Problem]) -> tuple[dict[str, Any], dict[str, Place]]:
    merged: dict[str, Any] = {}
    places: dict[str, Place] = {}
    for path in files:
        try:
            values, written = load_vars_file_placed(path)
        except InputError as exc:
            problems.extend(exc.problems)
            continue
        merged.update(values)
        places.update(written)
    return merged, places

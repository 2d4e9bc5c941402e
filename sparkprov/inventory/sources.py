"""Which files make an inventory, and which format each is in.

`-i` names a file or a folder. A folder stands for every file in it, recursively and sorted, except
hidden ones, `group_vars/`, `host_vars/` and the extensions Ansible ignores (`*.retry`, `~` backups...).
`.ini` files are INI; `.yml`/`.yaml`/`.json` are YAML; any other file is YAML when it reads as a YAML
mapping and INI otherwise (as Ansible falls back from its `yaml` plugin to its `ini` plugin).
"""

from __future__ import annotations

import re
from pathlib import Path

from sparkprov.errors import InputError, Problem
from sparkprov.inventory.ini import read_ini
from sparkprov.inventory.model import Inventory, empty_inventory
from sparkprov.inventory.varsdirs import load_vars_dirs
from sparkprov.inventory.yamlfile import read_yaml
from sparkprov.playbook.yamlsrc import load_yaml, read_text

YAML_SUFFIXES = (".yml", ".yaml", ".json")
IGNORED_NAMES = ("group_vars", "host_vars", "vars_plugins")
IGNORED_ENDINGS = (
    *(".pyc", ".pyo", ".swp", ".bak", "~", ".rpm", ".md", ".txt", ".rst"),  # Ansible's REJECT_EXTS
    *(".orig", ".cfg", ".retry"),
)
_YAML_START = re.compile(r"^(---|[^\s\[=#;]+:(\s.*)?)$")


def load_inventory(path: Path) -> Inventory:
    """Read an inventory file or folder, then the `group_vars/` and `host_vars/` next to it."""
    inventory = empty_inventory(str(path))
    problems: list[Problem] = []
    for file in inventory_files(path):
        try:
            problems.extend(_read_file(inventory, file))
        except InputError as exc:
            problems.extend(exc.problems)
    if problems:
        raise InputError(problems)
    inventory.reconcile()
    load_vars_dirs(inventory, path if path.is_dir() else path.parent)
    return inventory


def inventory_files(path: Path) -> list[Path]:
    if not path.is_dir():
        return [path]
    found: list[Path] = []
    for entry in sorted(path.iterdir()):
        if entry.name.startswith(".") or entry.name in IGNORED_NAMES or entry.name.endswith(IGNORED_ENDINGS):
            continue
        found.extend(inventory_files(entry) if entry.is_dir() else [entry])
    return found


def _read_file(inventory: Inventory, path: Path) -> list[Problem]:
    file = str(path)
    text = read_text(path, what="inventory file")
    if path.suffix == ".ini":
        return read_ini(inventory, text, file)
    if path.suffix in YAML_SUFFIXES:
        return read_yaml(inventory, load_yaml(text, file), file)
    try:
        data = load_yaml(text, file)
    except InputError:
        if _looks_like_yaml(text):
            raise
        return read_ini(inventory, text, file)
    if isinstance(data, dict):
        return read_yaml(inventory, data, file)
    return read_ini(inventory, text, file)


def _looks_like_yaml(text: str) -> bool:
    """Whether the first line that says something starts a YAML document or mapping."""
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", ";")):
            return bool(_YAML_START.match(raw.rstrip()))
    return False

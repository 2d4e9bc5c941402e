"""Where variables come from besides the play: `-e` extra vars and `vars_files`."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from sparkprov.errors import InputError, Place
from sparkprov.playbook.yamlsrc import load_yaml, load_yaml_file


def parse_extra_vars(values: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """`-e KEY=VAL [KEY=VAL...]`, `-e @vars.yml`, or `-e '{"key": "value"}'`; later ones win."""
    merged: dict[str, Any] = {}
    for index, value in enumerate(values, start=1):
        where = f"-e #{index}"
        if value.startswith("@"):
            data = load_yaml_file(Path(value[1:]).expanduser())
            merged.update(_require_mapping(data, value[1:]))
        elif value.lstrip().startswith(("{", "[")):
            merged.update(_require_mapping(load_yaml(value, where), where))
        else:
            merged.update(_parse_pairs(value, where))
    return merged


def _parse_pairs(value: str, where: str) -> dict[str, Any]:
    pairs: dict[str, Any] = {}
    try:
        tokens = shlex.split(value)
    except ValueError as exc:
        raise InputError.single(Place(where), f"cannot read extra vars {value!r}: {exc}") from None
    for token in tokens:
        key, sep, raw = token.partition("=")
        if not sep or not key.isidentifier():
            raise InputError.single(
                Place(where),
                f"expected KEY=VALUE, got {token!r}",
                hint='use -e name=value, -e @file.yml or -e \'{"name": "value"}\'',
            )
        pairs[key] = raw  # Ansible keeps key=value extra vars as strings
    return pairs


def _require_mapping(data: Any, where: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError.single(
            getattr(data, "place", Place(where)),
            f"variables must be a mapping of name: value, got {type(data).__name__}",
        )
    return dict(data)


def load_vars_file(path: Path) -> dict[str, Any]:
    return _require_mapping(load_yaml_file(path), str(path))

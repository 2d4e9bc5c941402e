"""Where variables come from besides the play: `-e` extra vars and `vars_files`."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from sparkprov.errors import InputError, Place, Problem, describe_value
from sparkprov.playbook.yamlsrc import load_yaml, load_yaml_file, plain


def parse_extra_vars(values: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """`-e KEY=VAL [KEY=VAL...]`, `-e @vars.yml`, or `-e '{"key": "value"}'`; later ones win."""
    merged: dict[str, Any] = {}
    problems: list[Problem] = []
    for index, value in enumerate(values, start=1):
        try:
            merged.update(_parse_one(value, f"-e #{index}"))
        except InputError as exc:
            problems.extend(exc.problems)
    if problems:
        raise InputError(problems)
    return merged


def _parse_one(value: str, where: str) -> dict[str, Any]:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError.single(
            Place(where), "extra vars are not valid UTF-8", hint="pass UTF-8 text"
        ) from None
    if value.startswith("@"):
        data = load_yaml_file(Path(value[1:]).expanduser(), what=f"extra vars file ({where})")
        return _require_mapping(data, value[1:])
    if value.lstrip().startswith(("{", "[")):
        return _require_mapping(load_yaml(value, where), where)
    return _parse_pairs(value, where)


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
            f"variables must be a mapping of name: value, got {describe_value(data)}",
        )
    return dict(data)


def load_vars_file_placed(path: Path) -> tuple[dict[str, Any], dict[str, Place]]:
    """A vars file's variables (plain data) and where each one's value is written."""
    data = load_yaml_file(path, what="vars file")
    places = dict(getattr(data, "value_places", {}))
    return plain(_require_mapping(data, str(path))), places

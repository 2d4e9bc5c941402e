"""JSON Schema validation of plays, tasks and module arguments, reported as located problems.

Schemas live in the top-level `schemas/` directory (one per module, plus `play.json` and
`task.json`). jsonschema's own messages are rewritten into what a user can act on: unknown keys
list the valid ones and suggest the closest, type errors say what was expected. Values that are
still Jinja templates are not judged here: they are checked again once rendered.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from functools import cache
from typing import Any

from sparkprov.errors import Place, Problem, describe_value
from sparkprov.playbook.templating import is_template
from sparkprov.playbook.yamlsrc import place_of
from sparkprov.resources import data_dir

_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean (true/false)",
    "null": "null",
}


def closest(word: str, candidates: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


@cache
def _registry() -> Any:
    from referencing import Registry, Resource

    root = data_dir("schemas")
    resources = []
    for path in sorted(root.rglob("*.json")):
        contents = json.loads(path.read_text(encoding="utf-8"))
        resources.append((contents["$id"], Resource.from_contents(contents)))
    return Registry().with_resources(resources)


@cache
def load_schema(name: str) -> dict[str, Any]:
    """`name` is a path under schemas/ without .json, e.g. 'play' or 'modules/copy'."""
    path = data_dir("schemas") / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8"))


@cache
def _validator(name: str) -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(load_schema(name), registry=_registry())


def module_schema_names() -> list[str]:
    return sorted(p.stem for p in (data_dir("schemas") / "modules").glob("*.json"))


def validate(
    instance: Any,
    schema_name: str,
    *,
    root: Any,
    base_path: list[Any],
    fallback: Place,
    what: str,
) -> list[Problem]:
    """Validate `instance` (found at `base_path` below `root`) and return its problems, located."""
    validator = _validator(schema_name)
    problems: list[Problem] = []
    seen: set[tuple[str, str]] = set()
    for error in validator.iter_errors(instance):
        for problem in _describe(error, instance, root, base_path, fallback, what, schema_name):
            key = (str(problem.place), problem.message)
            if key not in seen:
                seen.add(key)
                problems.append(problem)
    return _without_echoes(problems)


def _without_echoes(problems: list[Problem]) -> list[Problem]:
    """A misspelt key also makes its correct spelling 'missing'; report only the misspelling."""
    suggested = {p.hint.split("'")[1] for p in problems if p.hint and p.hint.startswith("did you mean '")}
    return [
        p
        for p in problems
        if not (p.message.endswith(f"missing required key '{p.key}'") and p.key in suggested)
    ]


def _value_at(instance: Any, path: Iterable[Any]) -> Any:
    for step in path:
        instance = instance[step]
    return instance


def _custom_error(schema: Any, schema_path: Iterable[Any]) -> str | None:
    """The deepest `x-error` message on the schema path of an error (set on allOf items, if/then...)."""
    message = schema.get("x-error") if isinstance(schema, dict) else None
    node = schema
    for step in schema_path:
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            break
        if isinstance(node, dict) and "x-error" in node:
            message = node["x-error"]
    return message


def _describe(
    error: Any,
    instance: Any,
    root: Any,
    base_path: list[Any],
    fallback: Place,
    what: str,
    schema_name: str,
) -> list[Problem]:
    path = list(error.absolute_path)
    place = place_of(root, [*base_path, *path]) or fallback
    value = error.instance
    if is_template(value):
        return []  # judged after rendering
    label = str(path[-1]) if path else None
    subject = f"'{'.'.join(str(p) for p in path)}'" if path else what

    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        problems = []
        for key in sorted(set(value) - set(allowed), key=str):
            suggestion = closest(str(key), allowed)
            hint = f"did you mean '{suggestion}'? " if suggestion else ""
            hint += f"valid: {', '.join(allowed)}"
            key_place = place_of(root, [*base_path, *path, key], key=True) or place
            where = f"{subject} of {what}" if path else what
            problems.append(Problem(key_place, f"unknown key '{key}' in {where}", key=str(key), hint=hint))
        return problems
    custom = _custom_error(load_schema(schema_name), error.absolute_schema_path)
    if custom and error.validator not in ("additionalProperties", "type", "enum"):
        return [Problem(place, f"{what}: {custom}", key=label)]
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return [Problem(place, f"{what} is missing required key '{missing}'", key=missing)]
    if error.validator == "type":
        expected = error.schema["type"]
        names = [expected] if isinstance(expected, str) else expected
        expected_text = " or ".join(_TYPE_NAMES.get(n, n) for n in names)
        return [
            Problem(
                place,
                f"{subject} in {what} must be {expected_text}, got {describe_value(value)}",
                key=label,
            )
        ]
    if error.validator == "enum":
        options = ", ".join(repr(o) for o in error.schema["enum"])
        suggestion = closest(str(value), [str(o) for o in error.schema["enum"]])
        enum_hint = f"did you mean '{suggestion}'?" if suggestion else None
        return [
            Problem(
                place,
                f"{subject} in {what} must be one of {options}, got {value!r}",
                key=label,
                hint=enum_hint,
            )
        ]
    if error.validator in ("anyOf", "oneOf") and "x-expected" in error.schema:
        return [
            Problem(
                place,
                f"{subject} in {what} must be {error.schema['x-expected']}, got {describe_value(value)}",
                key=label,
            )
        ]
    if error.validator in ("anyOf", "oneOf") and error.context:
        # Report the branch that got furthest: its errors are the most specific.
        best = max(error.context, key=lambda e: len(list(e.absolute_path)))
        return _describe(best, instance, root, base_path, fallback, what, schema_name)
    return [Problem(place, f"{subject} in {what}: {error.message}", key=label)]


_TRUE = ("true", "yes", "on", "1", "y")
_FALSE = ("false", "no", "off", "0", "n", "")


def coerce(args: dict[str, Any], schema_name: str) -> dict[str, Any]:
    """Rendered values are strings ("{{ flag }}" with -e flag=true gives 'true'); turn them into the
    booleans and numbers the module's schema declares, as Ansible's argument spec does."""
    properties = load_schema(schema_name).get("properties", {})
    return {key: _coerce_value(value, properties.get(key, {})) for key, value in args.items()}


def _coerce_value(value: Any, schema: dict[str, Any]) -> Any:
    if not isinstance(value, str):
        return value
    declared = schema.get("type")
    types = {declared} if isinstance(declared, str) else set(declared or ())
    if "string" in types or not types:
        return value
    text = value.strip()
    if "boolean" in types and text.lower() in _TRUE + _FALSE:
        return text.lower() in _TRUE
    if "integer" in types and text.lstrip("-").isdigit():
        return int(text)
    if "number" in types:
        try:
            return float(text)
        except ValueError:
            return value
    return value

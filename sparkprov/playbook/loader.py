"""Turn a playbook file into typed `Playbook` objects, reporting every input problem at once."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparkprov import verify
from sparkprov.errors import InputError, Place, Problem, describe_value
from sparkprov.modules import canonical_name, get_module, module_names
from sparkprov.playbook.model import LoopControl, Play, Playbook, Task
from sparkprov.playbook.schema import closest, load_schema, validate
from sparkprov.playbook.yamlsrc import YamlMap, load_yaml_file, place_of, plain

_LOOP_KEYWORDS = ("loop", "with_items", "with_list", "with_dict")


@dataclass(frozen=True)
class _Catalogue:
    """What the one action key of an entry names: a module (tasks, handlers) or a verification step."""

    noun: str
    schema_dir: str  # argument schemas are schemas/<schema_dir>/<name>.json
    names: Callable[[], list[str]]
    canonical: Callable[[str], str | None]
    free_form: Callable[[str], str | None]
    keywords: frozenset[str] | None = None  # the task keywords allowed; None: all of them
    # Problems the schema cannot see, as (path below the arguments, message).
    more_problems: Callable[[str, dict[str, Any]], list[tuple[list[str], str]]] = lambda name, args: []


_MODULES = _Catalogue("module", "modules", module_names, canonical_name, lambda m: get_module(m).free_form)
_STEPS = _Catalogue(
    "verification step",
    "verify",
    verify.step_names,
    lambda name: name if verify.is_step(name) else None,
    lambda name: verify.get_step(name).free_form,
    verify.KEYWORDS,
    lambda name, args: verify.get_step(name).expectation_problems(args),
)


def task_keywords() -> list[str]:
    return sorted(load_schema("task")["properties"])


def load_playbook(path: Path) -> Playbook:
    data = load_yaml_file(path, what="playbook")
    file = str(path)
    if data is None or data == []:
        raise InputError.single(
            Place(file, 1), "playbook is empty", hint="a playbook is a list of plays: - hosts: all ..."
        )
    if not isinstance(data, list):
        raise InputError.single(
            getattr(data, "place", Place(file, 1)),
            f"a playbook must be a list of plays, got {describe_value(data)}",
            hint="start each play with '- hosts: ...'",
        )
    problems: list[Problem] = []
    plays = []
    for index, raw in enumerate(data):
        play = _parse_play(raw, data, [index], file, problems)
        if play is not None:
            plays.append(play)
    if problems:
        raise InputError(problems)
    return Playbook(path=path, plays=tuple(plays))


def _as_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip()) if "," in value else (value,)
    return tuple(str(v) for v in value)


def _parse_play(raw: Any, root: Any, path: list[Any], file: str, problems: list[Problem]) -> Play | None:
    place = place_of(root, path) or Place(file)
    if not isinstance(raw, dict):
        problems.append(Problem(place, f"each play must be a mapping, got {describe_value(raw)}"))
        return None
    found = validate(raw, "play", root=root, base_path=path, fallback=place, what="play")
    problems.extend(found)
    kinds = (
        ("tasks", "task", _MODULES),
        ("handlers", "handler", _MODULES),
        ("verify", "verify step", _STEPS),
    )
    parsed: dict[str, tuple[Task, ...]] = {}
    for key, kind, catalogue in kinds:
        items = []
        entries = raw.get(key)
        for i, item in enumerate(entries if isinstance(entries, list) else []):
            task = parse_task(item, root, [*path, key, i], file, problems, kind=kind, catalogue=catalogue)
            if task is not None:
                items.append(task)
        parsed[key] = tuple(items)
    if found:  # the tasks' problems were collected too, so one run reports everything
        return None
    serial = raw.get("serial")
    return Play(
        name=str(raw.get("name") or ",".join(_as_tuple(raw["hosts"]))),
        hosts=_as_tuple(raw["hosts"]),
        place=place,
        vars=plain(raw.get("vars") or {}),
        var_places=dict(getattr(raw.get("vars"), "value_places", {})),
        vars_files=_as_tuple(raw.get("vars_files")),
        tasks=parsed["tasks"],
        handlers=parsed["handlers"],
        verify=parsed["verify"],
        become=raw.get("become", False),
        become_user=raw.get("become_user", "root"),
        gather_facts=raw.get("gather_facts", True),
        serial=tuple(serial) if isinstance(serial, list) else ((serial,) if serial is not None else ()),
        max_fail_percentage=raw.get("max_fail_percentage"),
        any_errors_fatal=raw.get("any_errors_fatal", False),
        tags=frozenset(_as_tuple(raw.get("tags"))),
        environment=dict(raw.get("environment") or {}),
    )


_FREE_FORM_OPTIONS = re.compile(
    r"""(?:^|(?<=\s))(creates|removes|chdir|executable|stdin)=('[^']*'|"[^"]*"|\S+)(?=\s|$)"""
)


def parse_kv(text: str, free_form: str | None) -> dict[str, Any]:
    """Ansible's `key=value` argument strings. For free-form modules (command, shell) only their
    options (creates=, chdir=...) are taken out; the rest is the command, kept exactly as written
    (newlines, quotes and spacing matter to a shell script)."""
    if free_form is not None:
        args: dict[str, Any] = {m.group(1): _unquote(m.group(2)) for m in _FREE_FORM_OPTIONS.finditer(text)}
        command = _FREE_FORM_OPTIONS.sub("", text).strip()
        if command:
            args[free_form] = command
        return args
    args = {}
    for token in shlex.split(text, posix=True):
        key, sep, value = token.partition("=")
        if not (sep and key.isidentifier()):
            raise ValueError(f"expected key=value, got '{token}'")
        args[key] = value
    return args


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _module_args(
    raw: dict[str, Any], key: str, module: str, place: Place, problems: list[Problem], catalogue: _Catalogue
) -> dict[str, Any] | None:
    value = raw[key]
    free_form = catalogue.free_form(module)
    if value is None:
        args: dict[str, Any] = {}
    elif isinstance(value, dict):
        args = dict(value)
    elif isinstance(value, str):
        try:
            args = parse_kv(value, free_form)
        except ValueError as exc:
            problems.append(
                Problem(place, f"cannot read arguments of '{key}': {exc}", key=key, hint="use a mapping")
            )
            return None
    else:
        problems.append(Problem(place, f"arguments of '{key}' must be a mapping or a string", key=key))
        return None
    extra = raw.get("args")
    if isinstance(extra, dict):
        args = {**extra, **args}
    aliases = load_schema(f"{catalogue.schema_dir}/{module}").get("x-aliases", {})
    for alias, target in aliases.items():
        if alias in args and target not in args:
            args[target] = args.pop(alias)
    return args


def parse_task(
    raw: Any,
    root: Any,
    path: list[Any],
    file: str,
    problems: list[Problem],
    *,
    kind: str = "task",
    catalogue: _Catalogue = _MODULES,
) -> Task | None:
    place = place_of(root, path) or Place(file)
    if not isinstance(raw, dict):
        problems.append(Problem(place, f"each {kind} must be a mapping, got {describe_value(raw)}"))
        return None
    keywords = set(task_keywords())
    module_keys = [k for k in raw if k not in keywords]
    name = str(raw.get("name") or "")
    label = f"{kind} '{name}'" if name else kind
    noun = catalogue.noun
    if not module_keys:
        problems.append(
            Problem(
                place,
                f"{label} has no {noun}",
                hint=f"add exactly one of: {', '.join(catalogue.names())}",
            )
        )
        return None
    known = [k for k in module_keys if catalogue.canonical(str(k))]
    for key in module_keys:
        if key in known:
            continue
        key_place = place_of(root, [*path, key], key=True) or place
        suggestion = _suggest_module(str(key), keywords, catalogue.names())
        hint = f"did you mean '{suggestion}'? " if suggestion else ""
        problems.append(
            Problem(
                key_place,
                f"unknown {noun} or keyword '{key}' in {label}",
                key=str(key),
                hint=hint + f"{noun}s: {', '.join(catalogue.names())}",
            )
        )
    if len(known) > 1:
        problems.append(
            Problem(
                place, f"{label} has more than one {noun}: {', '.join(known)}", hint="split it in two tasks"
            )
        )
    for key in raw:
        if catalogue.keywords is not None and key in keywords and key not in catalogue.keywords:
            problems.append(
                Problem(
                    place_of(root, [*path, key], key=True) or place,
                    f"'{key}' is not supported in a {kind}",
                    key=str(key),
                    hint=f"a {kind} takes: {', '.join(sorted(catalogue.keywords))}",
                )
            )
    if len(known) != 1 or len(known) != len(module_keys):
        return None
    key = known[0]
    module = catalogue.canonical(key)
    assert module is not None
    keyword_part = {k: v for k, v in raw.items() if k != key}
    found = validate(keyword_part, "task", root=root, base_path=path, fallback=place, what=label)
    args = _module_args(raw, key, module, place_of(root, [*path, key]) or place, problems, catalogue)
    if args is not None:
        args_root = root if isinstance(raw.get(key), YamlMap) else None
        args_place = place_of(root, [*path, key]) or place
        found += validate(
            args,
            f"{catalogue.schema_dir}/{module}",
            root=args_root,
            base_path=[*path, key] if args_root is not None else [],
            fallback=args_place,
            what=f"{noun} '{module}' of {label}",
        )
        if not found:
            found += [
                Problem(place_of(root, [*path, key, *sub]) or args_place, f"{label}: {message}", key=sub[-1])
                for sub, message in catalogue.more_problems(module, args)
            ]
    problems.extend(found)
    if found or args is None:
        return None
    return _build_task(plain(raw), module, plain(args), name, place)


def _suggest_module(written: str, keywords: set[str], names: list[str]) -> str | None:
    """Closest module or keyword, keeping an `ansible.builtin.` style prefix the user wrote."""
    prefix, _, bare = written.rpartition(".")
    if prefix:
        match = closest(bare, names)
        return f"{prefix}.{match}" if match else None
    return closest(written, [*names, *keywords])


def _conditions(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _build_task(raw: dict[str, Any], module: str, args: dict[str, Any], name: str, place: Place) -> Task:
    loop = None
    for keyword in _LOOP_KEYWORDS:
        if keyword in raw:
            loop = raw[keyword]
            if keyword in ("with_dict", "with_items"):
                loop = {f"__{keyword}__": loop}
            break
    control = raw.get("loop_control") or {}
    until = _conditions(raw.get("until"))
    return Task(
        name=name or f"{module} {_args_label(args)}".strip(),
        generated_name=not name,
        module=module,
        args=args,
        place=place,
        when=_conditions(raw.get("when")),
        loop=loop,
        loop_control=LoopControl(**control),
        register=raw.get("register"),
        notify=_as_tuple(raw.get("notify")),
        listen=_as_tuple(raw.get("listen")),
        tags=frozenset(_as_tuple(raw.get("tags"))),
        become=raw.get("become"),
        become_user=raw.get("become_user"),
        retries=raw.get("retries", 3 if until else None),
        delay=raw.get("delay", 5),
        backoff=raw.get("backoff", 1.0),
        until=until,
        ignore_errors=raw.get("ignore_errors", False),
        no_log=bool(raw.get("no_log", False)),
        check_mode=raw.get("check_mode"),
        changed_when=_conditions(raw["changed_when"]) if "changed_when" in raw else None,
        failed_when=_conditions(raw["failed_when"]) if "failed_when" in raw else None,
        vars=dict(raw.get("vars") or {}),
        environment=dict(raw.get("environment") or {}),
        timeout=raw.get("timeout"),
    )


def _args_label(args: dict[str, Any]) -> str:
    for key in ("cmd", "path", "dest", "name", "msg"):
        if key in args:
            return str(args[key])
    return ""

"""YAML loading that remembers where every node was written.

Mappings and sequences come back as `YamlMap` / `YamlSeq` (plain dict / list subclasses) that carry
the place of the node and of each key and item, so later layers can point at `file:line:column`
without ever seeing raw YAML. Duplicate keys, non-UTF-8 text, oversized files and alias bombs are
reported as input problems instead of being silently accepted.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, overload

import yaml

from sparkprov.errors import InputError, Place, Problem

MAX_FILE_BYTES = 2 * 1024 * 1024  # far above real playbooks; keeps rejecting a bad one under 1 s
MAX_EXPANDED_NODES = 200_000

try:  # libyaml is much faster and gives the same marks
    _BaseLoader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _BaseLoader = yaml.SafeLoader


class YamlMap(dict):
    place: Place
    key_places: dict[Any, Place]
    value_places: dict[Any, Place]


class YamlSeq(list):
    place: Place
    item_places: Sequence[Place]


class _ItemPlaces(Sequence[Place]):
    """The places of a sequence's items, made when asked for: a long list has many, few are asked."""

    def __init__(self, file: str, marks: list[Any]) -> None:
        self._file = file
        self._marks = marks

    def __len__(self) -> int:
        return len(self._marks)

    @overload
    def __getitem__(self, index: int) -> Place: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Place]: ...
    def __getitem__(self, index: int | slice) -> Place | Sequence[Place]:
        if isinstance(index, slice):
            return [_place(self._file, mark) for mark in self._marks[index]]
        return _place(self._file, self._marks[index])


def _place(file: str, mark: Any) -> Place:
    return Place(file, mark.line + 1, mark.column + 1)


def _located_loader(file: str, problems: list[Problem]) -> type:
    class Loader(_BaseLoader):
        where: str | None = None  # whose value is being read, for messages: "'retries'"

        def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
            # Scalars are most of a document and need none of the alias and recursion bookkeeping.
            if type(node) is yaml.ScalarNode:
                construct = self.yaml_constructors.get(node.tag)
                if construct is not None:
                    return construct(self, node)
            return super().construct_object(node, deep)

        def construct_located_map(self, node: yaml.MappingNode) -> Any:
            data = YamlMap()
            data.place = _place(file, node.start_mark)
            data.key_places = {}
            data.value_places = {}
            yield data
            self.flatten_mapping(node)
            for key_node, value_node in node.value:
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, float, bool)) and key is not None:
                    problems.append(
                        Problem(_place(file, key_node.start_mark), "mapping keys must be plain scalars")
                    )
                    continue
                if key in data.key_places:
                    first = data.key_places[key]
                    problems.append(
                        Problem(
                            _place(file, key_node.start_mark),
                            f"duplicate key '{key}' (first defined at line {first.line})",
                            key=str(key),
                            hint="YAML keeps only one of them; remove or rename one",
                        )
                    )
                data[key] = self._construct_within(value_node, f"'{key}'")
                data.key_places[key] = _place(file, key_node.start_mark)
                data.value_places[key] = _place(file, value_node.start_mark)

        def construct_located_seq(self, node: yaml.SequenceNode) -> Any:
            data = YamlSeq()
            data.place = _place(file, node.start_mark)
            data.item_places = _ItemPlaces(file, [child.start_mark for child in node.value])
            yield data
            item = f"an item of {self.where}" if self.where else "a list item"
            data.extend(self._construct_within(child, item) for child in node.value)

        def _construct_within(self, node: yaml.Node, where: str) -> Any:
            outer, self.where = self.where, where
            try:
                return self.construct_object(node, deep=True)
            finally:
                self.where = outer

    Loader.add_constructor("tag:yaml.org,2002:map", Loader.construct_located_map)
    Loader.add_constructor("tag:yaml.org,2002:seq", Loader.construct_located_seq)
    for kind in ("int", "float", "bool", "timestamp"):
        tag = f"tag:yaml.org,2002:{kind}"
        construct = Loader.yaml_constructors[tag]
        if kind == "int":
            construct = _decimal_first(construct)
        Loader.add_constructor(tag, _checked_scalar(construct, kind, file, problems))
    return Loader


def _decimal_first(construct_int: Any) -> Any:
    """Plain decimals (nearly every int written) without PyYAML's slower general int reader, which
    handles signs, underscores, octal, hex and base 60."""

    def construct(loader: Any, node: yaml.ScalarNode) -> Any:
        text = node.value
        if text.isascii() and text.isdigit() and (text[0] != "0" or text == "0"):
            return int(text)
        return construct_int(loader, node)

    return construct


def _checked_scalar(construct: Any, kind: str, file: str, problems: list[Problem]) -> Any:
    """A scalar PyYAML resolves to a type but cannot build (2024-13-01, !!int three) is a located
    problem, not a traceback."""

    def checked(loader: Any, node: yaml.ScalarNode) -> Any:
        try:
            return construct(loader, node)
        except (ValueError, OverflowError, TypeError, KeyError, AttributeError) as exc:
            where = f"{loader.where}: " if loader.where else ""
            problems.append(
                Problem(
                    _place(file, node.start_mark),
                    f"{where}cannot read {_shown(node.value)} as !!{kind}: {_reason(node.value, exc)}",
                    hint="quote it to keep it as text",
                )
            )
            return node.value

    return checked


def _shown(value: str, most: int = 40) -> str:
    if len(value) <= most:
        return repr(value)
    return f"{value[: most // 2]!r}... ({len(value)} characters)"


def _reason(value: str, exc: Exception) -> str:
    digits = getattr(sys, "get_int_max_str_digits", lambda: 0)()  # Python 3.10.7 and later
    if isinstance(exc, ValueError) and digits and sum(c.isdigit() for c in value) > digits:
        return f"a number of more than {digits} digits is too long to read"
    return str(exc)


def read_text(path: Path, display: str | None = None, *, what: str = "file") -> str:
    """Read a UTF-8 text input file, turning every way it can be unreadable into an InputError."""
    name = display or str(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise InputError.single(
                Place(name),
                f"file is {size} bytes; the limit for playbooks, inventories and vars files is "
                f"{MAX_FILE_BYTES} bytes",
                hint="split it up, or check that this is the file you meant",
            )
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError.single(Place(name), f"{what} not found") from None
    except IsADirectoryError:
        raise InputError.single(Place(name), "is a directory, expected a YAML file") from None
    except PermissionError:
        raise InputError.single(Place(name), "permission denied reading the file") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError.single(
            Place(name, line),
            f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})",
            hint="save the file as UTF-8",
        ) from None


def load_yaml(text: str, file: str) -> Any:
    """Parse one YAML document keeping places; raise InputError listing every problem found."""
    problems: list[Problem] = []
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # text that came from bytes that were not UTF-8 (surrogate escapes)
        raise InputError.single(Place(file), "not valid UTF-8", hint="use UTF-8 text") from None
    loader = _located_loader(file, problems)(text)
    try:
        with _collector_paused():
            data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc, text, file) from None
    except yaml.YAMLError as exc:
        position = getattr(exc, "position", None)  # a reader error: a character YAML refuses
        line = text[:position].count("\n") + 1 if isinstance(position, int) else None
        raise InputError.single(Place(file, line), f"YAML error: {exc}") from None
    except RecursionError:
        raise _too_deep(text, file) from None
    finally:
        loader.dispose()
    if problems:
        raise InputError(problems)
    _check_expansion(data, file, text)
    return data


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Parsing makes millions of objects that all stay alive; the cyclic garbage collector would scan
    them over and over (5 times slower on a large file) to find almost nothing (only a recursive
    alias makes a cycle, collected later)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _too_deep(text: str, file: str) -> InputError:
    """Where the document nests deepest (PyYAML's parser reads events without recursing)."""
    depth = deepest = 0
    deepest_mark = None
    for event in yaml.parse(text, Loader=_BaseLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > deepest:
                deepest, deepest_mark = depth, event.start_mark
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return InputError.single(
        _place(file, deepest_mark) if deepest_mark else Place(file),
        f"YAML is nested {deepest} levels deep here, too deep to read",
        hint="flatten the data; playbooks and variables rarely need more than a dozen levels",
    )


def _syntax_error(exc: yaml.MarkedYAMLError, text: str, file: str) -> InputError:
    """PyYAML's message, plus what it leaves out: tabs, the alias name, where a bracket opened."""
    mark = exc.problem_mark or exc.context_mark
    place = _place(file, mark) if mark else Place(file)
    message = " ".join(p for p in (exc.context, exc.problem) if p)
    lines = text.splitlines()
    at = ""
    if mark is not None and mark.line < len(lines):
        at = lines[mark.line][mark.column :]
    hint = None
    if at.startswith("\t") or (
        mark is not None and mark.line < len(lines) and "\t" in lines[mark.line][: mark.column + 1]
    ):
        message += " (a tab character)"
        hint = "YAML does not allow tabs for indentation; indent with spaces"
    elif "undefined alias" in message and at.startswith("*"):
        alias = at[1:].split()[0].rstrip(",]}")
        message += f" '*{alias}'"
        hint = f"define the anchor '&{alias}' before using it"
    context = exc.context_mark
    if context is not None and mark is not None and context.line != mark.line:
        message += f" (the construct started at line {context.line + 1})"
    return InputError.single(place, f"YAML syntax error: {message}", hint=hint)


def load_yaml_file(path: Path, display: str | None = None, *, what: str = "file") -> Any:
    name = display or str(path)
    return load_yaml(read_text(path, name, what=what), name)


def _check_expansion(data: Any, file: str, text: str) -> None:
    """Refuse documents whose aliases expand to a huge tree (the 'billion laughs' attack). Every
    node takes at least a character to write, so only aliases can make a tree larger than its text."""
    if "&" not in text or "*" not in text:
        return  # no anchor or no alias: every node was written out
    limit = max(MAX_EXPANDED_NODES, len(text))
    sizes: dict[int, int] = {}

    def size(node: Any) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        known = sizes.get(id(node))
        if known is not None:
            return known
        sizes[id(node)] = 1  # a recursive alias counts once instead of looping forever
        children = node.values() if isinstance(node, dict) else node
        total = 1 + sum(size(child) for child in children)
        sizes[id(node)] = total
        # Big documents are fine; what aliases multiply (far more nodes than were written) is not.
        if total > limit:
            raise InputError.single(
                Place(file),
                f"document expands to more than {MAX_EXPANDED_NODES} nodes through YAML aliases",
                hint="this looks like an alias bomb; write the data out without nested aliases",
            )
        return total

    size(data)


def place_of(root: Any, path: list[Any] | tuple[Any, ...], *, key: bool = False) -> Place | None:
    """The place of the node at `path` below `root` (or of its key), else of the deepest known parent."""
    node = root
    best: Place | None = getattr(root, "place", None)
    for step in path:
        if isinstance(node, YamlMap) and step in node:
            best = node.key_places[step] if key and step == path[-1] else node.value_places[step]
            node = node[step]
        elif isinstance(node, YamlSeq) and isinstance(step, int) and 0 <= step < len(node):
            best = node.item_places[step]
            node = node[step]
        elif isinstance(node, (dict, list)):
            try:
                node = node[step]
            except (KeyError, IndexError, TypeError):
                break
            best = getattr(node, "place", best)
        else:
            break
    return best


def plain(value: Any) -> Any:
    """The same data as built-in dicts and lists (what templates and modules should see)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value

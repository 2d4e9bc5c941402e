"""Located YAML (sparkprov/playbook/yamlsrc.py): every unreadable or dangerous document is an InputError
naming file, line and column, and every node that loads remembers where it was written."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from sparkprov.errors import InputError, Place, Problem
from sparkprov.playbook.yamlsrc import (
    MAX_EXPANDED_NODES,
    MAX_FILE_BYTES,
    YamlMap,
    YamlSeq,
    load_yaml,
    load_yaml_file,
    place_of,
    read_text,
)

FILE = "site.yml"


def yaml_problems(text: str) -> list[Problem]:
    with pytest.raises(InputError) as info:
        load_yaml(text, FILE)
    return info.value.problems


def only_problem(text: str) -> Problem:
    found = yaml_problems(text)
    assert len(found) == 1, found
    return found[0]


def _bomb(levels: int, width: int, *, mapping: bool) -> str:
    """The 'billion laughs': each level refers `width` times to the one before."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    for level in range(1, levels):
        if mapping:
            body = "{" + ", ".join(f"k{i}: *l{level - 1}" for i in range(width)) + "}"
        else:
            body = "[" + ", ".join([f"*l{level - 1}"] * width) + "]"
        lines.append(f"l{level}: &l{level} {body}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "line", "column", "fragment"),
    [
        pytest.param("a: 1\n  b: 2\n", 2, 4, "mapping values are not allowed", id="value-after-scalar"),
        pytest.param("a:\n  - b\n  c: 1\n", 3, 3, "expected '-' indicator", id="mixed-list-and-map"),
        pytest.param("a: [1, 2\nb: 3\n", 2, 2, "flow sequence", id="unclosed-flow-list"),
        pytest.param("a: {b: 1\n", 2, 1, "flow mapping", id="unclosed-flow-map-at-eof"),
        pytest.param("a: 'open\n", 2, 1, "quoted scalar", id="unclosed-quote"),
        pytest.param("- hosts: all\n---\n- hosts: all\n", 2, 1, "single document", id="two-documents"),
    ],
)
def test_syntax_error_names_line_and_column(text: str, line: int, column: int, fragment: str) -> None:
    problem = only_problem(text)
    assert problem.place == Place(FILE, line, column)
    assert problem.message.startswith("YAML syntax error: ")
    assert fragment in problem.message
    assert str(problem).startswith(f"{FILE}:{line}:{column}: YAML syntax error")


def test_unclosed_bracket_names_where_it_was_opened() -> None:
    problem = only_problem("tasks: [\n  a,\n  b\nother: 1\n")
    assert "line 1" in problem.message


@pytest.mark.parametrize(
    ("text", "line", "column", "key", "first_line"),
    [
        pytest.param("hosts: all\ntasks: []\nhosts: web\n", 3, 1, "hosts", 1, id="top-level"),
        pytest.param(
            "- hosts: all\n  tasks:\n    - copy:\n        dest: /a\n        content: x\n        dest: /b\n",
            6,
            9,
            "dest",
            4,
            id="nested-module-args",
        ),
        pytest.param("{a: 1, b: 2, a: 3}\n", 1, 14, "a", 1, id="flow-mapping"),
        pytest.param("1: one\n2: two\n1: uno\n", 3, 1, "1", 1, id="integer-keys"),
    ],
)
def test_duplicate_key_names_both_lines(text: str, line: int, column: int, key: str, first_line: int) -> None:
    problem = only_problem(text)
    assert problem.place == Place(FILE, line, column)
    assert problem.key == key
    assert problem.message == f"duplicate key '{key}' (first defined at line {first_line})"
    assert problem.hint is not None and "remove or rename one" in problem.hint


def test_every_duplicate_key_is_reported_at_once() -> None:
    found = yaml_problems("a: 1\nb: 2\na: 3\nc:\n  x: 1\n  x: 2\nb: 4\n")
    assert [(p.key, p.place.line) for p in found] == [("a", 3), ("x", 6), ("b", 7)]


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        pytest.param("- hosts: all\n\ttasks: []\n", 2, 1, id="tab-indented-play-key"),
        pytest.param("a:\n\tb: 1\n", 2, 1, id="tab-indented-mapping"),
        pytest.param("- hosts: all\n  tasks:\n\t- debug: {}\n", 3, 1, id="tab-list-item"),
    ],
)
def test_tab_indentation_is_named(text: str, line: int, column: int) -> None:
    problem = only_problem(text)
    assert problem.place == Place(FILE, line, column)
    assert problem.message.startswith("YAML syntax error: ")
    assert "tab" in problem.message.lower()


def test_non_scalar_mapping_key() -> None:
    problem = only_problem("vars:\n  ? [a, b]\n  : 1\n")
    assert problem.place == Place(FILE, 2, 5)
    assert problem.message == "mapping keys must be plain scalars"


def test_undefined_alias_is_a_syntax_error() -> None:
    problem = only_problem("a: 1\nb: *nope\n")
    assert problem.place == Place(FILE, 2, 4)
    assert "undefined alias" in problem.message


def test_undefined_alias_names_the_alias() -> None:
    assert "nope" in only_problem("a: 1\nb: *nope\n").message


@pytest.mark.parametrize("mapping", [False, True], ids=["lists", "mappings"])
def test_alias_bomb_is_refused_quickly(mapping: bool) -> None:
    text = _bomb(levels=9, width=10, mapping=mapping)  # 10**9 nodes once expanded
    started = time.perf_counter()
    problem = only_problem(text)
    assert time.perf_counter() - started < 1.0
    assert problem.place == Place(FILE)
    assert problem.message == (
        f"document expands to more than {MAX_EXPANDED_NODES} nodes through YAML aliases"
    )
    assert problem.hint is not None and "alias bomb" in problem.hint


def test_ordinary_aliases_are_accepted() -> None:
    data = load_yaml(_bomb(levels=3, width=10, mapping=False), FILE)
    assert len(data["l2"]) == 10 and data["l2"][9][9] == ["lol"] * 10


def test_recursive_alias_is_refused_quickly() -> None:
    started = time.perf_counter()
    problem = only_problem("a: &a [1, *a]\n")
    assert time.perf_counter() - started < 1.0
    assert problem.place == Place(FILE, 1, 4)
    assert "recursive" in problem.message


def test_non_utf8_names_byte_offset_and_line(tmp_path: Path) -> None:
    path = tmp_path / FILE
    path.write_bytes(b"- hosts: all\n  name: caf\xe9\n")
    with pytest.raises(InputError) as info:
        load_yaml_file(path, FILE)
    (problem,) = info.value.problems
    assert problem.place == Place(FILE, 2)
    assert problem.message == "not valid UTF-8 (byte 0xe9 at offset 24)"
    assert problem.hint == "save the file as UTF-8"


def test_file_over_size_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.yml"
    with path.open("wb") as handle:  # sparse: nothing is really written or read
        handle.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(InputError) as info:
        read_text(path)
    (problem,) = info.value.problems
    assert problem.place == Place(str(path))
    assert f"file is {MAX_FILE_BYTES + 1} bytes" in problem.message
    assert f"limit for playbooks, inventories and vars files is {MAX_FILE_BYTES} bytes" in problem.message
    assert problem.hint is not None


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(lambda p: None, "file not found", id="missing"),
        pytest.param(lambda p: p.mkdir(), "is a directory, expected a YAML file", id="directory"),
    ],
)
def test_unreadable_file(tmp_path: Path, make: Callable[[Path], object], message: str) -> None:
    path = tmp_path / "vars.yml"
    make(path)
    with pytest.raises(InputError) as info:
        read_text(path, "vars.yml")
    assert [(p.place, p.message) for p in info.value.problems] == [(Place("vars.yml"), message)]


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_document_loads_as_none(text: str) -> None:
    assert load_yaml(text, FILE) is None


def test_nodes_remember_where_they_were_written() -> None:
    data = load_yaml("# header\nplay:\n  hosts: all\n  tasks: [a, b]\n", FILE)
    assert isinstance(data, YamlMap)
    play = data["play"]
    assert isinstance(play, YamlMap) and isinstance(play["tasks"], YamlSeq)
    assert data.key_places["play"] == Place(FILE, 2, 1)
    assert play.key_places["tasks"] == Place(FILE, 4, 3)
    assert play.value_places["hosts"] == Place(FILE, 3, 10)
    assert list(play["tasks"].item_places) == [Place(FILE, 4, 11), Place(FILE, 4, 14)]
    assert place_of(data, ["play", "tasks", 1]) == Place(FILE, 4, 14)
    assert place_of(data, ["play", "hosts"], key=True) == Place(FILE, 3, 3)
    # a path below a scalar, or a missing key, falls back to the deepest known place
    assert place_of(data, ["play", "hosts", "deeper"]) == Place(FILE, 3, 10)
    assert place_of(data, ["play", "missing"]) == Place(FILE, 3, 3)


@pytest.mark.parametrize(
    "written", ["0", "7", "42", "010", "0o17", "0x1f", "1_000", "-5", "+3", "0b101", "190:20:30", "007"]
)
def test_integers_read_as_yaml_1_1_reads_them(written: str) -> None:
    """sparkprov reads plain decimals itself (fast); everything else is PyYAML's, as Ansible reads it."""
    assert load_yaml(f"n: {written}\n", FILE) == yaml.safe_load(f"n: {written}\n")


def test_a_long_list_without_aliases_keeps_every_place() -> None:
    items = MAX_EXPANDED_NODES + 1
    data = load_yaml("ports: [" + ", ".join(["1"] * items) + "]\n", FILE)
    assert len(data["ports"]) == len(data["ports"].item_places) == items
    assert data["ports"].item_places[-1] == Place(FILE, 1, 9 + 3 * (items - 1))

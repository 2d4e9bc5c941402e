"""Invalid input is exit code 4 with a precise message, found before any host is touched (DESIGN.md,
"Exit codes"): playbook shape, plays, tasks and module arguments, inventory, `-e`, `vars_files` and
command-line usage. Unit tests call `load_inputs` and check each `Problem`; a few run the real CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import pytest

from sparkprov.errors import Problem
from sparkprov.modules import module_names
from tests.cli import PLAYBOOK, problems, sparkprov

# Tasks appended to HEAD start on line 4 ("- name: t"); their module key is on line 5.
HEAD = "- hosts: all\n  gather_facts: false\n  tasks:\n"


class Expected(NamedTuple):
    line: int | None
    key: str | None
    message: tuple[str, ...]  # fragments the message must contain
    hint: tuple[str, ...] = ()  # fragments the hint must contain


def check(found: list[Problem], expected: Expected, file: Path | str) -> Problem:
    """The one problem about `expected.key`, checked field by field."""
    matching = [p for p in found if p.key == expected.key]
    assert len(matching) == 1, found
    problem = matching[0]
    assert problem.place.file == str(file)
    assert problem.place.line == expected.line, problem
    for fragment in expected.message:
        assert fragment in problem.message
    for fragment in expected.hint:
        assert problem.hint is not None and fragment in problem.hint, problem
    return problem


def task(body: str) -> str:
    """A playbook with one task named 't' whose remaining lines are `body` (indented 6)."""
    lines = "".join(f"      {line}\n" for line in body.splitlines())
    return f"{HEAD}    - name: t\n{lines}"


# ---------------------------------------------------------------- playbook and play shape

EMPTY = Expected(1, None, ("playbook is empty",), ("a playbook is a list of plays",))


@pytest.mark.parametrize(
    ("playbook", "expected"),
    [
        pytest.param("", EMPTY, id="empty-file"),
        pytest.param("# nothing yet\n", EMPTY, id="only-comments"),
        pytest.param("[]\n", EMPTY, id="empty-list"),
        pytest.param(
            "hosts: all\ntasks: []\n",
            Expected(1, None, ("a playbook must be a list of plays",), ("- hosts: ...",)),
            id="mapping-instead-of-list",
        ),
        pytest.param(
            "- hosts: all\n- just a string\n",
            Expected(2, None, ("each play must be a mapping",)),
            id="play-is-a-string",
        ),
        pytest.param(
            "- hosts: all\n  taks: []\n",
            Expected(
                2, "taks", ("unknown key 'taks' in play",), ("did you mean 'tasks'?", "valid:", "hosts")
            ),
            id="unknown-play-key",
        ),
        pytest.param(
            "- name: web\n  tasks: []\n",
            Expected(1, "hosts", ("play is missing required key 'hosts'",)),
            id="missing-hosts",
        ),
        pytest.param(
            "- hosts: all\n  become: yes please\n",
            Expected(2, "become", ("'become' in play", "a boolean (true/false)", "'yes please'")),
            id="become-not-boolean",
        ),
        pytest.param(
            "- hosts: all\n  serial: x\n",
            Expected(2, "serial", ("'serial' in play must be a batch size", "'30%'", "'x'")),
            id="serial-not-a-batch",
        ),
    ],
)
def test_playbook_and_play_errors(tmp_path: Path, playbook: str, expected: Expected) -> None:
    found = problems(tmp_path, playbook)
    assert len(found) == 1, found
    check(found, expected, tmp_path / PLAYBOOK)


# ---------------------------------------------------------------- tasks and module arguments

MODULES = "modules: " + ", ".join(module_names())  # the lead keeps adding modules


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            "fiel: {path: /x}",
            Expected(5, "fiel", ("unknown module or keyword 'fiel' in task 't'",), ("did you mean 'file'?",)),
            id="unknown-module",
        ),
        pytest.param(
            "ansible.builtin.coppy: {dest: /x, content: a}",
            Expected(
                5, "ansible.builtin.coppy", ("unknown module or keyword 'ansible.builtin.coppy'",), (MODULES,)
            ),
            id="unknown-fqcn-module",
        ),
        pytest.param(
            "file: {path: /x}\ncopy: {dest: /x, content: a}",
            Expected(4, None, ("task 't' has more than one module: file, copy",), ("split it in two tasks",)),
            id="two-modules",
        ),
        pytest.param(
            "when: true",
            Expected(
                4, None, ("task 't' has no module",), ("add exactly one of: " + ", ".join(module_names()),)
            ),
            id="no-module",
        ),
        pytest.param(
            "copy: {dset: /x, content: a}",
            Expected(
                5,
                "dset",
                ("unknown key 'dset' in module 'copy' of task 't'",),
                ("did you mean 'dest'? valid: ", "content, dest, "),
            ),
            id="misspelt-argument",
        ),
        pytest.param(
            "file: {path: /x, mode: [1]}",
            Expected(5, "mode", ("'mode' in module 'file' of task 't' must be an octal mode", "'0644'")),
            id="argument-wrong-type",
        ),
        pytest.param(
            "file: {path: /x, state: directroy}",
            Expected(
                5,
                "state",
                ("'state' in module 'file' of task 't' must be one of", "'directory'", "got 'directroy'"),
                ("did you mean 'directory'?",),
            ),
            id="enum",
        ),
        pytest.param(
            "file: path=/x state=directroy",
            Expected(5, "state", ("got 'directroy'",), ("did you mean 'directory'?",)),
            id="enum-in-free-form",
        ),
        pytest.param(
            "template: {src: app.j2}",
            Expected(5, "dest", ("module 'template' of task 't' is missing required key 'dest'",)),
            id="missing-required",
        ),
        pytest.param(
            "copy: {dest: /x, src: a, content: b}",
            Expected(5, None, ("module 'copy' of task 't'", "'src' and 'content' are mutually exclusive")),
            id="mutually-exclusive",
        ),
        pytest.param(
            "file: {path: /x, state: link}",
            Expected(5, None, ("module 'file' of task 't'", "state 'link' and 'hard' need 'src'")),
            id="link-without-src",
        ),
        pytest.param(
            "lineinfile: {path: /x}",
            Expected(5, None, ("module 'lineinfile' of task 't'", "state 'present' needs 'line'")),
            id="lineinfile-without-line",
        ),
        pytest.param(
            "file: path=/x bogus",
            Expected(5, "file", ("cannot read arguments of 'file': expected key=value, got 'bogus'",)),
            id="free-form-parse-error",
        ),
        pytest.param(
            "debug: {msg: hi}\nretries: many",
            Expected(6, "retries", ("'retries' in task 't' must be an integer", "'many'")),
            id="retries-not-integer",
        ),
        pytest.param(
            "debug: {msg: hi}\nloop: [1]\nloop_control: {loopvar: x}",
            Expected(7, "loopvar", ("unknown key 'loopvar'",), ("did you mean 'loop_var'?", "index_var")),
            id="loop-control-key",
        ),
    ],
)
def test_task_errors(tmp_path: Path, body: str, expected: Expected) -> None:
    check(problems(tmp_path, task(body)), expected, tmp_path / PLAYBOOK)


def test_misspelt_fqcn_module_is_suggested(tmp_path: Path) -> None:
    (problem,) = problems(tmp_path, task("ansible.builtin.coppy: {dest: /x, content: a}"))
    assert problem.hint is not None and "did you mean 'ansible.builtin.copy'?" in problem.hint


def test_misspelt_required_argument_is_one_problem(tmp_path: Path) -> None:
    assert [p.key for p in problems(tmp_path, task("copy: {dset: /x, content: a}"))] == ["dset"]


def test_loop_control_key_names_loop_control(tmp_path: Path) -> None:
    (problem,) = problems(tmp_path, task("debug: {msg: hi}\nloop: [1]\nloop_control: {loopvar: x}"))
    assert "loop_control" in problem.message


def test_empty_hosts_list_says_empty(tmp_path: Path) -> None:
    (problem,) = problems(tmp_path, "- hosts: []\n")
    assert "empty" in problem.message


# `_describe_value` (schema.py) looks the type up with `type(value)`, so the YamlMap/YamlSeq
# subclasses fall through to their class name; loader/variables print `type(data).__name__`.
@pytest.mark.parametrize(
    ("playbook", "extra"),
    [
        pytest.param("hosts: all\n", (), id="playbook-mapping"),
        pytest.param("- just a string\n", (), id="play-string"),
        pytest.param("- hosts: all\n  tasks: {a: 1}\n", (), id="tasks-mapping"),
        pytest.param("- hosts: all\n  vars: [a]\n", (), id="vars-list"),
        pytest.param(task("file: {path: /x, mode: [1]}"), (), id="mode-list"),
        pytest.param(HEAD + "    - debug: {msg: hi}\n", ("[1, 2]",), id="extra-vars-list"),
    ],
)
def test_values_are_described_in_user_terms(tmp_path: Path, playbook: str, extra: tuple[str, ...]) -> None:
    (problem,) = problems(tmp_path, playbook, extra=extra)
    for python_name in ("YamlMap", "YamlSeq", "got str", "got dict", "got list"):
        assert python_name not in problem.message


# ---------------------------------------------------------------- all problems at once


def test_every_problem_in_every_input_is_reported_at_once(tmp_path: Path) -> None:
    playbook = (
        HEAD
        + "    - name: a\n      fiel: {path: /x}\n"  # 5
        + "    - name: b\n      file: {path: /x, state: directroy}\n"  # 7
        + "    - name: c\n      debug: {msg: hi}\n      retries: many\n"  # 10
        + "    - name: d\n      file: {path: /x, mode: [1]}\n"  # 12
        + "- hosts: all\n  serial: x\n"  # 14
    )
    found = problems(
        tmp_path, playbook, files={"inv.yml": "all:\n  hots: {}\n"}, inventory="inv.yml", extra=("oops",)
    )
    assert [(Path(p.place.file).name, p.place.line, p.key) for p in found] == [
        (PLAYBOOK, 5, "fiel"),
        (PLAYBOOK, 7, "state"),
        (PLAYBOOK, 10, "retries"),
        (PLAYBOOK, 12, "mode"),
        (PLAYBOOK, 14, "serial"),
        ("inv.yml", 2, "hots"),
        ("-e #1", None, None),
    ]


def test_play_error_does_not_hide_task_errors(tmp_path: Path) -> None:
    found = problems(tmp_path, "- hosts: all\n  become: yes please\n  tasks:\n    - fiel: {path: /x}\n")
    assert sorted(str(p.key) for p in found) == ["become", "fiel"]


def test_every_bad_extra_var_is_reported(tmp_path: Path) -> None:
    found = problems(tmp_path, HEAD + "    - debug: {}\n", extra=("oops", "also bad"))
    assert [p.place.file for p in found] == ["-e #1", "-e #2"]


# ---------------------------------------------------------------- inventory, -l, -e, vars_files

GOOD = HEAD + "    - name: t\n      debug: {msg: hi}\n"
INVENTORY = "all:\n  hosts:\n    spark1: {}\n  children:\n    gpu:\n      hosts: {spark2: }\n"


@pytest.mark.parametrize(
    ("files", "inventory", "limit", "file", "expected"),
    [
        pytest.param(
            {}, "nope.yml", None, "nope.yml", Expected(None, None, ("file not found",)), id="missing-i"
        ),
        pytest.param(
            {"inv.yml": "- spark1\n"},
            "inv.yml",
            None,
            "inv.yml",
            Expected(1, None, ("an inventory must be a mapping with an 'all' group",), ("all:", "hosts:")),
            id="inventory-not-mapping",
        ),
        pytest.param(
            {"inv.yml": "all:\n  hots:\n    spark1: {}\n"},
            "inv.yml",
            None,
            "inv.yml",
            Expected(2, "hots", ("unknown key 'hots' in group 'all'",), ("'hosts', 'vars' and 'children'",)),
            id="unknown-group-key",
        ),
        pytest.param(
            {"inv.yml": INVENTORY},
            "inv.yml",
            "spark9*:!gpu",
            "-l spark9*:!gpu",
            Expected(
                None, None, ("host pattern 'spark9*:!gpu' matches no host in",), ("spark1, spark2", "gpu")
            ),
            id="limit-matches-nothing",
        ),
    ],
)
def test_inventory_errors(
    tmp_path: Path, files: dict[str, str], inventory: str, limit: str | None, file: str, expected: Expected
) -> None:
    found = problems(tmp_path, GOOD, files=files, inventory=inventory, limit=limit)
    assert len(found) == 1, found
    where = file if file.startswith("-l") else tmp_path / file
    check(found, expected, where)


@pytest.mark.parametrize(
    ("kwargs", "role"),
    [
        pytest.param({"inventory": "nope.yml"}, "inventory", id="inventory"),
        pytest.param({"extra": ("@nope.yml",)}, "-e", id="extra-vars"),
    ],
)
def test_missing_file_says_what_it_was_for(tmp_path: Path, kwargs: dict[str, object], role: str) -> None:
    (problem,) = problems(tmp_path, GOOD, **kwargs)
    assert role in problem.message


@pytest.mark.parametrize(
    ("extra", "file", "expected"),
    [
        pytest.param(
            "@{root}/missing.yml",
            "{root}/missing.yml",
            Expected(None, None, ("extra vars file (-e #1) not found",)),
            id="at-missing",
        ),
        pytest.param(
            "not a pair",
            "-e #1",
            Expected(None, None, ("expected KEY=VALUE, got 'not'",), ("-e name=value", "-e @file.yml")),
            id="not-a-pair",
        ),
        pytest.param(
            "[1,2]", "-e #1", Expected(1, None, ("variables must be a mapping of name: value",)), id="a-list"
        ),
        pytest.param("{a: [1}", "-e #1", Expected(1, None, ("YAML syntax error",)), id="bad-yaml"),
    ],
)
def test_extra_vars_errors(tmp_path: Path, extra: str, file: str, expected: Expected) -> None:
    found = problems(tmp_path, GOOD, extra=(extra.replace("{root}", str(tmp_path)),))
    assert len(found) == 1, found
    check(found, expected, file.replace("{root}", str(tmp_path)))


@pytest.mark.parametrize(
    ("files", "file", "expected"),
    [
        pytest.param({}, "vars.yml", Expected(None, None, ("file not found",)), id="missing"),
        pytest.param(
            {"vars.yml": "- a\n- b\n"},
            "vars.yml",
            Expected(1, None, ("variables must be a mapping of name: value",)),
            id="a-list",
        ),
        pytest.param(
            {"vars.yml": "a: 1\na: 2\n"},
            "vars.yml",
            Expected(2, "a", ("duplicate key 'a'",)),
            id="duplicate-key",
        ),
    ],
)
def test_vars_files_errors(tmp_path: Path, files: dict[str, str], file: str, expected: Expected) -> None:
    playbook = "- name: web\n  hosts: all\n  gather_facts: false\n  vars_files: [vars.yml]\n  tasks: []\n"
    found = problems(tmp_path, playbook, files=files)
    assert len(found) == 1, found
    problem = check(found, expected, tmp_path / file)
    assert f"(vars_files of play 'web', {tmp_path / PLAYBOOK}:1:3)" in problem.message


# ---------------------------------------------------------------- through the command line

BAD_ARG = task("copy: {dset: /tmp/x, content: a}")  # problem at site.yml:5:14


def _marker_playbook(root: Path, body: str) -> str:
    """A first task that would create root/marker, then `body` (the invalid part)."""
    return HEAD + f"    - name: marker\n      file: {{path: {root / 'marker'}, state: touch}}\n" + body


@pytest.mark.parametrize(
    ("body", "args", "expected"),
    [
        pytest.param(
            "    - name: t\n      fiel: {path: /tmp/x}\n",
            (),
            (f"{PLAYBOOK}:7:7: unknown module or keyword 'fiel' in task 't'", "did you mean 'file'?"),
            id="schema",
        ),
        pytest.param(
            "    - name: t\n      debug: {msg: '{{ undefined_thing }}'}\n",
            (),
            (f"{PLAYBOOK}:6:7: undefined variable 'undefined_thing' in task 't'",),
            id="undefined-variable",
        ),
        pytest.param(
            "    - name: t\n      command: echo\n      notify: restart nothing\n",
            (),
            (f"{PLAYBOOK}:6:7: task 't' notifies handler 'restart nothing', which is not defined",),
            id="undefined-handler",
        ),
        pytest.param("", ("-l", "nohost"), ("-l nohost: host pattern 'nohost' matches no host",), id="limit"),
        pytest.param("", ("-i", "nope.yml"), ("nope.yml: inventory file not found",), id="missing-inventory"),
    ],
)
def test_apply_with_invalid_input_touches_nothing(
    tmp_path: Path, body: str, args: tuple[str, ...], expected: tuple[str, ...]
) -> None:
    (tmp_path / PLAYBOOK).write_text(_marker_playbook(tmp_path, body), encoding="utf-8")
    result = sparkprov("apply", PLAYBOOK, *args, cwd=tmp_path)
    assert result.rc == 4, result.stderr
    assert result.stderr.startswith("error: invalid input (1 problem):")
    for fragment in expected:
        assert fragment in result.stderr
    assert "Nothing was run on any host." in result.stderr
    assert not (tmp_path / "marker").exists()


def test_validate_text_names_file_line_key_and_hint(tmp_path: Path) -> None:
    (tmp_path / PLAYBOOK).write_text(BAD_ARG, encoding="utf-8")
    result = sparkprov("validate", PLAYBOOK, cwd=tmp_path)
    assert result.rc == 4
    assert result.stdout == ""
    assert f"{PLAYBOOK}:5:14: unknown key 'dset' in module 'copy' of task 't'" in result.stderr
    assert "hint: did you mean 'dest'?" in result.stderr


@pytest.mark.parametrize("command", ["validate", "plan", "apply"])
def test_json_format_prints_one_document_with_exit_code_4(tmp_path: Path, command: str) -> None:
    (tmp_path / PLAYBOOK).write_text(BAD_ARG, encoding="utf-8")
    result = sparkprov(command, PLAYBOOK, "--format", "json", cwd=tmp_path)
    assert result.rc == 4
    document = json.loads(result.stdout)  # exactly one document: json.loads refuses trailing data
    assert document["exit_code"] == 4
    assert document["error"] == "invalid input"
    (problem,) = (p for p in document["problems"] if p["key"] == "dset")
    assert problem["hint"].startswith("did you mean 'dest'? valid: ")
    assert {k: v for k, v in problem.items() if k != "hint"} == {
        "file": PLAYBOOK,
        "line": 5,
        "column": 14,
        "key": "dset",
        "message": "unknown key 'dset' in module 'copy' of task 't'",
    }


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(("apply", "--bogus"), "No such option '--bogus'", id="unknown-option"),
        pytest.param(("apply", "--forks", "0"), "0 is not in the range 1<=x<=1000", id="forks-0"),
        pytest.param(("plan", "--format", "xml"), "'xml' is not one of 'text', 'json'", id="format-xml"),
        pytest.param(("validate", "--format", "xml"), "'xml' is not one of", id="validate-format-xml"),
        pytest.param(("frobnicate",), "No such command 'frobnicate'", id="unknown-command"),
    ],
)
def test_usage_errors_exit_4(tmp_path: Path, args: tuple[str, ...], expected: str) -> None:
    result = sparkprov(*args, cwd=tmp_path)
    assert result.rc == 4, result.stderr
    assert expected in result.stderr
    assert "Usage: sparkprov" in result.stderr

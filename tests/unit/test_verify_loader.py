"""`verify:` entries in playbooks: the task syntax with one step key, argument schemas, expectations
read before any host is touched, and the problems (exit code 4) when something cannot be read."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli import prepare, problems

# Entries appended to HEAD start on line 4 ("- name: ..."); their step key is on line 5.
HEAD = "- hosts: all\n  gather_facts: false\n  vars: {wanted: 1}\n  verify:\n"


def test_verify_entries_become_tasks_named_after_their_step(tmp_path: Path) -> None:
    prepared = prepare(
        tmp_path,
        HEAD
        + "    - name: GPU is the GB10\n"
        + "      gpu: {expect: {name: NVIDIA GB10, count: 1}}\n"
        + "      tags: [gpu]\n"
        + "    - command: nvidia-smi -L\n"
        + "      when: wanted == 1\n"
        + "    - http: http://127.0.0.1:8080/health\n"
        + "    - container: {image: busybox, gpu: false, command: [sh, -c, exit 0]}\n"
        + "      loop: [1, 2]\n"
        + "      ignore_errors: true\n"
        + "      no_log: true\n",
    )
    gpu, command, http, container = prepared.playbook.plays[0].verify
    assert (gpu.module, gpu.name, gpu.tags) == ("gpu", "GPU is the GB10", frozenset({"gpu"}))
    assert gpu.args == {"expect": {"name": "NVIDIA GB10", "count": 1}}
    assert (command.module, command.args, command.when) == (
        "command",
        {"cmd": "nvidia-smi -L"},
        ["wanted == 1"],
    )
    assert command.name == "command nvidia-smi -L"
    assert http.args == {"url": "http://127.0.0.1:8080/health"}
    assert (container.loop, container.ignore_errors, container.no_log) == ([1, 2], True, True)


def test_a_misspelt_step_is_reported_with_a_suggestion(tmp_path: Path) -> None:
    (problem,) = problems(tmp_path, HEAD + "    - name: t\n      comand: {cmd: 'true'}\n")
    assert problem.place.line == 6
    assert problem.message == "unknown verification step or keyword 'comand' in verify step 't'"
    assert problem.hint is not None and problem.hint.startswith("did you mean 'command'?")
    assert "verification steps: command, container, gpu, http" in problem.hint


def test_a_module_is_not_a_verification_step(tmp_path: Path) -> None:
    (problem,) = problems(tmp_path, HEAD + "    - name: t\n      copy: {src: a, dest: b}\n")
    assert "unknown verification step or keyword 'copy'" in problem.message


def test_an_entry_without_a_step(tmp_path: Path) -> None:
    (problem,) = problems(tmp_path, HEAD + "    - name: t\n      when: true\n")
    assert problem.message == "verify step 't' has no verification step"


def test_task_keywords_that_mean_nothing_for_a_check_are_refused(tmp_path: Path) -> None:
    (problem,) = problems(tmp_path, HEAD + "    - name: t\n      command: 'true'\n      register: out\n")
    assert problem.key == "register"
    assert problem.message == "'register' is not supported in a verify step"
    assert problem.place.line == 7


@pytest.mark.parametrize(
    ("step", "line", "column", "fragment"),
    [
        ("gpu: {expect: {count: '=> 1'}}", 6, 29, "cannot read expectation '=> 1'"),
        ("gpu: {expect: {name: '~ (x'}}", 6, 28, "invalid regular expression"),
        ("http: {url: 'http://h', expect: {latency_ms: 'between 9 and 1'}}", 6, 52, "low bound is above"),
        ("http: {url: 'http://h', expect: {json: {ok: '>= yes'}}}", 6, 46, "needs a number or a version"),
    ],
)
def test_an_unreadable_expectation_is_invalid_input(
    tmp_path: Path, step: str, line: int, column: int, fragment: str
) -> None:
    (problem,) = problems(tmp_path, HEAD + f"    - name: t\n      {step}\n")
    assert problem.message.startswith("verify step 't': expect.")
    assert fragment in problem.message
    assert (problem.place.line, problem.place.column) == (line, column)


def test_a_templated_expectation_is_judged_once_rendered(tmp_path: Path) -> None:
    prepared = prepare(tmp_path, HEAD + "    - name: t\n      gpu: {expect: {count: '{{ wanted }}'}}\n")
    assert prepared.playbook.plays[0].verify[0].args["expect"] == {"count": "{{ wanted }}"}


def test_step_arguments_follow_their_schema(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        HEAD
        + "    - name: a\n      gpu: {expect: {cont: 1}}\n"
        + "    - name: b\n      command: {cmd: x, argv: [x]}\n"
        + "    - name: c\n      container: {gpu: true}\n"
        + "    - name: d\n      http: {url: ftp://x}\n",
    )
    messages = [p.message for p in found]
    assert "unknown key 'cont' in 'expect' of verification step 'gpu' of verify step 'a'" in messages
    assert any("'cmd' and 'argv' are mutually exclusive" in m for m in messages)
    assert any("missing required key 'image'" in m for m in messages)
    assert "verification step 'http' of verify step 'd': 'url' must be an http:// or https:// URL" in messages
    suggestion = next(p for p in found if p.key == "cont")
    assert suggestion.hint is not None and suggestion.hint.startswith("did you mean 'count'?")


def test_undefined_variables_in_verify_steps_are_found_before_running(tmp_path: Path) -> None:
    (problem,) = problems(tmp_path, HEAD + "    - name: t\n      command: 'echo {{ wantd }}'\n")
    assert problem.message == "undefined variable 'wantd' in task 't'"
    assert problem.hint is not None and "did you mean 'wanted'?" in problem.hint

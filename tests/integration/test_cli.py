"""The command-line contract of DESIGN.md: exit codes, one JSON document on stdout, report files,
the bundled default playbook, --help/--version/--diff.

Every test runs `python -m sparkprov` in a subprocess with HOME set to a temporary directory.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

import sparkprov
from tests.cli import TEST_DATA, CliRun, cli_env, write_text
from tests.cli import sparkprov as run_sparkprov

Cli = Callable[..., CliRun]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def cli(home: Path) -> Cli:
    def _cli(*args: str | Path, env: dict[str, str] | None = None) -> CliRun:
        return run_sparkprov(*args, home=home, extra_env=env)

    return _cli


DATA = TEST_DATA / "executor"
SIMPLE = DATA / "simple.yml"
FAILING = DATA / "failing.yml"


def task_result_count(doc: dict) -> int:
    return sum(len(task["hosts"]) for play in doc["plays"] for task in play["tasks"])


# ------------------------------------------------------------------------------------------- exit codes


def test_exit_codes_of_plan_verify_and_apply(cli: Cli, base: Path) -> None:
    selectors = (SIMPLE, "-e", f"base={base}", "--format", "json")
    steps = [
        ("plan", 2),  # changes pending
        ("verify", 1),  # drift is a failed verification
        ("apply --check", 2),  # = plan
        ("apply", 0),
        ("plan", 0),  # converged
        ("verify", 0),
        ("apply --check", 0),
        ("apply", 0),  # idempotent
    ]
    for step, expected in steps:
        out = cli(*step.split(), *selectors)
        assert out.rc == expected, f"{step}: {out}"
        doc = out.doc
        assert doc["exit_code"] == expected
        if step == "apply" and expected == 0 and doc["stats"]["localhost"]["changed"] == 0:
            assert doc["plan"] == []
        if step == "apply --check":
            assert doc["mode"] == "plan"
        if step in ("plan", "verify", "apply --check") and expected != 0:
            # nothing was changed by plan/verify/--check
            assert list(base.iterdir()) == []
    assert cli("apply", *selectors).doc["stats"]["localhost"]["changed"] == 0


def test_exit_code_1_when_a_task_fails(cli: Cli) -> None:
    for command in ("apply", "plan", "verify"):
        out = cli(command, FAILING, "--format", "json")
        assert out.rc == 1, out
        assert out.doc["exit_code"] == 1
        assert out.doc["stats"]["localhost"]["failures"] == 1


def test_plan_with_a_failure_does_not_claim_the_hosts_match(cli: Cli) -> None:
    out = cli("plan", FAILING)
    assert out.rc == 1, out
    assert "hosts match the playbook" not in out.stdout


def test_validate_exit_codes(cli: Cli, tmp_path: Path) -> None:
    assert cli("validate", SIMPLE, "-e", "base=/nonexistent").rc == 0  # validate touches nothing
    out = cli("validate")
    assert out.rc == 0, out
    assert "valid" in out.stdout
    broken = write_text(
        tmp_path / "broken.yml",
        """
        - hosts: all
          tasks:
            - debug: {msg: "{{ nowhere_defined }}"}
        """,
    )
    out = cli("validate", broken)
    assert out.rc == 4, out
    assert "nowhere_defined" in out.stderr


def test_facts_exit_code_and_hostname(cli: Cli) -> None:
    out = cli("facts", "--format", "json")
    assert out.rc == 0, out
    assert out.doc["hosts"]["localhost"]["hostname"] == socket.gethostname()
    assert out.doc["exit_code"] == 0
    text = cli("facts")
    assert text.rc == 0, text
    assert socket.gethostname() in text.stdout


INVALID_PLAYBOOKS = {
    "empty playbook": "",
    "duplicate key": """
        - hosts: all
          hosts: localhost
          tasks: []
        """,
    "undefined variable": """
        - hosts: all
          gather_facts: false
          tasks:
            - copy: {dest: "{{ base }}/x", content: "{{ nowhere_defined }}"}
        """,
    "handler not defined": """
        - hosts: all
          gather_facts: false
          tasks:
            - copy: {dest: "{{ base }}/x", content: "x"}
              notify: missing handler
        """,
    "unknown module": """
        - hosts: all
          tasks:
            - frobnicate: {x: 1}
        """,
    "yaml syntax": "- hosts: all\n  tasks: [\n",
}


@pytest.mark.parametrize("case", list(INVALID_PLAYBOOKS))
def test_invalid_playbooks_exit_4_before_touching_the_host(
    cli: Cli, tmp_path: Path, base: Path, case: str
) -> None:
    playbook = write_text(tmp_path / "bad.yml", INVALID_PLAYBOOKS[case])
    for command in ("apply", "plan", "validate"):
        out = cli(command, playbook, "-e", f"base={base}", "--format", "json")
        assert out.rc == 4, out
        doc = out.doc
        assert doc["exit_code"] == 4
        assert doc["problems"], out
        assert list(base.iterdir()) == []


@pytest.mark.parametrize(
    "args",
    [
        ["frobnicate"],
        ["apply", "--frobnicate"],
        ["plan", "--format", "xml"],
        ["apply", "{tmp}/missing.yml"],
        ["apply", str(SIMPLE), "-i", "{tmp}/missing-inventory.yml"],
        ["plan", str(SIMPLE), "-l", "no-such-host"],
        ["plan", str(SIMPLE), "-e", "not a pair"],
        ["apply", str(SIMPLE), "-f", "0"],
    ],
    ids=["unknown command", "unknown option", "bad format", "missing playbook", "missing inventory",
         "limit matches nothing", "bad extra vars", "bad forks"],
)  # fmt: skip
def test_usage_and_input_errors_exit_4(cli: Cli, tmp_path: Path, base: Path, args: list[str]) -> None:
    out = cli(*[a.format(tmp=tmp_path) for a in args], "-e", f"base={base}")
    assert out.rc == 4, out
    assert list(base.iterdir()) == []


# ------------------------------------------------------------------------------------------ JSON output


@pytest.mark.parametrize(
    "command",
    [["apply"], ["plan"], ["verify"], ["apply", "--check"], ["validate"], ["facts"]],
    ids=lambda c: " ".join(c),
)
def test_format_json_prints_exactly_one_document(cli: Cli, base: Path, command: list[str]) -> None:
    args: list[str | Path]
    if command[0] in ("validate", "facts"):
        args = [*command, "--format", "json"]
    else:
        args = [*command, SIMPLE, "-e", f"base={base}", "--format", "json"]
    out = cli(*args)
    doc = json.loads(out.stdout)  # the whole of stdout is one JSON document
    assert isinstance(doc, dict)
    assert doc["exit_code"] == out.rc
    if command[0] in ("apply", "plan", "verify"):
        assert "PLAY RECAP" in out.stderr  # progress goes to stderr
        assert "PLAY RECAP" not in out.stdout


def test_json_has_the_shape_of_ansibles_json_callback(cli: Cli, base: Path) -> None:
    out = cli("apply", SIMPLE, "-e", f"base={base}", "--format", "json")
    assert out.rc == 0, out
    doc = out.doc
    assert {"plays", "stats", "plan", "verify", "exit_code"} <= set(doc)
    assert isinstance(doc["plan"], list)
    assert isinstance(doc["verify"], list)
    (play,) = doc["plays"]
    assert play["play"]["name"] == "simple"
    names = [task["task"]["name"] for task in play["tasks"]]
    assert names == ["directory", "greeting", "skipped", "looped"]
    by_name = {task["task"]["name"]: task["hosts"]["localhost"] for task in play["tasks"]}
    for result in by_name.values():
        assert isinstance(result["changed"], bool)
        assert isinstance(result["failed"], bool)
    assert by_name["greeting"]["changed"] is True
    assert by_name["skipped"]["skipped"] is True
    assert [r["item"] for r in by_name["looped"]["results"]] == ["a", "b"]
    assert all(r["changed"] for r in by_name["looped"]["results"])
    stats = doc["stats"]["localhost"]
    assert {k: stats[k] for k in ("ok", "changed", "failures", "skipped", "unreachable")} == {
        "ok": 3,
        "changed": 3,
        "failures": 0,
        "skipped": 1,
        "unreachable": 0,
    }

    plan = cli("plan", SIMPLE, "-e", f"base={base}", "-e", "who=there", "--format", "json")
    assert plan.rc == 2, plan
    (entry,) = plan.doc["plan"]
    assert entry["host"] == "localhost"
    assert entry["task"] == "greeting"
    assert entry["diff"][0]["before"] == "hello world\n"
    assert entry["diff"][0]["after"] == "hello there\n"


# ------------------------------------------------------------------------------- bundled default playbook


def test_bundled_playbook_on_a_fresh_home(cli: Cli, home: Path) -> None:
    out = cli("plan")
    assert out.rc == 2, out
    assert not (home / "workspace").exists()
    assert cli("verify").rc == 1
    out = cli("apply")
    assert out.rc == 0, out
    assert (home / "workspace").is_dir()
    assert (home / ".jupyter" / "jupyter_server_config.py").is_file()
    assert (home / ".ipython" / "profile_default" / "startup" / "00-spark-gpu.py").is_file()
    out = cli("plan")
    assert out.rc == 0, out
    assert "No changes" in out.stdout
    assert cli("verify").rc == 0


# ------------------------------------------------------------------------------------------------ reports


def test_report_directory(cli: Cli, tmp_path: Path, base: Path) -> None:
    report = tmp_path / "reports" / "run1"  # created, parents included
    out = cli("apply", SIMPLE, "-e", f"base={base}", "--format", "json", "--report", report)
    assert out.rc == 0, out
    written = json.loads((report / "report.json").read_text())
    assert written["exit_code"] == 0
    assert written["stats"] == out.doc["stats"]
    suite = ET.parse(report / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert len(cases) == task_result_count(out.doc) == 4
    assert len(suite.findall("testcase/skipped")) == 1
    markdown = (report / "report.md").read_text()
    assert "localhost" in markdown

    failed = cli("apply", FAILING, "--report", tmp_path / "failed")
    assert failed.rc == 1
    suite = ET.parse(tmp_path / "failed" / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    failures = suite.findall("testcase/failure")
    assert len(failures) == 1
    assert "this play fails on purpose" in (failures[0].get("message") or "")
    assert "this play fails on purpose" in (tmp_path / "failed" / "report.md").read_text()


# ----------------------------------------------------------------------------------- help, version, diff


def test_help_and_version(cli: Cli) -> None:
    out = cli("--help")
    assert out.rc == 0, out
    for command in ("apply", "plan", "verify", "validate", "facts"):
        assert command in out.stdout
    for command in ("apply", "plan", "verify", "validate", "facts"):
        sub = cli(command, "--help")
        assert sub.rc == 0, sub
        assert "--format" in sub.stdout
    version = cli("--version")
    assert version.rc == 0, version
    assert sparkprov.__version__ in version.stdout


def test_diff_on_apply_prints_a_unified_diff(cli: Cli, base: Path) -> None:
    quiet = cli("apply", SIMPLE, "-e", f"base={base}")
    assert quiet.rc == 0, quiet
    assert "+++ " not in quiet.stdout

    out = cli("apply", SIMPLE, "-e", f"base={base}", "-e", "who=there", "--diff")
    assert out.rc == 0, out
    path = base / "dir" / "greeting.txt"
    assert f"--- before: {path}" in out.stdout
    assert f"+++ after: {path}" in out.stdout
    assert "-hello world" in out.stdout
    assert "+hello there" in out.stdout
    assert path.read_text() == "hello there\n"


@pytest.mark.parametrize("command", [["apply", str(SIMPLE), "-K"], ["facts", "-k"]])
def test_input_is_checked_before_a_password_is_asked_for(home: Path, command: list[str]) -> None:
    argv = [sys.executable, "-m", "sparkprov", *command, "-l", "nope"]
    # Its own session, so no terminal to ask on: the input error must come first anyway.
    result = subprocess.run(
        argv,
        env=cli_env(home=home),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        start_new_session=True,
        timeout=60,
    )
    assert result.returncode == 4, result.stderr
    assert "no host" in result.stderr and "asks on a terminal" not in result.stderr, result.stderr

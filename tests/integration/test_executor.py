"""Executor semantics end to end: `python -m sparkprov` on the playbooks of tests/data/executor.

Each test points `base` (`-e base=...`) at its own temporary directory, so runs are independent.
Expected behaviour is Ansible's (linear strategy, ansible-core 2.15+) unless DESIGN.md says otherwise.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cli import TEST_DATA, CliRun, lines, local_inventory, sparkprov, write_text

DATA = TEST_DATA / "executor"

Runner = Callable[..., CliRun]


@pytest.fixture
def run(tmp_path: Path, base: Path) -> Runner:
    """run(command, playbook, *args, env=...) with -e base=<tmp> and --format json."""

    def _run(
        command: str, playbook: str | Path, *args: str | Path, env: dict[str, str] | None = None
    ) -> CliRun:
        path = playbook if isinstance(playbook, Path) else DATA / playbook
        options = ("-e", f"base={base}", "--format", "json", *args)
        return sparkprov(command, path, *options, home=tmp_path / "home", extra_env=env)

    return _run


def items(result: dict[str, Any], key: str = "item") -> list[Any]:
    return [entry.get(key) for entry in result["results"]]


# --------------------------------------------------------------------------------------------- handlers

HANDLER_NAMES = [
    "first handler",
    "record twice",
    "second handler",
    "listener one",
    "listener two",
    "chained handler",
]


def test_handlers_run_once_after_all_tasks_in_definition_order(run: Runner, base: Path) -> None:
    out = run("apply", "handlers.yml")
    assert out.rc == 0, out
    # 'record twice' was notified by two tasks, yet it ran once; the handlers ran after the last
    # task, in the order they are defined (not the order of notification); the chained handler
    # notified by 'second handler' ran too, and both listeners of 'web topic' ran.
    assert lines(base / "order.log") == [
        "tasks-done",
        "first",
        "twice",
        "second",
        "listener-one",
        "listener-two",
        "chained",
    ]
    ran = out.ran()
    assert ran[-len(HANDLER_NAMES) :] == HANDLER_NAMES
    for name in HANDLER_NAMES:
        assert out.result(name, handler=True)["changed"] is True
    # Notified only by a task that reported ok: never runs.
    assert "ok handler" not in ran
    handler_flags = {
        entry["task"]["name"]: entry["task"]["handler"]
        for play in out.doc["plays"]
        for entry in play["tasks"]
    }
    assert handler_flags["first handler"] is True
    assert handler_flags["first change"] is False


def test_handlers_do_not_run_when_the_notifying_tasks_report_ok(run: Runner, base: Path) -> None:
    assert run("apply", "handlers.yml").rc == 0
    again = run("apply", "handlers.yml")
    assert again.rc == 0, again
    assert not [name for name in again.ran() if name in HANDLER_NAMES]
    assert again.result("first change")["changed"] is False
    # The only line the second run added is the (always changing) last task's.
    assert lines(base / "order.log")[7:] == ["tasks-done"]


def test_handler_does_not_run_when_the_host_fails_later(run: Runner, base: Path) -> None:
    out = run("apply", "handlers_fail.yml")
    assert out.rc == 1, out
    assert (base / "changed.txt").exists()
    assert not (base / "handler-ran.txt").exists()
    assert "write marker" not in out.ran()
    assert out.stats()["failures"] == 1


def test_plan_shows_notified_handlers_as_pending(run: Runner, base: Path) -> None:
    out = run("plan", "handlers.yml")
    assert out.rc == 2, out
    pending_handlers = [entry["task"] for entry in out.doc["plan"] if entry["handler"]]
    assert pending_handlers == HANDLER_NAMES
    for name in HANDLER_NAMES:
        result = out.result(name, handler=True)
        assert result["changed"] is True
        assert result.get("pending") is True
    assert "ok handler" not in out.ran()
    # plan changed nothing: neither the files of the tasks nor the handlers' log exist.
    assert sorted(p.name for p in base.iterdir()) == []


# ------------------------------------------------------------------------------------------------ loops


@pytest.fixture(scope="module")
def loops(tmp_path_factory: pytest.TempPathFactory) -> tuple[CliRun, Path]:
    tmp = tmp_path_factory.mktemp("loops")
    base = tmp / "base"
    base.mkdir()
    out = sparkprov("apply", DATA / "loops.yml", "-e", f"base={base}", "--format", "json", home=tmp / "home")
    assert out.rc == 0, out
    return out, base


def test_loop_over_a_list(loops: tuple[CliRun, Path]) -> None:
    out, base = loops
    result = out.result("plain list")
    assert items(result) == ["a", "b", "c"]
    assert [entry["changed"] for entry in result["results"]] == [True, True, True]
    for name in "abc":
        assert (base / f"plain-{name}.txt").read_text() == f"item={name}\n"


def test_loop_over_a_range_expression_is_a_native_list(loops: tuple[CliRun, Path]) -> None:
    out, _ = loops
    result = out.result("range")
    assert items(result) == [1, 2, 3]
    assert items(result, "msg") == [10, 20, 30]


def test_with_items_flattens_one_level(loops: tuple[CliRun, Path]) -> None:
    out, _ = loops
    assert items(out.result("with_items flattens one level")) == ["x", "y", "z", ["deep"]]


def test_with_dict_yields_key_value_items(loops: tuple[CliRun, Path]) -> None:
    out, _ = loops
    result = out.result("with_dict")
    assert items(result) == [{"key": "x", "value": 1}, {"key": "y", "value": "two"}]
    assert items(result, "msg") == ["x=1", "y=two"]


def test_loop_control_loop_var_index_var_label_extended(loops: tuple[CliRun, Path]) -> None:
    out, _ = loops
    result = out.result("loop_control")
    assert items(result, "msg") == ["0:alpha:1:True:False", "1:beta:2:False:True"]
    assert items(result, "_ansible_item_label") == ["alpha", "beta"]
    # The label, not the whole item, is what the progress output shows.
    assert "(item=alpha)" in out.stderr
    assert "(item=beta)" in out.stderr
    assert "'version': 1" not in out.stderr


def test_registered_loop_results_use_the_loop_var_name(loops: tuple[CliRun, Path]) -> None:
    out, _ = loops
    result = out.result("loop_control")
    first = result["results"][0]
    assert first["pkg"] == {"name": "alpha", "version": 1}
    assert first["ansible_loop_var"] == "pkg"
    assert first["idx"] == 0
    assert first["ansible_index_var"] == "idx"


def test_when_is_evaluated_per_item(loops: tuple[CliRun, Path]) -> None:
    out, base = loops
    result = out.result("per-item when")
    assert items(result) == [1, 2, 3, 4]
    assert items(result, "skipped") == [True, False, True, False]
    assert items(result, "changed") == [False, True, False, True]
    assert result["changed"] is True
    assert sorted(p.name for p in base.glob("when-*")) == ["when-2.txt", "when-4.txt"]


def test_registered_loop_results_are_usable_later(loops: tuple[CliRun, Path]) -> None:
    _, base = loops
    # filtered.results[i].item / .changed / .skipped, ranged.results[i].msg
    assert (base / "summary.txt").read_text() == "2,4 first=1 skipped=True ranged=10,20,30"


# ------------------------------------------------------------------------------------------------- when


@pytest.fixture(scope="module")
def conditions(tmp_path_factory: pytest.TempPathFactory) -> CliRun:
    tmp = tmp_path_factory.mktemp("when")
    out = sparkprov("apply", DATA / "when.yml", "--format", "json", home=tmp / "home")
    assert out.rc == 0, out
    return out


@pytest.mark.parametrize(
    ("task", "runs"),
    [
        ("literal true", True),
        ("literal false", False),
        ("list all hold", True),
        ("list one fails", False),
        ("defined variable", True),
        ("undefined variable", False),
        ("not defined", True),
        ("templated string", True),
        ("registered changed", True),
        ("registered rc zero", True),
        ("registered rc nonzero", False),
        ("registered not changed", True),
        ("registered stdout", True),
    ],
)
def test_when(conditions: CliRun, task: str, runs: bool) -> None:
    result = conditions.result(task)
    assert result["skipped"] is (not runs)
    if runs:
        assert result["msg"] == "run"


def test_when_skips_count_in_the_stats(conditions: CliRun) -> None:
    assert conditions.stats()["skipped"] == 4


# ------------------------------------------------------------------------------------------------- tags

UNTAGGED_P2 = ["p2 untagged", "p2 tag b"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), ["untagged", "tag a", "tag b", "tags a and c", "tag always", *UNTAGGED_P2]),
        (("--tags", "a"), ["tag a", "tags a and c", "tag always"]),
        (("--tags", "a,b"), ["tag a", "tag b", "tags a and c", "tag always", "p2 tag b"]),
        (("-t", "c", "-t", "debug"), ["tags a and c", "tag always", "tags never and debug"]),
        (("--tags", "never"), ["tag always", "tag never", "tags never and debug"]),
        (("--tags", "p2"), ["tag always", *UNTAGGED_P2]),
        (("--skip-tags", "b"), ["untagged", "tag a", "tags a and c", "tag always", "p2 untagged"]),
        (("--skip-tags", "always"), ["untagged", "tag a", "tag b", "tags a and c", *UNTAGGED_P2]),
        (("--skip-tags", "p2,c"), ["untagged", "tag a", "tag b", "tag always"]),
        (("--tags", "a", "--skip-tags", "c"), ["tag a", "tag always"]),
        (("--tags", "all"), ["untagged", "tag a", "tag b", "tags a and c", "tag always", *UNTAGGED_P2]),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else None,
)
def test_tags(run: Runner, args: tuple[str, ...], expected: list[str]) -> None:
    out = run("apply", "tags.yml", *args)
    assert out.rc == 0, out
    assert out.ran() == expected


# ------------------------------------------------------------------------------------------- variables


def test_variable_precedence(run: Runner, tmp_path: Path) -> None:
    inventory = local_inventory(
        tmp_path / "inventory.yml",
        {
            "localhost": {
                "inventory_only": "from-inventory",
                "play_vs_inventory": "from-inventory",
                "group_vs_host": "from-host",
            }
        },
        group_vars={"group_only": "from-group", "group_vs_host": "from-group"},
    )
    at_file = write_text(tmp_path / "extra.yml", "at_file: [1, 2]\nextra_vs_fact: from-at-file\n")
    out = run(
        "apply",
        "precedence.yml",
        "-i",
        inventory,
        "-e",
        "play_vs_extra=from-extra task_vs_extra=from-extra",
        "-e",
        f"@{at_file}",
    )
    assert out.rc == 0, out
    assert out.result("show")["msg"] == {
        "play_only": "from-play",
        "file_only": "from-file",
        "play_vs_file": "from-file",  # vars_files beat play vars
        "inventory_only": "from-inventory",
        "group_only": "from-group",
        "group_vs_host": "from-host",  # host vars beat group vars
        "play_vs_inventory": "from-play",  # play vars beat inventory vars
        "play_vs_extra": "from-extra",  # -e beats everything
        "task_vs_extra": "from-extra",
        "play_vs_task": "from-task",  # task vars beat play vars
        "task_only": "from-task",
        "play_vs_fact": "from-fact",  # set_fact beats play vars
        "extra_vs_fact": "from-at-file",  # ... but not extra vars (here from -e @file)
        "fact_only": "from-play-fact",
        "play_vs_register": "from-register",  # a registered result beats play vars
        "computed": "from-play+from-file+from-inventory",  # vars referring to vars, lazily
        "at_file": [1, 2],  # -e @file keeps YAML types
    }


def test_set_fact_beats_task_vars(run: Runner) -> None:
    out = run("apply", "task_vars_vs_fact.yml")
    assert out.rc == 0, out
    assert out.result("show")["msg"] == "from-fact"


def test_registered_results_and_facts_persist_across_plays(run: Runner, base: Path) -> None:
    out = run("apply", "multi_play_guarded.yml")
    assert out.rc == 0, out
    assert (base / "multi.txt").read_text() == "from-play-one fact-value\n"


def test_variables_registered_in_an_earlier_play_pass_the_static_check(run: Runner, base: Path) -> None:
    out = run("apply", "multi_play.yml")
    assert out.rc == 0, out
    assert (base / "multi.txt").read_text() == "from-play-one fact-value\n"


def test_task_names_are_templated_with_play_vars(run: Runner) -> None:
    out = run("apply", "task_name_template.yml")
    assert out.rc == 0, out
    assert out.ran() == ["greet world"]
    assert "TASK [greet world]" in out.stderr


def test_with_items_over_a_string_loops_once(run: Runner) -> None:
    out = run("apply", "with_items_string.yml")
    assert out.rc == 0, out
    assert items(out.result("string items")) == ["only-one"]


# -------------------------------------------------------------------------------------- retries / until


def test_retries_until(run: Runner, base: Path) -> None:
    out = run("apply", "retries.yml")
    assert out.rc == 1, out
    flaky = out.result("succeeds on the third attempt")
    assert flaky["failed"] is False
    assert flaky["attempts"] == 3
    assert flaky["rc"] == 0
    assert len(lines(base / "flaky.log")) == 3

    hopeless = out.result("never succeeds")
    assert hopeless["failed"] is True
    assert hopeless["attempts"] == 3  # retries: 2 -> 3 attempts in all
    assert hopeless["rc"] == 7
    assert len(lines(base / "hopeless.log")) == 3
    assert "3" in hopeless["msg"]
    assert "until" in hopeless["msg"]
    assert "not reached" not in out.ran()


# ---------------------------------------------------------------------------- changed_when / failed_when


def test_changed_when_and_failed_when(run: Runner) -> None:
    out = run("apply", "overrides.yml")
    assert out.rc == 0, out
    assert out.result("never changed")["changed"] is False
    assert out.result("changed by condition")["changed"] is True
    assert out.result("unchanged by condition")["changed"] is False
    checked = out.result("failed by condition")
    assert (checked["failed"], checked["rc"], checked.get("ignored")) == (True, 0, True)
    three = out.result("non-zero rc accepted")
    assert (three["failed"], three["rc"]) == (False, 3)
    assert out.result("list means all must hold")["failed"] is False
    stats = out.stats()
    assert (stats["failures"], stats["ignored"]) == (0, 1)

    plan = run("plan", "overrides.yml")
    # A constant `changed_when: false` is honoured in a plan: that command is not a pending change.
    assert "never changed" not in [entry["task"] for entry in plan.doc["plan"]]
    assert "changed by condition" in [entry["task"] for entry in plan.doc["plan"]]


# ------------------------------------------------------------------------------- failures and ignoring


def test_ignore_errors_lets_the_host_continue(run: Runner, base: Path) -> None:
    out = run("apply", "ignore_errors.yml")
    assert out.rc == 0, out
    failed = out.result("fails but ignored")
    assert failed["failed"] is True
    assert failed.get("ignored") is True
    assert (base / "after.txt").read_text() == "rc=1 failed=True\n"
    stats = out.stats()
    assert (stats["failures"], stats["ignored"], stats["ok"], stats["changed"]) == (0, 1, 1, 1)
    assert out.doc["exit_code"] == 0
    assert re.search(r"failed=0\s+skipped=0\s+ignored=1", out.stderr)


def test_a_failure_stops_the_host(run: Runner, base: Path) -> None:
    out = run("apply", "failure.yml")
    assert out.rc == 1, out
    assert out.ran() == ["before", "fails"]
    assert out.result("fails")["failed"] is True
    assert (base / "before.txt").exists()
    assert not (base / "after.txt").exists()
    stats = out.stats()
    assert (stats["ok"], stats["changed"], stats["failures"]) == (1, 1, 1)
    assert out.doc["exit_code"] == 1
    assert re.search(r"localhost\s+: ok=1\s+changed=1\s+unreachable=0\s+failed=1", out.stderr)


# ----------------------------------------------------------------------------------------------- no_log

SECRET = "hunter2-S3CR3T-q8Zx"
ENV_SECRET = "nvapi-ENVKEY-7Kd93Lwq"


def test_no_log_and_secret_environment_values_never_reach_any_output(
    run: Runner, tmp_path: Path, base: Path
) -> None:
    env = {"NGC_API_KEY": ENV_SECRET}
    outputs: list[tuple[str, str]] = []

    apply_json = run(
        "apply", "no_log.yml", "-e", f"secret={SECRET}", "--diff", "--report", tmp_path / "r1", env=env
    )
    assert apply_json.rc == 0, apply_json
    # The masking is real: the command printed the key, the output shows the mask instead.
    assert apply_json.result("environment secret")["stdout"] == "key=********"
    assert (base / "env.txt").read_text().startswith(f"key={ENV_SECRET}")
    assert (base / "secret.txt").read_text() == f"key={SECRET}\n"
    hidden = apply_json.result("secret command")
    assert hidden["_ansible_no_log"] is True
    assert "stdout" not in hidden
    assert items(apply_json.result("secret loop"), "_ansible_item_label") == [None, None]
    assert apply_json.result("secret failure ignored")["failed"] is True
    outputs += [("apply stdout", apply_json.stdout), ("apply stderr", apply_json.stderr)]

    for path in base.iterdir():  # the next runs start from scratch, so every task acts again
        path.unlink()
    plan_json = run("plan", "no_log.yml", "-e", f"secret={SECRET}", "--report", tmp_path / "r2", env=env)
    assert plan_json.rc == 2, plan_json
    hidden_plan = [entry for entry in plan_json.doc["plan"] if entry["task"] == "secret file"]
    assert hidden_plan and hidden_plan[0]["change"] == "hidden (no_log)"
    assert hidden_plan[0]["diff"] == []
    outputs += [("plan stdout", plan_json.stdout), ("plan stderr", plan_json.stderr)]

    text = sparkprov(
        "apply",
        DATA / "no_log.yml",
        "-e",
        f"base={base}",
        "-e",
        f"secret={SECRET}",
        "--diff",
        home=tmp_path / "home",
        env=env,
    )
    assert text.rc == 0, text
    assert "key=********" in text.stdout  # the diff of env.txt, masked
    outputs += [("text stdout", text.stdout), ("text stderr", text.stderr)]

    for directory in (tmp_path / "r1", tmp_path / "r2"):
        for name in ("report.json", "junit.xml", "report.md"):
            outputs.append((str(directory / name), (directory / name).read_text()))

    for where, content in outputs:
        assert SECRET not in content, f"no_log secret leaked into {where}"
        assert ENV_SECRET not in content, f"NGC_API_KEY leaked into {where}"


# ------------------------------------------------------------------------------------------- check mode


def test_check_mode_true_changes_nothing_in_apply(run: Runner, base: Path) -> None:
    out = run("apply", "check_mode.yml")
    assert out.rc == 0, out
    assert not (base / "forced-check.txt").exists()
    assert out.result("forced check")["changed"] is True  # would change, as Ansible reports it
    assert (base / "probe.txt").read_text() == "value=probed-value\n"


def test_check_mode_false_runs_in_plan_and_its_output_is_known(run: Runner, base: Path) -> None:
    out = run("plan", "check_mode.yml")
    assert out.rc == 2, out
    probe = out.result("probe even in plan")
    assert probe["stdout"] == "probed-value"
    assert probe.get("pending") is not True
    use = out.result("use probe")
    assert use["pending"] is True
    assert "known after apply" not in use["msg"]
    assert use["diff"][0]["after"] == "value=probed-value\n"
    assert [entry["task"] for entry in out.doc["plan"]] == ["forced check", "use probe"]
    assert sorted(p.name for p in base.iterdir()) == []


# ------------------------------------------------------------------------------------ known after apply


def test_plan_reports_values_known_only_after_apply(run: Runner, base: Path) -> None:
    plan = run("plan", "known_after_apply.yml")
    assert plan.rc == 2, plan
    consume = plan.result("consume")
    assert consume["changed"] is True
    assert consume["pending"] is True
    assert "known after apply" in consume["msg"]
    planned = {entry["task"]: entry for entry in plan.doc["plan"]}
    assert set(planned) == {"produce", "consume"}
    assert "known after apply" in planned["consume"]["change"]
    assert "known after apply" in plan.stderr
    assert not (base / "consumed.txt").exists()

    apply = run("apply", "known_after_apply.yml")
    assert apply.rc == 0, apply
    assert (base / "consumed.txt").read_text() == "value=produced-value\n"


def test_plan_propagates_known_after_apply_through_set_fact(run: Runner, base: Path) -> None:
    plan = run("plan", "plan_set_fact.yml")
    assert plan.rc == 2, plan
    consume = plan.result("consume")
    assert consume["pending"] is True
    assert "known after apply" in consume["msg"]


# ------------------------------------------------------------------------------------- several hosts


@pytest.fixture
def three_hosts(tmp_path: Path, base: Path) -> Path:
    """An inventory of h1..h3, all on the local connection, each with its own `hdir`."""
    hosts = {}
    for name in ("h1", "h2", "h3"):
        (base / name).mkdir()
        hosts[name] = {"hdir": str(base / name)}
    return local_inventory(tmp_path / "hosts.yml", hosts)


def markers(base: Path) -> list[str]:
    return sorted(p.parent.name for p in base.glob("h*/marker"))


def test_serial_runs_the_play_in_batches(run: Runner, base: Path, three_hosts: Path) -> None:
    out = run("apply", "serial.yml", "-i", three_hosts)
    assert out.rc == 0, out
    assert lines(base / "order.log") == [
        "h1 first batch=h1",
        "h1 second",
        "h2 first batch=h2",
        "h2 second",
        "h3 first batch=h3",
        "h3 second",
    ]
    assert markers(base) == ["h1", "h2", "h3"]
    assert (base / "h2" / "marker").read_text() == "host=h2\n"
    for host in ("h1", "h2", "h3"):
        assert out.stats(host)["changed"] == 3


def test_max_fail_percentage_zero_stops_later_batches(run: Runner, base: Path, three_hosts: Path) -> None:
    out = run("apply", "max_fail.yml", "-i", three_hosts)
    assert out.rc == 1, out
    assert out.result("h1 fails", "h1")["failed"] is True
    assert out.ran("h2") == []
    assert out.ran("h3") == []
    assert markers(base) == []
    assert out.stats("h1")["failures"] == 1


def test_max_fail_percentage_not_exceeded_lets_later_batches_run(
    run: Runner, base: Path, three_hosts: Path
) -> None:
    out = run("apply", "max_fail_50.yml", "-i", three_hosts)  # serial 2: 1 of 2 failed = 50%, not more
    assert out.rc == 1, out
    assert markers(base) == ["h2", "h3"]


def test_any_errors_fatal_stops_every_host(run: Runner, base: Path, three_hosts: Path) -> None:
    out = run("apply", "fatal.yml", "-i", three_hosts)
    assert out.rc == 1, out
    assert markers(base) == []
    for host in ("h2", "h3"):
        assert "mark" not in out.ran(host)


def test_any_errors_fatal_stops_hosts_that_finished_the_failing_task_first(
    run: Runner, base: Path, three_hosts: Path
) -> None:
    out = run("apply", "fatal_lockstep.yml", "-i", three_hosts)
    assert out.rc == 1, out
    assert markers(base) == []


def test_inventory_host_vars_reach_the_tasks(run: Runner, base: Path, three_hosts: Path) -> None:
    out = run("apply", "serial.yml", "-i", three_hosts, "-l", "h2")
    assert out.rc == 0, out
    assert markers(base) == ["h2"]
    assert set(out.doc["stats"]) == {"h2"}


# --------------------------------------------------------------------------------- report consistency


def test_junit_report_has_one_testcase_per_task_result(
    run: Runner, tmp_path: Path, three_hosts: Path
) -> None:
    out = run("apply", "max_fail_50.yml", "-i", three_hosts, "--report", tmp_path / "report")
    assert out.rc == 1, out
    results = sum(len(task["hosts"]) for play in out.doc["plays"] for task in play["tasks"])
    suite = ET.parse(tmp_path / "report" / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    assert len(suite.findall("testcase")) == results == 5  # h1: failed; h2, h3: skipped + mark
    assert suite.get("failures") == "1"
    assert suite.get("skipped") == "2"

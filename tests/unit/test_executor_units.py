"""Pure pieces of the executor: tag selection, serial batches, and exit codes of a run's result."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from sparkprov.errors import Place
from sparkprov.executor.results import HostStats, ItemResult, Mode, PlayRun, RunResult, Status, TaskResult
from sparkprov.executor.runner import RunOptions, batches, task_selected
from sparkprov.playbook.model import Play, Task

PLACE = Place("test.yml", 1, 1)


def make_task(tags: Iterable[str] = (), name: str = "t") -> Task:
    return Task(name=name, module="debug", args={"msg": "x"}, place=PLACE, tags=frozenset(tags))


def make_play(tags: Iterable[str] = (), tasks: tuple[Task, ...] = ()) -> Play:
    return Play(
        name="p",
        hosts=("all",),
        place=PLACE,
        vars={},
        vars_files=(),
        tasks=tasks,
        handlers=(),
        verify=(),
        tags=frozenset(tags),
    )


def options(tags: Iterable[str] = (), skip: Iterable[str] = ()) -> RunOptions:
    return RunOptions(tags=frozenset(tags), skip_tags=frozenset(skip))


# ------------------------------------------------------------------------------------------ task_selected

# (task tags, play tags, --tags, --skip-tags, selected) -- Ansible's rules for tags.
TAG_TABLE = [
    # no selection: everything but `never`
    ((), (), (), (), True),
    (("a",), (), (), (), True),
    (("always",), (), (), (), True),
    (("never",), (), (), (), False),
    (("never", "a"), (), (), (), False),
    # --tags
    (("a",), (), ("a",), (), True),
    (("b",), (), ("a",), (), False),
    ((), (), ("a",), (), False),
    (("a", "b"), (), ("b",), (), True),
    (("b",), (), ("a", "b"), (), True),
    (("always",), (), ("a",), (), True),
    (("never",), (), ("a",), (), False),
    (("never",), (), ("never",), (), True),
    (("never", "debug"), (), ("debug",), (), True),
    # play-level tags are inherited by every task of the play
    ((), ("p",), ("p",), (), True),
    (("x",), ("p",), ("p",), (), True),
    ((), ("p",), ("q",), (), False),
    ((), ("always",), ("q",), (), True),
    # special --tags values
    ((), (), ("all",), (), True),
    (("a",), (), ("all",), (), True),
    (("never",), (), ("all",), (), False),
    (("a",), (), ("tagged",), (), True),
    ((), (), ("tagged",), (), False),
    ((), (), ("untagged",), (), True),
    (("a",), (), ("untagged",), (), False),
    # --skip-tags wins over everything, `always` included
    (("a",), (), (), ("a",), False),
    (("a",), (), ("a",), ("a",), False),
    (("a", "c"), (), ("a",), ("c",), False),
    (("always",), (), (), ("always",), False),
    ((), ("p",), (), ("p",), False),
    (("a",), (), (), ("b",), True),
    ((), (), (), ("b",), True),
    (("a",), (), (), ("tagged",), False),
    ((), (), (), ("tagged",), True),
    ((), (), (), ("untagged",), False),
    (("a",), (), (), ("untagged",), True),
    (("never",), (), (), ("b",), False),
]


@pytest.mark.parametrize(("task_tags", "play_tags", "tags", "skip", "selected"), TAG_TABLE)
def test_task_selected(
    task_tags: tuple[str, ...], play_tags: tuple[str, ...], tags: tuple[str, ...], skip: tuple[str, ...],
    selected: bool,
) -> None:  # fmt: skip
    task = make_task(task_tags)
    play = make_play(play_tags, (task,))
    assert task_selected(task, play, options(tags, skip)) is selected


# ------------------------------------------------------------------------------------------------ batches

HOSTS = [f"h{i}" for i in range(1, 8)]  # 7 hosts


@pytest.mark.parametrize(
    ("serial", "sizes"),
    [
        ((), [7]),
        ((1,), [1, 1, 1, 1, 1, 1, 1]),
        ((3,), [3, 3, 1]),
        ((7,), [7]),
        ((10,), [7]),
        (("50%",), [3, 3, 1]),  # floor(7 * 0.5) = 3
        (("100%",), [7]),
        (("10%",), [1, 1, 1, 1, 1, 1, 1]),  # floor(0.7) = 0 -> at least 1
        (("30%",), [2, 2, 2, 1]),
        ((1, 2), [1, 2, 2, 2]),  # the last size repeats
        ((1, 2, 10), [1, 2, 4]),
        ((1, "50%"), [1, 3, 3]),
        (("20%", 3, "100%"), [1, 3, 3]),
    ],
)
def test_batches(serial: tuple[int | str, ...], sizes: list[int]) -> None:
    got = list(batches(HOSTS, serial))
    assert [len(b) for b in got] == sizes
    assert [h for b in got for h in b] == HOSTS  # every host once, in inventory order


def test_batches_of_no_hosts() -> None:
    assert [b for b in batches([], (2,)) if b] == []


# --------------------------------------------------------------------------------------------- exit codes


def task_result(
    status: Status, *, pending: bool = False, ignored: bool = False, host: str = "h"
) -> TaskResult:
    item = ItemResult(status, pending=pending, predicted=pending)
    return TaskResult(make_task(), host, status, [item], ignored=ignored)


def run_result(mode: Mode, *results: TaskResult, interrupted: bool = False) -> RunResult:
    play = make_play()
    run = RunResult(mode, [PlayRun(play, ["h"], list(results))], interrupted=interrupted)
    for result in results:
        run.stats.setdefault(result.host, HostStats()).count(result)
    return run


OK = task_result(Status.OK)
CHANGED = task_result(Status.CHANGED)
PENDING = task_result(Status.CHANGED, pending=True)
FAILED = task_result(Status.FAILED)
IGNORED = task_result(Status.FAILED, ignored=True)
UNREACHABLE = task_result(Status.UNREACHABLE)
SKIPPED = task_result(Status.SKIPPED)


@pytest.mark.parametrize(
    ("mode", "results", "code"),
    [
        (Mode.APPLY, (), 0),
        (Mode.APPLY, (OK, CHANGED, SKIPPED), 0),
        (Mode.APPLY, (OK, IGNORED), 0),
        (Mode.APPLY, (OK, FAILED), 1),
        (Mode.APPLY, (UNREACHABLE,), 1),
        (Mode.APPLY, (PENDING,), 0),  # a `check_mode: true` task inside apply
        (Mode.PLAN, (OK, SKIPPED), 0),
        (Mode.PLAN, (OK, PENDING), 2),
        (Mode.PLAN, (CHANGED,), 0),  # a `check_mode: false` task really ran: nothing pending
        (Mode.PLAN, (PENDING, FAILED), 1),  # failure wins over pending
        (Mode.PLAN, (PENDING, IGNORED), 2),
        (Mode.PLAN, (PENDING, UNREACHABLE), 1),
        (Mode.VERIFY, (OK,), 0),
        (Mode.VERIFY, (OK, PENDING), 1),  # drift
        (Mode.VERIFY, (FAILED,), 1),
    ],
)
def test_exit_code(mode: Mode, results: tuple[TaskResult, ...], code: int) -> None:
    assert run_result(mode, *results).exit_code() == code


@pytest.mark.parametrize("mode", list(Mode))
def test_interrupted_exits_130(mode: Mode) -> None:
    assert run_result(mode, OK, PENDING, FAILED, interrupted=True).exit_code() == 130


def test_failed_hosts_and_pending() -> None:
    run = run_result(
        Mode.PLAN,
        task_result(Status.OK, host="a"),
        task_result(Status.FAILED, host="b"),
        task_result(Status.FAILED, ignored=True, host="c"),
        task_result(Status.UNREACHABLE, host="d"),
        task_result(Status.CHANGED, pending=True, host="e"),
    )
    assert sorted(run.failed_hosts) == ["b", "d"]
    assert [r.host for r in run.pending] == ["e"]


def test_host_stats_count_like_ansibles_recap() -> None:
    stats = HostStats()
    for result in (OK, CHANGED, PENDING, FAILED, IGNORED, UNREACHABLE, SKIPPED):
        stats.count(result)
    assert (stats.ok, stats.changed, stats.failures, stats.ignored, stats.unreachable, stats.skipped) == (
        3,
        2,
        1,
        1,
        1,
        1,
    )

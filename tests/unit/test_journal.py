"""The run journal on its own: what a run writes, what the next run reads back (killed, interrupted,
hosts left with handlers to run), masking, --resume's checks, a cut last line, the lock."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sparkprov.errors import InputError
from sparkprov.executor import journal as journal_module
from sparkprov.executor.journal import (
    ENV_STATE_DIR,
    RESUMED,
    JournalBusy,
    PendingHandler,
    Recorder,
    open_recorder,
    read_journal,
    state_dir,
)
from sparkprov.executor.results import ItemResult, Mode, RunResult, Status, TaskResult
from sparkprov.inventory import implicit_localhost
from sparkprov.playbook.loader import load_playbook
from sparkprov.playbook.model import Play, Playbook, Task
from sparkprov.report.masking import MASK, Masker

SECRET = "nvapi-0123456789abcdef"

PLAYBOOK = """\
- name: first
  hosts: localhost
  gather_facts: false
  tasks:
    - name: write config
      copy: {content: "x", dest: /tmp/x}
      notify: restart app
    - name: nap
      command: sleep 1
    - name: remember
      command: "true"
      register: out
    - name: a fact
      set_fact: {y: 1}
  handlers:
    - name: restart app
      command: "true"
    - name: reload
      listen: restart app
      command: "true"
- name: second
  hosts: localhost
  gather_facts: false
  tasks:
    - name: more
      command: "true"
      notify: tidy
  handlers:
    - name: tidy
      command: "true"
"""


@pytest.fixture
def book(tmp_path: Path) -> Playbook:
    path = tmp_path / "site.yml"
    path.write_text(PLAYBOOK)
    return load_playbook(path)


@pytest.fixture
def states(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def opened() -> Iterator[list[Recorder]]:
    """Recorders a test opens; their journals are closed (lock released) at the end."""
    recorders: list[Recorder] = []
    yield recorders
    for recorder in recorders:
        recorder.journal.close()


def start(
    book: Playbook,
    states: Path,
    opened: list[Recorder],
    *,
    resume: bool = False,
    masker: Masker | None = None,
) -> Recorder:
    recorder = open_recorder(book, implicit_localhost(), masker or Masker(), resume=resume, directory=states)
    opened.append(recorder)
    recorder.started(Mode.APPLY.value)
    return recorder


def result(task: Task, status: Status, *, handler: bool = False, name: str = "") -> TaskResult:
    return TaskResult(task, "localhost", status, [ItemResult(status)], handler=handler, name=name)


def finish(recorder: Recorder, *, interrupted: bool = False) -> None:
    recorder.finished(RunResult(Mode.APPLY, interrupted=interrupted))


def run_config_task(recorder: Recorder, play: Play, status: Status = Status.CHANGED) -> None:
    task = play.tasks[0]
    recorder.task_started(play, "localhost", task)
    recorder.task_done(play, result(task, status))


def journal_file(states: Path) -> Path:
    [path] = states.glob("*.jsonl")
    return path


# ---------------------------------------------------------------- write and read back


def test_a_finished_run_reads_back_finished(book: Playbook, states: Path, opened: list[Recorder]) -> None:
    recorder = start(book, states, opened)
    play = book.plays[0]
    run_config_task(recorder, play)
    recorder.task_done(play, result(play.handlers[0], Status.CHANGED, handler=True))
    recorder.task_done(play, result(play.handlers[1], Status.OK, handler=True))
    finish(recorder)

    record = read_journal(journal_file(states))
    assert record is not None
    assert record.finished and record.exit_code == 0 and not record.interrupted
    assert record.pid == os.getpid() and record.mode == "apply"
    assert record.playbook == str(book.path.resolve())
    host = record.hosts["localhost"]
    assert [m.name for m in host.done.values()] == ["write config"]
    assert host.pending_handlers == [] and host.running is None
    assert not record.unfinished


def test_a_killed_run_leaves_its_notified_handlers_pending(
    book: Playbook, states: Path, opened: list[Recorder]
) -> None:
    recorder = start(book, states, opened)
    play = book.plays[0]
    run_config_task(recorder, play)
    recorder.task_started(play, "localhost", play.tasks[1])  # then the controller dies

    record = read_journal(journal_file(states))
    assert record is not None and record.unfinished and record.outcome == "killed"
    host = record.hosts["localhost"]
    # notify "restart app" triggers the handler of that name and the one listening to it
    assert host.pending_handlers == [PendingHandler(0, "restart app"), PendingHandler(0, "reload")]
    assert host.last is not None and host.last.name == "write config"
    assert host.running is not None and host.running.name == "nap"
    assert set(host.done) == {(0, 0)}


def test_a_task_cut_off_while_running_counts_as_having_notified(
    book: Playbook, states: Path, opened: list[Recorder]
) -> None:
    """The controller may die after the module changed the file but before the result was written:
    a restart too many is harmless, a lost one is the bug the journal exists for."""
    recorder = start(book, states, opened)
    play = book.plays[0]
    recorder.task_started(play, "localhost", play.tasks[0])

    record = read_journal(journal_file(states))
    assert record is not None
    assert [p.name for p in record.hosts["localhost"].pending_handlers] == ["restart app", "reload"]
    assert record.hosts["localhost"].done == {}


def test_handlers_that_ran_are_no_longer_pending_but_failed_ones_are(
    book: Playbook, states: Path, opened: list[Recorder]
) -> None:
    recorder = start(book, states, opened)
    play = book.plays[0]
    run_config_task(recorder, play)
    recorder.task_done(play, result(play.handlers[0], Status.OK, handler=True))
    recorder.task_done(play, result(play.handlers[1], Status.FAILED, handler=True))
    finish(recorder)

    record = read_journal(journal_file(states))
    assert record is not None and record.finished
    assert record.hosts["localhost"].pending_handlers == [PendingHandler(0, "reload")]
    assert record.unfinished, "a host left with a handler to run is unfinished work"


def test_unchanged_tasks_notify_nothing_and_ignored_failures_count_as_done(
    book: Playbook, states: Path, opened: list[Recorder]
) -> None:
    recorder = start(book, states, opened)
    play = book.plays[0]
    run_config_task(recorder, play, Status.OK)
    failed = result(play.tasks[1], Status.FAILED)
    failed.ignored = True
    recorder.task_done(play, failed)
    recorder.task_done(play, result(play.tasks[2], Status.FAILED))
    finish(recorder)

    record = read_journal(journal_file(states))
    assert record is not None and not record.unfinished
    host = record.hosts["localhost"]
    assert {key: mark.status for key, mark in host.done.items()} == {(0, 0): "ok", (0, 1): "ignored"}
    assert host.last is not None and host.last.status == "failed"


def test_interrupted_and_unreachable_runs_are_unfinished(
    book: Playbook, states: Path, opened: list[Recorder]
) -> None:
    recorder = start(book, states, opened)
    finish(recorder, interrupted=True)
    record = read_journal(journal_file(states))
    assert record is not None and record.unfinished and record.outcome == "interrupted"
    assert record.exit_code == 130
    opened.pop().journal.close()

    recorder = start(book, states, opened)
    recorder.unreachable(book.plays[0], "localhost")
    finish(recorder)
    record = read_journal(journal_file(states))
    assert record is not None and record.finished and record.hosts["localhost"].unreachable
    assert record.unfinished


# ---------------------------------------------------------------- the next run


def test_the_next_run_carries_pending_handlers_and_preseeds_them_per_play(
    book: Playbook, states: Path, opened: list[Recorder]
) -> None:
    recorder = start(book, states, opened)
    first, second = book.plays
    run_config_task(recorder, first)
    recorder.task_done(second, result(second.tasks[0], Status.CHANGED))
    opened.pop().journal.close()  # killed: no finish record

    nxt = start(book, states, opened)
    assert nxt.previous is not None and nxt.previous.outcome == "killed"
    assert nxt.pending_handlers(first, "localhost") == ["restart app", "reload"]
    assert nxt.pending_handlers(second, "localhost") == ["tidy"]
    assert nxt.pending_handlers(first, "elsewhere") == []
    # the new file already says they are pending: a second death loses nothing
    carried = read_journal(journal_file(states))
    assert carried is not None and carried.pid == os.getpid()
    assert len(carried.hosts["localhost"].pending_handlers) == 3
    nxt.task_done(first, result(first.handlers[0], Status.CHANGED, handler=True))
    nxt.task_done(first, result(first.handlers[1], Status.CHANGED, handler=True))
    nxt.task_done(second, result(second.handlers[0], Status.CHANGED, handler=True))
    finish(nxt)
    record = read_journal(journal_file(states))
    assert record is not None and not record.unfinished


def test_pending_handlers_that_left_the_playbook_are_dropped(
    book: Playbook, states: Path, opened: list[Recorder], tmp_path: Path
) -> None:
    recorder = start(book, states, opened)
    run_config_task(recorder, book.plays[0])
    opened.pop().journal.close()

    book.path.write_text(PLAYBOOK.replace("name: restart app", "name: restart service"))
    edited = load_playbook(book.path)
    nxt = start(edited, states, opened)
    assert nxt.pending_handlers(edited.plays[0], "localhost") == ["reload"]  # still listens to it
    assert nxt.dropped == [("localhost", PendingHandler(0, "restart app"))]


def test_resume_skips_done_tasks_but_reruns_those_that_produce_values(
    book: Playbook, states: Path, opened: list[Recorder]
) -> None:
    recorder = start(book, states, opened)
    play = book.plays[0]
    for task in play.tasks:
        recorder.task_done(play, result(task, Status.OK))
    recorder.unreachable(play, "localhost")
    opened.pop().journal.close()

    nxt = start(book, states, opened, resume=True)
    assert nxt.resume
    skipped = nxt.resumed(play, "localhost", play.tasks[0])
    assert skipped is not None and skipped.status is Status.SKIPPED
    assert skipped.items[0].data == {"skip_reason": RESUMED}
    assert skipped.msg.startswith("skipped (resumed)")
    assert nxt.resumed(play, "localhost", play.tasks[2]) is None, "register: its value is not journaled"
    assert nxt.resumed(play, "localhost", play.tasks[3]) is None, "set_fact runs again"
    assert nxt.resumed(book.plays[1], "localhost", book.plays[1].tasks[0]) is None, "never done"
    # what resume skipped is done in the new journal too, for the next resume
    nxt.task_done(play, skipped)
    record = read_journal(journal_file(states))
    assert record is not None and (0, 0) in record.hosts["localhost"].done


def test_without_resume_nothing_is_skipped(book: Playbook, states: Path, opened: list[Recorder]) -> None:
    recorder = start(book, states, opened)
    run_config_task(recorder, book.plays[0])
    opened.pop().journal.close()
    nxt = start(book, states, opened)
    assert nxt.resumed(book.plays[0], "localhost", book.plays[0].tasks[0]) is None


def test_resume_refuses_a_changed_playbook(book: Playbook, states: Path, opened: list[Recorder]) -> None:
    recorder = start(book, states, opened)
    run_config_task(recorder, book.plays[0])
    opened.pop().journal.close()
    book.path.write_text(PLAYBOOK + "\n# edited\n")
    with pytest.raises(InputError, match="cannot resume: the playbook changed"):
        open_recorder(book, implicit_localhost(), Masker(), resume=True, directory=states)
    # without --resume the same journal is fine
    opened.append(open_recorder(book, implicit_localhost(), Masker(), resume=False, directory=states))


def test_resume_after_a_finished_run_resumes_nothing(
    book: Playbook, states: Path, opened: list[Recorder]
) -> None:
    recorder = start(book, states, opened)
    run_config_task(recorder, book.plays[0])
    recorder.task_done(book.plays[0], result(book.plays[0].handlers[0], Status.OK, handler=True))
    recorder.task_done(book.plays[0], result(book.plays[0].handlers[1], Status.OK, handler=True))
    finish(recorder)
    nxt = start(book, states, opened, resume=True)
    assert nxt.previous is None and not nxt.resume


# ---------------------------------------------------------------- secrets, damage, the file


def test_only_names_and_statuses_are_written_and_secrets_are_masked(
    book: Playbook, states: Path, opened: list[Recorder]
) -> None:
    masker = Masker([SECRET])
    recorder = start(book, states, opened, masker=masker)
    play = book.plays[0]
    item = ItemResult(Status.CHANGED, f"output {SECRET}", data={"stdout": "private output"})
    named = TaskResult(play.tasks[1], "localhost", Status.CHANGED, [item], name=f"log in with {SECRET}")
    recorder.task_done(play, named)
    finish(recorder)

    text = journal_file(states).read_text()
    assert SECRET not in text
    assert "private output" not in text and "output " not in text, "no outputs or messages"
    events = [json.loads(line) for line in text.splitlines()]
    assert events[1]["name"] == f"log in with {MASK}"


def test_a_cut_or_garbled_line_is_ignored(book: Playbook, states: Path, opened: list[Recorder]) -> None:
    recorder = start(book, states, opened)
    run_config_task(recorder, book.plays[0])
    path = journal_file(states)
    with path.open("ab") as handle:
        handle.write(b'{"event":"task","host":"localhost","play":0,"ta')  # killed mid-write
    record = read_journal(path)
    assert record is not None and set(record.hosts["localhost"].done) == {(0, 0)}

    with path.open("ab") as handle:
        handle.write(b'\n[1, 2]\n{"event": "task", "host": "localhost"}\nnot json\n')
    record = read_journal(path)
    assert record is not None and set(record.hosts["localhost"].done) == {(0, 0)}


def test_unknown_versions_and_missing_files_read_as_no_run(tmp_path: Path) -> None:
    assert read_journal(tmp_path / "none.jsonl") is None
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"event": "run", "v": 99, "time": "t", "pid": 1}) + "\n")
    assert read_journal(other) is None


def test_a_second_apply_of_the_same_playbook_and_inventory_is_refused(
    book: Playbook, states: Path, opened: list[Recorder]
) -> None:
    start(book, states, opened)
    with pytest.raises(JournalBusy, match=rf"pid {os.getpid()}\b"):
        open_recorder(book, implicit_localhost(), Masker(), resume=False, directory=states)


def test_a_write_that_fails_turns_the_journal_off_not_the_run(
    book: Playbook, states: Path, opened: list[Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = start(book, states, opened)

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(journal_module.os, "write", full)
    run_config_task(recorder, book.plays[0])
    monkeypatch.undo()
    run_config_task(recorder, book.plays[0])  # no more writes, no error
    assert recorder.journal.error is not None and "No space left on device" in recorder.journal.error
    record = read_journal(journal_file(states))
    assert record is not None and record.hosts == {}


def test_state_dir_from_the_environment() -> None:
    assert state_dir({ENV_STATE_DIR: "/srv/state"}) == Path("/srv/state")
    assert state_dir({"XDG_STATE_HOME": "/xdg"}) == Path("/xdg/sparkprov")
    assert state_dir({"XDG_STATE_HOME": "relative"}) == Path("~/.local/state/sparkprov").expanduser()
    assert state_dir({}) == Path("~/.local/state/sparkprov").expanduser()


def test_one_journal_per_playbook_and_inventory(tmp_path: Path) -> None:
    site = tmp_path / "site.yml"
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all: {}\n")
    paths = {
        journal_module.journal_path(site, "implicit localhost", tmp_path),
        journal_module.journal_path(site, str(inventory), tmp_path),
        journal_module.journal_path(tmp_path / "other.yml", str(inventory), tmp_path),
    }
    assert len(paths) == 3
    assert journal_module.journal_path(site, str(inventory), tmp_path).name.startswith("site-")

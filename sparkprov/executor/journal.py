"""The run journal: what an `apply` did, written as it happens, so that a run that dies (Ctrl-C, a host
that drops, a killed controller) is reported by the next `apply`, the handlers it notified still run,
and `apply --resume` skips the tasks it finished.

One file per playbook + inventory under the state dir (`$SPARKPROV_STATE_DIR`, else
`$XDG_STATE_HOME/sparkprov`, else `~/.local/state/sparkprov`): JSON lines, each written with a single
`write` as the event happens, so a killed controller loses nothing. What must also survive a crash of
the machine is flushed to disk before the run goes on: the run's start, the start of every task that
notifies (a change made just before a crash still gets its handler), and the end. A new run replaces
the file atomically and carries over what the previous one left unfinished (handlers still to run;
with `--resume`, the tasks done). Only names, indices and statuses are written, never arguments or
outputs, and every string goes through the Masker. A lock next to the file keeps two applies of the
same playbook and inventory apart.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparkprov import __version__
from sparkprov.errors import InputError, Place
from sparkprov.executor.results import ItemResult, RunResult, Status, TaskResult
from sparkprov.inventory import Inventory
from sparkprov.modules import get_module
from sparkprov.playbook.model import Play, Playbook, Task

if TYPE_CHECKING:
    from sparkprov.report.masking import Masker

FORMAT_VERSION = 1
ENV_STATE_DIR = "SPARKPROV_STATE_DIR"
RESUMED = "resumed"  # ItemResult.data["skip_reason"] of a task skipped by --resume

# Statuses written for a task or handler; everything but "failed" counts as done.
_IGNORED = "ignored"  # failed, but ignore_errors let the host go on
_FAILED = Status.FAILED.value


class JournalError(Exception):
    """The journal cannot be used: the state dir is not writable, or another apply holds it."""


class JournalBusy(JournalError):
    """Another `apply` of the same playbook on the same inventory is running."""


def state_dir(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get(ENV_STATE_DIR):
        return Path(env[ENV_STATE_DIR]).expanduser()
    xdg = env.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path("~/.local/state").expanduser()
    return base / "sparkprov"


def journal_path(playbook: Path, inventory_source: str, directory: Path) -> Path:
    """`<state dir>/<playbook stem>-<key>.jsonl`, key = sha256 of the resolved playbook and inventory."""
    inventory = Path(inventory_source)
    where = str(inventory.resolve()) if inventory.exists() else inventory_source
    key = hashlib.sha256(f"{playbook.resolve()}\0{where}".encode()).hexdigest()
    return directory / f"{playbook.stem}-{key[:16]}.jsonl"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- what a journal says


@dataclass(frozen=True)
class Mark:
    """A task or handler as the journal names it: play index, index in the play, name, status."""

    play: int
    index: int
    name: str
    status: str

    @property
    def done(self) -> bool:
        return self.status != _FAILED


@dataclass(frozen=True)
class PendingHandler:
    play: int
    name: str


@dataclass
class HostRecord:
    """One host in a journal: tasks done (by play and task index), the last task that finished, the
    task that was running when the run stopped, handlers notified but not yet run."""

    done: dict[tuple[int, int], Mark] = field(default_factory=dict)
    last: Mark | None = None
    running: Mark | None = None
    pending: dict[PendingHandler, None] = field(default_factory=dict)  # ordered set
    unreachable: bool = False
    maybe_pending: tuple[PendingHandler, ...] = ()  # what the running task notifies if it changes

    @property
    def pending_handlers(self) -> list[PendingHandler]:
        """Notified and not run; a task cut off while running counts as having notified (a config
        may have changed before the controller died, and a restart too many is harmless)."""
        return list(dict.fromkeys([*self.pending, *(self.maybe_pending if self.running else ())]))

    @property
    def unfinished(self) -> bool:
        return bool(self.pending_handlers) or self.unreachable or self.running is not None


@dataclass
class RunRecord:
    """One run as its journal tells it."""

    started: str
    pid: int
    mode: str
    playbook: str
    inventory: str
    playbook_sha256: str
    resume: bool = False
    finished: bool = False
    exit_code: int | None = None
    interrupted: bool = False
    hosts: dict[str, HostRecord] = field(default_factory=dict)

    @property
    def unfinished(self) -> bool:
        """Killed (no end record), interrupted, or a host left with handlers to run or unreached."""
        return not self.finished or self.interrupted or any(h.unfinished for h in self.hosts.values())

    @property
    def outcome(self) -> str:
        if not self.finished:
            return "killed"
        return "interrupted" if self.interrupted else f"exit {self.exit_code}"

    def host(self, name: str) -> HostRecord:
        return self.hosts.setdefault(name, HostRecord())


def read_journal(path: Path) -> RunRecord | None:
    """The run a journal file records; None when there is none. Lines that do not parse (the last
    one, cut short when the controller was killed mid-write) are ignored."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    record: RunRecord | None = None
    for event in _events(data):
        if event.get("event") == "run":
            record = _header(event)
        elif record is not None:
            with contextlib.suppress(KeyError, TypeError, ValueError):
                _apply_event(record, event)
    return record


def _events(data: bytes) -> Iterator[dict[str, Any]]:
    for line in data.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            yield event


def _header(event: dict[str, Any]) -> RunRecord | None:
    if event.get("v") != FORMAT_VERSION:
        return None
    try:
        return RunRecord(
            started=str(event["time"]),
            pid=int(event["pid"]),
            mode=str(event["mode"]),
            playbook=str(event["playbook"]),
            inventory=str(event["inventory"]),
            playbook_sha256=str(event["playbook_sha256"]),
            resume=bool(event.get("resume")),
        )
    except (KeyError, TypeError, ValueError):
        return None


def _mark(event: dict[str, Any], index_key: str) -> Mark:
    return Mark(int(event["play"]), int(event[index_key]), str(event["name"]), str(event["status"]))


def _notified(event: dict[str, Any]) -> list[PendingHandler]:
    return [PendingHandler(int(event["play"]), str(name)) for name in event.get("notify", [])]


def _apply_event(record: RunRecord, event: dict[str, Any]) -> None:
    kind = event["event"]
    if kind == "finished":
        record.finished = True
        record.exit_code = int(event["exit_code"])
        record.interrupted = bool(event.get("interrupted"))
        return
    host = record.host(str(event["host"]))
    if kind == "started":
        host.running = Mark(int(event["play"]), int(event["task"]), str(event["name"]), "running")
        host.maybe_pending = tuple(_notified(event))
    elif kind == "task":
        mark = _mark(event, "task")
        if mark.done:
            host.done[(mark.play, mark.index)] = mark
        host.last, host.running = mark, None
        host.pending.update(dict.fromkeys(_notified(event)))
    elif kind == "handler":
        mark = _mark(event, "handler")
        if mark.done:
            host.pending.pop(PendingHandler(mark.play, mark.name), None)
        host.pending.update(dict.fromkeys(_notified(event)))
    elif kind == "notified":
        host.pending.update(dict.fromkeys(_notified(event)))
    elif kind == "unreachable":
        host.unreachable, host.running = True, None


# ---------------------------------------------------------------- the file


class Journal:
    """A journal file: read the last run, or (holding the lock) start a new one and append to it."""

    def __init__(self, path: Path, masker: Masker) -> None:
        self.path = path
        self.masker = masker
        self.error: str | None = None  # why writing stopped part way, if it did
        self._lock = threading.Lock()  # the file and the count of events written
        self._sync_lock = threading.Lock()  # one flush at a time
        self._written = 0
        self._synced = 0
        self._renamed_durably = False
        self._fd: int | None = None
        self._lock_fd: int | None = None

    def last_run(self) -> RunRecord | None:
        return read_journal(self.path)

    def lock(self) -> None:
        """Take the lock for this playbook and inventory (released when the process ends)."""
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise JournalError(f"cannot use the state dir {self.path.parent}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise JournalBusy(
                f"another `sparkprov apply` (pid {holder}) is running this playbook on this inventory; "
                f"wait for it to finish (its journal: {self.path})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def begin(self, events: Iterable[dict[str, Any]], *, durable: bool) -> None:
        """Replace the file with a new run's first events, atomically: the previous run stays readable
        until the new file is complete. `durable`: flushed to disk first (when they carry handlers
        still to run); otherwise the first flush of the run makes the new file durable. A failure leaves
        the previous run in place and the journal off for this run; `error` says why."""
        lines = b"".join(self._encode(e) for e in events)
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        except OSError as exc:
            self.error = f"{self.path.parent}: {exc.strerror or exc}"
            return
        try:
            os.write(fd, lines)
            if durable:
                os.fsync(fd)
            os.rename(tmp, self.path)
            if durable:
                _fsync_dir(self.path.parent)
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            self.error = f"{self.path}: {exc.strerror or exc}"
            return
        self._fd = fd  # the same inode as self.path now, positioned at its end
        self._renamed_durably = durable

    def write(self, event: dict[str, Any], *, sync: bool = False) -> None:
        """Append one event with one `write` (a killed controller leaves at most a cut last line; what
        was written survives it in the kernel). With `sync`, return only once it is on disk: host
        threads that sync at the same time share one flush. A failure (full disk...) stops the journal
        for the rest of the run instead of failing the run; `error` says why."""
        data = self._encode(event)
        with self._lock:
            if self._fd is None:
                return
            try:
                if os.write(self._fd, data) != len(data):
                    raise OSError(errno.ENOSPC, "short write")
            except OSError as exc:
                self._fail(exc)
                return
            self._written += 1
            mine = self._written
        if sync:
            self._sync(mine)

    def _sync(self, upto: int) -> None:
        with self._sync_lock:
            if self._synced >= upto:
                return  # another thread's flush covered this event
            with self._lock:
                fd, target = self._fd, self._written
            if fd is None:
                return
            try:
                if not self._renamed_durably:
                    _fsync_dir(self.path.parent)  # the new file, not the previous run's, after a crash
                    self._renamed_durably = True
                os.fdatasync(fd)
            except OSError as exc:
                with self._lock:
                    self._fail(exc)
                return
            self._synced = target

    @property
    def flushed(self) -> bool:
        """Something of this run was flushed to disk."""
        return self._synced > 0

    def _fail(self, exc: OSError) -> None:
        self.error = f"{self.path}: {exc.strerror or exc}"
        self._close_file()

    def close(self) -> None:
        with self._lock:
            self._close_file()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the lock
            self._lock_fd = None

    def _close_file(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _encode(self, event: dict[str, Any]) -> bytes:
        masked = self.masker.data(event)
        return (json.dumps(masked, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------- what the runner calls


class Recorder:
    """The runner's side of the journal: maps plays, tasks and handlers to their indices, writes the
    events, and answers what the previous unfinished run left: handlers to pre-seed, and (with
    `--resume`) tasks to skip. Thread-safe: host threads call it at once."""

    def __init__(
        self,
        journal: Journal,
        playbook: Playbook,
        inventory: Inventory,
        *,
        previous: RunRecord | None,
        resume: bool,
    ) -> None:
        self.journal = journal
        self.playbook = playbook
        self.inventory = inventory
        self.previous = previous if previous is not None and previous.unfinished else None
        self.resume = resume and self.previous is not None
        self.playbook_sha256 = file_sha256(playbook.path)
        self._plays = {id(play): index for index, play in enumerate(playbook.plays)}
        self._carried, self.dropped = self._carry()

    # ------------------------------------------------------------ before the run

    def _carry(self) -> tuple[dict[str, list[PendingHandler]], list[tuple[str, PendingHandler]]]:
        """Pending handlers of the previous run that still exist (by name, in the same play), per host;
        and those that no longer do (the host or the handler is gone)."""
        kept: dict[str, list[PendingHandler]] = {}
        dropped: list[tuple[str, PendingHandler]] = []
        if self.previous is None:
            return kept, dropped
        for host, record in self.previous.hosts.items():
            for pending in record.pending_handlers:
                if host in self.inventory.hosts and self._defined(pending):
                    kept.setdefault(host, []).append(pending)
                else:
                    dropped.append((host, pending))
        return kept, dropped

    def _defined(self, pending: PendingHandler) -> bool:
        """A handler of that name is in that play (handlers are journaled under their own names)."""
        plays = self.playbook.plays
        return 0 <= pending.play < len(plays) and any(
            h.name == pending.name for h in plays[pending.play].handlers
        )

    def _handlers(self, play_index: int, names: Iterable[str]) -> list[str]:
        """Names of the handlers of play `play_index` that notifying `names` triggers."""
        if not 0 <= play_index < len(self.playbook.plays):
            return []
        wanted = set(names)
        return [
            h.name
            for h in self.playbook.plays[play_index].handlers
            if h.name in wanted or wanted.intersection(h.listen)
        ]

    def started(self, mode: str) -> None:
        header = {
            "event": "run",
            "v": FORMAT_VERSION,
            "time": _now(),
            "pid": os.getpid(),
            "mode": mode,
            "playbook": str(self.playbook.path.resolve()),
            "inventory": self.inventory.source,
            "playbook_sha256": self.playbook_sha256,
            "resume": self.resume,
            "sparkprov": __version__,
        }
        carried = [
            {"event": "notified", "host": host, "play": p.play, "notify": [p.name], "carried": True}
            for host, pending in self._carried.items()
            for p in pending
        ]
        self.journal.begin([header, *carried], durable=bool(carried))

    def finished(self, result: RunResult) -> None:
        end = {"event": "finished", "time": _now(), "exit_code": result.exit_code()}
        # Durable when the run wrote anything durable: after a crash, its end says those are settled.
        self.journal.write({**end, "interrupted": result.interrupted}, sync=self.journal.flushed)
        self.journal.close()

    # ------------------------------------------------------------ during the run

    def pending_handlers(self, play: Play, host: str) -> list[str]:
        """Handlers the previous run notified on `host` in this play and never ran: they run at the end
        of the play even if nothing changes now."""
        index = self._plays[id(play)]
        return [p.name for p in self._carried.get(host, []) if p.play == index]

    def resumed(self, play: Play, host: str, task: Task) -> TaskResult | None:
        """With --resume: the "skipped (resumed)" result of a task the previous run finished on `host`.
        Tasks whose results later tasks read (register, set_fact and other controller-side actions)
        run again: the journal keeps no outputs."""
        if not self.resume or self.previous is None:
            return None
        if task.register or get_module(task.module).controller_only:
            return None
        play_index = self._plays[id(play)]
        record = self.previous.hosts.get(host)
        mark = record.done.get((play_index, _index_of(play, task))) if record else None
        if mark is None:
            return None
        msg = f"skipped (resumed): done by the run started {self.previous.started} ({mark.status})"
        item = ItemResult(Status.SKIPPED, msg, data={"skip_reason": RESUMED})
        return TaskResult(task, host, Status.SKIPPED, [item], msg=msg, name=mark.name)

    def task_started(self, play: Play, host: str, task: Task) -> None:
        """Before a task runs: if the controller dies while it runs, the journal says which task it was,
        and the handlers it notifies count as notified (a config may have changed just before). Only
        tasks that notify wait for the disk; for the others this is information, not state."""
        play_index = self._plays[id(play)]
        event = {
            "event": "started",
            "host": host,
            "play": play_index,
            "task": _index_of(play, task),
            "name": task.name,
            "notify": self._handlers(play_index, task.notify),
        }
        self.journal.write(event, sync=bool(task.notify))

    def task_done(self, play: Play, result: TaskResult) -> None:
        play_index = self._plays[id(play)]
        task = result.task
        changed = result.status is Status.CHANGED
        status = _IGNORED if result.status is Status.FAILED and result.ignored else result.status.value
        event: dict[str, Any] = {
            "event": "handler" if result.handler else "task",
            "host": result.host,
            "play": play_index,
            "handler" if result.handler else "task": _index_of(play, task, result.handler),
            "name": result.name,
            "status": status,
            "changed": changed,
            "notify": self._handlers(play_index, task.notify) if changed else [],
        }
        if result.items and result.items[0].data.get("skip_reason") == RESUMED:
            event["resumed"] = True
        self.journal.write(event)

    def unreachable(self, play: Play, host: str) -> None:
        self.journal.write({"event": "unreachable", "host": host, "play": self._plays[id(play)]})


def _index_of(play: Play, task: Task, handler: bool = False) -> int:
    """The position of `task` in the play (by identity: two tasks may be equal as values)."""
    tasks = play.handlers if handler else play.tasks
    for index, candidate in enumerate(tasks):
        if candidate is task:
            return index
    return -1


def open_recorder(
    playbook: Playbook, inventory: Inventory, masker: Masker, *, resume: bool, directory: Path | None = None
) -> Recorder:
    """Lock this playbook + inventory's journal and read what the previous run left unfinished.
    JournalError when the state dir cannot be used or another apply holds it; InputError (exit 4)
    when `--resume` is asked for but the playbook changed since the run it would resume."""
    journal = Journal(journal_path(playbook.path, inventory.source, directory or state_dir()), masker)
    journal.lock()
    try:
        recorder = Recorder(journal, playbook, inventory, previous=journal.last_run(), resume=resume)
        previous = recorder.previous
        if recorder.resume and previous is not None and previous.playbook_sha256 != recorder.playbook_sha256:
            raise InputError.single(
                Place(str(playbook.path)),
                f"cannot resume: the playbook changed since the unfinished run of {previous.started}, "
                "so its task numbers may no longer match",
                hint="run `sparkprov apply` without --resume: every task runs again (they are idempotent) "
                "and the handlers that run left pending still run",
            )
    except BaseException:
        journal.close()
        raise
    return recorder

"""The order of things: plays in order, hosts in batches and in parallel, tasks in order, handlers
at the end of each play. Modules are reached only through `TaskRunner`."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sparkprov import __version__
from sparkprov.connection.base import Become, BecomeFailed, Connection, HostUnreachable
from sparkprov.executor.cache import CachingConnection
from sparkprov.executor.overlay import PlannedConnection
from sparkprov.executor.results import (
    HostStats,
    ItemResult,
    Mode,
    PlayRun,
    RunResult,
    Status,
    TaskResult,
    VerifyResult,
)
from sparkprov.executor.task import OMIT, TaskRunner, TaskSettings
from sparkprov.executor.verification import VerificationRunner
from sparkprov.inventory import Host, Inventory
from sparkprov.playbook.model import Play, Playbook, Task
from sparkprov.playbook.templating import DataLayer, KnownAfterApply, Scope, TemplateError, UnknownValue
from sparkprov.secrets import is_secret_name

if TYPE_CHECKING:
    from sparkprov.executor.journal import Recorder


@dataclass
class RunOptions:
    mode: Mode = Mode.APPLY
    diff: bool = False
    tags: frozenset[str] = frozenset()
    skip_tags: frozenset[str] = frozenset()
    extra_vars: dict[str, Any] = field(default_factory=dict)
    forks: int = 10
    limit: str | None = None
    no_verify: bool = False

    @property
    def runs_verify(self) -> bool:
        """`apply` runs the verify steps at the end (unless --no-verify), `verify` runs them, `plan` never."""
        return self.mode is Mode.VERIFY or (self.mode is Mode.APPLY and not self.no_verify)


class Observer(Protocol):
    def play_started(self, play: Play, hosts: list[str]) -> None: ...

    def task_finished(self, result: TaskResult) -> None: ...

    def verify_finished(self, result: VerifyResult) -> None: ...

    def progress(self, host: str, task: Task, what: str, done: int, total: int | None) -> None: ...

    def interrupted(self) -> None: ...


def task_selected(task: Task, play: Play, options: RunOptions) -> bool:
    """Ansible's tag rules, including the special tags always, never, tagged, untagged, all."""
    tags = task.tags | play.tags
    if options.skip_tags and (
        tags & options.skip_tags
        or ("tagged" in options.skip_tags and tags)
        or ("untagged" in options.skip_tags and not tags)
    ):
        return False
    if not options.tags:
        return "never" not in tags
    if "always" in tags:
        return True
    if tags & options.tags:
        return True
    if "all" in options.tags and "never" not in tags:
        return True
    if "tagged" in options.tags and tags:
        return True
    return "untagged" in options.tags and not tags


def batches(hosts: list[str], serial: tuple[int | str, ...]) -> Iterator[list[str]]:
    """Split hosts into `serial` batches (numbers or percentages; the last size repeats)."""
    if not serial:
        yield hosts
        return
    sizes = [
        max(1, math.floor(len(hosts) * int(s[:-1]) / 100)) if isinstance(s, str) else int(s) for s in serial
    ]
    start, index = 0, 0
    while start < len(hosts):
        size = sizes[min(index, len(sizes) - 1)]
        yield hosts[start : start + size]
        start += size
        index += 1


class LazyFacts(Mapping[str, Any]):
    """Facts are gathered (one probe) only when a template first reads one."""

    def __init__(self, names: frozenset[str], gather: Callable[[], dict[str, Any]]) -> None:
        self._names = names
        self._gather = gather
        self._facts: dict[str, Any] | None = None

    def __contains__(self, key: object) -> bool:
        return key in self._names

    def __getitem__(self, key: str) -> Any:
        if key not in self._names:
            raise KeyError(key)
        if self._facts is None:
            self._facts = self._gather()
        return self._facts[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


@dataclass
class HostRun:
    """One host's state while a play runs on it."""

    name: str
    runner: TaskRunner
    scope: Scope
    notified: list[str] = field(default_factory=list)
    failed: bool = False


class Runner:
    """Ansible's linear strategy: each task runs on every host of the batch (in parallel, up to
    `forks`) before the next task starts, so any_errors_fatal and max_fail_percentage act between
    tasks, and handlers run at the end of the play."""

    def __init__(
        self,
        playbook: Playbook,
        inventory: Inventory,
        options: RunOptions,
        observer: Observer,
        *,
        connect: Callable[[Host], Connection],
        play_vars_files: list[dict[str, Any]],
        fact_names: frozenset[str],
        gather_facts: Callable[[Connection], dict[str, Any]],
        on_secret: Callable[[str], None] = lambda value: None,
        journal: Recorder | None = None,
    ) -> None:
        self.playbook = playbook
        self.inventory = inventory
        self.options = options
        self.observer = observer
        self.connect = connect
        self.play_vars_files = play_vars_files
        self.fact_names = fact_names
        self.gather_facts = gather_facts
        # Values output must mask: variables named like secrets, and what modules register.
        self.on_secret = on_secret
        self.journal = journal  # apply only: the run journal (executor/journal.py)
        self.result = RunResult(options.mode)
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._connections: dict[str, Connection] = {}
        self._runtime_vars: dict[str, DataLayer] = {}
        self._facts: dict[str, LazyFacts] = {}
        self._dead_hosts: set[str] = set()

    def play_hosts(self, play: Play) -> list[str]:
        selected: list[str] = []
        for pattern in play.hosts:
            selected.extend(h for h in self.inventory.match(pattern) if h not in selected)
        if self.options.limit:
            allowed = set(self.inventory.match(self.options.limit))
            selected = [h for h in selected if h in allowed]
        return [h for h in selected if h not in self._dead_hosts]

    def run(self) -> RunResult:
        pool = ThreadPoolExecutor(max_workers=max(1, self.options.forks))
        if self.journal is not None:
            self.journal.started(self.options.mode.value)
        try:
            for play, files_vars in zip(self.playbook.plays, self.play_vars_files):
                if self.stop.is_set():
                    break
                self._run_play(pool, play, files_vars)
        except KeyboardInterrupt:
            if self.result.interrupted:  # Ctrl-C a second time: stop without waiting for running tasks
                self.result.aborted = True
            else:  # Ctrl-C outside `_parallel`: the tasks still running are awaited in `_shut_down`
                self._interrupted()
        finally:
            self._shut_down(pool)
            for name, conn in self._connections.items():
                self.result.round_trips[name] = conn.round_trip_count()
                if not self.result.aborted:  # a task may still be using it
                    conn.close()
        if self.journal is not None:
            self.journal.finished(self.result)
        return self.result

    def _shut_down(self, pool: ThreadPoolExecutor) -> None:
        """Wait for the tasks still running, unless the run was aborted; Ctrl-C while waiting here
        aborts it too."""
        if not self.result.aborted:
            try:
                pool.shutdown(wait=True, cancel_futures=True)
            except KeyboardInterrupt:
                self.result.aborted = self.result.interrupted = True
        pool.shutdown(wait=False, cancel_futures=True)

    def _run_play(self, pool: ThreadPoolExecutor, play: Play, files_vars: dict[str, Any]) -> None:
        hosts = self.play_hosts(play)
        play_run = PlayRun(play, hosts)
        with self._lock:
            self.result.plays.append(play_run)
            for host in hosts:  # the recap lists hosts in inventory order
                self.result.stats.setdefault(host, HostStats())
        self.observer.play_started(play, hosts)
        for batch in batches(hosts, play.serial):
            if self.stop.is_set() or not self._run_batch(pool, play, play_run, batch, hosts, files_vars):
                break

    def _parallel(self, pool: ThreadPoolExecutor, work: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        """Run `work` on every item (a host) at once and wait; Ctrl-C stops scheduling new work
        but lets what runs finish, so results and the recap stay consistent."""
        if len(items) == 1:
            futures = [pool.submit(work, items[0])]
        else:
            futures = [pool.submit(work, item) for item in items]
        try:
            wait(futures)
        except KeyboardInterrupt:
            self._interrupted()
            wait(futures)  # a second Ctrl-C here aborts the run (see `run`)
        return [f.result() for f in futures]

    def _interrupted(self) -> None:
        self.stop.set()
        self.result.interrupted = True
        self.observer.interrupted()

    def _run_batch(
        self,
        pool: ThreadPoolExecutor,
        play: Play,
        play_run: PlayRun,
        batch: list[str],
        hosts: list[str],
        files_vars: dict[str, Any],
    ) -> bool:
        """Run the play on one batch of hosts; False when the play must not go on to later batches."""
        starts = self._parallel(
            pool, lambda name: self._start_host(play, play_run, name, batch, hosts, files_vars), batch
        )
        runs: list[HostRun] = [r for r in starts if r is not None]
        for task in play.tasks:
            alive = [r for r in runs if not r.failed]
            if self.stop.is_set() or not alive:
                break
            if not task_selected(task, play, self.options):
                continue
            self._parallel(pool, partial(self._step, play, play_run, task=task, handler=False), alive)
            if not self._may_continue(play, batch, runs, starts):
                return False
        self._flush_handlers(pool, play, play_run, runs)
        self._verify(pool, play, runs)
        return self._may_continue(play, batch, runs, starts)

    def _may_continue(self, play: Play, batch: list[str], runs: list[HostRun], starts: list[Any]) -> bool:
        failed = sum(1 for r in runs if r.failed) + sum(1 for s in starts if s is None)
        if not failed:
            return True
        if play.any_errors_fatal:
            for run in runs:
                run.failed = True  # every host stops after the task that failed
            return False
        limit = play.max_fail_percentage
        if limit is not None and 100.0 * failed / len(batch) > limit:
            for run in runs:
                run.failed = True
            return False
        return failed < len(batch)

    def _record(self, play_run: PlayRun, result: TaskResult) -> None:
        with self._lock:
            play_run.results.append(result)
            self.result.stats.setdefault(result.host, HostStats()).count(result)
        self.observer.task_finished(result)

    def _connection(self, host: Host) -> Connection:
        conn = self._connections.get(host.name)
        if conn is None:
            conn = CachingConnection(self.connect(host))
            if self.options.mode is not Mode.APPLY:
                conn = PlannedConnection(conn)
            with self._lock:
                self._connections[host.name] = conn
        return conn

    def _peer(self, name: str) -> Connection:
        """The run's connection to inventory host `name` (a module's source host, e.g. a seed), opened
        now if it was not; KeyError when the inventory has no such host."""
        conn = self._connection(self.inventory.hosts[name])
        conn.open()
        return conn

    def _start_host(
        self,
        play: Play,
        play_run: PlayRun,
        name: str,
        batch: list[str],
        hosts: list[str],
        files_vars: dict[str, Any],
    ) -> HostRun | None:
        host = self.inventory.hosts[name]
        try:
            conn = self._connection(host)
            conn.open()  # in the batch's parallel start, so logins to many hosts overlap
        except HostUnreachable as exc:
            self._unreachable(play_run, play, name, str(exc))
            return None
        scope = self._scope(play, host, batch, hosts, files_vars, conn)
        self._collect_secrets(scope)
        runtime = self._runtime_vars[name]
        runner = TaskRunner(
            TaskSettings(
                conn=conn,
                check_mode=self.options.mode is not Mode.APPLY,
                want_diff=self.options.diff or self.options.mode is not Mode.APPLY,
                play_become=play.become,
                play_become_user=play.become_user,
                play_environment=play.environment,
                search_dirs=(self.playbook.directory,),
                outranks_task_vars=lambda key: key in self.options.extra_vars or key in runtime,
                progress=partial(self.observer.progress, name),
                secret=self.on_secret,
                peer=self._peer,
            )
        )
        run = HostRun(name, runner, scope)
        if self.journal is not None:  # what a run that died notified here still runs at the end
            run.notified.extend(self.journal.pending_handlers(play, name))
        try:
            self._prefetch(play, run, conn)
        except HostUnreachable as exc:
            self._unreachable(play_run, play, name, str(exc))
            return None
        return run

    def _prefetch(self, play: Play, run: HostRun, conn: Connection) -> None:
        """One batched stat of every path the play's checks will look at (per become user)."""
        prefetch = getattr(conn, "prefetch", None)
        if prefetch is None:
            return
        by_user: dict[str, tuple[Become | None, list[tuple[str, bool]]]] = {}
        for task in play.tasks:
            if task_selected(task, play, self.options):
                for path, checksum, become in run.runner.probe(task, run.scope):
                    key = become.user if become else ""
                    by_user.setdefault(key, (become, []))[1].append((path, checksum))
        for become, requests in by_user.values():
            try:
                prefetch(requests, become=become)
            except BecomeFailed:
                continue  # the tasks that need it report the refusal themselves

    def _scope(
        self,
        play: Play,
        host: Host,
        batch: list[str],
        hosts: list[str],
        files_vars: dict[str, Any],
        conn: Connection,
    ) -> Scope:
        runtime = self._runtime_vars.setdefault(host.name, DataLayer())
        layers: list[Mapping[str, Any]] = [
            self.options.extra_vars,
            runtime,
            files_vars,
            play.vars,
            self.inventory.host_vars(host),
            self._magic(play, host, batch, hosts),
        ]
        if play.gather_facts:
            facts = self._facts.get(host.name)
            if facts is None:
                facts = LazyFacts(self.fact_names, lambda: self.gather_facts(conn))
                self._facts[host.name] = facts
            layers.append(facts)
        return Scope(layers)

    def _collect_secrets(self, scope: Scope) -> None:
        for key in scope:
            if is_secret_name(key):
                try:
                    value = scope[key]
                except (TemplateError, KnownAfterApply):
                    continue  # reported where it is used
                if isinstance(value, str):
                    self.on_secret(value)

    def _magic(self, play: Play, host: Host, batch: list[str], hosts: list[str]) -> dict[str, Any]:
        inventory = self.inventory
        return {
            "inventory_hostname": host.name,
            "inventory_hostname_short": host.name.split(".")[0],
            "inventory_file": inventory.source,
            "inventory_dir": _inventory_dir(inventory.source, self.playbook.directory),
            "group_names": inventory.group_names(host),
            "groups": {name: inventory.members(name) for name in inventory.groups},
            "hostvars": {name: inventory.host_vars(h) for name, h in inventory.hosts.items()},
            "playbook_dir": str(self.playbook.directory),
            "ansible_check_mode": self.options.mode is not Mode.APPLY,
            "ansible_diff_mode": self.options.diff,
            "ansible_play_hosts": hosts,
            "ansible_play_hosts_all": hosts,
            "play_hosts": hosts,
            "ansible_play_batch": batch,
            "ansible_play_name": play.name,
            "ansible_run_tags": sorted(self.options.tags) or ["all"],
            "ansible_skip_tags": sorted(self.options.skip_tags),
            "ansible_version": {"full": __version__, "string": f"sparkprov {__version__}"},
            "sparkprov_version": __version__,
            "sparkprov_mode": self.options.mode.value,
            "omit": OMIT,
        }

    def _step(self, play: Play, play_run: PlayRun, run: HostRun, task: Task, *, handler: bool) -> None:
        if self.journal is not None and not handler:
            skipped = self.journal.resumed(play, run.name, task)
            if skipped is not None:  # --resume: done by the run that died
                self._record(play_run, skipped)
                self.journal.task_done(play, skipped)
                return
            self.journal.task_started(play, run.name, task)
        try:
            result = run.runner.run(task, run.name, run.scope, handler=handler)
        except HostUnreachable as exc:
            self._unreachable(play_run, play, run.name, str(exc), task)
            run.failed = True
            return
        self._record(play_run, result)
        if result.status is Status.CHANGED:
            run.notified.extend(n for n in task.notify if n not in run.notified)
        if self.journal is not None:
            self.journal.task_done(play, result)
        if self._remember(run.name, task, result):
            run.scope = run.scope.refreshed()  # drop renders cached from the old values
        run.failed = result.status is Status.FAILED and not result.ignored
        if run.failed:
            with self._lock:
                self._dead_hosts.add(run.name)  # a failed host takes no part in later plays

    def _remember(self, host: str, task: Task, result: TaskResult) -> bool:
        """Registered results and set_fact values become host variables for later tasks and plays."""
        runtime = self._runtime_vars[host]
        updated = False
        if task.register:
            runtime[task.register] = result.registered()
            updated = True
        for item in result.items:
            facts = item.data.get("ansible_facts")
            if isinstance(facts, dict) and item.status is not Status.FAILED:
                runtime.update(facts)
                updated = True
            elif task.module == "set_fact" and item.predicted:
                # The values come from tasks a plan did not run: later uses are known after apply.
                runtime.update({k: UnknownValue(task.name) for k in task.args if k != "cacheable"})
                updated = True
        return updated

    def _flush_handlers(
        self, pool: ThreadPoolExecutor, play: Play, play_run: PlayRun, runs: list[HostRun]
    ) -> None:
        """Notified handlers run once each, in the order they are defined, on the hosts that
        notified them; a handler may notify a later one."""
        done: dict[str, set[int]] = {run.name: set() for run in runs}
        while not self.stop.is_set():
            progressed = False
            for index, handler in enumerate(play.handlers):
                waiting = [
                    run
                    for run in runs
                    if not run.failed
                    and index not in done[run.name]
                    and (handler.name in run.notified or any(t in run.notified for t in handler.listen))
                ]
                if not waiting:
                    continue
                progressed = True
                for run in waiting:
                    done[run.name].add(index)
                self._parallel(pool, partial(self._step, play, play_run, task=handler, handler=True), waiting)
            if not progressed:
                return

    def _verify(self, pool: ThreadPoolExecutor, play: Play, runs: list[HostRun]) -> None:
        """The play's verify steps, in order, each on every host that did not fail (in parallel).
        A failed step fails the run (exit 1) but does not stop the host's later steps or plays."""
        if not self.options.runs_verify:
            return
        for step in sorted(play.verify, key=lambda s: s.module != "preflight"):  # preflight first
            alive = [r for r in runs if not r.failed]
            if self.stop.is_set() or not alive:
                return
            if task_selected(step, play, self.options):
                self._parallel(pool, partial(self._verify_step, play, step), alive)

    def _verify_step(self, play: Play, step: Task, run: HostRun) -> None:
        for result in VerificationRunner(run.runner.settings).run(step, run.name, play.name, run.scope):
            with self._lock:
                self.result.verify.append(result)
            self.observer.verify_finished(result)

    def _unreachable(
        self, play_run: PlayRun, play: Play, host: str, message: str, task: Task | None = None
    ) -> None:
        with self._lock:
            self._dead_hosts.add(host)
        if self.journal is not None:
            self.journal.unreachable(play, host)
        target = task or (play.tasks[0] if play.tasks else None)
        if target is None:
            return
        item = ItemResult(Status.UNREACHABLE, message)
        self._record(play_run, TaskResult(target, host, Status.UNREACHABLE, [item], msg=message))


def _inventory_dir(source: str, fallback: Path) -> str:
    """Ansible's inventory_dir: the inventory's folder (the playbook's, for the implicit localhost)."""
    path = Path(source)
    if path.is_dir():
        return str(path)
    return str(path.parent) if path.exists() else str(fallback)

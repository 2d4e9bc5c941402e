"""The order of things: plays in order, hosts in batches and in parallel, tasks in order, handlers
at the end of each play. Modules are reached only through `TaskRunner`."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from sparkprov import __version__
from sparkprov.connection.base import Connection, HostUnreachable
from sparkprov.executor.overlay import PlannedConnection
from sparkprov.executor.results import HostStats, ItemResult, Mode, PlayRun, RunResult, Status, TaskResult
from sparkprov.executor.task import OMIT, TaskRunner, TaskSettings
from sparkprov.inventory import Host, Inventory
from sparkprov.playbook.model import Play, Playbook, Task
from sparkprov.playbook.templating import KnownAfterApply, Scope, TemplateError
from sparkprov.secrets import is_secret_name


@dataclass
class RunOptions:
    mode: Mode = Mode.APPLY
    diff: bool = False
    tags: frozenset[str] = frozenset()
    skip_tags: frozenset[str] = frozenset()
    extra_vars: dict[str, Any] = field(default_factory=dict)
    forks: int = 10
    limit: str | None = None


class Observer(Protocol):
    def play_started(self, play: Play, hosts: list[str]) -> None: ...

    def task_finished(self, result: TaskResult) -> None: ...

    def progress(self, host: str, task: Task, what: str, done: int, total: int | None) -> None: ...


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


class Runner:
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
    ) -> None:
        self.playbook = playbook
        self.inventory = inventory
        self.options = options
        self.observer = observer
        self.connect = connect
        self.play_vars_files = play_vars_files
        self.fact_names = fact_names
        self.gather_facts = gather_facts
        self.result = RunResult(options.mode)
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._connections: dict[str, Connection] = {}
        self._runtime_vars: dict[str, dict[str, Any]] = {}
        self._facts: dict[str, LazyFacts] = {}
        self._dead_hosts: set[str] = set()
        # Values output must mask: variables named like secrets, and what modules register.
        self.on_secret = on_secret

    def play_hosts(self, play: Play) -> list[str]:
        selected: list[str] = []
        for pattern in play.hosts:
            selected.extend(h for h in self.inventory.match(pattern) if h not in selected)
        if self.options.limit:
            allowed = set(self.inventory.match(self.options.limit))
            selected = [h for h in selected if h in allowed]
        return [h for h in selected if h not in self._dead_hosts]

    def run(self) -> RunResult:
        try:
            for play, files_vars in zip(self.playbook.plays, self.play_vars_files):
                if self.stop.is_set():
                    break
                self._run_play(play, files_vars)
        finally:
            for conn in self._connections.values():
                conn.close()
        return self.result

    def _run_play(self, play: Play, files_vars: dict[str, Any]) -> None:
        hosts = self.play_hosts(play)
        play_run = PlayRun(play, hosts)
        self.result.plays.append(play_run)
        self.observer.play_started(play, hosts)
        abort = threading.Event()
        for batch in batches(hosts, play.serial):
            if abort.is_set() or self.stop.is_set():
                break
            failed = self._run_batch(play, play_run, batch, hosts, files_vars, abort)
            limit = play.max_fail_percentage
            if limit is not None and batch and 100.0 * failed / len(batch) > limit:
                abort.set()
            elif failed and failed == len(batch):
                abort.set()  # every host of the batch failed: nothing left to run the play on

    def _run_batch(
        self,
        play: Play,
        play_run: PlayRun,
        batch: list[str],
        hosts: list[str],
        files_vars: dict[str, Any],
        abort: threading.Event,
    ) -> int:
        def work(host: str) -> bool:
            return self._run_host(play, play_run, host, batch, hosts, files_vars, abort)

        pool = ThreadPoolExecutor(max_workers=max(1, min(self.options.forks, len(batch))))
        futures = [pool.submit(work, host) for host in batch]
        try:
            wait(futures)
        except KeyboardInterrupt:
            # Stop scheduling new tasks; the running ones finish, then the result is consistent.
            self.stop.set()
            self.result.interrupted = True
            wait(futures)
        finally:
            pool.shutdown(wait=True)
        return sum(1 for f in futures if not f.result())

    def _record(self, play_run: PlayRun, result: TaskResult) -> None:
        with self._lock:
            play_run.results.append(result)
            self.result.stats.setdefault(result.host, HostStats()).count(result)
        self.observer.task_finished(result)

    def _connection(self, host: Host) -> Connection:
        conn = self._connections.get(host.name)
        if conn is None:
            conn = self.connect(host)
            if self.options.mode is not Mode.APPLY:
                conn = PlannedConnection(conn)
            self._connections[host.name] = conn
        return conn

    def _scope(
        self,
        play: Play,
        host: Host,
        batch: list[str],
        hosts: list[str],
        files_vars: dict[str, Any],
        conn: Connection,
    ) -> Scope:
        runtime = self._runtime_vars.setdefault(host.name, {})
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

    def _run_host(
        self,
        play: Play,
        play_run: PlayRun,
        name: str,
        batch: list[str],
        hosts: list[str],
        files_vars: dict[str, Any],
        abort: threading.Event,
    ) -> bool:
        """Run the play's tasks and handlers on one host; False when the host failed."""
        host = self.inventory.hosts[name]
        try:
            conn = self._connection(host)
        except HostUnreachable as exc:
            self._unreachable(play_run, play, name, str(exc))
            return False
        scope = self._scope(play, host, batch, hosts, files_vars, conn)
        self._collect_secrets(scope)
        runner = TaskRunner(
            TaskSettings(
                conn=conn,
                check_mode=self.options.mode is not Mode.APPLY,
                want_diff=self.options.diff or self.options.mode is not Mode.APPLY,
                play_become=play.become,
                play_become_user=play.become_user,
                play_environment=play.environment,
                search_dirs=(self.playbook.directory,),
                extra_vars=frozenset(self.options.extra_vars),
                progress=partial(self.observer.progress, name),
                secret=self.on_secret,
            )
        )
        notified: list[str] = []
        for task in play.tasks:
            if self.stop.is_set() or abort.is_set():
                return True
            if not task_selected(task, play, self.options):
                continue
            ok, scope = self._step(play, play_run, runner, task, name, scope, notified, handler=False)
            if not ok:
                if play.any_errors_fatal:
                    abort.set()
                return False
        return self._flush_handlers(play, play_run, runner, name, scope, notified)

    def _step(
        self,
        play: Play,
        play_run: PlayRun,
        runner: TaskRunner,
        task: Task,
        name: str,
        scope: Scope,
        notified: list[str],
        *,
        handler: bool,
    ) -> tuple[bool, Scope]:
        try:
            result = runner.run(task, name, scope, handler=handler)
        except HostUnreachable as exc:
            self._unreachable(play_run, play, name, str(exc), task)
            return False, scope
        self._record(play_run, result)
        if result.status is Status.CHANGED:
            notified.extend(n for n in task.notify if n not in notified)
        scope = self._remember(name, task, result, scope)
        return result.status is not Status.FAILED or result.ignored, scope

    def _remember(self, host: str, task: Task, result: TaskResult, scope: Scope) -> Scope:
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
        # A fresh Scope drops renders cached from the old values.
        return scope.refreshed() if updated else scope

    def _flush_handlers(
        self, play: Play, play_run: PlayRun, runner: TaskRunner, name: str, scope: Scope, notified: list[str]
    ) -> bool:
        done: set[int] = set()
        while True:
            pending = [
                (i, h)
                for i, h in enumerate(play.handlers)
                if i not in done and (h.name in notified or any(topic in notified for topic in h.listen))
            ]
            if not pending or self.stop.is_set():
                return True
            for index, handler in pending:
                done.add(index)
                ok, scope = self._step(play, play_run, runner, handler, name, scope, notified, handler=True)
                if not ok:
                    return False

    def _unreachable(
        self, play_run: PlayRun, play: Play, host: str, message: str, task: Task | None = None
    ) -> None:
        self._dead_hosts.add(host)
        target = task or (play.tasks[0] if play.tasks else None)
        if target is None:
            return
        item = ItemResult(Status.UNREACHABLE, message)
        self._record(play_run, TaskResult(target, host, Status.UNREACHABLE, [item], msg=message))

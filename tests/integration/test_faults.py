"""Faults with real parts, and what the run journal makes of them: the controller SIGKILLed mid-run
(the next apply still runs the notified handler, `--resume` skips what was done), Ctrl-C (running tasks
finish, exit 130; twice: stop now), a full disk (tmpfs), a registry stopped mid-pull (real dockerd and
registry), an Ollama API that fails mid-stream, and a fleet host whose sshd dies mid-run.

Every test has its own state dir ($SPARKPROV_STATE_DIR) and reads the journal the CLI wrote there.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sparkprov.executor.journal import PendingHandler, RunRecord, read_journal
from tests.cli import (
    EXIT_FAILED,
    EXIT_OK,
    assert_exit,
    cli_env,
    explain,
    host_stats,
    json_report,
)
from tests.fakes.ollama_server import FakeOllama
from tests.infra.dockerd import DockerDaemon
from tests.infra.fleet import Fleet
from tests.infra.packages import ensure_packages
from tests.infra.process import torn_down
from tests.infra.registry import REGISTRY_PACKAGES, Registry, push_image

DATA = Path(__file__).resolve().parents[1] / "data" / "faults"
HANDLERS = DATA / "handlers.yml"
EXIT_INTERRUPTED = 130
RESTART = [PendingHandler(0, "restart app")]


# ---------------------------------------------------------------- helpers


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's state dir, inherited by the CLI processes it starts."""
    directory = tmp_path / "state"
    monkeypatch.setenv("SPARKPROV_STATE_DIR", str(directory))
    return directory


def _argv(book: Path, variables: dict[str, Any], *options: str) -> list[str]:
    return [sys.executable, "-m", "sparkprov", "apply", str(book), "-e", json.dumps(variables), *options]


def _default_sigint() -> None:
    """A shell runs background jobs with SIGINT ignored, and children inherit that: give the CLI
    Python's own Ctrl-C handling back, as a terminal would."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_apply(
    book: Path,
    variables: dict[str, Any],
    *options: str,
    env: dict[str, str] | None = None,
    stdout: Any = subprocess.PIPE,
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        _argv(book, variables, *options),
        env=cli_env(env),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )


def apply(
    book: Path, variables: dict[str, Any], *options: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    process = start_apply(book, variables, *options, env=env)
    stdout, stderr = process.communicate(timeout=60)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def finish(process: subprocess.Popen[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    stdout, stderr = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def journal(state: Path) -> RunRecord:
    [path] = state.glob("*.jsonl")
    record = read_journal(path)
    assert record is not None, path.read_text()
    return record


def wait_until_running(
    state: Path, process: subprocess.Popen[str], task: str, hosts: tuple[str, ...] = ("localhost",)
) -> RunRecord:
    """Poll the journal until this process's run shows `task` running on every one of `hosts`."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, f"apply ended early: {finish(process)}"
        paths = list(state.glob("*.jsonl"))
        record = read_journal(paths[0]) if paths else None
        if record is not None and record.pid == process.pid:
            running = [record.hosts.get(h) for h in hosts]
            if all(r is not None and r.running is not None and r.running.name == task for r in running):
                return record
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"'{task}' never ran on {hosts}: {finish(process)}")


def children(pid: int) -> list[int]:
    """Direct child processes of `pid` (the commands its tasks run)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with (task / "children").open() as handle:
            found += [int(p) for p in handle.read().split()]
    return found


def sigkill_controller(process: subprocess.Popen[str]) -> None:
    """SIGKILL the CLI mid-task; then its orphaned task command too (it would run on otherwise)."""
    _wait(lambda: bool(children(process.pid)), "the task's command")
    orphans = children(process.pid)
    process.kill()
    process.wait()
    for pid in orphans:
        _kill(pid)


def leftovers(root: Path) -> list[Path]:
    """Temporary files of an atomic write that never finished."""
    return [p for p in root.rglob("*") if "sparkprov-tmp" in p.name]


def task_result(run: subprocess.CompletedProcess[str], name: str, host: str = "localhost") -> dict[str, Any]:
    for play in json_report(run)["plays"]:
        for task in play["tasks"]:
            if task["task"]["name"] == name and host in task["hosts"]:
                return dict(task["hosts"][host])
    raise AssertionError(f"no result for task {name!r} on {host}: {explain(run)}")


def restarts(base: Path) -> int:
    path = base / "restarts"
    return len(path.read_text().splitlines()) if path.exists() else 0


# ---------------------------------------------------------------- the controller dies


def test_sigkill_then_the_handler_still_runs_and_resume_skips_what_was_done(
    state: Path, tmp_path: Path
) -> None:
    base = tmp_path / "target"
    killed = start_apply(HANDLERS, {"base_dir": str(base), "value": 1, "nap": 60})
    wait_until_running(state, killed, "long task")
    sigkill_controller(killed)
    assert finish(killed).returncode == -signal.SIGKILL
    assert (base / "app.conf").read_text() == "setting=1\n" and restarts(base) == 0
    left = journal(state)
    assert left.outcome == "killed" and left.hosts["localhost"].pending_handlers == RESTART

    again = apply(HANDLERS, {"base_dir": str(base), "value": 1, "nap": 0})
    assert_exit(again, EXIT_OK)
    assert "did not finish: it was killed or crashed" in again.stderr, explain(again)
    assert "localhost: 2 task(s) done, last 'write the config'; stopped while running 'long task'" in (
        again.stderr
    )
    assert "handlers to run: restart app" in again.stderr
    assert "TASK [write the config]" in again.stdout and "RUNNING HANDLER [restart app]" in again.stdout
    assert restarts(base) == 1, "the config did not change this time, the handler ran anyway"
    assert leftovers(tmp_path) == []
    assert not journal(state).unfinished

    killed = start_apply(HANDLERS, {"base_dir": str(base), "value": 2, "nap": 60})
    wait_until_running(state, killed, "long task")
    sigkill_controller(killed)
    finish(killed)
    resumed = apply(HANDLERS, {"base_dir": str(base), "value": 2, "nap": 0}, "--resume", "--format", "json")
    assert_exit(resumed, EXIT_OK)
    assert "Resuming: the tasks that run finished are skipped" in resumed.stderr
    for name in ("the work directory", "write the config"):
        done = task_result(resumed, name)
        assert done["skipped"] and done["skip_reason"] == "resumed", done
        assert done["msg"].startswith("skipped (resumed)")
    assert task_result(resumed, "long task")["changed"]
    assert task_result(resumed, "restart app")["changed"]
    assert restarts(base) == 2 and (base / "after").read_text() == "done 2\n"
    assert leftovers(tmp_path) == []


def test_ctrl_c_lets_the_running_task_finish_and_exits_130(state: Path, tmp_path: Path) -> None:
    base = tmp_path / "target"
    running = start_apply(HANDLERS, {"base_dir": str(base), "value": 1, "nap": 2})
    wait_until_running(state, running, "long task")
    running.send_signal(signal.SIGINT)
    stopped = finish(running)
    assert_exit(stopped, EXIT_INTERRUPTED)
    assert "Interrupted: no new task starts; waiting for the running ones to finish" in stopped.stdout
    assert "TASK [long task]" in stopped.stdout and "TASK [after the long task]" not in stopped.stdout
    assert not (base / "after").exists() and restarts(base) == 0
    record = journal(state)
    assert record.finished and record.interrupted and record.exit_code == EXIT_INTERRUPTED
    host = record.hosts["localhost"]
    assert host.last is not None and (host.last.name, host.last.status) == ("long task", "changed")
    assert host.running is None and host.pending_handlers == RESTART


def press_ctrl_c_during_the_long_task(
    state: Path, tmp_path: Path, again: int
) -> subprocess.CompletedProcess[str]:
    """Ctrl-C once; once it is answered, `again` more times at once. Asserts the CLI then stops
    within 5 s, leaving the task's `sleep 60` running (as it would be on a remote host)."""
    output = tmp_path / "stdout"
    with output.open("w") as stdout:
        running = start_apply(
            HANDLERS,
            {"base_dir": str(tmp_path / "target"), "value": 1, "nap": 60},
            env={"PYTHONUNBUFFERED": "1"},  # written as it would be to a terminal
            stdout=stdout,
        )
    wait_until_running(state, running, "long task")
    _wait(lambda: bool(children(running.pid)), "the task's command")
    sleeping = children(running.pid)
    try:
        running.send_signal(signal.SIGINT)
        # As a user would, press it again once the first is answered: two signals that arrive before
        # Python runs its handler are one Ctrl-C to it.
        _wait(lambda: "Interrupted: no new task starts" in output.read_text(), "the first Ctrl-C's answer")
        started = time.monotonic()
        for _ in range(again):
            running.send_signal(signal.SIGINT)
            time.sleep(0.01)
        stopped = finish(running, timeout=15)
        assert time.monotonic() - started < 5
    finally:
        for pid in sleeping:
            _kill(pid)
    return stopped


def test_ctrl_c_twice_stops_without_waiting(state: Path, tmp_path: Path) -> None:
    stopped = press_ctrl_c_during_the_long_task(state, tmp_path, again=1)
    assert_exit(stopped, EXIT_INTERRUPTED)
    record = journal(state)
    assert record.finished and record.interrupted and record.exit_code == EXIT_INTERRUPTED
    host = record.hosts["localhost"]
    assert host.running is not None and host.running.name == "long task"
    assert host.pending_handlers == RESTART


def test_ctrl_c_pressed_over_and_over_still_stops_at_once(state: Path, tmp_path: Path) -> None:
    """Later presses may land while the run is stopping (writing the recap, the journal): Python's
    exit would then wait for the task's thread; the CLI must not."""
    stopped = press_ctrl_c_during_the_long_task(state, tmp_path, again=5)
    assert_exit(stopped, EXIT_INTERRUPTED)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (needs root)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")

    def unmount() -> None:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)

    with torn_down(unmount):
        yield mountpoint


@pytest.mark.root
def test_a_full_disk_fails_clearly_and_keeps_the_old_file(
    state: Path, tmp_path: Path, small_disk: Path
) -> None:
    old = small_disk / "model.bin"
    old.write_text("the old file\n")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(2 * 1024 * 1024))
    failed = apply(DATA / "big_copy.yml", {"src": str(big), "dest": str(old)}, "--format", "json")
    assert_exit(failed, EXIT_FAILED)
    message = task_result(failed, "the big file")["msg"]
    assert "no space left on device" in message.lower(), message
    assert str(old) in message or "model.bin" in message, message
    assert old.read_text() == "the old file\n"
    assert leftovers(small_disk) == []
    record = journal(state)
    assert record.finished and record.exit_code == EXIT_FAILED and not record.unfinished


# ---------------------------------------------------------------- a registry stopped mid-pull


class ThrottledProxy:
    """TCP proxy on 127.0.0.1 to a registry that sends at most `rate` bytes/s towards the client, so a
    pull lasts long enough to stop the registry in the middle of it. `cut()` closes everything, and
    new connections are refused from then on, as when the registry process is gone."""

    def __init__(self, upstream_port: int, rate: int) -> None:
        self.upstream_port = upstream_port
        self.rate = rate
        self.sent = 0  # bytes towards the client
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            for sock in [self._listener, *self._sockets]:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                return
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, throttled: bool) -> None:
        chunk = 16 * 1024
        try:
            while data := source.recv(chunk):
                target.sendall(data)
                if throttled:
                    with self._lock:
                        self.sent += len(data)
                    time.sleep(len(data) / self.rate)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def _random_image(dockerd: DockerDaemon, directory: Path, ref: str, size: int) -> str:
    """`docker import` of one layer holding `size` random bytes (nothing compresses it)."""
    directory.mkdir(parents=True)
    blob = directory / "blob"
    blob.write_bytes(os.urandom(size))
    archive = directory / "layer.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(blob, arcname="blob")
    dockerd.docker("import", str(archive), ref)
    return ref


@pytest.fixture
def own_registry(tmp_path: Path, dockerd: DockerDaemon) -> Iterator[Registry]:
    """A registry of this test's own: the test stops it (the session's `registry` serves others)."""
    ensure_packages(*REGISTRY_PACKAGES)
    registry = Registry(tmp_path / "registry")
    with torn_down(registry.stop):
        registry.start()
        yield registry


@pytest.mark.docker
def test_registry_stopped_mid_pull_fails_naming_the_image(
    state: Path, tmp_path: Path, dockerd: DockerDaemon, own_registry: Registry
) -> None:
    source = _random_image(dockerd, tmp_path / "image", "sparkprov-faults/big-src:1", 30_000_000)
    pushed = push_image(dockerd, source, own_registry, "faults/big:1")
    for ref in (source, pushed):
        dockerd.docker("image", "rm", ref)
    proxy = ThrottledProxy(own_registry.port, rate=4_000_000)  # ~8 s for the layer
    image = f"127.0.0.1:{proxy.port}/faults/big:1"
    try:
        pulling = start_apply(
            DATA / "image.yml",
            {"image": image, "pull_timeout": 6},
            "--format",
            "json",
            env=dockerd.env,
        )
        _wait(lambda: proxy.sent > 2_000_000 or pulling.poll() is not None, "the layer download")
        own_registry.stop()  # mid-pull: a fifth of the layer is through
        proxy.cut()
        failed = finish(pulling, timeout=60)
    finally:
        proxy.cut()
    assert_exit(failed, EXIT_FAILED)
    message = task_result(failed, "the image")["msg"]
    assert message.startswith(f"pull {image} "), message
    assert "did not finish within 6s" in message or "network error" in message, message
    assert dockerd.docker("image", "inspect", image, check=False).returncode != 0, "no half image"
    record = journal(state)
    assert record.finished and record.exit_code == EXIT_FAILED


def _wait(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# ---------------------------------------------------------------- an Ollama API failing mid-stream


def test_ollama_error_mid_stream_then_the_next_run_pulls_and_restarts(state: Path, tmp_path: Path) -> None:
    model = "qwen3:8b"
    error = "max retries exceeded: read: connection reset by peer"
    base = tmp_path / "target"
    base.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "OLLAMA_HOST"}
    with FakeOllama().running() as ollama:
        ollama.fail_pull(model, error=error)
        variables = {"base": str(base), "value": 1, "ollama_url": ollama.url, "model": model}
        failed = apply(DATA / "pull_then_restart.yml", variables, "--format", "json", env=env)
        assert_exit(failed, EXIT_FAILED)
        message = task_result(failed, "the model")["msg"]
        assert model in message and error in message, message
        assert restarts(base) == 0, "the host failed before the end of the play (as in Ansible)"
        record = journal(state)
        assert record.exit_code == EXIT_FAILED and record.hosts["localhost"].pending_handlers == RESTART

        again = apply(DATA / "pull_then_restart.yml", variables, "--format", "json", env=env)
        assert_exit(again, EXIT_OK)
        assert "handlers to run: restart app" in again.stderr
        assert not task_result(again, "write the config")["changed"]
        assert task_result(again, "the model")["changed"] and model in ollama.installed()
        assert restarts(base) == 1, "the config changed in the failed run: the restart is not lost"
        assert not journal(state).unfinished


# ---------------------------------------------------------------- a fleet host dies mid-run


@pytest.fixture
def fleet3(ssh_fleet: Callable[[int], Fleet]) -> Iterator[Fleet]:
    fleet = ssh_fleet(3)
    yield fleet
    fleet.close()


@pytest.mark.fleet
@pytest.mark.root
def test_sshd_killed_on_one_host_mid_run(state: Path, tmp_path: Path, fleet3: Fleet) -> None:
    inventory = fleet3.write_inventory(tmp_path / "hosts.yml", tmp_path / "hosts")
    env = {"SPARKPROV_KNOWN_HOSTS": str(fleet3.known_hosts_file)}
    running = start_apply(HANDLERS, {"value": 1, "nap": 3}, "-i", str(inventory), "--format", "json", env=env)
    wait_until_running(state, running, "long task", hosts=("h1", "h2", "h3"))
    fleet3.kill("h2")
    done = finish(running, timeout=60)
    assert_exit(done, EXIT_FAILED)
    assert host_stats(done, "h2")["unreachable"] == 1
    for host in ("h1", "h3"):
        stats = host_stats(done, host)
        assert stats["failures"] == 0 and stats["unreachable"] == 0, stats
        assert (tmp_path / "hosts" / host / "after").exists()
        assert restarts(tmp_path / "hosts" / host) == 1
    assert restarts(tmp_path / "hosts" / "h2") == 0
    record = journal(state)
    assert record.finished and record.exit_code == EXIT_FAILED and record.unfinished
    assert record.hosts["h2"].unreachable and record.hosts["h2"].pending_handlers == RESTART
    assert [record.hosts[h].pending_handlers for h in ("h1", "h3")] == [[], []]

"""Process helpers: checked commands, bounded waits, daemons in their own process group, cleanup."""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path


class CommandError(RuntimeError):
    """A command failed; the message carries its argv, exit status and output tail."""


def run(
    argv: Sequence[str],
    *,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run a command with captured text output; with `check`, fail with its stderr in the message."""
    result = subprocess.run(
        list(argv),
        input=input,
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        output = (result.stdout + result.stderr).strip()[-3000:]
        raise CommandError(f"{' '.join(argv)} exited with {result.returncode}:\n{output}")
    return result


def wait_until(
    probe: Callable[[], bool],
    *,
    what: str,
    timeout: float,
    diagnostics: Callable[[], str] = lambda: "",
    interval: float = 0.05,
) -> None:
    """Poll `probe` until it returns True; after `timeout` seconds raise with `diagnostics()` attached."""
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not ready after {timeout:.0f} s\n{diagnostics()}".rstrip())
        time.sleep(interval)


def tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a log file, or a note that it is missing."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pgid, sig)


@dataclass
class Daemon:
    """A long-running process started as leader of its own session, so that its whole process group
    (dockerd's containerd, sshd's per-connection children) can be killed together.

    Output goes to `<dir>/<name>.log`; the pid is written to `<dir>/<name>.pid` so that a later session
    can reap it if this one dies without tearing down (see `kill_stale_processes`).
    """

    name: str
    argv: list[str]
    dir: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def log(self) -> Path:
        return self.dir / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        """The leader's pid while it runs, else None."""
        if self.proc is not None and self.proc.poll() is None:
            return self.proc.pid
        return None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, env: Mapping[str, str] | None = None) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=dict(env) if env is not None else None,
            )
        (self.dir / f"{self.name}.pid").write_text(f"{self.proc.pid}\n")

    def wait_ready(self, probe: Callable[[], bool], timeout: float) -> None:
        """Wait for `probe`; fail at once with the log tail if the daemon exits first."""

        def ready() -> bool:
            if not self.alive:
                raise RuntimeError(f"{self.name} exited with {self._returncode()}:\n{tail(self.log)}")
            return probe()

        wait_until(ready, what=self.name, timeout=timeout, diagnostics=lambda: tail(self.log))

    def request_stop(self) -> None:
        """SIGTERM the leader only: dockerd must shut its containerd down itself."""
        if self.alive:
            assert self.proc is not None
            self.proc.terminate()

    def finish_stop(self, timeout: float = 20) -> None:
        """Wait for the leader, then SIGKILL whatever is left of its process group."""
        if self.proc is None:
            return
        with suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout)
        _signal_group(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 20) -> None:
        self.request_stop()
        self.finish_stop(timeout)

    def kill(self) -> None:
        """SIGKILL the whole group at once, as a crashed host would look."""
        if self.proc is not None:
            _signal_group(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def _returncode(self) -> int | None:
        return self.proc.returncode if self.proc is not None else None


def stop_all(daemons: Sequence[Daemon], timeout: float = 20) -> None:
    """Stop many daemons in parallel: signal all of them first, then wait for each."""
    for daemon in daemons:
        daemon.request_stop()
    for daemon in daemons:
        daemon.finish_stop(timeout)


def kill_stale_processes(root: Path, timeout: float = 20) -> None:
    """Stop processes that a dead session left behind, found through the pid files under `root`.

    A pid counts only if its command line still names `root`, so a recycled pid is never touched.
    """
    for pidfile in root.rglob("*.pid"):
        pid = _read_pid(pidfile)
        if pid is not None and str(root) in _cmdline(pid):
            _stop_stale(pid, timeout)


def _stop_stale(pid: int, timeout: float) -> None:
    """Like `Daemon.stop` for a process that is not our child: SIGTERM the leader, wait, SIGKILL the group."""
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    with suppress(TimeoutError):
        wait_until(lambda: not _cmdline(pid), what=f"stale pid {pid}", timeout=timeout)
    _signal_group(pid, signal.SIGKILL)


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def unmount_under(root: Path) -> None:
    """Lazily unmount everything mounted at or below `root` (a killed dockerd leaves its mounts)."""
    prefix = f"{root}/"
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for point in sorted((m for m in mounts if m == str(root) or m.startswith(prefix)), reverse=True):
        run(["umount", "-l", point], check=False)


_sigterm_handled = False


def _sigterm_to_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _handle_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt so pytest still runs fixture teardown (atexit does not run
    on a default SIGTERM). Only done when nobody else installed a handler."""
    global _sigterm_handled
    in_main_thread = threading.current_thread() is threading.main_thread()
    if not _sigterm_handled and in_main_thread and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
    _sigterm_handled = True


@contextmanager
def torn_down(stop: Callable[[], None]) -> Iterator[None]:
    """Call `stop` when the block ends, however it ends; also at interpreter exit as a safety net.

    `stop` must be idempotent: the atexit copy is unregistered once the block has run it.
    """
    _handle_sigterm()
    atexit.register(stop)
    try:
        yield
    finally:
        atexit.unregister(stop)
        stop()

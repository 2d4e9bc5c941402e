"""Fixtures of the integration tests: the peer ansible-playbook, a world-readable scratch directory, a
non-root user with passwordless sudo, and the stand-ins for Ollama and systemd."""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import shutil
import site
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli import REPO_ROOT, SYSTEM_PATH, CliRun, run_command, sparkprov
from tests.fakes.ollama_server import FakeOllama
from tests.infra.process import torn_down, wait_until

ANSIBLE_ENV_VAR = "SPARKPROV_TEST_ANSIBLE"
SUDO_USER = "sparkprov-test"
SUDOERS_FILE = Path("/etc/sudoers.d") / SUDO_USER
# Sessions side by side (two engineers, xdist workers) would delete each other's user: one at a time.
USER_LOCK = Path("/run/sparkprov-test") / f"{SUDO_USER}.lock"
USER_LOCK_WAIT_S = 120


@pytest.fixture(scope="session")
def ansible_playbook() -> Path:
    """The peer `ansible-playbook`: $SPARKPROV_TEST_ANSIBLE (./tests/run sets it), else the one on PATH,
    else the one ./tests/run installed into .venv-ansible."""
    configured = os.environ.get(ANSIBLE_ENV_VAR)
    if configured:
        problem = _ansible_problem(Path(configured))
        if problem:
            pytest.fail(f"{ANSIBLE_ENV_VAR}={configured}: {problem}")
        return Path(configured)
    problems = []
    for candidate in (shutil.which("ansible-playbook"), REPO_ROOT / ".venv-ansible/bin/ansible-playbook"):
        if candidate and os.path.isfile(candidate):
            problem = _ansible_problem(Path(candidate))
            if not problem:
                return Path(candidate)
            problems.append(f"{candidate}: {problem}")
    found = f" ({'; '.join(problems)})" if problems else ""
    pytest.skip(
        f"no working ansible-playbook{found}: set {ANSIBLE_ENV_VAR} or run ./tests/run, which installs it"
    )


def _ansible_problem(executable: Path) -> str | None:
    """Why `executable --version` does not work, or None when it does."""
    try:
        result = run_command([executable, "--version"], timeout=60)
    except OSError as exc:
        return str(exc)
    if result.rc != 0:
        return f"--version exited with {result.rc}: {result.stderr.strip()[-500:]}"
    return None


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """tmp_path/base, created: the directory a test's playbook writes into (`-e base=...`)."""
    path = tmp_path / "base"
    path.mkdir()
    return path


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A scratch directory every user can traverse and read (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="sparkprov-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True)
class SudoUser:
    """A user with a home and passwordless sudo, and a Python it can run sparkprov with."""

    name: str
    home: Path
    python: tuple[str, ...]
    env: dict[str, str]

    def sparkprov(self, *args: str | os.PathLike[str], cwd: Path, timeout: float = 120) -> CliRun:
        """`python -m sparkprov ARGS` as this user (runuser: no password, no terminal)."""
        runuser = ("runuser", "-u", self.name, "--", *self.python)
        return sparkprov(*args, python=runuser, env=self.env, cwd=cwd, timeout=timeout)

    @contextmanager
    def without_sudo_rights(self) -> Iterator[None]:
        """Remove the sudoers drop-in for the duration of the block."""
        SUDOERS_FILE.unlink()
        try:
            yield
        finally:
            _install_sudoers(self.name)

    @contextmanager
    def with_sudo_password(self, password: str) -> Iterator[None]:
        """For the block, the user has `password` and sudo asks for it (no NOPASSWD)."""
        subprocess.run(["chpasswd"], input=f"{self.name}:{password}", text=True, check=True, timeout=60)
        _install_sudoers(self.name, rule="ALL")
        try:
            yield
        finally:
            _install_sudoers(self.name)
            _checked(["passwd", "-d", self.name])


@pytest.fixture(scope="session")
def sudo_user() -> Iterator[SudoUser]:
    """`sparkprov-test`, created for the session with a NOPASSWD sudoers drop-in; both removed at the end."""
    if os.geteuid() != 0:
        pytest.skip("creating the sudo test user needs root")
    missing = [tool for tool in ("sudo", "visudo", "useradd", "userdel", "runuser") if not shutil.which(tool)]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (./tests/run installs sudo when run as root)")
    with _exclusive(USER_LOCK), torn_down(lambda: _remove_user(SUDO_USER)):
        _remove_user(SUDO_USER)  # left over by a session that died before its teardown
        _checked(["useradd", "--create-home", "--user-group", "--shell", "/bin/sh", SUDO_USER])
        _install_sudoers(SUDO_USER)
        python, extra_env = _python_for(SUDO_USER)
        env = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", **extra_env}
        yield SudoUser(SUDO_USER, Path(pwd.getpwnam(SUDO_USER).pw_dir), python, env)


@contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    """Hold an flock on `lock` for the block; skip when another session keeps it too long."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as handle:

        def acquired() -> bool:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        try:
            wait_until(acquired, what=f"lock {lock}", timeout=USER_LOCK_WAIT_S, interval=0.2)
        except TimeoutError:
            pytest.skip(f"another test session has used the {SUDO_USER} user for {USER_LOCK_WAIT_S} s")
        yield


def _checked(argv: list[str]) -> None:
    result = run_command(argv, timeout=60)
    if result.rc != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {result.rc}: {result.stderr.strip()}")


def _install_sudoers(user: str, rule: str = "NOPASSWD: ALL") -> None:
    """Write the drop-in under a name sudo ignores (it has a dot), validate it, then move it in place."""
    staging = SUDOERS_FILE.with_name(f".{SUDOERS_FILE.name}.new")
    staging.write_text(f"{user} ALL=(ALL:ALL) {rule}\n")
    staging.chmod(0o440)
    _checked(["visudo", "-c", "-q", "-f", str(staging)])
    staging.replace(SUDOERS_FILE)


def _remove_user(user: str) -> None:
    """Idempotent: the sudoers drop-in, then the user with its home (if they exist)."""
    SUDOERS_FILE.unlink(missing_ok=True)
    try:
        home = pwd.getpwnam(user).pw_dir
    except KeyError:
        return
    run_command(["userdel", "--remove", user], timeout=60)  # warns when there is no mail spool
    shutil.rmtree(home, ignore_errors=True)


def _python_for(user: str) -> tuple[tuple[str, ...], dict[str, str]]:
    """An interpreter `user` can run sparkprov with, and the environment it needs.

    This interpreter first. It is often out of the user's reach (a pyenv or venv under root's 0700
    home); then a system Python of the same version (same ABI) reads sparkprov and its dependencies
    from this interpreter's site-packages through PYTHONPATH, which works when those are readable.
    """
    same_version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    search_path = os.pathsep.join([str(REPO_ROOT), *site.getsitepackages()])
    candidates: list[tuple[str, dict[str, str]]] = [(sys.executable, {})]
    candidates += [
        (str(path), {"PYTHONPATH": search_path})
        for path in (Path("/usr/bin", same_version), Path("/usr/local/bin", same_version))
        if path.exists() and path.resolve() != Path(sys.executable).resolve()
    ]
    failures = []
    for interpreter, extra_env in candidates:
        env = {"PATH": SYSTEM_PATH, **extra_env}
        probe = ["runuser", "-u", user, "--", interpreter, "-c", "import sparkprov.cli"]
        result = run_command(probe, env=env, cwd=Path("/"), timeout=60)
        if result.rc == 0:
            return (interpreter,), extra_env
        error = (result.stderr.strip().splitlines() or [f"exit {result.rc}"])[-1]
        failures.append(f"{interpreter} with {extra_env or 'no extra environment'}: {error}")
    pytest.skip(f"no Python that user {user} can run imports sparkprov: {'; '.join(failures)}")


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    """The Ollama API stand-in of tests/fakes, serving on 127.0.0.1."""
    with FakeOllama().running() as server:
        yield server


OLLAMA_UNIT = {
    "LoadState": "loaded",
    "ActiveState": "active",
    "SubState": "running",
    "UnitFileState": "enabled",
    "NeedDaemonReload": "no",
    "FragmentPath": "/usr/lib/systemd/system/ollama.service",
}


@pytest.fixture
def systemctl_env(tmp_path: Path) -> dict[str, str]:
    """PATH and FAKE_SYSTEMCTL_STATE for the systemctl emulator (tests/fakes/systemctl): first on PATH,
    with python3 beside it, and a state file (tmp_path/systemd.json) in which ollama.service is
    loaded, enabled and running and no call has been made yet."""
    state = tmp_path / "systemd.json"
    state.write_text(json.dumps({"units": {"ollama.service": OLLAMA_UNIT}, "calls": []}))
    path = [str(REPO_ROOT / "tests" / "fakes"), os.path.dirname(sys.executable), os.environ.get("PATH", "")]
    return {"PATH": os.pathsep.join(path), "FAKE_SYSTEMCTL_STATE": str(state)}

"""jupyter against real files through the local connection, and the bundled startup script run by Python.

Each converging case checks that `check` alone writes nothing, that `apply` writes what the Change said
with the promised modes, and that a second `check` finds nothing to do. The startup script is run in a
subprocess without site-packages, with a fake `torch` package on PYTHONPATH standing in for each GPU case.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from sparkprov.connection.local import LocalConnection
from sparkprov.modules.base import Change, ModuleFailure, TaskContext
from sparkprov.modules.jupyter import JupyterModule, masked, server_config_text
from sparkprov.playbook.templating import Scope
from sparkprov.report.masking import MASK

MODULE = JupyterModule()
TOKEN = "tok-3f9a8c1e77d2"
STARTUP = ".ipython/profile_default/startup"


@pytest.fixture
def secrets() -> list[str]:
    return []


@pytest.fixture
def ctx(tmp_path: Path, secrets: list[str]) -> TaskContext:
    return TaskContext(
        conn=LocalConnection(),
        become=None,
        scope=Scope([]),
        search_dirs=(tmp_path,),
        secret=secrets.append,
    )


def tree(root: Path) -> dict[str, tuple[str, bytes | None]]:
    """Every path below root: mode and (for files) content."""
    found: dict[str, tuple[str, bytes | None]] = {}
    for path in sorted(root.rglob("*")):
        content = path.read_bytes() if path.is_file() else None
        found[str(path.relative_to(root))] = (f"{path.stat().st_mode & 0o7777:04o}", content)
    return found


def converge(ctx: TaskContext, root: Path, args: dict[str, Any]) -> Change:
    """check (read-only), apply, check again (converged); return the first Change."""
    before = tree(root)
    change = MODULE.check(args, ctx)
    assert change is not None
    assert tree(root) == before, "check must not touch anything"
    outcome = MODULE.apply(change, ctx)
    assert outcome.changed and outcome.msg == change.summary
    assert MODULE.check(args, ctx) is None, "a second check must find nothing to do"
    return change


def modes(root: Path) -> dict[str, str]:
    return {name: mode for name, (mode, _) in tree(root).items()}


def test_defaults_write_the_gpu_report_and_server_config(tmp_path: Path, ctx: TaskContext) -> None:
    change = converge(ctx, tmp_path, {"user_home": str(tmp_path)})
    assert modes(tmp_path) == {
        ".ipython": "0755",
        ".ipython/profile_default": "0755",
        STARTUP: "0755",
        f"{STARTUP}/00-spark-gpu.py": "0644",
        ".jupyter": "0700",
        ".jupyter/jupyter_server_config.py": "0600",
    }
    script = (tmp_path / STARTUP / "00-spark-gpu.py").read_text()
    assert script.startswith("# Ansible managed by sparkprov (jupyter module)")
    config = (tmp_path / ".jupyter/jupyter_server_config.py").read_text()
    assert (
        "c.ServerApp.ip = '127.0.0.1'\nc.ServerApp.port = 8888\nc.ServerApp.open_browser = False\n" in config
    )
    assert "NotebookApp" not in config
    assert change.data == {
        "ipython_dir": f"{tmp_path}/.ipython",
        "profile_dir": f"{tmp_path}/.ipython/profile_default",
        "startup_dir": f"{tmp_path}/{STARTUP}",
        "startup_scripts": [f"{tmp_path}/{STARTUP}/00-spark-gpu.py"],
        "server_config": f"{tmp_path}/.jupyter/jupyter_server_config.py",
    }
    assert not (tmp_path / ".jupyter/startup.py").exists()


def test_home_defaults_to_the_users_home(
    tmp_path: Path, ctx: TaskContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    change = converge(ctx, tmp_path, {"server_config": False})
    assert change.data["startup_scripts"] == [f"{tmp_path}/{STARTUP}/00-spark-gpu.py"]
    assert MODULE.unchanged({"server_config": False}, ctx).data == change.data
    assert not (tmp_path / ".jupyter").exists()


def test_token_is_written_but_never_shown(tmp_path: Path, ctx: TaskContext, secrets: list[str]) -> None:
    args = {"user_home": str(tmp_path), "startup_scripts": [], "server_config": {"token": TOKEN}}
    change = MODULE.check(args, ctx)
    assert change is not None and secrets == [TOKEN]
    shown = "".join(d.before + d.after for d in change.diffs) + change.summary
    assert TOKEN not in shown
    assert f'c.IdentityProvider.token = "{MASK}"' in shown
    assert TOKEN not in repr(MODULE.predicted(change, args))
    outcome = MODULE.apply(change, ctx)
    assert TOKEN not in repr(outcome)
    config = tmp_path / ".jupyter/jupyter_server_config.py"
    assert f"c.IdentityProvider.token = {TOKEN!r}" in config.read_text()
    # A new token: the diff masks the old one and the new one alike.
    args["server_config"] = {"token": TOKEN + "-new"}
    change = MODULE.check(args, ctx)
    assert change is not None
    assert TOKEN not in "".join(d.before + d.after for d in change.diffs)


def test_token_env_keeps_the_token_out_of_the_file(tmp_path: Path, ctx: TaskContext) -> None:
    args = {"user_home": str(tmp_path), "startup_scripts": [], "server_config": {"token_env": "NB_TOKEN"}}
    converge(ctx, tmp_path, args)
    text = (tmp_path / ".jupyter/jupyter_server_config.py").read_text()
    assert "if os.environ.get('NB_TOKEN'):\n    c.IdentityProvider.token = os.environ['NB_TOKEN']\n" in text
    assert masked(text) == text


def test_server_config_text_is_valid_python_with_the_settings() -> None:
    text = server_config_text(
        {"ip": "0.0.0.0", "port": 9999, "open_browser": True, "root_dir": "~/work 'x'", "token": 'a"b'}
    )
    namespace: dict[str, Any] = {}
    config = _Config()
    exec(compile(text, "jupyter_server_config.py", "exec"), {"get_config": lambda: config}, namespace)
    assert config.ServerApp.__dict__ == {
        "ip": "0.0.0.0",
        "port": 9999,
        "open_browser": True,
        "root_dir": os.path.expanduser("~/work 'x'"),
    }
    assert config.IdentityProvider.token == 'a"b'


class _Config:
    """Enough of traitlets' config object: `c.Section.name = value`."""

    def __getattr__(self, name: str) -> Any:
        section = type(name, (), {})()
        object.__setattr__(self, name, section)
        return section


def test_empty_token_is_refused(tmp_path: Path, ctx: TaskContext) -> None:
    with pytest.raises(ModuleFailure, match="turns Jupyter's authentication off"):
        MODULE.check({"user_home": str(tmp_path), "server_config": {"token": ""}}, ctx)


def test_container_root_under_a_host_directory(tmp_path: Path, ctx: TaskContext) -> None:
    prefix = tmp_path / "dev-root"
    change = converge(
        ctx,
        tmp_path,
        {"container_root": True, "root_prefix": str(prefix), "server_config": {"root_dir": "/workspace"}},
    )
    assert change.data["startup_dir"] == f"{prefix}/{STARTUP}"
    assert (prefix / STARTUP / "00-spark-gpu.py").is_file()
    assert "os.path.expanduser('/workspace')" in (prefix / ".jupyter/jupyter_server_config.py").read_text()


def test_ipython_dir_profile_and_own_scripts(tmp_path: Path, ctx: TaskContext) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates/hello.py.j2").write_text("print({{ greeting | to_json }})\n")
    ctx.scope = Scope([{"greeting": "hi"}])
    args = {
        "user_home": str(tmp_path),
        "ipython_dir": "~/ipy",
        "profile": "spark",
        "config_dir": "~/jcfg",
        "startup_scripts": [
            {"name": "10-hello.py", "src": "hello.py.j2"},
            {"dest": "~/ipy/profile_spark/startup/20-inline.ipy", "content": "%load_ext autoreload\n"},
        ],
    }
    converge(ctx, tmp_path, args)
    startup = tmp_path / "ipy/profile_spark/startup"
    assert sorted(p.name for p in startup.iterdir()) == ["10-hello.py", "20-inline.ipy"]
    assert (startup / "10-hello.py").read_text() == 'print("hi")\n'
    assert (tmp_path / "jcfg/jupyter_server_config.py").is_file()


def test_mode_drift_is_a_change_of_mode_only(tmp_path: Path, ctx: TaskContext) -> None:
    args = {"user_home": str(tmp_path), "startup_scripts": []}
    converge(ctx, tmp_path, args)
    (tmp_path / ".jupyter/jupyter_server_config.py").chmod(0o644)
    change = converge(ctx, tmp_path, args)
    assert change.summary.endswith("jupyter_server_config.py: mode 0644 -> 0600")


@pytest.mark.parametrize(
    ("script", "message"),
    [
        (
            {"dest": "~/.jupyter/startup.py", "content": "x"},
            "the course's ~/.jupyter/startup.py is never executed",
        ),
        (
            {"dest": "/etc/profile.d/x.py", "content": "x"},
            "IPython only runs the files of its profile's startup",
        ),
        ({"name": "../x.py", "content": "x"}, "is outside"),
        ({"name": "notes.txt", "content": "x"}, "IPython runs only *.py and *.ipy files"),
    ],
)
def test_scripts_outside_the_startup_dir_are_refused(
    tmp_path: Path, ctx: TaskContext, script: dict[str, str], message: str
) -> None:
    with pytest.raises(ModuleFailure, match=message.replace("*", r"\*").replace(".", r"\.")):
        MODULE.check({"user_home": str(tmp_path), "startup_scripts": [script]}, ctx)
    assert list(tmp_path.iterdir()) == []


def test_a_path_in_the_way_of_a_directory_fails(tmp_path: Path, ctx: TaskContext) -> None:
    (tmp_path / ".jupyter").write_text("not a directory")
    with pytest.raises(ModuleFailure, match=r"\.jupyter exists and is not a directory"):
        MODULE.check({"user_home": str(tmp_path), "startup_scripts": []}, ctx)


# ---------------------------------------------------------------- the bundled startup script


@pytest.fixture(scope="module")
def startup_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("home")
    ctx = TaskContext(conn=LocalConnection(), become=None, scope=Scope([]), search_dirs=())
    change = MODULE.check({"user_home": str(home), "server_config": False}, ctx)
    assert change is not None
    MODULE.apply(change, ctx)
    return home / STARTUP / "00-spark-gpu.py"


def fake_torch(root: Path, *, available: bool = True, name: str = "return 'NVIDIA GB10'", mem: str) -> Path:
    package = root / "torch"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        textwrap.dedent(
            f"""\
            __version__ = "2.9.0a0+fake"

            class version:
                cuda = "13.0"

            class cuda:
                @staticmethod
                def is_available():
                    return {available}

                @staticmethod
                def get_device_name(index=0):
                    {name}

                @staticmethod
                def mem_get_info(index=0):
                    {mem}
            """
        )
    )
    return root


def run_script(script: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`python -S script` (no site-packages: no real torch), with `pythonpath` first on the path."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    result = subprocess.run(
        [sys.executable, "-S", str(script)], capture_output=True, text=True, env=env, timeout=30, check=False
    )
    assert result.returncode == 0 and result.stderr == "", result
    return result


def test_script_without_torch_prints_a_line(startup_script: Path) -> None:
    result = run_script(startup_script)
    assert result.stdout == (
        "sparkprov: PyTorch is not installed in this environment (on a DGX Spark, use an NGC container)\n"
    )


def test_script_on_gb10_reports_unified_memory_when_the_query_is_unsupported(
    startup_script: Path, tmp_path: Path
) -> None:
    torch = fake_torch(tmp_path, mem='raise RuntimeError("CUDA error: operation not supported")')
    lines = run_script(startup_script, torch).stdout.splitlines()
    assert lines[0] == "sparkprov: torch 2.9.0a0+fake, CUDA 13.0, device: NVIDIA GB10"
    assert lines[1] == "sparkprov: GPU memory query not supported here (RuntimeError)"
    assert lines[2].startswith("sparkprov: unified memory, ") and "GiB available of" in lines[2]
    assert "(MemAvailable; drop caches to free page cache)" in lines[2] and len(lines) == 3


def test_script_on_a_discrete_gpu_reports_its_memory(startup_script: Path, tmp_path: Path) -> None:
    torch = fake_torch(tmp_path, name="return 'NVIDIA H100'", mem="return (10 * 2**30, 80 * 2**30)")
    assert run_script(startup_script, torch).stdout.splitlines() == [
        "sparkprov: torch 2.9.0a0+fake, CUDA 13.0, device: NVIDIA H100",
        "sparkprov: GPU memory 10.0 GiB free of 80.0 GiB",
    ]


def test_script_without_cuda(startup_script: Path, tmp_path: Path) -> None:
    torch = fake_torch(tmp_path, available=False, mem="raise AssertionError('not called')")
    assert run_script(startup_script, torch).stdout == (
        "sparkprov: torch 2.9.0a0+fake, CUDA not available (no GPU visible to this kernel)\n"
    )


def test_script_survives_a_failing_device_query(startup_script: Path, tmp_path: Path) -> None:
    torch = fake_torch(
        tmp_path, name="raise RuntimeError('CUDA driver initialization failed')", mem="return (1, 2)"
    )
    assert run_script(startup_script, torch).stdout == (
        "sparkprov: GPU check failed: RuntimeError: CUDA driver initialization failed\n"
    )


def test_script_leaves_nothing_in_the_kernel_namespace(startup_script: Path) -> None:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(startup_script.read_text(), str(startup_script), "exec"), namespace)
    assert set(namespace) == {"__name__", "__builtins__"}

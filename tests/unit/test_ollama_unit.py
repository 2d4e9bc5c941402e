"""The ollama module and its API client, in-process: names, URLs, the drop-in, and check/apply against
the test suite's Ollama API server (tests/fakes/ollama_server.py) and systemctl emulator."""

from __future__ import annotations

import functools
import http.server
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sparkprov.connection.local import LocalConnection
from sparkprov.modules._ollama_api import (
    ApiError,
    InvalidName,
    ModelName,
    OllamaClient,
    Unreachable,
    api_url,
    is_loopback,
)
from sparkprov.modules.base import Change, ModuleFailure, TaskContext
from sparkprov.modules.ollama import (
    DROPIN_HEADER,
    OllamaModule,
    dropin_text,
    environment_of,
    model_specs,
    plan_models,
)
from sparkprov.playbook.templating import Scope
from tests.fakes.ollama_server import FakeOllama, display_shortest, name_key, parse_name
from tests.unit.test_module_service import FAKES, FakeSystemd

MODULE = OllamaModule()


# ---------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("written", "shown"),
    [
        ("llama3.2", "llama3.2:latest"),
        ("llama3.2:latest", "llama3.2:latest"),
        ("llama3.2:3b", "llama3.2:3b"),
        ("  llama3.2:3b \n", "llama3.2:3b"),
        ("library/llama3.2", "llama3.2:latest"),
        ("registry.ollama.ai/library/llama3.2", "llama3.2:latest"),
        ("registry.ollama.ai/library/llama3.2:1b", "llama3.2:1b"),
        ("https://registry.ollama.ai/library/llama3.2", "llama3.2:latest"),
        ("Registry.Ollama.AI/Library/Llama3.2", "Llama3.2:latest"),
        ("jmorgan/llama3", "jmorgan/llama3:latest"),
        ("registry.ollama.ai/jmorgan/llama3:8b", "jmorgan/llama3:8b"),
        (
            "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
            "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
        ),
        ("localhost:5000/team/model", "localhost:5000/team/model:latest"),
        ("localhost:5000/team/model:v1.2", "localhost:5000/team/model:v1.2"),
        ("qwen2.5-coder:7b-instruct-q4_K_M", "qwen2.5-coder:7b-instruct-q4_K_M"),
    ],
)
def test_names_normalise_as_ollama_shows_them(written: str, shown: str) -> None:
    assert str(ModelName.parse(written)) == shown


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("llama3.2", "llama3.2:latest"),
        ("LLAMA3.2", "llama3.2:LATEST"),
        ("llama3.2", "registry.ollama.ai/library/llama3.2:latest"),
        ("library/llama3.2:3b", "llama3.2:3b"),
        ("hf.co/Bartowski/X-GGUF:q4_k_m", "HF.CO/bartowski/x-gguf:Q4_K_M"),
    ],
)
def test_equal_names(a: str, b: str) -> None:
    assert ModelName.parse(a).key == ModelName.parse(b).key


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("llama3.2", "llama3.2:3b"),  # latest is a tag of its own, whatever it points to
        ("llama3.2", "other/llama3.2"),
        ("other/llama3.2", "hf.co/other/llama3.2"),
        ("llama3.2:3b", "llama3.2:3b-instruct"),
    ],
)
def test_different_names(a: str, b: str) -> None:
    assert ModelName.parse(a).key != ModelName.parse(b).key


@pytest.mark.parametrize(
    ("written", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("a/b/c/d", "too many '/' parts"),
        ("llama3.2:", "invalid tag ''"),
        (":3b", "invalid model ''"),
        ("/llama3.2", "invalid namespace ''"),
        ("llama 3.2", "invalid model"),
        ("llama3..2", "invalid model"),
        ("my.team/model", "invalid namespace 'my.team'"),
        ("llama3.2@sha256:abc", "digest"),
        ("-llama", "invalid model '-llama'"),
    ],
)
def test_invalid_names(written: str, problem: str) -> None:
    with pytest.raises(InvalidName, match=problem.replace(".", r"\.")):
        ModelName.parse(written)


@pytest.mark.parametrize(
    "written",
    [
        "llama3.2",
        "LLaMA3.2:3B",
        "library/llama3.2",
        "registry.ollama.ai/library/llama3.2:1b",
        "jmorgan/llama3",
        "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
        "localhost:5000/team/model",
    ],
)
def test_client_and_test_server_agree_on_names(written: str) -> None:
    """The fake server normalises on its own; both must read every name the same way."""
    parts = parse_name(written)
    assert parts is not None
    assert ModelName.parse(written).key == name_key(parts)
    assert str(ModelName.parse(written)) == display_shortest(parts)


# ---------------------------------------------------------------- URLs


@pytest.mark.parametrize(
    ("value", "url"),
    [
        (None, "http://127.0.0.1:11434"),
        ("", "http://127.0.0.1:11434"),
        ("0.0.0.0:11434", "http://127.0.0.1:11434"),
        ("0.0.0.0", "http://127.0.0.1:11434"),
        (":11500", "http://127.0.0.1:11500"),
        ("[::]:11434", "http://127.0.0.1:11434"),
        ("spark-01:11434", "http://spark-01:11434"),
        ("spark-01", "http://spark-01:11434"),
        ("10.0.0.5:8080", "http://10.0.0.5:8080"),
        ("http://10.0.0.5", "http://10.0.0.5:80"),
        ("https://ollama.example.com", "https://ollama.example.com:443"),
        ("https://ollama.example.com:8443/ollama/", "https://ollama.example.com:8443/ollama"),
        ("http://127.0.0.1:11434/", "http://127.0.0.1:11434"),
        ("[fd00::5]:11434", "http://[fd00::5]:11434"),
        ("  127.0.0.1:11434  ", "http://127.0.0.1:11434"),
    ],
)
def test_api_url_reads_ollama_host_like_ollama(value: str | None, url: str) -> None:
    assert api_url(value) == url


@pytest.mark.parametrize("value", ["ftp://host", "host:port", "host:99999"])
def test_api_url_rejects(value: str) -> None:
    with pytest.raises(ValueError):
        api_url(value)


def test_loopback() -> None:
    assert is_loopback("http://127.0.0.1:11434")
    assert is_loopback("http://localhost:11434")
    assert is_loopback("http://[::1]:11434")
    assert not is_loopback("http://10.0.0.5:11434")
    assert not is_loopback("http://spark-01:11434")


# ---------------------------------------------------------------- declared models and the drop-in


def test_model_specs_normalise_and_deduplicate() -> None:
    specs = model_specs(["llama3.2", "llama3.2:latest", {"name": "old:1b", "state": "absent"}], "present")
    assert [(str(s.name), s.present, s.written) for s in specs] == [
        ("llama3.2:latest", True, "llama3.2"),
        ("old:1b", False, "old:1b"),
    ]
    assert [s.present for s in model_specs(["a", {"name": "b", "state": "present"}], "absent")] == [
        False,
        True,
    ]


def test_model_declared_present_and_absent_fails() -> None:
    with pytest.raises(ModuleFailure, match=r"llama3\.2:latest is declared both present and absent"):
        model_specs(["llama3.2", {"name": "LLAMA3.2:latest", "state": "absent"}], "present")


def test_invalid_model_name_fails_the_task() -> None:
    with pytest.raises(ModuleFailure, match="invalid model name 'a/b/c/d'"):
        model_specs(["a/b/c/d"], "present")


def test_plan_models_compares_normalised_names() -> None:
    specs = model_specs(
        ["llama3.2", "qwen3:8b", {"name": "Old:1B", "state": "absent"}, {"name": "gone", "state": "absent"}],
        "present",
    )
    installed = [ModelName.parse(n) for n in ("llama3.2:latest", "old:1b")]
    actions = plan_models(specs, installed)
    assert [str(s.name) for s in actions.pulls] == ["qwen3:8b"]
    assert [(str(s.name), s.written) for s in actions.deletes] == [("old:1b", "old:1b")]
    assert not plan_models(specs[:1], installed)


def test_dropin_is_sorted_quoted_and_reads_back() -> None:
    settings = {
        "OLLAMA_MODELS": "/data/ollama models",
        "OLLAMA_HOST": "0.0.0.0:11434",
        "ODD": 'say "hi" \\ 100%',
    }
    text = dropin_text(settings)
    assert text == (
        DROPIN_HEADER + "[Service]\n"
        'Environment="ODD=say \\"hi\\" \\\\ 100%%"\n'
        'Environment="OLLAMA_HOST=0.0.0.0:11434"\n'
        'Environment="OLLAMA_MODELS=/data/ollama models"\n'
    )
    assert environment_of(text) == settings


def test_environment_of_hand_written_units() -> None:
    text = '[Service]\nEnvironment=A=1 "B=two words"\n# Environment=C=3\nEnvironment="A=4"\n'
    assert environment_of(text) == {"A": "4", "B": "two words"}


# ---------------------------------------------------------------- check/apply against the test server


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    with FakeOllama().running() as server:
        yield server


@pytest.fixture
def progress() -> list[tuple[str, int, int | None]]:
    return []


@pytest.fixture
def ctx(tmp_path: Path, progress: list[tuple[str, int, int | None]]) -> TaskContext:
    return TaskContext(
        conn=LocalConnection(),
        become=None,
        scope=Scope([]),
        search_dirs=(tmp_path,),
        progress=lambda what, done, total: progress.append((what, done, total)),
    )


def converge(ctx: TaskContext, args: dict[str, Any]) -> tuple[Change, str]:
    change = MODULE.check(args, ctx)
    assert change is not None
    outcome = MODULE.apply(change, ctx)
    assert outcome.changed
    assert MODULE.check(args, ctx) is None, "a second check must find nothing to do"
    return change, outcome.msg


def test_pulls_and_deletes_then_converged_with_one_request(ctx: TaskContext, ollama: FakeOllama) -> None:
    ollama.install("llama3.1:8b")
    args = {
        "url": ollama.url,
        "models": ["llama3.2", "qwen3:8b", {"name": "llama3.1:8b", "state": "absent"}],
    }
    change, msg = converge(ctx, args)
    assert change.summary == msg == "pull llama3.2:latest, qwen3:8b; delete llama3.1:8b"
    assert change.data["pulled"] == ["llama3.2:latest", "qwen3:8b"]
    assert change.data["deleted"] == ["llama3.1:8b"]
    assert ollama.installed() == ["llama3.2:latest", "qwen3:8b"]
    ollama.reset_requests()
    assert MODULE.check(args, ctx) is None
    assert [(r.method, r.path) for r in ollama.requests()] == [("GET", "/api/tags")]


def test_pull_bodies_and_progress(
    ctx: TaskContext, ollama: FakeOllama, progress: list[tuple[str, int, int | None]]
) -> None:
    converge(ctx, {"url": ollama.url, "models": ["llama3.2"]})
    pulls = [r.body for r in ollama.requests() if r.path == "/api/pull"]
    assert pulls == [{"model": "llama3.2", "stream": True}]
    assert progress, "a pull reports progress"
    assert {what for what, _, _ in progress} == {"pull llama3.2:latest"}
    total = ollama.catalogue["registry.ollama.ai/library/llama3.2:latest"].total_size
    assert progress[-1] == ("pull llama3.2:latest", total, total)
    assert all(done < (total_seen or 0) for _, done, total_seen in progress[:-1]), (
        "only the end of the pull is reported as complete"
    )


def test_delete_of_a_model_already_gone_is_fine(ctx: TaskContext, ollama: FakeOllama) -> None:
    ollama.install("llama3.2:1b")
    args = {"url": ollama.url, "models": ["llama3.2:1b"], "state": "absent"}
    change = MODULE.check(args, ctx)
    assert change is not None
    with OllamaClient(ollama.url) as client:  # the model disappears behind the plan's back
        assert client.delete("llama3.2:1b") is True
        assert client.delete("llama3.2:1b") is False
    outcome = MODULE.apply(change, ctx)
    assert outcome.data["deleted"] == ["llama3.2:1b"]
    assert [r.path for r in ollama.requests()].count("/api/delete") == 3


def test_absent_models_not_there_need_nothing(ctx: TaskContext, ollama: FakeOllama) -> None:
    assert MODULE.check({"url": ollama.url, "models": ["nothing:here"], "state": "absent"}, ctx) is None


def test_mid_stream_error_names_model_error_and_what_was_done(ctx: TaskContext, ollama: FakeOllama) -> None:
    ollama.fail_pull("llama3.1:8b", error="max retries exceeded: connection reset by peer")
    args = {"url": ollama.url, "models": ["llama3.2:1b", "llama3.1:8b", "qwen3:8b"]}
    change = MODULE.check(args, ctx)
    assert change is not None
    with pytest.raises(ModuleFailure) as info:
        MODULE.apply(change, ctx)
    message = str(info.value)
    assert "pulling llama3.1:8b from the Ollama API at " + ollama.url in message
    assert "max retries exceeded: connection reset by peer" in message
    assert "pulled llama3.2:1b" in message
    assert info.value.data["pulled"] == ["llama3.2:1b"]
    assert ollama.installed() == ["llama3.2:1b"], "it stops at the first failure"
    # the next run resumes: Ollama keeps the partial download
    change, msg = converge(ctx, args)
    assert msg == "pull llama3.1:8b, qwen3:8b"


@pytest.mark.parametrize(
    ("mode", "problem"),
    [
        ("disconnect", "the connection broke at 'pulling "),
        ("truncate", "the progress stream ended without 'success' (last: 'pulling "),
    ],
)
def test_broken_pull_streams(ctx: TaskContext, ollama: FakeOllama, mode: str, problem: str) -> None:
    ollama.fail_pull("llama3.2:1b", mode=mode)
    change = MODULE.check({"url": ollama.url, "models": ["llama3.2:1b"]}, ctx)
    assert change is not None
    with pytest.raises(ModuleFailure, match=r"pulling llama3\.2:1b from the Ollama API") as info:
        MODULE.apply(change, ctx)
    assert problem in str(info.value)


def test_unknown_model(ctx: TaskContext, ollama: FakeOllama) -> None:
    change = MODULE.check({"url": ollama.url, "models": ["no-such-model:7b"]}, ctx)
    assert change is not None
    with pytest.raises(ModuleFailure, match="pull model manifest: file does not exist"):
        MODULE.apply(change, ctx)


def test_pull_timeout(tmp_path: Path, ctx: TaskContext) -> None:
    with FakeOllama(chunks=20, chunk_delay_s=0.02).running() as slow:
        change = MODULE.check({"url": slow.url, "models": ["llama3.2:1b"], "pull_timeout": 0.1}, ctx)
        assert change is not None
        with pytest.raises(ModuleFailure, match="not finished after the pull timeout"):
            MODULE.apply(change, ctx)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_api_down_fails_naming_the_url(ctx: TaskContext) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ModuleFailure) as info:
        MODULE.check({"url": url, "models": ["llama3.2"], "wait_timeout": 0.3}, ctx)
    message = str(info.value)
    assert f"the Ollama API at {url} did not answer within 0.3 s (Connection refused)" in message
    assert "journalctl -u ollama" in message
    with pytest.raises(ModuleFailure, match=f"cannot reach the Ollama API at {url}: Connection refused"):
        MODULE.check({"url": url, "models": ["llama3.2"], "wait_timeout": 0}, ctx)


def test_api_down_is_fine_without_models(ctx: TaskContext, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    settings = {"OLLAMA_HOST": "0.0.0.0:11434"}
    dropin = tmp_path / "override.conf"
    dropin.write_text(dropin_text(settings))
    dropin.chmod(0o644)
    assert MODULE.check({"url": url, "settings": settings, "dropin": str(dropin)}, ctx) is None


def test_check_waits_for_an_api_that_is_starting(ctx: TaskContext) -> None:
    port = free_port()
    fake = FakeOllama()
    timer = threading.Timer(0.4, lambda: fake.start(port=port))
    timer.start()
    try:
        started = time.monotonic()
        change = MODULE.check({"url": f"127.0.0.1:{port}", "models": ["llama3.2"], "wait_timeout": 10}, ctx)
        assert change is not None and change.summary == "pull llama3.2:latest"
        assert 0.3 < time.monotonic() - started < 5
        assert fake.count("/api/version") >= 1
    finally:
        timer.join()
        fake.stop()


def test_wait_ready_backs_off_until_the_deadline() -> None:
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    client = OllamaClient(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(Unreachable, match="did not answer within 5 s"):
        client.wait_ready(5, sleep=sleep, clock=lambda: now[0])
    assert sleeps[:5] == [0.1, 0.2, 0.4, 0.8, 1.6]
    assert max(sleeps) <= 2.0
    assert sum(sleeps) == pytest.approx(5.0)


def test_api_errors_carry_the_status_and_message(ollama: FakeOllama) -> None:
    with OllamaClient(ollama.url + "/not-ollama") as client, pytest.raises(ApiError) as info:
        client.tags()
    assert str(info.value) == f"GET /api/tags at {ollama.url}/not-ollama failed: HTTP 404: 404 page not found"


def test_url_defaults_to_the_services_own_setting(
    ctx: TaskContext, ollama: FakeOllama, tmp_path: Path
) -> None:
    port = ollama.url.rsplit(":", 1)[1]
    dropin = tmp_path / "override.conf"
    settings = {"OLLAMA_HOST": f"0.0.0.0:{port}"}
    dropin.write_text(dropin_text(settings))
    dropin.chmod(0o644)
    change = MODULE.check({"models": ["llama3.2"], "settings": settings, "dropin": str(dropin)}, ctx)
    assert change is not None
    assert change.data["url"] == f"http://127.0.0.1:{port}"


def test_url_defaults_to_ollama_host(ctx: TaskContext, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "0.0.0.0:11500")
    assert MODULE.unchanged({"models": ["x"]}, ctx).data["url"] == "http://127.0.0.1:11500"
    monkeypatch.delenv("OLLAMA_HOST")
    assert MODULE.unchanged({"models": ["x"]}, ctx).data["url"] == "http://127.0.0.1:11434"


def test_remote_hosts_need_a_url_the_controller_reaches(ctx: TaskContext) -> None:
    conn = LocalConnection("spark-07")
    conn.is_local = False  # a remote host, as far as the module can tell
    remote = TaskContext(conn=conn, become=None, scope=Scope([]), search_dirs=ctx.search_dirs)
    with pytest.raises(ModuleFailure, match="is the controller itself, not spark-07"):
        MODULE.check({"models": ["llama3.2"]}, remote)
    with pytest.raises(ModuleFailure, match="is the controller itself, not spark-07"):
        MODULE.check({"models": ["llama3.2"], "url": "localhost:11434"}, remote)


def test_remote_settings_alone_need_a_reachable_url_to_wait_for(
    ctx: TaskContext, systemd: FakeSystemd, tmp_path: Path
) -> None:
    conn = LocalConnection("spark-07")
    conn.is_local = False
    remote = TaskContext(conn=conn, become=None, scope=Scope([]), search_dirs=ctx.search_dirs)
    args: dict[str, Any] = {"settings": {"A": "1"}, "dropin": str(tmp_path / "o.conf")}
    with pytest.raises(ModuleFailure, match="or wait_timeout: 0 to manage only the settings"):
        MODULE.check(args, remote)
    change = MODULE.check({**args, "wait_timeout": 0}, remote)
    assert change is not None and change.summary == "write o.conf + daemon-reload + restart ollama"


# ---------------------------------------------------------------- settings, with the systemctl emulator


@pytest.fixture
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSystemd:
    state_file = tmp_path / "systemd.json"
    state_file.write_text(json.dumps({"units": {}, "calls": []}))
    path = [str(FAKES), os.path.dirname(sys.executable), os.environ.get("PATH", "")]
    monkeypatch.setenv("PATH", os.pathsep.join(path))
    monkeypatch.setenv("FAKE_SYSTEMCTL_STATE", str(state_file))
    fake = FakeSystemd(state_file)
    fake.add(ActiveState="active", SubState="running", UnitFileState="enabled")
    return fake


SHOW = ["show", "ollama", "--property=LoadState,ActiveState,SubState,UnitFileState,NeedDaemonReload"]


def test_settings_write_the_dropin_and_restart_once(
    ctx: TaskContext, systemd: FakeSystemd, ollama: FakeOllama, tmp_path: Path
) -> None:
    dropin = tmp_path / "ollama.service.d" / "override.conf"
    args = {
        "url": ollama.url,
        "settings": {"OLLAMA_KEEP_ALIVE": "30m", "OLLAMA_NUM_PARALLEL": 2, "OLLAMA_FLASH_ATTENTION": True},
        "dropin": str(dropin),
        "models": ["llama3.2"],
    }
    change, msg = converge(ctx, args)
    assert (
        change.summary == msg == "write override.conf + daemon-reload + restart ollama; pull llama3.2:latest"
    )
    assert change.diffs[0].path == str(dropin) and change.diffs[0].before == ""
    assert systemd.calls() == [SHOW, ["daemon-reload"], ["restart", "ollama"]]
    assert dropin.read_text().endswith(
        '[Service]\nEnvironment="OLLAMA_FLASH_ATTENTION=true"\n'
        'Environment="OLLAMA_KEEP_ALIVE=30m"\nEnvironment="OLLAMA_NUM_PARALLEL=2"\n'
    )
    assert oct(dropin.stat().st_mode & 0o777) == "0o644"
    assert ollama.count("/api/version") == 1, "apply waited for the API after the restart"
    assert len(systemd.calls()) == 3, "the converged check asks systemd nothing"

    args["settings"] = {"OLLAMA_KEEP_ALIVE": "1h"}
    change, _ = converge(ctx, args)
    assert change.summary == "write override.conf + daemon-reload + restart ollama"
    assert 'Environment="OLLAMA_KEEP_ALIVE=1h"' in change.diffs[0].after
    assert 'Environment="OLLAMA_KEEP_ALIVE=30m"' in change.diffs[0].before
    assert systemd.calls()[3:] == [SHOW, ["daemon-reload"], ["restart", "ollama"]]


def test_a_stopped_unit_is_started(
    ctx: TaskContext, systemd: FakeSystemd, ollama: FakeOllama, tmp_path: Path
) -> None:
    systemd.add(ActiveState="inactive", SubState="dead")
    args = {"url": ollama.url, "settings": {"OLLAMA_HOST": "x"}, "dropin": str(tmp_path / "o.conf")}
    change, _ = converge(ctx, args)
    assert change.summary == "write o.conf + daemon-reload + start ollama"


def test_restart_false_only_reloads(ctx: TaskContext, systemd: FakeSystemd, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # never contacted: no models, no restart to wait for
    args = {"url": url, "settings": {"A": "1"}, "dropin": str(tmp_path / "o.conf"), "restart": False}
    change, _ = converge(ctx, args)
    assert change.summary == "write o.conf + daemon-reload"
    assert systemd.calls() == [["daemon-reload"]]


def test_mode_fix_alone_restarts_nothing(ctx: TaskContext, systemd: FakeSystemd, tmp_path: Path) -> None:
    dropin = tmp_path / "o.conf"
    dropin.write_text(dropin_text({"A": "1"}))
    dropin.chmod(0o600)
    args = {"url": "http://127.0.0.1:1", "settings": {"A": "1"}, "dropin": str(dropin)}
    change, _ = converge(ctx, args)
    assert change.summary == f"{dropin}: mode 0600 -> 0644"
    assert systemd.calls() == []


def test_missing_dropin_directory_is_created(ctx: TaskContext, systemd: FakeSystemd, tmp_path: Path) -> None:
    dropin = tmp_path / "etc" / "ollama.service.d" / "override.conf"
    args = {"settings": {"A": "1"}, "dropin": str(dropin), "restart": False, "url": "http://127.0.0.1:1"}
    converge(ctx, args)
    assert dropin.exists()


def test_api_down_before_a_restart_defers_the_models(
    ctx: TaskContext, systemd: FakeSystemd, tmp_path: Path
) -> None:
    """The restart may bring the API up (a new port, a stopped service): plan says so, apply decides."""
    port = free_port()
    args = {
        "settings": {"OLLAMA_HOST": f"0.0.0.0:{port}"},
        "dropin": str(tmp_path / "override.conf"),
        "models": ["llama3.2", {"name": "llama3.1:8b", "state": "absent"}],
    }
    change = MODULE.check(args, ctx)
    assert change is not None
    assert change.summary == (
        "write override.conf + daemon-reload + restart ollama; "
        f"then pull/delete models as the API at http://127.0.0.1:{port} reports after the restart"
    )
    with FakeOllama().running(port=port) as fake:  # what the restart brings up
        fake.install("llama3.1:8b")
        outcome = MODULE.apply(change, ctx)
        assert outcome.msg == (
            "write override.conf + daemon-reload + restart ollama; pull llama3.2:latest; delete llama3.1:8b"
        )
        assert outcome.data["pulled"] == ["llama3.2:latest"] and outcome.data["restarted"] is True
        assert MODULE.check(args, ctx) is None


def test_a_new_models_directory_defers_the_models(
    ctx: TaskContext, systemd: FakeSystemd, ollama: FakeOllama, tmp_path: Path
) -> None:
    args = {
        "url": ollama.url,
        "settings": {"OLLAMA_MODELS": "/data/ollama"},
        "dropin": str(tmp_path / "override.conf"),
        "models": ["llama3.2"],
    }
    change = MODULE.check(args, ctx)
    assert change is not None and "after the restart" in change.summary
    assert ollama.count() == 0, "the store it sees now is not the one it will serve"


def test_restart_that_never_answers(ctx: TaskContext, systemd: FakeSystemd, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    args = {"url": url, "settings": {"A": "2"}, "dropin": str(tmp_path / "o.conf"), "wait_timeout": 0.3}
    change = MODULE.check(args, ctx)
    assert change is not None
    with pytest.raises(ModuleFailure) as info:
        MODULE.apply(change, ctx)
    assert f"the Ollama API at {url} did not answer within 0.3 s" in str(info.value)
    assert "after restarting ollama" in str(info.value) and "journalctl -u ollama" in str(info.value)


def test_values_with_line_breaks_are_refused(ctx: TaskContext, tmp_path: Path) -> None:
    with pytest.raises(ModuleFailure, match="line break"):
        MODULE.check({"settings": {"A": "1\n2"}, "dropin": str(tmp_path / "o.conf")}, ctx)


def test_a_server_that_is_not_ollama(tmp_path: Path) -> None:
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "version").write_text("<html>a web server</html>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            with OllamaClient(url) as client, pytest.raises(ApiError, match="did not answer as Ollama does"):
                client.wait_ready(1)
        finally:
            server.shutdown()

"""The ollama module end to end: `python -m sparkprov apply|plan` against the test suite's Ollama API
server on 127.0.0.1 (tests/fakes/ollama_server.py) and, for the service settings, the systemctl
emulator (tests/fakes/systemctl)."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cli import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PENDING,
    CliRun,
    assert_converged,
    assert_exit,
    cli_env,
    sparkprov,
)
from tests.fakes.ollama_server import FakeOllama

TASK = "Ollama models and settings"


@pytest.fixture
def env(systemctl_env: dict[str, str]) -> dict[str, str]:
    """This environment, with the systemctl emulator first on PATH and no OLLAMA_HOST of the caller's."""
    environment = cli_env(systemctl_env)
    environment.pop("OLLAMA_HOST", None)
    return environment


def systemctl_calls(env: dict[str, str]) -> list[list[str]]:
    calls: list[list[str]] = json.loads(Path(env["FAKE_SYSTEMCTL_STATE"]).read_text())["calls"]
    return calls


def playbook(tmp_path: Path, **args: Any) -> Path:
    path = tmp_path / "ollama.yml"
    play = {"name": "ollama", "hosts": "localhost", "tasks": [{"name": TASK, "ollama": args}]}
    path.write_text(yaml.safe_dump([play], sort_keys=False))
    return path


def run(command: str, book: Path, env: dict[str, str], *extra: str) -> CliRun:
    return sparkprov(command, book, *extra, env=env, cwd=book.parent, timeout=60)


def json_run(command: str, book: Path, env: dict[str, str]) -> CliRun:
    return run(command, book, env, "--format", "json")


def task_result(result: CliRun) -> dict[str, Any]:
    task = result.doc["plays"][0]["tasks"][0]
    found: dict[str, Any] = task["hosts"]["localhost"]
    return found


def api_calls(ollama: FakeOllama) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in ollama.requests()]


def test_pull_then_converged_with_one_tags_call(
    tmp_path: Path, env: dict[str, str], ollama: FakeOllama
) -> None:
    book = playbook(tmp_path, url=ollama.url, models=["llama3.2", "llama3.2:1b"])

    first = json_run("apply", book, env)
    assert_exit(first, EXIT_OK)
    assert first.stats()["changed"] == 1
    result = task_result(first)
    assert result["msg"] == "pull llama3.2:latest, llama3.2:1b"
    assert result["pulled"] == ["llama3.2:latest", "llama3.2:1b"]
    assert ollama.installed() == ["llama3.2:1b", "llama3.2:latest"]

    ollama.reset_requests()
    assert_converged(json_run("apply", book, env))
    assert api_calls(ollama) == [("GET", "/api/tags")], "a converged host costs one /api/tags call"

    ollama.reset_requests()
    plan = json_run("plan", book, env)
    assert_exit(plan, EXIT_OK)
    assert plan.doc["plan"] == []
    assert api_calls(ollama) == [("GET", "/api/tags")]


def test_plan_shows_pulls_and_deletes_and_changes_nothing(
    tmp_path: Path, env: dict[str, str], ollama: FakeOllama
) -> None:
    ollama.install("llama3.1:8b")
    book = playbook(tmp_path, url=ollama.url, models=["qwen3:8b", {"name": "llama3.1:8b", "state": "absent"}])
    plan = json_run("plan", book, env)
    assert_exit(plan, EXIT_PENDING)
    [entry] = plan.doc["plan"]
    assert entry["change"] == "pull qwen3:8b; delete llama3.1:8b"
    assert entry["diff"][0]["before"] == "qwen3:8b: absent\nllama3.1:8b: present\n"
    assert api_calls(ollama) == [("GET", "/api/tags")]
    assert ollama.installed() == ["llama3.1:8b"]


def test_absent_models_deleted_and_missing_ones_are_fine(
    tmp_path: Path, env: dict[str, str], ollama: FakeOllama
) -> None:
    ollama.install("llama3.1:8b", "llama3.2:1b")
    book = playbook(tmp_path, url=ollama.url, models=["LLAMA3.1:8B", "never-pulled:7b"], state="absent")
    first = json_run("apply", book, env)
    assert_exit(first, EXIT_OK)
    assert task_result(first)["deleted"] == ["llama3.1:8b"], "named as the store spells it"
    assert [r.body for r in ollama.requests() if r.path == "/api/delete"] == [{"model": "llama3.1:8b"}]
    assert ollama.installed() == ["llama3.2:1b"]
    assert_converged(json_run("apply", book, env))


def test_mid_stream_error_fails_with_the_model_and_the_error(
    tmp_path: Path, env: dict[str, str], ollama: FakeOllama
) -> None:
    ollama.fail_pull("qwen3:8b", error="max retries exceeded: read: connection reset by peer")
    book = playbook(tmp_path, url=ollama.url, models=["llama3.2:1b", "qwen3:8b"])
    failed = json_run("apply", book, env)
    assert_exit(failed, EXIT_FAILED)
    message = task_result(failed)["msg"]
    assert "pulling qwen3:8b" in message
    assert "max retries exceeded: read: connection reset by peer" in message
    assert "pulled llama3.2:1b" in message
    assert ollama.installed() == ["llama3.2:1b"]
    again = json_run("apply", book, env)  # resumes, and finishes
    assert_exit(again, EXIT_OK)
    assert task_result(again)["msg"] == "pull qwen3:8b"


def test_unknown_model_fails(tmp_path: Path, env: dict[str, str], ollama: FakeOllama) -> None:
    book = playbook(tmp_path, url=ollama.url, models=["no-such-model:13b"])
    failed = json_run("apply", book, env)
    assert_exit(failed, EXIT_FAILED)
    message = task_result(failed)["msg"]
    assert "pulling no-such-model:13b" in message and "pull model manifest: file does not exist" in message


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_api_down_fails_naming_the_url(tmp_path: Path, env: dict[str, str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    book = playbook(tmp_path, url=url, models=["llama3.2"], wait_timeout=1)
    for command in ("plan", "apply"):
        failed = json_run(command, book, env)
        assert_exit(failed, EXIT_FAILED)
        message = task_result(failed)["msg"]
        assert f"the Ollama API at {url} did not answer within 1 s (Connection refused)" in message
        assert "journalctl -u ollama" in message


def test_progress_lines_on_stdout(tmp_path: Path, env: dict[str, str], ollama: FakeOllama) -> None:
    book = playbook(tmp_path, url=ollama.url, models=["llama3.2"])
    applied = run("apply", book, env)
    assert_exit(applied, EXIT_OK)
    assert re.search(r"\[localhost\] pull llama3\.2:latest: 2\.02 GB / 2\.02 GB \(100%\)", applied.stdout), (
        applied.stdout
    )
    assert "changed: [localhost] => pull llama3.2:latest" in applied.stdout


def test_settings_restart_only_when_the_dropin_changed(
    tmp_path: Path, env: dict[str, str], ollama: FakeOllama
) -> None:
    dropin = tmp_path / "ollama.service.d" / "override.conf"
    settings = {"OLLAMA_HOST": "0.0.0.0:11434", "OLLAMA_KEEP_ALIVE": "30m", "OLLAMA_MODELS": "/data/ollama"}
    book = playbook(tmp_path, url=ollama.url, settings=settings, dropin=str(dropin), models=["llama3.2:1b"])

    plan = json_run("plan", book, env)
    assert_exit(plan, EXIT_PENDING)
    [entry] = plan.doc["plan"]
    assert entry["change"].startswith("write override.conf + daemon-reload + restart ollama; ")
    assert not dropin.exists()
    assert [call[0] for call in systemctl_calls(env)] == ["show"], "a plan only asks systemd"

    applied = json_run("apply", book, env)
    assert_exit(applied, EXIT_OK)
    assert task_result(applied)["restarted"] is True
    show = systemctl_calls(env)[0]
    assert systemctl_calls(env) == [show, show, ["daemon-reload"], ["restart", "ollama"]]
    assert 'Environment="OLLAMA_KEEP_ALIVE=30m"' in dropin.read_text()
    assert ollama.installed() == ["llama3.2:1b"]

    calls = len(systemctl_calls(env))
    assert_converged(json_run("apply", book, env))
    assert_exit(json_run("plan", book, env), EXIT_OK)
    assert len(systemctl_calls(env)) == calls, "no daemon-reload or restart when nothing changed"

    changed = playbook(
        tmp_path, url=ollama.url, settings={**settings, "OLLAMA_KEEP_ALIVE": "1h"}, dropin=str(dropin)
    )
    plan = json_run("plan", changed, env)
    assert_exit(plan, EXIT_PENDING)
    assert plan.doc["plan"][0]["change"] == "write override.conf + daemon-reload + restart ollama"
    assert_exit(json_run("apply", changed, env), EXIT_OK)
    assert systemctl_calls(env)[-2:] == [["daemon-reload"], ["restart", "ollama"]]

"""Verify steps end to end through `python -m sparkprov`: apply runs them after the play's tasks and
handlers (not with --no-verify), `verify` runs them, `plan` never does; the JSON `verify` list, the
text VERIFY section, junit/markdown reports, and exit codes 1 (a step failed) and 4 (a misspelt step,
an unreadable expectation). The http step talks to a real `http.server` on 127.0.0.1; the container
step runs in the private dockerd."""

from __future__ import annotations

import json
import shutil
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.cli import CliRun, sparkprov, write_text
from tests.infra.dockerd import DockerDaemon

DATA = Path(__file__).resolve().parents[1] / "data" / "verify"


class _Service(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, json.dumps({"status": "ok", "models": {"count": 2}}).encode())
        else:
            self._send(404, b"no such page")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if status == 200 else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    """A tiny HTTP service on 127.0.0.1: JSON on /health, 404 elsewhere."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Service)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def run(
    tmp_path: Path,
    command: str,
    playbook: str | Path,
    *args: str,
    env: dict[str, str] | None = None,
    **extra: Any,
) -> CliRun:
    base = tmp_path / "base"
    base.mkdir(exist_ok=True)
    path = playbook if isinstance(playbook, Path) else DATA / playbook
    variables = json.dumps({"base": str(base), **extra})
    return sparkprov(command, path, "-e", variables, *args, home=tmp_path / "home", extra_env=env)


def verified(out: CliRun) -> dict[str, dict[str, Any]]:
    """The JSON `verify` entries by step name (each run here has one host)."""
    entries = out.doc["verify"]
    assert all(e["host"] == "localhost" for e in entries), entries
    return {e["name"]: e for e in entries}


# ---------------------------------------------------------------- apply, verify, plan


def test_apply_runs_the_verify_steps_after_the_tasks(tmp_path: Path, url: str) -> None:
    out = run(tmp_path, "apply", "site.yml", "--format", "json", url=url)
    assert out.rc == 0, out
    assert out.doc["exit_code"] == 0
    steps = verified(out)
    assert list(steps) == ["marker is there", "exit code is judged", "health answers", "GPU"]
    marker = steps["marker is there"]  # it passed, so it ran after the task that wrote the file
    assert {k: marker[k] for k in ("play", "step", "status", "reason")} == {
        "play": "verify steps",
        "step": "command",
        "status": "pass",
        "reason": "",
    }
    assert marker["expected"] == {"rc": "== 0", "stdout": "== ready"}
    assert marker["measured"] == {"rc": 0, "stdout": "ready", "stderr": ""}
    assert marker["verdicts"]["stdout"] == {
        "expected": "== ready",
        "measured": "ready",
        "ok": True,
        "text": "'ready' == 'ready'",
    }
    assert isinstance(marker["duration"], float)
    assert steps["exit code is judged"]["measured"]["rc"] == 2
    health = steps["health answers"]
    assert health["status"] == "pass", health
    assert health["measured"]["status"] == 200
    assert health["measured"]["json"] == {"status": "ok", "models": {"count": 2}}
    assert health["expected"]["json"] == 'contains {"models": {"count": ">= 1"}, "status": "ok"}'
    assert health["measured"]["latency_ms"] < 5000


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has an NVIDIA GPU")
def test_gpu_step_is_skipped_without_a_gpu_with_the_reason(tmp_path: Path, url: str) -> None:
    out = run(tmp_path, "apply", "site.yml", "--format", "json", "--tags", "gpu", url=url)
    assert out.rc == 0, out
    (gpu,) = out.doc["verify"]
    assert gpu["status"] == "skip"
    assert gpu["reason"].startswith("no NVIDIA GPU or driver on localhost: ")
    assert "nvidia-smi: not installed" in gpu["reason"]


def test_failed_expectations_fail_the_run_with_expected_vs_measured(tmp_path: Path, url: str) -> None:
    out = run(tmp_path, "apply", "failing.yml", "--format", "json", url=url)
    assert out.rc == 1, out
    assert out.doc["exit_code"] == 1
    steps = verified(out)
    assert {name: e["status"] for name, e in steps.items()} == {
        "wrong output": "fail",
        "wrong status": "fail",
        "wrong json": "fail",
        "tolerated": "fail",
    }
    assert steps["wrong output"]["reason"] == "stdout: expected == expected-text, measured 'actual'"
    assert steps["wrong status"]["reason"] == "status: expected == 200, measured 404"
    assert steps["wrong json"]["reason"] == (
        'json: expected contains {"status": "degraded"}, measured {"status": "ok"}'
    )
    assert steps["wrong json"]["verdicts"]["json"]["text"] == "status: 'ok' is not 'degraded'"
    assert steps["tolerated"]["ignored"] is True
    assert out.stats()["failures"] == 0  # the recap counts tasks; verification has its own list


def test_text_output_has_a_verify_section_with_one_line_per_step(tmp_path: Path, url: str) -> None:
    out = run(tmp_path, "apply", "failing.yml", "--report", str(tmp_path / "report"), url=url)
    assert out.rc == 1, out
    section = out.stdout.split("\nVERIFY *", 1)[1].split("PLAY RECAP", 1)[0]
    lines = [line for line in section.splitlines()[1:] if line.strip()]
    assert lines[0] == "FAIL [localhost] wrong output: rc: expected == 0, measured 0; " + (
        "stdout: expected == expected-text, measured 'actual'"
    )
    assert lines[3] == "FAIL (ignored) [localhost] tolerated: rc: expected == 0, measured 1"
    assert lines[-1] == "verify: 0 passed, 3 failed, 0 skipped, 1 failed but ignored"
    assert "VERIFY [wrong status]" in out.stdout  # live lines, like TASK [...]
    junit = ET.parse(tmp_path / "report" / "junit.xml").getroot()
    cases = {
        c.get("name"): c
        for c in junit.iter("testcase")
        if c.get("classname") == "failing verify steps verify"
    }
    assert cases["[localhost] wrong status"].find("failure") is not None
    assert cases["[localhost] tolerated"].find("failure") is None
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "| localhost | wrong status | FAIL | status == 200 | status 404 |" in markdown


def test_no_verify_skips_the_steps(tmp_path: Path, url: str) -> None:
    out = run(tmp_path, "apply", "failing.yml", "--no-verify", "--format", "json", url=url)
    assert out.rc == 0, out
    assert out.doc["verify"] == []
    assert "VERIFY" not in out.stderr


def test_plan_does_not_run_them(tmp_path: Path, url: str) -> None:
    out = run(tmp_path, "plan", "site.yml", "--format", "json", url=url)
    assert out.rc == 2, out  # the marker file is pending
    assert out.doc["verify"] == []
    assert not (tmp_path / "base" / "marker").exists()
    check = run(tmp_path, "apply", "failing.yml", "--check", "--format", "json", url=url)
    assert (check.rc, check.doc["verify"]) == (0, [])


def test_verify_reports_drift_and_runs_the_steps_changing_nothing(tmp_path: Path, url: str) -> None:
    drifted = run(tmp_path, "verify", "site.yml", "--format", "json", url=url)
    assert drifted.rc == 1, drifted
    assert [entry["task"] for entry in drifted.doc["plan"]] == ["marker file"]
    assert verified(drifted)["marker is there"]["status"] == "fail"  # the file is really not there
    assert not (tmp_path / "base" / "marker").exists()
    assert run(tmp_path, "apply", "site.yml", "--format", "json", url=url).rc == 0
    converged = run(tmp_path, "verify", "site.yml", "--format", "json", url=url)
    assert converged.rc == 0, converged
    assert verified(converged)["health answers"]["status"] == "pass"


def test_steps_run_after_handlers_and_not_on_hosts_that_failed(tmp_path: Path) -> None:
    playbook = write_text(
        tmp_path / "order.yml",
        """
        - name: handlers first
          hosts: localhost
          gather_facts: false
          tasks:
            - name: change something
              command: "true"
              notify: write marker
          handlers:
            - name: write marker
              copy: {content: "handled\\n", dest: "{{ base }}/handled"}
          verify:
            - name: the handler ran before
              command: {cmd: "cat {{ base }}/handled", expect: {stdout: handled}}
        - name: a host that fails
          hosts: localhost
          gather_facts: false
          tasks:
            - name: break
              command: "false"
          verify:
            - name: never runs
              command: "true"
        """,
    )
    out = run(tmp_path, "apply", playbook, "--format", "json")
    assert out.rc == 1, out  # the task failed
    assert [(e["name"], e["status"]) for e in out.doc["verify"]] == [("the handler ran before", "pass")]


# ---------------------------------------------------------------- invalid input


def test_a_misspelt_step_is_invalid_input_with_a_suggestion(tmp_path: Path) -> None:
    playbook = write_text(
        tmp_path / "typo.yml",
        """
        - hosts: localhost
          gather_facts: false
          verify:
            - name: typo
              gpuu: {expect: {count: 1}}
        """,
    )
    out = run(tmp_path, "apply", playbook, "--format", "json")
    assert out.rc == 4, out
    (problem,) = out.doc["problems"]
    assert problem["message"] == "unknown verification step or keyword 'gpuu' in verify step 'typo'"
    assert problem["hint"].startswith("did you mean 'gpu'?")
    assert problem["line"] == 5


def test_an_unreadable_expectation_is_invalid_input(tmp_path: Path) -> None:
    playbook = write_text(
        tmp_path / "expect.yml",
        """
        - hosts: localhost
          gather_facts: false
          verify:
            - name: throughput
              command: {cmd: "echo 42", expect: {stdout: "=> 40"}}
        """,
    )
    out = run(tmp_path, "verify", playbook, "--format", "json")
    assert out.rc == 4, out
    (problem,) = out.doc["problems"]
    assert problem["key"] == "stdout"
    assert "cannot read expectation '=> 40'" in problem["message"]
    assert "Nothing was run on any host." in out.stderr


# ---------------------------------------------------------------- container (private dockerd)


@pytest.mark.docker
@pytest.mark.parametrize("gpu", [False, True], ids=["gpu-false", "gpu-true"])
def test_container_step(tmp_path: Path, dockerd: DockerDaemon, busybox_image: str, gpu: bool) -> None:
    out = run(
        tmp_path, "apply", "container.yml", "--format", "json", env=dockerd.env, image=busybox_image, gpu=gpu
    )
    (step,) = out.doc["verify"]
    if not gpu:
        assert out.rc == 0, out
        assert step["status"] == "pass", step
        assert step["measured"]["json"] == {"ok": True, "n": 3}
        assert "--gpus" not in step["details"]["argv"]
        return
    assert out.rc == 1, out
    assert step["status"] == "fail"
    assert step["reason"].startswith("no NVIDIA container runtime on localhost: ")
    assert 'could not select device driver "" with capabilities: [[gpu]]' in step["reason"]

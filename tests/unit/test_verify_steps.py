"""The command, http and container verify steps, and one step run by the executor's
VerificationRunner (vars, when, loops, ignore_errors, templated expectations) on the local connection.
The http step talks to a real `http.server` on 127.0.0.1; docker itself is exercised by the
integration tests against the private dockerd."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from sparkprov.connection.base import CommandResult
from sparkprov.connection.local import LocalConnection
from sparkprov.errors import Place
from sparkprov.executor.results import NO_LOG_MESSAGE
from sparkprov.executor.task import TaskSettings
from sparkprov.executor.verification import VerificationRunner
from sparkprov.playbook.model import LoopControl, Task
from sparkprov.playbook.templating import Scope
from sparkprov.report.jsonout import verify_entry
from sparkprov.verify import KEYWORDS, get_step, step_names
from sparkprov.verify.base import StepContext, StepStatus
from sparkprov.verify.container import (
    DEFAULT_COMMAND,
    GPU_FLAGS,
    ContainerStep,
    _docker_problem,
    docker_run_argv,
    last_json_object,
)


def context(**variables: Any) -> StepContext:
    return StepContext(LocalConnection(), None, Scope([variables]), sleep=lambda seconds: None)


def test_registry_names_every_step() -> None:
    assert step_names() == [
        "command",
        "container",
        "gpu",
        "http",
        "memory",
        "ollama_bench",
        "preflight",
        "testinfra",
    ]
    assert all(get_step(name).name == name for name in step_names())
    assert "register" not in KEYWORDS and "when" in KEYWORDS


# ---------------------------------------------------------------- command


def test_command_passes_on_rc_0_by_default_and_judges_output() -> None:
    result = get_step("command").run(
        {"cmd": "echo ready | tr a-z A-Z", "expect": {"stdout": "READY"}}, context()
    )
    assert result.status is StepStatus.PASS, result.reason
    assert result.measured == {"rc": 0, "stdout": "READY", "stderr": ""}


def test_command_fails_with_expected_vs_measured() -> None:
    args = {"argv": ["sh", "-c", "echo oops >&2; exit 3"], "expect": {"stderr": "~ fine"}}
    result = get_step("command").run(args, context())
    assert result.status is StepStatus.FAIL
    assert result.reason == "rc: expected == 0, measured 3; stderr: expected ~ fine, measured 'oops'"


def test_command_reports_an_excerpt_of_long_output_but_judges_all_of_it() -> None:
    args = {"cmd": "seq 1 5000", "expect": {"stdout": "~ ^1\\n2\\n"}}
    result = get_step("command").run(args, context())
    assert result.status is StepStatus.PASS
    assert result.measured["stdout"].startswith("...")
    assert len(result.measured["stdout"]) == 2000


def test_command_timeout_is_a_failure() -> None:
    result = get_step("command").run({"cmd": "sleep 5", "timeout": 0.2}, context())
    assert result.status is StepStatus.FAIL
    assert "did not finish within 0.2s" in result.reason


# ---------------------------------------------------------------- http


class _Service(BaseHTTPRequestHandler):
    """Answers 503 for the first `failures` requests, then JSON on /health and 404 elsewhere."""

    failures = 0
    seen = 0

    def do_GET(self) -> None:
        type(self).seen += 1
        if type(self).seen <= type(self).failures:
            self._send(503, b"starting")
        elif self.path == "/health":
            self._send(200, json.dumps({"status": "ok", "models": {"count": 2}}).encode())
        else:
            self._send(404, b"no such page")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def service() -> Iterator[tuple[str, type[_Service]]]:
    handler = type("Service", (_Service,), {"failures": 0, "seen": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_http_judges_status_body_json_and_latency(service: tuple[str, type[_Service]]) -> None:
    url, _ = service
    args = {
        "url": f"{url}/health",
        "expect": {
            "body": "~ status",
            "json": {"status": "ok", "models": {"count": ">= 1"}},
            "latency_ms": "< 5000",
        },
    }
    result = get_step("http").run(args, context())
    assert result.status is StepStatus.PASS, result.reason
    assert result.measured["status"] == 200
    assert result.measured["json"] == {"status": "ok", "models": {"count": 2}}
    assert result.expected["status"] == "== 200"


def test_http_retries_until_the_service_is_ready(service: tuple[str, type[_Service]]) -> None:
    url, handler = service
    handler.failures = 2
    slept: list[float] = []
    ctx = context()
    ctx.sleep = slept.append
    result = get_step("http").run({"url": f"{url}/health", "retries": 5, "delay": 0.5}, ctx)
    assert result.status is StepStatus.PASS, result.reason
    assert result.details["attempts"] == 3
    assert slept == [0.5, 0.5]


def test_http_gives_up_after_its_retries(service: tuple[str, type[_Service]]) -> None:
    url, _ = service
    result = get_step("http").run({"url": f"{url}/missing", "retries": 2}, context())
    assert result.status is StepStatus.FAIL
    assert result.details["attempts"] == 3
    assert result.reason == "status: expected == 200, measured 404"


def test_http_connection_refused_is_a_failure_that_says_so() -> None:
    result = get_step("http").run({"url": "http://127.0.0.1:9/", "timeout": 2}, context())
    assert result.status is StepStatus.FAIL
    assert result.reason.startswith("GET http://127.0.0.1:9/ from the controller failed: connection refused")


# ---------------------------------------------------------------- container


def test_container_command_line_has_nvidia_flags_unless_gpu_is_false() -> None:
    argv = docker_run_argv({"image": "img:1", "env": {"TOKEN": "s3cret"}, "volumes": ["/a:/b"]}, "n")
    assert argv[:5] == ["docker", "run", "--rm", "--name", "n"]
    assert argv[5 : 5 + len(GPU_FLAGS)] == list(GPU_FLAGS)
    assert GPU_FLAGS == (
        "--gpus",
        "all",
        "--ipc=host",
        "--ulimit",
        "memlock=-1",
        "--ulimit",
        "stack=67108864",
    )
    assert argv[5 + len(GPU_FLAGS) :] == ["-e", "TOKEN", "-v", "/a:/b", "img:1", *DEFAULT_COMMAND]
    assert "s3cret" not in " ".join(argv)  # the value travels in the CLI's environment
    plain = docker_run_argv({"image": "img:1", "gpu": False, "command": "sh -c 'echo hi'"}, "n")
    assert plain == ["docker", "run", "--rm", "--name", "n", "img:1", "sh", "-c", "echo hi"]


def test_container_default_command_expects_cuda() -> None:
    step = ContainerStep()
    assert {k: e.text for k, e in step.expectations({"image": "x"}).items()} == {
        "rc": "== 0",
        "json": 'contains {"cuda_available": true}',
    }
    assert {k: e.text for k, e in step.expectations({"image": "x", "command": "true"}).items()} == {
        "rc": "== 0"
    }


def test_last_json_object_skips_banners() -> None:
    stdout = '== PyTorch ==\nNVIDIA Release 25.11\n{"cuda_available": true}\n'
    assert last_json_object(stdout) == {"cuda_available": True}
    assert last_json_object("no json {here\n") is None


def _docker(rc: int, stderr: str) -> CommandResult:
    return CommandResult(("docker",), rc, "", stderr, 0.1)


def test_docker_errors_are_told_apart_from_the_command_in_the_container() -> None:
    no_gpu = _docker(
        125,
        'docker: Error response from daemon: could not select device driver "" with capabilities: [[gpu]]\n\n'
        "Run 'docker run --help' for more information\n",
    )
    problem = _docker_problem(no_gpu, "spark1", {"image": "img"})
    assert problem is not None and problem.startswith("no NVIDIA container runtime on spark1: ")
    assert "gpu: false" in problem
    unreachable = _docker(
        125, "docker: Cannot connect to the Docker daemon at unix:///x.sock. Is it running?"
    )
    assert _docker_problem(unreachable, "h", {"image": "img"}) == (
        "docker run img failed on h: Cannot connect to the Docker daemon at unix:///x.sock. Is it running?"
    )
    missing = _docker(127, "docker: No such file or directory")
    assert "the docker CLI is not installed on h" in (_docker_problem(missing, "h", {"image": "img"}) or "")
    in_container = _docker(127, 'docker: Error response from daemon: exec: "nope": executable file not found')
    assert _docker_problem(in_container, "h", {"image": "img"}) is None  # judged as rc 127
    assert _docker_problem(_docker(3, ""), "h", {"image": "img"}) is None


# ---------------------------------------------------------------- run by the executor


PLACE = Place("site.yml", 3, 7)


def step(name: str, args: dict[str, Any], **keywords: Any) -> Task:
    return Task(name=name, module=keywords.pop("module", "command"), args=args, place=PLACE, **keywords)


def verify(task: Task, **variables: Any) -> list[Any]:
    settings = TaskSettings(
        conn=LocalConnection(),
        check_mode=False,
        want_diff=False,
        play_become=False,
        play_become_user="root",
        play_environment={},
        search_dirs=(),
    )
    return VerificationRunner(settings).run(task, "localhost", "play", Scope([variables]))


def test_runner_renders_arguments_and_expectations_with_the_hosts_variables() -> None:
    (result,) = verify(
        step(
            "greeting {{ who }}",
            {"cmd": "echo {{ word }}", "expect": {"stdout": "{{ word }}", "rc": "{{ rc }}"}},
        ),
        word="hello",
        who="world",
        rc=0,
    )
    assert (result.name, result.status, result.play) == ("greeting world", StepStatus.PASS, "play")
    assert result.step.expected == {"rc": "== 0", "stdout": "== hello"}


def test_runner_skips_on_when_and_runs_loops_with_ignore_errors() -> None:
    (skipped,) = verify(step("s", {"cmd": "false"}, when=["run_it"]), run_it=False)
    assert (skipped.status, skipped.step.reason) == (StepStatus.SKIP, "Conditional result was False")
    looped = verify(
        step(
            "l",
            {"cmd": "test {{ n }} -gt 1"},
            loop=[1, 2],
            loop_control=LoopControl(loop_var="n"),
            ignore_errors=True,
        )
    )
    assert [(r.item, r.status, r.ignored) for r in looped] == [
        ("1", StepStatus.FAIL, True),
        ("2", StepStatus.PASS, False),
    ]


def test_runner_fails_a_step_whose_rendered_input_is_wrong() -> None:
    (bad_expectation,) = verify(step("e", {"cmd": "true", "expect": {"rc": "{{ op }} 1"}}), op="=>")
    assert bad_expectation.status is StepStatus.FAIL
    assert "cannot read expectation '=> 1'" in bad_expectation.step.reason
    (bad_args,) = verify(step("a", {"cmd": "true", "timeout": "{{ t }}"}), t="soon")
    assert bad_args.status is StepStatus.FAIL
    assert "'timeout'" in bad_args.step.reason
    (undefined,) = verify(step("u", {"cmd": "echo {{ nope }}"}))
    assert undefined.status is StepStatus.FAIL
    assert "nope" in undefined.step.reason


def test_no_log_hides_measurements_but_keeps_the_verdict() -> None:
    (result,) = verify(
        step("secret", {"cmd": "echo {{ token }}", "expect": {"stdout": "other"}}, no_log=True), token="t0k"
    )
    assert result.status is StepStatus.FAIL
    entry = verify_entry(result)
    assert (entry["status"], entry["reason"]) == ("fail", NO_LOG_MESSAGE)
    assert entry["measured"] == entry["expected"] == entry["verdicts"] == {}
    assert "t0k" not in str(entry)

"""`testinfra`: run a testinfra test file against the host and fold its results into the report.

    - name: the host as testinfra sees it
      testinfra: {file: tests/test_spark.py, args: ["-k", "docker"]}

pytest runs ON THE CONTROLLER, in a subprocess of this interpreter (which has pytest-testinfra):
`python -m pytest FILE --hosts=SPEC --junitxml=TMP -p no:cacheprovider -q ARGS...`, in the playbook's
directory (a relative `file` is found there). SPEC is the same host through the matching backend:
`local://` for a host on the local connection, `paramiko://USER@HOST:PORT?ssh_identity_file=KEY` for an
SSH host (from the host's ansible_host, ansible_port, ansible_user and ansible_ssh_private_key_file;
~/.ssh/config fills in the rest). With `become`, testinfra runs its commands under sudo (`--sudo`,
`--sudo-user`). Note that testinfra's paramiko backend accepts an unknown host key with a warning,
where sparkprov's own SSH connection would refuse it.

The JUnit XML that pytest writes is the result: measured `tests`, `passed`, `failed`, `errors`,
`skipped`; each test's verdict (and a failure's message) in `details.tests`. Expected by default:
`failed: 0`, `errors: 0`, `tests: ">= 1"`. pytest-testinfra missing: skipped ("install
pytest-testinfra").
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sparkprov.connection.local import current_user
from sparkprov.verify.base import Step, StepContext, StepResult, judge
from sparkprov.verify.command import excerpt

DEFAULT_TIMEOUT_S = 600.0
MESSAGE_CHARS = 2000
LISTED_FAILURES = 5
OUTCOMES = {"failure": "fail", "error": "error", "skipped": "skip"}


def host_spec(ctx: StepContext) -> str:
    """testinfra's `--hosts` value for the host this step runs on."""
    if ctx.conn.is_local:
        return "local://"
    scope = ctx.scope
    address = str(scope.get("ansible_host") or scope.get("inventory_hostname") or ctx.host)
    user = scope.get("ansible_user") or scope.get("ansible_ssh_user")
    port = scope.get("ansible_port") or scope.get("ansible_ssh_port")
    key = scope.get("ansible_ssh_private_key_file") or scope.get("ansible_private_key_file")
    spec = "paramiko://" + (f"{quote(str(user), safe='')}@" if user else "")
    spec += f"[{address}]" if ":" in address else address
    spec += f":{port}" if port else ""
    if key:
        spec += "?ssh_identity_file=" + quote(os.path.expanduser(str(key)), safe="/")
    return spec


def sudo_options(ctx: StepContext) -> list[str]:
    become = ctx.become
    if become is None or (ctx.conn.is_local and become.user == current_user()):
        return []
    return ["--sudo"] + ([f"--sudo-user={become.user}"] if become.user != "root" else [])


def playbook_dir(ctx: StepContext) -> Path:
    return Path(str(ctx.scope.get("playbook_dir") or os.getcwd()))


def testinfra_file(args: dict[str, Any], ctx: StepContext) -> Path:
    """`file` as an absolute path (relative ones are in the playbook's directory)."""
    path = Path(os.path.expanduser(str(args["file"])))
    return path if path.is_absolute() else playbook_dir(ctx) / path


def parse_junit(xml_text: str) -> list[dict[str, Any]]:
    """Each test case in pytest's JUnit XML: name, status (pass, fail, error, skip), message, time."""
    root = ET.fromstring(xml_text)
    tests = []
    for case in root.iter("testcase"):
        entry: dict[str, Any] = {
            "name": "::".join(p for p in (case.get("classname"), case.get("name")) if p),
            "status": "pass",
            "time": float(case.get("time") or 0.0),
        }
        for child in case:
            if child.tag in OUTCOMES:
                entry["status"] = OUTCOMES[child.tag]
                entry["message"] = _message(child)
                break
        tests.append(entry)
    return tests


def _message(element: ET.Element) -> str:
    text = (element.get("message") or element.text or "").strip()
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 3] + "..."


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def counts(tests: list[dict[str, Any]]) -> dict[str, int]:
    statuses = [t["status"] for t in tests]
    return {
        "tests": len(tests),
        "passed": statuses.count("pass"),
        "failed": statuses.count("fail"),
        "errors": statuses.count("error"),
        "skipped": statuses.count("skip"),
    }


class TestinfraStep(Step):
    __test__ = False  # not a pytest test class
    name = "testinfra"
    free_form = "file"
    default_expect = {"failed": 0, "errors": 0, "tests": ">= 1"}

    def run(self, args: dict[str, Any], ctx: StepContext) -> StepResult:
        expectations = self.expectations(args)
        if importlib.util.find_spec("testinfra") is None:
            return StepResult.skip(
                f"pytest-testinfra is not installed for {sys.executable}: install pytest-testinfra"
            )
        path = testinfra_file(args, ctx)
        if not path.is_file():
            return StepResult.fail(f"testinfra file not found: {path}")
        spec = host_spec(ctx)
        extra = args.get("args") or []
        extra = extra.split() if isinstance(extra, str) else [str(a) for a in extra]
        timeout = float(args.get("timeout") or ctx.timeout or DEFAULT_TIMEOUT_S)
        with tempfile.TemporaryDirectory(prefix="sparkprov-testinfra-") as scratch:
            junit = Path(scratch) / "junit.xml"
            argv = [sys.executable, "-m", "pytest", str(path), f"--hosts={spec}", f"--junitxml={junit}"]
            argv += ["-p", "no:cacheprovider", "-q", *sudo_options(ctx), *extra]
            try:
                done = subprocess.run(
                    argv,
                    cwd=playbook_dir(ctx),
                    env={**os.environ, **ctx.environment, "PYTHONDONTWRITEBYTECODE": "1"},
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                return StepResult.fail(
                    f"testinfra {path.name} on {ctx.host} did not finish within {timeout:g}s"
                )
            xml_text = junit.read_text(encoding="utf-8") if junit.is_file() else None
        details: dict[str, Any] = {"hosts": spec, "argv": argv, "rc": done.returncode}
        try:
            tests = parse_junit(xml_text) if xml_text else None
        except ET.ParseError:
            tests = None
        if tests is None:
            output = excerpt((done.stdout + done.stderr).strip(), 1000)
            return StepResult.fail(
                f"pytest exited {done.returncode} without results for {path}: {output}", **details
            )
        details["tests"] = tests
        result = judge(expectations, counts(tests), details=details)
        failing = [t for t in tests if t["status"] in ("fail", "error")]
        if failing and result.reason:
            listed = "; ".join(
                f"{t['name']}: {_first_line(t.get('message', ''))}" for t in failing[:LISTED_FAILURES]
            )
            more = f" (and {len(failing) - LISTED_FAILURES} more)" if len(failing) > LISTED_FAILURES else ""
            result.reason += f"; failing: {listed}{more}"
        return result

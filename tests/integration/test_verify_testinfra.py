"""The testinfra verify step end to end through `python -m sparkprov verify`: a tiny testinfra file
(tests/data/verify/testinfra_checks.py) run against the local host with the local backend, passing and
failing, folded into the JSON report with per-test verdicts; the host spec for SSH hosts; and the same
file against an sshd host of the test fleet through testinfra's paramiko backend (`-m fleet`)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sparkprov.connection.base import Connection
from sparkprov.playbook.templating import Scope
from sparkprov.verify.base import StepContext
from sparkprov.verify.testinfra_step import host_spec, parse_junit
from tests.cli import CliRun, sparkprov

DATA = Path(__file__).resolve().parents[1] / "data" / "verify"
FILES = ("testinfra.yml", "testinfra_checks.py")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """The playbook and its test file in a folder of their own (away from this suite's conftest)."""
    folder = tmp_path / "site"
    folder.mkdir()
    for name in FILES:
        shutil.copy(DATA / name, folder / name)
    return folder


def verify(site: Path, tmp_path: Path, *args: str) -> CliRun:
    return sparkprov("verify", site / "testinfra.yml", "--format", "json", *args, home=tmp_path / "home")


def entries(run: CliRun) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in run.doc["verify"]}


def test_passing_tests_pass_the_step(site: Path, tmp_path: Path) -> None:
    run = verify(site, tmp_path, "--tags", "passing")
    assert run.rc == 0, run
    (step,) = run.doc["verify"]
    assert (step["step"], step["status"], step["host"]) == ("testinfra", "pass", "localhost")
    assert step["measured"] == {"tests": 3, "passed": 2, "failed": 0, "errors": 0, "skipped": 1}
    assert step["expected"] == {"failed": "== 0", "errors": "== 0", "tests": ">= 1"}
    details = step["details"]
    assert details["hosts"] == "local://"
    assert [(t["name"], t["status"]) for t in details["tests"]] == [
        ("testinfra_checks::test_passwd_is_a_file[local]", "pass"),
        ("testinfra_checks::test_commands_run_on_the_host[local]", "pass"),
        ("testinfra_checks::test_skipped[local]", "skip"),
    ]
    assert details["tests"][2]["message"] == "not on this host"


def test_a_failing_test_fails_the_run_with_its_message(site: Path, tmp_path: Path) -> None:
    run = verify(site, tmp_path)
    assert run.rc == 1, run
    assert run.doc["exit_code"] == 1
    steps = entries(run)
    assert steps["host checks pass"]["status"] == "pass"
    failing = steps["a check fails"]
    assert failing["status"] == "fail"
    assert failing["measured"] == {"tests": 4, "passed": 2, "failed": 1, "errors": 0, "skipped": 1}
    assert failing["reason"] == (
        "failed: expected == 0, measured 1; failing: testinfra_checks::test_missing_file[local]: "
        "AssertionError: the marker is missing"
    )
    (failed,) = [t for t in failing["details"]["tests"] if t["status"] == "fail"]
    assert "/nonexistent/sparkprov-marker" in failed["message"]


def test_a_missing_file_fails_the_step(site: Path, tmp_path: Path) -> None:
    (site / "testinfra_checks.py").unlink()
    run = verify(site, tmp_path, "--tags", "passing")
    assert run.rc == 1, run
    (step,) = run.doc["verify"]
    assert step["reason"] == f"testinfra file not found: {site / 'testinfra_checks.py'}"


# ---------------------------------------------------------------- SSH hosts


class _Remote(Connection):
    host_name = "spark-02"

    def run(self, argv: list[str], **kwargs: Any) -> Any:
        raise NotImplementedError

    def agent(self, ops: list[dict[str, Any]], **kwargs: Any) -> Any:
        raise NotImplementedError


@pytest.mark.parametrize(
    ("variables", "spec"),
    [
        ({}, "paramiko://spark-02"),
        ({"ansible_host": "10.0.0.5", "ansible_user": "nvidia"}, "paramiko://nvidia@10.0.0.5"),
        (
            {"ansible_host": "fe80::1", "ansible_port": 2222, "ansible_ssh_private_key_file": "/k/id ed"},
            "paramiko://[fe80::1]:2222?ssh_identity_file=/k/id%20ed",
        ),
    ],
)
def test_ssh_hosts_use_the_paramiko_backend(variables: dict[str, Any], spec: str) -> None:
    assert host_spec(StepContext(_Remote(), None, Scope([variables]))) == spec


def test_junit_without_test_cases() -> None:
    assert parse_junit('<testsuites><testsuite name="pytest" tests="0"/></testsuites>') == []


@pytest.mark.fleet
@pytest.mark.root
def test_against_an_ssh_host_of_the_fleet(
    ssh_fleet: Callable[[int], Any], site: Path, tmp_path: Path
) -> None:
    fleet = ssh_fleet(1)
    try:
        (site / "testinfra_checks.py").write_text(
            "def test_runs_on_the_fleet_host(host):\n"
            "    address = host.backend.get_hostname()\n"
            "    assert f'inet {address}/' in host.check_output('ip -o -4 addr show')\n",
            encoding="utf-8",
        )
        inventory = fleet.write_inventory(tmp_path / "hosts.yml", tmp_path / "hosts")
        run = sparkprov(
            "verify",
            site / "testinfra.yml",
            "-i",
            inventory,
            "--format",
            "json",
            "--tags",
            "failing",
            "--accept-new-hostkeys",
            home=tmp_path / "home",
        )
        assert run.rc == 0, run
        (step,) = run.doc["verify"]
        host = fleet.hosts[0]
        assert (
            step["details"]["hosts"] == f"paramiko://root@{host.ip}:22?ssh_identity_file={fleet.client_key}"
        )
        assert step["measured"] == {"tests": 1, "passed": 1, "failed": 0, "errors": 0, "skipped": 0}
    finally:
        fleet.close()

"""Fleet problems found in recorded facts (tests/data/fleet/facts), and how `sparkprov facts` shows them."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from sparkprov.facts.fleet import (
    DUPLICATE_MACHINE_ID,
    MIXED_CUDA,
    MIXED_DRIVER,
    FleetProblem,
    fleet_problems,
)
from sparkprov.facts.host import HostFacts, parse_probe_output
from sparkprov.report.facts import render_facts_json, render_facts_text

RECORDED = Path(__file__).resolve().parents[1] / "data" / "fleet" / "facts"


def recorded(*names: str, unreachable: tuple[str, ...] = ()) -> dict[str, HostFacts | str]:
    """Facts of recorded hosts, in this order, then hosts that could not be probed (their reason)."""
    found: dict[str, HostFacts | str] = {
        name: parse_probe_output((RECORDED / f"{name}.txt").read_text()) for name in names
    }
    found.update({name: f"{name} (root@{name}:22): connection refused (port 22)" for name in unreachable})
    return found


def kinds(problems: list[FleetProblem]) -> list[str]:
    return [p.kind for p in problems]


def test_a_healthy_fleet_has_no_problems() -> None:
    assert fleet_problems(recorded("spark-01", "head")) == []


def test_cloned_images_share_a_machine_id() -> None:
    problems = fleet_problems(recorded("spark-01", "spark-03", "spark-02", "head"))
    assert kinds(problems) == [DUPLICATE_MACHINE_ID, MIXED_DRIVER]
    duplicate = problems[0]
    assert duplicate.hosts == ("spark-01", "spark-02")
    assert "0f3c2a9e8d7b4c1a9e8d7b4c1a9e8d7b" in duplicate.message
    assert "rm /etc/machine-id && systemd-machine-id-setup" in duplicate.fix and "reboot" in duplicate.fix


def test_mixed_driver_with_the_same_cuda() -> None:
    problems = fleet_problems(recorded("spark-03", "spark-01"))
    assert kinds(problems) == [MIXED_DRIVER]
    assert problems[0].hosts == ("spark-03", "spark-01")
    assert problems[0].message == (
        "mixed NVIDIA driver versions across the fleet: 580.95.05 on spark-01; 580.82.09 on spark-03"
    )


def test_mixed_driver_and_cuda() -> None:
    problems = fleet_problems(recorded("spark-01", "spark-02", "spark-03", "spark-04"))
    assert kinds(problems) == [DUPLICATE_MACHINE_ID, MIXED_DRIVER, MIXED_CUDA]
    driver, cuda = problems[1:]
    assert driver.hosts == cuda.hosts == ("spark-01", "spark-02", "spark-03", "spark-04")
    assert driver.message.endswith(
        "580.95.05 on spark-01, spark-02; 580.82.09 on spark-03; 575.64.03 on spark-04"
    )
    assert cuda.message.endswith("13.0 on spark-01, spark-02, spark-03; 12.9 on spark-04")


def test_hosts_without_gpu_or_facts_take_no_part() -> None:
    problems = fleet_problems(recorded("head", "spark-01", "spark-04", unreachable=("spark-09",)))
    assert kinds(problems) == [MIXED_DRIVER, MIXED_CUDA]
    assert all(p.hosts == ("spark-01", "spark-04") for p in problems)
    assert fleet_problems(recorded(unreachable=("spark-09",))) == []


def test_hosts_without_machine_id_are_not_duplicates() -> None:
    facts = recorded("spark-01")["spark-01"]
    assert isinstance(facts, HostFacts)
    unknown = replace(facts, machine_id=None)
    assert fleet_problems({"a": unknown, "b": unknown}) == []


# ---------------------------------------------------------------- rendering


@pytest.fixture
def cloned() -> tuple[dict[str, HostFacts | str], list[FleetProblem]]:
    found = recorded("spark-01", "spark-02", unreachable=("spark-09",))
    return found, fleet_problems(found)


def test_json_lists_problems(cloned: tuple[dict[str, HostFacts | str], list[FleetProblem]]) -> None:
    found, problems = cloned
    document = json.loads(render_facts_json(found, problems))
    assert document["problems"] == [
        {
            "kind": DUPLICATE_MACHINE_ID,
            "hosts": ["spark-01", "spark-02"],
            "message": problems[0].message,
            "fix": problems[0].fix,
        }
    ]
    assert document["exit_code"] == 1  # spark-09 is unreachable; the problems alone would be 0
    healthy = recorded("spark-01", "spark-03")
    assert json.loads(render_facts_json(healthy, []))["problems"] == []


def test_text_has_a_fleet_problems_section(
    cloned: tuple[dict[str, HostFacts | str], list[FleetProblem]],
) -> None:
    found, problems = cloned
    text = render_facts_text(found, problems)
    section = text[text.index("\nfleet problems (1):\n") :]
    assert f"  {DUPLICATE_MACHINE_ID}: 2 hosts share machine-id" in section
    assert "    fix: rm /etc/machine-id && systemd-machine-id-setup" in section
    assert render_facts_text(recorded("spark-01", "spark-03"), []).endswith("\nfleet problems: none")
    assert "fleet problems" not in render_facts_text(recorded("spark-01"), [])  # one host is no fleet

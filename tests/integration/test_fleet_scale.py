"""Fifty sshd hosts: converge, then a re-run that changes nothing and costs every host the same small
number of round trips. Wall times are reported, not asserted (bench/fleet_scale.py measures them)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cli import CliRun
from tests.infra.fleet import Fleet
from tests.integration.test_fleet import CONVERGE_TASKS, FleetSite, assert_rc, changed

pytestmark = [pytest.mark.fleet, pytest.mark.slow, pytest.mark.root]

HOSTS = 50


@pytest.fixture
def big_site(ssh_fleet: Callable[[int], Fleet], tmp_path: Path) -> Iterator[FleetSite]:
    fleet = ssh_fleet(HOSTS)
    try:
        yield FleetSite.create(fleet, tmp_path)
    finally:
        fleet.close()


def timed(site: FleetSite, command: str) -> tuple[CliRun, float]:
    started = time.monotonic()
    result = site.run(command, "converge.yml", "--forks", str(HOSTS))
    return result, time.monotonic() - started


def test_fifty_hosts_converge_and_rerun_with_constant_round_trips(
    big_site: FleetSite, capsys: pytest.CaptureFixture[str]
) -> None:
    first, converge_s = timed(big_site, "apply")
    assert_rc(first, 0)
    assert changed(first) == dict.fromkeys(big_site.names, CONVERGE_TASKS)
    again, rerun_s = timed(big_site, "apply")
    assert_rc(again, 0)
    assert changed(again) == dict.fromkeys(big_site.names, 0)
    trips: dict[str, int] = again.doc["round_trips"]
    with capsys.disabled():
        print(
            f"\n{HOSTS} hosts, {CONVERGE_TASKS} tasks, --forks {HOSTS}: converge {converge_s:.2f} s, "
            f"converged re-run {rerun_s:.2f} s, round trips per host on the re-run "
            f"{sorted(set(trips.values()))}"
        )
    assert sorted(trips) == sorted(big_site.names)
    assert len(set(trips.values())) == 1, f"hosts differ: {trips}"
    assert set(trips.values()) <= {1, 2, 3}

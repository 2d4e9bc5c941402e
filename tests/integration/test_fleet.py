"""A fleet of real sshd hosts (network namespaces) driven through the command line, as a user would:
converge and re-run, round trips that do not grow with the playbook, hosts that are down or die
mid-run, host key policy, serial/max_fail_percentage, any_errors_fatal, sudo as a normal SSH user,
an Ansible INI inventory, and `sparkprov facts` finding the hosts' shared machine-id."""

from __future__ import annotations

import os
import re
import string
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from sparkprov.connection import agent
from sparkprov.connection.ssh import ENV_KNOWN_HOSTS
from sparkprov.facts.fleet import DUPLICATE_MACHINE_ID
from tests.cli import CliRun, sparkprov
from tests.infra.fleet import Fleet
from tests.infra.process import run, wait_until
from tests.infra.slots import Slot
from tests.integration.conftest import SudoUser

pytestmark = [pytest.mark.fleet, pytest.mark.root]

DATA = Path(__file__).resolve().parents[1] / "data" / "fleet"
CONVERGE_TASKS = 5


# ---------------------------------------------------------------- the fleet as a test sees it


@dataclass(frozen=True)
class FleetSite:
    """A fleet with a YAML inventory whose hosts write under `<dir>/hosts/<name>` (`base_dir`), and
    `sparkprov` run against it with the fleet's known_hosts and a HOME of its own (no ~/.ssh)."""

    fleet: Fleet
    dir: Path

    @classmethod
    def create(cls, fleet: Fleet, directory: Path) -> FleetSite:
        site = cls(fleet, directory)
        # The hosts share this machine's filesystem; on a real fleet no two hosts create the same
        # directory. (Two hosts that do, at once, may fail: see test_mkdir_survives_a_concurrent_creator.)
        (directory / "hosts").mkdir()
        fleet.write_inventory(site.inventory, directory / "hosts")
        return site

    @property
    def inventory(self) -> Path:
        return self.dir / "hosts.yml"

    @property
    def names(self) -> list[str]:
        return [host.name for host in self.fleet.hosts]

    def base(self, host: str) -> Path:
        return self.dir / "hosts" / host

    def sparkprov(self, *args: str | Path, known_hosts: Path | None = None) -> CliRun:
        known = known_hosts or self.fleet.known_hosts_file
        return sparkprov(*args, home=self.dir / "home", extra_env={ENV_KNOWN_HOSTS: str(known)}, timeout=300)

    def run(
        self,
        command: str,
        playbook: str,
        *args: str,
        inventory: Path | None = None,
        known_hosts: Path | None = None,
    ) -> CliRun:
        """`sparkprov COMMAND tests/data/fleet/PLAYBOOK -i INVENTORY --format json ARGS`."""
        inventory = inventory or self.inventory
        argv = (command, DATA / playbook, "-i", inventory, "--format", "json", *args)
        return self.sparkprov(*argv, known_hosts=known_hosts)


def changed(result: CliRun) -> dict[str, int]:
    return {host: stats["changed"] for host, stats in result.doc["stats"].items()}


def messages(result: CliRun, host: str) -> str:
    """Every message the run reported for `host`, one per line."""
    return "\n".join(str(entry.get("msg", "")) for _, entry in result.results(host))


def recap_line(result: CliRun, host: str) -> str:
    """The host's PLAY RECAP line (on stderr with --format json)."""
    found = re.search(rf"^{re.escape(host)}\s+:.*$", result.stderr, re.MULTILINE)
    assert found, f"no recap line for {host}:\n{result!r}"
    return found.group(0)


def assert_rc(result: CliRun, expected: int) -> None:
    assert result.rc == expected, f"expected exit {expected}:\n{result!r}"
    assert result.doc["exit_code"] == expected


def converged_round_trips(site: FleetSite, playbook: str) -> dict[str, int]:
    """Apply twice; the second run must change nothing. Its round trips per host."""
    first = site.run("apply", playbook)
    assert_rc(first, 0)
    again = site.run("apply", playbook)
    assert_rc(again, 0)
    assert set(changed(again).values()) == {0}, f"the re-run changed something:\n{again!r}"
    trips: dict[str, int] = again.doc["round_trips"]
    assert sorted(trips) == sorted(site.names)
    return trips


def openssh_fingerprint(public_key: str, scratch: Path) -> str:
    """`SHA256:...` of a public key, as ssh-keygen prints it."""
    pub = scratch / "key.pub"
    pub.write_text(public_key + "\n")
    return run(["ssh-keygen", "-l", "-f", str(pub)]).stdout.split()[1]


@pytest.fixture(scope="module")
def fleet(ssh_fleet: Callable[[int], Fleet]) -> Iterator[Fleet]:
    """h1..h3 for the tests that leave the hosts running (each test writes under its own tmp_path)."""
    fleet = ssh_fleet(3)
    yield fleet
    fleet.close()


@pytest.fixture
def site(fleet: Fleet, tmp_path: Path) -> FleetSite:
    return FleetSite.create(fleet, tmp_path)


@pytest.fixture
def fresh_site(ssh_fleet: Callable[[int], Fleet], tmp_path: Path) -> Iterator[FleetSite]:
    """Three hosts of its own, for a test that kills one."""
    fleet = ssh_fleet(3)
    try:
        yield FleetSite.create(fleet, tmp_path)
    finally:
        fleet.close()


# ---------------------------------------------------------------- converge


def test_converge_then_rerun_changes_nothing_and_plan_is_empty(site: FleetSite) -> None:
    first = site.run("apply", "converge.yml")
    assert_rc(first, 0)
    assert changed(first) == dict.fromkeys(site.names, CONVERGE_TASKS)
    for host in site.names:
        config = (site.base(host) / "etc" / "app.conf").read_text()
        assert f"inventory_name = {host}\nhostname = {host}\n" in config  # facts of the right host
        assert (site.base(host) / "app.conf").resolve() == site.base(host) / "etc" / "app.conf"
    again = site.run("apply", "converge.yml")
    assert_rc(again, 0)
    assert changed(again) == dict.fromkeys(site.names, 0)
    plan = site.run("plan", "converge.yml")
    assert_rc(plan, 0)
    assert plan.doc["plan"] == []


def test_converged_round_trips_do_not_grow_with_the_playbook(
    site: FleetSite, capsys: pytest.CaptureFixture[str]
) -> None:
    five = converged_round_trips(site, "converge.yml")
    fifty = converged_round_trips(site, "converge_50.yml")
    with capsys.disabled():
        print(f"\nround trips per host, converged re-run: 5 tasks {five}, 50 tasks {fifty}")
    assert len(set(five.values())) == 1, f"hosts differ: {five}"
    assert five == fifty, f"5 tasks: {five}, 50 tasks: {fifty}"
    # The play's one batched file-state prefetch, and the facts probe its template reads from.
    assert set(five.values()) <= {1, 2, 3}


# ---------------------------------------------------------------- hosts that are down or go away


def test_host_down_before_the_run(fresh_site: FleetSite) -> None:
    site = fresh_site
    site.fleet.kill("h2")
    result = site.run("apply", "converge.yml")
    assert_rc(result, 1)
    assert result.stats("h2")["unreachable"] == 1
    assert "unreachable=1" in recap_line(result, "h2")
    assert "connection refused" in messages(result, "h2")
    assert changed(result) == {"h1": CONVERGE_TASKS, "h2": 0, "h3": CONVERGE_TASKS}
    assert not site.base("h2").exists()
    facts = site.sparkprov("facts", "-i", site.inventory, "--format", "json")
    assert facts.rc == 1 and facts.doc["hosts"]["h2"]["unreachable"] is True, repr(facts)


def test_host_dies_mid_run(fresh_site: FleetSite) -> None:
    site = fresh_site

    def kill_h2_once_it_started() -> None:
        started = site.base("h2") / "started"
        wait_until(started.exists, what=f"{started} (h2 in the long step)", timeout=60, interval=0.02)
        site.fleet.kill("h2")

    with ThreadPoolExecutor(1) as pool:
        killer = pool.submit(kill_h2_once_it_started)
        result = site.run("apply", "dies_mid_run.yml")
        killer.result()
    assert_rc(result, 1)
    assert result.stats("h2")["unreachable"] == 1
    assert "connection was lost" in result.result("a long step", "h2")["msg"]
    assert not (site.base("h2") / "done").exists()
    for host in ("h1", "h3"):
        assert result.stats(host)["failures"] == result.stats(host)["unreachable"] == 0
        assert (site.base(host) / "done").read_text() == f"{host} done\n"


# ---------------------------------------------------------------- host keys


def test_changed_host_key_fails_that_host_only(site: FleetSite, tmp_path: Path) -> None:
    h1, h2, h3 = site.fleet.hosts
    known = tmp_path / "known_hosts"
    known.write_text(f"{h1.ip} {h1.host_key_pub}\n{h2.ip} {h1.host_key_pub}\n{h3.ip} {h3.host_key_pub}\n")
    result = site.run("apply", "converge.yml", "--accept-new-hostkeys", known_hosts=known)
    assert_rc(result, 1)
    message = messages(result, "h2")
    assert "HOST KEY CHANGED" in message
    assert openssh_fingerprint(h2.host_key_pub, tmp_path) in message  # what h2 presented
    assert result.stats("h2")["unreachable"] == 1
    assert changed(result) == {"h1": CONVERGE_TASKS, "h2": 0, "h3": CONVERGE_TASKS}
    assert known.read_text().count(h1.host_key_pub) == 2  # never replaced


def test_unknown_host_key_needs_accept_new(site: FleetSite, tmp_path: Path) -> None:
    h1, h2, h3 = site.fleet.hosts
    known = tmp_path / "known_hosts"
    known.write_text(f"{h1.ip} {h1.host_key_pub}\n{h2.ip} {h2.host_key_pub}\n")
    refused = site.run("apply", "converge.yml", known_hosts=known)
    assert_rc(refused, 1)
    message = messages(refused, "h3")
    assert "not in known_hosts" in message and "--accept-new-hostkeys" in message
    assert openssh_fingerprint(h3.host_key_pub, tmp_path) in message
    assert changed(refused) == {"h1": CONVERGE_TASKS, "h2": CONVERGE_TASKS, "h3": 0}
    accepted = site.run("apply", "converge.yml", "--accept-new-hostkeys", known_hosts=known)
    assert_rc(accepted, 0)
    assert changed(accepted) == {"h1": 0, "h2": 0, "h3": CONVERGE_TASKS}
    found = run(["ssh-keygen", "-F", h3.ip, "-f", str(known)], check=False)
    assert found.returncode == 0 and h3.host_key_pub.split()[1] in found.stdout  # OpenSSH reads it
    assert_rc(site.run("plan", "converge.yml", known_hosts=known), 0)  # known now, without the flag


# ---------------------------------------------------------------- failures across hosts


def test_serial_batches_stop_at_max_fail_percentage(site: FleetSite) -> None:
    result = site.run("apply", "max_fail.yml")
    assert_rc(result, 1)
    assert (site.base("h1") / "before").exists() and not (site.base("h1") / "after").exists()
    for later in ("h2", "h3"):
        assert not site.base(later).exists(), f"{later}'s batch ran"
        assert result.ran(later) == []
    assert result.stats("h1")["failures"] == 1


def test_any_errors_fatal_stops_every_host(site: FleetSite) -> None:
    result = site.run("apply", "any_errors_fatal.yml")
    assert_rc(result, 1)
    assert result.result("h1 fails, the others finish", "h1")["failed"] is True
    for host in ("h2", "h3"):
        assert result.result("h1 fails, the others finish", host)["failed"] is False
    assert not any((site.base(host) / "after").exists() for host in site.names)
    assert all("after marker" not in result.ran(host) for host in site.names)


# ---------------------------------------------------------------- become as a normal SSH user


@pytest.fixture
def ssh_sudo_user(sudo_user: SudoUser, infra_slot: Slot) -> Iterator[str]:
    """The suite's NOPASSWD sudo user, able to log in to the fleet with its key: sshd without PAM
    refuses locked accounts (useradd's default '!'), and reads the fleet's authorized_keys as the user,
    through the slot directory (0700). Both are put back afterwards."""
    password = run(["getent", "shadow", sudo_user.name]).stdout.split(":")[1]
    run(["usermod", "-p", "*", sudo_user.name])
    mode = infra_slot.dir.stat().st_mode & 0o7777
    infra_slot.dir.chmod(mode | 0o011)
    try:
        yield sudo_user.name
    finally:
        infra_slot.dir.chmod(mode)
        run(["usermod", "-p", password, sudo_user.name], check=False)


def test_become_root_through_sudo_as_a_normal_ssh_user(site: FleetSite, ssh_sudo_user: str) -> None:
    document = yaml.safe_load(site.inventory.read_text())
    for host_vars in document["all"]["hosts"].values():
        host_vars["ansible_user"] = ssh_sudo_user
    inventory = site.dir / "sudoer.yml"
    inventory.write_text(yaml.safe_dump(document))
    first = site.run("apply", "become.yml", inventory=inventory)
    assert_rc(first, 0)
    assert changed(first) == dict.fromkeys(site.names, 2)
    for host in site.names:
        token = site.base(host) / "private" / "token"
        info = token.stat()
        assert (info.st_uid, info.st_mode & 0o777) == (0, 0o600)
        assert token.read_text() == f"token for {host}\n"
    assert_rc(site.run("plan", "become.yml", inventory=inventory), 0)


# ---------------------------------------------------------------- inventories and facts


def test_ansible_ini_inventory_is_used_unchanged(site: FleetSite) -> None:
    addresses = {host.name: host.ip for host in site.fleet.hosts}
    text = string.Template((DATA / "hosts.ini").read_text()).substitute(
        addresses, key=site.fleet.client_key, base=site.dir / "hosts"
    )
    inventory = site.dir / "hosts.ini"
    inventory.write_text(text)
    result = site.run("apply", "converge.yml", inventory=inventory)
    assert_rc(result, 0)
    sparks = ["spark-01", "spark-02", "spark-03"]
    assert changed(result) == dict.fromkeys(sparks, CONVERGE_TASKS)
    for spark, host in zip(sparks, site.names):
        config = (site.base(spark) / "etc" / "app.conf").read_text()
        assert f"inventory_name = {spark}\nhostname = {host}\ngroup = sparks\n" in config
    assert_rc(site.run("plan", "converge.yml", inventory=inventory), 0)


def test_facts_flag_the_shared_machine_id(site: FleetSite) -> None:
    machine_id = Path("/etc/machine-id")
    if not machine_id.is_file() or not machine_id.read_text().strip():
        pytest.skip("this machine has no /etc/machine-id for the hosts to share")
    result = site.sparkprov("facts", "-i", site.inventory, "--format", "json")
    assert_rc(result, 0)  # a fleet problem is reported, not a failure
    hosts = result.doc["hosts"]
    assert {name: hosts[name]["hostname"] for name in site.names} == {name: name for name in site.names}
    problems = result.doc["problems"]
    assert [p["kind"] for p in problems] == [DUPLICATE_MACHINE_ID]
    assert problems[0]["hosts"] == site.names
    assert machine_id.read_text().strip() in problems[0]["message"]
    assert "systemd-machine-id-setup" in problems[0]["fix"]
    text = site.sparkprov("facts", "-i", site.inventory, "--forks", "1")
    assert text.rc == 0, repr(text)
    assert f"fleet problems (1):\n  {DUPLICATE_MACHINE_ID}: 3 hosts share machine-id" in text.stdout


# ---------------------------------------------------------------- found on the fleet


def test_mkdir_survives_a_concurrent_creator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seen on the fleet: become.yml failed on h1 with "mkdir <base>/hosts/h1/private: File exists"
    while h2 and h3 created `<base>/hosts` at the same moment. Made deterministic here: another
    host creates the shared parent just before this one's mkdir of it."""
    shared = tmp_path / "hosts"
    real_mkdir = os.mkdir

    def mkdir_after_another_host(path: str, *args: int) -> None:
        if Path(path) == shared and not shared.exists():
            real_mkdir(path)  # the other host wins the race
        real_mkdir(path, *args)

    monkeypatch.setattr(agent.os, "mkdir", mkdir_after_another_host)
    answer = agent.run_op({"op": "mkdir", "path": str(shared / "h1" / "private"), "mode": 0o700})
    assert "error" not in answer, answer
    assert (shared / "h1" / "private").is_dir()

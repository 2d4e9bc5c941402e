"""Hostile names and values (spaces, quotes, `$(...)`, backticks, `;`, newlines, leading dashes) go
through file, copy, template, lineinfile, command (argv and cmd) and shell (`| quote`) untouched:
the exact files exist with the exact contents, and no shell ever ran what the values say.

The same playbook and assertions run over the local connection and over SSH to one namespace host
(which shares this machine's filesystem, so the files it writes are checked on disk here too)."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from sparkprov.connection.ssh import ENV_KNOWN_HOSTS
from tests.cli import LOCALHOST, apply_twice, run_playbook
from tests.infra.fleet import Fleet

NAMES = [
    "with space",
    "single'quote",
    'double"quote',
    "$(touch pwned)",
    "`touch pwned`",
    "semi; touch pwned",
    "new\nline",
    "-rf",
    "--help",
]
# Balanced for shlex, so the command module can split them: it must not hand them to a shell.
UNQUOTED = ["$(touch pwned)", "`touch pwned`", "a; touch pwned", "a && touch pwned", "a | touch pwned > x"]
EVIL = "$(touch pwned) `touch pwned`; 'single' \"double\" && touch pwned\n-rf"

# Directory the playbook writes each name into -> the bytes expected in that file.
EXPECTED: dict[str, Callable[[str], bytes]] = {
    "file": lambda name: b"",
    "copy": lambda name: name.encode(),
    "template": lambda name: f"value={name}\n".encode(),
    "lineinfile": lambda name: name.replace("\n", " ").encode() + b"\n",
    "argv": lambda name: b"",
    "cmd": lambda name: b"",
    "shell": lambda name: name.encode(),
}


@dataclass(frozen=True)
class Target:
    """Where the playbook's `localhost` play runs: `inventory` None is the implicit local host; an SSH
    target is an inventory whose `localhost` is a fleet host reached over SSH. `remote_dirs` are the
    remote user's home and login directory, where a stray `touch pwned` would land."""

    inventory: Path | None = None
    remote_dirs: tuple[Path, ...] = field(default=())


@pytest.fixture(scope="module")
def one_host(ssh_fleet: Callable[[int], Fleet]) -> Iterator[Fleet]:
    fleet = ssh_fleet(1)
    yield fleet
    fleet.close()


@pytest.fixture(
    params=["local", pytest.param("ssh", marks=[pytest.mark.fleet, pytest.mark.root])],
)
def target(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Target:
    if request.param == "local":
        return Target()
    fleet: Fleet = request.getfixturevalue("one_host")
    monkeypatch.setenv(ENV_KNOWN_HOSTS, str(fleet.known_hosts_file))
    # The fleet's own inventory, with its one host renamed to the play's `localhost` and told to use
    # SSH (a host called localhost would otherwise default to the local connection).
    inventory = fleet.write_inventory(tmp_path / "hosts.yml", tmp_path / "unused")
    hosts = yaml.safe_load(inventory.read_text())["all"]["hosts"]
    (only,) = hosts.values()
    only.pop("base_dir")
    hosts = {LOCALHOST: {**only, "ansible_connection": "ssh"}}
    inventory.write_text(yaml.safe_dump({"all": {"hosts": hosts}}, sort_keys=False))
    home, login = fleet.ssh(fleet.hosts[0], 'printf "%s\\n" "$HOME" "$PWD"').stdout.splitlines()
    return Target(inventory, (Path(home), Path(login)))


def test_hostile_names_and_values_are_never_interpreted(target: Target, tmp_path: Path) -> None:
    base, cwd = tmp_path / "base", tmp_path / "cwd"
    base.mkdir()
    cwd.mkdir()
    extra = {"names": NAMES, "unquoted": UNQUOTED, "evil": EVIL}
    strays_before = {d / "pwned" for d in target.remote_dirs if (d / "pwned").exists()}

    run = apply_twice("shell_safety.yml", base, extra, cwd=cwd, inventory=target.inventory)
    run_playbook("plan", "shell_safety.yml", base, extra, cwd=cwd, expect_rc=0, inventory=target.inventory)
    if target.inventory is not None:  # the play really went over SSH
        assert run.doc["round_trips"][LOCALHOST] > 0, run.doc.get("round_trips")

    for directory, content in EXPECTED.items():
        found = {p.name: p.read_bytes() for p in (base / directory).iterdir()}
        expected = {name: content(name) for name in NAMES}
        if directory == "copy":
            expected["extra-var.txt"] = EVIL.encode()
        assert found == expected, directory
    echoed = [item["stdout"] for item in run.result("command cmd without a shell")["results"]]
    assert echoed == [" ".join(shlex.split(value)) for value in UNQUOTED]
    assert not [p for root in (base, cwd) for p in root.rglob("pwned")]
    assert not (Path.cwd() / "pwned").exists()
    assert not {d / "pwned" for d in target.remote_dirs if (d / "pwned").exists()} - strays_before

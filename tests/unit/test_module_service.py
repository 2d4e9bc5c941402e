"""service against tests/fakes/systemctl (this machine has no running systemd), and the real error paths.

The fake speaks systemctl's command line and prints systemd's own messages; it keeps its units in a
JSON file and records every call, so the tests can assert which commands ran and in which order.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sparkprov.connection.local import LocalConnection
from sparkprov.modules.base import ModuleFailure, TaskContext
from sparkprov.modules.service import PROPERTIES, ServiceModule
from sparkprov.playbook.templating import Scope

MODULE = ServiceModule()
FAKES = Path(__file__).resolve().parents[1] / "fakes"
SHOW = ["show", "ollama", "--property=" + ",".join(PROPERTIES)]


@dataclass
class FakeSystemd:
    state_file: Path

    def add(self, name: str = "ollama.service", **props: Any) -> None:
        unit = {
            "LoadState": "loaded",
            "ActiveState": "inactive",
            "SubState": "dead",
            "UnitFileState": "disabled",
            "NeedDaemonReload": "no",
            "FragmentPath": f"/usr/lib/systemd/system/{name}",
            **props,
        }
        state = self.state()
        state["units"][name] = unit
        self.state_file.write_text(json.dumps(state))

    def state(self) -> dict[str, Any]:
        return json.loads(self.state_file.read_text())

    def unit(self, name: str = "ollama.service") -> dict[str, Any]:
        return self.state()["units"][name]

    def calls(self) -> list[list[str]]:
        return self.state()["calls"]


@pytest.fixture
def ctx(tmp_path: Path) -> TaskContext:
    return TaskContext(conn=LocalConnection(), become=None, scope=Scope([]), search_dirs=(tmp_path,))


@pytest.fixture
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSystemd:
    state_file = tmp_path / "systemd.json"
    state_file.write_text(json.dumps({"units": {}, "calls": []}))
    # The interpreter's own directory next: `env python3` then skips slow shims (pyenv) for the fake.
    path = [str(FAKES), os.path.dirname(sys.executable), os.environ.get("PATH", "")]
    monkeypatch.setenv("PATH", os.pathsep.join(path))
    monkeypatch.setenv("FAKE_SYSTEMCTL_STATE", str(state_file))
    return FakeSystemd(state_file)


def converge(ctx: TaskContext, systemd: FakeSystemd, args: dict[str, Any]) -> tuple[str, list[list[str]]]:
    """check (read-only), apply, check again (converged); return the summary and what apply ran."""
    change = MODULE.check(args, ctx)
    assert change is not None
    assert systemd.calls() == [SHOW], "check must only query"
    MODULE.apply(change, ctx)
    ran = systemd.calls()[1:]
    assert ran == [argv[1:] for argv in change.payload]
    assert MODULE.check(args, ctx) is None, "a second check must find nothing to do"
    return change.summary, ran


@pytest.mark.parametrize(
    ("props", "args", "summary", "after"),
    [
        ({}, {"state": "started"}, "start ollama", {"ActiveState": "active"}),
        ({"ActiveState": "failed"}, {"state": "started"}, "start ollama", {"ActiveState": "active"}),
        ({"ActiveState": "active"}, {"state": "stopped"}, "stop ollama", {"ActiveState": "inactive"}),
        ({"ActiveState": "deactivating"}, {"state": "stopped"}, "stop ollama", {"ActiveState": "inactive"}),
        ({}, {"enabled": True}, "enable ollama", {"UnitFileState": "enabled"}),
        ({"UnitFileState": "enabled"}, {"enabled": False}, "disable ollama", {"UnitFileState": "disabled"}),
        ({}, {"masked": True}, "mask ollama", {"LoadState": "masked"}),
        ({}, {"daemon_reload": True, "NeedDaemonReload": "yes"}, "daemon-reload", {"NeedDaemonReload": "no"}),
    ],
)
def test_converges(
    ctx: TaskContext,
    systemd: FakeSystemd,
    props: dict[str, str],
    args: dict[str, Any],
    summary: str,
    after: dict[str, str],
) -> None:
    need_reload = args.pop("NeedDaemonReload", "no")
    systemd.add(**props, NeedDaemonReload=need_reload)
    assert converge(ctx, systemd, {"name": "ollama", **args})[0] == summary
    assert after.items() <= systemd.unit().items()


@pytest.mark.parametrize(
    ("props", "args"),
    [
        ({"ActiveState": "active"}, {"state": "started"}),
        ({"ActiveState": "activating"}, {"state": "started"}),
        ({}, {"state": "stopped"}),
        ({"UnitFileState": "enabled"}, {"enabled": True}),
        ({}, {"enabled": False}),
        ({"UnitFileState": "static"}, {"enabled": True}),  # Ansible: static counts as enabled
        ({"UnitFileState": "indirect"}, {"enabled": False}),  # ... and indirect as disabled
        ({"LoadState": "masked", "UnitFileState": "masked"}, {"masked": True}),
        ({}, {"masked": False}),
        ({}, {"daemon_reload": True}),  # nothing changed on disk, nothing else to do
    ],
)
def test_already_converged(
    ctx: TaskContext, systemd: FakeSystemd, props: dict[str, str], args: dict[str, Any]
) -> None:
    systemd.add(**props)
    assert MODULE.check({"name": "ollama", **args}, ctx) is None
    assert systemd.calls() == [SHOW]


@pytest.mark.parametrize(
    ("active", "state", "summary"),
    [
        ("active", "restarted", "restart ollama"),
        ("active", "reloaded", "reload ollama"),
        ("inactive", "restarted", "start ollama"),  # a stopped unit is started, as Ansible does
        ("inactive", "reloaded", "start ollama"),
    ],
)
def test_restarted_and_reloaded_always_act(
    ctx: TaskContext, systemd: FakeSystemd, active: str, state: str, summary: str
) -> None:
    systemd.add(ActiveState=active)
    args = {"name": "ollama", "state": state}
    change = MODULE.check(args, ctx)
    assert change is not None
    assert change.summary == summary
    assert change.data["state"] == "started"
    MODULE.apply(change, ctx)
    assert systemd.unit()["ActiveState"] == "active"
    again = MODULE.check(args, ctx)
    assert again is not None
    assert again.summary == f"{state[:-2]} ollama"


def test_order_of_commands_and_result(ctx: TaskContext, systemd: FakeSystemd) -> None:
    systemd.add(LoadState="masked", UnitFileState="masked", NeedDaemonReload="yes")
    unmasked = {"LoadState": "loaded", "UnitFileState": "disabled"}  # what the fake restores on unmask
    systemd.add(**{**systemd.unit(), "Unmasked": unmasked})
    args = {"name": "ollama", "state": "started", "enabled": True, "masked": False, "daemon_reload": True}
    change = MODULE.check(args, ctx)
    assert change is not None
    assert change.summary == "daemon-reload, unmask ollama, enable ollama, start ollama"
    assert change.payload == [
        ["systemctl", "daemon-reload"],
        ["systemctl", "unmask", "ollama"],
        ["systemctl", "enable", "ollama"],
        ["systemctl", "start", "ollama"],
    ]
    outcome = MODULE.apply(change, ctx)
    assert outcome.changed
    assert outcome.msg == change.summary
    assert outcome.data["name"] == "ollama"
    assert outcome.data["state"] == "started"
    assert outcome.data["enabled"] is True
    assert outcome.data["status"]["LoadState"] == "masked"  # as found, like Ansible's `status`
    assert MODULE.check(args, ctx) is None


def test_daemon_reload_comes_with_any_other_change(ctx: TaskContext, systemd: FakeSystemd) -> None:
    systemd.add()
    change = MODULE.check({"name": "ollama", "state": "started", "daemon_reload": True}, ctx)
    assert change is not None
    assert change.summary == "daemon-reload, start ollama"


def test_unchanged_reports_status(ctx: TaskContext, systemd: FakeSystemd) -> None:
    systemd.add(ActiveState="active", SubState="running", UnitFileState="enabled")
    outcome = MODULE.unchanged({"name": "ollama", "state": "started", "enabled": True}, ctx)
    assert not outcome.changed
    assert outcome.data == {
        "name": "ollama",
        "state": "started",
        "enabled": True,
        "status": {
            "LoadState": "loaded",
            "ActiveState": "active",
            "SubState": "running",
            "UnitFileState": "enabled",
            "NeedDaemonReload": "no",
        },
    }


@pytest.mark.parametrize("args", [{"state": "started"}, {"enabled": True}])
def test_missing_unit(ctx: TaskContext, systemd: FakeSystemd, args: dict[str, Any]) -> None:
    with pytest.raises(ModuleFailure, match=r"unit nosuch not found: check the name .*list-unit-files"):
        MODULE.check({"name": "nosuch", **args}, ctx)


def test_missing_unit_can_be_masked(ctx: TaskContext, systemd: FakeSystemd) -> None:
    change = MODULE.check({"name": "nosuch", "masked": True}, ctx)
    assert change is not None
    assert change.summary == "mask nosuch"
    MODULE.apply(change, ctx)
    assert MODULE.check({"name": "nosuch", "masked": True}, ctx) is None


@pytest.mark.parametrize(
    ("file_state", "enabled"), [("static", False), ("indirect", True), ("generated", False)]
)
def test_unit_files_that_cannot_be_toggled(
    ctx: TaskContext, systemd: FakeSystemd, file_state: str, enabled: bool
) -> None:
    systemd.add(UnitFileState=file_state)
    with pytest.raises(ModuleFailure, match=f"unit ollama is {file_state} and cannot be"):
        MODULE.check({"name": "ollama", "enabled": enabled}, ctx)


def test_failed_start_shows_systemd_error_and_journal_hint(ctx: TaskContext, systemd: FakeSystemd) -> None:
    systemd.add(StartFails=True)
    change = MODULE.check({"name": "ollama", "state": "started"}, ctx)
    assert change is not None
    with pytest.raises(ModuleFailure) as failure:
        MODULE.apply(change, ctx)
    message = str(failure.value)
    assert message.startswith(
        "Unable to start service ollama: Job for ollama.service failed because the control process exited"
    )
    assert "`journalctl -u ollama`" in message
    assert failure.value.data["rc"] == 1


def test_mask_of_unit_file_in_etc_fails_like_systemd(ctx: TaskContext, systemd: FakeSystemd) -> None:
    systemd.add(FragmentPath="/etc/systemd/system/ollama.service")
    change = MODULE.check({"name": "ollama", "masked": True}, ctx)
    assert change is not None
    with pytest.raises(
        ModuleFailure, match=r"Unable to mask service ollama: Failed to mask unit: File .* exists"
    ):
        MODULE.apply(change, ctx)


def test_glob_names_are_refused(ctx: TaskContext, systemd: FakeSystemd) -> None:
    with pytest.raises(ModuleFailure, match="without glob patterns"):
        MODULE.check({"name": "ollama*", "state": "started"}, ctx)


def test_fake_show_speaks_systemctl(systemd: FakeSystemd, ctx: TaskContext) -> None:
    result = ctx.conn.run(["systemctl", "show", "nosuch", "--property=UnitFileState,LoadState"])
    assert (result.rc, result.stdout) == (0, "LoadState=not-found\nUnitFileState=\n")
    result = ctx.conn.run(["systemctl", "start", "nosuch"])
    assert (result.rc, result.stderr) == (
        5,
        "Failed to start nosuch.service: Unit nosuch.service not found.\n",
    )


# Hosts without systemd: containers, chroots, this CI machine.


def test_systemctl_missing(ctx: TaskContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(
        ModuleFailure, match=r"manages systemd units, but systemd is not running on localhost"
    ) as exc:
        MODULE.check({"name": "ollama", "state": "started"}, ctx)
    assert "systemctl is not installed" in str(exc.value)


NOT_BOOTED = "System has not been booted with systemd as init system (PID 1). Can't operate."
BUS_DOWN = "Failed to connect to bus: Host is down"


def test_not_booted_with_systemd(ctx: TaskContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "systemctl"
    script.write_text(f"#!/bin/sh\necho \"{NOT_BOOTED}\" >&2\necho '{BUS_DOWN}' >&2\nexit 1\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(ModuleFailure, match="systemd is not running on localhost") as exc:
        MODULE.check({"name": "ollama", "state": "started"}, ctx)
    assert NOT_BOOTED in str(exc.value)
    assert "inside containers" in str(exc.value)


@pytest.mark.skipif(
    shutil.which("systemctl") is None or os.path.isdir("/run/systemd/system"),
    reason="needs a real systemctl on a host not booted with systemd",
)
def test_real_systemctl_without_systemd(ctx: TaskContext) -> None:
    with pytest.raises(ModuleFailure, match="systemd is not running on localhost"):
        MODULE.check({"name": "ollama", "state": "started"}, ctx)

"""service: a systemd unit started/stopped/restarted/reloaded, enabled, masked, as Ansible's systemd.

`check` asks systemd once (`systemctl show`) and plans the ordered `systemctl` commands; `apply` runs
exactly those. Decisions mirror ansible.builtin.systemd_service: which active states count as
running, that restarted/reloaded start a stopped unit, and which unit-file states count as enabled.
"""

from __future__ import annotations

from typing import Any

from sparkprov.connection.base import CommandResult, CommandTimeout
from sparkprov.modules.base import Change, Module, ModuleFailure, Outcome, TaskContext

PROPERTIES = ("LoadState", "ActiveState", "SubState", "UnitFileState", "NeedDaemonReload")
QUERY_TIMEOUT_S = 30.0
ACTION_TIMEOUT_S = 300.0  # systemd's own start/stop job timeouts are shorter; this only catches hangs

_RUNNING = frozenset({"active", "activating"})
# Unit-file states whose `systemctl is-enabled` exits 0; Ansible counts those as enabled, except
# `indirect` and `alias`, which it treats as disabled.
_ENABLED = frozenset({"enabled", "enabled-runtime", "static", "generated", "transient"})
# Unit-file states that `systemctl enable/disable` cannot change: acting would report a change on
# every run (Ansible's behaviour) without ever converging.
_FIXED = {
    "static": "it has no [Install] section; use masked: true to keep it from starting",
    "indirect": "it is enabled through other units (Also=) or as a template instance",
    "alias": "it is an alias of another unit; enable or disable that unit instead",
    "generated": "it was generated at boot (from /etc/fstab or an init script); change it at its source",
    "transient": "it is transient (created at runtime) and has no unit file",
}
_NO_SYSTEMD = (
    "the service module manages systemd units, but systemd is not running on {host} ({why}); "
    "this is usual inside containers and chroots. Run this task on a host booted with systemd, "
    "or skip it there with `when: ansible_service_mgr == 'systemd'`"
)


def _unit(args: dict[str, Any]) -> str:
    name: str = args["name"]
    if name.startswith("-") or any(c in name for c in "*?["):
        raise ModuleFailure(f"service name '{name}' is not a unit name: give one unit, without glob patterns")
    return name


def _journal_hint(name: str) -> str:
    return f"hint: see why with `journalctl -u {name}` (and `systemctl status {name}`) on the host"


def _systemctl(ctx: TaskContext, name: str, argv: list[str], timeout: float) -> CommandResult:
    """Run systemctl; fail clearly when there is no systemd to talk to."""
    try:
        result = ctx.conn.run(argv, become=ctx.become, timeout=ctx.timeout or timeout)
    except CommandTimeout as exc:
        raise ModuleFailure(f"{' '.join(argv)}: {exc}\n{_journal_hint(name)}") from None
    if result.rc == 127:
        raise ModuleFailure(_NO_SYSTEMD.format(host=ctx.conn.host_name, why="systemctl is not installed"))
    if result.rc != 0 and (
        "has not been booted with systemd" in result.stderr or "Failed to connect to bus" in result.stderr
    ):
        why = result.stderr.strip().splitlines()[0]
        raise ModuleFailure(_NO_SYSTEMD.format(host=ctx.conn.host_name, why=why))
    return result


def query(ctx: TaskContext, name: str) -> dict[str, str]:
    """The unit's PROPERTIES as `systemctl show` reports them (read-only)."""
    argv = ["systemctl", "show", name, "--property=" + ",".join(PROPERTIES)]
    result = _systemctl(ctx, name, argv, QUERY_TIMEOUT_S)
    if result.rc != 0:
        raise ModuleFailure(f"systemctl show {name} failed (exit {result.rc}): {result.stderr.strip()}")
    status = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    missing = [p for p in PROPERTIES if p not in status]
    if missing:
        raise ModuleFailure(f"systemctl show {name} did not report {', '.join(missing)}: {result.stdout!r}")
    return status


def _require_unit(name: str, status: dict[str, str], args: dict[str, Any]) -> None:
    """Starting or enabling needs a unit that loads; masking may come before it is installed."""
    if args.get("state") is None and args.get("enabled") is None:
        return
    load = status["LoadState"]
    if load == "not-found":
        raise ModuleFailure(
            f"unit {name} not found: check the name (`systemctl list-unit-files '{name}*'`), install the "
            "package that provides it, or write its unit file in an earlier task and set daemon_reload: true"
        )
    if load in ("error", "bad-setting"):
        raise ModuleFailure(
            f"unit {name} failed to load (LoadState={load}): fix its unit file, "
            f"see `systemctl status {name}` and `journalctl -u {name}` on the host"
        )


def _is_masked(status: dict[str, str]) -> bool:
    return status["LoadState"] == "masked" or status["UnitFileState"] in ("masked", "masked-runtime")


def _mask_action(status: dict[str, str], masked: bool | None) -> str | None:
    if masked is None or masked == _is_masked(status):
        return None
    return "mask" if masked else "unmask"


def _enable_action(name: str, status: dict[str, str], enabled: bool | None) -> str | None:
    unit_file_state = status["UnitFileState"]
    if enabled is None or enabled == (unit_file_state in _ENABLED):
        return None
    if unit_file_state in _FIXED:
        wanted = "enabled" if enabled else "disabled"
        raise ModuleFailure(
            f"unit {name} is {unit_file_state} and cannot be {wanted}: {_FIXED[unit_file_state]}"
        )
    return "enable" if enabled else "disable"


def _state_action(status: dict[str, str], state: str | None) -> str | None:
    running = status["ActiveState"] in _RUNNING
    if state == "started":
        return None if running else "start"
    if state == "stopped":
        return "stop" if running or status["ActiveState"] == "deactivating" else None
    if state in ("restarted", "reloaded"):
        return state[:-2] if running else "start"  # a stopped unit is started, as Ansible does
    return None


def plan_commands(name: str, status: dict[str, str], args: dict[str, Any]) -> list[list[str]]:
    """The systemctl commands, in the order they must run, that bring the unit to `args`."""
    actions = [
        _mask_action(status, args.get("masked")),
        _enable_action(name, status, args.get("enabled")),
        _state_action(status, args.get("state")),
    ]
    commands = [["systemctl", action, name] for action in actions if action]
    if args.get("daemon_reload") and (commands or status["NeedDaemonReload"] == "yes"):
        commands.insert(0, ["systemctl", "daemon-reload"])
    return commands


def result_data(name: str, status: dict[str, str], args: dict[str, Any]) -> dict[str, Any]:
    """Ansible's systemd result fields: name, status, and the state/enabled the unit ends in."""
    data: dict[str, Any] = {"name": name, "status": status}
    state = args.get("state")
    if state is not None:
        data["state"] = "started" if state in ("restarted", "reloaded") else state
    if args.get("enabled") is not None:
        data["enabled"] = args["enabled"]
    return data


def _action_failure(name: str, argv: list[str], result: CommandResult) -> ModuleFailure:
    output = (result.stderr or result.stdout).strip()
    action = argv[1]
    what = (
        f"failure {result.rc} during {action}"
        if action == "daemon-reload"
        else f"Unable to {action} service {name}"
    )
    return ModuleFailure(
        f"{what}: {output}\n{_journal_hint(name)}", rc=result.rc, cmd=argv, stderr=result.stderr
    )


class ServiceModule(Module):
    name = "service"

    def check(self, args: dict[str, Any], ctx: TaskContext) -> Change | None:
        name = _unit(args)
        status = query(ctx, name)
        _require_unit(name, status, args)
        commands = plan_commands(name, status, args)
        if not commands:
            return None
        summary = ", ".join(" ".join(argv[1:]) for argv in commands)
        return Change(summary, payload=commands, data=result_data(name, status, args))

    def apply(self, change: Change, ctx: TaskContext) -> Outcome:
        name = change.data["name"]
        for argv in change.payload:
            result = _systemctl(ctx, name, argv, ACTION_TIMEOUT_S)
            if result.rc != 0:
                raise _action_failure(name, argv, result)
        return Outcome(changed=True, msg=change.summary, data=dict(change.data))

    def unchanged(self, args: dict[str, Any], ctx: TaskContext) -> Outcome:
        name = _unit(args)
        return Outcome(changed=False, data=result_data(name, query(ctx, name), args))

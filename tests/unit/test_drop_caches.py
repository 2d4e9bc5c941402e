"""drop_caches: the plan, the MemAvailable report, and how a refusal is explained.

The error mapping is tested with a stand-in connection that answers with the exact texts real shells
print (dash, bash, busybox, sudo). On this machine the real paths run too: as root the write is
permitted, and a private mount namespace with /proc/sys read-only is a container's view of it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest

from sparkprov.connection.base import Become, CommandResult, Connection
from sparkprov.connection.local import LocalConnection
from sparkprov.modules.base import Change, ModuleFailure, TaskContext
from sparkprov.modules.drop_caches import DROP_CACHES, DropCachesModule
from sparkprov.playbook.templating import Scope

MODULE = DropCachesModule()
GIB_KIB = 2**20


def meminfo(available_kib: int) -> bytes:
    return (
        f"MemTotal:       {128 * GIB_KIB} kB\nMemFree:        1000 kB\nMemAvailable:   {available_kib} kB\n"
    ).encode()


class FakeConnection(Connection):
    """Answers `run` from a queue of (rc, stdout, stderr) and /proc/meminfo reads from a queue."""

    host_name = "fake"

    def __init__(self, answers: list[tuple[int, str, str]], meminfo: list[bytes] | None = None) -> None:
        self.answers = answers
        self.meminfo = meminfo or []
        self.calls: list[tuple[list[str], Become | None]] = []

    def run(self, argv: list[str], *, become: Become | None = None, **kwargs: Any) -> CommandResult:
        self.calls.append((argv, become))
        rc, out, err = self.answers.pop(0)
        return CommandResult(tuple(argv), rc, out, err, 0.0)

    def agent(self, ops: list[dict[str, Any]], *, become: Become | None = None) -> list[dict[str, Any]]:
        assert [op["op"] for op in ops] == ["read"] and ops[0]["path"] == "/proc/meminfo"
        import base64

        return [{"data_b64": base64.b64encode(self.meminfo.pop(0)).decode()}]


ROOT = Become("root")


def context(conn: Connection, become: Become | None = ROOT) -> TaskContext:
    return TaskContext(conn=conn, become=become, scope=Scope([]), search_dirs=())


ROOT_WRITABLE = (0, "0\nwritable\n", "")


def test_check_always_plans_the_drop() -> None:
    conn = FakeConnection([ROOT_WRITABLE])
    change = MODULE.check({}, context(conn))
    assert change is not None
    assert change.summary == "sync; echo 3 > /proc/sys/vm/drop_caches"
    assert change.data == {"level": 3}
    assert conn.calls[0][1] == Become("root"), "the probe runs as the user the write will run as"
    change = MODULE.check({"level": 1}, context(FakeConnection([ROOT_WRITABLE])))
    assert change is not None and change.summary == "sync; echo 1 > /proc/sys/vm/drop_caches"


@pytest.mark.parametrize("level", [0, 4, "3; reboot", None, True])
def test_levels_other_than_1_2_3_are_refused(level: Any) -> None:
    with pytest.raises(ModuleFailure, match="level must be 1, 2 or 3"):
        MODULE.check({"level": level}, context(FakeConnection([])))


def test_not_root_without_become() -> None:
    conn = FakeConnection([(0, "1000\nnot-writable\n", "")])
    with pytest.raises(ModuleFailure) as info:
        MODULE.check({}, context(conn, become=None))
    assert str(info.value).startswith("needs become: true (root)")
    assert "the connection user is uid 1000" in str(info.value)


def test_become_to_another_user_is_not_enough() -> None:
    with pytest.raises(ModuleFailure, match=r"needs become: true.*become_user 'ollama' is uid 999"):
        MODULE.check({}, context(FakeConnection([(0, "999\nnot-writable\n", "")]), Become("ollama")))


def test_check_sees_a_read_only_proc_sys() -> None:
    with pytest.raises(ModuleFailure) as info:
        MODULE.check({}, context(FakeConnection([(0, "0\nnot-writable\n", "")])))
    assert str(info.value).startswith(
        "not permitted: /proc/sys/vm/drop_caches is not writable here (running in a container?)"
    )
    assert "run it on the host" in str(info.value)


def test_a_failing_probe_says_why() -> None:
    conn = FakeConnection([(1, "", "sudo: a password is required\n")])
    with pytest.raises(
        ModuleFailure, match="cannot check /proc/sys/vm/drop_caches: sudo: a password is required"
    ):
        MODULE.check({}, context(conn, Become("root")))


def test_apply_reports_mem_available_before_and_after() -> None:
    before, after = int(12.3 * GIB_KIB), int(45.6 * GIB_KIB)
    conn = FakeConnection([(0, "", "")], [meminfo(before), meminfo(after)])
    outcome = MODULE.apply(Change("sync; echo 3 > /proc/sys/vm/drop_caches", payload=3), context(conn))
    assert conn.calls == [(["/bin/sh", "-c", "sync && echo 3 > /proc/sys/vm/drop_caches"], Become("root"))]
    assert outcome.changed and outcome.msg == "MemAvailable 12.3 GiB -> 45.6 GiB"
    assert outcome.data == {
        "level": 3,
        "mem_available_before_kib": before,
        "mem_available_after_kib": after,
        "freed_kib": after - before,
    }


@pytest.mark.parametrize(
    "stderr",
    [
        "sh: 1: cannot create /proc/sys/vm/drop_caches: Read-only file system\n",  # dash, docker's /proc/sys
        "sh: 1: cannot create /proc/sys/vm/drop_caches: Permission denied\n",  # dash, not root
        "/bin/sh: line 1: /proc/sys/vm/drop_caches: Read-only file system\n",  # bash as sh
        "sh: can't create /proc/sys/vm/drop_caches: Operation not permitted\n",  # busybox, user namespace
    ],
)
def test_refusals_from_the_shell_are_not_permitted(stderr: str) -> None:
    conn = FakeConnection([(2, "", stderr)], [meminfo(GIB_KIB)])
    with pytest.raises(ModuleFailure) as info:
        MODULE.apply(Change("", payload=3), context(conn))
    message = str(info.value)
    assert message.startswith(
        "not permitted: /proc/sys/vm/drop_caches is not writable here (running in a container?)"
    )
    assert stderr.strip() in message and "run it on the host" in message


def test_other_failures_are_reported_as_they_are() -> None:
    conn = FakeConnection([(1, "", "sudo: a password is required\n")], [meminfo(GIB_KIB)])
    with pytest.raises(ModuleFailure, match=r"^dropping caches failed: sudo: a password is required$"):
        MODULE.apply(Change("", payload=3), context(conn))


def test_apply_never_passes_anything_but_a_level_to_the_shell() -> None:
    with pytest.raises(ModuleFailure, match="invalid drop_caches level"):
        MODULE.apply(Change("", payload=9), context(FakeConnection([])))


# ---------------------------------------------------------------- on this machine

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@needs_root
def test_as_root_the_real_drop_works() -> None:
    ctx = context(LocalConnection(), become=None)
    change = MODULE.check({"level": 1}, ctx)
    assert change is not None
    outcome = MODULE.apply(change, ctx)
    assert outcome.msg.startswith("MemAvailable ") and " GiB -> " in outcome.msg
    assert outcome.data["mem_available_before_kib"] > 0 and outcome.data["mem_available_after_kib"] > 0


class ReadOnlyProcSys(LocalConnection):
    """This machine as an unprivileged container sees it: commands run with /proc/sys read-only."""

    WRAP = 'mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && exec "$@"'

    def run(self, argv: list[str], **kwargs: Any) -> CommandResult:
        return super().run(["unshare", "--mount", "sh", "-c", self.WRAP, "sh", *argv], **kwargs)


def _can_make_read_only_proc_sys() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--mount", "sh", "-c", ReadOnlyProcSys.WRAP, "sh", "true"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


@pytest.mark.skipif(
    not _can_make_read_only_proc_sys(), reason="needs root and unshare to mount /proc/sys read-only"
)
def test_a_read_only_proc_sys_is_not_permitted_in_check_and_apply() -> None:
    ctx = context(ReadOnlyProcSys(), become=None)
    with pytest.raises(ModuleFailure, match=r"^not permitted: .*read-only or restricted"):
        MODULE.check({}, ctx)
    with pytest.raises(ModuleFailure) as info:  # the real shell's error text, mapped
        MODULE.apply(Change("", payload=1), ctx)
    assert str(info.value).startswith(f"not permitted: {DROP_CACHES} is not writable here")
    assert "Read-only file system" in str(info.value)

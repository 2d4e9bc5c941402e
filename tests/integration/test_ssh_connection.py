"""The SSH connection against real sshd hosts (network namespaces on one bridge), through the
`Connection` API: quoting, stdin/env/cwd, timeouts, streaming, agent batches and SFTP uploads, become
(as root and through sudo as a normal user), one reused connection, host key policy, jump hosts,
ssh config, and hosts that go away."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from sparkprov.connection import connect
from sparkprov.connection.base import AgentError, Become, BecomeFailed, CommandTimeout, HostUnreachable
from sparkprov.connection.credentials import (
    ENV_BECOME_PASSWORD,
    ENV_KEY_PASSPHRASE,
    ENV_PASSWORD,
    Credentials,
)
from sparkprov.connection.ssh import ENV_KNOWN_HOSTS, SSHConnection, parse_jump
from sparkprov.inventory import Host
from tests.infra.fleet import Fleet, SshHost
from tests.infra.slots import Slot

pytestmark = [pytest.mark.fleet, pytest.mark.root]

Connect = Callable[..., SSHConnection]


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def fleet(ssh_fleet: Callable[[int], Fleet], infra_slot: Slot) -> Iterator[Fleet]:
    """h1 and h2 for the tests that leave hosts as they found them; h3 dies and h4 is cut off.

    The bridge's neighbour (ARP) cache is flushed around it: entries of a fleet closed earlier in the
    session would otherwise point reused addresses at vanished hosts for half a minute."""
    _flush_neighbours(infra_slot)
    fleet = ssh_fleet(4)
    yield fleet
    fleet.close()
    _flush_neighbours(infra_slot)


def _flush_neighbours(slot: Slot) -> None:
    subprocess.run(["ip", "neigh", "flush", "dev", slot.fleet_bridge], capture_output=True)


@pytest.fixture
def open_ssh(fleet: Fleet) -> Iterator[Connect]:
    """`open_ssh(host, **vars_and_options)`: an SSHConnection (closed after the test) to a fleet host,
    with the fleet's key and known_hosts and no ~/.ssh/config unless told otherwise."""
    opened: list[SSHConnection] = []

    def factory(target: SshHost, *, name: str | None = None, **kwargs: Any) -> SSHConnection:
        options = {k: kwargs.pop(k) for k in list(kwargs) if k in _OPTIONS}
        options.setdefault("known_hosts_file", fleet.known_hosts_file)
        options.setdefault("ssh_config_file", os.devnull)
        conn = SSHConnection(_inventory_host(fleet, target, name, **kwargs), **options)
        opened.append(conn)
        return conn

    yield factory
    for conn in opened:
        conn.close()


_OPTIONS = ("accept_new_hostkeys", "connect_timeout", "known_hosts_file", "ssh_config_file", "credentials")


def _inventory_host(fleet: Fleet, target: SshHost, name: str | None = None, **host_vars: Any) -> Host:
    defaults = {
        "ansible_host": target.ip,
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(fleet.client_key),
    }
    return Host(name or target.name, {**defaults, **host_vars})


def _logins(target: SshHost) -> int:
    """Successful logins in the host's sshd log (the server's view of how often we connected)."""
    log = target.dir / "sshd.log"
    return log.read_text(errors="replace").count("Accepted publickey") if log.exists() else 0


def _openssh_fingerprint(public_key: str, tmp_path: Path) -> str:
    pub = tmp_path / "key.pub"
    pub.write_text(public_key + "\n")
    out = subprocess.run(["ssh-keygen", "-l", "-f", str(pub)], capture_output=True, text=True, check=True)
    return out.stdout.split()[1]


def _kill_host(fleet: Fleet, target: SshHost) -> None:
    """The host dies: its sshd listener and every process in its network namespace (sshd gives each
    connection its own session, so killing the listener's group leaves open connections alive)."""
    fleet.kill(target)
    pids = subprocess.run(["ip", "netns", "pids", target.netns], capture_output=True, text=True).stdout
    for pid in pids.split():
        with suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


# ---------------------------------------------------------------- commands


def test_argv_reaches_the_command_verbatim(fleet: Fleet, open_ssh: Connect, tmp_path: Path) -> None:
    marker = tmp_path / "injected"
    args = [
        f"$(touch {marker})",
        f"`touch {marker}`",
        "; touch x",
        "a b",
        "it's",
        '"q"',
        "*",
        "new\nline",
        "",
    ]
    conn = open_ssh(fleet.hosts[0])
    result = conn.run(["python3", "-c", "import json, sys; print(json.dumps(sys.argv[1:]))", *args])
    assert result.rc == 0, result.stderr
    assert json.loads(result.stdout) == args
    assert not marker.exists()
    echoed = conn.run(["echo", f"$(touch {marker})"])
    assert echoed.stdout == f"$(touch {marker})\n" and not marker.exists()


def test_stdin_env_cwd_and_exit_codes(fleet: Fleet, open_ssh: Connect, tmp_path: Path) -> None:
    conn = open_ssh(fleet.hosts[0])
    payload = bytes(range(256)) * 4 + b"\nlast line without newline"
    assert conn.run(["sha256sum"], stdin=payload).stdout.split()[0] == hashlib.sha256(payload).hexdigest()
    secret = "s3cr3t value; $(no)"
    result = conn.run(["sh", "-c", 'printf "%s|" "$TOKEN"; cat'], env={"TOKEN": secret}, stdin=b"input")
    assert result.stdout == f"{secret}|input"
    command, _ = conn._command_line(["true"], become=None, cwd=None, env={"TOKEN": secret})
    assert secret not in command  # environment values travel on stdin, never in the command line
    (tmp_path / "sub dir").mkdir()
    assert conn.run(["pwd"], cwd=str(tmp_path / "sub dir")).stdout == f"{tmp_path / 'sub dir'}\n"
    assert conn.run(["pwd"], cwd=str(tmp_path / "missing")).rc == 127
    assert conn.run(["sh", "-c", "echo oops >&2; exit 3"]).rc == 3
    failed = conn.run(["sh", "-c", "echo oops >&2; exit 3"])
    assert failed.stderr == "oops\n"  # the shell's pid announcement is not part of stderr
    assert conn.run(["no-such-command-xyz"]).rc == 127
    # A command given no input reads /dev/null and its channel gets no EOF (paramiko could send that
    # EOF after the channel closed, and sshd would drop the connection).
    command, preamble = conn._command_line(["cat"], become=None, cwd=None, env=None, has_input=False)
    assert command.endswith("exec cat </dev/null") and preamble is None
    assert conn.run(["cat"], timeout=10).stdout == ""


def test_big_outputs_and_input_do_not_deadlock(fleet: Fleet, open_ssh: Connect) -> None:
    conn = open_ssh(fleet.hosts[0])
    both = conn.run(["sh", "-c", "head -c 8000000 /dev/zero; head -c 3000000 /dev/zero >&2"], timeout=30)
    assert (len(both.stdout), len(both.stderr)) == (8_000_000, 3_000_000)
    echoed = conn.run(["cat"], stdin=b"x" * 8_000_000, timeout=30)
    assert len(echoed.stdout) == 8_000_000


def test_timeout_stops_the_command(fleet: Fleet, open_ssh: Connect) -> None:
    conn = open_ssh(fleet.hosts[0])
    started = time.monotonic()
    with pytest.raises(CommandTimeout, match=r"did not finish within 0\.5s"):
        conn.run(["sleep", "5.4321"], timeout=0.5)
    assert time.monotonic() - started < 2
    deadline = time.monotonic() + 3
    while subprocess.run(["pgrep", "-f", "sleep 5.4321"], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "the timed-out command still runs on the host"
        time.sleep(0.05)
    assert conn.run(["true"]).rc == 0  # the connection survives a timeout


def test_streamed_lines_arrive_while_the_command_runs(fleet: Fleet, open_ssh: Connect) -> None:
    conn = open_ssh(fleet.hosts[0])
    started = time.monotonic()
    arrivals: list[tuple[str, float]] = []
    result = conn.run_streaming(
        ["sh", "-c", "echo first; sleep 0.6; echo second; printf tail"],
        lambda line: arrivals.append((line, time.monotonic() - started)),
    )
    assert [line for line, _ in arrivals] == ["first", "second", "tail"]
    assert arrivals[1][1] - arrivals[0][1] > 0.4  # the first line came before the sleep, not at the end
    assert result.stdout == "first\nsecond\ntail"


# ---------------------------------------------------------------- files


def test_agent_batches_are_one_round_trip(fleet: Fleet, open_ssh: Connect, tmp_path: Path) -> None:
    conn = open_ssh(fleet.hosts[0])
    conn.run(["true"])
    before = conn.round_trips
    conn.put(str(tmp_path / "small.txt"), b"hello\n", mode=0o600)
    states = conn.stat_many([str(tmp_path / "small.txt"), str(tmp_path / "absent")], checksum=True)
    assert conn.get(str(tmp_path / "small.txt")) == b"hello\n"
    assert conn.round_trips - before == 3
    assert states[0].mode == 0o600 and states[0].sha256 == hashlib.sha256(b"hello\n").hexdigest()
    assert not states[1].exists


def test_large_put_goes_by_sftp_atomically(fleet: Fleet, open_ssh: Connect, tmp_path: Path) -> None:
    conn = open_ssh(fleet.hosts[0])
    target = tmp_path / "big.bin"
    data = os.urandom(5 * 1024 * 1024)
    conn.run(["true"])
    before = conn.round_trips
    started = time.monotonic()
    assert conn.put(str(target), data, mode=0o640) == {"path": str(target)}
    assert time.monotonic() - started < 5
    assert conn.round_trips == before  # no exec channel: SFTP carried it
    assert target.read_bytes() == data and target.stat().st_mode & 0o7777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.bin"]  # no temp file left
    conn.put(str(target), data[::-1], owner="nobody", group="nogroup")  # names: resolved on the host
    stat = conn.stat(str(target))
    assert (stat.owner, stat.group, stat.mode) == ("nobody", "nogroup", 0o640)  # mode kept
    assert target.read_bytes() == data[::-1]
    with pytest.raises(AgentError, match="No such file"):
        conn.put(str(tmp_path / "missing" / "big.bin"), data)
    with pytest.raises(AgentError, match=f"write {target}: user 'no-such-user' does not exist"):
        conn.put(str(target), data, owner="no-such-user")
    assert target.read_bytes() == data[::-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.bin"]


def test_become_as_root_needs_no_sudo(fleet: Fleet, open_ssh: Connect) -> None:
    conn = open_ssh(fleet.hosts[0])
    command, _ = conn._command_line(["id"], become=Become("root"), cwd=None, env=None)
    assert "sudo" not in command
    assert conn.run(["id", "-u"], become=Become("root")).stdout == "0\n"
    assert conn.agent([{"op": "identity"}], become=Become("root"))[0]["user"] == "root"


# ---------------------------------------------------------------- become through sudo as a normal user


SUDOERS_DIR = Path("/etc/sudoers.d")


@pytest.fixture(scope="module")
def sudoer(fleet: Fleet, infra_slot: Slot) -> Iterator[str]:
    """A normal user of this test slot with passwordless sudo that logs in with the fleet key: an
    unlocked account (sshd without PAM refuses locked ones) and a slot directory it can traverse to
    the fleet's authorized_keys."""
    for tool in ("useradd", "userdel", "visudo", "sudo"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")
    name = f"sparkprov-ssh{infra_slot.index}"
    _remove_user(name)  # left by a session that died
    subprocess.run(["useradd", "-m", "-U", "-s", "/bin/sh", "-p", "*", name], check=True, capture_output=True)
    slot_dir = fleet.dir.parent
    mode = slot_dir.stat().st_mode & 0o7777
    slot_dir.chmod(mode | 0o011)
    try:
        _sudo_rule(name, "NOPASSWD: ALL")
        yield name
    finally:
        slot_dir.chmod(mode)
        _remove_user(name)


def _sudo_rule(user: str, rule: str | None) -> None:
    """Install (validated) or remove the user's sudoers drop-in."""
    path = SUDOERS_DIR / user
    if rule is None:
        path.unlink(missing_ok=True)
        return
    staging = SUDOERS_DIR / f".{user}.new"  # sudo ignores names with a dot
    staging.write_text(f"{user} ALL=(ALL:ALL) {rule}\n")
    staging.chmod(0o440)
    subprocess.run(["visudo", "-c", "-q", "-f", str(staging)], check=True, capture_output=True)
    staging.replace(path)


def _remove_user(user: str) -> None:
    _sudo_rule(user, None)
    subprocess.run(["pkill", "-KILL", "-u", user], capture_output=True)  # sessions still open
    deadline = time.monotonic() + 5
    while subprocess.run(["pgrep", "-u", user], capture_output=True).returncode == 0:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    subprocess.run(["userdel", "-r", "-f", user], capture_output=True)  # fails harmlessly when absent


@contextmanager
def _sudo_rights(user: str, rule: str | None) -> Iterator[None]:
    _sudo_rule(user, rule)
    try:
        yield
    finally:
        _sudo_rule(user, "NOPASSWD: ALL")


def test_become_through_sudo_as_a_normal_user(
    fleet: Fleet, open_ssh: Connect, sudoer: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = open_ssh(fleet.hosts[0], ansible_user=sudoer)
    assert conn.run(["id", "-un"]).stdout == f"{sudoer}\n"
    assert conn.run(["id", "-un"], become=Become("root")).stdout == "root\n"
    assert conn.run(["id", "-un"], become=Become("nobody")).stdout == "nobody\n"
    assert conn.run(["pwd"], cwd="/", become=Become("root")).stdout == "/\n"
    locked = tmp_path / "root-only"
    locked.mkdir(mode=0o700)
    conn.put(str(locked / "f"), b"x", mode=0o600, become=Become("root"))
    conn.put(str(locked / "big"), b"y" * 200_000, become=Become("root"))  # the agent under sudo, not SFTP
    assert (locked / "big").read_bytes() == b"y" * 200_000
    with _sudo_rights(sudoer, None):
        with pytest.raises(BecomeFailed, match=r"become failed: .*(may not sudo|password)"):
            conn.run(["id"], become=Become("root"))
        with pytest.raises(BecomeFailed, match="become failed"):
            conn.stat("/root", become=Become("root"))


def test_become_with_a_sudo_password(
    fleet: Fleet, open_ssh: Connect, sudoer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = "sudo-pw-123"
    subprocess.run(["chpasswd"], input=f"{sudoer}:{password}", text=True, check=True)
    with _sudo_rights(sudoer, "ALL"):
        with pytest.raises(BecomeFailed, match=f"set {ENV_BECOME_PASSWORD}"):
            open_ssh(fleet.hosts[0], ansible_user=sudoer).run(["id"], become=Become())
        monkeypatch.setenv(ENV_BECOME_PASSWORD, password)
        conn = open_ssh(fleet.hosts[0], ansible_user=sudoer)
        piped = conn.run(["sh", "-c", 'id -un; echo "$V"; cat'], env={"V": "v"}, stdin=b"in", become=Become())
        assert piped.stdout == "root\nv\nin", piped.stderr  # the password line never reaches the command
        assert conn.stat("/root", become=Become()).exists
        command, preamble = conn._command_line(["true"], become=Become(), cwd=None, env=None)
        assert password not in command and preamble == f"{password}\n".encode()
        monkeypatch.setenv(ENV_BECOME_PASSWORD, "wrong")
        with pytest.raises(BecomeFailed, match="rejected the password") as rejected:
            open_ssh(fleet.hosts[0], ansible_user=sudoer).run(["id"], become=Become())
        assert "wrong" not in str(rejected.value)


# ---------------------------------------------------------------- one connection


def test_one_connection_serves_the_whole_run(fleet: Fleet, open_ssh: Connect, tmp_path: Path) -> None:
    target = fleet.hosts[1]
    logins = _logins(target)
    conn = open_ssh(target)
    for index in range(10):
        conn.run(["true"])
        conn.put(str(tmp_path / f"f{index}"), b"x")
    with ThreadPoolExecutor(5) as pool:
        assert [r.rc for r in pool.map(lambda _: conn.run(["true"]), range(5))] == [0] * 5
    assert (conn.connections, conn.round_trips) == (1, 25)
    assert _logins(target) - logins == 1


def test_connect_routes_ssh_hosts(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_KNOWN_HOSTS, str(fleet.known_hosts_file))
    host = _inventory_host(fleet, fleet.hosts[0])
    conn = connect(host, accept_new_hostkeys=False)
    try:
        assert isinstance(conn, SSHConnection) and not conn.is_local
        assert conn.connections == 0  # lazy: nothing happens before the first operation
        conn.open()
        conn.open()
        assert (conn.connections, conn.round_trips) == (1, 0)
    finally:
        conn.close()


# ---------------------------------------------------------------- host keys


def test_unknown_host_key_fails_with_its_fingerprint(fleet: Fleet, open_ssh: Connect, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    target = fleet.hosts[0]
    conn = open_ssh(target, known_hosts_file=known)
    with pytest.raises(HostUnreachable) as caught:
        conn.run(["true"])
    message = str(caught.value)
    assert _openssh_fingerprint(target.host_key_pub, tmp_path) in message
    assert "--accept-new-hostkeys" in message and "ssh-keyscan" in message and "ssh-ed25519" in message
    assert known.read_text() == ""


def test_accept_new_records_the_key(
    fleet: Fleet, open_ssh: Connect, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    known = tmp_path / "new-dir" / "known_hosts"
    target = fleet.hosts[0]
    assert open_ssh(target, known_hosts_file=known, accept_new_hostkeys=True).run(["true"]).rc == 0
    assert known.read_text() == f"{target.ip} {target.host_key_pub}\n"
    assert (known.stat().st_mode & 0o777, known.parent.stat().st_mode & 0o777) == (0o600, 0o700)
    found = subprocess.run(["ssh-keygen", "-F", target.ip, "-f", str(known)], capture_output=True)
    assert found.returncode == 0  # OpenSSH reads what we wrote
    monkeypatch.setenv(ENV_KNOWN_HOSTS, str(known))
    later = SSHConnection(_inventory_host(fleet, target), ssh_config_file=os.devnull)
    try:
        assert later.run(["true"]).rc == 0  # now known, without accept_new
    finally:
        later.close()
    assert known.read_text().count("\n") == 1


def test_changed_host_key_always_fails(fleet: Fleet, open_ssh: Connect, tmp_path: Path) -> None:
    h1, h2 = fleet.hosts[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"{h1.ip} {h2.host_key_pub}\n")  # someone else's key for h1's address
    for accept_new in (False, True):
        conn = open_ssh(h1, known_hosts_file=known, accept_new_hostkeys=accept_new)
        with pytest.raises(HostUnreachable, match="HOST KEY CHANGED") as caught:
            conn.run(["true"])
        message = str(caught.value)
        assert _openssh_fingerprint(h1.host_key_pub, tmp_path) in message  # presented
        assert _openssh_fingerprint(h2.host_key_pub, tmp_path) in message  # expected
        assert str(known) in message
    assert known.read_text() == f"{h1.ip} {h2.host_key_pub}\n"


def test_hashed_known_hosts_entries_are_honoured(fleet: Fleet, open_ssh: Connect, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    shutil.copy(fleet.known_hosts_file, known)
    subprocess.run(["ssh-keygen", "-H", "-f", str(known)], check=True, capture_output=True)
    assert known.read_text().startswith("|1|")
    assert open_ssh(fleet.hosts[1], known_hosts_file=known).run(["true"]).rc == 0


# ---------------------------------------------------------------- jump hosts and ssh config


def test_proxy_jump_through_a_bastion(fleet: Fleet, open_ssh: Connect) -> None:
    h1, h2 = fleet.hosts[:2]
    conn = open_ssh(h2, ansible_ssh_proxy_jump=f"root@{h1.ip}")
    assert conn.run(["hostname"]).stdout == "h2\n"
    assert conn.settings.jumps[0].hostname == h1.ip
    peer = conn.run(["sh", "-c", 'echo "$SSH_CONNECTION"']).stdout.split()[0]
    assert peer == h1.ip  # h2 saw the connection come from the bastion


def test_ssh_config_is_honoured(fleet: Fleet, tmp_path: Path) -> None:
    h1, h2 = fleet.hosts[:2]
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host spark-a\n  HostName {h1.ip}\n  User nobody\n  IdentityFile {fleet.client_key}\n"
        f"Host spark-b\n  HostName {h2.ip}\n  User root\n  Port 22\n  IdentityFile {fleet.client_key}\n"
        f"  ProxyJump root@{h1.ip}\n"
        f"Host spark-c\n  HostName {h2.ip}\n  User root\n  IdentityFile {fleet.client_key}\n"
        f"  ProxyCommand ssh -F /dev/null -i {fleet.client_key} -o BatchMode=yes"
        f" -o UserKnownHostsFile={fleet.known_hosts_file} -W %h:%p root@{h1.ip}\n"
    )
    hosts = {
        "spark-a": Host("spark-a", {"ansible_user": "root"}),  # the inventory's user wins over the config's
        "spark-b": Host("spark-b", {}),
        "spark-c": Host("spark-c", {}),
    }
    for name, host in hosts.items():
        conn = SSHConnection(host, known_hosts_file=fleet.known_hosts_file, ssh_config_file=config)
        try:
            assert conn.run(["sh", "-c", "echo $(hostname) $(id -un)"]).stdout.split() == [
                "h1" if name == "spark-a" else "h2",
                "root",
            ]
        finally:
            conn.close()


def test_parse_jump_forms() -> None:
    assert parse_jump("bastion") == (None, "bastion", None)
    assert parse_jump("ops@bastion:2222") == ("ops", "bastion", 2222)
    assert parse_jump("ssh://ops@[fd00::1]:22") == ("ops", "fd00::1", 22)


def test_authentication_failure_is_clear_and_keeps_secrets(
    fleet: Fleet, open_ssh: Connect, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stranger = tmp_path / "id_stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    monkeypatch.setenv(ENV_PASSWORD, "hunter2-password")
    conn = open_ssh(fleet.hosts[0], ansible_ssh_private_key_file=str(stranger))
    with pytest.raises(HostUnreachable, match="authentication as 'root' failed") as caught:
        conn.run(["true"])
    assert "hunter2" not in str(caught.value) and ENV_PASSWORD in str(caught.value)
    missing = open_ssh(fleet.hosts[0], ansible_ssh_private_key_file=str(tmp_path / "nope"))
    with pytest.raises(HostUnreachable, match="does not exist"):
        missing.run(["true"])


def test_password_login_and_a_wrong_password(
    fleet: Fleet, open_ssh: Connect, sudoer: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = "login pw 'q' $(x)"
    subprocess.run(["chpasswd"], input=f"{sudoer}:{password}", text=True, check=True)
    stranger = tmp_path / "id_stranger"  # a key the host does not know: only the password can log in
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/id_* keys
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    target = fleet.hosts[0]
    login = {"ansible_user": sudoer, "ansible_ssh_private_key_file": str(stranger)}

    conn = open_ssh(target, credentials=Credentials(ssh_password=password), **login)
    assert conn.run(["id", "-un"]).stdout == f"{sudoer}\n"
    assert f"Accepted password for {sudoer}" in (target.dir / "sshd.log").read_text(errors="replace")

    wrong = Credentials(ssh_password="not it", ssh_password_source="the -k prompt")
    with pytest.raises(HostUnreachable, match="the password from the -k prompt") as caught:
        open_ssh(target, credentials=wrong, **login).run(["true"])
    assert "not it" not in str(caught.value)
    with pytest.raises(HostUnreachable, match="to log in with a password, pass -k"):
        open_ssh(target, credentials=Credentials(), **login).run(["true"])


def test_encrypted_key_with_passphrase_from_the_environment(
    fleet: Fleet, open_ssh: Connect, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = tmp_path / "id_locked"
    passphrase = "correct horse battery"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", str(key)], check=True)
    authorized = fleet.dir / "authorized_keys"
    original = authorized.read_text()
    authorized.write_text(original + key.with_suffix(".pub").read_text())
    try:
        with pytest.raises(HostUnreachable, match="SPARKPROV_SSH_KEY_PASSPHRASE"):
            open_ssh(fleet.hosts[0], ansible_ssh_private_key_file=str(key)).run(["true"])
        monkeypatch.setenv(ENV_KEY_PASSPHRASE, passphrase)
        assert open_ssh(fleet.hosts[0], ansible_ssh_private_key_file=str(key)).run(["true"]).rc == 0
    finally:
        authorized.write_text(original)


# ---------------------------------------------------------------- hosts that go away


def test_dead_host_fails_promptly_and_stays_failed(fleet: Fleet, open_ssh: Connect) -> None:
    doomed, h2 = fleet.hosts[2], fleet.hosts[1]
    conn = open_ssh(doomed)
    assert conn.run(["true"]).rc == 0
    _kill_host(fleet, doomed)
    started = time.monotonic()
    with pytest.raises(HostUnreachable, match="connection was lost"):
        for _ in range(50):  # the kernel reports the closed socket within moments
            conn.run(["true"])
            time.sleep(0.02)
    assert time.monotonic() - started < 3
    with pytest.raises(HostUnreachable, match="connection was lost"):
        conn.stat("/")  # no silent reconnect in the middle of a run
    assert conn.connections == 1
    via_dead = open_ssh(h2, ansible_ssh_proxy_jump=f"root@{doomed.ip}")
    with pytest.raises(
        HostUnreachable, match=re.escape(f"jump host root@{doomed.ip}:22: connection refused")
    ):
        via_dead.run(["true"])


def test_cut_off_host_fails_within_the_timeout(fleet: Fleet, open_ssh: Connect) -> None:
    target = fleet.hosts[3]
    conn = open_ssh(target, connect_timeout=1)
    assert conn.run(["true"]).rc == 0
    subprocess.run(["ip", "-n", target.netns, "link", "set", "eth0", "down"], check=True)
    started = time.monotonic()
    with pytest.raises(HostUnreachable, match="no answer within 1s"):
        conn.run(["true"])
    assert time.monotonic() - started < 3
    started = time.monotonic()
    with pytest.raises(HostUnreachable, match="no answer within 1s"):
        open_ssh(target, connect_timeout=1).run(["true"])
    assert time.monotonic() - started < 3

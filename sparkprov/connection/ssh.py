"""A remote host over SSH (paramiko), behaving like OpenSSH for the user.

One SSH connection per host, opened on first use and reused for the whole run; every command and
every agent batch is one `exec` channel on it (one round trip). Settings come from the inventory
(`ansible_host`, `ansible_port`, `ansible_user`, `ansible_ssh_private_key_file`,
`ansible_ssh_proxy_jump`), which wins over `~/.ssh/config` (HostName, Port, User, IdentityFile,
IdentitiesOnly, ProxyJump, ProxyCommand, UserKnownHostsFile). Authentication: the key files, the
ssh-agent, the default `~/.ssh/id_*` keys (passphrase from $SPARKPROV_SSH_KEY_PASSPHRASE), then a
password ($SPARKPROV_SSH_PASSWORD or the -k prompt: `credentials.py`). Host keys are checked against
known_hosts (`hostkeys.py`).

Commands: argv is quoted with `shlex.join` for the remote login shell (a POSIX shell), so nothing in
it is interpreted. Environment variables and the sudo password travel on stdin, never in argv.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import posixpath
import secrets
import select
import shlex
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paramiko
from paramiko.sftp import CMD_EXTENDED

from sparkprov.connection import hostkeys
from sparkprov.connection.base import (
    STREAM_CHUNK,
    AgentError,
    Become,
    ByteSource,
    CommandFailed,
    CommandResult,
    CommandTimeout,
    Connection,
    HostUnreachable,
    OnBytes,
    chunks_of,
)
from sparkprov.connection.credentials import (
    ASK_PASSWORD,
    ENV_KEY_PASSPHRASE,
    Credentials,
    Sudo,
    check_sudo,
)
from sparkprov.connection.local import AGENT_SOURCE, command_with_preamble

if TYPE_CHECKING:
    from sparkprov.inventory import Host

# paramiko logs transport errors (a peer that went away...) that we report ourselves; without a
# handler of its own, Python's last-resort handler would print them on stderr.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

ENV_KNOWN_HOSTS = "SPARKPROV_KNOWN_HOSTS"

DEFAULT_SSH_CONFIG = "~/.ssh/config"
SFTP_MIN_BYTES = 64 * 1024  # smaller files go in the agent's single round trip
AGENT_TIMEOUT_S = 600.0
CHUNK = 32 * 1024
IDLE_WAIT_S = 1.0  # longest sleep between checks while a command runs
SEND_WAIT_S = 0.01  # poll interval while stdin waits for the remote to open its window
PID_MARKER = b"sparkprov-pid:"
PID_WAIT_S = 2.0  # for a command to be stopped: how long its shell may take to say its pid
PID_SEARCH_BYTES = 4096

OnLine = Callable[[str], None]


@dataclass(frozen=True)
class Endpoint:
    """One SSH login: the target host or a jump host on the way to it."""

    hostname: str
    port: int
    user: str
    key_files: tuple[str, ...] = ()
    identities_only: bool = False

    def __str__(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"


@dataclass(frozen=True)
class SshSettings:
    target: Endpoint
    jumps: tuple[Endpoint, ...] = ()
    proxy_command: str | None = None


# ---------------------------------------------------------------- settings


def load_ssh_config(path: str | os.PathLike[str] | None) -> paramiko.SSHConfig:
    """The user's ssh config (default `~/.ssh/config`); an absent file is an empty config."""
    file = Path(os.path.expanduser(str(path if path is not None else DEFAULT_SSH_CONFIG)))
    if not file.is_file():
        return paramiko.SSHConfig()
    try:
        return paramiko.SSHConfig.from_path(str(file))
    except (OSError, paramiko.ConfigParseError, ValueError) as exc:
        raise HostUnreachable(f"cannot read the ssh config {file}: {exc}") from None


def host_options(config: paramiko.SSHConfig, name: str, address: str | None) -> dict[str, Any]:
    """ssh config options for an inventory host: its `Host` block matched by inventory name; options
    that block leaves unset come from a block matching `ansible_host` (first obtained value wins)."""
    options = dict(config.lookup(name))
    if address and address != name:
        by_address = dict(config.lookup(address))
        options = {**by_address, **options}
        options["hostname"] = address  # ansible_host wins over HostName
    return options


def resolve_settings(host: Host, config: paramiko.SSHConfig) -> SshSettings:
    """Inventory host vars over ssh config over OpenSSH's defaults."""
    address = host.var("host")
    options = host_options(config, host.name, str(address) if address else None)
    explicit_key = host.var("ssh_private_key_file") or host.var("private_key_file")
    explicit = (os.path.expanduser(str(explicit_key)),) if explicit_key else ()
    target = Endpoint(
        hostname=str(options["hostname"]),
        port=int(host.var("port") or options.get("port", hostkeys.DEFAULT_PORT)),
        user=str(host.var("user") or options.get("user") or getpass.getuser()),
        key_files=explicit + _config_identities(options),
        identities_only=_yes(options.get("identitiesonly")),
    )
    jump_spec = host.var("ssh_proxy_jump") or host.var("proxy_jump") or options.get("proxyjump")
    if jump_spec and str(jump_spec).lower() != "none":
        # A jump host tries its own identities, then the target's (often the same key).
        jumps = tuple(_jump_endpoint(part, config, target.key_files) for part in str(jump_spec).split(","))
        return SshSettings(target, jumps)
    proxy_command = options.get("proxycommand")
    if proxy_command and str(proxy_command).lower() != "none":
        return SshSettings(target, proxy_command=str(proxy_command))
    return SshSettings(target)


def parse_jump(spec: str) -> tuple[str | None, str, int | None]:
    """`[user@]host[:port]` or `ssh://[user@]host[:port]` (IPv6 as `[addr]:port`) → user, host, port."""
    text = spec.strip().removeprefix("ssh://")
    user, _, hostport = text.rpartition("@")
    port: int | None = None
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        if rest.startswith(":"):
            port = int(rest[1:])
    elif hostport.count(":") == 1:
        host, _, port_text = hostport.partition(":")
        port = int(port_text)
    else:
        host = hostport
    if not host:
        raise HostUnreachable(f"invalid ProxyJump entry {spec!r}: expected [user@]host[:port]")
    return user or None, host, port


def _jump_endpoint(spec: str, config: paramiko.SSHConfig, extra_keys: tuple[str, ...]) -> Endpoint:
    try:
        user, host, port = parse_jump(spec)
    except ValueError:
        raise HostUnreachable(f"invalid ProxyJump entry {spec!r}: the port is not a number") from None
    options = config.lookup(host)
    return Endpoint(
        hostname=str(options["hostname"]),
        port=port or int(options.get("port", hostkeys.DEFAULT_PORT)),
        user=user or str(options.get("user") or getpass.getuser()),
        key_files=tuple(dict.fromkeys(_config_identities(options) + extra_keys)),
        identities_only=_yes(options.get("identitiesonly")),
    )


def _config_identities(options: dict[str, Any]) -> tuple[str, ...]:
    """IdentityFile entries that exist (OpenSSH skips missing ones silently, as we do)."""
    files = [os.path.expanduser(str(p)) for p in options.get("identityfile", [])]
    return tuple(f for f in files if os.path.isfile(f))


def _yes(value: Any) -> bool:
    return str(value).lower() in ("yes", "true")


# ---------------------------------------------------------------- the connection


class SSHConnection(Connection):
    """A host reached over SSH. Connects lazily (thread-safe) on first use; `round_trips` counts
    exec channels (commands and agent batches), `connections` the SSH logins to the host (1 for a
    healthy run), `connect_s` how long the last login took."""

    is_local = False

    def __init__(
        self,
        host: Host,
        *,
        accept_new_hostkeys: bool = False,
        connect_timeout: float = 10.0,
        keepalive_s: int = 15,
        known_hosts_file: str | os.PathLike[str] | None = None,
        ssh_config_file: str | os.PathLike[str] | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self.host_name: str = host.name
        self.credentials = credentials or Credentials.from_environment()
        self._sudo = Sudo(self.credentials.become_password, self._passwordless)
        self.accept_new_hostkeys = accept_new_hostkeys
        self.connect_timeout = connect_timeout
        self.keepalive_s = keepalive_s
        config = load_ssh_config(ssh_config_file)
        self.settings = resolve_settings(host, config)
        override = known_hosts_file if known_hosts_file is not None else os.environ.get(ENV_KNOWN_HOSTS)
        self.known_hosts = hostkeys.KnownHosts.resolve(override, config.lookup(host.name))
        self.round_trips = 0
        self.connections = 0
        self.connect_s: float | None = None
        self._lock = threading.Lock()
        self._sftp_lock = threading.Lock()
        self._client: paramiko.SSHClient | None = None
        self._jump_clients: list[paramiko.SSHClient] = []
        self._sftp: paramiko.SFTPClient | None = None
        self._sftp_unavailable = False
        self._lost: str | None = None

    @property
    def label(self) -> str:
        return f"{self.host_name} ({self.settings.target})"

    # ------------------------------------------------------------ commands

    def run(
        self,
        argv: list[str],
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
        become: Become | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
    ) -> CommandResult:
        return self._exec(argv, stdin=stdin, timeout=timeout, become=become, cwd=cwd, env=env)

    def run_streaming(
        self,
        argv: list[str],
        on_line: OnLine,
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
        become: Become | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
    ) -> CommandResult:
        """`run`, calling `on_line(line)` for each line of stdout as it arrives (without its newline);
        the result still holds the whole output."""
        return self._exec(
            argv, stdin=stdin, timeout=timeout, become=become, cwd=cwd, env=env, on_line=on_line
        )

    def run_with_input(
        self,
        argv: list[str],
        source: ByteSource,
        *,
        timeout: float | None = None,
        become: Become | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        on_progress: OnBytes | None = None,
    ) -> CommandResult:
        """`run` with stdin streamed from `source`: each chunk is sent as the channel's window allows
        (the remote command's pace), then the write side is shut; see `Connection.run_with_input`."""
        command, preamble = self._command_line(argv, become=become, cwd=cwd, env=env)
        started = time.monotonic()
        deadline = None if timeout is None else started + timeout
        channel = self._open_channel()
        pump = _SourcePump(channel, deadline)
        try:
            channel.exec_command(command)
            pump.feed(preamble or b"", chunks_of(source), on_progress)
            out, err = pump.run()
            rc = _exit_status(channel, deadline)
        except _DeadlinePassed:
            self._stop(channel, pump)
            raise CommandTimeout(f"command {argv[0]!r}", timeout or 0) from None
        except _SourceError as exc:
            self._stop(channel, pump)
            raise exc.original from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise self._connection_lost(exc) from None
        finally:
            channel.close()
        return self._finished(argv, rc, out, err, started, become)

    def stream_output(
        self,
        argv: list[str],
        *,
        timeout: float | None = None,
        become: Become | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Iterator[bytes]:
        """The command's stdout in chunks as they arrive (see `Connection.stream_output`)."""
        command, preamble = self._command_line(argv, become=become, cwd=cwd, env=env, has_input=False)
        started = time.monotonic()
        deadline = None if timeout is None else started + timeout
        channel = self._open_channel()
        reader = _OutputReader(channel, deadline)
        try:
            channel.exec_command(command)
            if preamble is not None:
                reader.feed(preamble, iter(()), None)
            yield from reader.chunks()
            rc = _exit_status(channel, deadline)
            reader.drain_stderr()
        except _DeadlinePassed:
            self._stop(channel, reader)
            raise CommandTimeout(f"command {argv[0]!r}", timeout or 0) from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise self._connection_lost(exc) from None
        except GeneratorExit:  # the consumer stopped early: so does the command
            self._stop(channel, reader)
            raise
        finally:
            channel.close()
        result = self._finished(argv, rc, b"", bytes(reader.err), started, become)
        if result.rc != 0:
            raise CommandFailed(result)

    def _finished(
        self, argv: list[str], rc: int | None, out: bytes, err: bytes, started: float, become: Become | None
    ) -> CommandResult:
        """A command's result, sudo's own refusals explained."""
        if rc is None:
            raise self._connection_lost(None)
        result = CommandResult(
            tuple(argv),
            rc,
            out.decode("utf-8", "replace"),
            err.decode("utf-8", "replace"),
            time.monotonic() - started,
        )
        if become is not None and self._needs_sudo(become):
            return self._explain_sudo_failure(result, become)
        return result

    def agent(self, ops: list[dict[str, Any]], *, become: Become | None = None) -> list[dict[str, Any]]:
        result = self._exec(
            ["python3", "-c", AGENT_SOURCE],
            stdin=json.dumps(ops).encode("utf-8"),
            timeout=AGENT_TIMEOUT_S,
            become=become,
        )
        if result.rc == 0:
            with suppress(ValueError):
                answers = json.loads(result.stdout)
                if isinstance(answers, list) and len(answers) == len(ops):
                    return answers
        raise HostUnreachable(self._agent_failure(result, become))

    def _agent_failure(self, result: CommandResult, become: Become | None) -> str:
        tail = (result.stderr.strip() or result.stdout.strip())[-500:] or f"exit code {result.rc}"
        if result.rc == 127 and "python3" in result.stderr:
            return f"{self.label}: file operations need python3 on the host, and it has none ({tail})"
        who = f" as '{become.user}'" if become is not None and self._needs_sudo(become) else ""
        return f"{self.label}: file operations{who} failed: {tail}"

    def _exec(
        self,
        argv: list[str],
        *,
        stdin: bytes | None,
        timeout: float | None,
        become: Become | None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        on_line: OnLine | None = None,
    ) -> CommandResult:
        if not argv:
            raise ValueError("run needs a command (argv is empty)")
        command, preamble = self._command_line(argv, become=become, cwd=cwd, env=env, has_input=bool(stdin))
        started = time.monotonic()
        deadline = None if timeout is None else started + timeout
        channel = self._open_channel()
        pump = _Pump(channel, None if preamble is None else preamble + (stdin or b""), deadline, on_line)
        try:
            channel.exec_command(command)
            out, err = pump.run()
            rc = _exit_status(channel, deadline)
        except _DeadlinePassed:
            self._stop(channel, pump)
            raise CommandTimeout(f"command {argv[0]!r}", timeout or 0) from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise self._connection_lost(exc) from None
        finally:
            channel.close()
        return self._finished(argv, rc, out, err, started, become)

    def _command_line(
        self,
        argv: list[str],
        *,
        become: Become | None,
        cwd: str | None,
        env: dict[str, str] | None,
        has_input: bool = True,
    ) -> tuple[str, bytes | None]:
        """The remote shell command and what goes on stdin before the caller's input: the sudo
        password line, then the environment as one JSON line (read by `ENV_FROM_STDIN`). None when
        nothing goes on stdin (`has_input` false and no preamble): the command reads /dev/null and the
        channel is never sent an EOF, which paramiko can send after the channel closed when the
        command ends at once, and sshd then drops the whole connection (paramiko issue 1705)."""
        sudo = self._sudo.prefix(become.user) if become is not None and self._needs_sudo(become) else None
        full, preamble = command_with_preamble(argv, env, sudo)
        # The shell announces its pid (sshd starts it with setsid, so it is also the command's
        # process group) on stderr, then becomes the command; a timed-out command is killed by it.
        steps = [f"echo {PID_MARKER.decode()}$$ >&2"]
        if cwd:  # as the login user, then sudo (like the local connection's cwd)
            steps.append(f"cd -- {shlex.quote(cwd)} || exit 127")
        if not has_input and not preamble:
            steps.append(f"exec {shlex.join(full)} </dev/null")
            return "; ".join(steps), None
        steps.append(f"exec {shlex.join(full)}")
        return "; ".join(steps), preamble

    def _stop(self, channel: paramiko.Channel, pump: _Pump) -> None:
        """Stop a command that timed out or whose input failed: kill it, then close its channel. The
        other way round, the command would first see its input end cleanly, and could act on a cut-off
        stream (`cat > file && mv file ...`) before the kill arrives."""
        self._kill_process_group(pump.wait_for_pid(PID_WAIT_S))
        channel.close()

    def _kill_process_group(self, pid: int | None) -> None:
        """Best effort: SIGKILL the command's process group on the host, so that it does not go on
        running (commands under sudo as a non-root login may survive it)."""
        if pid is None:
            return
        group = ["kill", "-s", "KILL", "--", f"-{pid}"]
        with suppress(HostUnreachable, CommandTimeout):
            self._exec(group, stdin=None, timeout=self.connect_timeout, become=None)

    # ------------------------------------------------------------ become

    def _needs_sudo(self, become: Become | None) -> bool:
        return become is not None and become.user != self.settings.target.user

    def _passwordless(self, user: str) -> bool:
        probe = self._exec(["sudo", "-n", "-u", user, "--", "true"], stdin=None, timeout=30, become=None)
        return probe.rc == 0

    def _explain_sudo_failure(self, result: CommandResult, become: Become) -> CommandResult:
        login, host = self.settings.target.user, self.host_name
        check_sudo(result, user=become.user, login=login, host=host, credentials=self.credentials)
        return result

    # ------------------------------------------------------------ files

    def put(
        self,
        path: str,
        data: bytes,
        *,
        mode: int | None = None,
        owner: str | None = None,
        group: str | None = None,
        backup: bool = False,
        become: Become | None = None,
    ) -> dict[str, Any]:
        """Large files as ourselves go by SFTP (temp file in the same directory, attributes, fsync,
        atomic `posix-rename`); small ones, backups and writes as another user by the agent."""
        if (
            len(data) < SFTP_MIN_BYTES
            or backup
            or self._needs_sudo(become)
            or path.startswith("~")
            or self._sftp_unavailable
        ):
            return super().put(path, data, mode=mode, owner=owner, group=group, backup=backup, become=become)
        with self._sftp_lock:
            sftp = self._sftp_client()
            if sftp is None:
                return super().put(path, data, mode=mode, owner=owner, group=group, become=become)
            try:
                _SftpWrite(self, sftp, path).write(data, mode=mode, owner=owner, group=group)
            except OSError as exc:
                if not self._transport_alive():
                    raise self._connection_lost(exc) from None
                raise AgentError("write", path, exc.strerror or str(exc), exc.errno) from None
            except (paramiko.SSHException, EOFError) as exc:
                raise self._connection_lost(exc) from None
        return {"path": path}

    def _sftp_client(self) -> paramiko.SFTPClient | None:
        """The connection's SFTP session (opened once); None when the server offers no SFTP."""
        if self._sftp is None:
            transport = self._transport()
            try:
                self._sftp = paramiko.SFTPClient.from_transport(transport)
            except paramiko.SSHException:
                if not transport.is_active():
                    raise self._connection_lost(None) from None
                self._sftp_unavailable = True
        return self._sftp

    # ------------------------------------------------------------ transport

    def open(self) -> None:
        """Connect now rather than on first use (idempotent); raises HostUnreachable."""
        self._transport()

    def close(self) -> None:
        with self._lock:
            self._close_clients()

    def _close_clients(self) -> None:
        for closable in (self._sftp, self._client, *reversed(self._jump_clients)):
            if closable is not None:
                with suppress(Exception):
                    closable.close()
        self._sftp, self._client, self._jump_clients = None, None, []

    def _transport(self) -> paramiko.Transport:
        """The open transport, connecting on first use; a connection found dead is not reopened
        (the host is unreachable for the rest of the run)."""
        with self._lock:
            if self._lost is not None:
                raise HostUnreachable(self._lost)
            if self._client is None:
                self._connect()
            assert self._client is not None
            transport = self._client.get_transport()
            if transport is None or not transport.is_active():
                raise self._mark_lost(None)
            return transport

    def _transport_alive(self) -> bool:
        client = self._client
        transport = client.get_transport() if client is not None else None
        return transport is not None and transport.is_active()

    def _open_channel(self) -> paramiko.Channel:
        transport = self._transport()
        try:
            channel = transport.open_session(timeout=self.connect_timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise self._connection_lost(exc) from None
        with self._lock:
            self.round_trips += 1
        return channel

    def _connection_lost(self, exc: BaseException | None) -> HostUnreachable:
        with self._lock:
            if not self._transport_alive():
                return self._mark_lost(exc)
        if isinstance(exc, paramiko.SSHException) and "Timeout" in str(exc):
            return HostUnreachable(f"{self.label}: no answer within {self.connect_timeout:g}s ({exc})")
        return HostUnreachable(f"{self.label}: SSH channel failed: {exc}")  # the connection lives on

    def _mark_lost(self, exc: BaseException | None) -> HostUnreachable:
        """Caller holds the lock."""
        reason = f": {exc}" if exc is not None and str(exc) else ""
        self._lost = f"{self.label}: the SSH connection was lost (host or sshd went away){reason}"
        self._close_clients()
        return HostUnreachable(self._lost)

    def _connect(self) -> None:
        """Log in through the jump hosts (each a direct-tcpip channel of the previous) or a
        ProxyCommand, then to the target. Caller holds the lock."""
        started = time.monotonic()
        settings = self.settings
        sock: Any = None
        try:
            hops = [*settings.jumps, settings.target]
            for jump, following in zip(settings.jumps, hops[1:]):
                client = self._login(jump, sock, f"{self.host_name}: jump host {jump}")
                self._jump_clients.append(client)
                sock = self._tunnel(client, jump, following)
            if settings.proxy_command:
                sock = paramiko.ProxyCommand(settings.proxy_command)
            self._client = self._login(settings.target, sock, self.label)
        except BaseException:
            self._close_clients()
            raise
        self.connections += 1
        self.connect_s = time.monotonic() - started

    def _tunnel(self, client: paramiko.SSHClient, jump: Endpoint, following: Endpoint) -> paramiko.Channel:
        try:
            return client.get_transport().open_channel(
                "direct-tcpip",
                (following.hostname, following.port),
                ("127.0.0.1", 0),
                timeout=self.connect_timeout,
            )
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise HostUnreachable(
                f"{self.host_name}: jump host {jump} could not connect to "
                f"{following.hostname}:{following.port}: {exc}"
            ) from None

    def _login(self, endpoint: Endpoint, sock: Any, label: str) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        self.known_hosts.load(client.get_host_keys())
        client.set_missing_host_key_policy(
            hostkeys.VerifyingPolicy(self.known_hosts, accept_new=self.accept_new_hostkeys, label=label)
        )
        missing = [f for f in endpoint.key_files if not os.path.isfile(f)]
        if missing:
            raise HostUnreachable(f"{label}: private key file {missing[0]} does not exist")
        try:
            client.connect(**self._connect_options(endpoint, sock))
        except Exception as exc:
            client.close()
            if isinstance(exc, HostUnreachable):
                raise
            raise HostUnreachable(f"{label}: {self._login_problem(exc, endpoint)}") from None
        transport = client.get_transport()
        transport.set_keepalive(self.keepalive_s)
        if isinstance(transport.sock, socket.socket):
            _tune_socket(transport.sock, self.keepalive_s)
        return client

    def _connect_options(self, endpoint: Endpoint, sock: Any) -> dict[str, Any]:
        return {
            "hostname": endpoint.hostname,
            "port": endpoint.port,
            "username": endpoint.user,
            "password": self.credentials.ssh_password,
            "passphrase": self.credentials.key_passphrase,
            "key_filename": list(endpoint.key_files) or None,
            "allow_agent": not endpoint.identities_only,
            "look_for_keys": not endpoint.identities_only,
            "sock": sock,
            "timeout": self.connect_timeout,
            "banner_timeout": self.connect_timeout,
            "auth_timeout": self.connect_timeout,
            "channel_timeout": self.connect_timeout,
        }

    def _login_problem(self, exc: Exception, endpoint: Endpoint) -> str:
        """What went wrong, in words (never with a password or passphrase in them)."""
        if isinstance(exc, paramiko.BadHostKeyException):
            name = hostkeys.known_hosts_name(endpoint.hostname, endpoint.port)
            return hostkeys.changed_key_message(
                "host key verification failed", name, exc.key, exc.expected_key, self.known_hosts
            )
        if isinstance(exc, paramiko.PasswordRequiredException):
            return f"the private key is encrypted: set {ENV_KEY_PASSPHRASE} to its passphrase"
        if isinstance(exc, paramiko.AuthenticationException):
            tried = [*endpoint.key_files, "the ssh-agent and ~/.ssh/id_* keys"][
                : len(endpoint.key_files) + (0 if endpoint.identities_only else 1)
            ]
            if self.credentials.ssh_password:
                tried.append(f"the password from {self.credentials.ssh_password_source}")
            message = f"authentication as '{endpoint.user}' failed (tried: {', '.join(tried) or 'nothing'})"
            return (
                message
                if self.credentials.ssh_password
                else f"{message}; to log in with a password, {ASK_PASSWORD}"
            )
        if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
            reasons = {(e.strerror or str(e)).lower() for e in exc.errors.values()}
            return f"{', '.join(sorted(reasons))} (port {endpoint.port})"
        if isinstance(exc, socket.timeout):
            return f"no answer within {self.connect_timeout:g}s"
        if isinstance(exc, socket.gaierror):
            return f"cannot resolve host name {endpoint.hostname!r}"
        if isinstance(exc, OSError):
            return exc.strerror or str(exc)
        return str(exc) or type(exc).__name__


# ---------------------------------------------------------------- command I/O


def _tune_socket(sock: socket.socket, keepalive_s: int) -> None:
    """No Nagle delay (a command round trip drops from ~45 ms to ~3 ms), and a peer that vanished
    without a word (power off, network gone) noticed by the kernel within about a minute."""
    options = [
        (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", None), keepalive_s),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", None), 5),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", None), 6),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_USER_TIMEOUT", None), (keepalive_s + 30) * 1000),
    ]
    for level, option, value in options:
        if option is not None:
            with suppress(OSError):
                sock.setsockopt(level, option, value)


class _DeadlinePassed(Exception):
    pass


class _Pump:
    """Feeds stdin and collects stdout/stderr of one channel at the same time, so that neither side
    waits for the other (a command writing much before reading all its input cannot deadlock)."""

    def __init__(
        self, channel: paramiko.Channel, stdin: bytes | None, deadline: float | None, on_line: OnLine | None
    ) -> None:
        self.channel = channel
        self.sends_input = stdin is not None  # else the command reads /dev/null: no EOF to send
        self.pending = memoryview(stdin or b"")
        self.deadline = deadline
        self.lines = _LineSplitter(on_line) if on_line else None
        self.out = bytearray()
        self.err = bytearray()
        self.pid: int | None = None
        self._looking_for_pid = True

    def run(self) -> tuple[bytes, bytes]:
        channel = self.channel
        channel.setblocking(False)
        if self.sends_input and not self.pending:
            channel.shutdown_write()
        while True:
            self._send()
            received = self._receive()
            if (channel.eof_received or channel.closed) and not received and not self._ready():
                break
            if not received:
                self._wait()
        if self.lines is not None:
            self.lines.flush()
        return bytes(self.out), bytes(self.err)

    def _ready(self) -> bool:
        return bool(self.channel.recv_ready() or self.channel.recv_stderr_ready())

    def _send(self) -> None:
        channel = self.channel
        if not self.pending:
            return
        if channel.eof_received or channel.closed:
            self.pending = memoryview(b"")  # the command is gone; its input no longer matters
            return
        while self.pending and channel.send_ready():
            sent = channel.send(self.pending[:CHUNK])
            self.pending = self.pending[sent:]
        if not self.pending:
            channel.shutdown_write()

    def _receive(self) -> bool:
        received = False
        while self.channel.recv_ready():
            data = self.channel.recv(CHUNK)
            if not data:
                break
            self.out += data
            if self.lines is not None:
                self.lines.feed(data)
            received = True
        while self.channel.recv_stderr_ready():
            data = self.channel.recv_stderr(CHUNK)
            if not data:
                break
            self.err += data
            received = True
        if received and self._looking_for_pid:
            self._take_pid()
        return received

    def wait_for_pid(self, timeout: float) -> int | None:
        """The command's pid, reading what it prints until its shell has announced it (`timeout` at most)."""
        give_up = time.monotonic() + timeout
        while self.pid is None and self._looking_for_pid and not self.channel.closed:
            if time.monotonic() > give_up:
                break
            if not self._receive():
                select.select([self.channel], [], [], 0.05)
        return self.pid

    def _take_pid(self) -> None:
        """Remove the shell's pid announcement from stderr, once it is there."""
        start = self.err.find(PID_MARKER, 0, PID_SEARCH_BYTES)
        end = self.err.find(b"\n", start)
        if start < 0 or end < 0:
            self._looking_for_pid = len(self.err) < PID_SEARCH_BYTES  # a shell that printed none
            return
        with suppress(ValueError):
            self.pid = int(self.err[start + len(PID_MARKER) : end])
        del self.err[start : end + 1]
        self._looking_for_pid = False

    def _wait(self) -> None:
        limit = SEND_WAIT_S if self.pending else IDLE_WAIT_S
        if self.deadline is not None:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise _DeadlinePassed
            limit = min(limit, remaining)
        select.select([self.channel], [], [], limit)


class _SourceError(Exception):
    """What the stream feeding a command raised; re-raised once the command is stopped."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


class _SourcePump(_Pump):
    """A `_Pump` whose stdin comes from an iterator of chunks, sent with blocking writes (each waits
    for the channel's window, up to the deadline); what the command prints meanwhile is collected."""

    def __init__(self, channel: paramiko.Channel, deadline: float | None) -> None:
        super().__init__(channel, b"", deadline, None)
        self.sent = 0

    def feed(self, preamble: bytes, chunks: Iterator[bytes], on_progress: OnBytes | None) -> None:
        """Send the preamble, then every chunk, then EOF; stops early when the command has gone."""
        if self._send_all(preamble):
            while True:
                try:
                    chunk = next(chunks, None)
                except BaseException as exc:
                    raise _SourceError(exc) from exc
                if chunk is None or not self._send_all(chunk):
                    break
                self.sent += len(chunk)
                if on_progress is not None:
                    on_progress(self.sent)
                self._receive()
        self.channel.shutdown_write()

    def _send_all(self, data: bytes) -> bool:
        """False when the command is gone (its channel closed) before all of `data` went out."""
        view = memoryview(data)
        channel = self.channel
        while view:
            if channel.closed or channel.eof_received:
                return False
            channel.settimeout(self._remaining())
            try:
                sent = channel.send(view)
            except TimeoutError:
                raise _DeadlinePassed from None
            except OSError:
                if channel.closed:
                    return False
                raise
            if sent == 0:
                return False
            view = view[sent:]
        return True

    def _remaining(self) -> float | None:
        if self.deadline is None:
            return None
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise _DeadlinePassed
        return remaining


class _OutputReader(_SourcePump):
    """Yields a command's stdout as it arrives (blocking reads up to the deadline), keeping stderr."""

    def chunks(self) -> Iterator[bytes]:
        channel = self.channel
        while True:
            channel.settimeout(self._remaining())
            try:
                data = channel.recv(STREAM_CHUNK)
            except TimeoutError:
                raise _DeadlinePassed from None
            self.drain_stderr()
            if not data:
                return
            yield data

    def drain_stderr(self) -> None:
        while self.channel.recv_stderr_ready():
            data = self.channel.recv_stderr(CHUNK)
            if not data:
                break
            self.err += data
        if self._looking_for_pid:
            self._take_pid()


class _LineSplitter:
    def __init__(self, on_line: OnLine) -> None:
        self.on_line = on_line
        self.partial = b""

    def feed(self, data: bytes) -> None:
        *complete, self.partial = (self.partial + data).split(b"\n")
        for line in complete:
            self.on_line(line.decode("utf-8", "replace"))

    def flush(self) -> None:
        if self.partial:
            self.on_line(self.partial.decode("utf-8", "replace"))
            self.partial = b""


def _exit_status(channel: paramiko.Channel, deadline: float | None) -> int | None:
    """The command's exit status; None when the channel closed without one (connection lost)."""
    remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
    if not channel.status_event.wait(remaining):
        raise _DeadlinePassed
    if channel.exit_status_ready() and channel.exit_status != -1:
        return int(channel.exit_status)
    transport = channel.get_transport()
    if transport is not None and transport.is_active():
        return -1  # killed by a signal (exit-signal), or the server sent no status
    return None


# ---------------------------------------------------------------- SFTP upload


class _SftpWrite:
    """One atomic upload, with the agent's `write` semantics: a new file gets `mode` (else the
    umask's default), an existing one keeps its mode and owner unless told otherwise."""

    def __init__(self, conn: SSHConnection, sftp: paramiko.SFTPClient, path: str) -> None:
        self.conn = conn
        self.sftp = sftp
        self.path = path
        directory, name = posixpath.split(path)
        self.tmp = posixpath.join(directory, f".{name}.{secrets.token_hex(4)}.sparkprov-tmp")

    def write(self, data: bytes, *, mode: int | None, owner: str | None, group: str | None) -> None:
        existing = self._stat(self.path)
        if mode is None and existing is not None:
            mode = stat.S_IMODE(existing.st_mode)
        try:
            self._upload(data, private=mode is not None)
            self._chown(owner, group, existing)
            if mode is not None:
                self.sftp.chmod(self.tmp, mode)  # after chown, which clears setuid bits
            self.sftp.posix_rename(self.tmp, self.path)
        except BaseException:
            with suppress(Exception):
                self.sftp.remove(self.tmp)
            raise

    def _stat(self, path: str) -> paramiko.SFTPAttributes | None:
        try:
            return self.sftp.stat(path)
        except FileNotFoundError:
            return None

    def _upload(self, data: bytes, *, private: bool) -> None:
        with self.sftp.open(self.tmp, "wx") as handle:
            if private:  # nobody reads the content before the final mode is set
                handle.chmod(0o600)
            handle.set_pipelined(True)
            for start in range(0, len(data), CHUNK):
                handle.write(data[start : start + CHUNK])
            handle.flush()
            with suppress(OSError):  # servers without the extension: the rename is still atomic
                self.sftp._request(CMD_EXTENDED, "fsync@openssh.com", handle.handle)

    def _chown(self, owner: str | None, group: str | None, existing: paramiko.SFTPAttributes | None) -> None:
        want_uid = owner if owner is not None else (existing.st_uid if existing is not None else None)
        want_gid = group if group is not None else (existing.st_gid if existing is not None else None)
        if want_uid is None and want_gid is None:
            return
        if _numeric(want_uid) and _numeric(want_gid):
            current = self.sftp.stat(self.tmp)
            uid = current.st_uid if want_uid is None else int(want_uid)
            gid = current.st_gid if want_gid is None else int(want_gid)
            if (uid, gid) != (current.st_uid, current.st_gid):
                self.sftp.chown(self.tmp, uid, gid)
            return
        # Names are resolved on the host, by the agent (one round trip).
        attrs = {"op": "attrs", "path": self.tmp, "owner": want_uid, "group": want_gid}
        try:
            self.conn._agent_checked([attrs], become=None)
        except AgentError as exc:
            raise AgentError("write", self.path, exc.message, exc.errno) from None


def _numeric(value: Any) -> bool:
    return value is None or isinstance(value, int) or str(value).isdigit()

"""Host key verification for SSH, the way OpenSSH does it for the user.

Keys come from the user's known_hosts file (`~/.ssh/known_hosts`, `UserKnownHostsFile` in
`~/.ssh/config`, or an explicit override) and the global files (`/etc/ssh/ssh_known_hosts`);
hashed (`|1|...`) entries are honoured. An unknown host fails with the key's SHA256 fingerprint and
how to accept it; with accept-new (`--accept-new-hostkeys`, OpenSSH's `StrictHostKeyChecking
accept-new`) its key is appended to the user's file and the connection goes on. A changed key always
fails: accept-new never replaces a key. There is no auto-add policy.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
from paramiko.hostkeys import HostKeyEntry, InvalidHostKey

from sparkprov.connection.base import HostUnreachable

DEFAULT_USER_FILE = "~/.ssh/known_hosts"
DEFAULT_GLOBAL_FILES = ("/etc/ssh/ssh_known_hosts",)
DEFAULT_PORT = 22

# Appends from the threads of one run are serialised here, those of other processes by an flock
# on the file's directory.
_WRITE_LOCK = threading.Lock()


def fingerprint_of_blob(blob: bytes) -> str:
    """OpenSSH's `SHA256:` fingerprint: unpadded base64 of the SHA-256 of the key blob."""
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def fingerprint(key: paramiko.PKey) -> str:
    return fingerprint_of_blob(key.asbytes())


def describe_key(key: paramiko.PKey) -> str:
    """'ssh-ed25519 key SHA256:...', as messages show a key."""
    return f"{key.get_name()} key {fingerprint(key)}"


def known_hosts_name(host: str, port: int = DEFAULT_PORT) -> str:
    """The name a host has in known_hosts: `host` on port 22, `[host]:port` elsewhere."""
    return host if port == DEFAULT_PORT else f"[{host}]:{port}"


@dataclass(frozen=True)
class KnownHosts:
    """Where host keys are read from, and the one file new keys are written to (`user_files[0]`)."""

    user_files: tuple[Path, ...]
    global_files: tuple[Path, ...] = tuple(Path(p) for p in DEFAULT_GLOBAL_FILES)

    @property
    def write_file(self) -> Path:
        return self.user_files[0]

    @classmethod
    def resolve(
        cls, override: str | os.PathLike[str] | None, ssh_config: dict[str, Any] | None = None
    ) -> KnownHosts:
        """The override (constructor argument or $SPARKPROV_KNOWN_HOSTS) replaces the user files;
        otherwise `UserKnownHostsFile`/`GlobalKnownHostsFile` from ssh config, else OpenSSH's defaults."""
        config = ssh_config or {}
        if override is not None:
            user = [str(override)]
        else:
            user = _config_paths(config.get("userknownhostsfile")) or [DEFAULT_USER_FILE]
        global_ = _config_paths(config.get("globalknownhostsfile")) or list(DEFAULT_GLOBAL_FILES)
        return cls(_expanded(user), _expanded(global_))

    def all_files(self) -> tuple[Path, ...]:
        return self.user_files + self.global_files

    def load(self, into: paramiko.HostKeys | None = None) -> paramiko.HostKeys:
        """Every readable file's keys; missing files and lines paramiko cannot use are skipped,
        as OpenSSH skips them. For the same host and key type the user's file wins over the
        global one (read last, as paramiko keeps the last key it is given)."""
        return _load(self.all_files()[::-1], into if into is not None else paramiko.HostKeys())

    def file_with(self, name: str) -> Path | None:
        """The first file that has a key for `name` (for messages about a changed key)."""
        for path in self.all_files():
            if _load([path], paramiko.HostKeys()).lookup(name) is not None:
                return path
        return None


def _load(paths: tuple[Path, ...] | list[Path], keys: paramiko.HostKeys) -> paramiko.HostKeys:
    for path in paths:
        for entry in _entries(path):
            for name in entry.hostnames:
                keys.add(name, entry.key.get_name(), entry.key)
    return keys


def _config_paths(value: Any) -> list[str]:
    """ssh config path lists: paramiko gives a string (space-separated) or a list of them."""
    if not value:
        return []
    items = value if isinstance(value, list) else [value]
    paths = [p for item in items for p in str(item).split()]
    return [] if paths == ["none"] else paths


def _expanded(paths: list[str]) -> tuple[Path, ...]:
    return tuple(Path(os.path.expanduser(p)) for p in paths)


def _entries(path: Path) -> Iterator[HostKeyEntry]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", "@")):  # markers (@cert-authority, @revoked) unsupported
            continue
        try:
            entry = HostKeyEntry.from_line(line, number)
        except (paramiko.SSHException, InvalidHostKey, binascii.Error, ValueError):
            continue
        if entry is not None and entry.key is not None:
            yield entry


def append_known_host(path: Path, name: str, key: paramiko.PKey) -> None:
    """Add `name keytype base64` to a known_hosts file, atomically (temp file, fsync, rename);
    a new file is created 0600 in a 0700 directory, an existing one keeps its mode."""
    line = f"{name} {key.get_name()} {key.get_base64()}\n"
    target = path.resolve() if path.is_symlink() else path
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _WRITE_LOCK, _directory_lock(target.parent):
        if target.exists() and not target.is_file():  # e.g. /dev/null: nothing to replace atomically
            with target.open("a", encoding="utf-8") as handle:
                handle.write(line)
            return
        current = target.read_bytes() if target.exists() else b""
        if current and not current.endswith(b"\n"):
            current += b"\n"
        mode = target.stat().st_mode & 0o7777 if target.exists() else 0o600
        _replace_file(target, current + line.encode("utf-8"), mode)


@contextlib.contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _replace_file(target: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def unknown_host_message(label: str, name: str, key: paramiko.PKey, known_hosts: KnownHosts) -> str:
    host, port = _split_name(name)
    keytype = key.get_name()
    scan = f"ssh-keyscan{'' if port == DEFAULT_PORT else f' -p {port}'} -t {keytype} {host}"
    return (
        f"{label}: host key verification failed: the host is not in known_hosts; it presented "
        f"{describe_key(key)}. Verify that fingerprint (on the host: ssh-keygen -lf "
        f"/etc/ssh/ssh_host_*_key.pub), then run with --accept-new-hostkeys, or add it to "
        f"{known_hosts.write_file} with `{scan} >> {known_hosts.write_file}`"
    )


def changed_key_message(
    label: str, name: str, presented: paramiko.PKey, expected: paramiko.PKey, known_hosts: KnownHosts
) -> str:
    where = known_hosts.file_with(name)
    listed = f" in {where}" if where else ""
    remove = f"ssh-keygen -R '{name}'" + (f" -f {where}" if where else "")
    return (
        f"{label}: HOST KEY CHANGED: known_hosts{listed} has {describe_key(expected)} for {name}, "
        f"but the host presented {describe_key(presented)}. Someone may be intercepting the "
        "connection (man-in-the-middle), or the host was reinstalled. If the change is expected, "
        f"remove the old key with `{remove}` and connect again; --accept-new-hostkeys never "
        "replaces a changed key"
    )


def _split_name(name: str) -> tuple[str, int]:
    if name.startswith("[") and "]:" in name:
        host, _, port = name[1:].partition("]:")
        return host, int(port)
    return name, DEFAULT_PORT


class VerifyingPolicy(paramiko.MissingHostKeyPolicy):
    """paramiko calls this only for hosts with no key in known_hosts (a different key raises
    BadHostKeyException in paramiko itself): refuse, or with accept_new record the key and go on."""

    def __init__(self, known_hosts: KnownHosts, *, accept_new: bool, label: str) -> None:
        self.known_hosts = known_hosts
        self.accept_new = accept_new
        self.label = label

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if not self.accept_new:
            raise HostUnreachable(unknown_host_message(self.label, hostname, key, self.known_hosts))
        try:
            append_known_host(self.known_hosts.write_file, hostname, key)
        except OSError as exc:
            raise HostUnreachable(
                f"{self.label}: could not record the new host key ({describe_key(key)}) in "
                f"{self.known_hosts.write_file}: {exc.strerror or exc}"
            ) from None
        client.get_host_keys().add(hostname, key.get_name(), key)

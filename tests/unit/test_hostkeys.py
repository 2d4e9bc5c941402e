"""known_hosts policy without a network: OpenSSH fingerprints, the `[host]:port` form, atomic and
private writes, hashed entries, where keys are read from, and the messages an unknown or changed
key produces."""

from __future__ import annotations

import base64
from pathlib import Path

import paramiko
import pytest

from sparkprov.connection.base import HostUnreachable
from sparkprov.connection.hostkeys import (
    KnownHosts,
    VerifyingPolicy,
    append_known_host,
    changed_key_message,
    fingerprint,
    known_hosts_name,
)

# Public keys and their fingerprints as `ssh-keygen -lf` printed them (OpenSSH 9.2).
ED25519 = "AAAAC3NzaC1lZDI1NTE5AAAAIAd+x9ka4f88NurPMv+KYtIgiM2yvzHUZvzDg/WKddvt"
ED25519_FP = "SHA256:WFwkGe0tKrrUDQjm77usO2EUNPbWvfMbsGrGjKWrV8c"
ECDSA = (
    "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBIEGOJh0UCDNZQBiqfU20i35EuA6ZHE8pwU4CuVn/x1dQ2mY"
    "/vVXWZftKlKUeA3/xb7FMOQYccJ1foYSRXvBjLI="
)
ECDSA_FP = "SHA256:1EWFTipCjEOvONcyhwWAfv+8PDap8Ssq8flq1fHGTLw"


def _key(kind: str, blob: str) -> paramiko.PKey:
    return paramiko.PKey.from_type_string(kind, base64.b64decode(blob))


@pytest.fixture
def ed25519() -> paramiko.PKey:
    return _key("ssh-ed25519", ED25519)


@pytest.fixture
def ecdsa() -> paramiko.PKey:
    return _key("ecdsa-sha2-nistp256", ECDSA)


def test_fingerprints_match_openssh(ed25519: paramiko.PKey, ecdsa: paramiko.PKey) -> None:
    assert fingerprint(ed25519) == ED25519_FP
    assert fingerprint(ecdsa) == ECDSA_FP
    assert "=" not in fingerprint(ed25519)


def test_known_hosts_names() -> None:
    assert known_hosts_name("10.0.0.5") == "10.0.0.5"
    assert known_hosts_name("10.0.0.5", 22) == "10.0.0.5"
    assert known_hosts_name("10.0.0.5", 2222) == "[10.0.0.5]:2222"
    assert known_hosts_name("fd00::5", 2222) == "[fd00::5]:2222"


def test_append_creates_a_private_file_in_a_private_dir(tmp_path: Path, ed25519: paramiko.PKey) -> None:
    path = tmp_path / "ssh" / "known_hosts"
    append_known_host(path, known_hosts_name("10.0.0.5", 2222), ed25519)
    assert path.read_text() == f"[10.0.0.5]:2222 ssh-ed25519 {ED25519}\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["known_hosts"]  # no temp file left


def test_append_keeps_existing_lines_and_mode(
    tmp_path: Path, ed25519: paramiko.PKey, ecdsa: paramiko.PKey
) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(f"# mine\nold.example ecdsa-sha2-nistp256 {ECDSA}")  # no final newline
    path.chmod(0o644)
    append_known_host(path, "10.0.0.5", ed25519)
    assert path.read_text().splitlines() == [
        "# mine",
        f"old.example ecdsa-sha2-nistp256 {ECDSA}",
        f"10.0.0.5 ssh-ed25519 {ED25519}",
    ]
    assert path.stat().st_mode & 0o777 == 0o644


def test_appended_port_entries_are_found_by_lookup(tmp_path: Path, ed25519: paramiko.PKey) -> None:
    path = tmp_path / "known_hosts"
    append_known_host(path, known_hosts_name("10.0.0.5", 2222), ed25519)
    keys = KnownHosts((path,), ()).load()
    assert keys.check("[10.0.0.5]:2222", ed25519)
    assert keys.lookup("10.0.0.5") is None  # port 22 is another host as far as keys go


def test_hashed_and_unusable_lines(tmp_path: Path, ed25519: paramiko.PKey, ecdsa: paramiko.PKey) -> None:
    path = tmp_path / "known_hosts"
    hashed = paramiko.HostKeys.hash_host("spark1.lan")
    path.write_text(
        "\n".join(
            [
                f"{hashed} ssh-ed25519 {ED25519}",
                "broken.example ssh-ed25519 !!!not-base64!!!",
                f"@cert-authority *.lan ecdsa-sha2-nistp256 {ECDSA}",
                "short-line",
                f"a.lan,b.lan ecdsa-sha2-nistp256 {ECDSA}",
            ]
        )
    )
    keys = KnownHosts((path,), ()).load()
    assert keys.check("spark1.lan", ed25519)
    assert keys.check("b.lan", ecdsa) and keys.check("a.lan", ecdsa)
    assert keys.lookup("broken.example") is None


def test_the_users_file_wins_over_the_global_one(tmp_path: Path, ed25519: paramiko.PKey) -> None:
    user, global_ = tmp_path / "user", tmp_path / "global"
    stale = paramiko.PKey.from_type_string("ssh-ed25519", base64.b64decode(ED25519)[:-1] + b"\x00")
    global_.write_text(f"10.0.0.5 ssh-ed25519 {stale.get_base64()}\n")
    append_known_host(user, "10.0.0.5", ed25519)
    assert KnownHosts((user,), (global_,)).load().check("10.0.0.5", ed25519)


def test_where_keys_are_read_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    default = KnownHosts.resolve(None)
    assert default.user_files == (tmp_path / ".ssh" / "known_hosts",)
    assert default.global_files == (Path("/etc/ssh/ssh_known_hosts"),)
    configured = KnownHosts.resolve(
        None, {"userknownhostsfile": "~/kh1 ~/kh2", "globalknownhostsfile": "/etc/g1"}
    )
    assert configured.user_files == (tmp_path / "kh1", tmp_path / "kh2")
    assert configured.write_file == tmp_path / "kh1"
    assert configured.global_files == (Path("/etc/g1"),)
    overridden = KnownHosts.resolve(tmp_path / "test_kh", {"userknownhostsfile": "~/kh1"})
    assert overridden.user_files == (tmp_path / "test_kh",)


def test_unknown_host_is_refused_with_the_fingerprint(tmp_path: Path, ed25519: paramiko.PKey) -> None:
    known = KnownHosts((tmp_path / "known_hosts",), ())
    policy = VerifyingPolicy(known, accept_new=False, label="spark1 (root@10.0.0.5:2222)")
    with pytest.raises(HostUnreachable) as caught:
        policy.missing_host_key(paramiko.SSHClient(), "[10.0.0.5]:2222", ed25519)
    message = str(caught.value)
    assert message.startswith("spark1 (root@10.0.0.5:2222): ")
    assert ED25519_FP in message and "ssh-ed25519" in message
    assert "--accept-new-hostkeys" in message
    assert "ssh-keyscan -p 2222 -t ssh-ed25519 10.0.0.5" in message
    assert not (tmp_path / "known_hosts").exists()


def test_accept_new_records_and_remembers(tmp_path: Path, ed25519: paramiko.PKey) -> None:
    known = KnownHosts((tmp_path / "known_hosts",), ())
    client = paramiko.SSHClient()
    VerifyingPolicy(known, accept_new=True, label="spark1").missing_host_key(client, "10.0.0.5", ed25519)
    assert client.get_host_keys().check("10.0.0.5", ed25519)
    assert known.load().check("10.0.0.5", ed25519)


def test_accept_new_that_cannot_write_says_so(tmp_path: Path, ed25519: paramiko.PKey) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    known = KnownHosts((blocker / "known_hosts",), ())  # its directory is a file
    with pytest.raises(HostUnreachable, match="could not record the new host key"):
        VerifyingPolicy(known, accept_new=True, label="h").missing_host_key(
            paramiko.SSHClient(), "10.0.0.5", ed25519
        )


def test_changed_key_message(tmp_path: Path, ed25519: paramiko.PKey, ecdsa: paramiko.PKey) -> None:
    path = tmp_path / "known_hosts"
    append_known_host(path, "10.0.0.5", ecdsa)
    message = changed_key_message("spark1", "10.0.0.5", ed25519, ecdsa, KnownHosts((path,), ()))
    assert "HOST KEY CHANGED" in message
    assert ED25519_FP in message and ECDSA_FP in message
    assert f"ssh-keygen -R '10.0.0.5' -f {path}" in message
    assert "never replaces a changed key" in message

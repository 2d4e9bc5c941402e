"""A fleet of real sshd hosts, each in its own network namespace on one bridge of the session's slot.

Host `hN` of a session's first fleet is netns `sp<slot>-<10+N>` at 10.200.<slot>.<10+N>:22 (slot 0:
10.200.0.11 ...). Each sshd runs in its own mount and UTS namespace: its hostname is `hN`, and a
stock ~/.bashrc is bind-mounted over root's, whose `pyenv init` would add ~100 ms to every command and
contend for a lock when many hosts run at once. The hosts share the filesystem; give each its own
directory through the `base_dir` host variable that `write_inventory` writes.
"""

from __future__ import annotations

import pwd
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import CompletedProcess

import yaml

from tests.infra import net
from tests.infra.process import Daemon, run, stop_all
from tests.infra.slots import Slot

FLEET_PACKAGES = ("openssh-server", "openssh-client", "iproute2", "iptables")
SSHD = "/usr/sbin/sshd"
STOCK_BASHRC = Path("/usr/share/base-files/dot.bashrc")
FIRST_OCTET = 11
START_TIMEOUT_S = 20

# $1 hostname, $2 stock bashrc, $3 root's bashrc, $4 sshd_config
_LAUNCH = 'hostname "$1" && { [ ! -e "$3" ] || mount --bind "$2" "$3"; } && exec {sshd} -D -e -f "$4"'

_SSHD_CONFIG = """\
ListenAddress {ip}
Port 22
HostKey {dir}/ssh_host_ed25519_key
PidFile {dir}/sshd.pid
AuthorizedKeysFile {authorized_keys}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
PrintLastLog no
MaxStartups 200
MaxSessions 100
Subsystem sftp internal-sftp
"""


@dataclass
class SshHost:
    """One fleet member; `host_key_pub` is its public host key as "ssh-ed25519 AAAA..."."""

    name: str
    ip: str
    netns: str
    dir: Path
    host_key_pub: str
    daemon: Daemon = field(repr=False)
    port: int = 22

    @property
    def pid(self) -> int | None:
        """The sshd listener's pid; None once it is killed."""
        return self.daemon.pid

    def answers(self) -> bool:
        """True when an SSH banner comes back from ip:port."""
        try:
            with socket.create_connection((self.ip, self.port), timeout=1) as sock:
                return sock.recv(8).startswith(b"SSH-")
        except OSError:
            return False


@dataclass
class Fleet:
    """Hosts h1..hN with one client key authorised for root on all of them."""

    hosts: list[SshHost]
    dir: Path
    network: FleetNetwork = field(repr=False)
    octets: list[int] = field(default_factory=list, repr=False)

    @property
    def client_key(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def known_hosts_file(self) -> Path:
        return self.dir / "known_hosts"

    def host(self, name: str) -> SshHost:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(f"no host {name!r} in this fleet ({', '.join(h.name for h in self.hosts)})")

    def kill(self, host: SshHost | str) -> None:
        """SIGKILL a host's sshd with its sessions, as if the host had died. sshd gives each
        connection its own session, so every process in the host's network namespace goes."""
        target = self._resolve(host)
        target.daemon.kill()
        net.kill_netns_processes(target.netns)

    def ssh_argv(self, host: SshHost | str, command: str) -> list[str]:
        """OpenSSH client argv with strict host key checking against `known_hosts_file` only."""
        target = self._resolve(host)
        options = {
            "IdentitiesOnly": "yes",
            "UserKnownHostsFile": str(self.known_hosts_file),
            "GlobalKnownHostsFile": "/dev/null",
            "StrictHostKeyChecking": "yes",
            "BatchMode": "yes",
            "ConnectTimeout": "5",
        }
        flags = [arg for key, value in options.items() for arg in ("-o", f"{key}={value}")]
        return ["ssh", "-F", "/dev/null", "-i", str(self.client_key), *flags, "-p", str(target.port),
                f"root@{target.ip}", command]  # fmt: skip

    def ssh(self, host: SshHost | str, command: str, check: bool = True) -> CompletedProcess[str]:
        return run(self.ssh_argv(host, command), check=check, timeout=60)

    def write_inventory(self, path: Path | str, base_dir: Path | str) -> Path:
        """An Ansible-shaped YAML inventory; each host gets `base_dir: <base_dir>/<name>`."""
        hosts = {
            host.name: {
                "ansible_host": host.ip,
                "ansible_port": host.port,
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(self.client_key),
                "base_dir": f"{base_dir}/{host.name}",
            }
            for host in self.hosts
        }
        path = Path(path)
        path.write_text(yaml.safe_dump({"all": {"hosts": hosts}}, sort_keys=False))
        return path

    def close(self) -> None:
        """Stop the sshds and remove the hosts' namespaces; the addresses go back to the pool."""
        self.network.close_fleet(self)

    def _resolve(self, host: SshHost | str) -> SshHost:
        return self.host(host) if isinstance(host, str) else host


class FleetNetwork:
    """The slot's fleet bridge (created on first use) and its address pool; starts and stops fleets."""

    def __init__(self, slot: Slot) -> None:
        self.slot = slot
        self.fleets: list[Fleet] = []
        self._free = list(range(FIRST_OCTET, 255))
        self._started = 0
        self._bridge_up = False

    def start_fleet(self, count: int, extra_sshd_config: str = "") -> Fleet:
        """Start `count` hosts and wait until every sshd answers. `extra_sshd_config` is appended to
        each host's sshd_config, with `{name}`, `{ip}` and `{dir}` (the host's state directory)
        replaced, e.g. "SetEnv DOCKER_HOST=unix://{dir}/docker/docker.sock"."""
        if not 0 < count <= len(self._free):
            raise ValueError(f"cannot start {count} hosts: {len(self._free)} addresses left in the pool")
        self._ensure_bridge()
        octets, self._free = self._free[:count], self._free[count:]
        self._started += 1
        fleet = Fleet([], self.slot.dir / f"fleet{self._started}", self, octets)
        self.fleets.append(fleet)
        try:
            _write_client_key(fleet)
            for index, octet in enumerate(octets, 1):
                fleet.hosts.append(self._prepare_host(fleet, f"h{index}", octet, extra_sshd_config))
            fleet.known_hosts_file.write_text("".join(f"{h.ip} {h.host_key_pub}\n" for h in fleet.hosts))
            self._plug(fleet.hosts)
            _launch(fleet.hosts)
        except BaseException:
            fleet.close()
            raise
        return fleet

    def close_fleet(self, fleet: Fleet) -> None:
        if fleet not in self.fleets:
            return
        self.fleets.remove(fleet)
        stop_all([host.daemon for host in fleet.hosts], timeout=5)
        names = [host.netns for host in fleet.hosts]
        # A veth pair dies with either end; deleting it explicitly matters when another sshd's mount
        # namespace still pins this netns, which would otherwise keep the name busy.
        net.delete_links(names)
        net.delete_netns(names)
        # Forget the hosts' MAC addresses: a later fleet reusing an address would otherwise be
        # unreachable until the stale neighbour entry expires (20-30 s).
        net.flush_neighbours(self.slot.fleet_bridge)
        self._free = sorted({*self._free, *fleet.octets})

    def close(self) -> None:
        """Stop every fleet, then remove the bridge and its forwarding rule."""
        for fleet in list(self.fleets):
            fleet.close()
        if self._bridge_up:
            net.remove_forwarding(self.slot.fleet_bridge)
            net.delete_link(self.slot.fleet_bridge)
            self._bridge_up = False

    def _ensure_bridge(self) -> None:
        if not self._bridge_up:
            Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
            net.create_bridge(self.slot.fleet_bridge, f"{self.slot.fleet_subnet}.1/24")
            self._bridge_up = True
            net.allow_forwarding(self.slot.fleet_bridge)

    def _prepare_host(self, fleet: Fleet, name: str, octet: int, extra_config: str = "") -> SshHost:
        """Host key and sshd_config on disk; nothing runs yet."""
        host_dir = fleet.dir / name
        host_dir.mkdir(parents=True)
        ip = f"{self.slot.fleet_subnet}.{octet}"
        key = host_dir / "ssh_host_ed25519_key"
        _keygen(key, comment=name)
        config = host_dir / "sshd_config"
        extra = extra_config.replace("{name}", name).replace("{ip}", ip).replace("{dir}", str(host_dir))
        config.write_text(
            _SSHD_CONFIG.format(ip=ip, dir=host_dir, authorized_keys=fleet.dir / "authorized_keys") + extra
        )
        netns = f"{self.slot.netns_prefix}{octet}"
        daemon = Daemon("sshd", _launch_argv(netns, name, config), host_dir)
        return SshHost(name, ip, netns, host_dir, _public_key(key), daemon)

    def _plug(self, hosts: Sequence[SshHost]) -> None:
        """One netns per host with a veth on the bridge: root side named like the netns, inside eth0."""
        bridge = self.slot.fleet_bridge
        net.ip_batch(
            [
                line
                for host in hosts
                for line in (
                    f"netns add {host.netns}",
                    f"link add {host.netns} type veth peer name eth0 netns {host.netns}",
                    f"link set {host.netns} master {bridge} up",
                )
            ]
        )
        for host in hosts:
            inside = [f"addr add {host.ip}/24 dev eth0", "link set eth0 up", "link set lo up"]
            net.ip_batch(inside, netns=host.netns)


def _launch_argv(netns: str, hostname: str, config: Path) -> list[str]:
    script = _LAUNCH.replace("{sshd}", SSHD)
    root_bashrc = Path(pwd.getpwnam("root").pw_dir) / ".bashrc"
    return [
        "ip", "netns", "exec", netns,
        "unshare", "--mount", "--uts", "--propagation", "private",
        "sh", "-c", script, "sh", hostname, str(STOCK_BASHRC), str(root_bashrc), str(config),
    ]  # fmt: skip


def _launch(hosts: Sequence[SshHost]) -> None:
    """Start all sshds at once, then wait for each (`ip netns exec`, `unshare` and `sh` all exec,
    so the daemon's pid is sshd's)."""
    for host in hosts:
        host.daemon.start()
    for host in hosts:
        host.daemon.wait_ready(host.answers, timeout=START_TIMEOUT_S)


def _keygen(path: Path, comment: str) -> None:
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])


def _public_key(private_key: Path) -> str:
    """The public key as "type base64", without the comment."""
    return " ".join(private_key.with_suffix(".pub").read_text().split()[:2])


def _write_client_key(fleet: Fleet) -> None:
    fleet.dir.mkdir(parents=True)
    _keygen(fleet.client_key, comment="sparkprov-test-client")
    (fleet.dir / "authorized_keys").write_text(fleet.client_key.with_suffix(".pub").read_text())

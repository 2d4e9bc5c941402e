"""A private dockerd per fleet host, so that each SSH host has a Docker of its own.

The fleet's hosts share one filesystem and would otherwise share the machine's default socket. Each
host's daemon runs inside the host's network namespace with its own data-root, exec-root, pidfile
and a unix socket in the host's state directory; no bridge, no iptables, no forwarding, so it touches
neither the host's firewall nor other daemons. Start the fleet with `SSHD_DOCKER_ENV` as its
`extra_sshd_config`: sshd then sets DOCKER_HOST to the host's own socket in every session, so the
docker CLI run over SSH on hN talks to hN's daemon.

The hosts have no route to the registry on the machine's 127.0.0.1, so a host can only get an image
that it is given (`docker load`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import CompletedProcess

from tests.infra.dockerd import ping
from tests.infra.fleet import SshHost
from tests.infra.process import Daemon, run, stop_all

START_TIMEOUT_S = 30
SOCKET = "docker/docker.sock"
# For `FleetNetwork.start_fleet(extra_sshd_config=...)`: each host's sessions use its own daemon.
SSHD_DOCKER_ENV = f"SetEnv DOCKER_HOST=unix://{{dir}}/{SOCKET}\n"


@dataclass
class HostDockerd:
    """hN's dockerd: `env` for the docker CLI run from the root namespace against it."""

    host: SshHost
    daemon: Daemon = field(init=False)

    def __post_init__(self) -> None:
        self.daemon = Daemon("dockerd", self._argv(), self.root)

    @property
    def root(self) -> Path:
        return self.host.dir / "docker"

    @property
    def socket_path(self) -> Path:
        return self.host.dir / SOCKET

    @property
    def env(self) -> dict[str, str]:
        return {"DOCKER_HOST": f"unix://{self.socket_path}", "DOCKER_CONFIG": str(self.root / "config")}

    def docker(self, *args: str, check: bool = True, timeout: float = 120) -> CompletedProcess[str]:
        return run(["docker", *args], env={**os.environ, **self.env}, check=check, timeout=timeout)

    def image_id(self, ref: str) -> str | None:
        """The ID of the image `ref` names on this host, or None when it has none."""
        found = self.docker("image", "inspect", "--format", "{{.Id}}", ref, check=False)
        return found.stdout.strip() if found.returncode == 0 else None

    def _argv(self) -> list[str]:
        return [
            # nsenter, not `ip netns exec`: that one remounts /sys, hiding the cgroup mounts dockerd needs
            "nsenter", f"--net=/run/netns/{self.host.netns}", "--",
            "dockerd",
            f"--data-root={self.root / 'data'}",
            f"--exec-root={self.root / 'exec'}",
            f"--pidfile={self.root / 'docker.pid'}",
            f"--host=unix://{self.socket_path}",
            "--iptables=false",
            "--ip-forward=false",
            "--bridge=none",
            "--shutdown-timeout=3",
        ]  # fmt: skip


def start_host_dockerds(hosts: Sequence[SshHost]) -> list[HostDockerd]:
    """One dockerd per host, started together; each answers on its socket before this returns.
    On a failure the ones already started are stopped again."""
    daemons = [HostDockerd(host) for host in hosts]
    try:
        for daemon in daemons:
            daemon.root.mkdir(parents=True, exist_ok=True)
            (daemon.root / "config").mkdir(exist_ok=True)
            daemon.daemon.start()
        for daemon in daemons:
            path = daemon.socket_path
            daemon.daemon.wait_ready(lambda path=path: ping(path), timeout=START_TIMEOUT_S)  # type: ignore[misc]
    except BaseException:
        stop_host_dockerds(daemons)
        raise
    return daemons


def stop_host_dockerds(daemons: Sequence[HostDockerd]) -> None:
    stop_all([d.daemon for d in daemons], timeout=20)

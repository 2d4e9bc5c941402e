"""A private Docker daemon for the test session, isolated from any other dockerd on the machine.

Beyond the recipe in docs/test-infra.md it uses its own default bridge and address pool (both per
slot) and `--ip-forward=false`, so that it leaves docker0, other sessions' networks and the host's
sysctls alone. Containers still reach the host and published ports still work; `docker run` prints
a harmless "IPv4 forwarding is disabled" warning.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import CompletedProcess

from tests.infra import net
from tests.infra.compose import make_docker_config
from tests.infra.process import Daemon, run
from tests.infra.slots import Slot

DOCKER_PACKAGES = ("docker.io", "containerd", "runc", "iptables", "tini")
START_TIMEOUT_S = 30


@dataclass
class DockerDaemon:
    """A running private dockerd. Use `env` (merged over os.environ) for the docker CLI, or `host`
    as base_url for the docker SDK."""

    slot: Slot
    compose_binary: Path
    daemon: Daemon = field(init=False)

    def __post_init__(self) -> None:
        self.daemon = Daemon("dockerd", self._argv(), self.root)

    @property
    def root(self) -> Path:
        return self.slot.dir / "docker"

    @property
    def socket_path(self) -> Path:
        return self.root / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def config_dir(self) -> Path:
        return self.root / "config"

    @property
    def env(self) -> dict[str, str]:
        """DOCKER_HOST and DOCKER_CONFIG (with the compose plugin); a fresh dict on every access."""
        return self._env(self.config_dir)

    def client_env(self, config_dir: Path) -> dict[str, str]:
        """Like `env` but with a separate DOCKER_CONFIG, e.g. to `docker login` without leaving the
        shared config logged in."""
        make_docker_config(config_dir, self.compose_binary)
        return self._env(config_dir)

    def docker(
        self,
        *args: str,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        timeout: float = 120,
    ) -> CompletedProcess[str]:
        """Run the docker CLI against this daemon; `env` replaces `self.env` (see `client_env`)."""
        full_env = {**os.environ, **(env if env is not None else self.env)}
        return run(["docker", *args], input=input, env=full_env, check=check, timeout=timeout)

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        make_docker_config(self.config_dir, self.compose_binary)
        net.create_bridge(self.slot.docker_bridge, self.slot.docker_bridge_cidr)
        self.daemon.start()
        self.daemon.wait_ready(self._ping, timeout=START_TIMEOUT_S)

    def stop(self) -> None:
        """Stop the daemon, then delete its bridges: dockerd keeps those of compose networks that
        were never taken down, because they persist across restarts."""
        self.daemon.stop(timeout=30)
        net.delete_link(self.slot.docker_bridge)
        net.delete_links(net.links_in_subnet(self.slot.docker_pool_prefix))

    def _env(self, config_dir: Path) -> dict[str, str]:
        return {"DOCKER_HOST": self.host, "DOCKER_CONFIG": str(config_dir)}

    def _argv(self) -> list[str]:
        return [
            "dockerd",
            f"--data-root={self.root / 'data'}",
            f"--exec-root={self.root / 'exec'}",
            f"--pidfile={self.root / 'docker.pid'}",
            f"--host={self.host}",
            "--iptables=false",
            "--ip-forward=false",
            f"--bridge={self.slot.docker_bridge}",
            f"--default-address-pool={self.slot.docker_address_pool}",
            "--shutdown-timeout=3",  # containers a test left running must not slow down teardown
        ]

    def _ping(self) -> bool:
        return ping(self.socket_path)


def ping(socket_path: Path) -> bool:
    """True when the Docker API on `socket_path` answers GET /_ping with 200 OK."""
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(2)
            sock.connect(str(socket_path))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = sock.recv(4096)
    except OSError:
        return False
    return reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n", 1)[0]

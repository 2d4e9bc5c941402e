"""Debian's docker-registry (distribution 2.8) on 127.0.0.1, as a stand-in for nvcr.io.

dockerd treats 127.0.0.0/8 registries as insecure-allowed, so plain HTTP works without daemon flags.
"""

from __future__ import annotations

import base64
import http.client
import secrets
import socket
import tempfile
from dataclasses import dataclass, field
from http.client import HTTPMessage
from pathlib import Path
from subprocess import CompletedProcess

import yaml

from tests.infra.dockerd import DockerDaemon
from tests.infra.process import Daemon, run

REGISTRY_PACKAGES = ("docker-registry", "apache2-utils")
NGC_USERNAME = "$oauthtoken"
START_TIMEOUT_S = 20
MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Registry:
    """A registry on `url` (host:port, no scheme); with a password it requires htpasswd auth."""

    root: Path
    username: str | None = None
    password: str | None = None
    port: int = field(default_factory=free_port)
    daemon: Daemon = field(init=False)

    def __post_init__(self) -> None:
        argv = ["docker-registry", "serve", str(self.root / "config.yml")]
        self.daemon = Daemon("registry", argv, self.root)

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def auth_header(self) -> dict[str, str]:
        """Basic auth for direct HTTP calls; distribution's htpasswd backend accepts it on /v2/."""
        if self.password is None:
            return {}
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "config.yml").write_text(yaml.safe_dump(self._config()))
        self.daemon.start()
        self.daemon.wait_ready(self._answers, timeout=START_TIMEOUT_S)

    def stop(self) -> None:
        self.daemon.stop()

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, HTTPMessage, bytes]:
        """GET `path` straight over TCP (no proxy from the environment can get in the way)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path, headers={**self.auth_header, **(headers or {})})
            response = conn.getresponse()
            return response.status, response.headers, response.read()
        finally:
            conn.close()

    def _answers(self) -> bool:
        try:
            status, _, _ = self.get("/v2/")
        except OSError:
            return False
        return status in (200, 401)

    def _config(self) -> dict[str, object]:
        config: dict[str, object] = {
            "version": 0.1,
            "log": {"level": "info", "fields": {"service": "registry"}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.root / "data")},
                "delete": {"enabled": True},
            },
            "http": {"addr": self.url, "secret": secrets.token_hex(16)},
        }
        if self.password is not None:
            config["auth"] = {"htpasswd": {"realm": "sparkprov-test", "path": str(self._write_htpasswd())}}
        return config

    def _write_htpasswd(self) -> Path:
        path = self.root / "htpasswd"
        run(["htpasswd", "-c", "-B", "-i", str(path), str(self.username)], input=self.password)
        return path


def ngc_style_registry(root: Path) -> Registry:
    """A registry that wants NGC-style credentials: user `$oauthtoken`, an API-key-like password."""
    return Registry(root, username=NGC_USERNAME, password=f"nvapi-{secrets.token_hex(24)}")


def docker_login(
    dockerd: DockerDaemon,
    registry: Registry,
    env: dict[str, str],
    password: str | None = None,
    check: bool = True,
) -> CompletedProcess[str]:
    """`docker login` with the password on stdin, never in argv; `password` defaults to the right one."""
    return dockerd.docker(
        "login",
        "--username",
        registry.username or "",
        "--password-stdin",
        registry.url,
        input=registry.password if password is None else password,
        env=env,
        check=check,
    )


def push_image(
    dockerd: DockerDaemon, image: str, registry: Registry, repo_tag: str = "nvidia/pytorch:25.11-py3"
) -> str:
    """Tag `image` as REGISTRY/repo_tag and push it (logging in first where needed); returns the ref.

    Any login happens in a throwaway DOCKER_CONFIG, so the shared `dockerd.env` stays logged out.
    """
    ref = f"{registry.url}/{repo_tag}"
    dockerd.docker("tag", image, ref)
    with tempfile.TemporaryDirectory(dir=registry.root) as config:
        env = dockerd.client_env(Path(config))
        if registry.password is not None:
            docker_login(dockerd, registry, env)
        dockerd.docker("push", ref, env=env)
    return ref


def manifest_digest(registry: Registry, repo: str, tag: str) -> str:
    """The Docker-Content-Digest of repo:tag as `docker pull` sees it (the one in RepoDigests).

    The Accept header matters: without it distribution answers a schema1 manifest whose digest differs.
    """
    status, headers, body = registry.get(f"/v2/{repo}/manifests/{tag}", {"Accept": MANIFEST_TYPES})
    if status != 200:
        raise RuntimeError(f"GET manifest {repo}:{tag} from {registry.url}: HTTP {status} {body[:500]!r}")
    return str(headers["Docker-Content-Digest"])

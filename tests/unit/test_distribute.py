"""Distribution without a fleet: the once-per-run cache, streaming stdin/stdout on the local connection,
progress, settings, the docker_image check with `distribute`, and copying Ollama models between
directories laid out like Ollama's store (with the fake Ollama server answering from such a store)."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sparkprov.connection.base import CommandFailed, CommandTimeout, Connection, chunks_of
from sparkprov.connection.local import LocalConnection
from sparkprov.errors import Place
from sparkprov.modules import _distribute, _ollama_store
from sparkprov.modules._distribute import Meter, OnceCache, human_bytes, pinned_tag, source_for, wanted
from sparkprov.modules._docker import DockerHost, LocalImage, parse_image
from sparkprov.modules._ollama_api import ModelName
from sparkprov.modules._ollama_store import (
    INSTALL_SCRIPT,
    Blob,
    ModelRequest,
    distribute_model,
    manifest_path,
    missing_blobs,
    parse_manifest,
    tar_stream,
)
from sparkprov.modules.base import ModuleFailure, TaskContext
from sparkprov.modules.docker_image import _inspect
from sparkprov.playbook.schema import validate
from sparkprov.playbook.templating import Scope
from tests.infra.ollama_store import StoreOllama, manifest_file, write_model

MB = 1024 * 1024


def _ctx(conn: Connection | None = None, scope: dict[str, Any] | None = None, **kwargs: Any) -> TaskContext:
    return TaskContext(
        conn=conn or LocalConnection(), become=None, scope=Scope([scope or {}]), search_dirs=(), **kwargs
    )


# ---------------------------------------------------------------- once per run


def test_many_threads_asking_at_once_produce_once() -> None:
    cache: OnceCache[str] = OnceCache()
    calls: list[int] = []
    gate = threading.Event()

    def produce() -> str:
        calls.append(1)
        gate.wait(5)
        return "image"

    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(cache.obtain("k", produce))) for _ in range(20)]
    for thread in threads:
        thread.start()
    time.sleep(0.1)
    gate.set()
    for thread in threads:
        thread.join(5)
    assert results == ["image"] * 20 and len(calls) == 1
    assert cache.obtain("k", produce) == "image" and len(calls) == 1


def test_a_failure_is_shared_by_the_waiters_and_a_later_call_tries_again() -> None:
    cache: OnceCache[str] = OnceCache()
    gate = threading.Event()
    attempts: list[int] = []

    def failing() -> str:
        attempts.append(1)
        gate.wait(5)
        raise ModuleFailure("pull failed: unauthorized")

    errors: list[str] = []

    def ask() -> None:
        try:
            cache.obtain("k", failing)
        except ModuleFailure as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=ask) for _ in range(5)]
    for thread in threads:
        thread.start()
    time.sleep(0.1)
    gate.set()
    for thread in threads:
        thread.join(5)
    assert errors == ["pull failed: unauthorized"] * 5 and len(attempts) == 1
    assert cache.obtain("k", lambda: "second try") == "second try"


def test_a_stored_value_found_stale_is_produced_again() -> None:
    cache: OnceCache[int] = OnceCache()
    values = iter([1, 2])
    assert cache.obtain("k", lambda: next(values)) == 1
    assert cache.obtain("k", lambda: next(values), valid=lambda v: v != 1) == 2
    assert cache.obtain("k", lambda: 99, valid=lambda v: True) == 2


# ---------------------------------------------------------------- streaming on the local connection


def _numbered_chunks(count: int, size: int = MB) -> Iterator[bytes]:
    for index in range(count):
        yield bytes([index % 256]) * size


def test_run_with_input_streams_chunks_and_reports_progress() -> None:
    seen: list[int] = []
    result = LocalConnection().run_with_input(["sha256sum"], _numbered_chunks(40), on_progress=seen.append)
    expected = hashlib.sha256(b"".join(_numbered_chunks(40))).hexdigest()
    assert result.rc == 0 and result.stdout.split()[0] == expected
    assert seen == [MB * (i + 1) for i in range(40)]


def test_run_with_input_reads_a_file_in_chunks(tmp_path: Path) -> None:
    assert [len(c) for c in chunks_of(io.BytesIO(b"x" * (2 * MB + 1)))] == [MB, MB, 1]
    result = LocalConnection().run_with_input(["wc", "-c"], io.BytesIO(b"abc" * 1000))
    assert result.stdout.strip() == "3000"


def test_run_with_input_environment_and_a_command_that_stops_reading() -> None:
    conn = LocalConnection()
    assert conn.run_with_input(["sh", "-c", 'echo "$WHO"'], [b""], env={"WHO": "spark"}).stdout == "spark\n"
    early = conn.run_with_input(["sh", "-c", "head -c 10 >/dev/null; exit 3"], _numbered_chunks(50))
    assert early.rc == 3


def test_run_with_input_stops_the_command_when_the_source_fails(tmp_path: Path) -> None:
    marker = tmp_path / "finished"

    def broken() -> Iterator[bytes]:
        yield b"partial"
        raise ModuleFailure("docker save on the seed failed")

    with pytest.raises(ModuleFailure, match="docker save on the seed failed"):
        LocalConnection().run_with_input(["sh", "-c", f"cat >/dev/null; touch {marker}"], broken())
    assert not marker.exists() or marker.stat().st_size == 0


def test_run_with_input_timeout() -> None:
    with pytest.raises(CommandTimeout):
        LocalConnection().run_with_input(["sleep", "10"], [b"x"], timeout=0.3)


def test_stream_output_yields_chunks_and_fails_loudly() -> None:
    conn = LocalConnection()
    assert sum(len(c) for c in conn.stream_output(["head", "-c", str(5 * MB), "/dev/zero"])) == 5 * MB
    with pytest.raises(CommandFailed, match="no such image"):
        list(conn.stream_output(["sh", "-c", "echo part; echo 'no such image' >&2; exit 1"]))


def test_stream_output_closed_early_stops_the_command() -> None:
    stream = LocalConnection().stream_output(["cat", "/dev/zero"])
    assert next(stream)
    started = time.monotonic()
    stream.close()
    assert time.monotonic() - started < 5


# ---------------------------------------------------------------- settings, sources, progress


def test_distribute_setting_from_args_then_play_variables() -> None:
    assert wanted({}, _ctx()) is None
    assert wanted({"distribute": True}, _ctx()) == "controller"
    assert wanted({"distribute": True, "seed": "spark01"}, _ctx()) == "spark01"
    play = {"sparkprov_distribute": True, "sparkprov_distribute_seed": "spark02"}
    assert wanted({}, _ctx(scope=play)) == "spark02"
    assert wanted({"distribute": False}, _ctx(scope=play)) is None
    assert wanted({"seed": "spark03"}, _ctx(scope={"sparkprov_distribute": "yes"})) == "spark03"


def test_a_seed_outside_the_inventory_fails_the_task() -> None:
    def peer(name: str) -> Connection:
        raise KeyError(name)

    with pytest.raises(ModuleFailure, match="seed host 'nosuch' is not in the inventory"):
        source_for("nosuch", _ctx(peer=peer))
    with pytest.raises(ModuleFailure, match="needs the executor"):
        source_for("spark01", _ctx())
    assert source_for("controller", _ctx()).label == "the controller"


def test_meter_reports_completion_only_at_the_end() -> None:
    reports: list[tuple[str, int, int | None]] = []
    ctx = _ctx(progress=lambda what, done, total: reports.append((what, done, total)))
    meter = Meter(ctx, "distribute x", 1000)
    meter.update(500)
    meter.update(1200)  # a tar stream is a little larger than the image
    assert all(done < total for _, done, total in reports if total)
    meter.finish()
    assert reports[0] == ("distribute x", 0, 1000) and reports[-1] == ("distribute x", 1200, 1200)
    assert human_bytes(3_100_000) == "3.1 MB" and human_bytes(12) == "12 B"


def _problems(args: dict[str, Any], module: str) -> list[str]:
    found = validate(
        args, f"modules/{module}", root=None, base_path=[], fallback=Place("t.yml", 1, 1), what=module
    )
    return [problem.message for problem in found]


def test_schemas_accept_the_distribution_arguments() -> None:
    image = {"name": "nvcr.io/nvidia/pytorch:25.11-py3", "distribute": True, "seed": "h1"}
    assert not _problems(image, "docker_image")
    assert _problems({**image, "distribute": "sometimes"}, "docker_image")
    ollama = {
        "models": ["llama3.2"],
        "distribute": True,
        "seed_url": "http://h1:11434",
        "models_dir": "/srv/m",
    }
    assert not _problems(ollama, "ollama")
    assert _problems({**ollama, "models_dir": "relative/models"}, "ollama")


# ---------------------------------------------------------------- docker images


D1 = "sha256:" + "a" * 64


class _Daemon(DockerHost):
    def __init__(self, images: dict[str, LocalImage]) -> None:
        self.images = images

    def inspect(self, ref: str) -> LocalImage | None:
        return self.images.get(ref)

    def pull(self, *args: Any) -> None:
        raise AssertionError("no pulls here")

    def remove(self, ref: str) -> None:
        raise AssertionError("no removals here")


def test_a_distributed_pinned_image_is_recognised_by_its_digest_tag() -> None:
    ref = parse_image(f"nvcr.io/nvidia/pytorch@{D1}")
    assert pinned_tag(ref) == f"nvcr.io/nvidia/pytorch:sha256-{'a' * 64}"
    assert pinned_tag(parse_image("nvcr.io/nvidia/pytorch:25.11-py3")) is None
    copy = LocalImage("sha256:" + "c" * 64, 10, ())
    daemon = _Daemon({f"nvcr.io/nvidia/pytorch:sha256-{'a' * 64}": copy})
    assert _inspect(daemon, ref, distributed=True) == copy
    assert _inspect(daemon, ref) is None  # without distribute, only the registry digest counts


# ---------------------------------------------------------------- ollama stores


LAYERS = {"model": os.urandom(2 * MB), "template": b"{{ .Prompt }}", "params": b'{"stop":["<|eot|>"]}'}
CONFIG = b'{"model_format":"gguf","model_family":"llama"}'
NAME = ModelName.parse("tinyllama:1b")


def test_manifest_paths_and_blobs(tmp_path: Path) -> None:
    files = write_model(tmp_path, "tinyllama:1b", LAYERS, CONFIG)
    assert manifest_path(NAME) == "manifests/registry.ollama.ai/library/tinyllama/1b"
    model = parse_manifest(NAME, (tmp_path / manifest_path(NAME)).read_bytes())
    assert [blob.file for blob in model.blobs] == files
    assert model.size == sum(map(len, LAYERS.values())) + len(CONFIG)
    present = {files[0]: len(CONFIG), files[1]: 5}  # the config is there, the weights cut short
    assert [blob.file for blob in missing_blobs(model, present)] == files[1:]


@pytest.mark.parametrize(
    "manifest",
    [
        b"not json",
        b'{"layers": [{"digest": "sha256:../../etc/passwd", "size": 1}]}',
        b'{"layers": [{"digest": "sha256:' + b"A" * 64 + b'", "size": 1}]}',
        b'{"layers": [{"size": 1}]}',
    ],
)
def test_manifests_that_would_make_bad_file_names_are_refused(manifest: bytes) -> None:
    with pytest.raises(ModuleFailure, match="manifest of tinyllama:1b"):
        parse_manifest(NAME, manifest)


def test_tar_stream_is_a_tar_that_tar_reads(tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(MB + 7))
    members = [
        ("blobs/sha256-x", MB + 7, _ollama_store.file_chunks(str(blob))),
        ("manifests/a/b/c/d", 3, lambda: iter([b"abc"])),
    ]
    data = b"".join(tar_stream(members))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.getnames() == ["blobs/sha256-x", "manifests/a/b/c/d"]
        extracted = tar.extractfile("blobs/sha256-x")
        assert extracted is not None and extracted.read() == blob.read_bytes()
    with pytest.raises(ModuleFailure, match="changed size"):
        b"".join(tar_stream([("f", 10, lambda: iter([b"short"]))]))


def _install(store: Path, seed: Path, blobs: list[Blob]) -> Any:
    members = [
        (f"blobs/{b.file}", b.size, _ollama_store.file_chunks(str(seed / "blobs" / b.file))) for b in blobs
    ]
    manifest = (seed / manifest_path(NAME)).read_bytes()
    members.append((manifest_path(NAME), len(manifest), lambda: iter([manifest])))
    argv = ["sh", "-c", INSTALL_SCRIPT, "sh", str(store), manifest_path(NAME), *[b.file for b in blobs]]
    return LocalConnection().run_with_input(argv, tar_stream(members))


def test_install_script_checks_digests_and_moves_the_manifest_last(tmp_path: Path) -> None:
    seed, store = tmp_path / "seed", tmp_path / "store"
    write_model(seed, "tinyllama:1b", LAYERS, CONFIG)
    store.mkdir()
    model = parse_manifest(NAME, (seed / manifest_path(NAME)).read_bytes())
    weights = next(b for b in model.blobs if b.size == 2 * MB)
    (seed / "blobs" / weights.file).write_bytes(os.urandom(2 * MB))  # corrupt: not its digest any more
    failed = _install(store, seed, list(model.blobs))
    assert failed.rc == 65 and "does not match its digest" in failed.stderr
    assert not (store / manifest_path(NAME)).exists() and not list(store.glob(".sparkprov-copy.*"))

    write_model(seed, "tinyllama:1b", LAYERS, CONFIG)
    assert _install(store, seed, list(model.blobs)).rc == 0
    assert (store / manifest_path(NAME)).read_bytes() == (seed / manifest_path(NAME)).read_bytes()
    for blob in model.blobs:
        assert (store / "blobs" / blob.file).read_bytes() == (seed / "blobs" / blob.file).read_bytes()
    assert not list(store.glob(".sparkprov-copy.*"))


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[Path, Path, StoreOllama, StoreOllama]]:
    seed, target = tmp_path / "seed", tmp_path / "target"
    write_model(seed, "tinyllama:1b", LAYERS, CONFIG)
    write_model(target, "other:1b", {"model": LAYERS["model"]}, b"{}")  # shares the weights blob
    _ollama_store.MODELS.forget()
    seed_server, target_server = StoreOllama(seed).start(), StoreOllama(target).start()
    try:
        yield seed, target, seed_server, target_server
    finally:
        seed_server.stop()
        target_server.stop()
        _ollama_store.MODELS.forget()


def test_distribute_model_copies_what_the_store_lacks(
    stores: tuple[Path, Path, StoreOllama, StoreOllama],
) -> None:
    seed, target, seed_server, target_server = stores
    reports: list[tuple[str, int, int | None]] = []
    ctx = _ctx(progress=lambda what, done, total: reports.append((what, done, total)))
    request = ModelRequest(NAME, "tinyllama:1b", "controller", seed_server.url, str(seed), None)
    copied = distribute_model(ctx, request, str(target), target_server.url)
    assert copied.blobs == 3 and "1 already here" in copied.note  # config, template, params
    assert copied.bytes < MB  # the 2 MB weights were not sent again
    assert (
        manifest_file(target, "tinyllama:1b").read_bytes() == manifest_file(seed, "tinyllama:1b").read_bytes()
    )
    assert "tinyllama:1b" in target_server.installed()
    assert reports[-1][1] == reports[-1][2] and seed_server.count("/api/pull") == 0


def test_distribute_model_fails_when_the_api_does_not_serve_that_store(
    stores: tuple[Path, Path, StoreOllama, StoreOllama], tmp_path: Path
) -> None:
    seed, _target, seed_server, target_server = stores
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    request = ModelRequest(NAME, "tinyllama:1b", "controller", seed_server.url, str(seed), None)
    with pytest.raises(ModuleFailure, match=r"does not list it.*OLLAMA_MODELS"):
        distribute_model(_ctx(), request, str(elsewhere), target_server.url)


def test_a_seed_store_without_the_manifest_names_the_store(
    stores: tuple[Path, Path, StoreOllama, StoreOllama], tmp_path: Path
) -> None:
    _seed, target, seed_server, target_server = stores
    request = ModelRequest(NAME, "tinyllama:1b", "controller", seed_server.url, str(tmp_path / "wrong"), None)
    with pytest.raises(ModuleFailure, match=r"cannot read the manifest of tinyllama:1b.*seed_models_dir"):
        distribute_model(_ctx(), request, str(target), target_server.url)


def test_image_cache_is_process_wide() -> None:
    assert isinstance(_distribute.IMAGES, OnceCache) and isinstance(_ollama_store.MODELS, OnceCache)

"""Ollama models copied store to store, for the ollama module's `distribute` (see `_distribute.py`).

Ollama keeps a model in its store directory (`OLLAMA_MODELS`; the Linux service's default is
/usr/share/ollama/.ollama/models, a user's `ollama serve` uses ~/.ollama/models) as
- `manifests/<host>/<namespace>/<model>/<tag>`: JSON with the `config` and `layers` blobs
  (`{"digest": "sha256:HEX", "size": N, ...}`), e.g. manifests/registry.ollama.ai/library/llama3.2/3b;
- `blobs/sha256-HEX`: content-addressed files, shared between models.

Distribution pulls the model once on the seed (the controller's own Ollama, or a seed host's,
through its API), reads the manifest from the seed's store, and streams a tar of the manifest and of
the blobs the target lacks (compared by digest, which is the file name, and size) into the target's
store over SSH. There, a small POSIX script unpacks into a temporary directory inside the store,
checks every blob against its digest, gives the files the store directory's owner, and renames them
into place one by one, the manifest last, so the model appears only when it is complete. The
target's API must then list the model. This needs read access to the seed's store and write access
to the target's (`become` when it belongs to the ollama user).
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sparkprov.connection.base import STREAM_CHUNK, AgentError, CommandFailed, CommandResult, CommandTimeout
from sparkprov.modules._distribute import Meter, OnceCache, Source, source_for
from sparkprov.modules._ollama_api import ApiError, ModelName, OllamaClient, api_url
from sparkprov.modules.base import ModuleFailure, TaskContext

SERVICE_MODELS_DIR = "/usr/share/ollama/.ollama/models"
USER_MODELS_DIR = "~/.ollama/models"
MAX_MANIFEST_BYTES = 1024 * 1024
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")

# Unpack the tar on stdin into the store "$1" (manifest path "$2", blob file names after it).
INSTALL_SCRIPT = r"""
set -eu
dir=$1; manifest=$2; shift 2
umask 022
owner=$(stat -c %u:%g "$dir")
tmp=$(mktemp -d "$dir/.sparkprov-copy.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
tar -x -o -f - -C "$tmp"
for blob in "$@"; do
  echo "${blob#sha256-}  $tmp/blobs/$blob" | sha256sum -c --status - \
    || { echo "blob $blob does not match its digest" >&2; exit 65; }
done
[ "$(id -u)" != 0 ] || chown -R "$owner" "$tmp"
mkdir -p "$dir/blobs"
for blob in "$@"; do mv -f "$tmp/blobs/$blob" "$dir/blobs/$blob"; done
path=$dir
for part in $(dirname "$manifest" | tr / ' '); do
  path=$path/$part
  [ -d "$path" ] || { mkdir "$path"; [ "$(id -u)" != 0 ] || chown "$owner" "$path"; }
done
mv -f "$tmp/$manifest" "$dir/$manifest"
"""


# ---------------------------------------------------------------- the store's layout


@dataclass(frozen=True)
class Blob:
    digest: str  # sha256:HEX
    size: int

    @property
    def file(self) -> str:
        """The blob's file name in `blobs/`."""
        return self.digest.replace(":", "-", 1)


@dataclass(frozen=True)
class StoredModel:
    """A model as a store holds it: the manifest (as bytes) and the blobs it names."""

    name: ModelName
    manifest: bytes
    blobs: tuple[Blob, ...]

    @property
    def size(self) -> int:
        return sum(blob.size for blob in self.blobs)


def manifest_path(name: ModelName) -> str:
    """The manifest's path relative to the store."""
    return posixpath.join("manifests", name.host, name.namespace, name.model, name.tag)


def parse_manifest(name: ModelName, data: bytes) -> StoredModel:
    """The blobs a manifest names (config first, then layers, each once); digests are checked,
    because they become file names."""
    try:
        document = json.loads(data)
        entries = [document.get("config"), *document.get("layers", [])]
        blobs = [Blob(str(e["digest"]), int(e["size"])) for e in entries if e]
    except (ValueError, TypeError, KeyError, AttributeError):
        raise ModuleFailure(f"the manifest of {name} is not an Ollama manifest") from None
    for blob in blobs:
        if not _DIGEST.match(blob.digest) or blob.size < 0:
            raise ModuleFailure(f"the manifest of {name} names an invalid blob {blob.digest!r}")
    unique = tuple({blob.digest: blob for blob in blobs}.values())
    return StoredModel(name, data, unique)


def missing_blobs(model: StoredModel, present: dict[str, int | None]) -> list[Blob]:
    """The blobs a store lacks: `present` maps blob file names to their sizes there (None: absent)."""
    return [blob for blob in model.blobs if present.get(blob.file) != blob.size]


def tar_stream(members: list[tuple[str, int, Callable[[], Iterator[bytes]]]]) -> Iterator[bytes]:
    """A tar archive of (name, size, chunks) members, produced as it is read (never whole in memory)."""
    now = int(time.time())
    for name, size, chunks in members:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, 0o644, now
        yield info.tobuf(format=tarfile.GNU_FORMAT)
        written = 0
        for chunk in chunks():
            written += len(chunk)
            yield chunk
        if written != size:
            raise ModuleFailure(f"{name} changed size while it was being copied ({size} -> {written} bytes)")
        if size % tarfile.BLOCKSIZE:
            yield tarfile.NUL * (tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE)
    yield tarfile.NUL * (2 * tarfile.BLOCKSIZE)


def file_chunks(path: str) -> Callable[[], Iterator[bytes]]:
    def chunks() -> Iterator[bytes]:
        with open(path, "rb") as handle:
            while chunk := handle.read(STREAM_CHUNK):
                yield chunk

    return chunks


def controller_models_dir() -> str:
    """The controller's store: $OLLAMA_MODELS, else the service's, else the user's (whichever exists)."""
    configured = os.environ.get("OLLAMA_MODELS")
    if configured:
        return configured
    user = os.path.expanduser(USER_MODELS_DIR)
    if not os.path.isdir(os.path.join(SERVICE_MODELS_DIR, "manifests")) and os.path.isdir(user):
        return user
    return SERVICE_MODELS_DIR


# ---------------------------------------------------------------- the source


@dataclass(frozen=True)
class ModelRequest:
    name: ModelName
    written: str  # as the playbook gave it: what the seed's API is asked to pull
    seed: str
    seed_url: str | None
    seed_models_dir: str | None
    pull_timeout: float | None


@dataclass(frozen=True)
class SourceModel:
    source: Source
    models_dir: str
    model: StoredModel


MODELS: OnceCache[SourceModel] = OnceCache()


def _model_on_source(source: Source, request: ModelRequest) -> SourceModel:
    url = _seed_url(source, request)
    key = ("ollama", source.name, url, request.name.key)
    return MODELS.obtain(key, lambda: _fetch(source, request, url), lambda found: _unchanged(found, source))


def _seed_url(source: Source, request: ModelRequest) -> str:
    if request.seed_url:
        return api_url(request.seed_url)
    if source.conn is None:
        return api_url(os.environ.get("OLLAMA_HOST"))
    raise ModuleFailure(
        f"distributing {request.name} from seed host {source.name} needs its Ollama API address",
        hint=f"set seed_url to where the controller reaches {source.name}'s Ollama, e.g. http://HOST:11434",
    )


def _fetch(source: Source, request: ModelRequest, url: str) -> SourceModel:
    """The model in the seed's store: there already, or pulled through the seed's API now."""
    with OllamaClient(url) as client:
        try:
            if request.name.key not in {name.key for name in client.tags()}:
                _pull_on_seed(client, source, request)
        except ApiError as exc:
            raise ModuleFailure(f"{exc} (on {source.label}, the seed of {request.name})") from None
    models_dir = request.seed_models_dir or (
        controller_models_dir() if source.conn is None else SERVICE_MODELS_DIR
    )
    data = _read_manifest(source, models_dir, request.name)
    return SourceModel(source, models_dir, parse_manifest(request.name, data))


def _pull_on_seed(client: OllamaClient, source: Source, request: ModelRequest) -> None:
    what = f"pull {request.name} on {source.label}"

    def report(done: int, total: int) -> None:
        if done < total:
            source.ctx.progress(what, done, total)

    total = client.pull(request.written, report, timeout=request.pull_timeout)
    source.ctx.progress(what, total, total)


def _read_manifest(source: Source, models_dir: str, name: ModelName) -> bytes:
    path = posixpath.join(models_dir, manifest_path(name))
    try:
        if source.conn is None:
            with open(os.path.expanduser(path), "rb") as handle:
                return handle.read(MAX_MANIFEST_BYTES)
        return source.conn.get(path, max_bytes=MAX_MANIFEST_BYTES, become=source.ctx.become)
    except (OSError, AgentError) as exc:
        raise ModuleFailure(
            f"cannot read the manifest of {name} in {source.label}'s Ollama store {models_dir}: "
            f"{getattr(exc, 'message', None) or getattr(exc, 'strerror', None) or exc}",
            hint="set seed_models_dir to the store the seed's Ollama serves (its OLLAMA_MODELS), "
            "and become a user that can read it",
        ) from None


def _unchanged(found: SourceModel, source: Source) -> bool:
    """A stored source model is this run's (same connection to the seed) and still what the seed's
    store holds (its manifest re-read)."""
    if found.source.conn is not source.conn:
        return False
    try:
        data = _read_manifest(found.source, found.models_dir, found.model.name)
    except ModuleFailure:
        return False
    return data == found.model.manifest


def _archive(found: SourceModel, blobs: list[Blob]) -> Iterator[bytes]:
    """The tar of `blobs` and the manifest, from the seed's store."""
    manifest = manifest_path(found.model.name)
    if found.source.conn is None:
        base = os.path.expanduser(found.models_dir)
        members = [
            (f"blobs/{b.file}", b.size, file_chunks(os.path.join(base, "blobs", b.file))) for b in blobs
        ]
        data = found.model.manifest
        members.append((manifest, len(data), lambda: iter([data])))
        yield from tar_stream(members)
        return
    argv = [
        "tar",
        "-c",
        "-f",
        "-",
        "-C",
        found.models_dir,
        "--",
        *[f"blobs/{b.file}" for b in blobs],
        manifest,
    ]
    try:
        yield from found.source.conn.stream_output(argv, become=found.source.ctx.become)
    except CommandFailed as exc:
        raise ModuleFailure(
            f"reading {found.model.name} from {found.source.label} failed: {_reason(exc.result)}"
        ) from None


# ---------------------------------------------------------------- the target


@dataclass(frozen=True)
class Copied:
    blobs: int
    bytes: int
    note: str


def distribute_model(ctx: TaskContext, request: ModelRequest, models_dir: str, url: str) -> Copied:
    """Copy the model from the seed's store into the target's `models_dir`, then check that the
    target's API at `url` lists it."""
    source = source_for(request.seed, ctx)
    found = _model_on_source(source, request)
    if source.conn is not None and source.name == ctx.conn.host_name:
        return Copied(0, 0, f"pulled here, the seed of {request.name}")
    blobs = _missing_on_target(ctx, found.model, models_dir)
    meter = Meter(ctx, f"distribute {request.name}", sum(b.size for b in blobs) + len(found.model.manifest))
    result = _install(ctx, request, found, blobs, models_dir, meter)
    if result.rc != 0:
        raise ModuleFailure(
            f"copying {request.name} into {models_dir} on {ctx.conn.host_name} failed: {_reason(result)}"
        )
    meter.finish()
    _require_listed(url, request.name, models_dir)
    skipped = len(found.model.blobs) - len(blobs)
    note = f"{len(blobs)} blob(s): {meter.summary(source)}"
    return Copied(len(blobs), meter.done, note + (f"; {skipped} already here" if skipped else ""))


def _missing_on_target(ctx: TaskContext, model: StoredModel, models_dir: str) -> list[Blob]:
    paths = [posixpath.join(models_dir, "blobs", blob.file) for blob in model.blobs]
    try:
        states = ctx.conn.stat_many(paths, become=ctx.become)
    except AgentError as exc:
        raise ModuleFailure(
            f"cannot look into the Ollama store {models_dir} on {ctx.conn.host_name}: {exc}"
        ) from None
    present = {
        blob.file: state.size if state.exists and state.type == "file" else None
        for blob, state in zip(model.blobs, states)
    }
    return missing_blobs(model, present)


def _install(
    ctx: TaskContext,
    request: ModelRequest,
    found: SourceModel,
    blobs: list[Blob],
    models_dir: str,
    meter: Meter,
) -> CommandResult:
    argv = [
        "sh",
        "-c",
        INSTALL_SCRIPT,
        "sh",
        models_dir,
        manifest_path(request.name),
        *[b.file for b in blobs],
    ]
    try:
        return ctx.conn.run_with_input(
            argv,
            _archive(found, blobs),
            timeout=request.pull_timeout,
            become=ctx.become,
            on_progress=meter.update,
        )
    except CommandTimeout:
        raise ModuleFailure(
            f"copying {request.name} to {ctx.conn.host_name} did not finish within {request.pull_timeout:g}s",
            hint="raise pull_timeout",
        ) from None


def _require_listed(url: str, name: ModelName, models_dir: str) -> None:
    with OllamaClient(url) as client:
        try:
            listed = {model.key for model in client.tags()}
        except ApiError as exc:
            raise ModuleFailure(f"{exc} after copying {name} into {models_dir}") from None
    if name.key not in listed:
        raise ModuleFailure(
            f"{name} was copied into {models_dir}, but the Ollama API at {url} does not list it",
            hint="models_dir must be the store that this Ollama serves (its OLLAMA_MODELS; the service's "
            f"default is {SERVICE_MODELS_DIR})",
        )


def _reason(result: CommandResult) -> str:
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    return "; ".join(lines[-2:]) or f"exit status {result.rc}"


def default_models_dir(settings: dict[str, str] | None) -> str:
    """The target's store: the OLLAMA_MODELS the task sets for the service, else the service default."""
    return (settings or {}).get("OLLAMA_MODELS") or SERVICE_MODELS_DIR

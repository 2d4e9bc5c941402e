"""Distribution: fetch a big artifact once on a source, then stream it to every host that lacks it.

NGC images are 10-20 GB and a lab's uplink is slow; the hosts of a fleet sit on a fast LAN. With
`distribute`, a module gets the artifact once on the source (`seed`: the controller, i.e. the machine
running sparkprov, or an inventory host) and copies it to each target over the target's own SSH
connection, through the controller (the hosts need no access to each other).

- `OnceCache`: results computed once per process and shared by all hosts' threads (single flight:
  20 hosts asking at once trigger one pull; those arriving meanwhile wait for it and share its
  outcome, its failure too). A stored result is re-validated cheaply before reuse.
- `Source`: where the artifact comes from: the controller, or a seed host through the run's connection
  to it (`TaskContext.peer`).
- `Meter`: per-host progress of a copy, `ctx.progress("distribute X", done, total)`, which never
  claims to be finished before it is (a tar stream is a little larger than the image's size).
- Docker images: `distribute_image` - the source holds or pulls the image (the module's own pull
  code and progress), then `docker save` there streams into `docker load` on the target, and the
  loaded image ID must equal the source's. `docker load` does not keep registry digests
  (`RepoDigests`), so the copy is also tagged `NAME:sha256-HEX` for each registry digest the source
  knows it by (`digest_tag`): that tag is how later checks recognise a copy of a pinned image, or of
  the registry's current image with `check_latest`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Hashable, Iterator
from contextlib import closing
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar, cast

from sparkprov.connection.base import (
    STREAM_CHUNK,
    CommandFailed,
    CommandResult,
    CommandTimeout,
    Connection,
)
from sparkprov.modules._docker import (
    CliDocker,
    Credentials,
    DaemonError,
    DockerHost,
    ImageRef,
    LocalImage,
    SdkDocker,
    docker_host,
    image_failure,
)
from sparkprov.modules.base import ModuleFailure, TaskContext
from sparkprov.units import human_bytes

CONTROLLER = "controller"
# Play-level switches (play vars, group_vars, -e): used when a task does not say `distribute`/`seed`.
DISTRIBUTE_VAR = "sparkprov_distribute"
SEED_VAR = "sparkprov_distribute_seed"
QUERY_TIMEOUT_S = 60.0

T = TypeVar("T")


# ---------------------------------------------------------------- once per run


@dataclass
class _Attempt(Generic[T]):
    done: threading.Event = field(default_factory=threading.Event)
    value: T | None = None
    error: BaseException | None = None


class OnceCache(Generic[T]):
    """Values computed once per process, shared by every thread asking for the same key."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[Hashable, T] = {}
        self._running: dict[Hashable, _Attempt[T]] = {}

    def obtain(self, key: Hashable, produce: Callable[[], T], valid: Callable[[T], bool] | None = None) -> T:
        """The value for `key`: stored, or being produced by another thread (wait for it), or
        produced now by this one. A stored value that `valid` rejects is produced again."""
        while True:
            with self._lock:
                stored = key in self._values
                value = self._values.get(key)
                attempt = self._running.get(key)
                owner = not stored and attempt is None
                if owner:
                    attempt = self._running[key] = _Attempt()
            if stored:
                if valid is None or valid(cast(T, value)):
                    return cast(T, value)
                self._drop(key, cast(T, value))
                continue
            assert attempt is not None
            return self._produce(key, attempt, produce) if owner else self._wait(attempt)

    def forget(self) -> None:
        """Drop every stored value (a new run in the same process, tests)."""
        with self._lock:
            self._values.clear()

    def _drop(self, key: Hashable, value: T) -> None:
        with self._lock:
            if self._values.get(key) is value:
                del self._values[key]

    def _produce(self, key: Hashable, attempt: _Attempt[T], produce: Callable[[], T]) -> T:
        try:
            attempt.value = produce()
        except BaseException as exc:
            attempt.error = exc
            raise
        finally:
            with self._lock:
                del self._running[key]
                if attempt.error is None:
                    self._values[key] = cast(T, attempt.value)
            attempt.done.set()
        return attempt.value

    @staticmethod
    def _wait(attempt: _Attempt[T]) -> T:
        attempt.done.wait()
        if attempt.error is not None:
            raise attempt.error
        return cast(T, attempt.value)


# ---------------------------------------------------------------- settings and sources


def _scope_value(ctx: TaskContext, name: str) -> Any:
    try:
        return ctx.scope.get(name)
    except Exception:  # a variable that does not render is reported where it is used, not here
        return None


def wanted(args: dict[str, Any], ctx: TaskContext) -> str | None:
    """The seed to distribute from ('controller' or an inventory host), or None when not asked to:
    the task's `distribute`/`seed`, else the play-level variables."""
    flag = args.get("distribute")
    if flag is None:
        flag = _scope_value(ctx, DISTRIBUTE_VAR)
    if not (flag is True or str(flag).lower() in ("true", "yes", "1")):
        return None
    seed = args.get("seed") or _scope_value(ctx, SEED_VAR) or CONTROLLER
    return str(seed)


_PEER_LOCK = threading.Lock()


@dataclass(frozen=True)
class Source:
    """Where an artifact is fetched and streamed from. `conn` is None for the controller."""

    name: str  # 'controller' or the seed's inventory name
    conn: Connection | None
    ctx: TaskContext  # the task context aimed at the source (its connection, become, environment)

    @property
    def label(self) -> str:
        return "the controller" if self.conn is None else f"seed host {self.name}"


def source_for(seed: str, ctx: TaskContext) -> Source:
    """The source named `seed`. A seed host is reached through the run's own connection to it."""
    if seed == CONTROLLER:
        return Source(CONTROLLER, None, replace(ctx, environment={}))
    if ctx.peer is None:
        raise ModuleFailure(f"distributing from seed host {seed} needs the executor's connections")
    try:
        with _PEER_LOCK:  # the first use opens the connection; one at a time
            conn = ctx.peer(seed)
    except KeyError:
        raise ModuleFailure(
            f"the seed host '{seed}' is not in the inventory",
            hint="name an inventory host in 'seed', or 'controller' (the machine running sparkprov)",
        ) from None
    return Source(seed, conn, replace(ctx, conn=conn))


# ---------------------------------------------------------------- progress


@dataclass
class Meter:
    """A copy's progress as `ctx.progress(what, done, total)`: a first line at 0, `total` only once
    the copy is complete (stream overhead can take `done` past an estimated total before then)."""

    ctx: TaskContext
    what: str
    total: int
    started: float = field(default_factory=time.monotonic)
    done: int = 0

    def __post_init__(self) -> None:
        self.total = max(self.total, 1)
        self.ctx.progress(self.what, 0, self.total)

    def update(self, done: int) -> None:
        self.done = done
        self.ctx.progress(self.what, min(done, self.total - 1), self.total)

    def finish(self) -> None:
        self.total = max(self.total, self.done)
        self.ctx.progress(self.what, self.total, self.total)

    @property
    def rate(self) -> str:
        """Bytes per second so far, in words."""
        seconds = max(time.monotonic() - self.started, 1e-6)
        return f"{human_bytes(self.done / seconds)}/s"

    def summary(self, source: Source) -> str:
        return f"copied {human_bytes(self.done)} from {source.label} at {self.rate}"


# ---------------------------------------------------------------- docker images


@dataclass(frozen=True)
class ImageRequest:
    """What a target needs: the image, how to pull it on the source, and (with check_latest) the
    registry digest the source's copy must carry."""

    ref: ImageRef
    auth: Credentials | None
    timeout: float | None
    seed: str
    digest: str | None = None


@dataclass(frozen=True)
class SourceImage:
    source: Source
    ref: ImageRef
    name: str  # the reference the source holds it under (what `docker save` is given)
    id: str
    size: int
    digests: tuple[str, ...]  # the registry digests it is known by (RepoDigests, the pin)


@dataclass(frozen=True)
class Distributed:
    """A copy made: the target's image, the registry digest it stands for, how it went."""

    image: LocalImage
    digest: str | None
    note: str


IMAGES: OnceCache[SourceImage] = OnceCache()


def digest_tag(ref: ImageRef, digest: str) -> str:
    """`NAME:sha256-HEX`: the tag a distributed copy of the image with registry digest `digest` carries."""
    algorithm, _, hex_digest = digest.partition(":")
    return f"{ref.name}:{algorithm}-{hex_digest}"


def pinned_tag(ref: ImageRef) -> str | None:
    """The digest tag of an image pinned by digest (None when `ref` is a tag)."""
    return digest_tag(ref, ref.digest) if ref.digest else None


def distribute_image(ctx: TaskContext, request: ImageRequest) -> Distributed:
    """Make the target hold `request.ref` by copying it from the source (fetched there once per run)."""
    source = source_for(request.seed, ctx)
    image = _image_on_source(source, request)
    digest = request.ref.digest or request.digest or next(iter(image.digests), None)
    if source.conn is not None and source.name == ctx.conn.host_name:  # the seed itself
        return Distributed(
            _inspect_target(ctx, image.name, image), digest, f"pulled here, the seed of {request.ref}"
        )
    meter = Meter(ctx, f"distribute {request.ref}", image.size)
    with closing(_save(image)) as stream:
        result = _load(ctx, request, stream, meter)
    if result.rc != 0:
        raise _load_failure(ctx, request.ref, result)
    for known in image.digests:
        _tag(ctx, image.id, digest_tag(request.ref, known))
    loaded = _inspect_target(ctx, pinned_tag(request.ref) or request.ref.pull_ref, image)
    meter.finish()
    return Distributed(loaded, digest, meter.summary(source))


def _image_on_source(source: Source, request: ImageRequest) -> SourceImage:
    key = ("docker", source.name, request.ref.pull_ref, request.digest)
    return IMAGES.obtain(key, lambda: _fetch(source, request), lambda found: _current(found, source))


def _fetch(source: Source, request: ImageRequest) -> SourceImage:
    """The image on the source: there already, or pulled now (with the module's progress)."""
    with _source_docker(source) as docker:
        name, image = _source_inspect(docker, source, request.ref)
        if image is None or (request.digest and request.digest not in image.digests_for(request.ref)):
            what = f"pull {request.ref} on {source.label}"
            try:
                docker.pull(
                    request.ref,
                    request.auth,
                    request.timeout,
                    lambda done, total: source.ctx.progress(what, done, total),
                )
            except DaemonError as exc:
                raise image_failure(
                    f"pull (on {source.label})", request.ref, exc.reason, request.auth
                ) from None
            name, image = _source_inspect(docker, source, request.ref)
        if image is None:
            raise ModuleFailure(f"{source.label} pulled {request.ref} but does not list it afterwards")
    digests = dict.fromkeys(
        [*([request.ref.digest] if request.ref.digest else []), *image.digests_for(request.ref)]
    )
    return SourceImage(source, request.ref, name, image.id, image.size, tuple(digests))


def _current(image: SourceImage, source: Source) -> bool:
    """A stored source image is this run's (same connection to the seed) and still what the source's
    reference names (one cheap inspect)."""
    if image.source.conn is not source.conn:
        return False
    try:
        with _source_docker(image.source) as docker:
            _, found = _source_inspect(docker, image.source, image.ref)
    except ModuleFailure:
        return False
    return found is not None and found.id == image.id


def _source_docker(source: Source) -> DockerHost:
    if source.conn is None:
        return SdkDocker.connect({}, CONTROLLER)
    return docker_host(source.ctx)


def _source_inspect(docker: DockerHost, source: Source, ref: ImageRef) -> tuple[str, LocalImage | None]:
    """The source's image for `ref` and the name it has there: by tag, or by digest when pinned
    (also under the tag of a pinned image the source itself once received by distribution)."""
    names = [ref.pull_ref, *([tag] if (tag := pinned_tag(ref)) else [])]
    for name in names:
        try:
            image = docker.inspect(name)
        except DaemonError as exc:
            raise image_failure(f"inspect (on {source.label})", ref, exc.reason, None) from None
        if image is not None and (
            name != ref.pull_ref or not ref.digest or ref.digest in image.digests_for(ref)
        ):
            return name, image
    return ref.pull_ref, None


def _save(image: SourceImage) -> Generator[bytes, None, None]:
    """`docker save` of the image on its source, as a stream of chunks."""
    source = image.source
    try:
        if source.conn is None:
            yield from _sdk_save(image)
        else:
            argv = ["docker", "save", "--", image.name]
            environment = source.ctx.environment or None
            yield from source.conn.stream_output(argv, become=source.ctx.become, env=environment)
    except CommandFailed as exc:
        raise ModuleFailure(
            f"docker save {image.ref} on {source.label} failed: {_reason(exc.result)}"
        ) from None


def _sdk_save(image: SourceImage) -> Iterator[bytes]:
    import docker
    import requests

    client = SdkDocker.connect({}, CONTROLLER)
    try:
        with closing(client.api.get_image(image.name, chunk_size=STREAM_CHUNK)) as chunks:
            yield from chunks
    except docker.errors.APIError as exc:
        raise ModuleFailure(
            f"docker save {image.ref} on the controller failed: {exc.explanation or exc}"
        ) from None
    except requests.exceptions.RequestException as exc:
        raise ModuleFailure(f"docker save {image.ref} on the controller broke off: {exc}") from None
    finally:
        client.close()


def _load(ctx: TaskContext, request: ImageRequest, stream: Iterator[bytes], meter: Meter) -> CommandResult:
    try:
        return ctx.conn.run_with_input(
            ["docker", "load", "--quiet"],
            stream,
            timeout=request.timeout,
            become=ctx.become,
            env=ctx.environment or None,
            on_progress=meter.update,
        )
    except CommandTimeout:
        raise ModuleFailure(
            f"copying {request.ref} to {ctx.conn.host_name} did not finish within {request.timeout:g}s",
            hint="raise the task's `timeout` (NGC images are 10-20 GB)",
        ) from None


def _load_failure(ctx: TaskContext, ref: ImageRef, result: CommandResult) -> ModuleFailure:
    if result.rc == 127:
        return ModuleFailure(
            f"the docker CLI is not installed on {ctx.conn.host_name}",
            hint="install Docker there (DGX OS ships it; elsewhere the docker.io or docker-ce package)",
        )
    return ModuleFailure(f"docker load of {ref} on {ctx.conn.host_name} failed: {_reason(result)}")


def _tag(ctx: TaskContext, image_id: str, tag: str) -> None:
    result = ctx.conn.run(
        ["docker", "tag", image_id, tag],
        timeout=QUERY_TIMEOUT_S,
        become=ctx.become,
        env=ctx.environment or None,
    )
    if result.rc != 0:
        raise ModuleFailure(f"docker tag {tag} on {ctx.conn.host_name} failed: {_reason(result)}")


def _inspect_target(ctx: TaskContext, name: str, source: SourceImage) -> LocalImage:
    """The image the target now holds as `name`; its ID must be the source's."""
    try:
        image = CliDocker(ctx).inspect(name)
    except DaemonError as exc:
        raise image_failure("inspect", source.ref, exc.reason, None) from None
    if image is None:
        raise ModuleFailure(
            f"{ctx.conn.host_name} does not list {name} after the copy from {source.source.label}"
        )
    if image.id != source.id:
        raise ModuleFailure(
            f"{ctx.conn.host_name} holds {name} as image {image.id} after the copy, "
            f"but {source.source.label} has {source.id}",
            hint="the image changed on the source during the copy, or the target's docker rewrote it; "
            "run again",
        )
    return image


def _reason(result: CommandResult) -> str:
    lines = [line for line in (result.stderr or result.stdout).strip().splitlines() if line.strip()]
    return "; ".join(line.removeprefix("Error response from daemon: ") for line in lines[-2:]) or (
        f"exit status {result.rc}"
    )

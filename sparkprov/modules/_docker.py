"""Docker on a host, for the modules that need images: references, the daemon, the registry.

Two backends behind one small interface (`DockerHost`): the Docker SDK when the host is this machine
and no privilege change is needed, the docker CLI through the connection otherwise (remote hosts, or
`become`). Both report the daemon's own error text, which `image_failure` turns into a message that
names the image and what to do. `registry_digest` asks the registry (from the controller) which
manifest a tag points at, with the Accept header that makes it equal to the local `RepoDigests`.

Credentials never reach argv, logs or exceptions: the SDK passes them as `auth_config`, the CLI logs
in with `--password-stdin` into a throwaway DOCKER_CONFIG.
"""

from __future__ import annotations

import abc
import base64
import ipaddress
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from sparkprov.connection.base import CommandResult, CommandTimeout
from sparkprov.modules._progress import LayerBytes
from sparkprov.modules.base import ModuleFailure, TaskContext

if TYPE_CHECKING:
    import requests

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
QUERY_TIMEOUT_S = 60.0
REGISTRY_TIMEOUT_S = 30.0
# The manifest types a pull accepts; asking with all of them makes the registry answer the digest
# that ends up in RepoDigests (without it, distribution answers a schema1 manifest with another digest).
MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_DOMAIN = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9-]+)*(?::[0-9]+)?")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}")
REFERENCE_FORM = "[REGISTRY/]REPOSITORY[:TAG][@sha256:DIGEST], e.g. nvcr.io/nvidia/pytorch:25.11-py3"


# ---------------------------------------------------------------- references


@dataclass(frozen=True)
class ImageRef:
    """An image reference, normalised: `registry` is docker.io for Docker Hub names."""

    registry: str
    repository: str  # the path inside the registry: nvidia/pytorch, library/busybox
    tag: str | None  # None only when pinned by digest without a tag
    digest: str | None = None  # a pinned digest wins over the tag

    @property
    def name(self) -> str:
        """The repository as docker prints it (Docker Hub names without docker.io/library/)."""
        if self.registry == DOCKER_HUB:
            return self.repository.removeprefix("library/")
        return f"{self.registry}/{self.repository}"

    @property
    def pull_ref(self) -> str:
        """What is pulled, inspected and removed: the digest when pinned, else the tag."""
        return f"{self.name}@{self.digest}" if self.digest else f"{self.name}:{self.tag}"

    def same_repository(self, other: ImageRef) -> bool:
        return (self.registry, self.repository) == (other.registry, other.repository)

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        digest = f"@{self.digest}" if self.digest else ""
        return f"{self.name}{tag}{digest}"


def parse_image(text: str, digest: str | None = None, default_tag: str = "latest") -> ImageRef:
    """Parse `[REGISTRY/]REPO[:TAG][@DIGEST]`; `digest` (the module's pin) wins over the tag, and
    `default_tag` applies when the text names none.

    Raises ValueError with the reason when `text` is not a reference docker would accept.
    """
    rest, _, embedded = text.partition("@")
    if embedded and not DIGEST.fullmatch(embedded):
        raise ValueError(f"'{embedded}' is not a digest (sha256: and 64 lowercase hex digits)")
    if digest and embedded and digest != embedded:
        raise ValueError(f"it is pinned to {embedded} but 'digest' says {digest}; keep one")
    tag = None
    if rest.rfind(":") > rest.rfind("/"):
        rest, _, tag = rest.rpartition(":")
    registry, repository = _split_registry(rest)
    if not _REPOSITORY.fullmatch(repository):
        raise ValueError(
            f"'{repository}' is not a valid repository name (lowercase letters, digits, '.', '_', '-', '/')"
        )
    pinned = digest or embedded or None
    tag = tag or (None if pinned else default_tag)
    if tag is not None and not _TAG.fullmatch(tag):
        raise ValueError(f"'{tag}' is not a valid tag")
    return ImageRef(registry, repository, tag, pinned)


def _split_registry(name: str) -> tuple[str, str]:
    first, sep, remainder = name.partition("/")
    if sep and (any(c in first for c in ".:") or first == "localhost" or first != first.lower()):
        if not _DOMAIN.fullmatch(first):
            raise ValueError(f"'{first}' is not a valid registry host")
        registry, repository = first, remainder
    else:
        registry, repository = DOCKER_HUB, name
    if registry in (DOCKER_HUB, "index.docker.io") and "/" not in repository:
        repository = f"library/{repository}"
    return ("docker.io" if registry == "index.docker.io" else registry), repository


# ---------------------------------------------------------------- images and credentials


@dataclass(frozen=True)
class Credentials:
    """A registry login; `source` names where the password came from (for hints), never the value."""

    username: str
    password: str = field(repr=False)
    source: str

    def sdk_auth_config(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password}


@dataclass(frozen=True)
class LocalImage:
    """What the daemon knows about an image it holds."""

    id: str
    size: int
    repo_digests: tuple[str, ...]
    layers: int = 0

    @classmethod
    def from_inspect(cls, data: dict[str, Any]) -> LocalImage:
        digests = tuple(data.get("RepoDigests") or ())
        layers = len((data.get("RootFS") or {}).get("Layers") or ())
        return cls(str(data["Id"]), int(data.get("Size") or 0), digests, layers)

    def digests_for(self, ref: ImageRef) -> list[str]:
        """The registry digests this image carries for `ref`'s repository (RepoDigests entries)."""
        found = []
        for entry in self.repo_digests:
            try:
                other = parse_image(entry)
            except ValueError:
                continue
            if other.digest and other.same_repository(ref):
                found.append(other.digest)
        return found

    def digest_for(self, ref: ImageRef) -> str | None:
        digests = self.digests_for(ref)
        return digests[0] if digests else None


# ---------------------------------------------------------------- errors


class DaemonError(Exception):
    """The daemon (or the registry behind it) refused an operation; the text is its reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_PLATFORM = ("no matching manifest for",)
_AUTH = (
    "unauthorized",
    "authentication required",
    "no basic auth credentials",
    "access denied",
    "denied:",
    "incorrect username or password",
    "status: 401",
    "http 401",
    "http 403",
    "403 forbidden",
)
_NOT_FOUND = ("manifest unknown", "not found", "does not exist", "name unknown", "http 404")
_NETWORK = (
    "connection refused",
    "no such host",
    "i/o timeout",
    "timed out",
    "timeout",
    "network is unreachable",
    "no route to host",
    "connection reset",
    "tls handshake",
    "server gave http response to https client",
    "temporary failure in name resolution",
    "name or service not known",
    "cannot connect to",
)


def _has(reason: str, needles: Iterable[str]) -> bool:
    lowered = reason.lower()
    return any(needle in lowered for needle in needles)


def image_failure(action: str, ref: ImageRef, reason: str, auth: Credentials | None) -> ModuleFailure:
    """`action` ("pull", "remove", "check the registry for") failed for `ref`: say why, and what to do."""
    if _has(reason, _PLATFORM):
        where = "a DGX Spark is linux/arm64, so pick" if "arm64" in reason else "pick"
        hint = f"the image has no build for this host's platform; {where} a multi-arch tag built for it"
        return _failure(action, ref, "no matching platform", reason, hint)
    if _has(reason, _AUTH):
        return _failure(action, ref, "unauthorized", reason, _auth_hint(ref, auth))
    if _has(reason, _NOT_FOUND):
        hint = f"check that the repository {ref.name} and the tag or digest exist in {ref.registry}"
        return _failure(action, ref, "not found", reason, hint)
    if _has(reason, ("x509:", "certificate")):
        hint = (
            f"make the host trust {ref.registry}'s CA (/etc/docker/certs.d/{ref.registry}/ca.crt), or list a "
            "plain-HTTP test registry in dockerd's insecure-registries"
        )
        return _failure(action, ref, f"TLS certificate problem with {ref.registry}", reason, hint)
    if _has(reason, _NETWORK):
        hint = (
            f"check the host's network, DNS and proxy settings and that {ref.registry} is the right "
            "registry host (dockerd uses the proxy settings of its own service)"
        )
        return _failure(action, ref, f"network error reaching {ref.registry}", reason, hint)
    return ModuleFailure(f"{action} {ref} failed: {reason}")


def _failure(action: str, ref: ImageRef, kind: str, reason: str, hint: str) -> ModuleFailure:
    """The message `pull X failed: KIND: REASON`, without KIND again when the reason starts with it."""
    detail = reason if reason.lower().startswith(kind) else f"{kind}: {reason}"
    return ModuleFailure(f"{action} {ref} failed: {detail}", hint=hint)


def _auth_hint(ref: ImageRef, auth: Credentials | None) -> str:
    if auth is not None:
        return (
            f"{ref.registry} rejected user '{auth.username}' with the password from {auth.source}; check it"
        )
    if ref.registry == "nvcr.io":
        return "set registry_auth: ngc and export NGC_API_KEY (an NGC API key; the user is $oauthtoken)"
    return (
        f"set registry_auth ('ngc' with NGC_API_KEY, or {{username, password_env}}), "
        f"or run `docker login {ref.registry}` on the host"
    )


def daemon_unreachable(host: str, where: str, reason: str) -> ModuleFailure:
    return ModuleFailure(
        f"cannot reach the Docker daemon on {host} at {where}: {reason}",
        hint="start it (`sudo systemctl start docker`); if it runs, give this user access "
        "(`sudo usermod -aG docker $USER`, then log in again) or set `become: true` on the task; "
        "DOCKER_HOST selects another daemon",
    )


def _daemon_reason(message: str) -> str:
    """A short reason out of the SDK's connection error text."""
    for marker, reason in (
        ("FileNotFoundError", "no such socket (is dockerd running?)"),
        ("PermissionError", "permission denied on the socket"),
        ("ConnectionRefusedError", "connection refused"),
    ):
        if marker in message:
            return reason
    return message


# ---------------------------------------------------------------- pull progress


_LAYER_STATES = frozenset(
    {"Pulling fs layer", "Waiting", "Downloading", "Verifying Checksum", "Download complete"}
    | {"Extracting", "Pull complete"}
)
_DOWNLOADED = frozenset({"Verifying Checksum", "Download complete", "Extracting", "Pull complete"})


class PullProgress(LayerBytes):
    """Bytes downloaded across the layers of a pull, from the daemon's JSON progress events."""

    def update(self, event: dict[str, Any]) -> bool:
        """Account for one event; True when the byte counts changed."""
        layer, status = event.get("id"), event.get("status", "")
        if not layer or status not in _LAYER_STATES:
            return False
        before = self.layers.get(layer, (0, 0))
        detail = event.get("progressDetail") or {}
        if status == "Downloading" and detail.get("total"):
            now = (int(detail.get("current", 0)), int(detail["total"]))
        elif status in _DOWNLOADED:
            now = (before[1], before[1])
        else:
            now = before
        self.layers[layer] = now
        return now != before

    @property
    def running_total(self) -> int | None:
        """The total to show while pulling: None when unknown, or when the layers known so far are
        done but others have not said their size yet (it would read as finished)."""
        total = self.total
        return total if total and self.done < total else None


# Progress of one pull: (bytes done, bytes total or None while unknown).
Progress = Callable[[int, int | None], None]


# ---------------------------------------------------------------- the daemon


class DockerHost(abc.ABC):
    """The docker daemon of one host: inspect, pull and remove images."""

    @abc.abstractmethod
    def inspect(self, ref: str) -> LocalImage | None:
        """The local image `ref` names (tag or name@digest), or None when there is none."""

    @abc.abstractmethod
    def pull(
        self, ref: ImageRef, auth: Credentials | None, timeout: float | None, progress: Progress
    ) -> None:
        """Pull `ref.pull_ref`; DaemonError with the registry's reason when it fails."""

    @abc.abstractmethod
    def remove(self, ref: str) -> None:
        """Remove the image reference `ref` (the image goes when no reference is left)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the connection to the daemon."""

    def __enter__(self) -> DockerHost:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def pull_timeout(ref: ImageRef, timeout: float) -> ModuleFailure:
    return ModuleFailure(
        f"pull {ref} did not finish within {timeout:g}s and was stopped",
        hint="raise the task's `timeout` (NGC images are 10-20 GB) or check the network",
    )


class SdkDocker(DockerHost):
    """This machine's daemon through the Docker SDK (DOCKER_HOST and friends from the environment)."""

    def __init__(self, api: Any, where: str = DEFAULT_DOCKER_HOST, host: str = "localhost") -> None:
        self.api = api  # docker.APIClient
        self.where = where
        self.host = host

    @classmethod
    def connect(cls, environment: dict[str, str], host: str = "localhost") -> SdkDocker:
        import docker

        env = {**os.environ, **environment}
        where = env.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST
        try:
            client = docker.from_env(environment=env)
        except docker.errors.DockerException as exc:
            raise daemon_unreachable(host, where, _daemon_reason(str(exc))) from None
        return cls(client.api, where, host)

    @contextmanager
    def _calling(self) -> Iterator[None]:
        """SDK errors become DaemonError (the daemon's reason), transport errors a daemon failure."""
        import docker
        import requests

        try:
            yield
        except docker.errors.APIError as exc:
            raise DaemonError(str(exc.explanation or exc)) from None
        except requests.exceptions.ConnectionError as exc:
            raise daemon_unreachable(self.host, self.where, _daemon_reason(str(exc))) from None

    def inspect(self, ref: str) -> LocalImage | None:
        import docker

        with self._calling():
            try:
                return LocalImage.from_inspect(self.api.inspect_image(ref))
            except docker.errors.ImageNotFound:
                return None

    def pull(
        self, ref: ImageRef, auth: Credentials | None, timeout: float | None, progress: Progress
    ) -> None:
        deadline = time.monotonic() + timeout if timeout else None
        state = PullProgress()
        with self._calling():
            events = self.api.pull(
                ref.pull_ref, stream=True, decode=True, auth_config=auth.sdk_auth_config() if auth else None
            )
            try:
                for event in events:
                    _raise_event_error(event)
                    if state.update(event):
                        progress(state.done, state.running_total)
                    if deadline is not None and time.monotonic() > deadline:
                        raise pull_timeout(ref, timeout or 0)
            finally:
                events.close()  # a pull left early is cancelled by the daemon
        if state.total:
            progress(state.total, state.total)

    def remove(self, ref: str) -> None:
        with self._calling():
            self.api.remove_image(ref)

    def close(self) -> None:
        self.api.close()


def _raise_event_error(event: dict[str, Any]) -> None:
    if "error" in event:
        detail = event.get("errorDetail") or {}
        raise DaemonError(str(detail.get("message") or event["error"]))


_CLI_UNREACHABLE = (
    "cannot connect to the docker daemon",
    "permission denied while trying to connect",
    "error during connect",
)


class CliDocker(DockerHost):
    """A host's daemon through its docker CLI, run by the connection (remote hosts, become)."""

    def __init__(self, ctx: TaskContext) -> None:
        self.conn = ctx.conn
        self.become = ctx.become
        self.environment = dict(ctx.environment)

    def _docker(
        self,
        args: list[str],
        *,
        stdin: bytes | None = None,
        timeout: float | None = QUERY_TIMEOUT_S,
        env: dict[str, str] | None = None,
    ) -> CommandResult:
        environment = {**self.environment, **(env or {})}
        result = self.conn.run(
            ["docker", *args], stdin=stdin, timeout=timeout, become=self.become, env=environment or None
        )
        if result.rc == 127:
            raise ModuleFailure(
                f"the docker CLI is not installed on {self.conn.host_name}",
                hint="install Docker there (DGX OS ships it; elsewhere the docker.io or docker-ce package)",
            )
        if result.rc != 0 and _has(result.stderr, _CLI_UNREACHABLE):
            where = self.environment.get("DOCKER_HOST", "its DOCKER_HOST or " + DEFAULT_DOCKER_HOST)
            raise daemon_unreachable(self.conn.host_name, where, _cli_reason(result))
        return result

    def inspect(self, ref: str) -> LocalImage | None:
        result = self._docker(["image", "inspect", "--", ref])
        if result.rc != 0:
            if "no such image" in result.stderr.lower():
                return None
            raise DaemonError(_cli_reason(result))
        return LocalImage.from_inspect(json.loads(result.stdout)[0])

    def pull(
        self, ref: ImageRef, auth: Credentials | None, timeout: float | None, progress: Progress
    ) -> None:
        progress(0, None)  # the CLI runs to completion: progress is coarse (started, finished)
        with self._login(ref, auth) as env:
            try:
                result = self._docker(["pull", "--", ref.pull_ref], timeout=timeout, env=env)
            except CommandTimeout:
                raise pull_timeout(ref, timeout or 0) from None
        if result.rc != 0:
            raise DaemonError(_cli_reason(result))
        image = self.inspect(ref.pull_ref)
        if image is not None:
            progress(image.size, image.size)

    def remove(self, ref: str) -> None:
        result = self._docker(["image", "rm", "--", ref])
        if result.rc != 0:
            raise DaemonError(_cli_reason(result))

    @contextmanager
    def _login(self, ref: ImageRef, auth: Credentials | None) -> Iterator[dict[str, str]]:
        """`docker login --password-stdin` into a throwaway DOCKER_CONFIG, removed afterwards: the key
        is never in argv and is not left behind in the user's ~/.docker/config.json."""
        if auth is None:
            yield {}
            return
        made = self.conn.run(["mktemp", "-d"], become=self.become, timeout=QUERY_TIMEOUT_S)
        if made.rc != 0:
            where = self.conn.host_name
            raise ModuleFailure(f"cannot create a temporary DOCKER_CONFIG on {where}: {made.stderr.strip()}")
        env = {"DOCKER_CONFIG": made.stdout.strip()}
        try:
            argv = ["login", "--username", auth.username, "--password-stdin", ref.registry]
            result = self._docker(argv, stdin=auth.password.encode("utf-8"), env=env)
            if result.rc != 0:
                raise DaemonError(_cli_reason(result))
            yield env
        finally:
            rm = ["rm", "-rf", "--", env["DOCKER_CONFIG"]]
            self.conn.run(rm, become=self.become, timeout=QUERY_TIMEOUT_S)


def _cli_reason(result: CommandResult) -> str:
    text = (result.stderr or result.stdout).strip()
    lines = [line.removeprefix("Error response from daemon: ") for line in text.splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith("WARNING!")]
    return "; ".join(useful[-2:]) or f"docker exited with {result.rc}"


def docker_host(ctx: TaskContext) -> DockerHost:
    """The SDK for this machine when no other user is needed; the CLI through the connection otherwise."""
    if ctx.conn.is_local and not _becomes_other_user(ctx):
        return SdkDocker.connect(ctx.environment, ctx.conn.host_name)
    return CliDocker(ctx)


def _becomes_other_user(ctx: TaskContext) -> bool:
    from sparkprov.connection.local import current_user

    return ctx.become is not None and ctx.become.user != current_user()


# ---------------------------------------------------------------- the registry


class RegistryError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def registry_digest(
    ref: ImageRef,
    auth: Credentials | None,
    on_token: Callable[[str], None],
    timeout: float = REGISTRY_TIMEOUT_S,
) -> str:
    """The digest the registry serves for `ref`'s tag (HEAD manifest with the pull's Accept types).

    `on_token` receives any bearer token obtained, so output can mask it. Raises RegistryError.
    """
    import requests

    host = DOCKER_HUB_API if ref.registry == DOCKER_HUB else ref.registry
    path = f"/v2/{ref.repository}/manifests/{ref.tag}"
    with requests.Session() as session:
        session.trust_env = not _is_loopback(host)  # like dockerd: no proxy for loopback registries
        response = _first_answer(session, host, path, auth, on_token, timeout)
    if response.status_code in (401, 403):
        raise RegistryError(f"unauthorized: HTTP {response.status_code} for the manifest of {ref}")
    if response.status_code == 404:
        raise RegistryError(f"manifest unknown: {ref} not found (HTTP 404)")
    if response.status_code != 200:
        raise RegistryError(f"HTTP {response.status_code} for the manifest of {ref}")
    digest = response.headers.get("Docker-Content-Digest")
    if not digest:
        raise RegistryError(f"the registry did not say the digest of {ref} (no Docker-Content-Digest)")
    return digest


def _first_answer(
    session: requests.Session,
    host: str,
    path: str,
    auth: Credentials | None,
    on_token: Callable[[str], None],
    timeout: float,
) -> requests.Response:
    """HTTPS, then plain HTTP for loopback registries (as dockerd treats 127.0.0.0/8 as insecure)."""
    import requests

    failure: Exception | None = None
    for scheme in ("https", "http") if _is_loopback(host) else ("https",):
        try:
            return _head_manifest(session, f"{scheme}://{host}{path}", auth, on_token, timeout)
        except requests.exceptions.Timeout:
            raise RegistryError(f"{host}: timed out after {timeout:g}s") from None
        except requests.exceptions.ConnectionError as exc:
            failure = exc
    raise RegistryError(f"cannot connect to {host}: {_connection_reason(failure)}")


def _head_manifest(
    session: requests.Session,
    url: str,
    auth: Credentials | None,
    on_token: Callable[[str], None],
    timeout: float,
) -> requests.Response:
    headers = {"Accept": MANIFEST_TYPES}
    response = session.head(url, headers=headers, timeout=timeout, allow_redirects=True)
    if response.status_code == 401:
        challenge = response.headers.get("WWW-Authenticate", "")
        headers["Authorization"] = _authorization(session, challenge, auth, on_token, timeout)
        response = session.head(url, headers=headers, timeout=timeout, allow_redirects=True)
    return response


def _authorization(
    session: requests.Session,
    challenge: str,
    auth: Credentials | None,
    on_token: Callable[[str], None],
    timeout: float,
) -> str:
    """The Authorization header answering a 401 challenge: Basic, or a Bearer token from the realm."""
    scheme = challenge.split(" ", 1)[0].lower()
    params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    if scheme == "basic":
        if auth is None:
            raise RegistryError("unauthorized: authentication required (no credentials given)")
        token = base64.b64encode(f"{auth.username}:{auth.password}".encode()).decode("ascii")
        return f"Basic {token}"
    if scheme != "bearer" or "realm" not in params:
        raise RegistryError(f"unauthorized: unsupported authentication challenge '{scheme}'")
    query = {k: v for k, v in params.items() if k in ("service", "scope")}
    login = (auth.username, auth.password) if auth else None
    answer = session.get(params["realm"], params=query, auth=login, timeout=timeout)
    if answer.status_code in (401, 403):
        raise RegistryError(f"unauthorized: the token service answered HTTP {answer.status_code}")
    if answer.status_code != 200:
        raise RegistryError(f"the token service answered HTTP {answer.status_code}")
    body = answer.json()
    token = str(body.get("token") or body.get("access_token") or "")
    on_token(token)
    return f"Bearer {token}"


def _connection_reason(exc: Exception | None) -> str:
    text = str(exc)
    match = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    return match.group(1).strip().lower() if match else text


def _is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def docker_config_credentials(ref: ImageRef, environment: dict[str, str]) -> Credentials | None:
    """A `docker login` the controller's Docker config holds for `ref`'s registry, if any."""
    from docker import auth as docker_auth

    config_dir = environment.get("DOCKER_CONFIG")
    path = os.path.join(config_dir, "config.json") if config_dir else None
    try:
        entry = docker_auth.load_config(config_path=path).resolve_authconfig(ref.registry)
    except Exception:  # an unreadable config or a broken credential helper: query anonymously
        return None
    if not entry:
        return None
    username = entry.get("username") or entry.get("Username") or ""
    password = entry.get("password") or entry.get("Password") or ""
    return Credentials(str(username), str(password), "the Docker config") if password else None

"""docker_image without a daemon: references, error messages, pull progress, credentials, the schema,
the registry's token flow, and what happens when no daemon answers (the real SDK and docker CLI).

The daemon's progress events below are copied from a real `POST /images/create` stream. The token
registry is a stand-in for nvcr.io (Bearer challenge, token service, HEAD manifest), which cannot be
reached from here; the open/htpasswd registries of the integration tests cover Basic auth.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from sparkprov.connection.base import Become
from sparkprov.connection.local import LocalConnection, current_user
from sparkprov.modules._docker import (
    MANIFEST_TYPES,
    CliDocker,
    Credentials,
    ImageRef,
    LocalImage,
    PullProgress,
    RegistryError,
    SdkDocker,
    docker_host,
    image_failure,
    parse_image,
    registry_digest,
)
from sparkprov.modules.base import ModuleFailure, TaskContext
from sparkprov.modules.docker_image import DockerImageModule, credentials
from sparkprov.playbook.schema import validate
from sparkprov.playbook.templating import Scope

D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64


def _ctx(**kwargs: Any) -> TaskContext:
    return TaskContext(conn=LocalConnection(), become=None, scope=Scope([]), search_dirs=(), **kwargs)


# ---------------------------------------------------------------- references


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest", "pull_ref"),
    [
        (
            "nvcr.io/nvidia/pytorch:25.11-py3",
            "nvcr.io",
            "nvidia/pytorch",
            "25.11-py3",
            None,
            "nvcr.io/nvidia/pytorch:25.11-py3",
        ),
        ("busybox", "docker.io", "library/busybox", "latest", None, "busybox:latest"),
        ("docker.io/library/busybox:1", "docker.io", "library/busybox", "1", None, "busybox:1"),
        ("ollama/ollama", "docker.io", "ollama/ollama", "latest", None, "ollama/ollama:latest"),
        ("localhost/x/y", "localhost", "x/y", "latest", None, "localhost/x/y:latest"),
        (
            "127.0.0.1:5000/nvidia/pytorch:25.11-py3",
            "127.0.0.1:5000",
            "nvidia/pytorch",
            "25.11-py3",
            None,
            "127.0.0.1:5000/nvidia/pytorch:25.11-py3",
        ),
        (f"nvcr.io/nvidia/vllm@{D1}", "nvcr.io", "nvidia/vllm", None, D1, f"nvcr.io/nvidia/vllm@{D1}"),
        (
            f"nvcr.io/nvidia/vllm:25.11@{D1}",
            "nvcr.io",
            "nvidia/vllm",
            "25.11",
            D1,
            f"nvcr.io/nvidia/vllm@{D1}",
        ),
    ],
)
def test_parse_image(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None, pull_ref: str
) -> None:
    ref = parse_image(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)
    assert ref.pull_ref == pull_ref


def test_tag_argument_applies_when_the_name_has_none() -> None:
    assert parse_image("nvcr.io/nvidia/pytorch", default_tag="25.11-py3").tag == "25.11-py3"
    assert parse_image("nvcr.io/nvidia/pytorch:25.10-py3", default_tag="25.11-py3").tag == "25.10-py3"
    assert parse_image("nvcr.io/nvidia/pytorch", D1, default_tag="25.11-py3").pull_ref.endswith(D1)
    with pytest.raises(ValueError, match="not a valid tag"):
        parse_image("nvcr.io/nvidia/pytorch", default_tag="bad tag")


def test_a_pinned_digest_wins_over_the_tag() -> None:
    ref = parse_image("nvcr.io/nvidia/pytorch:25.11-py3", D1)
    assert ref.pull_ref == f"nvcr.io/nvidia/pytorch@{D1}"
    assert str(ref) == f"nvcr.io/nvidia/pytorch:25.11-py3@{D1}"
    assert parse_image(f"nvcr.io/nvidia/pytorch@{D1}", D1).digest == D1


@pytest.mark.parametrize(
    ("text", "digest", "reason"),
    [
        ("nvcr.io/NVIDIA/pytorch:1", None, "not a valid repository name"),
        ("nvcr.io/nvidia/pytorch@sha256:beef", None, "is not a digest"),
        ("nvcr.io/nvidia/pytorch:bad tag", None, "not a valid tag"),
        ("", None, "not a valid repository name"),
        (f"nvcr.io/nvidia/pytorch@{D1}", D2, "keep one"),
        ("bad_host!/x/y:1", None, "not a valid"),
    ],
)
def test_parse_image_rejects(text: str, digest: str | None, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_image(text, digest)


def test_invalid_name_is_a_module_failure_with_the_form() -> None:
    with pytest.raises(ModuleFailure, match=r"\[REGISTRY/\]REPOSITORY"):
        DockerImageModule().check({"name": "Nvidia/Pytorch"}, _ctx())


def test_repo_digests_match_by_repository_in_familiar_and_full_form() -> None:
    image = LocalImage.from_inspect(
        {
            "Id": "sha256:1",
            "Size": 7,
            "RepoDigests": [f"busybox@{D1}", f"127.0.0.1:5000/nvidia/pytorch@{D2}", "garbage@@"],
            "RootFS": {"Type": "layers", "Layers": ["sha256:1", "sha256:2"]},
        }
    )
    assert (image.id, image.size, image.layers) == ("sha256:1", 7, 2)
    assert image.digests_for(parse_image("docker.io/library/busybox:1")) == [D1]
    assert image.digest_for(parse_image("127.0.0.1:5000/nvidia/pytorch:25.11-py3")) == D2
    assert image.digest_for(parse_image("127.0.0.1:5000/nvidia/other:1")) is None


# ---------------------------------------------------------------- error messages

REF = parse_image("nvcr.io/nvidia/pytorch:25.11-py3")


@pytest.mark.parametrize(
    ("reason", "says", "hint"),
    [
        (
            'Head "https://nvcr.io/v2/nvidia/pytorch/manifests/1": unauthorized: authentication required',
            "failed: unauthorized: Head",
            "export NGC_API_KEY",
        ),
        ("unauthorized: authentication required", "failed: unauthorized: authentication required", "ngc"),
        ("login attempt to http://r/v2/ failed with status: 401 Unauthorized", "unauthorized", "NGC_API_KEY"),
        ('Head "http://r/v2/x/manifests/1": no basic auth credentials', "unauthorized", "registry_auth"),
        (
            "pull access denied for nvidia/x, repository does not exist or may require 'docker login'",
            "unauthorized",
            "registry_auth",
        ),
        (
            "manifest for nvcr.io/nvidia/pytorch:99 not found: manifest unknown: manifest unknown",
            "failed: not found: manifest for",
            "check that the repository",
        ),
        (
            "no matching manifest for linux/arm64/v8 in the manifest list entries",
            "no matching platform",
            "DGX Spark is linux/arm64",
        ),
        (
            'Get "https://nvcr.io/v2/": dial tcp: lookup nvcr.io: no such host',
            "network error reaching nvcr.io",
            "DNS and proxy",
        ),
        (
            'Get "http://127.0.0.1:1/v2/": dial tcp 127.0.0.1:1: connect: connection refused',
            "network",
            "proxy",
        ),
        ("net/http: TLS handshake timeout", "network error", "registry host"),
        (
            'Get "https://reg.lan/v2/": x509: certificate signed by unknown authority',
            "TLS certificate problem with nvcr.io",
            "/etc/docker/certs.d/nvcr.io/ca.crt",
        ),
        ("something new", "pull nvcr.io/nvidia/pytorch:25.11-py3 failed: something new", ""),
    ],
)
def test_pull_errors_name_the_image_the_reason_and_what_to_do(reason: str, says: str, hint: str) -> None:
    message = str(image_failure("pull", REF, reason, None))
    assert message.startswith("pull nvcr.io/nvidia/pytorch:25.11-py3 failed: ")
    assert says in message
    assert reason in message
    assert hint in message


def test_rejected_credentials_name_their_source_never_the_value() -> None:
    auth = Credentials("$oauthtoken", "nvapi-very-secret", "$NGC_API_KEY")
    failure = image_failure("pull", REF, "unauthorized: authentication required", auth)
    assert "$NGC_API_KEY" in str(failure)
    assert "nvapi-very-secret" not in str(failure) + repr(auth)


# ---------------------------------------------------------------- pull progress


def _events(*items: tuple[str, str, int | None, int | None]) -> list[dict[str, Any]]:
    events = []
    for layer, status, current, total in items:
        detail = {"current": current, "total": total} if total is not None else {}
        events.append({"status": status, "progressDetail": detail, "id": layer})
    return events


def test_pull_progress_sums_downloads_and_never_reads_finished_too_early() -> None:
    state = PullProgress()
    stream = [
        {"status": "Pulling from nvidia/big", "id": "1"},
        *_events(
            ("a", "Pulling fs layer", None, None),
            ("b", "Pulling fs layer", None, None),
            ("c", "Already exists", None, None),
            ("a", "Downloading", 100, 1000),
        ),
    ]
    seen = [(state.done, state.running_total) for event in stream if state.update(event)]
    assert seen == [(100, 1000)]
    for event in _events(("a", "Verifying Checksum", None, None), ("a", "Download complete", None, None)):
        state.update(event)
    assert (state.done, state.total, state.running_total) == (1000, 1000, None)  # b's size is unknown yet
    for event in _events(("b", "Downloading", 50, 500), ("a", "Extracting", 10, 1000)):
        state.update(event)
    assert (state.done, state.running_total) == (1050, 1500)
    for event in _events(("b", "Pull complete", None, None), ("a", "Pull complete", None, None)):
        state.update(event)
    assert (state.done, state.total, state.running_total) == (1500, 1500, None)
    assert "c" not in state.layers


# ---------------------------------------------------------------- credentials and the schema


def test_ngc_credentials_come_from_the_environment_and_are_registered_as_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NGC_API_KEY", "nvapi-key-1")
    secrets: list[str] = []
    auth = credentials({"registry_auth": "ngc"}, REF, _ctx(secret=secrets.append))
    assert auth is not None
    assert (auth.username, auth.password, auth.source) == ("$oauthtoken", "nvapi-key-1", "$NGC_API_KEY")
    assert secrets == ["nvapi-key-1"]
    assert "nvapi-key-1" not in repr(auth)


def test_named_password_variable_and_task_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REG_PASS", raising=False)
    ctx = _ctx(environment={"REG_PASS": "from-task-env"})
    auth = credentials({"registry_auth": {"username": "bot", "password_env": "REG_PASS"}}, REF, ctx)
    assert auth == Credentials("bot", "from-task-env", "$REG_PASS")
    assert credentials({}, REF, ctx) is None


def test_missing_ngc_key_says_to_export_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NGC_API_KEY", raising=False)
    with pytest.raises(ModuleFailure, match="export NGC_API_KEY"):
        credentials({"registry_auth": "ngc"}, REF, _ctx())


def _schema_problems(args: dict[str, Any]) -> list[str]:
    from sparkprov.errors import Place

    found = validate(
        args,
        "modules/docker_image",
        root=None,
        base_path=[],
        fallback=Place("t.yml", 1, 1),
        what="docker_image",
    )
    return [p.message + (f" ({p.hint})" if p.hint else "") for p in found]


def test_schema_accepts_the_documented_arguments() -> None:
    args = {
        "name": "nvcr.io/nvidia/pytorch",
        "tag": "25.11-py3",
        "state": "present",
        "digest": D1,
        "check_latest": True,
        "registry_auth": "ngc",
        "timeout": 3600,
    }
    assert _schema_problems(args) == []
    assert _schema_problems({"name": "x", "registry_auth": {"username": "u", "password_env": "P"}}) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"name": "x", "digest": "abc"}, "'digest' must be 'sha256:'"),
        ({"name": "x", "registry_auth": "nvcr"}, "must be 'ngc' (user $oauthtoken"),
        ({"name": "x", "registry_auth": {"username": "u", "password": "p"}}, "must be 'ngc'"),
        ({"name": "x", "state": "latest"}, "must be one of 'present', 'absent'"),
        ({"name": "x", "check_latests": True}, "did you mean 'check_latest'?"),
        ({"state": "present"}, "missing required key 'name'"),
    ],
)
def test_schema_errors_are_friendly(args: dict[str, Any], message: str) -> None:
    assert any(message in problem for problem in _schema_problems(args)), _schema_problems(args)


# ---------------------------------------------------------------- backends and daemon failures


class _NotLocal(LocalConnection):
    is_local = False


def test_the_sdk_serves_this_machine_and_the_cli_remote_hosts_and_become(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(SdkDocker, "connect", classmethod(lambda cls, env, host="": "sdk"))
    assert docker_host(_ctx()) == "sdk"
    same_user = TaskContext(LocalConnection(), Become(current_user()), Scope([]), ())
    assert docker_host(same_user) == "sdk"
    other_user = TaskContext(LocalConnection(), Become("nobody-else"), Scope([]), ())
    assert isinstance(docker_host(other_user), CliDocker)
    assert isinstance(docker_host(TaskContext(_NotLocal(), None, Scope([]), ())), CliDocker)


def test_sdk_without_a_daemon_names_the_socket_and_the_fixes(tmp_path: Path) -> None:
    where = f"unix://{tmp_path}/docker.sock"
    with pytest.raises(ModuleFailure) as info:
        SdkDocker.connect({"DOCKER_HOST": where})
    message = str(info.value)
    assert f"cannot reach the Docker daemon on localhost at {where}: no such socket" in message
    assert "docker` group" in message or "usermod -aG docker" in message
    assert "become: true" in message


@pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed")
def test_cli_without_a_daemon_names_the_socket_and_the_fixes(tmp_path: Path) -> None:
    where = f"unix://{tmp_path}/docker.sock"
    ctx = TaskContext(_NotLocal("spark-1"), None, Scope([]), (), environment={"DOCKER_HOST": where})
    with pytest.raises(ModuleFailure) as info:
        DockerImageModule().check({"name": "nvcr.io/nvidia/pytorch:25.11-py3"}, ctx)
    message = str(info.value)
    assert f"cannot reach the Docker daemon on spark-1 at {where}" in message
    assert "Is the docker daemon running?" in message
    assert "usermod -aG docker" in message and "become: true" in message


def test_cli_that_is_not_installed_says_so(tmp_path: Path) -> None:
    ctx = TaskContext(_NotLocal("spark-1"), None, Scope([]), (), environment={"PATH": str(tmp_path)})
    with pytest.raises(ModuleFailure, match="docker CLI is not installed on spark-1"):
        CliDocker(ctx).inspect("busybox:1")


# ---------------------------------------------------------------- the registry's token flow


class _TokenRegistry(BaseHTTPRequestHandler):
    """nvcr.io-style registry: a Bearer challenge, a token service taking Basic auth, HEAD manifests."""

    tags = {"nvidia/pytorch": {"25.11-py3": D1}}
    users = {"$oauthtoken": "nvapi-good"}
    token = "tok-" + "z" * 20
    seen_accept: list[str] = []

    def handle(self) -> None:
        if self.request.recv(1, socket.MSG_PEEK) == b"\x16":
            return  # a TLS handshake on this plain-HTTP port: hang up, as the client then tries HTTP
        super().handle()

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        if not self.path.startswith("/token?"):
            self._reply(404)
            return
        scheme, _, value = self.headers.get("Authorization", "").partition(" ")
        user, _, password = (
            base64.b64decode(value).decode().partition(":") if scheme == "Basic" else ("", "", "")
        )
        if scheme and self.users.get(user) != password:
            self._reply(401)
            return
        body = json.dumps({"token": self.token}).encode()
        self._reply(200, {"Content-Type": "application/json"}, body)

    def do_HEAD(self) -> None:
        repo, _, tag = self.path.removeprefix("/v2/").partition("/manifests/")
        if self.headers.get("Authorization") != f"Bearer {self.token}":
            realm = f"http://{self.headers['Host']}/token"
            challenge = f'Bearer realm="{realm}",service="test",scope="repository:{repo}:pull"'
            self._reply(401, {"WWW-Authenticate": challenge})
            return
        self.seen_accept.append(self.headers.get("Accept", ""))
        digest = self.tags.get(repo, {}).get(tag)
        self._reply(200 if digest else 404, {"Docker-Content-Digest": digest} if digest else {})

    def _reply(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


@pytest.fixture(scope="module")
def token_registry() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TokenRegistry)
    server.daemon_threads = True
    server.block_on_close = False
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_registry_digest_follows_the_bearer_token_flow_with_the_pull_accept_types(
    token_registry: str,
) -> None:
    tokens: list[str] = []
    auth = Credentials("$oauthtoken", "nvapi-good", "$NGC_API_KEY")
    ref = parse_image(f"{token_registry}/nvidia/pytorch:25.11-py3")
    assert registry_digest(ref, auth, tokens.append, timeout=5) == D1
    assert tokens == [_TokenRegistry.token]
    assert _TokenRegistry.seen_accept[-1] == MANIFEST_TYPES
    assert registry_digest(ref, None, tokens.append, timeout=5) == D1  # anonymous tokens work too


@pytest.mark.parametrize(
    ("image", "auth", "reason"),
    [
        ("nvidia/pytorch:26.01-py3", None, "manifest unknown"),
        ("nvidia/pytorch:25.11-py3", Credentials("$oauthtoken", "nvapi-bad", "$NGC_API_KEY"), "unauthorized"),
    ],
)
def test_registry_digest_failures(
    token_registry: str, image: str, auth: Credentials | None, reason: str
) -> None:
    with pytest.raises(RegistryError, match=reason):
        registry_digest(parse_image(f"{token_registry}/{image}"), auth, lambda token: None, timeout=5)


def test_registry_digest_of_an_unreachable_registry_is_a_network_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connection refused
        ref = ImageRef(f"127.0.0.1:{port}", "nvidia/pytorch", "25.11-py3")
        with pytest.raises(RegistryError) as info:
            registry_digest(ref, None, lambda token: None, timeout=5)
    failure = image_failure("check the registry for", ref, info.value.reason, None)
    assert "connection refused" in str(failure)
    assert "network error" in str(failure)

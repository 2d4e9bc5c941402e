"""A small client for the Ollama HTTP API (see spark-facts.md, "Ollama"): what the ollama module needs.

- `api_url` turns `OLLAMA_HOST`-style values into a base URL the way Ollama's own client does.
- `ModelName` parses and normalises model names as Ollama does (default tag `latest`, default
  `registry.ollama.ai/library/` prefix, case-insensitive comparison).
- `OllamaClient` talks to one server: every request has a timeout; connection problems and API errors
  become `ApiError`s whose message names the URL. Pulls read the NDJSON stream and report progress,
  including errors that arrive as `{"error": ...}` inside a 200 response.
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from sparkprov.modules._progress import LayerBytes

DEFAULT_PORT = 11434
DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_PORT}"
CONNECT_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 30.0
# A pull stream that sends nothing for this long is considered stalled (Ollama reports progress many
# times a second while downloading; verifying a 40 GB blob takes well under this).
STALL_TIMEOUT_S = 300.0
MAX_BACKOFF_S = 2.0

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_NAMESPACE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
_HOST = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(:[0-9]+)?$")
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


class ApiError(Exception):
    """The Ollama API could not be reached, or answered with an error; the message names the URL."""


class Unreachable(ApiError):
    """Nothing answered at the URL (refused, timed out, no route, unknown host)."""


class PullFailed(ApiError):
    """A pull was refused or broke off; `error` is Ollama's own message."""

    def __init__(self, url: str, model: str, error: str) -> None:
        super().__init__(f"pulling {model} from the Ollama API at {url} failed: {error}")
        self.model = model
        self.error = error


class InvalidName(ValueError):
    """A model name Ollama would reject."""


def api_url(value: str | None) -> str:
    """The base URL for an `OLLAMA_HOST`-style value, as Ollama's client reads it.

    '' -> http://127.0.0.1:11434; 'host' and 'host:port' get http:// (and port 11434); an explicit
    http:// or https:// without a port gets 80 or 443; the unspecified addresses a server binds
    (0.0.0.0, ::) are reached on 127.0.0.1.
    """
    text = (value or "").strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest, port = "http", text, DEFAULT_PORT
    elif scheme in ("http", "https"):
        port = 80 if scheme == "http" else 443
    else:
        raise ValueError(f"'{value}' is not an http:// or https:// URL")
    hostport, _, path = rest.partition("/")
    split = urllib.parse.urlsplit(f"//{hostport}")
    try:
        port = split.port or port
    except ValueError:
        raise ValueError(f"'{value}' has an invalid port") from None
    host = split.hostname or ""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    path = path.strip("/")
    return f"{scheme}://{host}:{port}" + (f"/{path}" if path else "")


def is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ModelName:
    """A model reference: [host/][namespace/]model[:tag], with Ollama's defaults filled in."""

    host: str
    namespace: str
    model: str
    tag: str

    @classmethod
    def parse(cls, text: str) -> ModelName:
        raw = text.strip()
        rest = raw.removeprefix("http://").removeprefix("https://")
        if not rest:
            raise InvalidName("a model name cannot be empty")
        if "@" in rest:
            raise InvalidName(f"'{raw}': names with a digest (@sha256:...) are not supported; use a tag")
        tag = DEFAULT_TAG
        if rest.rfind(":") > rest.rfind("/"):
            rest, tag = rest.rsplit(":", 1)
        segments = rest.split("/")
        if len(segments) > 3:
            raise InvalidName(f"'{raw}' has too many '/' parts: expected [host/][namespace/]model[:tag]")
        defaults = [DEFAULT_HOST, DEFAULT_NAMESPACE]
        host, namespace, model = [*defaults[: 3 - len(segments)], *segments]
        name = cls(host, namespace, model, tag)
        name._validate(raw)
        return name

    def _validate(self, raw: str) -> None:
        checks = (
            ("host", self.host, _HOST),
            ("namespace", self.namespace, _NAMESPACE),
            ("model", self.model, _PART),
            ("tag", self.tag, _PART),
        )
        for part, value, pattern in checks:
            if not pattern.match(value) or ".." in value:
                raise InvalidName(
                    f"'{raw}' has an invalid {part} '{value}': use letters, digits, '_', '-' and '.'"
                )

    @property
    def key(self) -> str:
        """What two names are compared by: all parts, case-insensitive."""
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}".lower()

    def __str__(self) -> str:
        """The shortest form, as `/api/tags` shows names: 'llama3.2:latest', 'user/m:tag', 'h/ns/m:tag'."""
        if self.host.lower() != DEFAULT_HOST:
            return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"
        if self.namespace.lower() != DEFAULT_NAMESPACE:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.model}:{self.tag}"


def _reason(exc: requests.RequestException) -> str:
    """A short reason for a transport failure ('Connection refused', 'timed out')."""
    if isinstance(exc, requests.Timeout):
        return "no answer in time (timed out)"
    found = _ERRNO.search(str(exc))
    if found:
        return found.group(1).strip()
    return type(exc).__name__


def _error_text(response: requests.Response) -> str:
    """Ollama's `{"error": ...}` body, or the start of whatever else the server sent."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])
    return response.text.strip()[:200] or response.reason or "no details"


def _event(line: bytes, url: str, model: str) -> dict[str, Any]:
    try:
        event = json.loads(line)
    except ValueError:
        raise PullFailed(url, model, f"unreadable progress line {line[:120]!r}") from None
    if not isinstance(event, dict):
        raise PullFailed(url, model, f"unexpected progress line {line[:120]!r}")
    return event


class _PullProgress(LayerBytes):
    """Bytes done and expected over the layers seen so far."""

    def update(self, event: dict[str, Any]) -> bool:
        digest, total = event.get("digest"), event.get("total")
        if not digest or not total:
            return False
        self.layers[str(digest)] = (int(event.get("completed") or 0), int(total))
        return True


class OllamaClient:
    """One Ollama server at `url`; use as a context manager to close its connections."""

    def __init__(self, url: str, *, session: requests.Session | None = None) -> None:
        self.url = url
        self._session = session or requests.Session()

    def __enter__(self) -> OllamaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._session.close()

    def _send(
        self, method: str, path: str, *, timeout: float | tuple[float, float], **kwargs: Any
    ) -> requests.Response:
        try:
            return self._session.request(method, self.url + path, timeout=timeout, **kwargs)
        except requests.RequestException as exc:
            raise Unreachable(f"cannot reach the Ollama API at {self.url}: {_reason(exc)}") from None

    def _checked(self, response: requests.Response, what: str) -> requests.Response:
        if response.status_code >= 400:
            raise ApiError(
                f"{what} at {self.url} failed: HTTP {response.status_code}: {_error_text(response)}"
            )
        return response

    def version(self, timeout: float = REQUEST_TIMEOUT_S) -> str:
        response = self._send("GET", "/api/version", timeout=(min(CONNECT_TIMEOUT_S, timeout), timeout))
        try:
            return str(self._checked(response, "GET /api/version").json()["version"])
        except (ValueError, KeyError, TypeError):
            raise ApiError(f"GET /api/version at {self.url} did not answer as Ollama does") from None

    def tags(self) -> list[ModelName]:
        """The models in the server's store, in one `GET /api/tags`."""
        response = self._send("GET", "/api/tags", timeout=(CONNECT_TIMEOUT_S, REQUEST_TIMEOUT_S))
        try:
            models = self._checked(response, "GET /api/tags").json()["models"]
        except (ValueError, KeyError, TypeError):
            raise ApiError(f"GET /api/tags at {self.url} did not answer a model list") from None
        names = []
        for entry in models or []:
            try:
                names.append(ModelName.parse(entry.get("name") or entry.get("model") or ""))
            except InvalidName:
                continue  # a name this client cannot express is not one the playbook can declare
        return names

    def delete(self, name: str) -> bool:
        """Remove a model; False when the server did not have it (404)."""
        response = self._send(
            "DELETE", "/api/delete", json={"model": name}, timeout=(CONNECT_TIMEOUT_S, REQUEST_TIMEOUT_S)
        )
        if response.status_code == 404:
            return False
        self._checked(response, f"deleting {name}")
        return True

    def pull(
        self,
        name: str,
        on_progress: Callable[[int, int], None],
        *,
        timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> int:
        """Pull `name`, calling `on_progress(done, total)` on each layer update; returns the total bytes.

        Success is the stream's final `{"status": "success"}`; an `{"error": ...}` line, a stream that
        ends without success, a broken connection or `timeout` seconds passing raise `PullFailed`.
        """
        deadline = None if timeout is None else clock() + timeout
        response = self._send(
            "POST",
            "/api/pull",
            json={"model": name, "stream": True},
            timeout=(CONNECT_TIMEOUT_S, STALL_TIMEOUT_S),
            stream=True,
        )
        with response:
            if response.status_code >= 400:
                raise PullFailed(self.url, name, f"HTTP {response.status_code}: {_error_text(response)}")
            return self._read_pull(response, name, on_progress, deadline, clock)

    def _read_pull(
        self,
        response: requests.Response,
        name: str,
        on_progress: Callable[[int, int], None],
        deadline: float | None,
        clock: Callable[[], float],
    ) -> int:
        progress = _PullProgress({})
        status = "(nothing)"
        try:
            for line in response.iter_lines():
                if not line.strip():
                    continue
                event = _event(line, self.url, name)
                if "error" in event:
                    raise PullFailed(self.url, name, str(event["error"]))
                status = str(event.get("status", status))
                if status == "success":
                    return progress.total
                if progress.update(event):
                    on_progress(progress.done, progress.total)
                if deadline is not None and clock() > deadline:
                    raise PullFailed(self.url, name, f"not finished after the pull timeout (at '{status}')")
        except requests.RequestException as exc:
            raise PullFailed(self.url, name, f"the connection broke at '{status}': {_reason(exc)}") from None
        raise PullFailed(self.url, name, f"the progress stream ended without 'success' (last: '{status}')")

    def wait_ready(
        self,
        timeout: float,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> str:
        """Poll `GET /api/version` with backoff until it answers; returns the version.

        Raises `Unreachable` (with the last reason) when nothing answered within `timeout` seconds.
        """
        deadline = clock() + timeout
        delay = 0.1
        while True:
            remaining = deadline - clock()
            try:
                return self.version(timeout=max(0.2, min(REQUEST_TIMEOUT_S, remaining)))
            except Unreachable as exc:
                last = str(exc).rsplit(": ", 1)[-1]
            remaining = deadline - clock()
            if remaining <= 0:
                raise Unreachable(
                    f"the Ollama API at {self.url} did not answer within {timeout:g} s ({last})"
                )
            sleep(min(delay, remaining))
            delay = min(delay * 2, MAX_BACKOFF_S)

#!/usr/bin/env python3
"""An Ollama API server for tests, on machines where the real Ollama cannot run.

It speaks the wire format of spark-facts.md ("Ollama") and of the real server's routes: JSON bodies
without spaces, `application/json; charset=utf-8` for single answers, chunked `application/x-ndjson`
streams, Go's time format, `{"error": ...}` bodies with Ollama's own status codes and messages.

- `GET /api/version`, `GET /api/tags` (newest first), `GET /api/ps`, `POST /api/show`
- `DELETE /api/delete`: 200 with an empty body; 404 `{"error":"model 'x' not found"}`
- `POST /api/pull` (streams unless `"stream": false`): `pulling manifest`, `pulling <digest[:12]>` with
  `digest`/`total`/`completed` per layer (resumed where a broken pull stopped), `verifying sha256
  digest`, `writing manifest`, `success`. A name the catalogue lacks gets
  `{"error":"pull model manifest: file does not exist"}` inside the 200 stream; injected failures send
  an error mid-stream, or drop the connection, like a network failure does.
- `POST /api/generate` (stream or not): the final object has `total_duration`, `load_duration`,
  `prompt_eval_count`, `prompt_eval_duration`, `eval_count`, `eval_duration` in ns, computed from the
  catalogue's speeds; the first call to a model includes its load time; a prompt that repeats the cached
  prefix evaluates only the new tokens (at least one); an empty prompt loads the model, and with
  `keep_alive: 0` unloads it. Tokens are words and punctuation marks.

Names are compared the way Ollama compares them (implemented here on its own, so that a bug in the
client's normalisation is not copied into the server that checks it).

Controls for tests: constructor arguments (catalogue, chunks, delays) and methods (`install`,
`fail_pull`, `requests`, `count`), also over HTTP for a server in another process:
`GET /__test__/state`, `POST /__test__/reset`, `POST /__test__/install {"models": [...]}`,
`POST /__test__/fail {"model": ..., "error": ..., "after_fraction": ..., "times": ..., "mode": ...}`.
Those are not recorded as requests.

    python tests/fakes/ollama_server.py --port 11434 --state DIR   # installed models persist in DIR

Only the standard library is used.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

VERSION = "0.12.6"
NETWORK_ERROR = (
    "max retries exceeded: read tcp 127.0.0.1:53412->104.18.9.90:443: read: connection reset by peer"
)
DEFAULT_KEEP_ALIVE_S = 300.0
FOREVER_S = 292 * 365 * 24 * 3600.0  # Go's time.Duration(math.MaxInt64), as Ollama reports "forever"
LOADED_LOAD_NS = 8_000_000  # scheduling a model that is already loaded
DEFAULT_NUM_PREDICT = 128
DEFAULT_NUM_CTX = 4096
_WORDS = ("the", "unified", "memory", "of", "a", "spark", "holds", "model", "weights", "and", "cache", ".")
_TOKEN = re.compile(r"\w+|[^\w\s]")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_NAME_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


# ---------------------------------------------------------------- names, as Ollama's types/model does


def parse_name(text: str) -> tuple[str, str, str, str] | None:
    """(host, namespace, model, tag) with registry.ollama.ai/library/?:latest filled in; None if invalid."""
    rest = text.strip()
    if not rest or len(rest) > 350:
        return None
    tag = "latest"
    if rest.rfind(":") > rest.rfind("/"):
        rest, tag = rest.rsplit(":", 1)
    parts = rest.split("/")
    if len(parts) > 3:
        return None
    host, namespace, model = (["registry.ollama.ai", "library"][: 3 - len(parts)] + parts)[-3:]
    for part in (namespace, model, tag):
        if not _NAME_PART.match(part) or ".." in part:
            return None
    if "." in namespace or not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(:\d+)?$", host):
        return None
    return host, namespace, model, tag


def _catalogue_key(name: str) -> str:
    parts = parse_name(name)
    if parts is None:
        raise ValueError(f"invalid catalogue model name {name!r}")
    return name_key(parts)


def name_key(parts: tuple[str, str, str, str]) -> str:
    host, namespace, model, tag = parts
    return f"{host}/{namespace}/{model}:{tag}".lower()


def display_shortest(parts: tuple[str, str, str, str]) -> str:
    host, namespace, model, tag = parts
    if host.lower() != "registry.ollama.ai":
        return f"{host}/{namespace}/{model}:{tag}"
    if namespace.lower() != "library":
        return f"{namespace}/{model}:{tag}"
    return f"{model}:{tag}"


def go_time(ns: int) -> str:
    """A UTC time as Go's encoding/json writes it (RFC 3339 with up to 9 fraction digits)."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    digits = f"{fraction:09d}".rstrip("0")
    return f"{text}.{digits}Z" if digits else f"{text}Z"


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text)


def keep_alive_seconds(value: Any) -> float:
    """api.Duration: a number of seconds or a Go duration string; negative means forever."""
    if value is None:
        return DEFAULT_KEEP_ALIVE_S
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip()
        sign = -1.0 if text.startswith("-") else 1.0
        body = text.lstrip("+-")
        pieces = _DURATION.findall(body)
        if body == "0":
            pieces = []
        elif not pieces or "".join(n + u for n, u in pieces) != body:
            raise BadRequest(f'time: missing unit in duration "{text}"')
        seconds = sign * sum(float(n) * _UNITS[u] for n, u in pieces)
    return FOREVER_S if seconds < 0 else seconds


# ---------------------------------------------------------------- what the "registry" offers


@dataclass(frozen=True)
class CatalogueModel:
    """A pullable model. Tags that share `weights` share their blobs (llama3.2:latest is llama3.2:3b)."""

    name: str
    size: int  # bytes of the weights layer
    family: str = "llama"
    parameter_size: str = "3.2B"
    quantization_level: str = "Q4_K_M"
    context_length: int = 131072
    load_s: float = 1.5
    prefill_tps: float = 2500.0
    decode_tps: float = 60.0
    weights: str = ""

    def layers(self) -> list[tuple[str, int]]:
        """(digest, size) of each blob a pull downloads: weights, template, license, params, config."""
        identity = self.weights or self.name.lower()
        sizes = (("model", self.size), ("template", 1429), ("license", 7711), ("params", 96), ("config", 561))
        return [(f"sha256:{hashlib.sha256(f'{identity}/{k}'.encode()).hexdigest()}", n) for k, n in sizes]

    @property
    def total_size(self) -> int:
        return sum(size for _, size in self.layers())

    @property
    def digest(self) -> str:
        """The manifest digest `/api/tags` shows (hex, no algorithm prefix)."""
        return hashlib.sha256("".join(d for d, _ in self.layers()).encode()).hexdigest()

    def details(self) -> dict[str, Any]:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": self.family,
            "families": [self.family],
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization_level,
        }


DEFAULT_CATALOGUE: tuple[CatalogueModel, ...] = (
    CatalogueModel("llama3.2:3b", 2_019_377_376, weights="llama3.2-3b", decode_tps=95.0),
    CatalogueModel("llama3.2:latest", 2_019_377_376, weights="llama3.2-3b", decode_tps=95.0),
    CatalogueModel("llama3.2:1b", 1_321_082_688, parameter_size="1.2B", load_s=0.8, decode_tps=160.0),
    CatalogueModel("llama3.1:8b", 4_920_738_944, parameter_size="8.0B", load_s=2.5, decode_tps=42.0),
    CatalogueModel("qwen3:8b", 5_225_376_047, family="qwen3", parameter_size="8.2B", decode_tps=40.0),
    CatalogueModel("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", 807_694_464, parameter_size="1.24B"),
)


@dataclass
class PullFailure:
    """A failure injected into the next `times` pulls of a model (0: every pull)."""

    error: str = NETWORK_ERROR
    after_fraction: float = 0.5  # of the weights layer downloaded before it breaks
    times: int = 1
    # error: send {"error": ...}; disconnect: drop the connection mid-body; truncate: end the body
    # cleanly without a last status (what a proxy that gives up does)
    mode: str = "error"


@dataclass
class Installed:
    name: str  # as /api/tags shows it
    model: CatalogueModel
    modified_ns: int


@dataclass
class Loaded:
    model: CatalogueModel
    name: str
    expires_s: float
    num_ctx: int
    cache: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: Any = None


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Disconnect:
    """In a stream: close the connection here, without ending the chunked body."""


# A handler answers with one of these.
@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON-able; None: empty body
    text: str | None = None  # plain text instead of JSON


@dataclass
class Stream:
    events: Iterator[Any]  # JSON-able objects, or Disconnect()


# ---------------------------------------------------------------- the server state


class FakeOllama:
    """The server's state and behaviour; `start()` serves it over HTTP on 127.0.0.1."""

    def __init__(
        self,
        catalogue: tuple[CatalogueModel, ...] = DEFAULT_CATALOGUE,
        *,
        state_dir: Path | None = None,
        chunks: int = 4,
        chunk_delay_s: float = 0.0,
        time_scale: float = 0.0,
        version: str = VERSION,
    ) -> None:
        self.catalogue = {_catalogue_key(m.name): m for m in catalogue}
        self.state_file = state_dir / "state.json" if state_dir else None
        self.chunks = max(1, chunks)
        self.chunk_delay_s = chunk_delay_s
        self.time_scale = time_scale  # 0: report durations without sleeping; 1: take as long as reported
        self.version = version
        self._lock = threading.RLock()
        self._installed: dict[str, Installed] = {}
        self._blobs: set[str] = set()
        self._partial: dict[str, int] = {}
        self._loaded: dict[str, Loaded] = {}
        self._failures: dict[str, PullFailure] = {}
        self._requests: list[Request] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._load_state()

    # ------------------------------------------------------------ lifecycle

    def start(self, host: str = "127.0.0.1", port: int = 0) -> FakeOllama:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = ThreadingHTTPServer((host, port), handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="fake-ollama", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    @contextmanager
    def running(self, port: int = 0) -> Iterator[FakeOllama]:
        self.start(port=port)
        try:
            yield self
        finally:
            self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "the server is not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    # ------------------------------------------------------------ controls for tests

    def install(self, *names: str) -> None:
        """Put models in the store without a pull (and without recording requests)."""
        with self._lock:
            for name in names:
                self._install(name, self._catalogue_entry(name))
            self._save_state()

    def fail_pull(self, name: str, **failure: Any) -> None:
        with self._lock:
            self._failures[self._key(name)] = PullFailure(**failure)

    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def count(self, path: str | None = None, method: str | None = None) -> int:
        return sum(1 for r in self.requests() if (path in (None, r.path)) and (method in (None, r.method)))

    def reset_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def installed(self) -> list[str]:
        with self._lock:
            return sorted(i.name for i in self._installed.values())

    def loaded(self) -> list[str]:
        with self._lock:
            self._expire()
            return sorted(loaded.name for loaded in self._loaded.values())

    def snapshot(self) -> dict[str, Any]:
        return {
            "installed": self.installed(),
            "loaded": self.loaded(),
            "requests": [asdict(r) for r in self.requests()],
        }

    # ------------------------------------------------------------ state

    def _key(self, name: str) -> str:
        parts = parse_name(name)
        if parts is None:
            raise BadRequest("invalid model name")
        return name_key(parts)

    def _catalogue_entry(self, name: str) -> CatalogueModel:
        entry = self.catalogue.get(self._key(name))
        if entry is None:
            raise KeyError(f"{name} is not in the fake's catalogue")
        return entry

    def _install(self, name: str, model: CatalogueModel) -> None:
        parts = parse_name(name)
        assert parts is not None
        self._installed[name_key(parts)] = Installed(display_shortest(parts), model, time.time_ns())
        for digest, _ in model.layers():
            self._blobs.add(digest)
            self._partial.pop(digest, None)

    def _load_state(self) -> None:
        if self.state_file is None or not self.state_file.exists():
            return
        saved = json.loads(self.state_file.read_text())
        for key, entry in saved.get("installed", {}).items():
            model = self.catalogue.get(entry["catalogue"])
            if model is not None:
                self._installed[key] = Installed(entry["name"], model, entry["modified_ns"])
        self._blobs = set(saved.get("blobs", []))
        self._partial = dict(saved.get("partial", {}))

    def _save_state(self) -> None:
        if self.state_file is None:
            return
        catalogue_keys = {id(m): k for k, m in self.catalogue.items()}
        saved = {
            "installed": {
                key: {"name": i.name, "catalogue": catalogue_keys[id(i.model)], "modified_ns": i.modified_ns}
                for key, i in self._installed.items()
            },
            "blobs": sorted(self._blobs),
            "partial": self._partial,
        }
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(saved, indent=1))

    def _expire(self) -> None:
        now = time.time()
        for key in [k for k, loaded in self._loaded.items() if loaded.expires_s <= now]:
            del self._loaded[key]

    def record(self, method: str, path: str, body: Any) -> None:
        with self._lock:
            self._requests.append(Request(method, path, body))

    def _sleep(self, seconds: float) -> None:
        if self.time_scale > 0 and seconds > 0:
            time.sleep(seconds * self.time_scale)

    # ------------------------------------------------------------ the API

    def root(self, body: Any) -> Reply:
        return Reply(text="Ollama is running")

    def api_version(self, body: Any) -> Reply:
        return Reply(body={"version": self.version})

    def api_tags(self, body: Any) -> Reply:
        with self._lock:
            installed = sorted(self._installed.values(), key=lambda i: -i.modified_ns)
            models = [
                {
                    "name": i.name,
                    "model": i.name,
                    "modified_at": go_time(i.modified_ns),
                    "size": i.model.total_size,
                    "digest": i.model.digest,
                    "details": i.model.details(),
                }
                for i in installed
            ]
        return Reply(body={"models": models})

    def api_ps(self, body: Any) -> Reply:
        with self._lock:
            self._expire()
            models = [
                {
                    "name": loaded.name,
                    "model": loaded.name,
                    "size": loaded.model.total_size,
                    "digest": loaded.model.digest,
                    "details": loaded.model.details(),
                    "expires_at": go_time(int(min(loaded.expires_s, 1e10) * 1e9)),
                    "size_vram": loaded.model.total_size,
                    "context_length": loaded.num_ctx,
                }
                for loaded in self._loaded.values()
            ]
        return Reply(body={"models": models})

    def _requested(self, body: Any) -> str:
        if not isinstance(body, dict):
            raise BadRequest("missing request body")
        return str(body.get("model") or body.get("name") or "")

    def _installed_model(self, name: str) -> Installed:
        with self._lock:
            found = self._installed.get(self._key(name)) if parse_name(name) else None
        if found is None:
            raise BadRequest(f"model '{name}' not found", 404)
        return found

    def api_show(self, body: Any) -> Reply:
        name = self._requested(body)
        if not name:
            raise BadRequest("model is required")
        installed = self._installed_model(name)
        model = installed.model
        info = {
            "general.architecture": model.family,
            "general.file_type": 15,
            "general.parameter_count": int(float(model.parameter_size.rstrip("BM")) * 1e9),
            f"{model.family}.context_length": model.context_length,
            f"{model.family}.block_count": 28,
        }
        return Reply(
            body={
                "license": "LLAMA 3.2 COMMUNITY LICENSE AGREEMENT",
                "modelfile": f'# Modelfile generated by "ollama show"\nFROM {installed.name}\n',
                "parameters": 'stop                           "<|eot_id|>"',
                "template": "{{ .Prompt }}",
                "details": model.details(),
                "model_info": info,
                "capabilities": ["completion", "tools"],
                "modified_at": go_time(installed.modified_ns),
            }
        )

    def api_delete(self, body: Any) -> Reply:
        name = self._requested(body)
        if parse_name(name) is None:
            raise BadRequest(f'name "{name}" is invalid')
        with self._lock:
            if self._installed.pop(self._key(name), None) is None:
                raise BadRequest(f"model '{name}' not found", 404)
            self._loaded.pop(self._key(name), None)
            self._blobs = {d for i in self._installed.values() for d, _ in i.model.layers()}
            self._save_state()
        return Reply()

    def api_pull(self, body: Any) -> Reply | Stream:
        name = self._requested(body)
        if parse_name(name) is None:
            raise BadRequest("invalid model name")
        events = self._pull_events(name)
        if body.get("stream", True):
            return Stream(events)
        return self._last_of(events)

    @staticmethod
    def _last_of(events: Iterator[Any]) -> Reply:
        """Non-streaming: the last progress object, or the error with status 500 (waitForStream)."""
        last: Any = {}
        for event in events:
            if isinstance(event, Disconnect) or "error" in event:
                error = "unexpected EOF" if isinstance(event, Disconnect) else event["error"]
                return Reply(500, {"error": error})
            last = event
        return Reply(body=last)

    def _pull_events(self, name: str) -> Iterator[Any]:
        yield {"status": "pulling manifest"}
        key = self._key(name)
        model = self.catalogue.get(key)
        if model is None:
            yield {"error": "pull model manifest: file does not exist"}
            return
        failure = self._take_failure(key)
        for index, (digest, size) in enumerate(model.layers()):
            breaks_at = int(size * failure.after_fraction) if failure and index == 0 else None
            for event in self._layer_events(digest, size, breaks_at):
                yield event
                self._pause()
            if breaks_at is not None and failure is not None:
                if failure.mode != "truncate":
                    yield Disconnect() if failure.mode == "disconnect" else {"error": failure.error}
                return
        yield {"status": "verifying sha256 digest"}
        yield {"status": "writing manifest"}
        with self._lock:
            self._install(name, model)
            self._save_state()
        yield {"status": "success"}

    def _take_failure(self, key: str) -> PullFailure | None:
        with self._lock:
            failure = self._failures.get(key)
            if failure is not None and failure.times > 0:
                failure.times -= 1
                if failure.times == 0:
                    del self._failures[key]
            return failure

    def _layer_events(self, digest: str, size: int, breaks_at: int | None) -> Iterator[dict[str, Any]]:
        status = f"pulling {digest[7:19]}"
        with self._lock:
            done = size if digest in self._blobs else self._partial.get(digest, 0)
        event: dict[str, Any] = {"status": status, "digest": digest, "total": size}
        if done:
            event["completed"] = done
        yield event
        stop = size if breaks_at is None else max(done, breaks_at)
        step = max(1, -(-size // self.chunks))
        while done < stop:
            done = min(stop, done + step)
            with self._lock:
                self._partial[digest] = done
            yield {"status": status, "digest": digest, "total": size, "completed": done}
        if done >= size:
            with self._lock:
                self._blobs.add(digest)
                self._partial.pop(digest, None)

    def _pause(self) -> None:
        if self.chunk_delay_s:
            time.sleep(self.chunk_delay_s)

    def api_generate(self, body: Any) -> Reply | Stream:
        if not isinstance(body, dict):
            raise BadRequest("missing request body")
        name = str(body.get("model") or "")
        if not name:
            raise BadRequest("model is required")
        installed = self._installed_model(name)
        keep_alive = keep_alive_seconds(body.get("keep_alive"))
        prompt = str(body.get("prompt") or "")
        if not prompt and keep_alive == 0:
            with self._lock:
                self._loaded.pop(self._key(name), None)
            return Reply(body=self._header(name, done=True, done_reason="unload"))
        options = body.get("options") or {}
        loaded, load_ns = self._schedule(
            installed, int(options.get("num_ctx") or DEFAULT_NUM_CTX), keep_alive
        )
        if not prompt:
            return Reply(body=self._header(name, done=True, done_reason="load"))
        events = self._generate_events(name, loaded, load_ns, prompt, options, keep_alive)
        if body.get("stream", True):
            return Stream(events)
        return Reply(body=self._collect(events))

    def _schedule(self, installed: Installed, num_ctx: int, keep_alive: float) -> tuple[Loaded, int]:
        """The loaded model (loading it, or reloading it for another num_ctx) and the load time in ns."""
        key = self._key(installed.name)
        with self._lock:
            self._expire()
            loaded = self._loaded.get(key)
            load_ns = LOADED_LOAD_NS
            if loaded is None or loaded.num_ctx != num_ctx:
                load_ns = int(installed.model.load_s * 1e9)
                loaded = Loaded(installed.model, installed.name, 0.0, num_ctx)
                self._loaded[key] = loaded
            loaded.expires_s = time.time() + keep_alive
        self._sleep(load_ns / 1e9)
        return loaded, load_ns

    def _header(self, name: str, **extra: Any) -> dict[str, Any]:
        return {"model": name, "created_at": go_time(time.time_ns()), "response": "", **extra}

    def _generate_events(
        self, name: str, loaded: Loaded, load_ns: int, prompt: str, options: dict[str, Any], keep_alive: float
    ) -> Iterator[dict[str, Any]]:
        model = loaded.model
        tokens = tokenize(prompt)
        with self._lock:
            cached = _common_prefix(loaded.cache, tokens)
        prompt_eval_count = max(1, len(tokens) - cached)
        prompt_ns = int(prompt_eval_count / model.prefill_tps * 1e9)
        self._sleep(prompt_ns / 1e9)
        num_predict = int(options.get("num_predict") or DEFAULT_NUM_PREDICT)
        num_predict = DEFAULT_NUM_PREDICT if num_predict < 0 else num_predict
        generated = [_WORDS[(len(tokens) + i) % len(_WORDS)] for i in range(num_predict)]
        for word in generated:
            self._sleep(1 / model.decode_tps)
            yield {**self._header(name, response=word + " "), "done": False}
        eval_ns = int(num_predict / model.decode_tps * 1e9)
        with self._lock:
            loaded.cache = tokens + generated
            if keep_alive == 0:
                self._loaded.pop(self._key(name), None)
        yield {
            **self._header(name),
            "done": True,
            "done_reason": "length",
            "context": [int(hashlib.md5(t.encode()).hexdigest()[:4], 16) for t in loaded.cache],
            "total_duration": load_ns + prompt_ns + eval_ns + 1_000_000,
            "load_duration": load_ns,
            "prompt_eval_count": prompt_eval_count,
            "prompt_eval_duration": prompt_ns,
            "eval_count": num_predict,
            "eval_duration": eval_ns,
        }

    @staticmethod
    def _collect(events: Iterator[dict[str, Any]]) -> dict[str, Any]:
        text, last = "", {}
        for event in events:
            text += event.get("response", "")
            last = event
        return {**last, "response": text}


def _common_prefix(a: list[str], b: list[str]) -> int:
    count = 0
    for x, y in zip(a, b):
        if x != y:
            break
        count += 1
    return count


# ---------------------------------------------------------------- HTTP


_ROUTES: dict[str, dict[str, Callable[[FakeOllama, Any], Reply | Stream]]] = {
    "/": {"GET": FakeOllama.root, "HEAD": FakeOllama.root},
    "/api/version": {"GET": FakeOllama.api_version, "HEAD": FakeOllama.api_version},
    "/api/tags": {"GET": FakeOllama.api_tags, "HEAD": FakeOllama.api_tags},
    "/api/ps": {"GET": FakeOllama.api_ps},
    "/api/show": {"POST": FakeOllama.api_show},
    "/api/delete": {"DELETE": FakeOllama.api_delete},
    "/api/pull": {"POST": FakeOllama.api_pull},
    "/api/generate": {"POST": FakeOllama.api_generate},
}


def _test_control(fake: FakeOllama, method: str, path: str, body: Any) -> Reply:
    if (method, path) == ("GET", "/__test__/state"):
        return Reply(body=fake.snapshot())
    if (method, path) == ("POST", "/__test__/reset"):
        fake.reset_requests()
        return Reply(body={})
    if (method, path) == ("POST", "/__test__/install"):
        fake.install(*body["models"])
        return Reply(body={"installed": fake.installed()})
    if (method, path) == ("POST", "/__test__/fail"):
        failure = dict(body)
        fake.fail_pull(failure.pop("model"), **failure)
        return Reply(body={})
    return Reply(404, text="404 page not found")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked streams, as Go's net/http
    fake: FakeOllama

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        self._dispatch()

    do_HEAD = do_POST = do_DELETE = do_PUT = do_GET

    def _body(self) -> Any:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raw = self._read_chunked()
        else:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not raw.strip():
            return None
        return json.loads(raw)

    def _read_chunked(self) -> bytes:
        data = b""
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.rfile.readline()
                return data
            data += self.rfile.read(size)
            self.rfile.readline()

    def _dispatch(self) -> None:
        path = self.path.split("?", 1)[0]
        try:
            body = self._body()
        except ValueError as exc:
            self._reply(Reply(400, {"error": f"invalid character in request body: {exc}"}))
            return
        if path.startswith("/__test__/"):
            self._reply(_test_control(self.fake, self.command, path, body))
            return
        self.fake.record(self.command, path, body)
        methods = _ROUTES.get(path)
        if methods is None:
            self._reply(Reply(404, text="404 page not found"))
        elif self.command not in methods:
            self._reply(Reply(405, text="405 method not allowed"))
        else:
            try:
                self._reply(methods[self.command](self.fake, body))
            except BadRequest as exc:
                self._reply(Reply(exc.status, {"error": str(exc)}))

    def _reply(self, answer: Reply | Stream) -> None:
        if isinstance(answer, Stream):
            self._stream(answer.events)
            return
        if answer.text is not None:
            data, kind = answer.text.encode(), "text/plain; charset=utf-8"
        elif answer.body is not None:
            data, kind = _json(answer.body), "application/json; charset=utf-8"
        else:
            data, kind = b"", ""
        self.send_response(answer.status)
        if kind:
            self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _stream(self, events: Iterator[Any]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for event in events:
                if isinstance(event, Disconnect):
                    self._drop()
                    return
                line = _json(event) + b"\n"
                self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _drop(self) -> None:
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="An Ollama API server for tests.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11434, help="0 picks a free port")
    parser.add_argument("--state", type=Path, help="directory where installed models persist")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between pull progress events")
    parser.add_argument("--time-scale", type=float, default=0.0, help="1: generate takes the time it reports")
    args = parser.parse_args(argv)
    fake = FakeOllama(state_dir=args.state, chunk_delay_s=args.chunk_delay, time_scale=args.time_scale)
    fake.start(args.host, args.port)
    print(f"fake Ollama listening on {fake.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

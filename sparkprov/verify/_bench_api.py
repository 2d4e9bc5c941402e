"""The servers `ollama_bench` measures, behind one small interface.

- `OllamaApi`: Ollama's `/api/*` (spark-facts.md, "Ollama"). `/api/generate` without streaming, `raw`
  (no chat template around the benchmark prompt); its final object has `prompt_eval_count`,
  `prompt_eval_duration`, `eval_count`, `eval_duration` and `load_duration` in ns (absent means 0).
  Models and their size/digest from `/api/tags`, experts from `/api/show`, memory from `/api/ps`; an empty
  prompt with `keep_alive: 0` unloads a model.
- `LlamaCppApi`: llama.cpp's `llama-server`: `POST /completion` with `cache_prompt: false` and
  `ignore_eos` (exactly n_predict tokens), whose `timings` carry `prompt_n`/`prompt_ms` and
  `predicted_n`/`predicted_ms`; the model and its size from `/v1/models`, the build and context from
  `/props`. It loads its one model at start and cannot unload it.

Requests go from the controller, like the `http` step; failures raise `BenchError` naming the URL.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests

from sparkprov.modules._ollama_api import InvalidName, ModelName

CONNECT_TIMEOUT_S = 5.0


class BenchError(Exception):
    """The server could not be reached, refused a request or answered something unexpected."""


@dataclass(frozen=True)
class ModelInfo:
    name: str  # as the server names it
    size_bytes: int | None  # weights on disk (the roofline's bytes per token)
    digest: str | None = None
    details: dict[str, Any] = field(default_factory=dict)  # family, parameter_size, quantization_level
    experts: int | None = None  # mixture of experts: experts per layer...
    experts_used: int | None = None  # ...and how many each token is routed through


@dataclass(frozen=True)
class Sample:
    """One generation as the server timed it."""

    prompt_tokens: int  # prompt tokens the server evaluated (not served from its cache)
    prompt_s: float
    gen_tokens: int
    gen_s: float
    load_s: float | None  # time spent loading the model first (None: the server does not say)
    wall_s: float  # request sent to answer received, on the controller

    @property
    def prefill_tps(self) -> float | None:
        return self.prompt_tokens / self.prompt_s if self.prompt_tokens and self.prompt_s > 0 else None

    @property
    def decode_tps(self) -> float | None:
        return self.gen_tokens / self.gen_s if self.gen_tokens and self.gen_s > 0 else None


@dataclass(frozen=True)
class Memory:
    size_bytes: int
    vram_bytes: int | None
    context_length: int | None
    source: str  # where the numbers come from


@dataclass(frozen=True)
class GenOptions:
    gen_tokens: int
    num_ctx: int
    temperature: float
    seed: int
    keep_alive: str | int | None = None


class ServerApi(Protocol):
    kind: str
    url: str

    def server(self) -> dict[str, Any]: ...

    def model(self, name: str) -> ModelInfo: ...

    def unload(self, name: str) -> bool: ...

    def generate(self, name: str, prompt: str, options: GenOptions) -> Sample: ...

    def memory(self, name: str, info: ModelInfo) -> Memory | None: ...


class _Json:
    """JSON requests to one server, each with a timeout; errors as BenchError naming the URL."""

    def __init__(self, url: str, what: str, timeout: float) -> None:
        self.url, self.what, self.timeout = url.rstrip("/"), what, timeout
        self.session = requests.Session()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = self.session.request(
                method, self.url + path, json=body, timeout=(CONNECT_TIMEOUT_S, self.timeout)
            )
        except requests.Timeout:
            raise BenchError(f"{method} {path} at {self.url}: no answer within {self.timeout:g} s") from None
        except requests.RequestException as exc:
            raise BenchError(f"cannot reach the {self.what} at {self.url}: {type(exc).__name__}") from None
        if response.status_code >= 400:
            raise BenchError(
                f"{method} {path} at {self.url}: HTTP {response.status_code}: {_error(response)}"
            )
        try:
            return response.json()
        except ValueError:
            raise BenchError(f"{method} {path} at {self.url} did not answer JSON") from None


def _error(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "error" in body:
        error = body["error"]
        return str(error.get("message", error) if isinstance(error, dict) else error)
    return response.text.strip()[:200] or response.reason or "no details"


def _ns(value: Any) -> float:
    return float(value or 0) / 1e9


class OllamaApi:
    kind = "ollama"

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self._http = _Json(url, "Ollama API", timeout)
        self._tags: list[dict[str, Any]] | None = None

    def server(self) -> dict[str, Any]:
        return {
            "api": self.kind,
            "url": self.url,
            "version": self._http.call("GET", "/api/version")["version"],
        }

    def _entry(self, name: str) -> dict[str, Any] | None:
        if self._tags is None:
            self._tags = list(self._http.call("GET", "/api/tags").get("models") or [])
        wanted = _key(name)
        return next((m for m in self._tags if _key(m.get("name") or m.get("model") or "") == wanted), None)

    def model(self, name: str) -> ModelInfo:
        entry = self._entry(name)
        if entry is None:
            raise BenchError(
                f"model '{name}' is not on the Ollama server at {self.url} (pull it first, e.g. with the "
                "ollama module)"
            )
        shown = self._http.call("POST", "/api/show", {"model": name})
        info = shown.get("model_info") or {}
        return ModelInfo(
            name=str(entry.get("name") or name),
            size_bytes=int(entry["size"]) if entry.get("size") else None,
            digest=entry.get("digest"),
            details=dict(entry.get("details") or {}),
            experts=_suffixed(info, ".expert_count"),
            experts_used=_suffixed(info, ".expert_used_count"),
        )

    def unload(self, name: str) -> bool:
        self._http.call("POST", "/api/generate", {"model": name, "keep_alive": 0})
        return True

    def generate(self, name: str, prompt: str, options: GenOptions) -> Sample:
        body: dict[str, Any] = {
            "model": name,
            "prompt": prompt,
            "raw": True,
            "stream": False,
            "options": {
                "num_ctx": options.num_ctx,
                "num_predict": options.gen_tokens,
                "temperature": options.temperature,
                "seed": options.seed,
            },
        }
        if options.keep_alive is not None:
            body["keep_alive"] = options.keep_alive
        started = time.monotonic()
        done = self._http.call("POST", "/api/generate", body)
        return Sample(
            prompt_tokens=int(done.get("prompt_eval_count") or 0),
            prompt_s=_ns(done.get("prompt_eval_duration")),
            gen_tokens=int(done.get("eval_count") or 0),
            gen_s=_ns(done.get("eval_duration")),
            load_s=_ns(done.get("load_duration")),
            wall_s=time.monotonic() - started,
        )

    def memory(self, name: str, info: ModelInfo) -> Memory | None:
        wanted = _key(name)
        for entry in self._http.call("GET", "/api/ps").get("models") or []:
            if _key(entry.get("name") or entry.get("model") or "") == wanted:
                return Memory(
                    size_bytes=int(entry.get("size") or 0),
                    vram_bytes=int(entry["size_vram"]) if entry.get("size_vram") is not None else None,
                    context_length=entry.get("context_length"),
                    source="/api/ps (weights + KV cache for num_ctx)",
                )
        return None


def _key(name: str) -> str:
    try:
        return ModelName.parse(name).key
    except InvalidName:
        return name.lower()


def _suffixed(info: dict[str, Any], suffix: str) -> int | None:
    value = next((v for k, v in info.items() if k.endswith(suffix)), None)
    return int(value) if isinstance(value, (int, float)) and value > 0 else None


class LlamaCppApi:
    kind = "llama.cpp"

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self._http = _Json(url, "llama-server", timeout)
        self._props: dict[str, Any] | None = None

    def _properties(self) -> dict[str, Any]:
        if self._props is None:
            self._props = dict(self._http.call("GET", "/props"))
        return self._props

    def server(self) -> dict[str, Any]:
        props = self._properties()
        settings = props.get("default_generation_settings") or {}
        return {
            "api": self.kind,
            "url": self.url,
            "version": props.get("build_info"),
            "n_ctx": settings.get("n_ctx") or props.get("n_ctx"),
            "model_path": props.get("model_path"),
        }

    def served(self) -> list[str]:
        return [str(m.get("id")) for m in self._http.call("GET", "/v1/models").get("data") or []]

    def model(self, name: str) -> ModelInfo:
        models = self._http.call("GET", "/v1/models").get("data") or []
        found = next((m for m in models if name in (m.get("id"), _basename(m.get("id")))), None)
        if found is None and len(models) == 1:
            found = models[0]  # one model per server: whatever it is called in the playbook
        if found is None:
            served = ", ".join(str(m.get("id")) for m in models) or "none"
            raise BenchError(
                f"model '{name}' is not served by the llama-server at {self.url} (serves {served})"
            )
        meta = found.get("meta") or {}
        details = {k: meta[k] for k in ("n_params", "n_ctx_train", "n_vocab") if k in meta}
        return ModelInfo(
            name=str(found.get("id") or name),
            size_bytes=int(meta["size"]) if meta.get("size") else None,
            details=details,
        )

    def unload(self, name: str) -> bool:
        return False  # llama-server keeps the model it was started with

    def generate(self, name: str, prompt: str, options: GenOptions) -> Sample:
        body = {
            "model": name,
            "prompt": prompt,
            "n_predict": options.gen_tokens,
            "temperature": options.temperature,
            "seed": options.seed,
            "cache_prompt": False,
            "ignore_eos": True,
            "stream": False,
        }
        started = time.monotonic()
        timings = self._http.call("POST", "/completion", body).get("timings") or {}
        return Sample(
            prompt_tokens=int(timings.get("prompt_n") or 0),
            prompt_s=float(timings.get("prompt_ms") or 0) / 1000.0,
            gen_tokens=int(timings.get("predicted_n") or 0),
            gen_s=float(timings.get("predicted_ms") or 0) / 1000.0,
            load_s=None,
            wall_s=time.monotonic() - started,
        )

    def memory(self, name: str, info: ModelInfo) -> Memory | None:
        if not info.size_bytes:
            return None
        return Memory(
            info.size_bytes, None, self.server().get("n_ctx"), "/v1/models meta.size (weights only)"
        )


def _basename(path: Any) -> str:
    return str(path or "").rsplit("/", 1)[-1]


def server_api(kind: str, url: str, timeout: float) -> ServerApi:
    return LlamaCppApi(url, timeout) if kind == "llama.cpp" else OllamaApi(url, timeout)

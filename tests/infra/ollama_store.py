"""Ollama model stores on disk, for tests of copying models between stores.

`write_model` lays a model out as Ollama does (`manifests/<host>/<namespace>/<model>/<tag>` naming the
config and layer blobs, `blobs/sha256-HEX`). `StoreOllama` is the test suite's fake Ollama server
(tests/fakes/ollama_server.py) answering `/api/tags` from such a directory, re-read on every request
as the real server does, so that a model copied into the store by hand (or by sparkprov) is listed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tests.fakes.ollama_server import (
    CatalogueModel,
    FakeOllama,
    Installed,
    display_shortest,
    name_key,
    parse_name,
)

MEDIA_TYPES = {
    "model": "application/vnd.ollama.image.model",
    "template": "application/vnd.ollama.image.template",
    "license": "application/vnd.ollama.image.license",
    "params": "application/vnd.ollama.image.params",
}


def manifest_file(models_dir: Path, name: str) -> Path:
    parts = parse_name(name)
    assert parts is not None, name
    host, namespace, model, tag = parts
    return models_dir / "manifests" / host / namespace / model / tag


def write_blob(models_dir: Path, data: bytes) -> dict[str, Any]:
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    path = models_dir / "blobs" / digest.replace(":", "-")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": digest, "size": len(data)}


def write_model(models_dir: Path, name: str, layers: dict[str, bytes], config: bytes) -> list[str]:
    """Store `name` with one blob per layer (keys: model, template, license, params) and a config
    blob; returns the blob file names (config first)."""
    config_entry = {
        "mediaType": "application/vnd.docker.container.image.v1+json",
        **write_blob(models_dir, config),
    }
    layer_entries = [
        {"mediaType": MEDIA_TYPES[kind], **write_blob(models_dir, data)} for kind, data in layers.items()
    ]
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": config_entry,
        "layers": layer_entries,
    }
    path = manifest_file(models_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest))
    return [str(e["digest"]).replace(":", "-") for e in (config_entry, *layer_entries)]


class StoreOllama(FakeOllama):
    """The fake Ollama server, listing the models of `models_dir` (nothing else is installed)."""

    def __init__(self, models_dir: Path, **options: Any) -> None:
        super().__init__((), **options)
        self.models_dir = models_dir

    def record(self, method: str, path: str, body: Any) -> None:
        if path == "/api/tags":
            self._read_store()
        super().record(method, path, body)

    def _read_store(self) -> None:
        installed: dict[str, Installed] = {}
        manifests = self.models_dir / "manifests"
        for path in manifests.glob("*/*/*/*") if manifests.is_dir() else ():
            host, namespace, model, tag = path.relative_to(manifests).parts
            parts = parse_name(f"{host}/{namespace}/{model}:{tag}")
            if parts is None or not path.is_file():
                continue
            document = json.loads(path.read_text())
            size = sum(int(layer["size"]) for layer in document.get("layers", []))
            display = display_shortest(parts)
            installed[name_key(parts)] = Installed(
                display, CatalogueModel(display, size), path.stat().st_mtime_ns
            )
        with self._lock:
            self._installed = installed

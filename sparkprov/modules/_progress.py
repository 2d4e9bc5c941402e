"""Byte counts of a pull made of layers (docker image layers, Ollama model blobs)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LayerBytes:
    layers: dict[str, tuple[int, int]] = field(default_factory=dict)  # layer id -> (done, total)

    @property
    def done(self) -> int:
        return sum(done for done, _ in self.layers.values())

    @property
    def total(self) -> int:
        return sum(total for _, total in self.layers.values())

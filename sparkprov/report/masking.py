"""Secrets never reach output: known secret values are replaced wherever they appear."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable
from typing import Any

MASK = "********"
_MIN_SECRET_LENGTH = 4  # shorter values would mask ordinary words everywhere


class Masker:
    """Replaces known secret values; more can be added while a run goes on."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        for value in secrets:
            self.add(value)

    def add(self, value: str) -> None:
        """Mask `value` from now on (safe to call from host threads), also as output shows it:
        escaped by repr() or JSON, and line by line for a multi-line secret (a PEM key in a diff)."""
        variants = {value, repr(value)[1:-1], json.dumps(value)[1:-1]}
        variants.update(line.strip() for line in value.splitlines())
        variants = {v for v in variants if len(v) >= _MIN_SECRET_LENGTH}
        with self._lock:
            if variants <= self._secrets:
                return
            self._secrets.update(variants)
            values = sorted(self._secrets, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in values))

    def text(self, value: str) -> str:
        pattern = self._pattern
        return pattern.sub(MASK, value) if pattern else value

    def data(self, value: Any) -> Any:
        """Mask every string inside JSON-like data (keys included)."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.data(k): self.data(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.data(v) for v in value]
        return value

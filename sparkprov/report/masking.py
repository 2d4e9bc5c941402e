"""Secrets never reach output: known secret values are replaced wherever they appear."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

MASK = "********"
_SECRET_NAME = re.compile(r"(API_KEY|TOKEN|SECRET|PASSWORD|PASSWD|PRIVATE_KEY)", re.IGNORECASE)
_MIN_SECRET_LENGTH = 4  # shorter values would mask ordinary words everywhere


def secrets_from_environment(environ: dict[str, str] | None = None) -> set[str]:
    """Values of variables whose names say they are secret (NGC_API_KEY, HF_TOKEN, ...)."""
    env = os.environ if environ is None else environ
    return {v for k, v in env.items() if _SECRET_NAME.search(k) and len(v) >= _MIN_SECRET_LENGTH}


class Masker:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = sorted({s for s in secrets if len(s) >= _MIN_SECRET_LENGTH}, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in values)) if values else None

    def text(self, value: str) -> str:
        return self._pattern.sub(MASK, value) if self._pattern else value

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

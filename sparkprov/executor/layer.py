"""A connection in front of another one, answering some file operations itself.

The executor puts two of these in front of a host's transport: the prefetch cache (one round trip
for a converged host) and, in plan mode, the overlay of pending changes. Everything they do not
answer goes to the connection behind them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sparkprov.connection.base import Become, ByteSource, CommandResult, Connection


class ConnectionLayer(Connection):
    def __init__(self, inner: Connection) -> None:
        self.inner = inner
        self.host_name = inner.host_name
        self.is_local = inner.is_local

    def answer(self, op: dict[str, Any], become: Become | None) -> dict[str, Any] | None:
        """This layer's own answer to an agent operation, or None to ask the connection behind."""
        return None

    def agent(self, ops: list[dict[str, Any]], *, become: Become | None = None) -> list[dict[str, Any]]:
        answers = [self.answer(op, become) for op in ops]
        missing = [op for op, answer in zip(ops, answers) if answer is None]
        fetched = iter(self.inner.agent(missing, become=become) if missing else [])
        return [answer if answer is not None else next(fetched) for answer in answers]

    def prefetch(self, requests: list[tuple[str, bool]], *, become: Become | None) -> None:
        prefetch = getattr(self.inner, "prefetch", None)
        if prefetch is not None:
            prefetch(requests, become=become)

    def run(self, argv: list[str], **kwargs: Any) -> CommandResult:
        return self.inner.run(argv, **kwargs)

    def run_with_input(self, argv: list[str], source: ByteSource, **kwargs: Any) -> CommandResult:
        return self.inner.run_with_input(argv, source, **kwargs)

    def stream_output(self, argv: list[str], **kwargs: Any) -> Iterator[bytes]:
        return self.inner.stream_output(argv, **kwargs)

    def open(self) -> None:
        self.inner.open()

    def close(self) -> None:
        self.inner.close()

    def invalidate(self) -> None:
        self.inner.invalidate()

    def round_trip_count(self) -> int:
        return self.inner.round_trip_count()

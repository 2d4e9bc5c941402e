"""Transports: how sparkprov reaches a host."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sparkprov.connection.base import HostUnreachable

if TYPE_CHECKING:
    from sparkprov.connection.base import Connection
    from sparkprov.inventory import Host


def connect(host: Host) -> Connection:
    """Open the connection an inventory host asks for (`ansible_connection`)."""
    kind = host.connection
    if kind == "local":
        from sparkprov.connection.local import LocalConnection

        return LocalConnection(host.name)
    raise HostUnreachable(
        f"host {host.name}: connection type '{kind}' is not supported by this sparkprov build "
        "(only 'local' is); set ansible_connection: local for this host or run sparkprov on it"
    )

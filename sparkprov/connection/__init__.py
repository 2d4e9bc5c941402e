"""Transports: how sparkprov reaches a host."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sparkprov.connection.base import HostUnreachable

if TYPE_CHECKING:
    from sparkprov.connection.base import Connection
    from sparkprov.connection.credentials import Credentials
    from sparkprov.inventory import Host


def connect(
    host: Host, *, accept_new_hostkeys: bool = False, credentials: Credentials | None = None
) -> Connection:
    """Open the connection an inventory host asks for (`ansible_connection`): `local`, or `ssh`
    (also Ansible's `paramiko`/`smart`). SSH connects lazily, on the first command.
    `accept_new_hostkeys` records unknown SSH host keys in known_hosts (`--accept-new-hostkeys`);
    `credentials` default to the environment's; the host's inventory passwords win over them."""
    from sparkprov.connection.credentials import Credentials

    host_vars = host.inventory.host_vars(host) if host.inventory is not None else host.vars
    credentials = (credentials or Credentials.from_environment()).for_host(host_vars)
    kind = host.connection
    if kind == "local":
        from sparkprov.connection.local import LocalConnection

        return LocalConnection(host.name, credentials=credentials)
    if kind in ("ssh", "paramiko", "paramiko_ssh", "smart"):
        from sparkprov.connection.ssh import SSHConnection

        return SSHConnection(host, accept_new_hostkeys=accept_new_hostkeys, credentials=credentials)
    raise HostUnreachable(
        f"host {host.name}: connection type '{kind}' is not supported by this sparkprov build "
        f"(only 'local' and 'ssh' are); set ansible_connection to one of them for this host"
    )

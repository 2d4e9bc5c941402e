"""`sparkprov facts`: one probe per host, hosts in parallel."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sparkprov.connection import connect
from sparkprov.connection.base import CommandTimeout, HostUnreachable
from sparkprov.connection.credentials import Credentials
from sparkprov.errors import InputError, Place
from sparkprov.facts.host import HostFacts, HostFactsError, gather_host_facts
from sparkprov.inventory import Host, implicit_localhost, load_inventory


def _gather_one(host: Host, accept_new_hostkeys: bool, credentials: Credentials | None) -> HostFacts | str:
    try:
        conn = connect(host, accept_new_hostkeys=accept_new_hostkeys, credentials=credentials)
        try:
            return gather_host_facts(conn)
        finally:
            conn.close()
    except (HostUnreachable, HostFactsError, CommandTimeout) as exc:
        return str(exc)


def select_hosts(inventory_path: Path | None, limit: str | None) -> list[Host]:
    """The hosts `sparkprov facts` probes; InputError when the inventory is bad or none matches."""
    inventory = load_inventory(inventory_path) if inventory_path else implicit_localhost()
    names = inventory.match(limit or "all")
    if not names:
        raise InputError.single(Place(f"-l {limit}" if limit else inventory.source), "no host matches")
    return [inventory.hosts[n] for n in names]


def gather_all(
    hosts: list[Host],
    *,
    forks: int = 10,
    accept_new_hostkeys: bool = False,
    credentials: Credentials | None = None,
) -> dict[str, HostFacts | str]:
    """Facts per host, or the reason the host could not be probed."""
    with ThreadPoolExecutor(max_workers=max(1, min(forks, len(hosts)))) as pool:
        found = pool.map(lambda host: _gather_one(host, accept_new_hostkeys, credentials), hosts)
        return dict(zip((host.name for host in hosts), found))

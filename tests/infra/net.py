"""Thin wrappers over iproute2 and iptables for the test networks (bridges, veths, netns)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence

from tests.infra.process import run


def ip_batch(commands: Sequence[str], *, netns: str | None = None, force: bool = False) -> None:
    """Run many `ip` commands in one process (`ip -batch`); `force` keeps going past errors."""
    if not commands:
        return
    argv = ["ip", *(["-n", netns] if netns else []), *(["-force"] if force else []), "-batch", "-"]
    run(argv, input="\n".join(commands) + "\n", check=not force)


def netns_with_prefix(prefix: str) -> list[str]:
    listing = run(["ip", "netns", "list"], check=False).stdout
    names = (line.split()[0] for line in listing.splitlines() if line.strip())
    return [name for name in names if name.startswith(prefix)]


def delete_netns(names: Sequence[str]) -> None:
    ip_batch([f"netns del {name}" for name in names], force=True)


def links_with_prefix(prefix: str) -> list[str]:
    listing = run(["ip", "-o", "link", "show"], check=False).stdout
    names = (line.split(": ")[1].split("@")[0] for line in listing.splitlines() if ": " in line)
    return [name for name in names if name.startswith(prefix)]


def delete_links(names: Sequence[str]) -> None:
    """Delete links, ignoring ones already gone; deleting one end of a veth pair deletes both."""
    ip_batch([f"link del {name}" for name in names], force=True)


def links_in_subnet(prefix: str) -> list[str]:
    """Links carrying an IPv4 address that starts with `prefix` (e.g. "10.210.")."""
    listing = run(["ip", "-o", "-4", "addr", "show"], check=False).stdout
    rows = (line.split() for line in listing.splitlines())
    return sorted({row[1] for row in rows if len(row) > 3 and row[3].startswith(prefix)})


def link_exists(name: str) -> bool:
    return run(["ip", "link", "show", "dev", name], check=False).returncode == 0


def delete_link(name: str) -> None:
    if link_exists(name):
        run(["ip", "link", "del", "dev", name])


def create_bridge(name: str, cidr: str) -> None:
    ip_batch([f"link add {name} type bridge", f"addr add {cidr} dev {name}", f"link set {name} up"])


def _forward_rule(bridge: str) -> list[str]:
    return ["FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]


def allow_forwarding(bridge: str) -> None:
    """Accept traffic between ports of `bridge`: with br_netfilter loaded, bridged frames cross the
    FORWARD chain, whose policy is DROP on a host where dockerd manages iptables."""
    if shutil.which("iptables"):
        run(["iptables", "-I", *_forward_rule(bridge)])


def remove_forwarding(bridge: str) -> None:
    """Delete every copy of the rule (a dead session may have left one behind)."""
    if not shutil.which("iptables"):
        return
    while run(["iptables", "-D", *_forward_rule(bridge)], check=False).returncode == 0:
        pass


def kill_netns_processes(name: str) -> None:
    """SIGKILL every process running in network namespace `name`."""
    listed = run(["ip", "netns", "pids", name], check=False)
    for pid in listed.stdout.split():
        run(["kill", "-9", pid], check=False)


def flush_neighbours(device: str) -> None:
    run(["ip", "neigh", "flush", "dev", device], check=False)

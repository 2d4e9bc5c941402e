"""Problems that only show across a fleet: what one host's facts cannot tell, the facts of all can.

- Duplicate machine-ids: hosts installed from one cloned image share `/etc/machine-id`, which
  systemd, journald, DHCP client ids and fleet tools take to be unique per machine.
- Mixed NVIDIA driver versions, and mixed CUDA versions (the driver's, as `nvidia-smi` reports it):
  the same container or model behaves differently from host to host.

Hosts that could not be probed take no part; hosts without a GPU are left out of the GPU checks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from sparkprov.facts.host import HostFacts

DUPLICATE_MACHINE_ID = "duplicate-machine-id"
MIXED_DRIVER = "mixed-gpu-driver"
MIXED_CUDA = "mixed-cuda-version"

_MACHINE_ID_FIX = (
    "rm /etc/machine-id && systemd-machine-id-setup on each clone (all but one), then reboot; "
    "/var/lib/dbus/machine-id should be a link to /etc/machine-id"
)
_DRIVER_FIX = (
    "install the same NVIDIA driver on every host: on DGX OS bring all Sparks to the same release "
    "(sudo apt update && sudo apt full-upgrade), then reboot"
)
_CUDA_FIX = (
    "the CUDA version nvidia-smi shows comes with the driver: bring every host to the same driver "
    "(sudo apt update && sudo apt full-upgrade on DGX OS), then reboot"
)


@dataclass(frozen=True)
class FleetProblem:
    """One fleet-wide finding: `kind` (stable, for scripts), the hosts involved (inventory order),
    what is wrong, and how to fix it."""

    kind: str
    hosts: tuple[str, ...]
    message: str
    fix: str

    def as_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "hosts": list(self.hosts), "message": self.message, "fix": self.fix}


def fleet_problems(facts_by_host: Mapping[str, HostFacts | str]) -> list[FleetProblem]:
    """Every fleet problem in these facts (a `str` value is a host that could not be probed)."""
    probed = {host: facts for host, facts in facts_by_host.items() if isinstance(facts, HostFacts)}
    return [
        *_duplicate_machine_ids(probed),
        *_mixed(probed, MIXED_DRIVER, "NVIDIA driver versions", _drivers, _DRIVER_FIX),
        *_mixed(probed, MIXED_CUDA, "CUDA versions", _cuda_versions, _CUDA_FIX),
    ]


def _duplicate_machine_ids(probed: Mapping[str, HostFacts]) -> list[FleetProblem]:
    by_id = _group(probed, lambda facts: [facts.machine_id] if facts.machine_id else [])
    return [
        FleetProblem(
            DUPLICATE_MACHINE_ID,
            hosts,
            f"{len(hosts)} hosts share machine-id {machine_id} ({', '.join(hosts)}): "
            "likely installed from one cloned disk image",
            _MACHINE_ID_FIX,
        )
        for machine_id, hosts in by_id.items()
        if len(hosts) > 1
    ]


def _mixed(
    probed: Mapping[str, HostFacts],
    kind: str,
    what: str,
    values: Callable[[HostFacts], list[str]],
    fix: str,
) -> list[FleetProblem]:
    by_value = _group(probed, values)
    if len(by_value) < 2:
        return []
    hosts = tuple(host for host in probed if values(probed[host]))
    listed = "; ".join(f"{value} on {', '.join(names)}" for value, names in _by_version(by_value))
    return [FleetProblem(kind, hosts, f"mixed {what} across the fleet: {listed}", fix)]


def _drivers(facts: HostFacts) -> list[str]:
    return [driver for driver in dict.fromkeys(gpu.driver for gpu in facts.gpus) if driver]


def _cuda_versions(facts: HostFacts) -> list[str]:
    return [cuda for cuda in dict.fromkeys(gpu.cuda for gpu in facts.gpus) if cuda]


def _group(
    probed: Mapping[str, HostFacts], values: Callable[[HostFacts], Iterable[str]]
) -> dict[str, tuple[str, ...]]:
    """value -> hosts with it, both in first-seen (inventory) order."""
    groups: dict[str, list[str]] = {}
    for host, facts in probed.items():
        for value in values(facts):
            groups.setdefault(value, []).append(host)
    return {value: tuple(hosts) for value, hosts in groups.items()}


def _by_version(groups: Mapping[str, tuple[str, ...]]) -> list[tuple[str, tuple[str, ...]]]:
    """Newest version first (numeric comparison of dotted parts)."""

    def key(item: tuple[str, tuple[str, ...]]) -> tuple[int, ...]:
        return tuple(int(part) if part.isdigit() else -1 for part in item[0].split("."))

    return sorted(groups.items(), key=key, reverse=True)

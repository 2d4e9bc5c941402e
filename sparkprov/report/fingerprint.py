"""Host fingerprints: what a benchmark number must be read with (hostname, GPU, driver, CUDA, kernel,
memory), from the facts probe (`sparkprov/facts/host.py`, one round trip per host).

Benchmark steps record the fingerprint of their host in `details["fingerprint"]`; `--report` takes
those and probes the hosts that have none (`collect_fingerprints`), so every report file carries one
per host of the run.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from sparkprov.facts.host import HostFacts, gather_host_facts

if TYPE_CHECKING:
    from sparkprov.connection.base import Connection
    from sparkprov.executor.results import RunResult

GIB = 1024**3


@dataclass(frozen=True)
class Fingerprint:
    host: str  # inventory name
    hostname: str
    gpu: str | None
    gpu_count: int
    driver: str | None
    cuda: str | None
    kernel: str
    os: str
    arch: str
    memory_total_gib: float

    @classmethod
    def from_facts(cls, host: str, facts: HostFacts) -> Fingerprint:
        first = facts.gpus[0] if facts.gpus else None
        return cls(
            host=host,
            hostname=facts.hostname,
            gpu=first.name if first else None,
            gpu_count=len(facts.gpus),
            driver=first.driver if first else None,
            cuda=first.cuda if first else None,
            kernel=facts.kernel,
            os=facts.os_pretty,
            arch=facts.arch,
            memory_total_gib=round(facts.mem_total_kib * 1024 / GIB, 1),
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe(fingerprint: dict[str, Any]) -> str:
    """One line: `h1 (spark-01): NVIDIA GB10, driver 580.95.05, CUDA 13.0, kernel 6.11, 119.7 GiB`."""
    if "error" in fingerprint:
        return f"{fingerprint.get('host')}: not probed ({fingerprint['error']})"
    gpu = fingerprint.get("gpu") or "no GPU"
    parts = [
        gpu if fingerprint.get("gpu_count", 0) <= 1 else f"{fingerprint['gpu_count']}x {gpu}",
        f"driver {fingerprint.get('driver') or '-'}",
        f"CUDA {fingerprint.get('cuda') or '-'}",
        f"kernel {fingerprint.get('kernel')}",
        f"{fingerprint.get('memory_total_gib')} GiB memory",
        f"{fingerprint.get('os')} ({fingerprint.get('arch')})",
    ]
    return f"{fingerprint.get('host')} ({fingerprint.get('hostname')}): {', '.join(parts)}"


def probe(host: str, conn: Connection) -> dict[str, Any]:
    """The fingerprint of `conn`'s host, or `{host, error}` when the probe failed."""
    try:
        return Fingerprint.from_facts(host, gather_host_facts(conn)).as_dict()
    except Exception as exc:  # a report must still be written for a host that went away
        return {"host": host, "error": str(exc) or type(exc).__name__}


def recorded(result: RunResult) -> dict[str, dict[str, Any]]:
    """Fingerprints the run's steps recorded, by host."""
    found: dict[str, dict[str, Any]] = {}
    for verified in result.verify:
        fingerprint = verified.step.details.get("fingerprint")
        if isinstance(fingerprint, dict) and "error" not in fingerprint:
            found.setdefault(verified.host, fingerprint)
    return found


def collect_fingerprints(
    result: RunResult, connect_host: Callable[[str], Connection], *, forks: int = 10
) -> dict[str, dict[str, Any]]:
    """One fingerprint per host of the run: recorded by a step, else probed now (in parallel)."""
    known = recorded(result)
    missing = [host for host in _hosts(result) if host not in known]

    def one(host: str) -> dict[str, Any]:
        try:
            conn = connect_host(host)
        except Exception as exc:
            return {"host": host, "error": str(exc) or type(exc).__name__}
        try:
            return probe(host, conn)
        finally:
            conn.close()

    if missing:
        with ThreadPoolExecutor(max_workers=max(1, min(forks, len(missing)))) as pool:
            known.update(zip(missing, pool.map(one, missing)))
    return {host: known[host] for host in _hosts(result)}


def _hosts(result: RunResult) -> list[str]:
    seen: dict[str, None] = dict.fromkeys(result.stats)
    seen.update(dict.fromkeys(v.host for v in result.verify))
    return list(seen)

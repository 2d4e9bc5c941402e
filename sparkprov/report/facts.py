"""Rendering `sparkprov facts`: a table per host and the fleet problems, or one JSON document."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sparkprov.facts.fleet import FleetProblem
from sparkprov.facts.host import HostFacts


def _gib(kib: int) -> str:
    return f"{kib / 1024 / 1024:.1f} GiB"


def _gpus(facts: HostFacts) -> str:
    if not facts.gpus:
        return "none"
    parts = []
    for gpu in facts.gpus:
        memory = (
            f"{gpu.memory_total_mib} MiB"
            if gpu.memory_total_mib is not None
            else (gpu.memory_note or "unknown")
        )
        parts.append(f"{gpu.name} (driver {gpu.driver or '?'}, CUDA {gpu.cuda or '?'}, memory: {memory})")
    return "; ".join(parts)


def render_facts_text(found: dict[str, HostFacts | str], problems: Sequence[FleetProblem] = ()) -> str:
    lines = []
    for host, facts in found.items():
        lines.append(f"{host}:")
        if isinstance(facts, str):
            lines.append(f"  unreachable: {facts}")
            continue
        rows = [
            ("hostname", facts.hostname),
            ("os", f"{facts.os_pretty} ({facts.arch}), kernel {facts.kernel}"),
            ("cpus", str(facts.cpu_count)),
            ("memory", f"{_gib(facts.mem_total_kib)} total, {_gib(facts.mem_available_kib)} available"),
            ("gpu", _gpus(facts)),
            ("docker", facts.docker_version or "not available"),
            ("runtimes", ", ".join(facts.docker_runtimes) or "-"),
            ("machine-id", facts.machine_id or "-"),
        ]
        lines.extend(f"  {key:<11} {value}" for key, value in rows)
    lines.extend(_problems_text(found, problems))
    return "\n".join(lines)


def _problems_text(found: dict[str, HostFacts | str], problems: Sequence[FleetProblem]) -> list[str]:
    """The "fleet problems" section; for a single host there is no fleet to speak of."""
    if not problems:
        probed = sum(1 for facts in found.values() if isinstance(facts, HostFacts))
        return ["", "fleet problems: none"] if probed > 1 else []
    lines = ["", f"fleet problems ({len(problems)}):"]
    for problem in problems:
        lines.append(f"  {problem.kind}: {problem.message}")
        lines.append(f"    fix: {problem.fix}")
    return lines


def render_facts_json(found: dict[str, HostFacts | str], problems: Sequence[FleetProblem] = ()) -> str:
    hosts = {
        host: ({"unreachable": True, "msg": facts} if isinstance(facts, str) else facts.as_dict())
        for host, facts in found.items()
    }
    failed = any(isinstance(f, str) for f in found.values())
    document = {
        "hosts": hosts,
        "problems": [problem.as_dict() for problem in problems],
        "exit_code": 1 if failed else 0,
    }
    return json.dumps(document, indent=2)

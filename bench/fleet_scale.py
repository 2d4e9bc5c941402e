"""Converged re-apply against SSH fleets of different sizes: does a fleet cost more than one host?

    python bench/fleet_scale.py [--hosts 1,50] [--runs 3] [--forks N] [--max-ratio 3] [--playbook P]

For each fleet size it starts that many sshd hosts (the test suite's network-namespace fleet,
`tests/infra`, which needs root) and converges the playbook (default tests/data/fleet/converge.yml:
five file/template/copy tasks and a fact) once, not measured. Then it times `--runs` re-applies of
`sparkprov apply --format json` on each fleet (the whole process, as a user waits for it), the fleets
taking turns run by run so that the machine's background load hits them alike. Every measured run
must exit 0 and change nothing. Prints min/median/max wall time, round trips per host (from the JSON
report), and each median's ratio to the smallest fleet's; exits 1 when the largest fleet's median is
more than `--max-ratio` times the smallest's. Fleets are always torn down.

The simulated hosts share this machine's CPUs, so the table also splits the CPU time of a run
(approximately): the sparkprov process (what a real fleet adds to the controller) and the hosts' sshds
with everything they ran (on a real fleet, spread over the hosts).

Run it with a Python that has sparkprov's dependencies (e.g. .venv-test/bin/python).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: the repository's packages (bench, tests, sparkprov)
    sys.path.insert(0, str(REPO))

from bench.fleet import FleetUnavailable, fleet_network, running_fleet, sparkprov_ssh_env  # noqa: E402
from tests.cli import CliRun, sparkprov  # noqa: E402
from tests.infra.fleet import Fleet  # noqa: E402

PLAYBOOK = REPO / "tests" / "data" / "fleet" / "converge.yml"


@dataclass(frozen=True)
class Sample:
    """One measured run."""

    wall_s: float
    client_cpu_s: float  # the sparkprov process
    hosts_cpu_s: float  # the hosts' sshds and what they ran


@dataclass(frozen=True)
class Row:
    hosts: int
    samples: list[Sample]
    round_trips: list[int]  # per host, over all measured runs

    @property
    def wall_s(self) -> list[float]:
        return [s.wall_s for s in self.samples]

    @property
    def median_s(self) -> float:
        return statistics.median(self.wall_s)

    def median_of(self, field: str) -> float:
        return statistics.median(getattr(s, field) for s in self.samples)


@dataclass(frozen=True)
class Setup:
    playbook: Path
    forks: int


def apply(fleet: Fleet, work: Path, setup: Setup) -> tuple[CliRun, Sample]:
    """One `sparkprov apply` of the playbook on the fleet: the finished run and what it cost."""
    inventory = work / "hosts.yml"
    argv = ("apply", setup.playbook, "-i", inventory, "--format", "json", "--forks", str(setup.forks))
    hosts_before, client_before = _hosts_cpu_s(fleet), _children_cpu_s()
    started = time.monotonic()
    result = sparkprov(*argv, home=work / "home", extra_env=sparkprov_ssh_env(fleet), timeout=600)
    wall = time.monotonic() - started
    client = _children_cpu_s() - client_before
    return result, Sample(wall, client, _hosts_cpu_s(fleet) - hosts_before)


def _children_cpu_s() -> float:
    """User + system time of this process's finished children (here: the sparkprov runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _hosts_cpu_s(fleet: Fleet) -> float:
    """CPU time of every host's sshd listener and its finished descendants (sessions, commands)."""
    ticks = 0
    for host in fleet.hosts:
        try:
            fields = Path(f"/proc/{host.pid}/stat").read_text().rpartition(")")[2].split()
        except (OSError, TypeError):
            continue
        ticks += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def converge(fleet: Fleet, work: Path, setup: Setup) -> None:
    """The fleet's inventory, and a first apply (not measured)."""
    (work / "hosts").mkdir(parents=True)  # the hosts' shared parent (they share one filesystem)
    fleet.write_inventory(work / "hosts.yml", work / "hosts")
    first, sample = apply(fleet, work, setup)
    _require(first, converged=False)
    print(f"  {len(fleet.hosts)} hosts: converged in {sample.wall_s:.2f} s", flush=True)


def measure(fleets: list[tuple[Fleet, Path]], runs: int, setup: Setup) -> list[Row]:
    """`runs` converged re-applies of every fleet, the fleets taking turns (the first one rotates)."""
    samples: list[list[Sample]] = [[] for _ in fleets]
    trips: list[list[int]] = [[] for _ in fleets]
    for run in range(runs):
        for index in [(run + offset) % len(fleets) for offset in range(len(fleets))]:
            fleet, work = fleets[index]
            result, sample = apply(fleet, work, setup)
            _require(result, converged=True)
            samples[index].append(sample)
            trips[index].extend(result.doc["round_trips"].values())
    return [Row(len(fleet.hosts), s, t) for (fleet, _), s, t in zip(fleets, samples, trips)]


def _require(result: CliRun, *, converged: bool) -> None:
    if result.rc != 0:
        raise SystemExit(f"sparkprov apply failed:\n{result!r}")
    if converged:
        changed = {host: stats["changed"] for host, stats in result.doc["stats"].items() if stats["changed"]}
        if changed:
            raise SystemExit(f"a converged re-run changed something: {changed}")


def table(rows: list[Row]) -> str:
    base = rows[0].median_s
    lines = [
        f"{'hosts':>5}  {'runs':>4}  {'min s':>6}  {'median s':>8}  {'max s':>6}  {'round trips/host':>16}  "
        f"{'ratio':>5}  {'client cpu s':>12}  {'hosts cpu s':>11}"
    ]
    for row in rows:
        low, high = min(row.round_trips), max(row.round_trips)
        trips = str(low) if low == high else f"{low}-{high}"
        lines.append(
            f"{row.hosts:>5}  {len(row.samples):>4}  {min(row.wall_s):>6.2f}  {row.median_s:>8.2f}  "
            f"{max(row.wall_s):>6.2f}  {trips:>16}  {row.median_s / base:>5.2f}  "
            f"{row.median_of('client_cpu_s'):>12.2f}  {row.median_of('hosts_cpu_s'):>11.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hosts", default="1,50", help="fleet sizes, comma-separated (default 1,50)")
    parser.add_argument("--runs", type=int, default=3, help="measured re-runs per fleet (default 3)")
    parser.add_argument("--forks", type=int, help="sparkprov --forks (default: the largest fleet size)")
    parser.add_argument("--max-ratio", type=float, default=3.0, help="largest/smallest median (default 3)")
    parser.add_argument("--playbook", type=Path, default=PLAYBOOK, help="default: %(default)s")
    args = parser.parse_args(argv)
    sizes = sorted({int(n) for n in args.hosts.split(",") if n.strip()})
    if not sizes or sizes[0] < 1 or args.runs < 1:
        parser.error("--hosts needs sizes >= 1 and --runs at least 1")
    setup = Setup(args.playbook.resolve(), args.forks or sizes[-1])
    print(
        f"converged re-apply of {setup.playbook}, --forks {setup.forks}, {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.1f}, python {sys.executable}",
        flush=True,
    )
    try:
        with contextlib.ExitStack() as stack:
            network = stack.enter_context(fleet_network())
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fleet-scale-")))
            fleets = [(stack.enter_context(running_fleet(network, n)), scratch / f"fleet{n}") for n in sizes]
            for fleet, work in fleets:
                converge(fleet, work, setup)
            print(f"measuring {args.runs} re-runs per fleet", flush=True)
            rows = measure(fleets, args.runs, setup)
    except FleetUnavailable as exc:
        print(f"no SSH fleet here: {exc}", file=sys.stderr)
        return 2
    print(table(rows))
    largest, smallest = rows[-1], rows[0]
    ratio = largest.median_s / smallest.median_s
    within = ratio <= args.max_ratio
    print(
        f"{largest.hosts} hosts take {ratio:.2f}x the time of {smallest.hosts} "
        f"(target <= {args.max_ratio:g}x): {'ok' if within else 'OVER'}"
    )
    hosts_cpu = largest.median_of("hosts_cpu_s")
    print(
        f"the {largest.hosts} simulated hosts' own work took {hosts_cpu:.2f} CPU-s of this machine's "
        f"{os.cpu_count()} CPUs (at least {hosts_cpu / (os.cpu_count() or 1):.2f} s of each run); "
        "a real fleet does it on the hosts, in parallel"
    )
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())

"""PNG charts for `--report DIR` (under DIR/charts/), each with the host fingerprint and the time.

- `throughput-<host>-<step>.png`: prefill and decode tok/s per model (mean, stddev as error bars), with
  the expected value and, for decode, the roofline ceiling drawn over each bar;
- `fleet-<step>.png`: decode and prefill tok/s per host and model, with the fleet median and the
  outlier threshold;
- `sweep-<host>-<step>.png`: a unified-memory allocation sweep (the `memory` step): memory available as
  the allocation grows, from the step's `details.steps` rows (`achieved_gb`, `mem_available_before_gb`),
  or `details.sweep` points with an allocation (`achieved_gb`, `allocated_gb`...) and what was left
  (`mem_available_before_gb`, `available_before_gb`, `mem_available_gb`...).

matplotlib is optional (the `reports` extra): without it no chart is drawn and `write_charts` says so,
for report.md to show.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparkprov.executor.results import RunResult, VerifyResult
from sparkprov.report.fingerprint import describe
from sparkprov.report.fleet import bench_results
from sparkprov.verify.base import StepStatus
from sparkprov.verify.expect import ExpectationError, minimum_required, parse_expectation

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MISSING = "charts not drawn: matplotlib is not installed (pip install 'sparkprov[reports]')"
SWEEP_X = ("achieved_gb", "allocated_gb", "allocated_gib", "target_gb")
SWEEP_Y = ("mem_available_before_gb", "available_before_gb", "mem_available_gb", "available_gb")
METRIC_LABELS = {"prefill_tps": "prefill tok/s", "decode_tps": "decode tok/s"}


@dataclass(frozen=True)
class Chart:
    path: str  # relative to the report directory
    title: str
    kind: str  # throughput, fleet, sweep
    hosts: tuple[str, ...]


def write_charts(
    directory: Path, result: RunResult, fingerprints: dict[str, dict[str, Any]], generated_at: str
) -> tuple[list[Chart], str]:
    """Draw every chart the run's results allow; ([], note) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], MISSING
    (directory / "charts").mkdir(parents=True, exist_ok=True)
    drawn: list[tuple[Chart, Figure]] = []
    benches = [verified for _, verified in bench_results(result)]
    drawn += [_throughput(v, plt) for v in benches if v.step.measured.get("models")]
    drawn += _fleet(benches, plt)
    drawn += [_sweep(v, points, plt) for v, points in _sweeps(result)]
    charts = []
    for chart, figure in drawn:
        _footer(figure, [fingerprints.get(h, {"host": h}) for h in chart.hosts], generated_at)
        metadata = {"Title": chart.title, "Software": "sparkprov", "Creation Time": generated_at}
        metadata["Description"] = "; ".join(describe(fingerprints.get(h, {"host": h})) for h in chart.hosts)
        figure.savefig(directory / chart.path, dpi=100, metadata=metadata)
        plt.close(figure)
        charts.append(chart)
    return charts, ""


def slug(text: str) -> str:
    """`text` as part of a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:80] or "x"


def _footer(figure: Figure, fingerprints: list[dict[str, Any]], generated_at: str) -> None:
    lines = [describe(f) for f in fingerprints[:6]]
    if len(fingerprints) > 6:
        lines.append(f"... and {len(fingerprints) - 6} more hosts (see report.md)")
    lines.append(f"generated {generated_at} by sparkprov")
    figure.text(0.01, 0.01, "\n".join(lines), fontsize=7, va="bottom", ha="left", family="monospace")
    figure.subplots_adjust(bottom=0.12 + 0.035 * len(lines), top=0.88)


def _threshold(verdict: dict[str, Any] | None) -> float | None:
    """The number an expectation asks for at least ('>= 40' -> 40), for the chart's expected line."""
    if not verdict:
        return None
    try:
        required = minimum_required(parse_expectation(verdict.get("expected")))
    except ExpectationError:
        return None
    return required[0] if required else None


def _throughput(verified: VerifyResult, plt: Any) -> tuple[Chart, Figure]:
    models = verified.step.measured["models"]
    names = list(models)
    figure, axes = plt.subplots(1, 2, figsize=(max(8.0, 2.2 * len(names) + 4), 5.5))
    for ax, metric in zip(axes, ("prefill_tps", "decode_tps")):
        means = [(models[n].get(metric) or {}).get("mean") or 0.0 for n in names]
        errors = [(models[n].get(metric) or {}).get("stddev") or 0.0 for n in names]
        colours = ["tab:green" if models[n].get("verdict") == "pass" else "tab:red" for n in names]
        ax.bar(range(len(names)), means, yerr=errors, color=colours, alpha=0.8, capsize=4)
        for x, name in enumerate(names):
            verdicts = models[name].get("verdicts") or {}
            expected = _threshold(verdicts.get(metric))
            if expected is not None:
                ax.hlines(expected, x - 0.4, x + 0.4, colors="black", linestyles="--", label="expected")
            ceiling = (verdicts.get(metric) or {}).get("ceiling_tps")
            if ceiling is not None:
                ax.hlines(ceiling, x - 0.4, x + 0.4, colors="tab:purple", linestyles=":", label="roofline")
        ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(METRIC_LABELS[metric])
        ax.set_title(METRIC_LABELS[metric])
        _dedupe_legend(ax)
    title = f"{verified.name} on {verified.host}"
    figure.suptitle(title)
    path = f"charts/throughput-{slug(verified.host)}-{slug(verified.name)}.png"
    return Chart(path, title, "throughput", (verified.host,)), figure


def _dedupe_legend(ax: Any) -> None:
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    if unique:
        ax.legend(unique.values(), unique.keys(), fontsize=8)


def _fleet(benches: list[VerifyResult], plt: Any) -> list[tuple[Chart, Figure]]:
    by_step: dict[tuple[str, str], list[VerifyResult]] = {}
    for verified in benches:
        by_step.setdefault((verified.play, verified.name), []).append(verified)
    charts = []
    for (_, name), results in by_step.items():
        hosts = tuple(dict.fromkeys(v.host for v in results))
        if len(hosts) < 2:
            continue
        charts.append(_fleet_chart(name, results, hosts, plt))
    return charts


def _fleet_chart(
    name: str, results: list[VerifyResult], hosts: tuple[str, ...], plt: Any
) -> tuple[Chart, Figure]:
    models = list(dict.fromkeys(m for v in results for m in v.step.measured.get("models", {})))
    figure, axes = plt.subplots(2, 1, figsize=(max(8.0, 1.2 * len(hosts) * len(models) + 3), 8))
    width = 0.8 / max(1, len(models))
    for ax, metric in zip(axes, ("decode_tps", "prefill_tps")):
        for offset, model in enumerate(models):
            values = [_mean(v, model, metric) for v in results]
            xs = [i + offset * width for i in range(len(results))]
            flagged = [f"{metric} vs fleet" in (_verdicts(v, model)) for v in results]
            colours = ["tab:red" if f else f"C{offset}" for f in flagged]
            ax.bar(xs, [v or 0.0 for v in values], width, color=colours, label=model)
            present = [v for v in values if v]
            if present:
                ax.axhline(statistics.median(present), color=f"C{offset}", linestyle="--", linewidth=1)
        ax.set_xticks(
            [i + width * (len(models) - 1) / 2 for i in range(len(results))], list(hosts), fontsize=8
        )
        ax.set_ylabel(METRIC_LABELS[metric])
        ax.legend(fontsize=8)
    axes[0].set_title("per host (dashed: fleet median; red: outlier)")
    title = f"{name}: fleet"
    figure.suptitle(title)
    return Chart(f"charts/fleet-{slug(name)}.png", title, "fleet", hosts), figure


def _mean(verified: VerifyResult, model: str, metric: str) -> float | None:
    stats = (verified.step.measured.get("models", {}).get(model) or {}).get(metric) or {}
    return stats.get("mean")


def _verdicts(verified: VerifyResult, model: str) -> dict[str, Any]:
    return dict((verified.step.measured.get("models", {}).get(model) or {}).get("verdicts") or {})


def _sweeps(result: RunResult) -> list[tuple[VerifyResult, list[dict[str, Any]]]]:
    found = []
    for verified in result.verify:
        if verified.status is StepStatus.SKIP:
            continue
        details = verified.step.details
        points = details.get("sweep") or (details.get("steps") if verified.task.module == "memory" else None)
        if isinstance(points, list) and any(_xy(p) for p in points):
            found.append((verified, points))
    return found


def _xy(point: Any) -> tuple[float, float] | None:
    if not isinstance(point, dict):
        return None
    x = next((point[k] for k in SWEEP_X if isinstance(point.get(k), (int, float))), None)
    y = next((point[k] for k in SWEEP_Y if isinstance(point.get(k), (int, float))), None)
    return None if x is None or y is None else (float(x), float(y))


def _sweep(verified: VerifyResult, points: list[dict[str, Any]], plt: Any) -> tuple[Chart, Figure]:
    pairs = [xy for xy in map(_xy, points) if xy]
    figure, ax = plt.subplots(figsize=(8, 5.5))
    ax.plot([x for x, _ in pairs], [y for _, y in pairs], marker="o")
    ax.set_xlabel("allocated in total (GB)")
    ax.set_ylabel("MemAvailable before the step (GB)")
    ax.grid(True, alpha=0.3)
    title = f"{verified.name} on {verified.host}: allocation sweep"
    figure.suptitle(title)
    path = f"charts/sweep-{slug(verified.host)}-{slug(verified.name)}.png"
    return Chart(path, title, "sweep", (verified.host,)), figure

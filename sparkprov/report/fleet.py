"""Fleet outliers: hosts whose benchmark falls more than a set percentage below the fleet median.

Hosts that ran the same benchmark step (same play and step name) are compared per model and metric
(prefill_tps, decode_tps). With at least `MIN_HOSTS` measurements, a host below
median x (1 - percent/100) gets a failed verdict `<model> <metric> vs fleet` on its step (a slow
machine is what verification is for); the others are untouched. `--outlier-percent 0` turns it off.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import replace
from typing import Any

from sparkprov.executor.results import RunResult, VerifyResult
from sparkprov.verify.base import MetricVerdict, StepStatus
from sparkprov.verify.ollama_bench import model_means, with_verdict

MIN_HOSTS = 3
BENCH_STEPS = frozenset({"ollama_bench"})


def bench_results(result: RunResult) -> list[tuple[int, VerifyResult]]:
    """(index in result.verify, result) of every benchmark step that measured something."""
    return [
        (index, verified)
        for index, verified in enumerate(result.verify)
        if verified.task.module in BENCH_STEPS and verified.status is not StepStatus.SKIP
    ]


def flag_outliers(result: RunResult, percent: float) -> tuple[RunResult, list[dict[str, Any]]]:
    """`result` with outliers' steps failed, and one finding per compared group (median, outliers)."""
    if percent <= 0:
        return result, []
    groups: dict[tuple[str, str, str, str], dict[int, float]] = defaultdict(dict)
    for index, verified in bench_results(result):
        for model, means in model_means(verified.step).items():
            for metric, value in means.items():
                groups[(verified.play, verified.name, model, metric)][index] = value
    verify = list(result.verify)
    findings = []
    for (play, name, model, metric), values in groups.items():
        if len({result.verify[i].host for i in values}) < MIN_HOSTS:
            continue
        median = statistics.median(values.values())
        floor = median * (1 - percent / 100.0)
        outliers = {i: v for i, v in values.items() if v < floor}
        for index, value in outliers.items():
            verdict = _verdict(value, median, floor, percent, len(values))
            verify[index] = _with(verify[index], model, f"{metric} vs fleet", verdict)
        findings.append(
            {
                "play": play,
                "step": name,
                "model": model,
                "metric": metric,
                "median": round(median, 3),
                "threshold": round(floor, 3),
                "hosts": {result.verify[i].host: v for i, v in values.items()},
                "outliers": sorted(result.verify[i].host for i in outliers),
            }
        )
    return replace(result, verify=verify), findings


def _verdict(value: float, median: float, floor: float, percent: float, hosts: int) -> MetricVerdict:
    below = (1 - value / median) * 100 if median else 0.0
    return MetricVerdict(
        expected=f">= {floor:.4g} ({percent:g}% below the fleet median {median:.4g} of {hosts} hosts)",
        measured=value,
        ok=False,
        text=f"{value:g} is {below:.0f}% below the fleet median {median:g}: an outlier in the fleet",
    )


def _with(verified: VerifyResult, model: str, key: str, verdict: MetricVerdict) -> VerifyResult:
    return replace(verified, step=with_verdict(verified.step, model, key, verdict))

"""Comparing a run with other measurements: a baseline report (`--baseline old/report.json`) and the
rest of the fleet (`--outlier-percent`, report/fleet.py).

The baseline is an earlier `report.json` (or `--format json` output). Its benchmark means are matched
by host, play step name, model and metric; a host the baseline does not have is compared with the
baseline's only host when it has one (a fleet against a reference machine). Per matched metric:
- an expectation written relative to it ("within 10% of baseline") is judged now, in place of its
  "no baseline" verdict;
- otherwise a throughput below baseline x (1 - tolerance) is a regression: a failed verdict
  `<model> <metric> vs baseline`, which fails the step and the run (exit 1).

Both comparisons run after the hosts finished and before anything is reported, so text, JSON, junit
and markdown all show them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sparkprov.errors import InputError, Place
from sparkprov.executor.results import RunResult, VerifyResult
from sparkprov.report.fleet import bench_results, flag_outliers
from sparkprov.verify.base import MetricVerdict
from sparkprov.verify.expect import (
    NO_BASELINE,
    ExpectationError,
    References,
    evaluate_against,
    parse_expectation,
)
from sparkprov.verify.ollama_bench import THROUGHPUT, model_means, with_verdict

DEFAULT_TOLERANCE_PERCENT = 10.0
DEFAULT_OUTLIER_PERCENT = 15.0

Key = tuple[str, str, str, str]  # host, step name, model, metric


@dataclass(frozen=True)
class Baseline:
    path: str
    values: dict[Key, float]
    generated_at: str | None = None

    def lookup(self, host: str, name: str, model: str, metric: str) -> float | None:
        found = self.values.get((host, name, model, metric))
        if found is not None:
            return found
        hosts = {key[0] for key in self.values}
        if len(hosts) == 1:  # one reference machine for every host
            return self.values.get((next(iter(hosts)), name, model, metric))
        return None


def load_baseline(path: Path) -> Baseline:
    """The benchmark means of a report; InputError (exit 4, before any host) when it is not one."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError.single(Place(str(path)), f"cannot read the baseline report: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("verify"), list):
        raise InputError.single(Place(str(path)), "not a sparkprov report (no 'verify' list)")
    values: dict[Key, float] = {}
    for entry in document["verify"]:
        if not isinstance(entry, dict) or entry.get("step") != "ollama_bench":
            continue
        for model, found in ((entry.get("measured") or {}).get("models") or {}).items():
            for metric in THROUGHPUT:
                stats = found.get(metric) if isinstance(found, dict) else None
                if isinstance(stats, dict) and _usable(stats):
                    values[(str(entry.get("host")), str(entry.get("name")), model, metric)] = stats["mean"]
    if not values:
        raise InputError.single(Place(str(path)), "the baseline report has no ollama_bench measurements")
    return Baseline(str(path), values, document.get("generated_at"))


def _usable(stats: dict[str, Any]) -> bool:
    return isinstance(stats.get("mean"), (int, float)) and not stats.get("cached")


def compare_baseline(
    result: RunResult, baseline: Baseline, tolerance: float
) -> tuple[RunResult, list[dict[str, Any]]]:
    verify = list(result.verify)
    findings: list[dict[str, Any]] = []
    for index, verified in bench_results(result):
        for model, means in model_means(verified.step).items():
            for metric, value in means.items():
                base = baseline.lookup(verified.host, verified.name, model, metric)
                if base is None:
                    continue
                verify[index], finding = _compare(verify[index], model, metric, value, base, tolerance)
                findings.append({"host": verified.host, "step": verified.name, **finding})
    return replace(result, verify=verify), findings


def _compare(
    verified: VerifyResult, model: str, metric: str, value: float, base: float, tolerance: float
) -> tuple[VerifyResult, dict[str, Any]]:
    change = (value / base - 1) * 100 if base else 0.0
    finding = {
        "model": model,
        "metric": metric,
        "baseline": base,
        "measured": value,
        "change_percent": change,
    }
    written = verified.step.verdicts.get(f"{model} {metric}")
    if written is not None and written.flag == NO_BASELINE:
        key, verdict = metric, _relative(written, value, base)
    else:
        key, verdict = f"{metric} vs baseline", _regression(value, base, change, tolerance)
    finding["ok"] = verdict.ok
    return replace(verified, step=with_verdict(verified.step, model, key, verdict)), finding


def _relative(written: MetricVerdict, value: float, base: float) -> MetricVerdict:
    try:
        expectation = parse_expectation(written.expected)
    except ExpectationError:
        return written
    found = evaluate_against(expectation, value, References(baseline=base))
    return MetricVerdict(written.expected, value, found.ok, found.text, found.flag)


def _regression(value: float, base: float, change: float, tolerance: float) -> MetricVerdict:
    floor = base * (1 - tolerance / 100.0)
    ok = value >= floor
    text = f"{value:g} is {change:+.1f}% against the baseline {base:g}"
    return MetricVerdict(
        expected=f">= {floor:.4g} (at most {tolerance:g}% below the baseline {base:.4g})",
        measured=value,
        ok=ok,
        text=text if ok else f"{text}: a regression beyond the {tolerance:g}% tolerance",
    )


@dataclass
class Comparisons:
    """What `apply`/`verify` compare the run with; `apply_to` returns the run with the verdicts added."""

    baseline: Baseline | None = None
    tolerance_percent: float = DEFAULT_TOLERANCE_PERCENT
    outlier_percent: float = DEFAULT_OUTLIER_PERCENT
    findings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, baseline: Path | None, tolerance: float, outlier_percent: float) -> Comparisons:
        return cls(load_baseline(baseline) if baseline else None, tolerance, outlier_percent)

    def apply_to(self, result: RunResult) -> RunResult:
        result, outliers = flag_outliers(result, self.outlier_percent)
        self.findings["fleet"] = {"outlier_percent": self.outlier_percent, "groups": outliers}
        if self.baseline is not None:
            result, compared = compare_baseline(result, self.baseline, self.tolerance_percent)
            self.findings["baseline"] = {
                "path": self.baseline.path,
                "generated_at": self.baseline.generated_at,
                "tolerance_percent": self.tolerance_percent,
                "metrics": compared,
                "regressions": [c for c in compared if not c["ok"]],
            }
        return result

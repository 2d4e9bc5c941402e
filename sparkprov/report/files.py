"""`--report DIR`: report.json (schemas/report.json), junit.xml, report.md, PNG charts (charts/) and
the benchmarks in llama-benchy's shape (llama-benchy/), each with the host fingerprints and times.

`ReportInfo` carries what the run itself does not hold: when it started and ended, one fingerprint
per host (report/fingerprint.py) and the comparisons made after it (report/baseline.py).
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from sparkprov import __version__
from sparkprov.executor.results import RunResult, Status, VerifyResult
from sparkprov.report.jsonout import json_document, render_json
from sparkprov.report.masking import Masker
from sparkprov.verify.base import StepStatus

REPORT_FORMAT = 1


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class ReportInfo:
    started_at: str | None = None
    finished_at: str | None = None
    fingerprints: dict[str, dict[str, Any]] = field(default_factory=dict)
    comparisons: dict[str, Any] = field(default_factory=dict)
    generated_at: str = field(default_factory=now_iso)


def _write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def junit_xml(result: RunResult, masker: Masker, info: ReportInfo | None = None) -> str:
    cases = []
    failures = skipped = 0
    for play in result.plays:
        for task_result in play.results:
            shown = task_result.censored() if task_result.task.no_log else task_result
            name = quoteattr(masker.text(f"[{shown.host}] {shown.name}"))
            body = ""
            if shown.status in (Status.FAILED, Status.UNREACHABLE) and not shown.ignored:
                failures += 1
                message = masker.text(shown.msg or next((i.msg for i in shown.items if i.msg), ""))
                body = f"<failure message={quoteattr(message)}>{escape(message)}</failure>"
            elif shown.status is Status.SKIPPED:
                skipped += 1
                body = "<skipped/>"
            cases.append(
                f"    <testcase classname={quoteattr(masker.text(play.play.name))} name={name} "
                f'time="{shown.duration_s:.3f}">{body}</testcase>'
            )
    for verified in result.verify:
        case, failed, skip = _verify_case(verified, masker)
        cases.append(case)
        failures += failed
        skipped += skip
    header = (
        f'  <testsuite name="sparkprov {result.mode.value}" tests="{len(cases)}" failures="{failures}" '
        f'skipped="{skipped}" hostname={quoteattr(socket.gethostname())} '
        f'timestamp="{time.strftime("%Y-%m-%dT%H:%M:%S")}">'
    )
    properties = _junit_properties(info, masker) if info is not None else []
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<testsuites>\n'
        + "\n".join([header, *properties, *cases])
        + ("\n  </testsuite>\n</testsuites>\n")
    )


def _junit_properties(info: ReportInfo, masker: Masker) -> list[str]:
    """`<properties>`: the run's times and, per host, its fingerprint (`host.NAME.gpu`...)."""
    pairs = [(k, getattr(info, k)) for k in ("started_at", "finished_at", "generated_at") if getattr(info, k)]
    for host, fingerprint in info.fingerprints.items():
        pairs += [(f"host.{host}.{k}", v) for k, v in fingerprint.items() if k != "host" and v is not None]
    lines = [
        f"      <property name={quoteattr(masker.text(str(k)))} value={quoteattr(masker.text(str(v)))}/>"
        for k, v in pairs
    ]
    return ["    <properties>", *lines, "    </properties>"] if lines else []


def _verify_case(verified: VerifyResult, masker: Masker) -> tuple[str, int, int]:
    """A verify step on a host as a testcase (classname 'PLAY verify'); (xml, failures, skipped)."""
    shown = verified.shown()
    label = shown.name + (f" (item={shown.item})" if shown.item is not None else "")
    name = quoteattr(masker.text(f"[{shown.host}] {label}"))
    classname = quoteattr(masker.text(f"{shown.play} verify"))
    message = masker.text(shown.step.summary())
    body, failed, skip = "", 0, 0
    if shown.status is StepStatus.FAIL and not shown.ignored:
        body, failed = f"<failure message={quoteattr(message)}>{escape(message)}</failure>", 1
    elif shown.status is StepStatus.SKIP:
        body, skip = f"<skipped message={quoteattr(message)}/>", 1
    elif message:
        body = f"<system-out>{escape(message)}</system-out>"
    case = f'    <testcase classname={classname} name={name} time="{shown.duration_s:.3f}">{body}</testcase>'
    return case, failed, skip


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _verify_table(result: RunResult) -> list[str]:
    if not result.verify:
        return []
    lines = [
        "",
        "## Verification",
        "",
        "| host | step | status | expected | measured | reason |",
        "|---|---|---|---|---|---|",
    ]
    for verified in result.verify:
        shown = verified.shown()
        step = shown.step
        expected = "; ".join(f"{k} {v.expected}" for k, v in step.verdicts.items())
        measured = "; ".join(f"{k} {v.measured_text}" for k, v in step.verdicts.items())
        status = shown.status.name + (" (ignored)" if shown.ignored else "")
        label = shown.name + (f" (item={shown.item})" if shown.item is not None else "")
        reason = step.reason if step.status is not StepStatus.PASS else ""
        lines.append(
            f"| {_cell(shown.host)} | {_cell(label)} | {status} | {_cell(expected)} | {_cell(measured)} "
            f"| {_cell(reason)} |"
        )
    return lines


def markdown(result: RunResult, masker: Masker, info: ReportInfo | None = None, charts: str = "") -> str:
    lines = [
        f"# sparkprov {result.mode.value}",
        "",
        f"Exit code: {result.exit_code()}",
        "",
        *(_md_times(info) if info is not None else []),
        "## Recap",
        "",
        "| host | ok | changed | failed | skipped | unreachable |",
        "|---|---|---|---|---|---|",
    ]
    for host, s in result.stats.items():
        lines.append(f"| {host} | {s.ok} | {s.changed} | {s.failures} | {s.skipped} | {s.unreachable} |")
    pending = result.pending
    if pending:
        lines += ["", "## Pending changes", ""]
        lines += [
            f"- `{r.host}` {r.name}: {r.items[0].msg if not r.task.no_log else 'hidden (no_log)'}"
            for r in pending
        ]
    failed = [
        r
        for p in result.plays
        for r in p.results
        if r.status in (Status.FAILED, Status.UNREACHABLE) and not r.ignored
    ]
    if failed:
        lines += ["", "## Failures", ""]
        lines += [
            f"- `{r.host}` {r.name} ({r.task.place}): {r.msg if not r.task.no_log else 'hidden'}"
            for r in failed
        ]
    lines += _verify_table(result)
    if info is not None:
        lines += _md_hosts(info) + _md_benchmarks(result) + _md_comparisons(info.comparisons)
    lines += [charts] if charts else []
    return masker.text("\n".join(lines) + "\n")


def _md_times(info: ReportInfo) -> list[str]:
    names = ("started_at", "finished_at", "generated_at")
    times = [f"{name.replace('_', ' ')} {getattr(info, name)}" for name in names if getattr(info, name)]
    return [f"sparkprov {__version__}; " + ", ".join(times), ""]


def _md_hosts(info: ReportInfo) -> list[str]:
    if not info.fingerprints:
        return []
    lines = ["", "## Hosts", "", "| host | hostname | GPU | driver | CUDA | kernel | memory | OS |"]
    lines.append("|---|---|---|---|---|---|---|---|")
    for host, f in info.fingerprints.items():
        if "error" in f:
            lines.append(f"| {_cell(host)} | not probed: {_cell(str(f['error']))} |  |  |  |  |  |  |")
            continue
        cells = [f.get("hostname"), f.get("gpu"), f.get("driver"), f.get("cuda"), f.get("kernel")]
        cells += [f"{f.get('memory_total_gib')} GiB", f"{f.get('os')} ({f.get('arch')})"]
        lines.append(f"| {_cell(host)} | " + " | ".join(_cell(str(c or "-")) for c in cells) + " |")
    return lines


def _stat(stats: dict[str, Any] | None) -> str:
    if not stats or stats.get("mean") is None:
        return "-"
    cached = " (cached!)" if stats.get("cached") else ""
    return f"{stats['mean']:.1f} ± {stats.get('stddev') or 0:.1f} (n={stats.get('n')}){cached}"


def _md_benchmarks(result: RunResult) -> list[str]:
    rows = []
    for verified in result.verify:
        models = verified.shown().step.measured.get("models")
        for model, entry in (models or {}).items() if isinstance(models, dict) else ():
            ceiling = (entry.get("ceiling") or {}).get("decode_tps")
            memory = entry.get("memory") or {}
            flags = [
                f"{k}: {v.get('flag')}" for k, v in (entry.get("verdicts") or {}).items() if v.get("flag")
            ]
            cells = [
                verified.host,
                verified.name,
                model,
                _stat(entry.get("prefill_tps")),
                _stat(entry.get("decode_tps")),
                "-" if ceiling is None else f"{ceiling:.1f}",
                "-" if entry.get("load_s") is None else f"{entry['load_s']:.2f}",
                "-" if not memory.get("size_bytes") else f"{memory['size_bytes'] / 1e9:.2f}",
                entry.get("verdict", "") + (f" ({'; '.join(flags)})" if flags else ""),
            ]
            rows.append("| " + " | ".join(_cell(str(c)) for c in cells) + " |")
    if not rows:
        return []
    header = "| host | step | model | prefill tok/s | decode tok/s | decode ceiling | load s | memory GB "
    return ["", "## Benchmarks", "", header + "| verdict |", "|---|---|---|---|---|---|---|---|---|", *rows]


def _md_comparisons(comparisons: dict[str, Any]) -> list[str]:
    lines = []
    fleet = comparisons.get("fleet") or {}
    outliers = [g for g in fleet.get("groups", []) if g["outliers"]]
    if fleet.get("groups"):
        lines += [
            "",
            "## Fleet",
            "",
            f"Hosts more than {fleet['outlier_percent']:g}% below the fleet median:",
        ]
        lines += [
            f"- {g['step']} / {g['model']} {g['metric']}: median {g['median']:g}; outliers: "
            + ", ".join(f"{h} ({g['hosts'][h]:g})" for h in g["outliers"])
            for g in outliers
        ] or ["- none"]
    baseline = comparisons.get("baseline")
    if baseline:
        lines += [
            "",
            "## Baseline",
            "",
            f"Compared with {baseline['path']} ({baseline['tolerance_percent']:g}%):",
        ]
        lines += [
            f"- {c['host']} {c['step']} / {c['model']} {c['metric']}: {c['measured']:g} vs {c['baseline']:g} "
            f"({c['change_percent']:+.1f}%){'' if c['ok'] else ' REGRESSION'}"
            for c in baseline["metrics"]
        ] or ["- nothing to compare"]
    return lines


def _md_charts(charts: list[Any], note: str) -> str:
    if note:
        return f"\n## Charts\n\n{note}\n"
    if not charts:
        return ""
    return "\n## Charts\n\n" + "\n\n".join(f"![{c.title}]({c.path})" for c in charts) + "\n"


def report_document(result: RunResult, info: ReportInfo, extra: dict[str, Any]) -> dict[str, Any]:
    """report.json: the `--format json` document plus the report's own keys (schemas/report.json)."""
    return {
        **json_document(result),
        "report_format": REPORT_FORMAT,
        "sparkprov_version": __version__,
        "generated_at": info.generated_at,
        "started_at": info.started_at,
        "finished_at": info.finished_at,
        "hosts": info.fingerprints,
        "comparisons": info.comparisons,
        **extra,
    }


def _benchy_files(directory: Path, result: RunResult, info: ReportInfo, masker: Masker) -> list[str]:
    from sparkprov.report.charts import slug
    from sparkprov.verify.llamabenchy import benchy_report

    written = []
    for verified in result.verify:
        shown = verified.shown()
        models = shown.step.measured.get("models")
        if shown.task.module != "ollama_bench" or not isinstance(models, dict):
            continue
        for model, entry in models.items():
            if entry.get("error"):
                continue
            document = benchy_report(model, entry, shown.step.details, info.finished_at or info.generated_at)
            name = f"llama-benchy/{slug(shown.host)}-{slug(shown.name)}-{slug(model)}.json"
            (directory / "llama-benchy").mkdir(exist_ok=True)
            _write(directory / name, json.dumps(masker.data(document), indent=2, default=str))
            written.append(name)
    return written


def write_reports(directory: Path, result: RunResult, masker: Masker, info: ReportInfo | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    if info is None:  # no fingerprints or times: the plain documents
        _write(directory / "report.json", render_json(result, masker))
        _write(directory / "junit.xml", junit_xml(result, masker))
        _write(directory / "report.md", markdown(result, masker))
        return
    from sparkprov.report.charts import write_charts

    charts, note = write_charts(directory, result, info.fingerprints, info.generated_at)
    benchy = _benchy_files(directory, result, info, masker)
    extra = {"charts": [vars(c) | {"hosts": list(c.hosts)} for c in charts], "llama_benchy": benchy}
    if note:
        extra["charts_note"] = note
    document = report_document(result, info, extra)
    _write(directory / "report.json", json.dumps(masker.data(document), indent=2, default=str))
    _write(directory / "junit.xml", junit_xml(result, masker, info))
    _write(directory / "report.md", markdown(result, masker, info, _md_charts(charts, note)))

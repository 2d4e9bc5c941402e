"""`--report DIR`: report.json, junit.xml and report.md for a run."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from sparkprov.executor.results import RunResult, Status, VerifyResult
from sparkprov.report.jsonout import render_json
from sparkprov.report.masking import Masker
from sparkprov.verify.base import StepStatus


def _write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def junit_xml(result: RunResult, masker: Masker) -> str:
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
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<testsuites>\n'
        + "\n".join([header, *cases])
        + ("\n  </testsuite>\n</testsuites>\n")
    )


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


def markdown(result: RunResult, masker: Masker) -> str:
    lines = [
        f"# sparkprov {result.mode.value}",
        "",
        f"Exit code: {result.exit_code()}",
        "",
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
    return masker.text("\n".join(lines) + "\n")


def write_reports(directory: Path, result: RunResult, masker: Masker) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    _write(directory / "report.json", render_json(result, masker))
    _write(directory / "junit.xml", junit_xml(result, masker))
    _write(directory / "report.md", markdown(result, masker))

"""`--report DIR`: report.json, junit.xml and report.md for a run."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from sparkprov.executor.results import RunResult, Status
from sparkprov.report.jsonout import render_json
from sparkprov.report.masking import Masker


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
    return masker.text("\n".join(lines) + "\n")


def write_reports(directory: Path, result: RunResult, masker: Masker) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    _write(directory / "report.json", render_json(result, masker))
    _write(directory / "junit.xml", junit_xml(result, masker))
    _write(directory / "report.md", markdown(result, masker))

"""`--report DIR` with benchmark results: report.json against schemas/report.json, fingerprints and
times in every file, charts (and the note without matplotlib), llama-benchy files; the fleet-outlier
and baseline comparisons on results of the ollama_bench step against the test Ollama server."""

from __future__ import annotations

import builtins
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from sparkprov.connection.local import LocalConnection
from sparkprov.errors import InputError, Place
from sparkprov.executor.results import HostStats, Mode, RunResult, VerifyResult
from sparkprov.playbook.model import Task
from sparkprov.playbook.templating import Scope
from sparkprov.report.baseline import Comparisons, load_baseline
from sparkprov.report.files import ReportInfo, write_reports
from sparkprov.report.fingerprint import collect_fingerprints, describe
from sparkprov.report.fleet import flag_outliers
from sparkprov.report.masking import Masker
from sparkprov.verify import get_step
from sparkprov.verify.base import StepContext, StepStatus
from tests.fakes.ollama_server import DEFAULT_CATALOGUE, CatalogueModel, FakeOllama

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "report.json").read_text())
MODEL = "llama3.2:3b"


def catalogue(decode_tps: float) -> tuple[CatalogueModel, ...]:
    return tuple(
        CatalogueModel(m.name, m.size, weights=m.weights, decode_tps=decode_tps) if m.name == MODEL else m
        for m in DEFAULT_CATALOGUE
    )


@pytest.fixture
def servers() -> Iterator[dict[str, FakeOllama]]:
    """h1 and h2 decode at 60 tok/s, h3 30% slower."""
    fakes = {h: FakeOllama(catalogue(speed)) for h, speed in (("h1", 60.0), ("h2", 60.0), ("h3", 42.0))}
    for fake in fakes.values():
        fake.start()
        fake.install(MODEL)
    try:
        yield fakes
    finally:
        for fake in fakes.values():
            fake.stop()


def bench(host: str, url: str, **expect: str) -> VerifyResult:
    task = Task(name="throughput", module="ollama_bench", args={}, place=Place("site.yml", 9, 7))
    ctx = StepContext(LocalConnection(host), None, Scope([{}]), sleep=lambda s: None)
    args = {"url": url, "models": [MODEL], "repetitions": 2, "device": "NVIDIA GB10", "expect": expect}
    return VerifyResult(task, host, "spark", "throughput", get_step("ollama_bench").run(args, ctx))


def run_of(*verified: VerifyResult) -> RunResult:
    return RunResult(Mode.VERIFY, stats={v.host: HostStats() for v in verified}, verify=list(verified))


def fleet_run(servers: dict[str, FakeOllama], **expect: str) -> RunResult:
    return run_of(*(bench(host, fake.url, **expect) for host, fake in servers.items()))


def by_host(result: RunResult) -> dict[str, VerifyResult]:
    return {v.host: v for v in result.verify}


def write(tmp_path: Path, result: RunResult, comparisons: dict[str, Any] | None = None) -> Path:
    fingerprints = collect_fingerprints(result, LocalConnection)
    info = ReportInfo(
        "2026-01-02T10:00:00+00:00", "2026-01-02T10:01:00+00:00", fingerprints, comparisons or {}
    )
    write_reports(tmp_path, result, Masker([]), info)
    return tmp_path


def test_fleet_outlier_fails_only_the_slow_host(servers: dict[str, FakeOllama]) -> None:
    flagged, findings = flag_outliers(fleet_run(servers), 15.0)
    hosts = by_host(flagged)
    assert [hosts[h].status for h in ("h1", "h2", "h3")] == [
        StepStatus.PASS,
        StepStatus.PASS,
        StepStatus.FAIL,
    ]
    verdict = hosts["h3"].step.verdicts[f"{MODEL} decode_tps vs fleet"]
    assert verdict.text == "42 is 30% below the fleet median 60: an outlier in the fleet"
    assert verdict.expected == ">= 51 (15% below the fleet median 60 of 3 hosts)"
    decode = next(f for f in findings if f["metric"] == "decode_tps")
    assert (decode["median"], decode["outliers"]) == (60.0, ["h3"])
    assert hosts["h3"].step.measured["models"][MODEL]["verdict"] == "fail"
    assert flag_outliers(fleet_run(servers), 0)[1] == []  # off


def test_two_hosts_are_no_fleet(servers: dict[str, FakeOllama]) -> None:
    result = run_of(bench("h1", servers["h1"].url), bench("h3", servers["h3"].url))
    flagged, findings = flag_outliers(result, 15.0)
    assert findings == [] and all(v.status is StepStatus.PASS for v in flagged.verify)


def test_baseline_regression_and_within_baseline(tmp_path: Path, servers: dict[str, FakeOllama]) -> None:
    old = write(tmp_path / "old", run_of(bench("h1", servers["h1"].url)))
    baseline = load_baseline(old / "report.json")
    assert baseline.lookup("h1", "throughput", MODEL, "decode_tps") == 60.0
    assert baseline.lookup("other", "throughput", MODEL, "decode_tps") == 60.0  # one reference machine
    slower = run_of(bench("h1", servers["h3"].url))  # the same host, now 30% slower
    comparisons = Comparisons(baseline, 10.0, 15.0)
    compared = comparisons.apply_to(slower)
    step = compared.verify[0].step
    assert step.status is StepStatus.FAIL
    verdict = step.verdicts[f"{MODEL} decode_tps vs baseline"]
    assert verdict.text == "42 is -30.0% against the baseline 60: a regression beyond the 10% tolerance"
    assert step.verdicts[f"{MODEL} prefill_tps vs baseline"].ok
    (regression,) = comparisons.findings["baseline"]["regressions"]
    assert (regression["metric"], regression["baseline"], regression["measured"]) == (
        "decode_tps",
        60.0,
        42.0,
    )
    tolerant = Comparisons(baseline, 35.0, 15.0).apply_to(run_of(bench("h1", servers["h3"].url)))
    assert tolerant.verify[0].status is StepStatus.PASS
    relative = run_of(bench("h1", servers["h3"].url, decode_tps="within 10% of baseline"))
    assert relative.verify[0].step.verdicts[f"{MODEL} decode_tps"].flag == "no baseline"
    judged = Comparisons(baseline, 50.0, 15.0).apply_to(relative).verify[0].step
    assert judged.verdicts[f"{MODEL} decode_tps"].text == "42 is not between 54 and 66 (baseline 60)"
    assert f"{MODEL} decode_tps vs baseline" not in judged.verdicts  # the written one replaces the check
    assert judged.status is StepStatus.FAIL


def test_baseline_that_is_not_a_report_is_invalid_input(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"verify": []}')
    with pytest.raises(InputError, match="no ollama_bench measurements"):
        load_baseline(tmp_path / "x.json")
    with pytest.raises(InputError, match="cannot read the baseline report"):
        load_baseline(tmp_path / "missing.json")


def test_report_files_of_a_fleet(tmp_path: Path, servers: dict[str, FakeOllama]) -> None:
    pytest.importorskip("matplotlib")
    comparisons = Comparisons(None, 10.0, 15.0)
    result = comparisons.apply_to(fleet_run(servers, decode_tps=">= 40"))
    out = write(tmp_path, result, comparisons.findings)
    document = json.loads((out / "report.json").read_text())
    jsonschema.Draft202012Validator(SCHEMA).validate(document)
    assert set(document["hosts"]) == {"h1", "h2", "h3"}
    assert document["hosts"]["h1"]["kernel"] and document["started_at"].startswith("2026-01-02")
    groups = {g["metric"]: g for g in document["comparisons"]["fleet"]["groups"]}
    assert (groups["decode_tps"]["outliers"], groups["prefill_tps"]["outliers"]) == (["h3"], [])
    assert document["exit_code"] == 1
    kinds = sorted(c["kind"] for c in document["charts"])
    assert kinds == ["fleet", "throughput", "throughput", "throughput"]
    for chart in document["charts"]:
        png = (out / chart["path"]).read_bytes()
        assert png.startswith(b"\x89PNG") and b"sparkprov" in png  # metadata: fingerprint and time
    assert len(document["llama_benchy"]) == 3
    benchy = json.loads((out / document["llama_benchy"][0]).read_text())
    assert benchy["model"] == MODEL and benchy["configuration"]["hostname"]
    junit = ET.parse(out / "junit.xml").getroot()
    properties = {p.get("name"): p.get("value") for p in junit.iter("property")}
    assert properties["started_at"] == "2026-01-02T10:00:00+00:00"
    assert properties["host.h2.kernel"] == document["hosts"]["h2"]["kernel"]
    markdown = (out / "report.md").read_text()
    assert "## Hosts" in markdown and describe(document["hosts"]["h1"]).split(":")[0] == "h1 (" + (
        document["hosts"]["h1"]["hostname"] + ")"
    )
    assert f"| h3 | throughput | {MODEL} | 2500.0 ± 0.0 (n=2) | 42.0 ± 0.0 (n=2) | 135.2 |" in markdown
    assert "- throughput / llama3.2:3b decode_tps: median 60; outliers: h3 (42)" in markdown
    assert "![throughput on h1](charts/throughput-h1-throughput.png)" in markdown


def test_without_matplotlib_a_note_instead_of_charts(
    tmp_path: Path, servers: dict[str, FakeOllama], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    out = write(tmp_path, run_of(bench("h1", servers["h1"].url)))
    document = json.loads((out / "report.json").read_text())
    jsonschema.Draft202012Validator(SCHEMA).validate(document)
    assert document["charts"] == [] and "matplotlib is not installed" in document["charts_note"]
    assert "pip install 'sparkprov[reports]'" in (out / "report.md").read_text()


def test_a_host_that_cannot_be_probed_is_named_in_the_report(tmp_path: Path) -> None:
    result = RunResult(Mode.APPLY, stats={"gone": HostStats(unreachable=1)})

    def refuse(host: str) -> Any:
        raise OSError(f"{host}: no route to host")

    fingerprints = collect_fingerprints(result, refuse)
    assert fingerprints == {"gone": {"host": "gone", "error": "gone: no route to host"}}
    write_reports(tmp_path, result, Masker([]), ReportInfo(fingerprints=fingerprints))
    jsonschema.Draft202012Validator(SCHEMA).validate(json.loads((tmp_path / "report.json").read_text()))
    assert "| gone | not probed: gone: no route to host |" in (tmp_path / "report.md").read_text()

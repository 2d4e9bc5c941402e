"""ollama_bench end to end through `python -m sparkprov`: a fleet of three local hosts, each with its
own test Ollama server (one 30% slower: the fleet outlier), the impossible-expectation flag, and a
baseline regression with `--baseline`; report.json checked against schemas/report.json. Then against
a real llama.cpp `llama-server` with the SmolLM2-135M GGUF (real tokens, real timings; slow)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from sparkprov.connection.local import LocalConnection
from sparkprov.playbook.templating import Scope
from sparkprov.verify import get_step
from sparkprov.verify.base import StepContext, StepStatus
from tests.cli import CliRun, sparkprov, write_text
from tests.fakes.ollama_server import DEFAULT_CATALOGUE, CatalogueModel, FakeOllama
from tests.infra.llama_server import LlamaServer

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "report.json").read_text())
MODEL = "llama3.2:3b"
BIG = CatalogueModel(
    "llama3.1:70b", 43_000_000_000, parameter_size="70.6B", prefill_tps=480.0, decode_tps=4.5
)
PLAYBOOK = """
- name: spark
  hosts: all
  gather_facts: false
  verify:
    - name: token throughput
      ollama_bench:
        url: "{{ bench_url }}"
        models: [MODELS]
        repetitions: 2
        prompt_tokens: 128
        gen_tokens: 16
        device: NVIDIA GB10
        expect: {decode_tps: "DECODE", prefill_tps: ">= 2000"}
"""


def catalogue(decode_tps: float) -> tuple[CatalogueModel, ...]:
    same = tuple(
        CatalogueModel(m.name, m.size, weights=m.weights, decode_tps=decode_tps) if m.name == MODEL else m
        for m in DEFAULT_CATALOGUE
    )
    return (*same, BIG)


@pytest.fixture
def servers() -> Iterator[dict[str, FakeOllama]]:
    fakes = {h: FakeOllama(catalogue(speed)) for h, speed in (("h1", 60.0), ("h2", 61.0), ("h3", 42.0))}
    for fake in fakes.values():
        fake.start()
        fake.install(MODEL, BIG.name)
    try:
        yield fakes
    finally:
        for fake in fakes.values():
            fake.stop()


def inventory(tmp_path: Path, urls: dict[str, str]) -> Path:
    hosts = {h: {"ansible_connection": "local", "bench_url": url} for h, url in urls.items()}
    path = tmp_path / "hosts.yml"
    path.write_text(json.dumps({"all": {"hosts": hosts}}))
    return path


def run(
    tmp_path: Path, urls: dict[str, str], *args: str, models: str = MODEL, decode: str = ">= 40"
) -> CliRun:
    book = write_text(tmp_path / "bench.yml", PLAYBOOK.replace("MODELS", models).replace("DECODE", decode))
    return sparkprov(
        "verify", book, "-i", inventory(tmp_path, urls), *args, home=tmp_path / "home", timeout=120
    )


def steps(out: CliRun) -> dict[str, dict[str, Any]]:
    return {entry["host"]: entry for entry in out.doc["verify"]}


def test_fleet_outlier_is_flagged_and_reported(tmp_path: Path, servers: dict[str, FakeOllama]) -> None:
    urls = {h: fake.url for h, fake in servers.items()}
    out = run(tmp_path, urls, "--format", "json", "--report", str(tmp_path / "report"))
    assert out.rc == 1, out
    found = steps(out)
    assert {h: e["status"] for h, e in found.items()} == {"h1": "pass", "h2": "pass", "h3": "fail"}
    assert found["h3"]["reason"] == (
        f"{MODEL} decode_tps vs fleet: expected >= 51 (15% below the fleet median 60 of 3 hosts), measured 42"
    )
    assert (
        "42 is 30% below the fleet median 60"
        in found["h3"]["verdicts"][f"{MODEL} decode_tps vs fleet"]["text"]
    )
    model = found["h1"]["measured"]["models"][MODEL]
    assert model["decode_tps"] == {"mean": 60.0, "stddev": 0.0, "n": 2}
    assert model["verdicts"]["decode_tps"]["ceiling_tps"] == pytest.approx(135.2, abs=0.1)
    document = json.loads((tmp_path / "report" / "report.json").read_text())
    jsonschema.Draft202012Validator(SCHEMA).validate(document)
    assert set(document["hosts"]) == {"h1", "h2", "h3"} and document["finished_at"]
    assert (tmp_path / "report" / "junit.xml").exists() and (tmp_path / "report" / "report.md").exists()


def test_impossible_expectation_passes_with_the_ceiling_in_the_output(
    tmp_path: Path, servers: dict[str, FakeOllama]
) -> None:
    out = run(tmp_path, {"h1": servers["h1"].url}, models=BIG.name, decode=">= 15")
    assert out.rc == 1, out  # prefill 480 < 2000 is a real miss...
    assert (
        "llama3.1:70b decode_tps: expected >= 15, measured 4.5 — impossible (ceiling 6.3 tok/s)" in out.stdout
    )
    assert "llama3.1:70b prefill_tps: expected >= 2000, measured 480" in out.stdout
    only_decode = write_text(
        tmp_path / "decode.yml",
        PLAYBOOK.replace("MODELS", BIG.name)
        .replace("DECODE", ">= 15")
        .replace(', prefill_tps: ">= 2000"', ""),
    )
    inv = inventory(tmp_path, {"h1": servers["h1"].url})
    passed = sparkprov("verify", only_decode, "-i", inv, "--format", "json", home=tmp_path / "home")
    assert passed.rc == 0, passed  # ...the impossible decode expectation is not
    verdict = passed.doc["verify"][0]["verdicts"]["llama3.1:70b decode_tps"]
    assert verdict["flag"] == "impossible" and verdict["text"].startswith("impossible (ceiling 6.3 tok/s)")


def test_baseline_regression_fails_the_run(tmp_path: Path, servers: dict[str, FakeOllama]) -> None:
    first = run(tmp_path, {"h1": servers["h1"].url}, "--report", str(tmp_path / "old"))
    assert first.rc == 0, first
    baseline = str(tmp_path / "old" / "report.json")
    slower = run(tmp_path, {"h1": servers["h3"].url}, "--format", "json", "--baseline", baseline)
    assert slower.rc == 1, slower
    (entry,) = slower.doc["verify"]
    verdict = entry["verdicts"][f"{MODEL} decode_tps vs baseline"]
    assert verdict["text"] == "42 is -30.0% against the baseline 60: a regression beyond the 10% tolerance"
    assert entry["verdicts"][f"{MODEL} decode_tps"]["ok"]  # still above its own threshold
    broken = run(tmp_path, {"h1": servers["h1"].url}, "--baseline", str(tmp_path / "missing.json"))
    assert broken.rc == 4 and "cannot read the baseline report" in broken.stderr


# ---------------------------------------------------------------- a real llama-server


@pytest.mark.slow
def test_real_llama_server_tokens_and_timings(llama_server: LlamaServer, tmp_path: Path) -> None:
    ctx = StepContext(LocalConnection(), None, Scope([{}]), sleep=lambda s: None)
    args = {
        "api": "llama.cpp",
        "url": llama_server.url,
        "prompt_tokens": 255,
        "gen_tokens": 64,
        "repetitions": 3,
        "bandwidth_gbs": 20,
        "expect": {"decode_tps": ">= 5", "prefill_tps": ">= 20", "memory_gb": "< 0.2"},
    }
    result = get_step("ollama_bench").run(args, ctx)
    (name,) = result.measured["models"]
    model = result.measured["models"][name]
    (tmp_path / "llama-server.json").write_text(json.dumps(model, indent=1))
    print(f"llama-server SmolLM2-135M: prefill {model['prefill_tps']}, decode {model['decode_tps']}")
    assert result.status is StepStatus.PASS, result.reason
    assert model["decode_tps"]["n"] == 3 and model["prefill_tps"]["stddev"] >= 0
    for sample in model["samples"]:
        assert sample["gen_tokens"] == 64  # ignore_eos: exactly n_predict
        assert 255 * 0.8 <= sample["prompt_tokens"] <= 255 * 1.2  # real tokenizer, calibrated prompt
    assert 5e7 < model["info"]["size_bytes"] <= llama_server.model.stat().st_size  # the GGUF's weights
    assert model["ceiling"]["decode_tps"] == pytest.approx(20e9 / model["info"]["size_bytes"], rel=1e-3)
    assert result.details["server"]["version"]

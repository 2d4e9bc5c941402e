"""The ollama_bench step against the test suite's Ollama API server (tests/fakes/ollama_server.py):
warm-up and load time, unique prompts and pinned options on the wire, mean ± stddev, memory from
/api/ps, the cache guard, the roofline's "impossible" flag, errors naming the URL, the llama-benchy
shape; and the fields the step reads, checked with the official `ollama` client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sparkprov.connection.local import LocalConnection
from sparkprov.playbook.templating import Scope
from sparkprov.verify import get_step
from sparkprov.verify.base import MetricVerdict, StepContext, StepResult, StepStatus
from sparkprov.verify.expect import IMPOSSIBLE
from sparkprov.verify.llamabenchy import benchy_report
from sparkprov.verify.ollama_bench import (
    BenchConfig,
    estimate_tokens,
    model_means,
    prompt_text,
    stats,
    with_verdict,
)
from tests.fakes.ollama_server import DEFAULT_CATALOGUE, CatalogueModel, FakeOllama, tokenize

LLAMA_70B = CatalogueModel(
    "llama3.1:70b", 43_000_000_000, parameter_size="70.6B", load_s=30.0, prefill_tps=480.0, decode_tps=4.5
)
CATALOGUE = (*DEFAULT_CATALOGUE, LLAMA_70B)


class CachingOllama(FakeOllama):
    """A server whose prompt cache answers every prompt but its last few tokens."""

    def _generate_events(self, *args: Any) -> Iterator[dict[str, Any]]:
        for event in super()._generate_events(*args):
            if event.get("done"):
                event = {**event, "prompt_eval_count": 3, "prompt_eval_duration": 1_000_000}
            yield event


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    with FakeOllama(CATALOGUE).running() as server:
        server.install("llama3.2:3b", "llama3.1:8b", "llama3.1:70b")
        yield server


def context() -> StepContext:
    return StepContext(LocalConnection(), None, Scope([{}]), sleep=lambda seconds: None)


def bench(url: str, **args: Any) -> StepResult:
    return get_step("ollama_bench").run(
        {"url": url, "repetitions": 3, "device": "NVIDIA GB10", **args}, context()
    )


def test_passes_with_mean_stddev_n_load_and_memory(ollama: FakeOllama) -> None:
    result = bench(
        ollama.url, models=["llama3.2:3b"], expect={"decode_tps": ">= 40", "prefill_tps": ">= 2000"}
    )
    assert result.status is StepStatus.PASS, result.reason
    model = result.measured["models"]["llama3.2:3b"]
    assert model["decode_tps"] == {"mean": 95.0, "stddev": 0.0, "n": 3}
    assert model["prefill_tps"] == {"mean": 2500.0, "stddev": 0.0, "n": 3}
    assert model["load_s"] == 1.5 and model["cold_load"] is True  # the catalogue's load time, once
    assert model["memory"]["size_bytes"] == model["info"]["size_bytes"] > 2e9
    assert model["verdict"] == "pass"
    assert model["verdicts"]["decode_tps"]["ceiling_tps"] == pytest.approx(135.2, abs=0.1)
    assert model["ceiling"]["device"] == "NVIDIA GB10"
    assert result.verdicts["llama3.2:3b decode_tps"].text == "95 >= 40"
    assert result.details["fingerprint"]["hostname"]
    assert result.details["config"]["num_ctx"] == 4096


def test_wire_warm_up_unique_prompts_and_pinned_options(ollama: FakeOllama) -> None:
    bench(ollama.url, models=["llama3.2:3b"], prompt_tokens=200, gen_tokens=16, num_ctx=2048, seed=7)
    generates = [r.body for r in ollama.requests() if r.path == "/api/generate"]
    unload, warm_up, *measured, unload_again = generates
    assert unload == {"model": "llama3.2:3b", "keep_alive": 0}
    assert unload_again == unload
    assert len(measured) == 3
    for body in [warm_up, *measured]:
        assert body["raw"] is True and body["stream"] is False
        assert body["options"]["num_ctx"] == 2048
        assert body["options"]["seed"] == 7
        assert body["options"]["temperature"] == 0.0
        assert len(tokenize(body["prompt"])) == 200
    assert [b["options"]["num_predict"] for b in measured] == [16, 16, 16]
    starts = {tuple(tokenize(b["prompt"])[:3]) for b in [warm_up, *measured]}
    assert len(starts) == 4, "every prompt starts differently: no cached prefix"


def test_fails_below_expectation_with_expected_vs_measured(ollama: FakeOllama) -> None:
    result = bench(ollama.url, models=["llama3.1:8b"], expect={"decode_tps": ">= 50"})
    assert result.status is StepStatus.FAIL
    assert result.reason == "llama3.1:8b decode_tps: expected >= 50, measured 42"
    assert result.measured["models"]["llama3.1:8b"]["verdict"] == "fail"


def test_cache_guard_fails_a_measurement_served_from_the_prompt_cache() -> None:
    with CachingOllama(CATALOGUE).running() as server:
        server.install("llama3.2:3b")
        result = bench(server.url, models=["llama3.2:3b"], expect={"decode_tps": ">= 40"})
    assert result.status is StepStatus.FAIL
    guard = result.verdicts["llama3.2:3b prompt_eval_count"]
    assert not guard.ok and guard.measured == 3
    assert "answered from its prompt cache" in guard.text and "~512 tokens" in guard.text
    model = result.measured["models"]["llama3.2:3b"]
    assert model["prefill_tps"]["cached"] is True
    assert model["decode_tps"]["mean"] == 95.0  # decode is still real
    assert result.verdicts["llama3.2:3b decode_tps"].ok


def test_expectation_above_the_roofline_is_impossible_not_a_failure(ollama: FakeOllama) -> None:
    result = bench(ollama.url, models=["llama3.1:70b"], expect={"decode_tps": ">= 15"})
    assert result.status is StepStatus.PASS, result.reason
    verdict = result.verdicts["llama3.1:70b decode_tps"]
    assert (verdict.ok, verdict.flag) == (True, IMPOSSIBLE)
    assert verdict.text.startswith("impossible (ceiling 6.3 tok/s)")
    assert "impossible (ceiling 6.3 tok/s)" in result.summary()
    entry = result.measured["models"]["llama3.1:70b"]["verdicts"]["decode_tps"]
    assert entry["flag"] == "impossible" and entry["ceiling_tps"] == pytest.approx(6.35, abs=0.01)


def test_per_model_expectations_win_and_roofline_fractions(ollama: FakeOllama) -> None:
    models = ["llama3.2:3b", {"name": "llama3.1:70b", "expect": {"decode_tps": ">= 70% of roofline"}}]
    result = bench(ollama.url, models=models, expect={"decode_tps": ">= 40"})
    assert result.status is StepStatus.PASS, result.reason
    assert result.verdicts["llama3.1:70b decode_tps"].text == "4.5 >= 4.444 (70% of the ceiling 6.349)"


def test_without_a_known_gpu_there_is_no_ceiling(ollama: FakeOllama) -> None:
    args = {
        "url": ollama.url,
        "models": ["llama3.1:70b"],
        "repetitions": 1,
        "expect": {"decode_tps": ">= 15"},
    }
    result = get_step("ollama_bench").run(args, context())
    assert result.status is StepStatus.FAIL  # nothing says 15 is impossible on an unknown device
    assert "set 'device' or 'bandwidth_gbs'" in result.details["roofline"]
    given = get_step("ollama_bench").run({**args, "bandwidth_gbs": 273}, context())
    assert given.status is StepStatus.PASS


def test_missing_model_and_unreachable_server_name_what_and_where(ollama: FakeOllama) -> None:
    result = bench(ollama.url, models=["nope:1b", "llama3.2:3b"])
    assert result.status is StepStatus.FAIL
    assert result.reason.startswith("nope:1b measurement: expected a measurement, measured \"model 'nope:1b'")
    assert f"not on the Ollama server at {ollama.url}" in result.reason
    assert result.measured["models"]["llama3.2:3b"]["verdict"] == "pass"
    down = bench("http://127.0.0.1:9", models=["llama3.2:3b"])
    assert down.status is StepStatus.FAIL
    assert down.reason == "cannot reach the Ollama API at http://127.0.0.1:9: ConnectionError"


def test_url_defaults_to_ollama_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "0.0.0.0:11500")
    assert BenchConfig.from_args({"models": ["x"]}, context()).url == "http://127.0.0.1:11500"
    monkeypatch.delenv("OLLAMA_HOST")
    assert BenchConfig.from_args({"models": ["x"]}, context()).url == "http://127.0.0.1:11434"
    llama = BenchConfig.from_args({"api": "llama.cpp"}, context())
    assert llama.url == "http://127.0.0.1:8080"


def test_prompts_have_the_asked_size_and_stats() -> None:
    text = prompt_text("abc", 300)
    assert estimate_tokens(text) == 300 == len(tokenize(text))
    assert prompt_text("abc", 300) == text and prompt_text("abd", 300)[:12] != text[:12]
    assert stats([10.0, 12.0, 14.0]) == {"mean": 12.0, "stddev": 2.0, "n": 3}
    assert stats([]) == {"mean": None, "stddev": None, "n": 0}


def test_expectation_problems_of_models_are_found_before_a_run() -> None:
    problems = get_step("ollama_bench").expectation_problems(
        {"models": [{"name": "m", "expect": {"decode_tps": "=> 3"}}], "expect": {"prefill_tps": "within x"}}
    )
    assert [path for path, _ in problems] == [
        ["expect", "prefill_tps"],
        ["models", "0", "expect", "decode_tps"],
    ]


def test_extra_verdicts_fail_the_step_and_the_model(ollama: FakeOllama) -> None:
    result = bench(ollama.url, models=["llama3.2:3b"])
    assert model_means(result) == {"llama3.2:3b": {"prefill_tps": 2500.0, "decode_tps": 95.0}}
    slower = with_verdict(
        result, "llama3.2:3b", "decode_tps vs fleet", MetricVerdict(">= 100", 95.0, False, "x")
    )
    assert slower.status is StepStatus.FAIL
    assert slower.measured["models"]["llama3.2:3b"]["verdict"] == "fail"
    assert result.status is StepStatus.PASS  # the original is left as it was


def test_llama_benchy_shape(ollama: FakeOllama) -> None:
    result = bench(ollama.url, models=["llama3.1:8b"], prompt_tokens=256, gen_tokens=32)
    report = benchy_report(
        "llama3.1:8b", result.measured["models"]["llama3.1:8b"], result.details, "2026-01-02T17:11:19+00:00"
    )
    # llama-benchy's schemas/benchmark_report_schema.json: required keys and types
    required = ["version", "timestamp", "latency_mode", "latency_ms", "model", "prefix_caching_enabled"]
    assert {*required, "max_concurrency", "benchmarks"} <= set(report)
    assert isinstance(report["latency_ms"], float) and report["prefix_caching_enabled"] is False
    (run,) = report["benchmarks"]
    assert {k: run[k] for k in ("concurrency", "context_size", "prompt_size", "response_size")} == {
        "concurrency": 1,
        "context_size": 0,
        "prompt_size": 256,
        "response_size": 32,
    }
    assert run["is_context_prefill_phase"] is False
    assert run["tg_throughput"] == {"mean": 42.0, "std": 0.0, "values": [42.0, 42.0, 42.0]}
    assert run["pp_req_throughput"] == run["pp_throughput"] and run["ttfr"] is None
    assert run["est_ppt"]["mean"] == pytest.approx(256 / 2500 * 1000, rel=0.01)
    config = report["configuration"]
    assert config["model_digest"] == result.measured["models"]["llama3.1:8b"]["info"]["digest"]
    assert config["kernel"] and config["options"]["seed"] == 42 and config["server"]["version"]


def test_the_fields_the_step_reads_with_the_official_client(ollama: FakeOllama) -> None:
    client = pytest.importorskip("ollama").Client(host=ollama.url)
    options = {"num_ctx": 2048, "num_predict": 8, "temperature": 0, "seed": 1}
    prompt = prompt_text("official", 64)
    first = client.generate(model="llama3.2:3b", prompt=prompt, raw=True, options=options)
    assert first.load_duration and first.load_duration > 1e9  # first use loads the model
    assert (first.prompt_eval_count, first.eval_count) == (64, 8)
    assert first.prompt_eval_duration and first.eval_duration
    again = client.generate(model="llama3.2:3b", prompt=prompt, raw=True, options=options)
    assert again.prompt_eval_count is not None and again.prompt_eval_count < 64 // 2  # what the guard catches
    ps = client.ps()
    assert [m.model for m in ps.models] == ["llama3.2:3b"] and ps.models[0].size

"""ollama_bench results in llama-benchy's result shape, the format the Spark community compares in.

llama-benchy (github.com/eugr/llama-benchy) writes one `BenchmarkReport` per model (its
`schemas/benchmark_report_schema.json`): `version`, `timestamp`, `latency_mode`, `latency_ms`, `model`,
`prefix_caching_enabled`, `max_concurrency` and `benchmarks[]` of `BenchmarkRun` (`concurrency`,
`context_size`, `prompt_size`, `response_size`, `is_context_prefill_phase`, and metrics
`pp_throughput`/`pp_req_throughput`/`tg_throughput`/`tg_req_throughput`/`peak_throughput`/
`peak_req_throughput`/`ttfr`/`est_ppt`/`e2e_ttft`, each `{mean, std, values}` or null; times in ms).

Mapping: one run at concurrency 1 and depth 0; pp/tg throughput are the server's own timings
(prompt_eval_count / prompt_eval_duration, eval_count / eval_duration), so `latency_mode` is "none"
(nothing to subtract) and the per-request metrics equal the totals; `est_ppt` is the server's prompt
time in ms; ttfr, e2e_ttft and the peaks are not measured (null). `std` is the population standard
deviation, as llama-benchy computes it (numpy's default). llama-benchy's schema allows extra keys: the run's
configuration (host fingerprint: driver, kernel...; server; image and model digests; options) is under
`configuration`.
"""

from __future__ import annotations

import statistics
from typing import Any

from sparkprov import __version__


def _metric(values: list[float], scale: float = 1.0) -> dict[str, Any] | None:
    scaled = [v * scale for v in values if v is not None]
    if not scaled:
        return None
    return {"mean": statistics.fmean(scaled), "std": statistics.pstdev(scaled), "values": scaled}


def benchy_report(
    model: str, entry: dict[str, Any], details: dict[str, Any], timestamp: str
) -> dict[str, Any]:
    """One model's ollama_bench entry (`measured.models[model]`) and the step's details, as a
    llama-benchy BenchmarkReport."""
    config = details.get("config") or {}
    samples = entry.get("samples") or []
    prefill = [] if entry.get("prefill_tps", {}).get("cached") else [s.get("prefill_tps") for s in samples]
    pp = _metric(prefill)
    tg = _metric([s.get("decode_tps") for s in samples])
    run = {
        "concurrency": 1,
        "context_size": 0,
        "prompt_size": int(config.get("prompt_tokens") or 0),
        "response_size": int(config.get("gen_tokens") or 0),
        "is_context_prefill_phase": False,
        "pp_throughput": pp,
        "pp_req_throughput": pp,
        "tg_throughput": tg,
        "tg_req_throughput": tg,
        "peak_throughput": None,
        "peak_req_throughput": None,
        "ttfr": None,
        "est_ppt": _metric([s.get("prompt_s") for s in samples], 1000.0) if pp else None,
        "e2e_ttft": None,
    }
    return {
        "version": f"sparkprov {__version__}",
        "timestamp": timestamp,
        "latency_mode": "none",
        "latency_ms": 0.0,
        "model": model,
        "prefix_caching_enabled": False,
        "max_concurrency": 1,
        "benchmarks": [run],
        "configuration": configuration(entry, details),
    }


def configuration(entry: dict[str, Any], details: dict[str, Any]) -> dict[str, Any]:
    """What the numbers were measured with: host, driver, kernel, server, image and model digests, options."""
    fingerprint = details.get("fingerprint") or {}
    info = entry.get("info") or {}
    return {
        "host": fingerprint.get("host"),
        "hostname": fingerprint.get("hostname"),
        "gpu": fingerprint.get("gpu"),
        "driver": fingerprint.get("driver"),
        "cuda": fingerprint.get("cuda"),
        "kernel": fingerprint.get("kernel"),
        "os": fingerprint.get("os"),
        "memory_total_gib": fingerprint.get("memory_total_gib"),
        "server": details.get("server"),
        "image": details.get("image"),
        "model_digest": info.get("digest"),
        "model_bytes": info.get("size_bytes"),
        "quantization": (info.get("details") or {}).get("quantization_level"),
        "options": details.get("config"),
        "load_s": entry.get("load_s"),
        "ceiling_decode_tps": (entry.get("ceiling") or {}).get("decode_tps"),
    }

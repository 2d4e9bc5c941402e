"""`ollama_bench`: prefill and decode tok/s per model, measured so that the numbers mean something.

    - name: token throughput
      ollama_bench:
        url: http://127.0.0.1:11434     # default: $OLLAMA_HOST, else this (llama.cpp: :8080)
        api: ollama                     # or llama.cpp (llama-server's /completion timings)
        models: [llama3.2:3b, {name: llama3.1:70b, expect: {decode_tps: ">= 70% of roofline"}}]
        prompt_tokens: 512
        gen_tokens: 128
        repetitions: 5
        num_ctx: 4096
        seed: 42
        expect: {decode_tps: ">= 40", prefill_tps: ">= 2000"}

Requests go FROM THE CONTROLLER to `url` (like the `http` step). Per model, spark-facts.md's
benchmark pitfalls are avoided:
- warm-up: the model is unloaded (`unload: true`, Ollama only) and loaded by one warm-up generation;
  its `load_duration` is `load_s`, reported apart from throughput. The warm-up also calibrates how many
  words make `prompt_tokens` tokens.
- unique prompts: every prompt starts with a fresh nonce and its words are drawn from it, so no prompt
  shares a prefix with an earlier one; llama.cpp also gets `cache_prompt: false`. The cache guard fails
  the measurement when the server evaluated far fewer prompt tokens than the prompt has
  (`prompt_eval_count` below `min_prompt_fraction` of it): the prefill rate would be fake.
- pinned options: `num_ctx`, `temperature`, `seed`, `num_predict` (= gen_tokens); `raw` prompts.
- N repetitions, reported as mean, stddev (sample) and n; model memory from `/api/ps`.

Metrics per model (`expect:` at the step, or per model, which wins): `prefill_tps`, `decode_tps`,
`load_s`, `memory_gb`. Expectations may be absolute (">= 40"), relative to the baseline report
("within 10% of baseline", judged when `--baseline` is given) or to the roofline (">= 70% of
roofline"). Decode is held against its roofline ceiling (sparkprov/verify/roofline.py: the device's
memory bandwidth / the model's bytes; the device from the host's GPU, or `device`/`bandwidth_gbs`): an
expectation above the ceiling is flagged "impossible (ceiling 6.3 tok/s)" and does not fail the host.

Measured (also in `--format json`): `models.<name>` with `prefill_tps` and `decode_tps` as
`{mean, stddev, n}`, `load_s`, `memory`, `ceiling`, `samples`, `verdicts` (each with its expected value;
decode with `ceiling_tps`) and `verdict`; details: the host fingerprint, the server, the options.
"""

from __future__ import annotations

import json
import os
import random
import re
import statistics
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from sparkprov.connection.base import CommandTimeout
from sparkprov.modules._ollama_api import api_url
from sparkprov.playbook.templating import contains_template
from sparkprov.report.fingerprint import probe
from sparkprov.verify import roofline
from sparkprov.verify._bench_api import BenchError, GenOptions, Memory, ModelInfo, Sample, server_api
from sparkprov.verify.base import MetricVerdict, Step, StepContext, StepResult, StepStatus
from sparkprov.verify.expect import (
    Expectation,
    ExpectationError,
    References,
    evaluate_against,
    not_measured,
)

DEFAULT_LLAMA_CPP_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT_S = 600.0
METRICS = ("prefill_tps", "decode_tps", "load_s", "memory_gb")
THROUGHPUT = ("prefill_tps", "decode_tps")
TOKEN = re.compile(r"\w+|[^\w\s]")
# Common words, so that a word is about one token for the usual tokenizers.
_WORD_LIST = (
    "the of and to in is that it for was on are as with his they at be this from have or by one had not "
    "but what all were when we there can an your which their said if do will each about how up out them "
    "then she many some so these would other into has more her two like him see time could no make than "
    "first been its who now people my made over did down only way find use may water long little very "
    "after words called just where most know get through back much before go good new write our used me "
    "man too any day same right look think also around another came come work three word must because "
    "does part even place well such here take why things help put years different away again off went "
    "old number great tell men say small every found still between name should home big give air line "
    "set own under read last never us left end along while might next sound below saw something thought "
    "both few those always looked show large often together asked house don world going want school"
)
_WORDS = tuple(_WORD_LIST.split())


@dataclass(frozen=True)
class ModelSpec:
    name: str
    expect: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BenchConfig:
    api: str
    url: str
    models: tuple[ModelSpec, ...]
    prompt_tokens: int = 512
    gen_tokens: int = 128
    repetitions: int = 5
    num_ctx: int = 4096
    seed: int = 42
    temperature: float = 0.0
    keep_alive: str | int | None = None
    unload: bool = True
    min_prompt_fraction: float = 0.5
    timeout: float = DEFAULT_TIMEOUT_S
    device: str | None = None
    bandwidth_gbs: float | None = None

    @classmethod
    def from_args(cls, args: dict[str, Any], ctx: StepContext) -> BenchConfig:
        api = str(args.get("api", "ollama"))
        given = args.get("url") or (
            ctx.environment.get("OLLAMA_HOST") or os.environ.get("OLLAMA_HOST") if api == "ollama" else None
        )
        url = api_url(given) if api == "ollama" else str(given or DEFAULT_LLAMA_CPP_URL).rstrip("/")
        models = tuple(_spec(entry) for entry in args.get("models") or ())
        fixed = ("api", "url", "models")
        known = {k: args[k] for k in cls.__dataclass_fields__ if k in args and k not in fixed}
        timeout = float(args.get("timeout") or ctx.timeout or DEFAULT_TIMEOUT_S)
        return cls(**{**known, "api": api, "url": url, "models": models, "timeout": timeout})

    def options(self, gen_tokens: int) -> GenOptions:
        return GenOptions(gen_tokens, self.num_ctx, self.temperature, self.seed, self.keep_alive)

    def as_dict(self) -> dict[str, Any]:
        return {
            "api": self.api,
            "url": self.url,
            "prompt_tokens": self.prompt_tokens,
            "gen_tokens": self.gen_tokens,
            "repetitions": self.repetitions,
            "num_ctx": self.num_ctx,
            "seed": self.seed,
            "temperature": self.temperature,
            "keep_alive": self.keep_alive,
            "unload": self.unload,
            "min_prompt_fraction": self.min_prompt_fraction,
        }


def _spec(entry: Any) -> ModelSpec:
    if isinstance(entry, dict):
        return ModelSpec(str(entry["name"]), dict(entry.get("expect") or {}))
    return ModelSpec(str(entry))


# ---------------------------------------------------------------- prompts


def prompt_text(nonce: str, tokens: int) -> str:
    """A prompt of `tokens` estimated tokens that shares no prefix with any other nonce's prompt."""
    chooser = random.Random(nonce)
    text = f"Run {nonce}:"
    count = estimate_tokens(text)
    while count < tokens:
        sentence_end = count % 13 == 12 and count + 2 <= tokens
        text += f" {chooser.choice(_WORDS)}" + ("." if sentence_end else "")
        count += 2 if sentence_end else 1
    return text


def estimate_tokens(text: str) -> int:
    """Words and punctuation marks: close to what the usual tokenizers make of `prompt_text`."""
    return len(TOKEN.findall(text))


@dataclass
class Calibration:
    """Server tokens per estimated token, learnt from the warm-up (1.0 until then)."""

    ratio: float = 1.0

    def learn(self, estimated: int, counted: int) -> None:
        ratio = counted / estimated if estimated else 0.0
        if 0.5 <= ratio <= 4.0:  # outside: the warm-up was served from a cache, or is nonsense
            self.ratio = ratio

    def estimated_for(self, tokens: int) -> int:
        """How many estimated tokens make `tokens` server tokens."""
        return max(8, round(tokens / self.ratio))


# ---------------------------------------------------------------- measuring one model


@dataclass
class ModelRun:
    spec: ModelSpec
    info: ModelInfo | None = None
    samples: list[Sample] = field(default_factory=list)
    load_s: float | None = None
    cold: bool = False
    memory: Memory | None = None
    cached: list[str] = field(default_factory=list)  # the cache guard's findings, per repetition
    error: str = ""  # why the model could not be measured at all
    prompt_tokens_min: int | None = None  # the fewest prompt tokens the server evaluated
    prompt_tokens_expected: float | None = None  # what the prompt has, in the server's tokens
    prompt_tokens_floor: float | None = None  # the cache guard's threshold


def measure(api: Any, spec: ModelSpec, config: BenchConfig) -> ModelRun:
    run = ModelRun(spec)
    try:
        run.info = api.model(spec.name)
        run.cold = bool(config.unload and api.unload(spec.name))
        calibration = Calibration()
        warm_up, estimated = _generate(api, spec.name, config, calibration, min(config.gen_tokens, 32))
        calibration.learn(estimated, warm_up.prompt_tokens)
        run.load_s = warm_up.load_s
        for repetition in range(1, config.repetitions + 1):
            sample, estimated = _generate(api, spec.name, config, calibration, config.gen_tokens)
            run.samples.append(sample)
            _guard(run, repetition, sample, estimated * calibration.ratio, config)
        run.memory = api.memory(spec.name, run.info)
        if run.cold:
            api.unload(spec.name)
    except BenchError as exc:
        run.error = str(exc)
    return run


def _generate(
    api: Any, name: str, config: BenchConfig, calibration: Calibration, gen_tokens: int
) -> tuple[Sample, int]:
    text = prompt_text(uuid.uuid4().hex[:12], calibration.estimated_for(config.prompt_tokens))
    return api.generate(name, text, config.options(gen_tokens)), estimate_tokens(text)


def _guard(run: ModelRun, repetition: int, sample: Sample, expected: float, config: BenchConfig) -> None:
    """The cache guard: a prompt the server evaluated only in part was (partly) served from its cache."""
    run.prompt_tokens_min = min(sample.prompt_tokens, run.prompt_tokens_min or sample.prompt_tokens)
    run.prompt_tokens_expected = expected
    run.prompt_tokens_floor = config.min_prompt_fraction * expected
    if sample.prompt_tokens < run.prompt_tokens_floor:
        run.cached.append(f"repetition {repetition}: {sample.prompt_tokens} of ~{expected:.0f}")


# ---------------------------------------------------------------- judging one model


def stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"mean": None, "stddev": None, "n": 0}
    stddev = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": round(statistics.fmean(values), 3), "stddev": round(stddev, 3), "n": len(values)}


def _values(samples: list[Sample], metric: str) -> list[float]:
    found = (s.prefill_tps if metric == "prefill_tps" else s.decode_tps for s in samples)
    return [v for v in found if v is not None]


def _measured(run: ModelRun) -> dict[str, Any]:
    measured: dict[str, Any] = {m: stats(_values(run.samples, m))["mean"] for m in THROUGHPUT}
    if run.cached:
        measured["prefill_tps"] = None  # what was measured is the cache, not the prefill
    measured["load_s"] = None if run.load_s is None else round(run.load_s, 3)
    measured["memory_gb"] = None if run.memory is None else round(run.memory.size_bytes / roofline.GB, 3)
    return measured


def _ceiling(run: ModelRun, device: roofline.Device | None) -> roofline.Ceiling | None:
    if device is None or run.info is None or not run.info.size_bytes:
        return None
    return roofline.decode_ceiling(
        device, run.info.size_bytes, experts=run.info.experts, experts_used=run.info.experts_used
    )


def _refs(metric: str, ceiling: roofline.Ceiling | None) -> References:
    if metric == "decode_tps" and ceiling is not None:
        return References(ceiling=ceiling.decode_tps, ceiling_why=ceiling.why, unit="tok/s")
    return References()


def model_verdicts(
    run: ModelRun, expectations: dict[str, Expectation], ceiling: roofline.Ceiling | None
) -> dict[str, MetricVerdict]:
    """Verdicts of one model: the measurement itself, then each expected metric."""
    if run.error:
        return {"measurement": MetricVerdict("a measurement", run.error, False, run.error)}
    verdicts: dict[str, MetricVerdict] = {}
    if run.cached:
        verdicts["prompt_eval_count"] = _cache_verdict(run)
    measured = _measured(run)
    for metric, expectation in expectations.items():
        value = measured.get(metric)
        if value is None:
            verdict = not_measured(expectation)
            verdicts[metric] = MetricVerdict(expectation.text, None, False, verdict.text)
            continue
        found = evaluate_against(expectation, value, _refs(metric, ceiling))
        verdicts[metric] = MetricVerdict(expectation.text, value, found.ok, found.text, found.flag)
    return verdicts


def _cache_verdict(run: ModelRun) -> MetricVerdict:
    expected, floor = run.prompt_tokens_expected or 0, run.prompt_tokens_floor or 0
    text = (
        f"prompt_eval_count far below the prompt's ~{expected:.0f} tokens ({'; '.join(run.cached)}): "
        "the server answered from its prompt cache, so the prefill rate would be fake"
    )
    return MetricVerdict(
        f">= {floor:.0f} (of the prompt's ~{expected:.0f})", run.prompt_tokens_min, False, text
    )


def model_entry(
    run: ModelRun, verdicts: dict[str, MetricVerdict], ceiling: roofline.Ceiling | None
) -> dict[str, Any]:
    """The JSON of one model (DESIGN.md: prefill/decode as {mean, stddev, n}, load_s, the verdicts)."""
    entry: dict[str, Any] = {
        "model": run.spec.name,
        "verdict": "pass" if all(v.ok for v in verdicts.values()) else "fail",
        "prefill_tps": stats(_values(run.samples, "prefill_tps")),
        "decode_tps": stats(_values(run.samples, "decode_tps")),
        "load_s": _measured(run)["load_s"],
        "cold_load": run.cold,
        "memory": None if run.memory is None else vars(run.memory),
        "ceiling": None if ceiling is None else ceiling.as_dict(),
        "info": None if run.info is None else vars(run.info),
        "samples": [_sample(s) for s in run.samples],
        "verdicts": {metric: _verdict_entry(metric, v, ceiling) for metric, v in verdicts.items()},
    }
    if run.cached:
        entry["prefill_tps"]["cached"] = True
    if run.error:
        entry["error"] = run.error
    return entry


def _sample(sample: Sample) -> dict[str, Any]:
    return {
        "prompt_tokens": sample.prompt_tokens,
        "prompt_s": round(sample.prompt_s, 6),
        "prefill_tps": None if sample.prefill_tps is None else round(sample.prefill_tps, 3),
        "gen_tokens": sample.gen_tokens,
        "gen_s": round(sample.gen_s, 6),
        "decode_tps": None if sample.decode_tps is None else round(sample.decode_tps, 3),
        "wall_s": round(sample.wall_s, 3),
    }


def _verdict_entry(metric: str, verdict: MetricVerdict, ceiling: roofline.Ceiling | None) -> dict[str, Any]:
    entry = verdict.as_dict()
    if metric == "decode_tps" and ceiling is not None:
        entry["ceiling_tps"] = round(ceiling.decode_tps, 2)
    return entry


# ---------------------------------------------------------------- the step


class OllamaBenchStep(Step):
    name = "ollama_bench"

    def expectations_for(self, args: dict[str, Any], spec: ModelSpec) -> dict[str, Expectation]:
        written = {**(args.get("expect") or {}), **spec.expect}
        return {key: self.parse(key, value) for key, value in written.items()}

    def expectation_problems(self, args: dict[str, Any]) -> list[tuple[list[str], str]]:
        problems = super().expectation_problems(args)
        for index, entry in enumerate(args.get("models") or []):
            if isinstance(entry, dict):
                for key, value in (entry.get("expect") or {}).items():
                    if contains_template(value):
                        continue
                    try:
                        self.parse(str(key), value)
                    except ExpectationError as exc:
                        problems.append((["models", str(index), "expect", str(key)], str(exc)))
        return problems

    def run(self, args: dict[str, Any], ctx: StepContext) -> StepResult:
        config = BenchConfig.from_args(args, ctx)
        fingerprint = probe(ctx.host, ctx.conn)
        device = self._device(config, fingerprint)
        api = server_api(config.api, config.url, config.timeout)
        try:
            server = api.server()
            specs = config.models or tuple(ModelSpec(n) for n in getattr(api, "served", list)())
        except BenchError as exc:
            return StepResult.fail(str(exc), fingerprint=fingerprint, config=config.as_dict())
        if not specs:
            return StepResult.fail(f"no models to benchmark: list them in 'models' ({config.url})")
        details: dict[str, Any] = {
            "fingerprint": fingerprint,
            "server": server,
            "image": image_digest(ctx, args["image"]) if args.get("image") else None,
            "config": config.as_dict(),
            "device": None if device is None else vars(device),
        }
        if device is None:
            details["roofline"] = "unknown: no known GPU on the host; set 'device' or 'bandwidth_gbs'"
        return self._result(args, config, api, specs, device, details)

    @staticmethod
    def _device(config: BenchConfig, fingerprint: dict[str, Any]) -> roofline.Device | None:
        if config.bandwidth_gbs:
            return roofline.custom_device(config.bandwidth_gbs)
        return roofline.device_for(config.device or fingerprint.get("gpu"))

    def _result(
        self,
        args: dict[str, Any],
        config: BenchConfig,
        api: Any,
        specs: tuple[ModelSpec, ...],
        device: roofline.Device | None,
        details: dict[str, Any],
    ) -> StepResult:
        models: dict[str, Any] = {}
        verdicts: dict[str, MetricVerdict] = {}
        for spec in specs:
            run = measure(api, spec, config)
            ceiling = _ceiling(run, device)
            found = model_verdicts(run, self.expectations_for(args, spec), ceiling)
            models[spec.name] = model_entry(run, found, ceiling)
            verdicts.update({f"{spec.name} {metric}": v for metric, v in found.items()})
        result = StepResult(
            StepStatus.PASS,
            measured={"models": models},
            expected={k: self.parse(k, v).text for k, v in (args.get("expect") or {}).items()},
            verdicts=verdicts,
            details=details,
        )
        return with_status(result)


def image_digest(ctx: StepContext, image: str) -> dict[str, Any]:
    """The image the server runs from, with its digest as the host's docker knows it."""
    argv = ["docker", "image", "inspect", "--format", "{{json .RepoDigests}} {{.Id}}", image]
    try:
        done = ctx.conn.run(argv, timeout=30)
    except (OSError, CommandTimeout) as exc:
        return {"name": image, "digest": None, "error": str(exc)}
    if done.rc != 0:
        return {"name": image, "digest": None, "error": (done.stderr or done.stdout).strip()[:300]}
    digests, _, image_id = done.stdout.strip().rpartition(" ")
    try:
        repo_digests = [str(d) for d in json.loads(digests or "null") or []]
    except ValueError:
        repo_digests = []
    digest = repo_digests[0].rpartition("@")[2] if repo_digests else None
    return {"name": image, "digest": digest, "id": image_id, "repo_digests": repo_digests}


def with_status(result: StepResult) -> StepResult:
    """PASS unless a verdict failed; the reason lists the failed ones."""
    failed = result.failed_verdicts()
    status = StepStatus.FAIL if failed else StepStatus.PASS
    return replace(result, status=status, reason="; ".join(failed))


# ---------------------------------------------------------------- for comparisons after the run


def model_means(result: StepResult) -> dict[str, dict[str, float]]:
    """{model: {prefill_tps, decode_tps: mean}} of an ollama_bench result (what comparisons use)."""
    found: dict[str, dict[str, float]] = {}
    for model, entry in (result.measured.get("models") or {}).items():
        means = {m: entry[m]["mean"] for m in THROUGHPUT if isinstance(entry.get(m), dict)}
        found[model] = {m: v for m, v in means.items() if v is not None and not entry[m].get("cached")}
    return found


def with_verdict(result: StepResult, model: str, key: str, verdict: MetricVerdict) -> StepResult:
    """`result` with one more (or a replaced) verdict of `model` (key like "decode_tps vs baseline")."""
    models = dict(result.measured.get("models") or {})
    if model in models:
        entry = dict(models[model])
        entry["verdicts"] = {**entry.get("verdicts", {}), key: verdict.as_dict()}
        entry["verdict"] = "pass" if all(v.get("ok") for v in entry["verdicts"].values()) else "fail"
        models[model] = entry
    changed = replace(
        result,
        measured={**result.measured, "models": models},
        verdicts={**result.verdicts, f"{model} {key}": verdict},
    )
    return with_status(changed)
